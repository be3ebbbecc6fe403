"""One account between one maildrop and one destination: what the sync-safety suites share.

The fault, disk-full and crash suites all ask the same questions of a sync: did every message
land exactly once, byte for byte; is anything left on the server that ``keep`` should have
removed (or gone that it should have kept); did a temporary file or lock stay behind. A
:class:`Rig` answers them for one account, whatever holds its mail (the built-in server in
this process, or a Dovecot user) and however the sync runs: :class:`InProcessRig` calls
``sync_account``, :class:`CliRig` runs the installed command in a private home. The assertions
stay in the suites, so pytest can explain a failure. This module must not know which faults a
suite scripts, how it fills a disk, or how it kills a run.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, Self, TypeVar

from pop3s_fetch.config import Account
from pop3s_fetch.demo.server import MailStore, Pop3Server
from pop3s_fetch.destinations import read_messages
from pop3s_fetch.sync import AccountResult, SyncOptions, sync_account
from tests.support.cli import Cli, Result, account_toml, make_cli
from tests.support.mail import as_stored, leftovers
from tests.support.reporting import NullReporter


class Maildrop(Protocol):
    """Where an account's mail waits on the server (a Dovecot user is one as it stands)."""

    def messages_on_server(self) -> list[bytes]: ...


@dataclass
class BuiltinMaildrop:
    """One user's maildrop on the built-in server, running in this process.

    Tests script :attr:`server`'s faults between runs and read its transcript.
    """

    server: Pop3Server
    store: MailStore
    user: str
    password: str

    def messages_on_server(self) -> list[bytes]:
        # A client that deleted nothing may close without waiting for QUIT's reply, and the
        # server commits an EXPIRE 0 deletion at QUIT: read the store once sessions are over.
        self.server.wait_idle()
        return [message for _, message in self.store.messages()]

    def sessions(self) -> list[list[str]]:
        """The commands of each session so far, oldest first (PASS masked)."""
        return self.server.transcript

    def last_session(self) -> list[str]:
        return self.server.transcript[-1]


@contextlib.contextmanager
def serve(
    context: ssl.SSLContext, messages: Sequence[bytes], *, user: str, password: str
) -> Iterator[BuiltinMaildrop]:
    """The built-in server holding ``messages`` for ``user``, stopped on the way out."""
    store = MailStore(list(messages))
    with Pop3Server(context, {user: (password, store)}) as server:
        yield BuiltinMaildrop(server, store, user, password)


def destination_in(directory: Path, fmt: str) -> Path:
    """Where the suites deliver: a Maildir, or an mbox one directory down (so its spools and
    locks have a directory of their own to be found in)."""
    return directory / ("Maildir" if fmt == "maildir" else "mail/inbox")


def temporary_files(destination: Path, fmt: str) -> list[Path]:
    """:func:`~tests.support.mail.leftovers`, also before the destination's directory exists."""
    directory = destination if fmt == "maildir" else destination.parent
    return leftovers(destination, fmt) if directory.exists() else []


M = TypeVar("M", bound=Maildrop)


class Rig(Generic[M]):
    """The messages an account started with, where they wait, and where they must land."""

    def __init__(
        self, maildrop: M, originals: Sequence[bytes], destination: Path, fmt: str, keep: bool
    ) -> None:
        self.maildrop = maildrop
        self.originals = list(originals)
        self.destination = destination
        self.fmt = fmt
        self.keep = keep

    def landed(self) -> list[bytes]:
        """Every message in the destination, sorted by content."""
        return sorted(
            read_messages(self.destination, "maildir" if self.fmt == "maildir" else "mbox")
        )

    def expected(self) -> list[bytes]:
        """What :meth:`landed` holds once every original is delivered exactly once."""
        return sorted(as_stored(message, self.fmt) for message in self.originals)

    def on_server(self) -> list[bytes]:
        """Every message still in the maildrop, sorted by content."""
        return sorted(self.maildrop.messages_on_server())

    def expected_on_server(self) -> list[bytes]:
        """What :meth:`on_server` holds once a sync is complete: all or nothing, by ``keep``."""
        return sorted(self.originals) if self.keep else []

    def temporary_files(self) -> list[Path]:
        return temporary_files(self.destination, self.fmt)


class InProcessRig(Rig[BuiltinMaildrop]):
    """An account on the built-in server, synced by calling ``sync_account`` in this process."""

    def __init__(
        self, maildrop: BuiltinMaildrop, originals: Sequence[bytes], account: Account, state: Path
    ) -> None:
        super().__init__(maildrop, originals, account.destination, account.format, account.keep)
        self.account = account
        self.options = SyncOptions(state_dir=state)

    @property
    def server(self) -> Pop3Server:
        return self.maildrop.server

    @property
    def store(self) -> MailStore:
        return self.maildrop.store

    def sessions(self) -> list[list[str]]:
        return self.maildrop.sessions()

    def sync(self, account: Account | None = None) -> AccountResult:
        """One run for this account (or a variant of it), with this rig's state directory."""
        password = self.maildrop.password
        return sync_account(account or self.account, lambda: password, self.options, NullReporter())


def in_process_rig(
    maildrop: BuiltinMaildrop,
    originals: Sequence[bytes],
    directory: Path,
    *,
    name: str,
    fmt: str,
    keep: bool,
    ca_file: Path,
    timeout: float,
    destination: Path | None = None,
) -> InProcessRig:
    """An account for ``maildrop``'s user, delivering under ``directory`` (or to
    ``destination``), with its state in ``directory/state``."""
    account = Account(
        name=name,
        host=maildrop.server.host,
        port=maildrop.server.port,
        username=maildrop.user,
        destination=destination or destination_in(directory, fmt),
        format="maildir" if fmt == "maildir" else "mbox",
        keep=keep,
        ca_file=ca_file,
        timeout=timeout,
    )
    return InProcessRig(maildrop, originals, account, directory / "state")


@dataclass(frozen=True)
class Login:
    """Where the command connects and as whom (the built-in server's or a Dovecot user's)."""

    host: str
    port: int
    username: str
    password: str
    ca_file: Path


def builtin_login(maildrop: BuiltinMaildrop, ca_file: Path) -> Login:
    return Login(
        maildrop.server.host, maildrop.server.port, maildrop.user, maildrop.password, ca_file
    )


def keyring_env(password: str) -> dict[str, str]:
    """The password reaches the child through the test keyring backend, never argv."""
    return {
        "PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring",
        "TEST_KEYRING_PASSWORD": password,
    }


class CliRig(Rig[M]):
    """An account synced by the installed command, in a private home of its own."""

    def __init__(
        self,
        maildrop: M,
        originals: Sequence[bytes],
        cli: Cli,
        name: str,
        destination: Path,
        fmt: str,
        keep: bool,
    ) -> None:
        super().__init__(maildrop, originals, destination, fmt, keep)
        self.cli = cli
        self.name = name

    @classmethod
    def configure(
        cls,
        directory: Path,
        maildrop: M,
        originals: Sequence[bytes],
        login: Login,
        *,
        name: str,
        fmt: str,
        keep: bool,
        destination: Path | None = None,
    ) -> Self:
        """A CLI home under ``directory`` configured for one account, delivering to
        ``destination`` (by default a Maildir or mbox inside the home)."""
        directory.mkdir(parents=True, exist_ok=True)
        cli = make_cli(directory, keyring_env(login.password))
        destination = destination or destination_in(cli.home, fmt)
        cli.write_config(
            account_toml(
                name,
                host=login.host,
                port=login.port,
                username=login.username,
                destination=destination,
                fmt=fmt,
                keep=keep,
                ca_file=login.ca_file,
            )
        )
        return cls(maildrop, originals, cli, name, destination, fmt, keep)

    @property
    def state_file(self) -> Path:
        return self.cli.state_dir / f"{self.name}.sqlite3"

    def sync(self) -> Result:
        return self.cli.run("sync")
