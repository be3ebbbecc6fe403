"""Maildir delivery: write to tmp/, fsync, journal the name, link into new/, fsync new/.

A message's bytes are stored exactly as given; nothing is parsed or rewritten. The file name
is chosen when the message is opened and is the name the caller journals, so after a crash
:meth:`Maildir.reconcile` can find the message in new/ or, once a mail reader has seen it,
in cur/ with flags appended.

Order of durability (what a power cut can leave): the Maildir and its tmp/, new/ and cur/ are
created level by level, each fsynced into its parent (durable.make_dirs_durably); a message's
file in tmp/ is written and fsynced; the caller journals its name (state commit); it is linked
into new/ and tmp/ unlinked; new/ is fsynced once per batch; only then does the caller mark the
batch delivered. A cut before the fsync of new/ leaves a journalled name that reconcile looks
for and, not finding it, forgets (the message is fetched again, never deleted unsaved).

It must not know about other backends, POP3, UIDLs, the state store or the configuration file.
"""

from __future__ import annotations

import glob
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pop3s_fetch.destinations.base import (
    DEFAULT_OWNER,
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
from pop3s_fetch.destinations.file_writers import FileJob, FileWriterPool
from pop3s_fetch.destinations.files import (
    DIRECTORY_MODE,
    FILE_MODE,
    delivery_error,
    refuse_foreign_links,
    remove_empty,
    unlink_quietly,
)
from pop3s_fetch.durable import fsync_directory, make_dirs_durably
from pop3s_fetch.errors import DeliveryError

SUBDIRECTORIES = ("tmp", "new", "cur")

# Writing and fsyncing files blocks; workers do it while the reading thread decodes the next
# messages. Up to eight, because fsyncs that overlap are served together (a journalling file
# system commits them in one transaction; a disk's cache flush covers every write before it).
# A first download of 3,000 small messages, in three runs of benchmarks/ab.py: one worker
# 2.08 s, two 1.72 s, four 1.61 s, eight 1.42 s (benchmarks/README.md, "fsync workers").
# A worker starts with the first file it gets, so a run with one new message starts one;
# accounts synced side by side share file_writers.PROCESS_WORKERS in all.
FILE_WORKERS = 8
#: What :func:`inventory` reads of a message file at a time.
READ_BLOCK = 256 * 1024

_name_counter = itertools.count(1)
_name_counter_lock = threading.Lock()
_name_random = os.urandom(8).hex()  # once per process: pid, counter and time do the rest


def unique_name(host: str) -> str:
    """A Maildir base name: seconds, microseconds, pid, a per-process counter, random, host."""
    with _name_counter_lock:
        counter = next(_name_counter)
    seconds, microseconds = divmod(time.time_ns() // 1000, 1_000_000)
    return f"{seconds}.M{microseconds}P{os.getpid()}Q{counter}R{_name_random}.{host}"


def sanitise_hostname(hostname: str) -> str:
    """Escape the two characters a Maildir name must not contain: "/" and the flag separator ":"."""
    return hostname.replace("/", r"\057").replace(":", r"\072")


@dataclass(eq=False, slots=True)
class _StagedMaildirMessage(StagedMessage):
    job: FileJob
    name: str  # the base name in tmp/; _avoid_taken_names may change it


class Maildir(StagingDestination[_StagedMaildirMessage]):
    """A Maildir, created with mode 0700 (and cur/, new/, tmp/) if missing."""

    def __init__(self, path: Path, *, owner: str = DEFAULT_OWNER) -> None:
        super().__init__(_StagedMaildirMessage)
        self.path = path
        self._tmp = path / "tmp"
        # Our tmp/ files carry the owner in their name, so a later run of the same owner can
        # tell its own never-journalled leftovers from another program's work in progress.
        self._staging_prefix = staging_prefix(owner)
        # Strings, not Paths, on the per-message paths: pathlib costs more than the syscalls.
        self._staging_path_prefix = f"{self._tmp}{os.sep}{self._staging_prefix}"
        self._new_prefix = f"{path / 'new'}{os.sep}"
        self._new = path / "new"
        self._cur = path / "cur"
        self._host = sanitise_hostname(socket.gethostname())
        self._created: list[Path] = []  # directories this run made, outermost first
        self._create()
        self._files = FileWriterPool(FILE_WORKERS, thread_name="maildir-writer")

    def _create(self) -> None:
        refuse_foreign_links(self.path, *(self.path / name for name in SUBDIRECTORIES))
        if self.path.exists() and not self.path.is_dir():
            raise DeliveryError(
                f"cannot use {self.path} as a Maildir: it is not a directory",
                hint='for a single mbox file set format = "mbox"',
            )
        try:
            for subdirectory in SUBDIRECTORIES:
                self._created += make_dirs_durably(self.path / subdirectory, DIRECTORY_MODE)
        except OSError as err:
            raise delivery_error(err, "create the Maildir", self.path) from err
        for directory in (self._tmp, self._new):
            if not os.access(directory, os.W_OK | os.X_OK):
                raise DeliveryError(
                    f"cannot deliver into the Maildir {self.path}: {directory} is not writable",
                    hint=f"not writable: check the permissions of {directory}",
                )

    # --- writing ------------------------------------------------------------------------

    def open_message(self, labels: Mapping[str, str] | None = None) -> MessageWriter:
        """Create tmp/<name> now; a worker fills, fsyncs and closes it (see file_writers)."""
        del labels  # a Maildir file is the message's bytes and nothing else
        while True:
            path = self._staging_path_prefix + unique_name(self._host)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileExistsError:
                continue  # a name is unique only with overwhelming probability: draw again
            except OSError as err:
                raise delivery_error(err, "create the message file", Path(path)) from err
            return self._track(_MaildirWriter(self, self._files.adopt(fd, path)))

    def _finish(self, writer: _MaildirWriter, job: FileJob) -> StagedMessage:
        """The worker fsyncs and closes the file while the caller reads the next message."""
        self._files.finish(job)
        name = job.path[len(self._staging_path_prefix) :]
        return self._stage(writer, _StagedMaildirMessage(job.size, job, name))

    # --- publishing ---------------------------------------------------------------------

    def publish(
        self, staged: Sequence[StagedMessage], record_intents: RecordIntents
    ) -> list[Placement]:
        batch = self._take(staged)
        linked = 0
        try:
            self._wait_until_synced(batch)
            self._avoid_taken_names(batch)
            placements = [Placement(message.name, 0, message.size, "") for message in batch]
            record_intents(placements)
            for message in batch:
                self._link_into_new(message)
                linked += 1
            self._fsync_new()
        finally:
            for message in batch[linked:]:
                unlink_quietly(self._staging(message.name))  # gone already if it failed
        return placements

    def _wait_until_synced(self, batch: Sequence[_StagedMaildirMessage]) -> None:
        first_error: DeliveryError | None = None
        for message in batch:  # wait for all, so no worker still holds a file we remove
            try:
                message.job.wait()
            except OSError as err:
                if first_error is None:
                    first_error = delivery_error(
                        err, "write the message file", Path(message.job.path)
                    )
                    first_error.__cause__ = err
        if first_error is not None:
            raise first_error

    def _avoid_taken_names(self, batch: Sequence[_StagedMaildirMessage]) -> None:
        """Rename a staged file whose name already exists in new/, before the name is journalled.

        os.link() never overwrites, but once the name is journalled it cannot change, and a
        foreign new/<name> would then be taken for our message by reconcile().
        """
        for message in batch:
            while os.path.lexists(self._new_prefix + message.name):
                self._rename_in_tmp(message)

    def _rename_in_tmp(self, message: _StagedMaildirMessage) -> None:
        old = self._staging(message.name)
        new_name = unique_name(self._host)
        try:
            os.link(old, self._staging(new_name))
        except FileExistsError:
            return  # the caller loops and draws another name
        except OSError as err:
            raise delivery_error(err, "rename the message file", old) from err
        unlink_quietly(old)
        message.name = new_name

    def _link_into_new(self, message: _StagedMaildirMessage) -> None:
        source = self._staging_path_prefix + message.name
        target = self._new_prefix + message.name
        try:
            os.link(source, target)
        except OSError as err:
            raise delivery_error(err, "link the message into", Path(target)) from err
        try:
            os.unlink(source)
        except OSError as err:
            # The message is visible; reconcile() recognises and removes the leftover.
            raise delivery_error(err, "remove the temporary file", Path(source)) from err

    def _fsync_new(self) -> None:
        try:
            fsync_directory(self._new)
        except OSError as err:
            raise delivery_error(err, "fsync the directory", self._new) from err

    def _staging(self, name: str) -> Path:
        return self._tmp / f"{self._staging_prefix}{name}"

    # --- recovery -----------------------------------------------------------------------

    def remove_stale_staging(self) -> int:
        try:
            stale = [e for e in os.listdir(self._tmp) if e.startswith(self._staging_prefix)]
            for entry in stale:
                (self._tmp / entry).unlink(missing_ok=True)
        except OSError as err:
            raise delivery_error(err, "clean up", self._tmp) from err
        return len(stale)

    def reconcile(self, placements: Sequence[Placement]) -> list[bool]:
        try:
            in_new = set(os.listdir(self._new))
            in_cur = {entry.split(":", 1)[0]: entry for entry in os.listdir(self._cur)}
            in_tmp = {
                entry.removeprefix(self._staging_prefix)
                for entry in os.listdir(self._tmp)
                if entry.startswith(self._staging_prefix)
            }
        except OSError as err:
            raise delivery_error(err, "list the Maildir", self.path) from err
        outcomes: list[bool] = []
        for placement in placements:
            name = placement.target
            if name in in_new:
                found: Path | None = self._new / name
            elif name in in_cur:
                found = self._cur / in_cur[name]
            else:
                found = None
            outcomes.append(self._settle(name, found, leftover=name in in_tmp))
        return outcomes

    def _settle(self, name: str, found: Path | None, *, leftover: bool) -> bool:
        """Decide one placement and remove its tmp/ leftover, if any.

        A leftover next to a visible file means we crashed between link and unlink; the two
        must then be the same inode, otherwise the visible file is someone else's.
        """
        if not leftover:
            return found is not None
        temporary = self._staging(name)
        try:
            present = found is not None and os.path.samefile(temporary, found)
        except FileNotFoundError:
            present = found is not None  # a reader moved it, or the leftover went, meanwhile
        try:
            temporary.unlink(missing_ok=True)
        except OSError as err:
            raise delivery_error(err, "remove the leftover", temporary) from err
        return present

    def close(self) -> None:
        self._abort_unfinished()
        self._files.shutdown()  # every file is closed (or was removed) once this returns
        self._discard_unpublished()

    def remove_if_unused(self) -> None:
        # cur/, new/ and tmp/ were each created after the Maildir itself: new/ and tmp/ first.
        remove_empty(sorted(self._created, key=lambda path: len(path.parts)))

    def _discard(self, message: _StagedMaildirMessage) -> None:
        unlink_quietly(Path(message.job.path))


class _MaildirWriter:
    """Streams one message into tmp/<name>, byte for byte, through the file workers."""

    def __init__(self, maildir: Maildir, job: FileJob) -> None:
        self._maildir = maildir
        self._job: FileJob | None = job

    def write(self, chunk: bytes) -> None:
        job = self._job_or_fail()
        try:
            self._maildir._files.write(job, chunk)
        except OSError as err:
            self.abort()
            raise delivery_error(err, "write the message file", Path(job.path)) from err

    def finish(self) -> StagedMessage:
        job = self._job_or_fail()
        self._job = None
        return self._maildir._finish(self, job)

    def abort(self) -> None:
        if self._job is None:
            return
        job, self._job = self._job, None
        self._maildir._files.abort(job)
        self._maildir._forget(self)

    def _job_or_fail(self) -> FileJob:
        if self._job is None:
            raise ValueError("this message was already finished or aborted")
        return self._job


def open_destination(
    path: Path, *, owner: str, lock_timeout: float, command: Command | None
) -> Destination:
    """The Maildir at ``path``; a Maildir takes no locks and runs no ``command``."""
    del lock_timeout, command
    return Maildir(path, owner=owner)


def read_messages(path: Path) -> list[bytes]:
    """Every message in new/ and then cur/, each directory in file-name order."""
    if not path.exists():
        return []
    return [f.read_bytes() for sub in ("new", "cur") for f in sorted((path / sub).iterdir())]


def stored_copies(path: Path) -> list[StoredCopy]:
    """Every message in new/ and cur/: its base name (what publish() journals), head, size."""
    copies: list[StoredCopy] = []
    for sub in ("new", "cur"):
        try:
            names = sorted(os.listdir(path / sub))
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith("."):
                continue  # not a message (a mail reader's own file)
            try:
                data = (path / sub / name).read_bytes()
            except (IsADirectoryError, FileNotFoundError):
                continue  # not a message, or a mail reader moved it meanwhile
            base = name.split(":", 1)[0]
            copies.append(
                StoredCopy(
                    Placement(base, 0, len(data), ""), _head(data), len(data), data.count(b"\n")
                )
            )
    return copies


def holds(path: Path, placements: Sequence[Placement]) -> list[bool]:
    """Whether each journalled name is in new/, or in cur/ with flags appended."""
    names: set[str] = set()
    for sub in ("new", "cur"):
        try:
            names.update(entry.split(":", 1)[0] for entry in os.listdir(path / sub))
        except FileNotFoundError:
            continue
    return [placement.target in names for placement in placements]


def _head(data: bytes) -> bytes:
    end = data.find(b"\n\n")
    return data if end < 0 else data[: end + 1]


def inventory(path: Path) -> Iterator[Stored]:
    """Each message's key, size and digest, in :func:`read_messages` order; each file is read
    in blocks, so no message is ever whole in memory."""
    for key, file in _files(path):
        try:
            stream = file.open("rb")
        except FileNotFoundError:
            # A mail reader moved it to cur/ (with flags) after the listing, or deleted it.
            moved = sorted((path / "cur").glob(f"{glob.escape(key)}:*"))
            if not moved:
                continue  # gone: not in the copy
            stream = moved[0].open("rb")
        tally = Tally()
        with stream:
            while block := stream.read(READ_BLOCK):
                tally.update(block)
        yield tally.stored(key)


def stored_keys(path: Path) -> Iterator[str]:
    """The keys :func:`inventory` gives, from the directory listings alone."""
    return (key for key, _ in _files(path))


def _files(path: Path) -> Iterator[tuple[str, Path]]:
    """Each message file with its key, the unique base name a Placement records (no
    ":2,flags", which a mail reader may add on moving it to cur/), in read_messages order."""
    if not path.exists():
        return
    # Both listings first, as read_messages: a file moved from new/ to cur/ meanwhile is
    # then not met twice.
    files = [file for sub in ("new", "cur") for file in sorted((path / sub).iterdir())]
    for file in files:
        yield file.name.split(":", 1)[0], file
