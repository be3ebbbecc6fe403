"""The quiet-listing fingerprint (issue 15, target 2): recorded only when the state is exactly
the listing, and dropped by every change to what it summarises, whoever makes it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from pop3s_fetch.state import Intent, QuietListing, StateStore, open_store

UIDLS = ["a", "b", "c"]


def settled(path: Path) -> StateStore:
    """A store holding exactly a, b, c as delivered, with the listing's count noted."""
    store = open_store(path)
    store.record_intents([Intent(u, 10, f"new/{u}", 0, 10, "") for u in UIDLS])
    store.mark_delivered(UIDLS)
    store.forget_absent(set(UIDLS))
    return store


def test_recorded_only_when_the_state_is_exactly_the_listing(tmp_path: Path) -> None:
    with settled(tmp_path / "s.sqlite3") as store:
        assert store.quiet_listing() is None
        assert not store.remember_quiet_listing("fp", 4)  # one listed is not in the state
        assert store.remember_quiet_listing("fp", 3)
        assert store.quiet_listing() == QuietListing("fp", 3)
        store.record_intents([Intent("d", 10, "new/d", 0, 10, "")])
        assert store.quiet_listing() is None
        assert not store.remember_quiet_listing("fp", 3)  # a pending row of another message
        store.mark_delivered(["d"])
        assert not store.remember_quiet_listing("fp", 3)  # d is delivered but not listed


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.forget(["a"]),
        lambda s: s.forget_everywhere(["b"]),
        lambda s: s.forget_everywhere(None),
        lambda s: s.record_intents([Intent("a", 10, "new/a2", 0, 10, "")]),
        lambda s: s.mark_delivered(["zz"]),
        lambda s: s.seed({"e": 1}, origin="seeded", when={}),
        lambda s: s.record_found([Intent("f", 1, "new/f", 0, 1, "")], when=0.0),
        lambda s: s.hold("a", 10, 12),
        lambda s: s.remember_oversize({"a": 10}),
        lambda s: s.remember_filtered({"a": (10, "skip")}),
        lambda s: s.forget_absent({"a", "b"}),
    ],
    ids=[
        "forget",
        "state-forget",
        "state-forget-all",
        "journal",
        "mark",
        "seed",
        "rebuild",
        "hold",
        "oversize",
        "filter",
        "absent",
    ],
)
def test_every_write_of_the_store_drops_it(
    tmp_path: Path, change: Callable[[StateStore], object]
) -> None:
    with settled(tmp_path / "s.sqlite3") as store:
        assert store.remember_quiet_listing("fp", 3)
        change(store)
        assert store.quiet_listing() is None


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM messages WHERE uidl = 'a'",
        "UPDATE messages SET status = 'pending' WHERE uidl = 'a'",
        "UPDATE messages SET uidl = 'z' WHERE uidl = 'a'",
        "INSERT INTO held (uidl, listed, received, recorded_at) VALUES ('a', 1, 2, 0)",
        "INSERT INTO absent (uidl, since, listings) VALUES ('a', 0, 1)",
        "INSERT INTO oversize (uidl, size, overran, recorded_at) VALUES ('a', 1, 0, 0)",
        "INSERT INTO filtered (uidl, size, verdict, recorded_at) VALUES ('a', 1, 'skip', 0)",
    ],
)
def test_another_writer_drops_it_through_the_triggers(tmp_path: Path, sql: str) -> None:
    """An older pop3s-fetch or the sqlite3 shell knows nothing of the fingerprint."""
    path = tmp_path / "s.sqlite3"
    with settled(path) as store:
        assert store.remember_quiet_listing("fp", 3)
    other = sqlite3.connect(path)
    with other:
        other.execute(sql)
    other.close()
    with open_store(path) as store:
        assert store.quiet_listing() is None


def test_a_state_file_from_before_gets_the_triggers(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with settled(path) as store:
        assert store.remember_quiet_listing("fp", 3)
    old = sqlite3.connect(path)
    with old:
        for (name,) in old.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            old.execute(f'DROP TRIGGER "{name}"')
    old.close()
    open_store(path).close()  # adds them again
    other = sqlite3.connect(path)
    with other:
        other.execute("DELETE FROM messages WHERE uidl = 'a'")
    other.close()
    with open_store(path) as store:
        assert store.quiet_listing() is None


def test_writing_nothing_commits_nothing_and_keeps_it(tmp_path: Path) -> None:
    """An idle run forgets, journals and marks nothing: that must cost no commit (an fsync)."""
    path = tmp_path / "s.sqlite3"
    with settled(path) as store:
        assert store.remember_quiet_listing("fp", 3)
        other = sqlite3.connect(path)
        before = other.execute("PRAGMA data_version").fetchone()[0]
        store.forget([])
        store.mark_delivered([])
        store.record_intents([])
        store.forget_absent(set(UIDLS))
        assert other.execute("PRAGMA data_version").fetchone()[0] == before
        other.close()
        assert store.quiet_listing() == QuietListing("fp", 3)
