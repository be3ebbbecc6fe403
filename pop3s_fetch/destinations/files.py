"""File-system steps the backends share: private directories, complete writes, fsync, errors.

Mail is private and must survive a crash, so directories are made with mode 0700 and fsynced
into their parent, writes loop until every byte is out, and an OSError becomes one
DeliveryError sentence that names the path, the cause and what to do.

It must not know any backend (Maildir, mbox), nor POP3 or the state store: a file is a path
and bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from pop3s_fetch.durable import fsync_directory
from pop3s_fetch.errors import DeliveryError

#: Small chunks are gathered up to this size so that a message costs few system calls.
WRITE_BUFFER_SIZE = 256 * 1024

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def refuse_foreign_links(*paths: Path) -> None:
    """Refuse a destination path that is a symbolic link another user made.

    A link the user (or root) made is followed: pointing ~/Mail at another disk is theirs to
    do. One made by anyone else, in a directory they can write (a shared spool), could send
    mail into a file of their choosing, so it is refused before anything is opened.

    Raises:
        DeliveryError: one of ``paths`` is such a link.
    """
    trusted = {os.geteuid(), 0}
    for path in paths:
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # nothing there (yet): what is created later is the program's own
        except OSError as err:
            raise delivery_error(err, "inspect", path) from err
        if stat.S_ISLNK(info.st_mode) and info.st_uid not in trusted:
            raise DeliveryError(
                f"cannot use {path}: it is a symbolic link made by another user "
                f"(uid {info.st_uid})",
                hint="pop3s-fetch follows only links made by you or root; remove it, "
                "and check who could write to its directory",
            )


def delivery_error(err: OSError, action: str, path: Path) -> DeliveryError:
    """Turn an OSError into one sentence naming the path and the cause, plus a hint."""
    cause, hint = _describe_os_error(err, path, creating=action.startswith("create"))
    return DeliveryError(f"cannot {action} {path}: {cause}", hint=hint)


def _describe_os_error(err: OSError, path: Path, *, creating: bool) -> tuple[str, str]:
    code = err.errno
    if code == errno.ENOSPC:
        return "disk full (ENOSPC)", f"free some space on the file system that holds {path}"
    if code == errno.EDQUOT:
        return (
            "disk quota exceeded (EDQUOT)",
            f"free some space or raise your quota on the file system that holds {path}",
        )
    if code in (errno.EACCES, errno.EPERM):
        # Creating ~/ro/Mail/new in a read-only ~/ro is refused by ~/ro: name that one.
        blocker = nearest_existing(path)
        return "permission denied", f"not writable: check the permissions of {blocker}"
    if code == errno.EROFS:
        return (
            "read-only file system",
            f"choose a destination on a writable file system instead of {path}",
        )
    # What the call failed on (os.mkdir of one level, say), which may be above ``path``.
    failed = Path(err.filename) if isinstance(err.filename, str) else path
    if code == errno.ENOENT:
        if creating and failed.parent != failed and failed.parent.is_dir():
            # Its directory is there, so nothing leading to it is missing: /proc and other
            # virtual file systems answer a creation with ENOENT. (A rename or a read gets
            # ENOENT for an entry that went away: not this.)
            return (
                "no such file or directory",
                f"{failed.parent} exists, but its file system refused to create {failed.name} "
                "there, as virtual ones such as /proc do; choose a place on an ordinary disk",
            )
        return "no such file or directory", f"check that the directories leading to {path} exist"
    if code == errno.ENOTDIR or (code == errno.EEXIST and failed in path.parents):
        # mkdir of a level above ``path`` that is a file is EEXIST; below a file, ENOTDIR.
        # (EEXIST on ``path`` itself is an O_EXCL creation meeting a file: not this.)
        blocker = nearest_existing(failed)
        if os.path.lexists(blocker) and not blocker.is_dir():
            return "not a directory", f"{blocker} is a file, not a directory: choose another path"
    name = errno.errorcode.get(code, "unknown error") if code is not None else "unknown error"
    reason = err.strerror or str(err)
    return f"{reason.lower()} ({name})", f"check {path} and the file system that holds it"


def remove_empty(created: Sequence[Path]) -> None:
    """Remove directories this run created (outermost first in ``created``) while empty.

    Deepest first; one that is not empty (someone put something there) ends it quietly.
    The parent of the last removed one is fsynced, so the removal outlives a power cut.
    """
    removed: Path | None = None
    for directory in reversed(created):
        try:
            os.rmdir(directory)
        except OSError:
            break
        removed = directory
    if removed is not None:
        with contextlib.suppress(OSError):
            fsync_directory(removed.parent)


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest ancestor that does: where a creation failed."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return path


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
