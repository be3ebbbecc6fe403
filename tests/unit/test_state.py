"""The UIDL store and journal, and the per-account lock."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from pop3s_fetch.errors import StateError
from pop3s_fetch.state import SCHEMA_VERSION, Intent, open_store, state_dir


def intent(uidl: str, target: str = "") -> Intent:
    return Intent(uidl, 100, target or f"name-{uidl}", 0, 100, "")


def test_state_dir_follows_xdg() -> None:
    assert state_dir({"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/pop3s-fetch")
    assert state_dir({"XDG_STATE_HOME": "relative", "HOME": "/h"}) == Path(
        "/h/.local/state/pop3s-fetch"
    )
    assert state_dir({"HOME": "/h"}) == Path("/h/.local/state/pop3s-fetch")


def test_journal_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "state" / "work.sqlite3"
    with open_store(path) as store:
        store.record_intents([intent("a"), intent("b")])
        assert store.delivered() == set()
        assert [i.uidl for i in store.pending()] == ["a", "b"]
        store.mark_delivered(["a"])
        store.forget(["b"])
    with open_store(path) as store:  # durable across reopen
        assert store.delivered() == {"a"}
        assert store.pending() == []
        store.forget(["a"])  # as sync does for what it deleted itself
        assert store.delivered() == set()


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "work.sqlite3"
    with open_store(path) as store:
        store.record_intents([intent("a")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for sibling in path.parent.iterdir():
        assert stat.S_IMODE(sibling.stat().st_mode) == 0o600, sibling


def test_whether_the_server_pipelines_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "work.sqlite3"
    with open_store(path) as store:
        assert store.server_pipelines() is False
        store.remember_pipelining(True)
    with open_store(path) as store:
        assert store.server_pipelines() is True
        store.remember_pipelining(False)
        assert store.server_pipelines() is False


def test_the_login_method_that_worked_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "work.sqlite3"
    with open_store(path) as store:
        assert store.last_login_method() is None
        store.remember_login_method("SCRAM-SHA-256")
    with open_store(path) as store:
        assert store.last_login_method() == "SCRAM-SHA-256"
        store.remember_login_method("PLAIN")
        assert store.last_login_method() == "PLAIN"


def test_a_state_file_from_before_the_server_table_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "work.sqlite3"
    with open_store(path) as store:
        store.record_intents([intent("a")])
    db = sqlite3.connect(path)
    db.execute("DROP TABLE server")
    db.commit()
    db.close()

    with open_store(path) as store:
        assert [i.uidl for i in store.pending()] == ["a"]
        store.remember_pipelining(True)
        assert store.server_pipelines() is True


def test_opening_an_up_to_date_store_writes_nothing(tmp_path: Path) -> None:
    """Every run opens the store: a write there would cost each run an fsync."""
    path = tmp_path / "work.sqlite3"
    with open_store(path):
        pass
    db = sqlite3.connect(path)
    before = db.execute("PRAGMA data_version").fetchone()[0]
    with open_store(path) as store:
        store.delivered()
        store.server_pipelines()
    assert db.execute("PRAGMA data_version").fetchone()[0] == before
    db.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "work.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError) as caught:
        open_store(path)
    assert str(caught.value) == (
        f"the state file {path} was written by a newer pop3s-fetch "
        f"(schema {SCHEMA_VERSION + 1}, this one knows {SCHEMA_VERSION})"
    )
    assert caught.value.exit_code == 74


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "work.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="cannot be used: file is not a database"):
        open_store(path)


def test_seed_marks_delivered_without_a_copy_and_keeps_existing_rows(tmp_path: Path) -> None:
    """Seeded rows count as delivered (nothing fetched again), keep their given time, and
    never overwrite a row a real delivery wrote."""
    from pop3s_fetch.state import SEEDED_PREFIX

    tmp_path.chmod(0o700)
    with open_store(tmp_path / "a.sqlite3") as store:
        assert store.seed({"u1": 10, "u2": 20}, origin="fetchmail", when={"u1": 5.0}) == 2
        assert store.seed({"u1": 99, "u3": 30}, origin="seeded", when={}) == 1
        assert store.delivered() == {"u1", "u2", "u3"}
        assert store.delivered_before(6.0) == {"u1"}
        assert store.pending() == []
    with sqlite3.connect(tmp_path / "a.sqlite3") as db:
        row = db.execute("SELECT size, target FROM messages WHERE uidl = 'u1'").fetchone()
    assert row == (10, SEEDED_PREFIX + "fetchmail")
