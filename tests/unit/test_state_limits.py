"""The state store's part in retention and limits (issue 12): delivery times that are never
rewritten, and oversize notes kept until their message is gone or fetched."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from pop3s_fetch.state import SCHEMA_VERSION, Intent, open_store


def intent(uidl: str) -> Intent:
    return Intent(uidl, 10, f"new/{uidl}", 0, 10, "")


def test_delivered_before_uses_the_journal_time(tmp_path: Path) -> None:
    with open_store(tmp_path / "s" / "a.sqlite3") as store:
        before = time.time()
        store.record_intents([intent("one"), intent("two")])
        store.mark_delivered(["one"])  # "two" is still pending: never deleted
        after = time.time()
        assert store.delivered_before(before - 1) == set()
        assert store.delivered_before(after) == {"one"}


def test_recorded_at_is_not_rewritten_by_later_runs(tmp_path: Path) -> None:
    path = tmp_path / "s" / "a.sqlite3"
    with open_store(path) as store:
        store.record_intents([intent("one")])
        store.mark_delivered(["one"])
    with sqlite3.connect(path) as db:  # as if delivered 40 days ago
        db.execute("UPDATE messages SET recorded_at = recorded_at - 40 * 86400")
    with open_store(path) as store:
        store.mark_delivered(["one"])  # a reconcile or a repeated mark changes nothing
        store.forget_absent({"one"})
        assert store.delivered_before(time.time() - 30 * 86400) == {"one"}


def test_oversize_notes(tmp_path: Path) -> None:
    with open_store(tmp_path / "s" / "a.sqlite3") as store:
        store.remember_oversize({"big": 9000, "huge": 90000})
        store.remember_oversize({"liar": 10}, overran=True)
        assert store.oversize() == {"big": False, "huge": False, "liar": True}
        store.keep_oversize({"huge", "liar"})
        assert store.oversize() == {"huge": False, "liar": True}


def test_an_older_state_file_gains_the_oversize_table_without_a_schema_bump(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s" / "a.sqlite3"
    with open_store(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE oversize")
    with open_store(path) as store:
        assert store.oversize() == {}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
