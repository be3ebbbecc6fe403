"""Reading the password straight from the Secret Service, and falling back to keyring.

A real gnome-keyring on a private D-Bus session bus, a real Dovecot, the CLI as a process. The
password goes in through ``pop3s-fetch password set`` (keyring's Secret Service backend), so the
fast path must find what keyring stored; whenever it steps aside, keyring answers as before,
with the same error texts. ``--debug`` says which way the password was read.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cli import Cli, dovecot_account, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.secret_service import SecretService

pytestmark = [pytest.mark.dovecot, pytest.mark.secret_service]

DIRECT = "was read from the Secret Service directly"
ASKING_KEYRING = "asking keyring"


@pytest.fixture
def keyring_cli(tmp_path: Path, secret_service: SecretService) -> Cli:
    env = dict(secret_service.env)
    env.pop("HOME", None)
    cli = make_cli(tmp_path, env)
    cli.env["HOME"] = secret_service.env["HOME"]
    return cli


def configure(cli: Cli, dovecot: DovecotServer, user: DovecotUser) -> str:
    """An account with a name of its own: the keyring outlives a test."""
    return dovecot_account(cli, dovecot, user.name, "fast")


def store_password(cli: Cli, name: str, password: str) -> None:
    result = cli.run("password", "set", name, input=password + "\n")
    assert result.code == 0, result.output


def assert_no_leak(cli: Cli, password: str) -> None:
    assert password.encode() not in cli.everything_written()


def test_finds_the_password_that_password_set_stored(
    keyring_cli: Cli, dovecot: DovecotServer
) -> None:
    user = dovecot.add_user([b"Subject: one\n\nbody\n"])
    name = configure(keyring_cli, dovecot, user)
    store_password(keyring_cli, name, user.password)

    result = keyring_cli.run("--debug", "sync")
    assert result.code == 0, result.output
    assert f'the password for account "{name}" {DIRECT}' in result.stderr
    assert ASKING_KEYRING not in result.stderr
    assert result.stdout.startswith(f"{name}: 1 new message (")
    assert_no_leak(keyring_cli, user.password)


def test_a_chosen_backend_is_left_to_keyring(keyring_cli: Cli, dovecot: DovecotServer) -> None:
    user = dovecot.add_user([])
    name = configure(keyring_cli, dovecot, user)
    store_password(keyring_cli, name, user.password)
    chosen = {"PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring"}

    result = keyring_cli.run("--debug", "sync", extra_env=chosen)
    assert result.code == 0, result.output
    assert DIRECT not in result.stderr
    assert result.stdout == f"{name}: no new mail, 0 on server\n"
    assert_no_leak(keyring_cli, user.password)


def test_without_a_session_bus_the_error_is_keyrings(
    keyring_cli: Cli, dovecot: DovecotServer
) -> None:
    user = dovecot.add_user([])
    name = configure(keyring_cli, dovecot, user)
    store_password(keyring_cli, name, user.password)
    del keyring_cli.env["DBUS_SESSION_BUS_ADDRESS"]

    result = keyring_cli.run("--debug", "sync")
    assert result.code == 77
    assert DIRECT not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith(
        f'error: {name}: no usable OS keyring for account "{name}" (keyring found no backend; '
        "is a Secret Service such as gnome-keyring running in this D-Bus session?)"
    )
    assert_no_leak(keyring_cli, user.password)


def test_no_item_falls_back_to_the_same_error(keyring_cli: Cli, dovecot: DovecotServer) -> None:
    user = dovecot.add_user([])
    name = configure(keyring_cli, dovecot, user)

    result = keyring_cli.run("--debug", "sync")
    assert result.code == 77
    assert "reading the Secret Service directly: 0 items match; asking keyring" in result.stderr
    quiet = keyring_cli.run("sync")
    assert quiet.code == 77
    assert quiet.stderr == (
        f'error: {name}: no password stored for account "{name}" '
        f"(store one with: pop3s-fetch password set {name})\n"
    )


def test_several_matching_items_are_left_to_keyring(
    keyring_cli: Cli, dovecot: DovecotServer
) -> None:
    user = dovecot.add_user([])
    name = configure(keyring_cli, dovecot, user)
    store_password(keyring_cli, name, user.password)
    # A second item that keyring's search (service, username) also finds, stored by hand.
    argv = ["secret-tool", "store", "--label=by hand", "service", "pop3s-fetch"]
    stored = subprocess.run(
        [*argv, "username", name, "note", "second"],
        input=user.password.encode(),
        env=keyring_cli.env,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert stored.returncode == 0, stored.stderr

    result = keyring_cli.run("--debug", "sync")
    assert result.code == 0, result.output
    assert "reading the Secret Service directly: 2 items match; asking keyring" in result.stderr
    assert DIRECT not in result.stderr
    assert_no_leak(keyring_cli, user.password)
