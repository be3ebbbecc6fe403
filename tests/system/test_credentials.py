"""Tests for pop3s_fetch.credentials against in-process keyring backends.

The backends below have negative priorities so that, although keyring registers every
backend class globally, its own discovery never picks them for other tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import keyring.errors
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null

from pop3s_fetch import credentials
from pop3s_fetch.errors import CredentialError, ExitCode
from tests.support.memory_keyring import MemoryKeyring

SECRET = "correct horse\tbattery staple"  # whitespace inside, to test scrubbing of one-lined text

NO_BACKEND_MESSAGE = (
    'no usable OS keyring for account "work" (keyring found no backend; is a Secret Service '
    "such as gnome-keyring running in this D-Bus session?)"
)
NO_BACKEND_HINT = (
    "cron jobs and systemd services run outside the desktop session, so they cannot reach "
    "its keyring; run pop3s-fetch where the keyring is unlocked, choose a backend with the "
    "PYTHON_KEYRING_BACKEND environment variable (`keyring --list-backends` shows them), or "
    'set password_command = ["pass", "show", "mail/work"] or password_credential = "NAME" '
    "(a systemd LoadCredentialEncrypted= credential) in the account instead"
)
TOKEN_NO_BACKEND_HINT = (
    "cron jobs and systemd services run outside the desktop session, so they cannot reach "
    "its keyring; run pop3s-fetch where the keyring is unlocked, or choose a backend with the "
    "PYTHON_KEYRING_BACKEND environment variable (`keyring --list-backends` shows them); "
    "OAuth2 refresh tokens are kept only in the keyring"
)
UNLOCK_HINT = (
    "unlock the keyring (for example by logging in to the desktop session or with your "
    "keyring manager) and try again"
)
LOCKED_HINT = (
    f"{UNLOCK_HINT}; for unattended runs, "
    'set password_command = ["pass", "show", "mail/work"] or password_credential = "NAME" '
    "(a systemd LoadCredentialEncrypted= credential) in the account instead"
)


class RaisingKeyring(KeyringBackend):
    """Raises the exception made by ``make_error(password_or_None)`` from every operation."""

    priority = -10

    def __init__(self, make_error: Callable[[str | None], BaseException]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.make_error = make_error

    def get_password(self, service: str, username: str) -> str | None:
        raise self.make_error(None)

    def set_password(self, service: str, username: str, password: str) -> None:
        raise self.make_error(password)

    def delete_password(self, service: str, username: str) -> None:
        raise self.make_error(None)


class EmptyChainer(chainer.ChainerBackend):
    """A chainer that found nothing to chain, as on a machine with no keyring service."""

    backends: list[KeyringBackend] = []  # noqa: RUF012


class DBusErrorResponse(Exception):
    """Stands in for secretstorage's D-Bus errors, which are not KeyringErrors."""


@pytest.fixture
def use_backend() -> Iterator[Callable[[KeyringBackend], None]]:
    """Install a keyring backend for one test, restoring the previous one afterwards."""
    previous = keyring.get_keyring()
    yield keyring.set_keyring
    keyring.set_keyring(previous)


@pytest.fixture
def memory(use_backend: Callable[[KeyringBackend], None]) -> MemoryKeyring:
    backend = MemoryKeyring()
    use_backend(backend)
    return backend


def raising(
    use_backend: Callable[[KeyringBackend], None],
    make_error: Callable[[str | None], BaseException],
) -> None:
    use_backend(RaisingKeyring(make_error))


OPERATIONS: dict[str, Callable[[], object]] = {
    "read": lambda: credentials.get_password("work"),
    "store": lambda: credentials.set_password("work", SECRET),
    "delete": lambda: credentials.delete_password("work"),
}


def failure_of(operation: Callable[[], object]) -> CredentialError:
    with pytest.raises(CredentialError) as excinfo:
        operation()
    assert excinfo.value.exit_code == ExitCode.NOPERM
    return excinfo.value


# --- normal paths ---------------------------------------------------------------------------


def test_set_stores_under_the_service_and_account_name(memory: MemoryKeyring) -> None:
    credentials.set_password("work", SECRET)
    assert memory.entries == {("pop3s-fetch", "work"): SECRET}
    assert credentials.get_password("work") == SECRET


def test_set_replaces_the_stored_password(memory: MemoryKeyring) -> None:
    credentials.set_password("work", "old")
    credentials.set_password("work", "new")
    assert credentials.get_password("work") == "new"


def test_accounts_are_kept_apart(memory: MemoryKeyring) -> None:
    credentials.set_password("work", "w")
    credentials.set_password("home", "h")
    assert (credentials.get_password("work"), credentials.get_password("home")) == ("w", "h")


def test_get_with_nothing_stored(memory: MemoryKeyring) -> None:
    err = failure_of(OPERATIONS["read"])
    assert str(err) == 'no password stored for account "work"'
    assert err.hint == "store one with: pop3s-fetch password set work"


def test_get_treats_a_stored_empty_password_as_none(memory: MemoryKeyring) -> None:
    memory.entries[("pop3s-fetch", "work")] = ""
    assert str(failure_of(OPERATIONS["read"])) == 'no password stored for account "work"'


def test_set_refuses_an_empty_password(memory: MemoryKeyring) -> None:
    err = failure_of(lambda: credentials.set_password("work", ""))
    assert str(err) == 'refusing to store an empty password for account "work"'
    assert memory.entries == {}


def test_delete_removes_only_that_account(memory: MemoryKeyring) -> None:
    credentials.set_password("work", "w")
    credentials.set_password("home", "h")
    credentials.delete_password("work")
    assert memory.entries == {("pop3s-fetch", "home"): "h"}


def test_delete_with_nothing_stored(memory: MemoryKeyring) -> None:
    err = failure_of(OPERATIONS["delete"])
    assert str(err) == 'no password stored for account "work"'
    assert err.__cause__ is None


def test_a_chainer_with_backends_is_usable(use_backend: Callable[[KeyringBackend], None]) -> None:
    inner = MemoryKeyring()

    class OneChainer(chainer.ChainerBackend):
        backends = [inner]  # noqa: RUF012

    use_backend(OneChainer())  # type: ignore[no-untyped-call]
    credentials.set_password("work", SECRET)
    assert inner.entries == {("pop3s-fetch", "work"): SECRET}
    assert credentials.get_password("work") == SECRET


# --- no usable backend ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend_class", [fail.Keyring, null.Keyring, EmptyChainer], ids=["fail", "null", "chainer"]
)
@pytest.mark.parametrize("action", list(OPERATIONS))
def test_no_usable_backend(
    use_backend: Callable[[KeyringBackend], None],
    backend_class: type[KeyringBackend],
    action: str,
) -> None:
    use_backend(backend_class())
    err = failure_of(OPERATIONS[action])
    assert str(err) == NO_BACKEND_MESSAGE
    assert err.hint == NO_BACKEND_HINT


def test_no_keyring_error_from_a_backend(use_backend: Callable[[KeyringBackend], None]) -> None:
    raising(use_backend, lambda _: keyring.errors.NoKeyringError("nothing here"))
    err = failure_of(OPERATIONS["read"])
    assert (str(err), err.hint) == (NO_BACKEND_MESSAGE, NO_BACKEND_HINT)


# --- locked and failing backends --------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "participle"), [("read", "read"), ("store", "stored"), ("delete", "deleted")]
)
def test_locked_keyring(
    use_backend: Callable[[KeyringBackend], None], action: str, participle: str
) -> None:
    raising(use_backend, lambda _: keyring.errors.KeyringLocked("Failed to unlock the collection!"))
    err = failure_of(OPERATIONS[action])
    assert str(err) == (
        f'the OS keyring is locked, so the password for account "work" could not be {participle}'
    )
    assert err.hint == LOCKED_HINT


@pytest.mark.parametrize("action", list(OPERATIONS))
def test_other_keyring_error_is_named_on_one_line(
    use_backend: Callable[[KeyringBackend], None], action: str
) -> None:
    original = keyring.errors.InitError("Failed to create the collection:\n  Prompt dismissed.")
    raising(use_backend, lambda _: original)
    err = failure_of(OPERATIONS[action])
    assert str(err) == (
        f'the OS keyring could not {action} the password for account "work": '
        "InitError: Failed to create the collection: Prompt dismissed."
    )
    assert err.hint is None
    assert err.__cause__ is original  # kept for --debug tracebacks


def test_non_keyring_backend_exception(use_backend: Callable[[KeyringBackend], None]) -> None:
    raising(use_backend, lambda _: DBusErrorResponse("org.freedesktop.DBus.Error.NoReply"))
    assert str(failure_of(OPERATIONS["read"])) == (
        'the OS keyring could not read the password for account "work": '
        "DBusErrorResponse: org.freedesktop.DBus.Error.NoReply"
    )


def test_exception_without_message(use_backend: Callable[[KeyringBackend], None]) -> None:
    raising(use_backend, lambda _: DBusErrorResponse())
    assert str(failure_of(OPERATIONS["read"])) == (
        'the OS keyring could not read the password for account "work": '
        "DBusErrorResponse: (no message)"
    )


def test_set_failure_never_echoes_the_password(
    use_backend: Callable[[KeyringBackend], None],
) -> None:
    raising(use_backend, lambda password: DBusErrorResponse(f"cannot store {password!s} now"))
    err = failure_of(OPERATIONS["store"])
    assert str(err) == (
        'the OS keyring could not store the password for account "work": '
        "DBusErrorResponse: cannot store [password hidden] now"
    )
    assert SECRET not in repr(err.args)
    # Not chained either: a traceback of err must not print the backend's message.
    assert err.__cause__ is None
    assert err.__context__ is None


def test_set_failure_hides_a_password_buried_in_the_cause(
    use_backend: Callable[[KeyringBackend], None],
) -> None:
    def make_error(password: str | None) -> BaseException:
        outer = DBusErrorResponse("method call failed")
        outer.__cause__ = ValueError(password)
        return outer

    raising(use_backend, make_error)
    err = failure_of(OPERATIONS["store"])
    assert str(err) == (
        'the OS keyring could not store the password for account "work": '
        "DBusErrorResponse: method call failed"
    )
    assert err.__cause__ is None
    assert err.__context__ is None


def test_set_failure_without_the_password_keeps_the_cause(
    use_backend: Callable[[KeyringBackend], None],
) -> None:
    original = keyring.errors.PasswordSetError("write refused")
    raising(use_backend, lambda _: original)
    err = failure_of(OPERATIONS["store"])
    assert str(err) == (
        'the OS keyring could not store the password for account "work": '
        "PasswordSetError: write refused"
    )
    assert err.__cause__ is original


# --- diagnostics and import cost --------------------------------------------------------------


def test_backend_description_of_a_plain_backend(memory: MemoryKeyring) -> None:
    assert credentials.backend_description() == "memory keyring MemoryKeyring (priority -10)"


def test_backend_description_of_the_fail_backend(
    use_backend: Callable[[KeyringBackend], None],
) -> None:
    use_backend(fail.Keyring())  # type: ignore[no-untyped-call]
    assert credentials.backend_description() == "fail Keyring (priority 0)"


def test_backend_description_of_a_chainer(
    use_backend: Callable[[KeyringBackend], None],
) -> None:
    use_backend(EmptyChainer())  # type: ignore[no-untyped-call]
    assert (
        credentials.backend_description()
        == "test credentials EmptyChainer (priority -1): no backends"
    )


def test_backend_description_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> KeyringBackend:
        raise ModuleNotFoundError("No module named 'nosuch'")

    monkeypatch.setattr(keyring, "get_keyring", broken)
    assert credentials.backend_description() == (
        "unavailable (ModuleNotFoundError: No module named 'nosuch')"
    )


def test_importing_the_module_does_not_import_keyring() -> None:
    code = "import sys, pop3s_fetch.credentials; print('keyring' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "False\n"


# --- OAuth2 refresh tokens --------------------------------------------------------------------

TOKEN = "1//refresh-token-value"
TOKEN_OPERATIONS: dict[str, Callable[[], object]] = {
    "read": lambda: credentials.get_refresh_token("work"),
    "store": lambda: credentials.set_refresh_token("work", TOKEN),
    "delete": lambda: credentials.delete_refresh_token("work"),
}


def test_refresh_token_round_trip_beside_the_password(memory: MemoryKeyring) -> None:
    credentials.set_password("work", SECRET)
    credentials.set_refresh_token("work", TOKEN)
    assert memory.entries == {
        ("pop3s-fetch", "work"): SECRET,
        ("pop3s-fetch-oauth2", "work"): TOKEN,
    }
    assert credentials.get_refresh_token("work") == TOKEN
    credentials.set_refresh_token("work", "rotated")
    assert credentials.get_refresh_token("work") == "rotated"
    credentials.delete_refresh_token("work")
    assert memory.entries == {("pop3s-fetch", "work"): SECRET}


def test_no_refresh_token_stored(memory: MemoryKeyring) -> None:
    err = failure_of(TOKEN_OPERATIONS["read"])
    assert str(err) == 'no OAuth2 refresh token stored for account "work"'
    assert err.hint == "sign in once with: pop3s-fetch oauth2 login work"


def test_delete_refresh_token_with_nothing_stored(memory: MemoryKeyring) -> None:
    err = failure_of(TOKEN_OPERATIONS["delete"])
    assert str(err) == 'no OAuth2 refresh token stored for account "work"'


def test_empty_refresh_token_is_refused(memory: MemoryKeyring) -> None:
    err = failure_of(lambda: credentials.set_refresh_token("work", ""))
    assert str(err) == 'refusing to store an empty OAuth2 refresh token for account "work"'
    assert memory.entries == {}


@pytest.mark.parametrize("action", list(TOKEN_OPERATIONS))
def test_refresh_token_without_a_keyring(
    use_backend: Callable[[KeyringBackend], None], action: str
) -> None:
    use_backend(fail.Keyring())  # type: ignore[no-untyped-call]
    err = failure_of(TOKEN_OPERATIONS[action])
    assert (str(err), err.hint) == (NO_BACKEND_MESSAGE, TOKEN_NO_BACKEND_HINT)


def test_refresh_token_in_a_locked_keyring(use_backend: Callable[[KeyringBackend], None]) -> None:
    raising(use_backend, lambda _: keyring.errors.KeyringLocked("locked"))
    err = failure_of(TOKEN_OPERATIONS["store"])
    assert str(err) == (
        'the OS keyring is locked, so the OAuth2 refresh token for account "work" '
        "could not be stored"
    )
    assert err.hint == UNLOCK_HINT


def test_refresh_token_failure_never_echoes_the_token(
    use_backend: Callable[[KeyringBackend], None],
) -> None:
    raising(use_backend, lambda secret: DBusErrorResponse(f"cannot store {secret!s}"))
    err = failure_of(TOKEN_OPERATIONS["store"])
    assert str(err) == (
        'the OS keyring could not store the OAuth2 refresh token for account "work": '
        "DBusErrorResponse: cannot store [token hidden]"
    )
    assert err.__cause__ is None
    assert err.__context__ is None


def test_no_backend_under_cron_gives_the_session_bus_first(
    use_backend: Callable[[KeyringBackend], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cron runs without DBUS_SESSION_BUS_ADDRESS while the desktop's bus is at its usual
    place: the fix that reaches the keyring comes before the others."""
    run_user = tmp_path / "run-user"
    (run_user / str(os.getuid())).mkdir(parents=True)
    bus = run_user / str(os.getuid()) / "bus"
    monkeypatch.setattr(credentials, "RUN_USER", run_user)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    use_backend(fail.Keyring())  # type: ignore[no-untyped-call]
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(bus))
        err = failure_of(OPERATIONS["read"])
    assert str(err) == NO_BACKEND_MESSAGE
    assert err.hint == (
        f"this run was not given your D-Bus session, whose socket is {bus}: put "
        f"DBUS_SESSION_BUS_ADDRESS=unix:path={bus} in the crontab (the keyring is usable while "
        f"it is unlocked, that is while you are logged in); or else: {NO_BACKEND_HINT}"
    )
