"""A process that syncs again (``sync --every``) connects before it opens the state.

Its last clean run of the account left the server's hints in memory (``connect.KeptHints``),
so the next one starts the TCP and TLS handshakes as soon as the account is locked, and opens
the state and the destination meanwhile. The order is shown by the events of the run (the
connection begun, the state opened), recorded by wrapping the two calls in ``sync``. A run
without kept hints (the first, one after a failure, a server with a LOGIN-DELAY, a one-shot
sync) keeps the careful order: the state first.
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pop3s_fetch import sync
from pop3s_fetch.connect import Connecting, KeptHints, ServerHints
from pop3s_fetch.demo.server import Faults
from pop3s_fetch.errors import AuthError, ConfigError
from pop3s_fetch.state import open_store
from pop3s_fetch.sync import AccountResult, sync_account
from tests.support.reporting import NullReporter
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "kept-hints-password"
MAILBOX = [f"Subject: hint {n}\n\nbody {n}\n".encode() for n in range(3)]


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> Iterator[InProcessRig]:
    with serve(server_ssl_context, MAILBOX, user="alice", password=PASSWORD) as maildrop:
        rig = in_process_rig(
            maildrop,
            MAILBOX,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=True,
            ca_file=ca_file,
            timeout=5.0,
        )
        rig.options = dataclasses.replace(rig.options, server_hints=KeptHints())
        yield rig


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a run did, in order: "connecting", "state opened", "discarded"."""
    seen: list[str] = []

    def recorded(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.append(name)
            return call(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(sync, "open_store", recorded("state opened", sync.open_store))
    monkeypatch.setattr(sync, "open_in_background", recorded("connecting", sync.open_in_background))
    monkeypatch.setattr(Connecting, "discard", recorded("discarded", Connecting.discard))
    return seen


def run(rig: InProcessRig, password: str = PASSWORD, **changes: object) -> AccountResult:
    account = dataclasses.replace(rig.account, **changes)  # type: ignore[arg-type]
    return sync_account(account, lambda: password, rig.options, NullReporter())


def test_a_run_after_a_clean_one_connects_before_it_opens_the_state(
    rig: InProcessRig, events: list[str]
) -> None:
    first = run(rig)
    assert (first.error, first.fetched) == (None, 3)
    assert events == ["state opened", "connecting"]  # nothing known yet: the state first

    events.clear()
    rig.store.add(b"Subject: new\n\nnew\n")
    second = run(rig)
    assert (second.error, second.fetched, second.on_server) == (None, 1, 4)
    assert events == ["connecting", "state opened"]
    assert rig.sessions()[-1] == [
        "CAPA",
        "USER alice",
        "PASS ***",
        "UIDL",
        "LIST",
        "RETR 4",
        "QUIT",
    ]
    assert rig.landed() == sorted([*rig.expected(), b"Subject: new\n\nnew\n"])

    events.clear()
    assert run(rig).fetched == 0
    assert events == ["connecting", "state opened"]
    # What is kept is what the state says (the last session's facts), ready for the next run.
    kept = rig.options.server_hints
    assert kept is not None
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        in_state = ServerHints(store.server_pipelines(), store.last_login_method())
    assert kept.take(rig.account) == in_state == ServerHints(True, "USER")


def test_a_one_shot_sync_keeps_the_state_first(rig: InProcessRig, events: list[str]) -> None:
    rig.options = dataclasses.replace(rig.options, server_hints=None)
    for _ in range(2):
        events.clear()
        assert run(rig).error is None
        assert events == ["state opened", "connecting"]


def test_after_a_failed_run_the_next_one_reads_the_state_first(
    rig: InProcessRig, events: list[str]
) -> None:
    assert run(rig).error is None
    refused = run(rig, password="wrong")
    assert isinstance(refused.error, AuthError)
    events.clear()
    assert run(rig).error is None
    assert events == ["state opened", "connecting"]  # and kept again from here
    events.clear()
    assert run(rig).error is None
    assert events == ["connecting", "state opened"]


def test_an_early_connection_is_dropped_when_the_run_fails_before_it_begins(
    rig: InProcessRig, events: list[str], tmp_path: Path
) -> None:
    assert run(rig).fetched == 3
    events.clear()
    # Delivered elsewhere before: refused before the destination is created (destcheck).
    moved = run(rig, destination=tmp_path / "Elsewhere")
    assert isinstance(moved.error, ConfigError)
    assert events == ["connecting", "state opened", "discarded"]
    events.clear()
    assert run(rig).error is None
    assert events == ["state opened", "connecting"]  # a failure forgets the hints


def test_a_server_with_a_login_delay_is_never_connected_to_early(
    rig: InProcessRig, events: list[str]
) -> None:
    rig.server.faults = Faults(login_delay=900)
    assert run(rig).fetched == 3
    sessions = len(rig.sessions())
    events.clear()
    held = run(rig)
    assert held.login_delay is not None  # skipped, within the delay
    assert events == ["state opened"]
    assert len(rig.sessions()) == sessions  # not even a TLS handshake
    rig.store.forget_logins()
    later = dataclasses.replace(rig.options, clock=lambda: time.time() + 900)
    events.clear()
    result = sync_account(rig.account, lambda: PASSWORD, later, NullReporter())
    assert (result.error, result.login_delay) == (None, None)
    assert events == ["state opened", "connecting"]


@pytest.mark.parametrize(
    "edit",
    [
        {"host": "localhost"},
        {"port": 1},
        {"username": "bob"},
        {"auth": "scram-sha-256"},
        {"name": "other"},
    ],
)
def test_hints_are_kept_for_the_account_as_configured_not_as_edited(
    rig: InProcessRig, edit: dict[str, object]
) -> None:
    kept = KeptHints()
    kept.remember(rig.account, ServerHints(True, "SCRAM-SHA-256"))
    edited = dataclasses.replace(rig.account, **edit)  # type: ignore[arg-type]
    assert kept.take(edited) is None  # a SIGHUP's new settings start from the state
    assert kept.take(rig.account) == ServerHints(True, "SCRAM-SHA-256")
    assert kept.take(rig.account) is None  # taken: a failed run leaves nothing behind
    kept.remember(rig.account, ServerHints(True, "USER"))
    kept.clear()
    assert kept.take(rig.account) is None
