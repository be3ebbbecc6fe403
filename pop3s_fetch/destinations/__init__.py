"""Where mail is delivered: open a destination by kind, or read back what one holds.

Each backend is a module of this package (see :class:`Backend` for what it provides),
imported only when a destination of its kind is used, so that a Maildir run pays for
neither the mbox code nor anything it imports. A new backend is a module plus one line
in :data:`BACKENDS`.

It must not know POP3, UIDLs, the state store or the configuration file; the modules
below it must not import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, cast

from pop3s_fetch.destinations.base import (
    DEFAULT_OWNER,
    LOCK_TIMEOUT,
    Backend,
    Command,
    Destination,
    MessageRefused,
    MessageWriter,
    Placement,
    RecordIntents,
    StagedMessage,
    Stored,
    StoredCopy,
    staging_prefix,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_OWNER",
    "LOCK_TIMEOUT",
    "Command",
    "Destination",
    "Kind",
    "MessageRefused",
    "MessageWriter",
    "Placement",
    "RecordIntents",
    "StagedMessage",
    "Stored",
    "StoredCopy",
    "holds",
    "inventory",
    "open_destination",
    "read_messages",
    "staging_prefix",
    "stored_copies",
    "stored_key",
    "stored_keys",
]

Kind = Literal["maildir", "mbox", "mda"]

#: The module that implements each kind of destination.
BACKENDS: dict[str, str] = {
    "maildir": "pop3s_fetch.destinations.maildir",
    "mbox": "pop3s_fetch.destinations.mbox",
    "mda": "pop3s_fetch.destinations.mda",
}


def open_destination(
    path: Path,
    kind: Kind,
    *,
    owner: str = DEFAULT_OWNER,
    lock_timeout: float = LOCK_TIMEOUT,
    command: Command | None = None,
) -> Destination:
    """Open (creating if missing) the destination of ``kind`` at ``path``.

    ``owner`` (an account name: letters, digits, ".", "_", "-") tags the staging files, see
    :meth:`Destination.remove_stale_staging`.

    ``lock_timeout`` is how long an mbox may stay locked by another program before
    LockedError; it exists so tests need not wait 30 s.

    ``command`` is the program an "mda" destination runs for each message; ``path`` is then
    the private directory its messages wait in (nothing is left there).

    Raises:
        DeliveryError: the destination cannot be created or is not writable.
    """
    return _backend(kind).open_destination(
        path, owner=owner, lock_timeout=lock_timeout, command=command
    )


def read_messages(path: Path, kind: Kind) -> list[bytes]:
    """The messages delivered to ``path``, byte for byte as they were handed over.

    In the order the destination keeps them (Maildir: new/ then cur/, each by file name;
    mbox: file order); nothing if ``path`` does not exist. It only reads: no lock is taken.
    An "mda" destination keeps nothing: what the program did with the mail is its own.
    """
    return _backend(kind).read_messages(path)


def stored_copies(path: Path, kind: Kind) -> list[StoredCopy]:
    """Every message in the destination at ``path`` with the placement that names it.

    For rebuilding a lost state: each copy's placement is what a run that delivered it would
    have journalled. It only reads; nothing if ``path`` does not exist; none for "mda".
    """
    return _backend(kind).stored_copies(path)


def holds(path: Path, kind: Kind, placements: Sequence[Placement]) -> list[bool]:
    """For each journalled placement, whether the destination at ``path`` holds it now.

    Read only (no lock, nothing removed, unlike reconcile()): for telling whether a state
    describes this destination. "mda" keeps nothing to look at: all False.
    """
    return _backend(kind).holds(path, placements)


def inventory(path: Path, kind: Literal["maildir", "mbox"]) -> Iterator[Stored]:
    """What checking a copy against a record of what was placed where needs of each message
    (``backup`` verifies so): its key (what :func:`stored_key` gives its Placement), and the
    size and digest of the bytes :func:`read_messages` gives, in the same order.

    Streamed: each message is read in pieces and forgotten, so a copy of any size, and a
    message of any size, is checked in little memory.
    """
    module = importlib.import_module(BACKENDS[kind])
    listed: Iterator[Stored] = module.inventory(path)
    return listed


def stored_keys(path: Path, kind: Literal["maildir", "mbox"]) -> Iterator[str]:
    """The keys :func:`inventory` gives, at the cost of a listing (Maildir) or of finding the
    separator lines (mbox): for telling which recorded messages are still there."""
    module = importlib.import_module(BACKENDS[kind])
    keys: Iterator[str] = module.stored_keys(path)
    return keys


def stored_key(kind: Literal["maildir", "mbox"], placement: Placement) -> str:
    """The key :func:`inventory` gives the message recorded at ``placement``."""
    return placement.target if kind == "maildir" else str(placement.offset)


def _backend(kind: str) -> Backend:
    try:
        module = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown destination kind {kind!r}") from None
    # The module is checked against Backend by the tests; import_module cannot say its type.
    return cast(Backend, importlib.import_module(module))
