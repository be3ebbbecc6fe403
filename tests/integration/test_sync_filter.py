"""The header filter and trace headers against the built-in server (issue 12, items 4 and 5).

The filter is a real sh script that reads the header on stdin and answers by exit status, as
a user's would; the server's transcript shows what was sent. The promises: a skipped message
stays and is not shown to the filter again (until forgotten); one deleted by the filter is
deleted unread only when the account allows it, and is recorded; any other answer leaves the
message on the server, names the status and the filter's stderr, and stops nothing else. With
add_headers, a copy is exactly the added lines followed by the server's bytes, and the journal
(mbox offsets and digests) describes what was written.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch import __version__
from pop3s_fetch.demo.server import Faults
from pop3s_fetch.destinations import read_messages
from pop3s_fetch.errors import ExitCode
from pop3s_fetch.state import open_store
from pop3s_fetch.sync import AccountResult, Filtered, sync_account
from tests.support.mail import as_stored
from tests.support.reporting import NullReporter
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "filter-test-password"
FETCH = b"Subject: verdict 0\nFrom: a@example.org\n\nwanted\n"
SKIP = b"Subject: verdict 1\n\nnot now\n"
DELETE = b"Subject: verdict 2\n\nspam spam\n"
FAIL = b"Subject: verdict 3\n\nthe filter chokes on this one\n"
SIGNAL = b"Subject: verdict kill\n\nthe filter dies on this one\n"

# Reads the whole header, logs which message it saw, and answers by its Subject.
FILTER = """#!/bin/sh
head=$(cat)
echo "$POP3S_FETCH_UIDL $1" >> "{log}"
case "$head" in
  *"Subject: verdict kill"*) kill -TERM $$ ;;
  *"Subject: verdict sleep"*) sleep 60 ;;
  *"Subject: verdict 3"*) echo "spamcheck: database locked" >&2; echo "second line" >&2 ;;
esac
v=$(printf '%s\\n' "$head" | sed -n 's/^Subject: verdict \\([0-9]\\)$/\\1/p')
exit "${{v:-0}}"
"""


@pytest.fixture
def filter_script(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "filter.log"
    script = tmp_path / "spamcheck"
    script.write_text(FILTER.format(log=log))
    script.chmod(0o755)
    return script, log


def make_rig(
    context: ssl.SSLContext, ca_file: Path, tmp_path: Path, messages: list[bytes], fmt: str
) -> Iterator[InProcessRig]:
    with serve(context, messages, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            messages,
            tmp_path,
            name="test",
            fmt=fmt,
            keep=True,
            ca_file=ca_file,
            timeout=5.0,
        )


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> Iterator[InProcessRig]:
    yield from make_rig(server_ssl_context, ca_file, tmp_path, [FETCH, SKIP, DELETE], "maildir")


def run(rig: InProcessRig, **changes: object) -> AccountResult:
    account = dataclasses.replace(rig.account, **changes)  # type: ignore[arg-type]
    return sync_account(account, lambda: PASSWORD, rig.options, NullReporter())


def uidls(rig: InProcessRig) -> dict[bytes, str]:
    return {message: uidl for uidl, message in rig.store.messages()}


# --- the filter -----------------------------------------------------------------------------


def test_filter_fetches_skips_and_deletes(
    rig: InProcessRig, filter_script: tuple[Path, Path]
) -> None:
    script, log = filter_script
    ids = uidls(rig)
    argv = (str(script), "{sender}")
    result = run(rig, filter=argv, filter_may_delete=True)
    assert result.error is None, result.error
    assert (result.fetched, result.deleted) == (1, 0)
    assert result.filtered == [
        Filtered(ids[SKIP], len(SKIP) + SKIP.count(b"\n"), "skip"),
        Filtered(ids[DELETE], len(DELETE) + DELETE.count(b"\n"), "delete"),
    ]
    assert rig.landed() == [as_stored(FETCH, "maildir")]
    assert rig.on_server() == sorted([FETCH, SKIP])  # deleted unread, the skipped one stays
    session = rig.sessions()[-1]
    assert [c for c in session if c.startswith(("TOP", "RETR", "DELE"))] == [
        "TOP 1 0",
        "TOP 2 0",
        "TOP 3 0",
        "DELE 3",
        "RETR 1",
    ]
    # Each header was seen once, with {sender} replaced (the Return-Path is missing here).
    assert sorted(log.read_text().splitlines()) == sorted(
        f"{ids[m]} MAILER-DAEMON" for m in (FETCH, SKIP, DELETE)
    )
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        assert store.filtered() == {ids[SKIP]: "skip", ids[DELETE]: "delete"}

    again = run(rig, filter=argv, filter_may_delete=True)
    skipped = Filtered(ids[SKIP], len(SKIP) + SKIP.count(b"\n"), "skip", new=False)
    assert (again.error, again.fetched, again.filtered) == (None, 0, [skipped])  # listed again
    assert len(log.read_text().splitlines()) == 3  # not asked again
    assert not [c for c in rig.sessions()[-1] if c.startswith("TOP")]

    # Forgotten (what `state forget` does): shown to the filter once more.
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        store.forget([ids[SKIP]])
        assert store.filtered() == {ids[DELETE]: "delete"}  # the record of the deletion stays
    third = run(rig, filter=argv, filter_may_delete=True)
    assert third.filtered == [Filtered(ids[SKIP], len(SKIP) + SKIP.count(b"\n"), "skip")]
    assert log.read_text().splitlines()[-1] == f"{ids[SKIP]} MAILER-DAEMON"


def test_exit_2_without_filter_may_delete_is_an_error_naming_the_key(
    rig: InProcessRig, filter_script: tuple[Path, Path]
) -> None:
    script, _ = filter_script
    ids = uidls(rig)
    result = run(rig, filter=(str(script),))
    assert result.error is not None
    assert result.exit_code == ExitCode.CONFIG
    assert str(result.error) == (
        f"message 3 (UIDL {ids[DELETE]}) not fetched: the filter spamcheck asked to delete it "
        "unread (exit status 2), but filter_may_delete is not true for this account; it wrote "
        "nothing on stderr"
    )
    assert "filter_may_delete = true" in (result.error.hint or "")
    assert result.fetched == 1  # the run went on
    assert rig.on_server() == sorted([FETCH, SKIP, DELETE])
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        assert store.filtered() == {ids[SKIP]: "skip"}  # the failed one is not recorded


def test_a_filter_deletion_cut_off_before_quit_is_sent_again_without_asking(
    rig: InProcessRig, filter_script: tuple[Path, Path]
) -> None:
    script, log = filter_script
    ids = uidls(rig)
    argv = (str(script),)
    rig.server.faults = Faults(drop_on={"QUIT"})  # the DELE never becomes final
    cut = run(rig, filter=argv, filter_may_delete=True)
    assert cut.error is not None
    assert DELETE in rig.on_server()
    rig.server.faults = Faults()
    result = run(rig, filter=argv, filter_may_delete=True)
    assert result.error is None, result.error
    assert DELETE not in rig.on_server()
    size = len(DELETE) + DELETE.count(b"\n")
    skipped = Filtered(ids[SKIP], len(SKIP) + SKIP.count(b"\n"), "skip", new=False)
    assert result.filtered == [Filtered(ids[DELETE], size, "delete"), skipped]  # deleted now
    assert len(log.read_text().splitlines()) == 3  # the filter was not asked again
    assert [c for c in rig.sessions()[-1] if c.startswith(("TOP", "DELE"))] == ["DELE 3"]


@pytest.mark.parametrize(
    ("message", "status", "said"),
    [
        (FAIL, "exit status 3", "; it wrote: spamcheck: database locked"),
        (SIGNAL, "killed by SIGTERM", "; it wrote nothing on stderr"),
    ],
)
def test_a_failing_filter_leaves_that_message_and_goes_on(
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    ca_file: Path,
    filter_script: tuple[Path, Path],
    message: bytes,
    status: str,
    said: str,
) -> None:
    script, log = filter_script
    for rig in make_rig(server_ssl_context, ca_file, tmp_path, [message, FETCH], "maildir"):
        ids = uidls(rig)
        result = run(rig, filter=(str(script),), keep=False)
        assert result.exit_code == ExitCode.IOERR
        assert str(result.error) == (
            f"message 1 (UIDL {ids[message]}) not fetched: the filter spamcheck failed "
            f"({status}){said}"
        )
        assert result.fetched == 1
        assert rig.landed() == [as_stored(FETCH, "maildir")]
        assert rig.on_server() == [message]  # stays, and FETCH was deleted once saved
        again = run(rig, filter=(str(script),), keep=False)
        assert again.exit_code == ExitCode.IOERR  # asked again: it was not recorded
        assert log.read_text().splitlines().count(f"{ids[message]} ") == 2


def test_a_filter_past_its_timeout_is_killed(
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    ca_file: Path,
    filter_script: tuple[Path, Path],
) -> None:
    script, _ = filter_script
    slow = b"Subject: verdict sleep\n\nslow\n"
    for rig in make_rig(server_ssl_context, ca_file, tmp_path, [slow, FETCH], "maildir"):
        started = time.monotonic()
        result = run(rig, filter=(str(script),), filter_timeout=1.0)
        assert time.monotonic() - started < 30  # the sleep 60 did not hold it up
        assert result.exit_code == ExitCode.IOERR
        assert "ran past filter_timeout, 1 seconds, and was killed" in str(result.error)
        assert result.fetched == 1
        assert rig.on_server() == sorted([slow, FETCH])


def test_a_server_without_top_fails_only_those_messages(
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    ca_file: Path,
    filter_script: tuple[Path, Path],
) -> None:
    script, log = filter_script
    for rig in make_rig(server_ssl_context, ca_file, tmp_path, [FETCH], "maildir"):
        rig.server.faults = Faults(raw_replies={"TOP": b"-ERR TOP is off here\r\n"})
        result = run(rig, filter=(str(script),))
        assert result.exit_code == ExitCode.IOERR
        assert "the server refused TOP, so the filter could not see it: TOP is off here" in str(
            result.error
        )
        assert (result.fetched, rig.landed()) == (0, [])
        assert not log.exists()  # never run on an empty header


# --- trace headers --------------------------------------------------------------------------

NOW = 1_790_000_000.0


def expected_trace(host: str, user: str, tls: str) -> bytes:
    stamp = email.utils.format_datetime(datetime.datetime.fromtimestamp(NOW).astimezone())
    return (
        f"Received: from {host}\n\tby {socket.gethostname()} with POP3S "
        f"(pop3s-fetch {__version__}; {tls});\n\t{stamp}\n"
        f"Delivered-To: {user}\nX-Original-To: {user}\n"
    ).encode()


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_add_headers_prepends_exactly_the_lines_and_keeps_the_journal_true(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path, fmt: str
) -> None:
    messages = [FETCH, b"From here on, a body line that mbox must quote\n", SKIP]
    for rig in make_rig(server_ssl_context, ca_file, tmp_path, messages, fmt):
        options = dataclasses.replace(rig.options, clock=lambda: NOW)
        plain = dataclasses.replace(rig.account, destination=tmp_path / "plain", format=fmt)
        apart = dataclasses.replace(options, state_dir=tmp_path / "plain-state")
        assert sync_account(plain, lambda: PASSWORD, apart, NullReporter()).error is None
        kind = "maildir" if fmt == "maildir" else "mbox"

        # Off (the default): the copy is the server's bytes.
        assert sorted(read_messages(tmp_path / "plain", kind)) == sorted(
            as_stored(m, fmt) for m in messages
        )

        traced = dataclasses.replace(
            rig.account, add_headers=("received", "delivered-to", "x-original-to")
        )
        result = sync_account(traced, lambda: PASSWORD, options, NullReporter())
        assert (result.error, result.fetched, result.warnings) == (None, 3, [])  # sizes agree
        prefix = expected_trace(rig.server.host, "alice", "TLSv1.3")
        assert rig.landed() == sorted(as_stored(prefix + m, fmt) for m in messages)

        # The journal describes the traced copies: replayed as a crash would leave it, every
        # one is found in place (mbox: offset, length and digest), none is fetched again.
        state = rig.options.state_dir / "test.sqlite3"
        with open_store(state) as store:
            store._db.execute("UPDATE messages SET status = 'pending'")
            store._db.commit()
        replay = sync_account(traced, lambda: PASSWORD, options, NullReporter())
        assert (replay.error, replay.recovered, replay.fetched) == (None, 3, 0)
        assert rig.landed() == sorted(as_stored(prefix + m, fmt) for m in messages)


def test_add_headers_reach_the_mda_too(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    out = tmp_path / "delivered"
    out.mkdir()
    mda = tmp_path / "mda"
    mda.write_text(f'#!/bin/sh\ncat > "{out}/$1"\n')
    mda.chmod(0o755)
    for rig in make_rig(server_ssl_context, ca_file, tmp_path, [FETCH], "maildir"):
        account = dataclasses.replace(
            rig.account,
            format="mda",
            destination=None,
            mda=(str(mda), "{uidl}"),
            add_headers=("received", "delivered-to", "x-original-to"),
        )
        options = dataclasses.replace(rig.options, clock=lambda: NOW)
        result = sync_account(account, lambda: PASSWORD, options, NullReporter())
        assert result.error is None
        (copy,) = out.iterdir()
        assert copy.read_bytes() == expected_trace(rig.server.host, "alice", "TLSv1.3") + FETCH
