"""The Secret Service link a daemon keeps (credentials.secret_service_kept_open), in process.

A real gnome-keyring on a private D-Bus session bus. Secrets are stored with ``secret-tool``
under keyring's attributes, as ``password set`` stores them. What is counted is where
credentials.py meets secretstorage: new bus connections (``dbus_init``) and new Secret Service
sessions (``open_session``, the Diffie-Hellman exchange), by wrapping those two functions.
"""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import secretstorage
import secretstorage.util

from pop3s_fetch import credentials
from tests.support.cli import dovecot_account, make_cli
from tests.support.dovecot import DovecotServer
from tests.support.secret_service import SecretService
from tests.system.test_daemon import Running

pytestmark = [pytest.mark.secret_service]

SECRET_TOOL_STORE = ("secret-tool", "store", "--label=test")


class Opened:
    """How many bus connections and Secret Service sessions were opened."""

    def __init__(self) -> None:
        self.connections = 0
        self.sessions = 0


@pytest.fixture
def own_service(tmp_path: Path) -> Iterator[SecretService]:
    """A Secret Service of this test's own: the test restarts it."""
    (tmp_path / "service").mkdir()
    service = SecretService(tmp_path / "service")
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def daemons() -> Iterator[list[Running]]:
    """Daemons a test started, killed if the test failed before stopping them."""
    started: list[Running] = []
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    counts = Opened()
    real_init, real_session = secretstorage.dbus_init, secretstorage.util.open_session

    def dbus_init() -> object:
        counts.connections += 1
        return real_init()

    def open_session(connection: object) -> object:
        counts.sessions += 1
        return real_session(connection)

    monkeypatch.setattr(secretstorage, "dbus_init", dbus_init)
    monkeypatch.setattr(secretstorage.util, "open_session", open_session)
    return counts


def use(service: SecretService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process at ``service`` as a desktop session would, keyring left to choose."""
    for name, value in service.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    keyring_core = sys.modules.get("keyring.core")
    if keyring_core is not None:  # another test set keyring up: the fast path would step aside
        monkeypatch.setattr(keyring_core, "_keyring_backend", None)


def store(service: SecretService, account: str, password: str) -> None:
    stored = subprocess.run(
        [*SECRET_TOOL_STORE, "service", credentials.SERVICE, "username", account],
        input=password.encode(),
        env=service.subprocess_env(),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert stored.returncode == 0, stored.stderr


def test_reads_share_one_connection_and_session_and_see_each_change(
    secret_service: SecretService, monkeypatch: pytest.MonkeyPatch, opened: Opened
) -> None:
    use(secret_service, monkeypatch)
    account = f"kept-{secrets.token_hex(4)}"
    first, second = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    store(secret_service, account, first)
    with credentials.secret_service_kept_open():
        assert [credentials.get_password(account) for _ in range(5)] == [first] * 5
        store(secret_service, account, second)  # what `password set` does meanwhile
        assert credentials.get_password(account) == second
    assert (opened.connections, opened.sessions) == (1, 1)
    # Without it, each read opens its own, as a one-shot sync does.
    assert credentials.get_password(account) == second
    assert credentials.get_password(account) == second
    assert (opened.connections, opened.sessions) == (3, 3)


def test_a_restarted_keyring_is_found_again_without_a_word(
    own_service: SecretService,
    monkeypatch: pytest.MonkeyPatch,
    opened: Opened,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=credentials.__name__)
    use(own_service, monkeypatch)
    account = f"restart-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    store(own_service, account, password)
    with credentials.secret_service_kept_open():
        assert credentials.get_password(account) == password
        own_service.restart_keyring()
        assert credentials.get_password(account) == password
        assert credentials.get_password(account) == password
    # One new link after the restart, not one per read; seen from the bus (another process
    # owns the Secret Service's name), not from a call on a session that no longer exists.
    assert (opened.connections, opened.sessions) == (2, 2)
    assert "the Secret Service was restarted" in caplog.text
    assert "link failed" not in caplog.text
    assert password not in caplog.text


def test_a_lost_bus_connection_is_opened_again(
    secret_service: SecretService, monkeypatch: pytest.MonkeyPatch, opened: Opened
) -> None:
    use(secret_service, monkeypatch)
    account = f"lost-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    store(secret_service, account, password)
    with credentials.secret_service_kept_open():
        assert credentials.get_password(account) == password
        credentials._kept._connection.sock.close()  # as when the bus daemon goes away
        assert credentials.get_password(account) == password
        assert credentials.get_password(account) == password
    assert opened.connections == 2


@pytest.mark.dovecot
def test_the_daemon_keeps_one_link_and_uses_a_new_password_at_the_next_poll(
    tmp_path: Path, secret_service: SecretService, dovecot: DovecotServer, daemons: list[Running]
) -> None:
    """`sync --every` against Dovecot, the password in gnome-keyring: stored wrong first, then
    put right with `password set` while the daemon runs."""
    user = dovecot.add_user([b"Subject: one\n\nbody\n"])
    env = dict(secret_service.env)
    home = env.pop("HOME")
    cli = make_cli(tmp_path, env)
    cli.env["HOME"] = home
    name = dovecot_account(cli, dovecot, user.name, "daemon")
    wrong = secrets.token_urlsafe(12)
    assert cli.run("password", "set", name, input=wrong + "\n").code == 0
    daemon = Running(cli, "--debug", "--every", "1s")
    daemons.append(daemon)
    daemon.expect(rf"^{name}: next try in 1s \(1 failure in a row\)$", "err")
    assert cli.run("password", "set", name, input=user.password + "\n").code == 0
    daemon.expect(rf"^{name}: 1 new message \(", "out")
    daemon.expect(rf"^{name}: no new mail, 1 on server$", "out")
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0, daemon.seen
    errors = "\n".join(daemon.stderr_lines())
    assert errors.count("opened a Secret Service session to keep while running") == 1
    assert errors.count("was read from the Secret Service directly") >= 3
    everything = cli.everything_written() + "\n".join(map(str, daemon.seen)).encode()
    for password in (wrong, user.password):
        assert password.encode() not in everything
