"""The base of every failure a user can act on, and the exit codes failures map to.

Each module raises a subclass of :class:`Pop3sFetchError` whose ``str()`` is one sentence
naming the cause and whose ``hint`` names the fix; the CLI prints both on one line and exits
with ``exit_code``. Codes come from sysexits.h so that cron wrappers and systemd can tell a
temporary failure (75) from one that needs a human (77, 78).

It defines the base, the exit codes and the broad kinds of failure (configuration,
credentials, the remote side, delivery, state, locking). A module may subclass one of these
for a failure of its own and define it there; this docstring names none of those, so it
cannot fall out of date.

This module imports nothing from the package, so every other module may import it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit status (sysexits.h)."""

    OK = 0
    USAGE = 64  # EX_USAGE: bad command line
    UNAVAILABLE = 69  # EX_UNAVAILABLE: TLS certificate or handshake refused
    SOFTWARE = 70  # EX_SOFTWARE: a bug in pop3s-fetch
    IOERR = 74  # EX_IOERR: cannot write the destination or the state store
    TEMPFAIL = 75  # EX_TEMPFAIL: network down, timeout, account locked: retry later
    PROTOCOL = 76  # EX_PROTOCOL: the server broke the protocol or cannot serve UIDLs
    NOPERM = 77  # EX_NOPERM: no password, no keyring, or the server refused the login
    CONFIG = 78  # EX_CONFIG: the configuration file is wrong
    INTERRUPTED = 130  # killed by Ctrl-C (128 + SIGINT)


class Pop3sFetchError(Exception):
    """Base of every expected failure: a message, a hint, an exit code."""

    exit_code: ExitCode = ExitCode.SOFTWARE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(Pop3sFetchError):
    """The configuration file is missing or invalid; ``problems`` lists every fault found."""

    exit_code = ExitCode.CONFIG

    def __init__(
        self, message: str, *, problems: list[str] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = list(problems or [])


class CredentialError(Pop3sFetchError):
    """No password could be had: none stored, or no usable keyring backend."""

    exit_code = ExitCode.NOPERM


class RemoteError(Pop3sFetchError):
    """Something went wrong on the way to, or at, the POP3 server."""

    exit_code = ExitCode.TEMPFAIL


class ConnectError(RemoteError):
    """DNS, TCP, a timeout or a dropped connection: usually fixed by retrying later."""

    exit_code = ExitCode.TEMPFAIL


class TLSError(RemoteError):
    """The server's certificate or TLS handshake was refused; no credentials were sent."""

    exit_code = ExitCode.UNAVAILABLE


class AuthError(RemoteError):
    """The server refused the login."""

    exit_code = ExitCode.NOPERM


class ProtocolError(RemoteError):
    """The server answered something we cannot safely work with."""

    exit_code = ExitCode.PROTOCOL


class DeliveryError(Pop3sFetchError):
    """The destination (Maildir or mbox) could not be written."""

    exit_code = ExitCode.IOERR


class StateError(Pop3sFetchError):
    """The UIDL state store could not be read or written."""

    exit_code = ExitCode.IOERR


class LockedError(Pop3sFetchError):
    """Another pop3s-fetch process is syncing the same account."""

    exit_code = ExitCode.TEMPFAIL
