"""Making what the program creates on disk survive a power cut, not only a kill.

After a kill the kernel still holds every write; after a power cut only what was fsynced
survives, and POSIX makes a new directory entry durable only when *its directory* is fsynced.
``mkdir(parents=True)`` fsyncs nothing: a state directory created by a first run could vanish
in a cut while the mail it describes survived, and the next run would deliver it all again.
Every directory and file the program creates goes through here.

Must not know: POP3, the state format, mailbox formats, or the configuration.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)


def fsync_file(fd: int) -> None:
    """Make a file's data durable: ``fsync``, or ``F_FULLFSYNC`` where fsync stops short.

    On macOS ``fsync`` hands the data to the drive but does not flush the drive's cache, so a
    power cut can still lose it; ``F_FULLFSYNC`` does. Linux's fsync flushes it already.
    """
    if _FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, _FULLFSYNC)
            return
        except OSError:
            pass  # a file system without it (some network ones): fsync is the best there is
    os.fsync(fd)


def fsync_directory(path: Path) -> None:
    """Make the entries of ``path`` (files created, linked, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync_file(fd)
    finally:
        os.close(fd)


def make_dirs_durably(path: Path, mode: int) -> list[Path]:
    """Create ``path`` and its missing parents with ``mode``; each new level is made durable.

    The new levels are fsynced into their parents from the deepest up to the first directory
    that already existed, so once that one is synced the whole chain is on disk. An existing
    ``path`` costs one ``stat`` and no fsync (idle runs pay for every syscall here).
    Returns the directories created, outermost first.

    Raises:
        OSError: as ``os.mkdir`` raises it (the caller names the path and the fix).
    """
    if path.is_dir():
        return []
    missing: list[Path] = []
    level = path
    while not level.is_dir():
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made meanwhile by another process, which syncs its own entry
        created.append(directory)
    for directory in reversed(created):
        fsync_directory(directory.parent)
    return created


def create_file_durably(path: Path, flags: int, mode: int) -> tuple[int, bool]:
    """Open ``path``, creating it (and fsyncing its directory entry) when it does not exist.

    ``O_NOFOLLOW`` is always added: a file the program keeps private is never reached through
    a link. Returns the descriptor and whether this call created the file.
    """
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, flags), False
    try:
        fsync_directory(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd, True
