"""A server's own policy end to end against the built-in server (issue 12, item 9).

Dovecot can neither announce LOGIN-DELAY or EXPIRE nor do without UIDL, so the built-in
server's scripted Faults play those servers, as RFC 2449 and RFC 1939 describe them: it
enforces its LOGIN-DELAY with ``-ERR [LOGIN-DELAY]``, and under ``EXPIRE 0`` deletes what was
read at QUIT. The client's clock is ``SyncOptions.clock``, never slept; the server's time
passing is :meth:`MailStore.forget_logins`.
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults
from pop3s_fetch.errors import ExitCode
from pop3s_fetch.serverpolicy import LoginDelay, clock_time
from pop3s_fetch.state import open_store
from pop3s_fetch.sync import NO_UIDL_PREFIX, AccountResult, sync_account
from tests.support.mail import as_stored
from tests.support.reporting import NullReporter
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "policy-test-password"
MAILBOX = [f"Subject: policy {n}\n\nbody {n}\n".encode() for n in range(3)]
DAY = 86400.0


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> Iterator[InProcessRig]:
    with serve(server_ssl_context, MAILBOX, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            MAILBOX,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=True,
            ca_file=ca_file,
            timeout=2.0,
        )


class Warnings(NullReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warned(self, account: str, text: str, *, loud: bool = False) -> None:
        self.lines.append(f"{account}: {text}")


def run(
    rig: InProcessRig,
    at: float,
    *,
    reporter: NullReporter | None = None,
    ignore_login_delay: bool = False,
    **changes: object,
) -> AccountResult:
    options = dataclasses.replace(
        rig.options, clock=lambda: at, ignore_login_delay=ignore_login_delay
    )
    account = dataclasses.replace(rig.account, **changes)  # type: ignore[arg-type]
    return sync_account(account, lambda: PASSWORD, options, reporter or NullReporter())


def stored(*messages: bytes) -> list[bytes]:
    return sorted(as_stored(m, "maildir") for m in messages)


def server_facts(rig: InProcessRig) -> dict[str, str]:
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        return store._server_facts("login_delay", "last_login", "login_refused")


# --- LOGIN-DELAY --------------------------------------------------------------------------


def test_within_the_login_delay_the_account_is_skipped_without_connecting(
    rig: InProcessRig,
) -> None:
    rig.server.faults = Faults(login_delay=900)
    t0 = time.time()
    first = run(rig, t0)
    assert (first.error, first.fetched, first.login_delay) == (None, 3, None)
    assert server_facts(rig) == {"login_delay": "900", "last_login": repr(t0)}
    sessions = len(rig.sessions())

    rig.store.add(b"Subject: later\n\nlater\n")
    early = run(rig, t0 + 899)
    assert len(rig.sessions()) == sessions  # not even a TLS handshake
    assert early.error is None
    assert early.exit_code == ExitCode.OK
    assert early.login_delay == LoginDelay(900, t0 + 900)
    assert early.login_delay.note("test") == (
        f"test: skipped, the server allows one login every 15 min; next at {clock_time(t0 + 900)}"
    )
    assert (early.fetched, early.on_server) == (0, None)

    rig.store.forget_logins()  # the server's 15 minutes passed too
    due = run(rig, t0 + 900)
    assert (due.error, due.fetched, due.login_delay) == (None, 1, None)
    assert len(rig.sessions()) == sessions + 1
    assert server_facts(rig)["last_login"] == repr(t0 + 900)


def test_a_login_delay_refusal_is_a_note_remembered_for_the_next_run(
    rig: InProcessRig,
) -> None:
    rig.server.faults = Faults(login_delay=600)
    assert rig.store.log_in(None)  # another client (a phone) logged in just now
    t0 = time.time()
    refused = run(rig, t0)
    assert refused.error is None
    assert refused.exit_code == ExitCode.OK
    assert refused.login_delay == LoginDelay(
        600, t0 + 600, refused="[LOGIN-DELAY] one login every 600 seconds, try later"
    )
    assert refused.login_delay.note("test") == (
        "test: skipped, the server refused the login for now ([LOGIN-DELAY] one login every "
        f"600 seconds, try later); next at {clock_time(t0 + 600)}"
    )
    assert refused.fetched == 0
    assert rig.landed() == []
    assert not rig.destination.exists()  # no empty Maildir left behind
    assert server_facts(rig) == {"login_delay": "600", "login_refused": repr(t0)}

    sessions = len(rig.sessions())
    assert run(rig, t0 + 599).login_delay == LoginDelay(600, t0 + 600)
    assert len(rig.sessions()) == sessions

    rig.store.forget_logins()
    later = run(rig, t0 + 600)
    assert (later.error, later.fetched, later.login_delay) == (None, 3, None)
    assert server_facts(rig) == {"login_delay": "600", "last_login": repr(t0 + 600)}


def test_ignore_login_delay_logs_in_and_a_refusal_stays_a_note(rig: InProcessRig) -> None:
    rig.server.faults = Faults(login_delay=900)
    t0 = time.time()
    assert run(rig, t0).fetched == 3
    forced = run(rig, t0 + 60, ignore_login_delay=True)  # the server still counts its 900 s
    assert forced.error is None
    assert forced.login_delay is not None
    assert forced.login_delay.refused is not None
    assert forced.login_delay.next_at == t0 + 60 + 900
    rig.store.forget_logins()
    rig.store.add(b"Subject: forced\n\nforced\n")
    again = run(rig, t0 + 120, ignore_login_delay=True)
    assert (again.error, again.fetched, again.login_delay) == (None, 1, None)


def test_the_per_user_login_delay_given_after_login_is_the_one_remembered(
    rig: InProcessRig,
) -> None:
    rig.server.faults = Faults(login_delay=3600, announced_before_login={"LOGIN-DELAY": "300 USER"})
    t0 = time.time()
    assert run(rig, t0).fetched == 3
    assert [c for c in rig.sessions()[-1] if c == "CAPA"] == ["CAPA", "CAPA"]
    assert server_facts(rig) == {"login_delay": "3600", "last_login": repr(t0)}
    assert run(rig, t0 + 301).login_delay == LoginDelay(3600, t0 + 3600)


def test_a_server_without_policy_costs_no_second_capa_and_no_state(rig: InProcessRig) -> None:
    assert run(rig, time.time()).fetched == 3
    assert [c for c in rig.sessions()[-1] if c == "CAPA"] == ["CAPA"]
    assert server_facts(rig) == {}


def test_in_use_stays_a_temporary_failure_not_a_note(rig: InProcessRig) -> None:
    assert rig.store.claim()  # another session holds the maildrop
    try:
        result = run(rig, time.time())
    finally:
        rig.store.release()
    assert result.login_delay is None
    assert result.error is not None
    assert result.exit_code == ExitCode.TEMPFAIL
    assert "[IN-USE]" in result.error.message


# --- EXPIRE -------------------------------------------------------------------------------


def test_expire_0_with_keep_true_is_warned_about_once_and_again_when_it_changes(
    rig: InProcessRig,
) -> None:
    rig.server.faults = Faults(expire="0")
    t0 = time.time()
    warnings = Warnings()
    first = run(rig, t0, reporter=warnings)
    expected = (
        "the server deletes every message once it has been downloaded (EXPIRE 0), so "
        "keep = true cannot hold: no copy stays on the server"
    )
    assert first.warnings == [expected]
    assert warnings.lines == [f"test: {expected}"]
    assert rig.landed() == stored(*MAILBOX)
    assert rig.on_server() == []  # the server did as it said

    rig.store.add(b"Subject: next\n\nnext\n")
    second = run(rig, t0 + 1)
    assert (second.fetched, second.warnings) == (1, [])

    rig.server.faults = Faults(expire="30")
    third = run(rig, t0 + 2)
    assert third.warnings == [
        "the server deletes messages on its own 30 days after they were downloaded "
        "(EXPIRE 30), so keep = true cannot hold: no copy stays on the server"
    ]
    assert run(rig, t0 + 3).warnings == []


@pytest.mark.parametrize(
    ("changes", "warning"),
    [
        (
            {"delete_after": 60 * DAY},
            "the server deletes messages on its own 30 days after they were downloaded "
            '(EXPIRE 30), so keep = "60d" cannot hold: messages are gone from the server sooner',
        ),
        (
            {"delete_after": 7 * DAY},
            "the server deletes messages on its own 30 days after they were downloaded "
            '(EXPIRE 30); keep = "7d" deletes them before that',
        ),
        ({"keep": False}, None),
    ],
)
def test_expire_against_the_accounts_retention(
    rig: InProcessRig, changes: dict[str, object], warning: str | None
) -> None:
    rig.server.faults = Faults(expire="30")
    result = run(rig, time.time(), **changes)
    assert result.error is None
    assert result.warnings == ([warning] if warning else [])


def test_expire_never_says_nothing(rig: InProcessRig) -> None:
    rig.server.faults = Faults(expire="NEVER")
    assert run(rig, time.time()).warnings == []


# --- a server without UIDL ------------------------------------------------------------------


def test_without_uidl_keep_true_is_the_clear_error_naming_the_fix(rig: InProcessRig) -> None:
    rig.server.faults = Faults(no_uidl=True)
    result = run(rig, time.time())
    assert result.error is not None
    assert result.exit_code == ExitCode.PROTOCOL
    assert result.error.message == "the server does not support UIDL (unknown command)"
    assert result.error.hint == (
        "without UIDL, messages cannot be told apart between runs, so keep = true cannot "
        "work; nothing was downloaded or deleted. To fetch from this server anyway set "
        "keep = false: each message is then deleted in the session that fetched it"
    )
    assert rig.landed() == []
    assert rig.on_server() == sorted(MAILBOX)
    assert not any(c.startswith(("RETR", "DELE")) for c in rig.sessions()[-1])


@pytest.mark.parametrize("pipelining", [True, False])
def test_without_uidl_keep_false_fetches_and_deletes_in_one_session(
    rig: InProcessRig, pipelining: bool
) -> None:
    rig.server.faults = Faults(no_uidl=True, no_pipelining=not pipelining)
    t0 = time.time()
    first = run(rig, t0, keep=False)
    assert first.error is None
    assert (first.fetched, first.deleted) == (3, 3)
    assert len(first.warnings) == 1
    assert "does not support UIDL" in first.warnings[0]
    assert rig.landed() == stored(*MAILBOX)
    assert rig.on_server() == []
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        assert store.delivered() == set()  # deleted at QUIT, so forgotten
        assert store.warned_about("no-uidl") == "yes"

    assert any(c == "LIST" for c in rig.sessions()[-1])  # sent ahead, or after UIDL's -ERR
    rig.store.add(b"Subject: fourth\n\nfourth\n")
    second = run(rig, t0 + 1, keep=False)
    assert (second.error, second.fetched, second.warnings) == (None, 1, [])
    assert rig.landed() == stored(*MAILBOX, b"Subject: fourth\n\nfourth\n")


def test_without_uidl_a_run_stopped_before_quit_delivers_again_never_loses(
    rig: InProcessRig,
) -> None:
    """The one documented case without exactly-once: DELE counts only at QUIT (RFC 1939)."""
    rig.server.faults = Faults(no_uidl=True, drop_on={"QUIT"})
    t0 = time.time()
    broken = run(rig, t0, keep=False)
    assert broken.error is not None
    assert broken.fetched == 3
    assert rig.landed() == stored(*MAILBOX)
    assert rig.on_server() == sorted(MAILBOX)  # no QUIT: the server deleted nothing
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        left = store.delivered()
    assert len(left) == 3
    assert all(u.startswith(NO_UIDL_PREFIX) for u in left)

    rig.server.faults = Faults(no_uidl=True)
    again = run(rig, t0 + 1, keep=False)
    assert (again.error, again.fetched, again.deleted) == (None, 3, 3)
    assert rig.landed() == stored(*MAILBOX, *MAILBOX)  # each twice, none lost
    assert rig.on_server() == []
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        assert store.delivered() == set()  # the stale session's keys were dropped
