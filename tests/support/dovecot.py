"""A private Dovecot POP3S server for integration tests, one per test session.

Owns the Dovecot configuration, its process, the passwd-file and the Maildirs it serves.
Nothing is read from /etc/dovecot: the instance runs from one generated file whose paths
all point into a temporary directory, under its own ``instance_name``. It knows nothing
about pop3s-fetch.

Who owns what. Dovecot refuses to touch mail as root, so:

- run as root (CI), the mail belongs to the system user ``pop3s-fetch-test``, which the
  fixture creates with ``useradd --system`` if it does not exist yet (a dedicated account,
  rather than ``nobody``, so that no other program's files share the owner); Dovecot's own
  processes use the package's ``dovecot``/``dovenull`` accounts;
- run as anyone else (a contributor's machine), every process and every file belongs to the
  current user and no privilege is needed.

Passwords are ``{PLAIN}`` in passwd-files, the one place the tests may write them. Each user
gets a file of its own (``passwd.d/%u``): Dovecot does re-read a changed passwd-file, but
checks at most once per second, so a user added within a second of another login was refused
with one shared file. A per-user file is first read when that user logs in, and never changes.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import kill_session_leftovers, server_unavailable
from tests.support.certs import ServerCert

ROOT_MAIL_USER = "pop3s-fetch-test"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.05
# Non-root shells often lack the sbin directories, where Debian puts the dovecot binary.
EXTRA_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")
POP3_BINARIES = ("/usr/lib/dovecot/pop3", "/usr/libexec/dovecot/pop3")

_message_sequence = itertools.count(1)
_user_sequence = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Accounts:
    """The system accounts that own the mail and run Dovecot's processes."""

    mail_uid: int
    mail_gid: int
    internal_user: str
    internal_group: str
    login_user: str
    unprivileged: bool  # True: everything runs as the current, non-root user

    @property
    def passwd_gid(self) -> int:
        """The auth process runs as the internal user, so the passwd-file must be its group's."""
        return grp.getgrnam(self.internal_group).gr_gid


def find_dovecot() -> str | None:
    """Path of the ``dovecot`` binary, also looking in sbin directories outside PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_SEARCH_PATH])
    return shutil.which("dovecot", path=search)


def missing_dovecot() -> str | None:
    """Why a private Dovecot POP3 server cannot be started here, or None when it can."""
    if find_dovecot() is None:
        return "dovecot is not installed (apt-get install dovecot-core dovecot-pop3d)"
    if not any(Path(binary).exists() for binary in POP3_BINARIES):
        return "Dovecot's POP3 server is not installed (apt-get install dovecot-pop3d)"
    return None


def require_dovecot() -> str:
    """The ``dovecot`` binary for a fixture; skip (or fail, when CI requires servers) without."""
    reason = missing_dovecot()
    executable = find_dovecot()
    if reason is not None or executable is None:
        server_unavailable(reason or "dovecot is not installed")
    return executable


def pick_accounts() -> Accounts:
    """Accounts for this process: the current user, or (as root) an unprivileged mail owner."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(os.getegid()).gr_name
        return Accounts(me.pw_uid, os.getegid(), me.pw_name, group, me.pw_name, unprivileged=True)
    owner = ensure_system_user(ROOT_MAIL_USER)
    return Accounts(
        owner.pw_uid,
        owner.pw_gid,
        internal_user="dovecot",
        internal_group="dovecot",
        login_user="dovenull",
        unprivileged=False,
    )


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """Return the system user ``name``, creating it (no home, no shell) if it is missing."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=False,  # a parallel session may have created it meanwhile: getpwnam decides
        capture_output=True,
        text=True,
    )
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"cannot create the mail owner {name!r}: {result.stderr}") from None


def free_port() -> int:
    """A loopback port that was free a moment ago (Dovecot binds it itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


#: Every password mechanism Dovecot 2.3 offers, so `auth = "auto"` is tested against the
#: strongest (SCRAM-SHA-256) and the others can be asked for by name.
AUTH_MECHANISMS = "plain login scram-sha-1 scram-sha-256 cram-md5 apop"


def render_config(
    *,
    root: Path,
    port: int,
    cert: ServerCert,
    passwd_dir: Path,
    mail_root: Path,
    accounts: Accounts,
) -> str:
    """The whole configuration of one instance; no ``!include``, so /etc/dovecot stays unread."""
    log = root / "dovecot.log"
    # Unprivileged, Dovecot cannot chroot or switch users: every service runs as we do.
    no_chroot = "  chroot =\n" if accounts.unprivileged else ""
    return f"""\
# Generated by tests/support/dovecot.py for one test session.
instance_name = pop3s-fetch-test-{secrets.token_hex(6)}
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {log}
info_log_path = {log}
debug_log_path = {log}

protocols = pop3
listen = {HOST}
ssl = required
ssl_cert = <{cert.cert_chain_file}
ssl_key = <{cert.key_file}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = {AUTH_MECHANISMS}
# Tests of refused logins need no brute-force protection; the default waits 2 seconds.
auth_failure_delay = 0

default_internal_user = {accounts.internal_user}
default_internal_group = {accounts.internal_group}
default_login_user = {accounts.login_user}
first_valid_uid = {accounts.mail_uid}
first_valid_gid = {accounts.mail_gid}

mail_location = maildir:{mail_root}/%u
pop3_uidl_format = %08Xu%08Xv

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd_dir}/%u
}}
userdb {{
  driver = static
  args = uid={accounts.mail_uid} gid={accounts.mail_gid} home={mail_root}/%u
}}

service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    address = {HOST}
    port = {port}
    ssl = yes
  }}
{no_chroot}}}
# Every test logs in from 127.0.0.1: without this, each refused login would slow the
# following ones down by up to 15 seconds (Dovecot's per-IP authentication penalty).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{no_chroot}}}
"""


class DovecotUser:
    """One mailbox on the server: its login and the Maildir behind it."""

    def __init__(self, name: str, password: str, maildir: Path, owner: tuple[int, int]) -> None:
        self.name = name
        self.password = password
        self.maildir = maildir
        self._owner = owner
        for sub in ("", "cur", "new", "tmp"):
            self._make_owned_dir(maildir / sub)

    def __repr__(self) -> str:  # keeps the password out of assertion messages
        return f"DovecotUser(name={self.name!r}, maildir={self.maildir!r})"

    def add_messages(self, messages: Sequence[bytes]) -> None:
        """Deliver ``messages`` (bytes as given, LF line ends) into ``new/``, in order.

        Each file is written in ``tmp/`` and renamed into ``new/``, so a running server never
        sees half a message; names sort in the order given.
        """
        for message in messages:
            name = (
                f"{int(time.time())}.Q{next(_message_sequence):08d}P{os.getpid()}.{ROOT_MAIL_USER}"
            )
            draft = self.maildir / "tmp" / name
            draft.write_bytes(message)
            draft.chmod(0o600)
            os.chown(draft, *self._owner)
            draft.rename(self.maildir / "new" / name)

    def messages_on_server(self) -> list[bytes]:
        """Contents of every message file in ``new/`` and ``cur/``, sorted by file name."""
        files = [*(self.maildir / "new").iterdir(), *(self.maildir / "cur").iterdir()]
        return [path.read_bytes() for path in sorted(files, key=lambda path: path.name)]

    def _make_owned_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, *self._owner)


class DovecotServer:
    """A running Dovecot serving POP3S (implicit TLS) on ``host:port``."""

    host = HOST

    def __init__(self, executable: str, cert: ServerCert, ca_file: Path, root: Path) -> None:
        self.ca_file = ca_file
        self.port = 0
        self.log_path = root / "dovecot.log"
        self._executable = executable
        self._cert = cert
        self._root = root
        self.config_path = root / "dovecot.conf"
        self._passwd_dir = root / "passwd.d"
        self._mail_root = root / "mail"
        self._accounts = pick_accounts()
        self._process: subprocess.Popen[bytes] | None = None

    def add_user(self, messages: Sequence[bytes] = (), password: str | None = None) -> DovecotUser:
        """Create a mailbox with a fresh name (and a random password unless one is given)."""
        if password is not None and (":" in password or "\n" in password):
            raise ValueError("a passwd-file password cannot hold ':' or a newline")
        name = f"user{next(_user_sequence)}"
        user = DovecotUser(
            name=name,
            password=password if password is not None else secrets.token_urlsafe(18),
            maildir=self._mail_root / name,
            owner=(self._accounts.mail_uid, self._accounts.mail_gid),
        )
        self._write_passwd_file(user)
        user.add_messages(messages)
        return user

    def start(self) -> None:
        """Write the configuration, start Dovecot and wait until the pop3s port accepts."""
        self.port = free_port()
        self._prepare_files()
        output = (self._root / "dovecot.stdout").open("wb")
        with output:
            # -F keeps the master in the foreground, so it is our child and we can wait on it;
            # its own session lets stop() find every process it forked.
            self._process = subprocess.Popen(
                [self._executable, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_accepting()

    def stop(self) -> None:
        """SIGTERM the master named in ``master.pid``, wait for it, and reap any leftover."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.kill(self._master_pid(process), signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        kill_session_leftovers(process.pid, STOP_TIMEOUT)
        self._process = None

    def log_text(self) -> str:
        """Everything Dovecot logged so far (session counters, errors)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _prepare_files(self) -> None:
        (self._root / "state").mkdir(exist_ok=True)
        self._mail_root.mkdir(mode=0o700, exist_ok=True)
        os.chown(self._mail_root, self._accounts.mail_uid, self._accounts.mail_gid)
        self._passwd_dir.mkdir(mode=0o750)
        os.chown(self._passwd_dir, os.geteuid(), self._accounts.passwd_gid)
        self.config_path.write_text(
            render_config(
                root=self._root,
                port=self.port,
                cert=self._cert,
                passwd_dir=self._passwd_dir,
                mail_root=self._mail_root,
                accounts=self._accounts,
            )
        )

    def _write_passwd_file(self, user: DovecotUser) -> None:
        """Write ``user``'s passwd-file whole before renaming it where Dovecot looks it up."""
        draft = self._passwd_dir / f".{user.name}.new"
        draft.touch(mode=0o640)
        os.chown(draft, os.geteuid(), self._accounts.passwd_gid)
        draft.write_text(f"{user.name}:{{PLAIN}}{user.password}\n")
        draft.replace(self._passwd_dir / user.name)

    def _wait_until_accepting(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self._process.returncode}{self._tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1.0):
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=POLL_INTERVAL)
        self.stop()
        raise RuntimeError(f"dovecot did not accept on {HOST}:{self.port}{self._tail()}")

    def _master_pid(self, process: subprocess.Popen[bytes]) -> int:
        """The pid in ``master.pid`` if it is the master run from our config, else our child's."""
        pid_file = self._root / "run" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            if str(self.config_path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        return process.pid

    def _tail(self) -> str:
        stdout = self._root / "dovecot.stdout"
        text = stdout.read_text(errors="replace") if stdout.exists() else ""
        return f"\n--- dovecot output ---\n{text}\n--- dovecot log ---\n{self.log_text()[-4000:]}"


@pytest.fixture(scope="session")
def dovecot(server_cert: ServerCert, ca_file: Path) -> Iterator[DovecotServer]:
    """A Dovecot POP3S server for the whole session; each test adds its own users."""
    executable = require_dovecot()
    # Not pytest's tmp_path: its parents are private to us, and Dovecot's unprivileged
    # processes must reach the passwd-file and the mail.
    root = Path(tempfile.mkdtemp(prefix="pop3s-fetch-dovecot-"))
    root.chmod(0o755)
    server = DovecotServer(executable, server_cert, ca_file, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
