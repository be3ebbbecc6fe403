"""The contract between the sync engine and a destination, and the staging every backend shares.

A message is streamed into a :class:`MessageWriter`, staged, and then a batch of staged
messages is made durable and visible by :meth:`Destination.publish`, which reports every
:class:`Placement` to the caller's journal *before* any message becomes visible. After a
crash the caller asks :meth:`Destination.reconcile` whether each journalled placement made
it. :class:`StagingDestination` keeps the books on messages being written and staged, which
every backend needs the same way. :class:`Backend` is what a backend module provides.

It must not know any backend (Maildir, mbox), nor POP3, UIDLs, the state store or the
configuration file: a destination is a path and a kind, and a message is bytes.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from pop3s_fetch.errors import DeliveryError, ExitCode

#: How long publish() and reconcile() wait for another program to release a locked destination.
LOCK_TIMEOUT = 30.0

#: Staging files name their owner (an account); this one is for callers that name none.
DEFAULT_OWNER = "default"


def staging_prefix(owner: str) -> str:
    """The name prefix of one owner's staging files (Maildir tmp/ files, mbox spools)."""
    return f"pop3s-fetch.{owner}."


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


@dataclass(frozen=True, slots=True)
class Stored:
    """One message a destination holds, as a check of the copy needs it, without its bytes.

    ``key``: what :func:`pop3s_fetch.destinations.stored_key` gives its Placement.
    ``wire_size``: its bytes as read back, each LF counted as CRLF (as POP3's LIST counts).
    ``sha256``: hex digest of those bytes (before counting LF as CRLF).
    """

    key: str
    wire_size: int
    sha256: str


class Tally:
    """Digests and counts one message fed in pieces; small pieces are gathered first, because
    a hash update per mbox line would cost more than the hashing."""

    GATHER = 256 * 1024

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._gathered = bytearray()
        self._size = 0
        self._newlines = 0

    def update(self, data: bytes) -> None:
        if not self._gathered and len(data) >= self.GATHER:  # a block read from a file
            self._digest.update(data)
            self._size += len(data)
            self._newlines += data.count(b"\n")
            return
        self._gathered += data
        if len(self._gathered) >= self.GATHER:
            self._flush()

    def stored(self, key: str) -> Stored:
        self._flush()
        return Stored(key, self._size + self._newlines, self._digest.hexdigest())

    def _flush(self) -> None:
        self._digest.update(self._gathered)
        self._size += len(self._gathered)
        self._newlines += self._gathered.count(b"\n")
        self._gathered.clear()


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """A message found in a destination, described as publish() would have journalled it.

    ``placement`` is what a journal entry for it would hold (so reconcile() accepts it);
    ``head`` its header block (LF line ends, mbox quoting undone); ``size`` and ``lines`` the
    bytes and LF line ends of the message as it was handed over, so its size on the wire
    (CRLF line ends, what LIST counts) is ``size + lines``.
    """

    placement: Placement
    head: bytes
    size: int
    lines: int

    @property
    def wire_size(self) -> int:
        return self.size + self.lines


@dataclass(frozen=True, slots=True)
class Command:
    """A program that takes each message on stdin and delivers it itself (an MDA).

    ``argv`` is run without a shell; ``{name}`` in an argument is replaced by the message's
    value of that name (see the backend), never splitting the argument. ``timeout`` is in
    seconds, per message.
    """

    argv: tuple[str, ...]
    timeout: float


class MessageRefused(DeliveryError):
    """The destination refused this one batch; nothing of it was delivered, the rest may go on.

    Only a destination that delivers through a program raises it (the program said no). The
    caller forgets the batch's journal entries, leaves the messages on the server and carries
    on with the next ones. ``temporary``: the program asked to be tried again later (exit 75).
    """

    def __init__(self, message: str, *, temporary: bool, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.temporary = temporary
        self.exit_code = ExitCode.TEMPFAIL if temporary else ExitCode.IOERR


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
    """A mailbox that messages are delivered into, exactly once."""

    #: The most messages one publish() may take; None: any number (group commit).
    max_batch: int | None = None
    #: False when reconcile() cannot look: it then answers False for every placement, so the
    #: caller fetches those messages again (at least once, never lost).
    verifiable: bool = True

    @abc.abstractmethod
    def open_message(self, labels: Mapping[str, str] | None = None) -> MessageWriter:
        """Start a new message.

        ``labels`` are what the caller knows about the message that its bytes do not say
        (names and values of its own choosing); a backend that describes a message to a
        program passes them on, the others ignore them.

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
            LockedError: another program kept the destination locked for too long.
        """

    @abc.abstractmethod
    def reconcile(self, placements: Sequence[Placement]) -> list[bool]:
        """Tell, for each journalled placement, whether its message is complete in the destination.

        Remnants of incomplete messages are removed; foreign mail is never touched.

        Raises:
            DeliveryError: an OSError.
            LockedError: another program kept the destination locked for too long.
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

    def remove_if_unused(self) -> None:  # noqa: B027 - keeping everything is a fine default
        """After close(), when the run failed: remove what opening created, if still empty.

        A failed first run should not leave an empty ~/Mail/wrongpw behind. Never removes
        anything that existed before, or that holds anything. The default keeps everything.
        """

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


Staged = TypeVar("Staged", bound=StagedMessage)
Writer = TypeVar("Writer", bound=MessageWriter)


class StagingDestination(Destination, Generic[Staged]):
    """A destination that stages each message in a file of its own before publishing a batch.

    It tracks the writers still open and the messages staged but not yet published, so that
    publish() accepts only messages staged here (and each once), and close() leaves no
    staging file behind. A backend calls :meth:`_track` when it opens a writer, and
    :meth:`_stage` or :meth:`_forget` when that writer finishes or aborts.
    """

    def __init__(self, staged_type: type[Staged]) -> None:
        self._staged_type = staged_type
        self._writers: set[MessageWriter] = set()
        self._pending: set[Staged] = set()

    @abc.abstractmethod
    def _discard(self, message: Staged) -> None:
        """Remove the staging file of a message that will never be published."""

    def _track(self, writer: Writer) -> Writer:
        self._writers.add(writer)
        return writer

    def _stage(self, writer: MessageWriter, staged: Staged) -> Staged:
        self._writers.discard(writer)
        self._pending.add(staged)
        return staged

    def _forget(self, writer: MessageWriter) -> None:
        self._writers.discard(writer)

    def _take(self, staged: Sequence[StagedMessage]) -> list[Staged]:
        """Claim a batch for publish(): every message must be pending here; none stays so."""
        batch: list[Staged] = []
        for message in staged:
            if not isinstance(message, self._staged_type) or message not in self._pending:
                raise ValueError("publish() got a message not staged (or already published) here")
            batch.append(message)
        self._pending.difference_update(batch)
        return batch

    def _abort_unfinished(self) -> None:
        """Abort every writer not yet finished; each removes its own file."""
        for writer in list(self._writers):
            writer.abort()

    def _discard_unpublished(self) -> None:
        for message in self._pending:
            self._discard(message)
        self._pending.clear()

    def close(self) -> None:
        self._abort_unfinished()
        self._discard_unpublished()


class Backend(Protocol):
    """What a backend module provides, so the factory can import it only when it is used."""

    def open_destination(
        self, path: Path, *, owner: str, lock_timeout: float, command: Command | None
    ) -> Destination:
        """Open (creating if missing) the destination at ``path``; ``command`` is an MDA's."""

    def read_messages(self, path: Path) -> list[bytes]:
        """The messages the destination holds, as delivered, in the order it keeps them."""

    def stored_copies(self, path: Path) -> list[StoredCopy]:
        """Every message the destination holds, with where it is; read only, no lock taken."""

    def holds(self, path: Path, placements: Sequence[Placement]) -> list[bool]:
        """For each placement, whether the destination holds it now; read only, no lock."""
