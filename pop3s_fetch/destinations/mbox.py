"""mboxrd delivery: spool and quote each message, then append a batch under the mail locks.

A message is quoted while it streams into a private spool file next to the mbox (every
line matching ``^>*From `` gains one ">"), and its length and sha256 are computed on the way,
so publishing needs neither the whole message in memory nor a second read. The append
happens under the three locks other mail programs use (``<mbox>.lock``, flock, fcntl), is
fsynced, and is truncated away again if anything fails.

Because mbox has no per-message files, the caller's journal records each message's offset,
length and digest; :meth:`Mbox.reconcile` checks them after a crash and removes a partial
tail, but never touches bytes it cannot prove to be its own.

Order of durability: the mbox's directory chain and the mbox itself are created durably
(each new entry fsynced into its directory); the batch is journalled (offset, length, digest:
state commit); it is appended under the locks from the spools (scratch files, never durable
themselves) and the mbox fsynced; only then does the caller mark the batch delivered. A cut
after the journal and before the mbox's fsync leaves a tail that reconcile checks against the
digests and truncates.

It must not know about other backends, POP3, UIDLs, the state store or the configuration file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pop3s_fetch.destinations.base import (
    DEFAULT_OWNER,
    LOCK_TIMEOUT,
    Command,
    Destination,
    MessageWriter,
    Placement,
    RecordIntents,
    StagedMessage,
    StagingDestination,
    Stored,
    StoredCopy,
    Tally,
    staging_prefix,
)
from pop3s_fetch.destinations.files import (
    DIRECTORY_MODE,
    FILE_MODE,
    BufferedFdWriter,
    delivery_error,
    refuse_foreign_links,
    remove_empty,
    unlink_quietly,
    write_all,
)
from pop3s_fetch.destinations.headers import HEADER_SNIFF_LIMIT, envelope_sender
from pop3s_fetch.durable import fsync_directory, fsync_file, make_dirs_durably
from pop3s_fetch.errors import DeliveryError, LockedError

#: A dotlock older than this whose owner is gone is left over from a crash.
STALE_LOCK_AGE = 300.0
LOCK_POLL_INTERVAL = 0.05
COPY_BLOCK_SIZE = 1024 * 1024
#: The longest piece of a line :func:`inventory` reads at once.
SCAN_BLOCK = 64 * 1024

# A line needing one more ">"; the lookahead lets re.sub insert it without copying the line.
_NEEDS_QUOTE = re.compile(rb"^(?=>*From )", re.MULTILINE)
# An unfinished line that may still turn into ">*From ", so its fate is not yet known.
_UNDECIDED = re.compile(rb">*(?:F(?:r(?:o(?:m)?)?)?)?")
# A quoted From line, as read back: mboxrd removes exactly one ">" of each.
_QUOTED_FROM = re.compile(rb"(?m)^>(>*From )")


class MboxrdQuoter:
    """Applies mboxrd quoting to a stream cut at arbitrary places.

    At most the first four bytes of a line ("From" minus the space) are held back: a run of
    ">" at a line start can be passed on at once, because adding the extra ">" right
    before the "From " gives the same bytes as adding it at the start of the line.
    """

    def __init__(self) -> None:
        self._carry = b""
        self._line_is_open = True  # the current line may still need quoting

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the quoted bytes that can be decided so far."""
        parts: list[bytes] = []
        if not self._line_is_open:
            newline = chunk.find(b"\n")
            if newline < 0:
                return [chunk]
            parts.append(chunk[: newline + 1])
            chunk = chunk[newline + 1 :]
        data = self._carry + chunk
        last_newline = data.rfind(b"\n")
        parts.append(_NEEDS_QUOTE.sub(b">", data[: last_newline + 1]))
        parts.append(self._decide_tail(data[last_newline + 1 :]))
        return parts

    def flush(self) -> bytes:
        """Return what is held back at the end of the message (it was not a From line)."""
        carry, self._carry, self._line_is_open = self._carry, b"", True
        return carry

    def _decide_tail(self, tail: bytes) -> bytes:
        if _UNDECIDED.fullmatch(tail):
            run = len(tail) - len(tail.lstrip(b">"))
            self._carry, self._line_is_open = tail[run:], True
            return tail[:run]
        self._carry, self._line_is_open = b"", False
        return _NEEDS_QUOTE.sub(b">", tail, count=1)


def from_line(sender: str, when: float) -> bytes:
    """``From <sender> <asctime in UTC>``, the separator line mbox readers look for."""
    return f"From {sender} {time.asctime(time.gmtime(when))}\n".encode("ascii")


@dataclass(eq=False, slots=True)
class _StagedMboxMessage(StagedMessage):
    spool: Path
    from_line: bytes
    body_length: int  # quoted bytes in the spool: what follows the From line
    digest: str

    @property
    def length(self) -> int:
        return len(self.from_line) + self.body_length


class Mbox(StagingDestination[_StagedMboxMessage]):
    """An mboxrd file, created with mode 0600 (and parent directories 0700) if missing.

    ``pause`` waits between attempts to take a lock; tests pass one to see the waiting.
    """

    def __init__(
        self,
        path: Path,
        *,
        owner: str = DEFAULT_OWNER,
        lock_timeout: float = LOCK_TIMEOUT,
        stale_lock_age: float = STALE_LOCK_AGE,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(_StagedMboxMessage)
        self.path = path
        # Spools carry the owner in their name so a later run of the same owner can remove
        # the ones a killed run left (they were never journalled: nothing refers to them).
        self._spool_prefix = f".{path.name}.{staging_prefix(owner)}"
        self._lock_timeout = lock_timeout
        self._stale_lock_age = stale_lock_age
        self._pause = pause
        self._created: list[Path] = []  # directories this run made, outermost first
        self._created_file = False
        self._create()

    def _create(self) -> None:
        refuse_foreign_links(self.path.parent, self.path)
        if self.path.is_dir():
            raise DeliveryError(
                f"cannot use {self.path} as an mbox: it is a directory",
                hint='for a Maildir set format = "maildir"',
            )
        try:
            self._created = make_dirs_durably(self.path.parent, DIRECTORY_MODE)
            existed = self.path.exists()
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            self._created_file = not existed
            if not existed:
                fsync_directory(self.path.parent)
        except OSError as err:
            raise delivery_error(err, "create the mbox", self.path) from err

    def remove_if_unused(self) -> None:
        if self._created_file:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_size == 0:  # nothing was ever appended
                    os.unlink(self.path)
                    fsync_directory(self.path.parent)
        remove_empty(self._created)

    def _lock(self) -> MboxLock:
        return MboxLock(
            self.path,
            timeout=self._lock_timeout,
            stale_after=self._stale_lock_age,
            scratch_prefix=self._spool_prefix,
            pause=self._pause,
        )

    # --- writing ------------------------------------------------------------------------

    def open_message(self, labels: Mapping[str, str] | None = None) -> MessageWriter:
        del labels  # the From line's sender comes from the message itself
        try:
            fd, name = tempfile.mkstemp(
                prefix=self._spool_prefix, suffix=".spool", dir=self.path.parent
            )
        except OSError as err:
            raise delivery_error(err, "create a spool file in", self.path.parent) from err
        return self._track(_MboxWriter(self, Path(name), fd))

    # --- publishing ---------------------------------------------------------------------

    def publish(
        self, staged: Sequence[StagedMessage], record_intents: RecordIntents
    ) -> list[Placement]:
        batch = self._take(staged)
        try:
            with self._lock() as fd:
                start, separator = self._append_position(fd)
                placements = _placements(batch, start + len(separator))
                record_intents(placements)
                self._append(fd, start, separator, batch)
            return placements
        finally:
            for message in batch:
                unlink_quietly(message.spool)

    def _append_position(self, fd: int) -> tuple[int, bytes]:
        """Where the batch goes, and the newlines that end the last message with a blank line."""
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise DeliveryError(
                    f"cannot append to {self.path}: it is not a regular file",
                    hint="point the destination at an mbox file",
                )
            size = status.st_size
            if size == 0:
                return 0, b""
            first, last = os.pread(fd, 5, 0), os.pread(fd, 2, max(0, size - 2))
        except OSError as err:
            raise delivery_error(err, "read the mbox", self.path) from err
        if first != b"From ":
            raise DeliveryError(
                f"refusing to append to {self.path}: it is not an mbox file"
                ' (it does not start with "From ")',
                hint="point the destination at an mbox file, or at a path that does not exist yet",
            )
        if last.endswith(b"\n\n"):
            return size, b""
        return size, b"\n" if last.endswith(b"\n") else b"\n\n"

    def _append(
        self, fd: int, start: int, separator: bytes, batch: Sequence[_StagedMboxMessage]
    ) -> None:
        try:
            os.lseek(fd, start, os.SEEK_SET)
            write_all(fd, separator)
            for message in batch:
                write_all(fd, message.from_line)
                copy_spool(message.spool, fd, message.body_length)
            fsync_file(fd)
        except BaseException as exc:  # even Ctrl-C must not leave half a message behind
            self._truncate(fd, start)
            if isinstance(exc, OSError):
                raise delivery_error(exc, "append to the mbox", self.path) from exc
            raise

    def _truncate(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            fsync_file(fd)
        except OSError as err:
            raise delivery_error(err, "remove a partly written message from", self.path) from err

    # --- recovery -----------------------------------------------------------------------

    def remove_stale_staging(self) -> int:
        directory = self.path.parent
        try:
            stale = [
                entry
                for entry in os.listdir(directory)
                if entry.startswith(self._spool_prefix)
                and entry.endswith((".spool", LOCK_SCRATCH_SUFFIX))
            ]
            for entry in stale:
                (directory / entry).unlink(missing_ok=True)
        except OSError as err:
            raise delivery_error(err, "clean up spool files in", directory) from err
        return len(stale)

    def reconcile(self, placements: Sequence[Placement]) -> list[bool]:
        outcomes = [False] * len(placements)
        with self._lock() as fd:
            try:
                size = os.fstat(fd).st_size
                # Highest offset first: a partial tail must go before earlier ones are judged.
                for index in sorted(
                    range(len(placements)), key=lambda i: placements[i].offset, reverse=True
                ):
                    outcomes[index], size = self._settle(fd, placements[index], size)
            except OSError as err:
                raise delivery_error(err, "check the mbox", self.path) from err
        return outcomes

    def _settle(self, fd: int, placement: Placement, size: int) -> tuple[bool, int]:
        """Decide one placement; return the outcome and the file size afterwards."""
        end = placement.offset + placement.length
        if size <= placement.offset:
            return False, size
        if size < end:
            present = os.pread(fd, min(5, size - placement.offset), placement.offset)
            if not b"From ".startswith(present):
                return False, size  # not even the start of a From line: not ours to cut
            self._truncate(fd, placement.offset)
            return False, placement.offset
        return _holds(fd, placement), size

    def _discard(self, message: _StagedMboxMessage) -> None:
        unlink_quietly(message.spool)


def _placements(batch: Sequence[_StagedMboxMessage], offset: int) -> list[Placement]:
    placements: list[Placement] = []
    for message in batch:
        placements.append(Placement("", offset, message.length, message.digest))
        offset += message.length
    return placements


def _holds(fd: int, placement: Placement) -> bool:
    """Whether the bytes at the placement are a From line followed by exactly our message."""
    end = placement.offset + placement.length
    if os.pread(fd, 5, placement.offset) != b"From ":
        return False
    body_start = _line_end(fd, placement.offset, end)
    if body_start is None:
        return False
    digest = hashlib.sha256()
    position = body_start
    while position < end:
        block = os.pread(fd, min(COPY_BLOCK_SIZE, end - position), position)
        if not block:
            return False
        digest.update(block)
        position += len(block)
    return digest.hexdigest() == placement.digest


def _line_end(fd: int, start: int, end: int) -> int | None:
    """The offset just after the first newline in [start, end), or None."""
    position = start
    while position < end:
        block = os.pread(fd, min(4096, end - position), position)
        if not block:
            return None
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return None


def copy_spool(spool: Path, out_fd: int, length: int) -> None:
    """Append ``length`` bytes of the spool at out_fd's position, in the kernel where possible."""
    in_fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC)
    try:
        copied = 0
        while copied < length:
            try:
                sent = os.sendfile(out_fd, in_fd, copied, length - copied)
            except OSError as err:
                if copied or err.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                _copy_blocks(in_fd, out_fd, length)
                return
            if sent == 0:
                raise OSError(errno.EIO, f"spool file {spool} is shorter than it was written")
            copied += sent
    finally:
        os.close(in_fd)


def _copy_blocks(in_fd: int, out_fd: int, length: int) -> None:
    copied = 0
    while copied < length:
        block = os.pread(in_fd, min(COPY_BLOCK_SIZE, length - copied), copied)
        if not block:
            raise OSError(errno.EIO, "spool file is shorter than it was written")
        write_all(out_fd, block)
        copied += len(block)


class _MboxWriter:
    """Quotes one message into a spool file, hashing and counting what it stores."""

    def __init__(self, mbox: Mbox, spool: Path, fd: int) -> None:
        self._mbox = mbox
        self._spool = spool
        self._fd: int | None = fd
        self._sink = BufferedFdWriter(fd)
        self._quoter = MboxrdQuoter()
        self._head = bytearray()
        self._digest = hashlib.sha256()
        self._received = 0
        self._stored = 0
        self._ends_with_newline = False

    def write(self, chunk: bytes) -> None:
        self._require_open()
        if not chunk:
            return
        self._received += len(chunk)
        self._ends_with_newline = chunk.endswith(b"\n")
        if len(self._head) < HEADER_SNIFF_LIMIT:
            self._head += chunk[: HEADER_SNIFF_LIMIT - len(self._head)]
        self._store(self._quoter.feed(chunk))

    def finish(self) -> StagedMessage:
        fd = self._require_open()
        # mbox cannot represent a message without a final newline: one is added (documented).
        ending = b"\n\n" if not self._ends_with_newline else b"\n"
        self._store([self._quoter.flush(), ending])
        try:
            self._sink.flush()
            os.close(fd)
        except OSError as err:
            self.abort()
            raise delivery_error(err, "write the spool file", self._spool) from err
        self._fd = None
        staged = _StagedMboxMessage(
            self._received,
            self._spool,
            from_line(envelope_sender(bytes(self._head)), time.time()),
            self._stored,
            self._digest.hexdigest(),
        )
        return self._mbox._stage(self, staged)

    def abort(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # the spool is thrown away: a close error is moot
            os.close(self._fd)
        self._fd = None
        unlink_quietly(self._spool)
        self._mbox._forget(self)

    def _store(self, parts: list[bytes]) -> None:
        try:
            for part in parts:
                self._digest.update(part)
                self._stored += len(part)
                self._sink.write(part)
        except OSError as err:
            self.abort()
            raise delivery_error(err, "write the spool file", self._spool) from err

    def _require_open(self) -> int:
        if self._fd is None:
            raise ValueError("this message was already finished or aborted")
        return self._fd


LOCK_SCRATCH_SUFFIX = ".lock-in-progress"


class MboxLock:
    """Holds ``<mbox>.lock``, an flock and an fcntl lock on the mbox; yields the open fd.

    Mail readers and MDAs each honour one of the three, so all three are taken. Locks are
    polled because none of them can notify a waiter across programs.

    Close no other descriptor of the mbox while this is held: closing any descriptor of a
    file drops the process's fcntl locks on it.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout: float = LOCK_TIMEOUT,
        stale_after: float = STALE_LOCK_AGE,
        scratch_prefix: str = ".pop3s-fetch.",
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self._path = path
        self._dotlock = path.with_name(path.name + ".lock")
        # The dotlock is written in full under this name, then linked into place, so it never
        # exists without our pid in it. The name starts like our spools, so a killed run's
        # leftover is removed with them (see Mbox.remove_stale_staging).
        self._scratch = path.with_name(f"{scratch_prefix}{os.getpid()}{LOCK_SCRATCH_SUFFIX}")
        self._timeout = timeout
        self._stale_after = stale_after
        self._fd: int | None = None
        self._holds_dotlock = False
        self._pause = pause

    def __enter__(self) -> int:
        deadline = time.monotonic() + self._timeout
        try:
            try:
                self._wait_for(self._try_dotlock, deadline, f"its lock file {self._dotlock}")
            except OSError as err:
                # Creating a dotlock needs write access to the directory, not to the mbox.
                action = f"create the lock file {self._dotlock.name} in"
                raise delivery_error(err, action, self._dotlock.parent) from err
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            self._wait_for(_try_flock(self._fd), deadline, "flock")
            self._wait_for(_try_lockf(self._fd), deadline, "fcntl lock")
        except OSError as err:
            self._release()
            raise delivery_error(err, "lock the mbox", self._path) from err
        except BaseException:
            self._release()
            raise
        return self._fd

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release()

    def _wait_for(self, attempt: Callable[[], bool], deadline: float, what: str) -> None:
        while not attempt():
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"the mbox {self._path} stayed locked by another program ({what})"
                    f" for more than {self._timeout:g} s",
                    hint="another mail program is using it; try again later",
                )
            self._pause(LOCK_POLL_INTERVAL)

    def _open_scratch(self) -> int:
        """Create the scratch file anew: never through a link, never into someone's file.

        In a shared spool (``/var/mail``) another user can plant a link under this name,
        so it is created with O_EXCL | O_NOFOLLOW; what is in the way (our own leftover, or
        a planted entry) is removed first, and a sticky directory refuses that for others'.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(self._scratch, flags, FILE_MODE)
        except FileExistsError:
            self._scratch.unlink()
            return os.open(self._scratch, flags, FILE_MODE)

    def _try_dotlock(self) -> bool:
        fd = self._open_scratch()
        try:
            try:
                write_all(fd, f"{os.getpid()}\n".encode("ascii"))
            finally:
                os.close(fd)
            os.link(self._scratch, self._dotlock)  # atomic, and fails if the lock exists
        except FileExistsError:
            if self._dotlock_is_stale():
                # Another waiter may remove a fresh lock between our check and this unlink;
                # flock and fcntl still exclude it, so the window costs no mail.
                unlink_quietly(self._dotlock)
            return False
        finally:
            unlink_quietly(self._scratch)
        self._holds_dotlock = True
        return True

    def _dotlock_is_stale(self) -> bool:
        try:
            age = time.time() - self._dotlock.stat().st_mtime
            content = self._dotlock.read_bytes()[:32]
        except FileNotFoundError:
            return False  # just released: the next attempt will take it
        pid = int(content) if content.strip().isdigit() else None
        if pid is not None and not _process_alive(pid):
            # Its writer is dead (a killed run of ours, a crashed MDA): waiting would only
            # stall every later run for the full stale age.
            return True
        return pid is None and age >= self._stale_after

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops both the flock and the fcntl lock
            self._fd = None
        if self._holds_dotlock:
            unlink_quietly(self._dotlock)
            self._holds_dotlock = False


def _try_flock(fd: int) -> Callable[[], bool]:
    def attempt() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    return attempt


def _try_lockf(fd: int) -> Callable[[], bool]:
    def attempt() -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    return attempt


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def open_destination(
    path: Path, *, owner: str, lock_timeout: float, command: Command | None
) -> Destination:
    """The mbox file at ``path``; it runs no ``command``."""
    del command
    return Mbox(path, owner=owner, lock_timeout=lock_timeout)


def read_messages(path: Path) -> list[bytes]:
    """Every message in file order, without its From line and with mboxrd quoting undone.

    It reads without taking the locks: it is for looking at what a finished run delivered.
    """
    if not path.exists() or path.stat().st_size == 0:
        return []
    import mailbox  # here, not at the top: it imports email.*, which delivery never needs

    box = mailbox.mbox(path, create=False)
    try:
        return [_QUOTED_FROM.sub(rb"\1", box.get_bytes(key)) for key in box.iterkeys()]
    finally:
        box.close()


def inventory(path: Path) -> Iterator[Stored]:
    """Each message's key (the offset of its From line, as text: what a Placement records),
    size and digest, of the bytes :func:`read_messages` gives, in one pass over the file.

    No line is ever whole in memory (a message may be one 50 MB line): see :class:`_Scan`.
    """
    yield from _Scan(path, digests=True)


def stored_keys(path: Path) -> Iterator[str]:
    """The keys :func:`inventory` gives, without digesting anything."""
    return (stored.key for stored in _Scan(path, digests=False))


class _Unquoter:
    """Undoes mboxrd quoting of one line fed in pieces: a line ``>+From `` loses one ">".

    The decision needs the line's start up to the "From "; a run of ">" is passed on as it
    comes but for its last ">", so at most five bytes are held back.
    """

    def __init__(self) -> None:
        self._held = b""
        self._deciding = False

    def start_line(self) -> None:
        self._held, self._deciding = b"", True

    def feed(self, piece: bytes) -> bytes:
        if not self._deciding:
            return piece
        data = self._held + piece
        self._held = b""
        if not data.startswith(b">"):
            self._deciding = False
            return data
        rest = data.lstrip(b">")
        run = len(data) - len(rest)
        if rest.startswith(b"From "):
            self._deciding = False
            return data[1:]
        if b"From ".startswith(rest):  # not decided yet: the line goes on in the next piece
            self._held = data[run - 1 :]
            return data[: run - 1]
        self._deciding = False
        return data

    def flush(self) -> bytes:
        """What is held back when the file ends inside an undecided line."""
        held, self._held, self._deciding = self._held, b"", False
        return held


class _Scan:
    """One pass over an mbox splitting it exactly as :func:`read_messages` (Python's mailbox
    module) does, yielding a :class:`Stored` per message.

    mailbox's rules, followed line by line: a line starting "From " is a separator and begins
    a message, whose body starts on the next line; lines before the first separator belong to
    no message; a message ends at the next separator or at the end of the file, less the
    separating blank line (a lone LF) if the line just before that is one. So a blank line
    is held back until the next line says whether it was the message's or the separator's.
    Lines are read in pieces of at most ``SCAN_BLOCK`` bytes; a line's first piece has at
    least five (or the whole line), which is enough to tell a separator.
    """

    def __init__(self, path: Path, *, digests: bool) -> None:
        self._path = path
        self._digests = digests

    def __iter__(self) -> Iterator[Stored]:
        try:
            stream = self._path.open("rb")
        except FileNotFoundError:
            return
        with stream:
            yield from self._messages(stream)

    def _messages(self, stream: BinaryIO) -> Iterator[Stored]:
        unquoter = _Unquoter()
        tally: Tally | None = None  # the message being read, if one has begun
        key = ""
        position = 0
        at_line_start = True
        in_body = False  # whether the current line's pieces belong to a message's body
        blank_held = False
        while piece := stream.readline(SCAN_BLOCK):
            starts_line, at_line_start = at_line_start, piece.endswith(b"\n")
            offset, position = position, position + len(piece)
            if starts_line:
                if piece.startswith(b"From "):
                    if tally is not None:
                        yield tally.stored(key)
                    tally, key = (Tally() if self._digests else _NoTally()), str(offset)
                    in_body = blank_held = False
                    continue
                in_body = tally is not None
                if not in_body:
                    continue
                assert tally is not None
                if blank_held:
                    tally.update(b"\n")
                blank_held = piece == b"\n"
                if blank_held:
                    continue
                unquoter.start_line()
            if in_body:
                assert tally is not None
                tally.update(unquoter.feed(piece))
        if tally is not None:
            tally.update(unquoter.flush())
            yield tally.stored(key)


class _NoTally(Tally):
    """A Tally that keeps nothing, for when only the keys are wanted."""

    def update(self, data: bytes) -> None:
        del data


def stored_copies(path: Path) -> list[StoredCopy]:
    """Every message in file order, each with the placement a run appending it would journal.

    A message runs from its From line to the next one (or the end of the file); the
    placement's digest covers what follows the From line, as :func:`_holds` checks it. The
    size is of the message as handed over: one ">" less on each quoted From line, and
    without the blank line that separates it from the next.
    """
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, read line by line
    except (FileNotFoundError, IsADirectoryError):
        return []
    copies: list[StoredCopy] = []
    with file:
        current: _Reading | None = None
        position = 0
        for line in file:
            if line.startswith(b"From "):
                if current is not None:
                    copies.append(current.copy(position))
                current = _Reading(position, len(line))
            elif current is not None:
                current.add(line)
            position += len(line)
        if current is not None:
            copies.append(current.copy(position))
    return copies


class _Reading:
    """One message of an mbox being read: its From line's offset and what follows."""

    def __init__(self, offset: int, from_length: int) -> None:
        self.offset = offset
        self.from_length = from_length
        self.digest = hashlib.sha256()
        self.head = bytearray()
        self.in_head = True
        self.stored = 0
        self.lines = 0
        self.quoted = 0
        self.last = b""

    def add(self, line: bytes) -> None:
        self.digest.update(line)
        self.stored += len(line)
        self.lines += line.count(b"\n")
        if _QUOTED_FROM.match(line):
            self.quoted += 1
        if self.in_head:
            if line == b"\n":
                self.in_head = False
            else:
                self.head += _QUOTED_FROM.sub(rb"\1", line)
        self.last = (self.last + line)[-2:]

    def copy(self, end: int) -> StoredCopy:
        separator = 1 if self.last == b"\n\n" else 0  # the blank line before the next From
        return StoredCopy(
            Placement("", self.offset, end - self.offset, self.digest.hexdigest()),
            bytes(self.head),
            self.stored - separator - self.quoted,
            self.lines - separator,
        )


def holds(path: Path, placements: Sequence[Placement]) -> list[bool]:
    """Whether each journalled (offset, length, digest) is in the mbox now, without a lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return [False] * len(placements)
    try:
        size = os.fstat(fd).st_size
        return [p.offset + p.length <= size and p.length > 0 and _holds(fd, p) for p in placements]
    finally:
        os.close(fd)
