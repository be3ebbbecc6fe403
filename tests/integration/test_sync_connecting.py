"""The connection is opened in a thread while the account's local work runs; its failures and
the local ones are reported as they happen, neither waiting for the other."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.config import Account
from pop3s_fetch.errors import CredentialError, ExitCode
from pop3s_fetch.sync import SyncOptions, sync_account
from tests.support.reporting import NullReporter

SILENT_TIMEOUT = 30.0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog does) and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()  # resets what is queued: the connecting thread then ends


def test_a_missing_password_is_reported_without_waiting_for_a_silent_server(
    tmp_path: Path, silent_server: int
) -> None:
    account = Account(
        name="slow",
        host="127.0.0.1",
        port=silent_server,
        username="someone",
        destination=tmp_path / "Maildir",
        timeout=SILENT_TIMEOUT,
    )

    def no_password() -> str:
        raise CredentialError("no password stored for this account", hint="store one")

    result = sync_account(
        account, no_password, SyncOptions(state_dir=tmp_path / "state"), NullReporter()
    )

    assert isinstance(result.error, CredentialError)
    assert str(result.error) == "no password stored for this account"
    assert result.exit_code == ExitCode.NOPERM
    # The TLS handshake with the silent server is still pending; it was not waited for.
    assert result.duration < SILENT_TIMEOUT
