"""Sync against the built-in server: the happy path, and every scripted server fault.

For each fault, in Maildir and mbox, keep and delete: the run fails with the documented exit
code and one clear message, nothing is lost, nothing is deleted that is not delivered, and
the next run (fault gone) completes with every message exactly once, byte for byte.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults
from pop3s_fetch.state import open_store
from tests.support.mail import as_stored, corpus, leftovers
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["maildir", "mbox"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[True, False], ids=["keep", "delete"])
def keep(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path, fmt: str, keep: bool
) -> Iterator[InProcessRig]:
    originals = corpus()
    with serve(server_ssl_context, originals, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            originals,
            tmp_path,
            name="test",
            fmt=fmt,
            keep=keep,
            ca_file=ca_file,
            timeout=2.0,
        )


def test_sync_then_nothing_new(rig: InProcessRig) -> None:
    first = rig.sync()
    assert first.error is None
    assert first.fetched == len(rig.originals)
    assert rig.landed() == rig.expected()
    second = rig.sync()
    assert second.error is None
    assert second.fetched == 0
    assert rig.landed() == rig.expected()
    assert rig.on_server() == rig.expected_on_server()
    assert leftovers(rig.account.destination, rig.account.format) == []
    retrs = [c for c in rig.sessions()[-1] if c.startswith("RETR")]
    assert retrs == []


def test_password_is_masked_in_the_transcript(rig: InProcessRig) -> None:
    rig.sync()
    assert "PASS ***" in rig.sessions()[0]
    assert all(PASSWORD not in line for line in rig.sessions()[0])


# (fault, exit code, text in the error, whether complete messages survive the failed run)
FAULTS = [
    pytest.param(Faults(drop_mid_retr={3: 1000}), 75, "closed the connection", id="drop-mid-retr"),
    pytest.param(Faults(drop_on=frozenset({"UIDL"})), 75, "closed the connection", id="drop-uidl"),
    pytest.param(Faults(drop_on=frozenset({"LIST"})), 75, "closed the connection", id="drop-list"),
    pytest.param(Faults(drop_on=frozenset({"QUIT"})), 75, "closed the connection", id="drop-quit"),
    pytest.param(
        Faults(err_on_retr=frozenset({2})), 76, "refused to send 1 message", id="err-retr"
    ),
    pytest.param(Faults(err_on_dele=frozenset({1})), 76, "refused to delete", id="err-dele"),
    pytest.param(
        Faults(hang_on=frozenset({"RETR"})), 75, "no reply from the server", id="hang-retr"
    ),
    pytest.param(
        Faults(long_line_on=frozenset({"UIDL"})), 76, "reply line longer than", id="long-line"
    ),
    pytest.param(
        Faults(no_terminator_retr=frozenset({2})), 75, "closed the connection", id="no-dot"
    ),
    pytest.param(Faults(duplicate_uidls=True), 76, "the same UIDL", id="duplicate-uidls"),
    pytest.param(Faults(no_uidl=True), 76, "does not support UIDL", id="no-uidl"),
]


@pytest.mark.parametrize(("faults", "code", "text"), FAULTS)
def test_fault_then_recovery(rig: InProcessRig, faults: Faults, code: int, text: str) -> None:
    if rig.account.keep and faults.err_on_dele:
        pytest.skip("no DELE is sent when messages are kept")
    if rig.account.keep and "QUIT" in faults.drop_on:
        # With nothing to commit, the QUIT reply is not waited for: the run succeeds.
        rig.server.faults = faults
        assert rig.sync().error is None
        assert rig.landed() == rig.expected()
        return
    if not rig.account.keep and faults.no_uidl:
        # keep = false makes do without UIDL: each message is deleted in the session that
        # fetched it (see test_server_policy.py); only keeping mail needs UIDLs.
        rig.server.faults = faults
        assert rig.sync().error is None
        assert rig.landed() == rig.expected()
        assert rig.on_server() == []
        return
    rig.server.faults = faults
    failed = rig.sync()
    assert failed.error is not None, "the fault went unnoticed"
    assert int(failed.error.exit_code) == code
    assert text in str(failed.error)
    assert "\n" not in str(failed.error)
    landed = rig.landed()
    assert len(landed) == len(set(landed)), "duplicate after a fault"
    assert set(landed) <= set(rig.expected()), "a damaged message was delivered"
    # Nothing may be gone from the server that is not safely in the destination.
    gone = set(rig.originals) - set(rig.on_server())
    assert {as_stored(m, rig.account.format) for m in gone} <= set(landed)

    rig.server.faults = Faults()
    again = rig.sync()
    assert again.error is None, again.error
    assert rig.landed() == rig.expected()
    assert leftovers(rig.account.destination, rig.account.format) == []
    assert rig.on_server() == rig.expected_on_server()
    final = rig.sync()
    assert final.error is None
    assert final.fetched == 0


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(no_pipelining=True), id="no-pipelining"),
        pytest.param(Faults(no_capa=True), id="no-capa"),
        pytest.param(Faults(list_size_delta={1: 500, 2: -50}), id="list-size-wrong"),
    ],
)
def test_server_quirks_still_sync(rig: InProcessRig, faults: Faults) -> None:
    rig.server.faults = faults
    result = rig.sync()
    assert result.error is None, result.error
    assert rig.landed() == rig.expected()


def test_delivered_but_not_deleted_is_deleted_without_download(rig: InProcessRig) -> None:
    if rig.account.keep:
        pytest.skip("only with keep = false")
    rig.server.faults = Faults(drop_on=frozenset({"QUIT"}))
    assert rig.sync().error is not None
    assert rig.on_server() == sorted(rig.originals)  # QUIT never committed
    rig.server.faults = Faults()
    result = rig.sync()
    assert result.error is None
    assert result.fetched == 0
    assert result.deleted == len(rig.originals)
    assert not [c for c in rig.sessions()[-1] if c.startswith("RETR")]
    assert rig.on_server() == []


def test_no_dele_before_delivery_is_recorded(rig: InProcessRig) -> None:
    if rig.account.keep:
        pytest.skip("only with keep = false")
    rig.sync()
    commands = rig.sessions()[0]
    # Each DELE n comes after RETR n; QUIT is last.
    for index, command in enumerate(commands):
        if command.startswith("DELE "):
            number = command.split()[1]
            assert f"RETR {number}" in commands[:index]
    assert commands[-1] == "QUIT"


# Local faults: a clear error, nothing deleted on the server, and a retry after the fix works.


def test_state_store_from_a_newer_version(rig: InProcessRig) -> None:
    import sqlite3

    state = rig.options.state_dir / "test.sqlite3"
    state.parent.mkdir(parents=True)
    db = sqlite3.connect(state)
    db.execute("PRAGMA user_version = 99")
    db.close()
    failed = rig.sync()
    assert failed.error is not None
    assert int(failed.error.exit_code) == 74
    assert str(failed.error).endswith("(schema 99, this one knows 1)")
    assert rig.sessions() == []  # refused before any network traffic
    state.unlink()
    assert rig.sync().error is None
    assert rig.landed() == rig.expected()
    assert rig.on_server() == rig.expected_on_server()


def test_unreadable_state_store(rig: InProcessRig) -> None:
    state = rig.options.state_dir / "test.sqlite3"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a database, " * 512)
    failed = rig.sync()
    assert failed.error is not None
    assert int(failed.error.exit_code) == 74
    assert "cannot be used: file is not a database" in str(failed.error)
    assert rig.sessions() == []
    state.unlink()
    assert rig.sync().error is None
    assert rig.landed() == rig.expected()


def test_destination_that_cannot_be_created(rig: InProcessRig) -> None:
    blocker = rig.options.state_dir.parent / "blocker"
    blocker.write_text("a file where a directory must go")
    blocked = dataclasses.replace(rig.account, destination=blocker / "Mail" / "inbox")
    failed = rig.sync(blocked)
    assert failed.error is not None
    assert int(failed.error.exit_code) == 74
    assert str(blocker) in str(failed.error)
    assert rig.on_server() == sorted(rig.originals)  # nothing deleted
    blocker.unlink()
    again = rig.sync(blocked)
    assert again.error is None
    assert again.fetched == len(rig.originals)


def test_sizes_are_asked_only_for_what_is_new(rig: InProcessRig) -> None:
    assert rig.sync().error is None
    first = rig.sessions()[-1]
    # A first run expects everything to be new: one whole LIST, sent right behind UIDL.
    assert first[first.index("UIDL") + 1] == "LIST"
    if not rig.account.keep:
        return  # the server is empty now
    rig.store.add(b"Subject: late\n\nlate\n")
    again = rig.sync()
    assert again.error is None
    assert again.fetched == 1
    number = len(rig.originals) + 1
    session = rig.sessions()[-1]
    assert [c for c in session if c.startswith("LIST")] == [f"LIST {number}"]
    idle = rig.sync()
    assert (idle.error, idle.fetched) == (None, 0)
    assert [c for c in rig.sessions()[-1] if c.startswith("LIST")] == []


def test_a_server_silent_after_an_early_capa_is_asked_carefully_next_time(
    rig: InProcessRig,
) -> None:
    """CAPA goes with the handshake to a server known to pipeline; if that session then
    fails before CAPA's reply (here: the server never answers CAPA), the next run waits for
    the greeting again, so a server that drops early input cannot fail every run."""
    assert rig.sync().error is None  # learns that the server pipelines
    state = open_store(rig.options.state_dir / f"{rig.account.name}.sqlite3")
    assert state.server_pipelines()

    rig.server.faults = Faults(hang_on=frozenset({"CAPA"}))
    failed = rig.sync()
    assert failed.error is not None
    assert "no reply from the server" in str(failed.error)
    assert not state.server_pipelines()
    state.close()

    rig.server.faults = Faults()
    again = rig.sync()
    assert again.error is None, again.error
    assert rig.landed() == rig.expected()
