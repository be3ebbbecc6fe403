"""A real, unlocked Secret Service (gnome-keyring) on a private D-Bus session bus.

Owns the bus daemon, the keyring daemon and the throwaway HOME they keep their files in.
It hands out environment variables only: the program under test runs in a subprocess with
them and finds the Secret Service the way it would on a desktop. It knows nothing about
pop3s-fetch and does not import ``keyring``.
"""

from __future__ import annotations

import os
import secrets
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest

from tests.support import POLL_INTERVAL, kill_session_leftovers, server_unavailable

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SECRETS_BUS_NAME = "org.freedesktop.secrets"
REQUIRED_PROGRAMS = {
    "dbus-daemon": "dbus",
    "dbus-send": "dbus",
    "gnome-keyring-daemon": "gnome-keyring",
}
# Variables that would make ``keyring`` ignore the Secret Service in the child process.
KEYRING_OVERRIDES = ("PYTHON_KEYRING_BACKEND", "KEYRING_PROPERTY_")


class SecretService:
    """A running Secret Service; :attr:`env` points a subprocess at it.

    ``env`` holds ``DBUS_SESSION_BUS_ADDRESS``, ``HOME``, ``XDG_RUNTIME_DIR`` and the XDG base
    directories, all private to this instance.
    """

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir()
        runtime_dir = root / "run"
        runtime_dir.mkdir(mode=0o700)
        self.env: dict[str, str] = {
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_RUNTIME_DIR": str(runtime_dir),
        }
        self._root = root
        self._daemons: list[subprocess.Popen[bytes]] = []
        self._keyring: subprocess.Popen[bytes] | None = None
        self._unlock_password = secrets.token_urlsafe(18)  # the login keyring's, this instance's

    def subprocess_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The current environment plus :attr:`env`, without keyring backend overrides."""
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(KEYRING_OVERRIDES)
        }
        return {**inherited, **self.env, **(extra or {})}

    def start(self) -> None:
        """Start the bus, then gnome-keyring in it; wait until the Secret Service answers."""
        try:
            self.env["DBUS_SESSION_BUS_ADDRESS"] = self._start_bus()
            self._start_keyring_daemon()
            self._wait_for_bus_name(SECRETS_BUS_NAME)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the daemons, newest first, and anything they started."""
        while self._daemons:
            process = self._daemons.pop()
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            kill_session_leftovers(process.pid, STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()

    def restart_keyring(self) -> None:
        """Stop gnome-keyring and start it again on the same bus, with the same keyrings."""
        old = self._keyring
        assert old is not None, "start() first"
        old.terminate()
        old.wait(timeout=STOP_TIMEOUT)
        kill_session_leftovers(old.pid, STOP_TIMEOUT)
        self._daemons.remove(old)
        self._start_keyring_daemon()
        self._wait_for_bus_name(SECRETS_BUS_NAME)

    def _start_bus(self) -> str:
        """Start ``dbus-daemon --session`` on a socket of our own; return its address."""
        log_path = self._root / "dbus-daemon.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    "dbus-daemon",
                    "--session",
                    "--nofork",
                    "--nopidfile",
                    f"--address=unix:path={self._root / 'bus'}",
                    "--print-address=1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                # Services the bus activates inherit this environment: keep them in our HOME.
                env=self.subprocess_env(),
                start_new_session=True,
            )
        self._daemons.append(process)
        assert process.stdout is not None
        address = read_line(process.stdout, START_TIMEOUT).decode().strip()
        if not address:
            raise RuntimeError(f"dbus-daemon printed no address: {tail(log_path)}")
        return address

    def _start_keyring_daemon(self) -> None:
        """Start gnome-keyring's Secret Service with a new login keyring, unlocked.

        The random unlock password goes through stdin, never argv; ``--foreground`` keeps the
        daemon our child, so that we can stop it.
        """
        with (self._root / "gnome-keyring.log").open("wb") as log:
            process = subprocess.Popen(
                ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.subprocess_env(),
                start_new_session=True,
            )
        self._daemons.append(process)
        self._keyring = process
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(self._unlock_password.encode())

    def _wait_for_bus_name(self, name: str) -> None:
        """Poll the bus until ``name`` has an owner: the daemon registers asynchronously."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._bus_name_has_owner(name):
                return
            time.sleep(POLL_INTERVAL)  # an external process starting up, polled with a deadline
        log = tail(self._root / "gnome-keyring.log")
        raise RuntimeError(f"{name} did not appear on the bus within {START_TIMEOUT:.0f}s: {log}")

    def _bus_name_has_owner(self, name: str) -> bool:
        """Ask the bus whether ``name`` is owned, without activating it."""
        result = subprocess.run(
            [
                "dbus-send",
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                f"string:{name}",
            ],
            env=self.subprocess_env(),
            capture_output=True,
            check=False,
            timeout=START_TIMEOUT,
        )
        return result.returncode == 0 and b"boolean true" in result.stdout


def read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a child's pipe, or ``b""`` if none arrives in ``timeout`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return b""
    return stream.readline()


def tail(path: Path) -> str:
    """The end of a daemon's log, for error messages."""
    return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


@pytest.fixture(scope="session")
def secret_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretService]:
    """An unlocked gnome-keyring Secret Service for the session, for subprocesses only.

    Run the program with ``env=secret_service.subprocess_env()``; ``keyring`` then picks
    ``keyring.backends.SecretService.Keyring`` and never prompts.
    """
    for program, package in REQUIRED_PROGRAMS.items():
        if shutil.which(program) is None:
            server_unavailable(f"{program} is not installed (apt-get install {package})")
    service = SecretService(tmp_path_factory.mktemp("secret-service"))
    service.start()
    try:
        yield service
    finally:
        service.stop()
