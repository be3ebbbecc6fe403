"""The storage interface the sync engine writes mail through, and what both backends share.

This module owns the contract between the sync engine and the destinations: a message is
streamed into a :class:`MessageWriter`, staged, and then a batch of staged messages is made
durable and visible by :meth:`Destination.publish`, which reports every :class:`Placement`
to the caller's journal *before* any message becomes visible. After a crash the caller asks
:meth:`Destination.reconcile` whether each journalled placement made it. The backends live
in :mod:`pop3s_fetch.maildir` and :mod:`pop3s_fetch.mbox`.

It must not know about POP3, UIDLs, the state store or the configuration file: a destination
is a path and a kind, and a message is bytes.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from pop3s_fetch.errors import DeliveryError

#: How long publish() and reconcile() wait for another program to release an mbox.
LOCK_TIMEOUT = 30.0

#: Small chunks are gathered up to this size so that a message costs few system calls.
WRITE_BUFFER_SIZE = 256 * 1024

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one message went; recorded in the state store *before* the message becomes visible.

    ``target``: Maildir: the unique base file name (no directory, no ":2,flags"); mbox: "".
    ``offset``: mbox: byte offset of the message's "From " line; Maildir: 0.
    ``length``: bytes the message occupies (mbox: From line + quoted body + blank line).
    ``digest``: mbox: hex sha256 of the bytes after the From line up to offset+length; Maildir: "".
    """

    target: str
    offset: int
    length: int
    digest: str


@dataclass(eq=False, slots=True)
class StagedMessage:
    """A message written in full but not yet visible; only its size is meant for callers."""

    size: int


class MessageWriter(Protocol):
    """Receives one message as chunks split at arbitrary places (even inside a line)."""

    def write(self, chunk: bytes) -> None:
        """Append message bytes (LF line ends, already dot-unstuffed)."""

    def finish(self) -> StagedMessage:
        """Declare the message complete; its data becomes durable soon after."""

    def abort(self) -> None:
        """Discard the message and its temporary file; safe to call more than once."""


RecordIntents = Callable[[list[Placement]], None]


class Destination(abc.ABC):
    """A Maildir or an mbox that messages are delivered into, exactly once."""

    @abc.abstractmethod
    def open_message(self) -> MessageWriter:
        """Start a new message.

        Raises:
            DeliveryError: the temporary file cannot be created.
        """

    @abc.abstractmethod
    def publish(
        self, staged: Sequence[StagedMessage], record_intents: RecordIntents
    ) -> list[Placement]:
        """Make a batch durable and visible, calling ``record_intents`` once before anything shows.

        The batch is consumed whatever happens: temporary files are gone when this returns.

        Raises:
            DeliveryError: an OSError; placements already recorded may be visible, so the
                caller must reconcile() them.
            LockedError: another program kept the mbox locked for too long.
        """

    @abc.abstractmethod
    def reconcile(self, placements: Sequence[Placement]) -> list[bool]:
        """Tell, for each journalled placement, whether its message is complete in the destination.

        Remnants of incomplete messages are removed; foreign mail is never touched.

        Raises:
            DeliveryError: an OSError.
            LockedError: another program kept the mbox locked for too long.
        """

    @abc.abstractmethod
    def remove_stale_staging(self) -> int:
        """Remove staging files that a killed run of the same owner left; return how many.

        They were never journalled (a message is journalled only once staged and synced),
        so nothing refers to them and the messages will be fetched again. Call it only while
        holding the owner's account lock, so no live run of that owner is writing them.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop worker threads and remove temporary files of messages never published."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


#: Staging files name their owner (an account); this one is for callers that name none.
DEFAULT_OWNER = "default"


def staging_prefix(owner: str) -> str:
    """The name prefix of one owner's staging files (Maildir tmp/ files, mbox spools)."""
    return f"pop3s-fetch.{owner}."


def open_destination(
    path: Path,
    kind: Literal["maildir", "mbox"],
    *,
    owner: str = DEFAULT_OWNER,
    lock_timeout: float = LOCK_TIMEOUT,
) -> Destination:
    """Open (creating if missing) the Maildir or mbox at ``path``.

    ``owner`` (an account name: letters, digits, ".", "_", "-") tags the staging files, see
    :meth:`Destination.remove_stale_staging`.

    ``lock_timeout`` is how long an mbox may stay locked by another program before
    LockedError; it exists so tests need not wait 30 s.

    Raises:
        DeliveryError: the destination cannot be created or is not writable.
    """
    # The backends import the shared types from this module, so they are imported here
    # rather than at the top, where the import would be circular; and only the one in use.
    if kind == "maildir":
        from pop3s_fetch.maildir import Maildir

        return Maildir(path, owner=owner)
    if kind == "mbox":
        from pop3s_fetch.mbox import Mbox

        return Mbox(path, owner=owner, lock_timeout=lock_timeout)
    raise ValueError(f"unknown destination kind {kind!r}")


# --- helpers shared by the backends -------------------------------------------------------


def delivery_error(err: OSError, action: str, path: Path) -> DeliveryError:
    """Turn an OSError into one sentence naming the path and the cause, plus a hint."""
    cause, hint = _describe_os_error(err, path)
    return DeliveryError(f"cannot {action} {path}: {cause}", hint=hint)


def _describe_os_error(err: OSError, path: Path) -> tuple[str, str]:
    code = err.errno
    if code == errno.ENOSPC:
        return "disk full (ENOSPC)", f"free some space on the file system that holds {path}"
    if code == errno.EDQUOT:
        return (
            "disk quota exceeded (EDQUOT)",
            f"free some space or raise your quota on the file system that holds {path}",
        )
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied", f"not writable: check the permissions of {path}"
    if code == errno.EROFS:
        return (
            "read-only file system",
            f"choose a destination on a writable file system instead of {path}",
        )
    if code == errno.ENOENT:
        return "no such file or directory", f"check that the directories leading to {path} exist"
    name = errno.errorcode.get(code, "unknown error") if code is not None else "unknown error"
    reason = err.strerror or str(err)
    return f"{reason.lower()} ({name})", f"check {path} and the file system that holds it"


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700, then fsync each new entry.

    Path.mkdir(parents=True) would give the parents the default mode; mail is private.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue
        fsync_directory(directory.parent)


def fsync_directory(path: Path) -> None:
    """Make the directory entries in ``path`` (new or removed names) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write() until every byte is written: a short write is legal for regular files too."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class BufferedFdWriter:
    """Gathers small chunks and writes big ones straight through, so memory stays bounded."""

    def __init__(self, fd: int, buffer_size: int = WRITE_BUFFER_SIZE) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._buffer_size = buffer_size

    def write(self, data: bytes) -> None:
        if len(self._buffer) + len(data) < self._buffer_size:
            self._buffer += data
            return
        self.flush()
        if len(data) >= self._buffer_size:
            write_all(self._fd, data)
        else:
            self._buffer += data

    def flush(self) -> None:
        if self._buffer:
            write_all(self._fd, self._buffer)
            self._buffer.clear()


def unlink_quietly(path: Path) -> None:
    """Remove a temporary file that may already be gone; cleanup must not mask the real error."""
    with contextlib.suppress(OSError):
        path.unlink()
