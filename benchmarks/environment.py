"""The world the benchmarks run in: a private Dovecot POP3S server and its trust anchor.

Owns starting and stopping one Dovecot (the tests' own :class:`DovecotServer`, with a trustme
CA made here), the one password all benchmark users share, the scratch directory every run
writes into, and, for the keyring scenario, a private gnome-keyring (the tests' own
:class:`SecretService`). Knows nothing about the clients being measured.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.certs import SERVER_IDENTITIES, write_server_cert
from tests.support.dovecot import DovecotServer, DovecotUser, find_dovecot, missing_dovecot

#: Environment variable that carries the shared password to the clients (never argv).
PASSWORD_VARIABLE = "BENCH_POP3_PASSWORD"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a client connects and how it checks and logs in."""

    host: str
    port: int
    ca_file: Path
    password: str
    #: A private D-Bus session bus with an unlocked gnome-keyring: when set, the clients take
    #: the password from that Secret Service instead of the environment.
    session_bus: str | None = None


class Environment:
    """A running Dovecot plus the scratch directory; users are added per scenario."""

    def __init__(self, server: DovecotServer, scratch: Path, password: str) -> None:
        self.server = server
        self.scratch = scratch
        self.password = password
        self.session_bus: str | None = None  # set while a keyring scenario runs
        self._runs = 0

    @property
    def endpoint(self) -> Endpoint:
        server = self.server
        return Endpoint(server.host, server.port, server.ca_file, self.password, self.session_bus)

    def add_user(self, messages: Sequence[bytes]) -> DovecotUser:
        return self.server.add_user(messages, password=self.password)

    def fresh_directory(self, label: str) -> Path:
        """A new, empty directory for one run's output; kept until the suite ends."""
        self._runs += 1
        path = self.scratch / "runs" / f"{self._runs:04d}-{label}"
        path.mkdir(parents=True)
        path.chmod(0o755)
        return path


def missing_server() -> str | None:
    """Why Dovecot cannot be started here, or None when it can."""
    return missing_dovecot()


@contextlib.contextmanager
def running_environment(keep_scratch: bool = False) -> Iterator[Environment]:
    """Start Dovecot in a new scratch directory; stop it and delete everything afterwards."""
    reason = missing_server()
    if reason is not None:
        raise SystemExit(f"benchmarks: {reason}")
    executable = find_dovecot()
    assert executable is not None
    scratch = Path(tempfile.mkdtemp(prefix="pop3s-fetch-bench-"))
    scratch.chmod(0o755)  # Dovecot's unprivileged processes and dropped-privilege clients
    (scratch / "tls").mkdir()
    ca = trustme.CA()
    ca_file = scratch / "tls" / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # A common name too: fetchmail looks for one.
    leaf = ca.issue_cert(*SERVER_IDENTITIES, common_name="localhost")
    cert = write_server_cert(leaf, scratch / "tls")
    (scratch / "dovecot").mkdir(mode=0o755)
    server = DovecotServer(executable, cert, ca_file, scratch / "dovecot")
    # Letters and digits only: it goes into a passwd-file and into peers' config syntax.
    password = secrets.token_hex(16)
    try:
        server.start()
        yield Environment(server, scratch, password)
    finally:
        server.stop()
        if keep_scratch:
            print(f"benchmarks: scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def running_secret_service(scratch: Path) -> Iterator[str]:
    """A real gnome-keyring on a private D-Bus session bus (the tests' own); yields its address.

    Nothing of the user's desktop session is touched: the bus, the daemon and the HOME the
    keyring keeps its files in all live under ``scratch``.
    """
    from tests.support.secret_service import REQUIRED_PROGRAMS, SecretService

    missing = [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]
    if missing:
        raise SystemExit(f"benchmarks: the keyring scenario needs {', '.join(missing)}")
    # A directory per use: several scenarios start their own (keyidle, big100k, daemon).
    root = Path(tempfile.mkdtemp(prefix="secret-service-", dir=scratch))
    service = SecretService(root)
    service.start()
    try:
        yield service.env["DBUS_SESSION_BUS_ADDRESS"]
    finally:
        service.stop()


def environ_without(names: Sequence[str]) -> dict[str, str]:
    """The current environment minus ``names`` (the user's own mail setup must not leak in)."""
    return {k: v for k, v in os.environ.items() if k not in names}
