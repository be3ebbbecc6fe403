"""The power-cut file system itself: FUSE passthrough plus the durability model.

Its one job: mount a backing directory, pass every operation through to it, feed the
mutating ones to :class:`~tests.powercut.model.DurabilityModel`, and on a cut freeze that
model and make every later operation block, so that the process under test cannot run on
after the "power cut" (an EIO would let it go on and, say, send QUIT). A process inside a
FUSE request cannot die before the request is answered, so the harness SIGKILLs it first and
then has the blocked operations answered with EIO ("release").

Run as ``python -m tests.powercut.filesystem MOUNT CUT_FD`` (libfuse takes over signals and
the main thread). One process mounts at MOUNT again and again, a fresh file system and model
each time, so that a test pays for starting Python and loading libfuse once, not per mount.
It writes a line to file descriptor CUT_FD when the power is cut, so that the controller can
wait for that instead of asking. Driven by one-line commands on stdin, one JSON line back for
each: ``mount BACKING`` (answered once mounted), ``unmount`` (answered once unmounted, every
blocked operation released first), ``arm K`` (cut just before the K-th counted operation),
``cut``, ``count``, ``trace``, ``release``, ``restore DIR``. Counted are the operations that
change something: create, mkdir, symlink, link, unlink, rmdir, rename, write, truncate, open
with O_TRUNC, chmod, chown, fsync and fsyncdir; not those on SQLite's ``-shm`` file, which
the kernel writes back from mmap at moments of its own (SQLite rebuilds it after a crash).
Operations run one at a time, so the model and the backing directory always agree. Must not
know pop3s-fetch or pytest.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.powercut.model import DurabilityModel, FrozenError

_UNCOUNTED_SUFFIX = "-shm"
T = TypeVar("T")


class _Cut(Exception):
    """The power is cut: the operation must block, then fail."""


class PassthroughWithModel:
    """mfusepy operations: the backing directory does the work, the model keeps the score."""

    use_ns = True  # times as integer nanoseconds (mfusepy warns otherwise)

    def __init__(self, backing: Path, cut_fd: int | None = None) -> None:
        self.backing = str(backing)
        self.cut_fd = cut_fd
        self.model = DurabilityModel.of_directory(backing)
        self.counted = 0
        self.cut_at: int | None = None
        self.trace: list[str] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._files: dict[int, tuple[int, int]] = {}  # fh -> (backing fd, inode)
        self._names: dict[int, str] = {}  # fh -> the path it was opened by, for unlinked files
        self._serial = 0

    # --- the power switch -----------------------------------------------------------------

    def _enter(self, name: str, path: str | None, counted: bool) -> None:
        """Take the lock for one operation, or block for good if the power is (now) cut."""
        self._lock.acquire()
        if not self.model.frozen and counted and not (path or "").endswith(_UNCOUNTED_SUFFIX):
            self.counted += 1
            if self.counted == self.cut_at:
                self.freeze()
            else:
                self.trace.append(f"{name} {path}")
        if self.model.frozen:
            self._lock.release()
            self._released.wait()
            raise _Cut

    def freeze(self) -> None:
        """Cut the power (lock held), and tell whoever waits for the cut."""
        if self.model.frozen:
            return
        self.model.freeze()
        if self.cut_fd is not None:
            os.write(self.cut_fd, b"cut\n")

    def cut_power(self) -> None:
        with self._lock:
            self.freeze()

    def unblock(self) -> None:
        self._released.set()

    def _run(self, name: str, path: str | None, counted: bool, action: Callable[[], T]) -> T:
        from mfusepy import FuseOSError  # type: ignore[import-untyped]

        try:
            self._enter(name, path, counted)
        except _Cut:
            raise FuseOSError(errno.EIO) from None
        try:
            return action()
        except FrozenError:
            raise FuseOSError(errno.EIO) from None
        finally:
            self._lock.release()

    def _real(self, path: str) -> str:
        return self.backing + path

    def _open_fd(self, fd: int, inode: int, path: str) -> int:
        self._serial += 1
        self._files[self._serial] = (fd, inode)
        self._names[self._serial] = path
        return self._serial

    def _name(self, path: str | None, fh: int | None) -> str | None:
        """The path of an operation on an open file: libfuse passes None once it is unlinked."""
        return path if path is not None or fh is None else self._names.get(fh)

    # --- reading: passed through, never counted -------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        def act() -> dict[str, Any]:
            info = os.fstat(self._files[fh][0]) if fh in self._files else os.lstat(self._real(path))
            names = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino", "st_blocks")
            attrs: dict[str, Any] = {name: getattr(info, name) for name in names}
            for name in ("st_atime", "st_mtime", "st_ctime"):
                attrs[name] = getattr(info, name + "_ns")
            return attrs

        return self._run("getattr", path, False, act)

    def readdir(self, path: str, fh: int) -> list[str]:
        return self._run("readdir", path, False, lambda: [".", "..", *os.listdir(self._real(path))])

    def readlink(self, path: str) -> str:
        return self._run("readlink", path, False, lambda: os.readlink(self._real(path)))

    def access(self, path: str, amode: int) -> int:
        def act() -> int:
            if not os.access(self._real(path), amode):
                raise OSError(errno.EACCES, "access")
            return 0

        return self._run("access", path, False, act)

    def statfs(self, path: str) -> dict[str, int]:
        def act() -> dict[str, int]:
            info = os.statvfs(self._real(path))
            names = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files")
            return {name: getattr(info, name) for name in (*names, "f_ffree", "f_namemax")}

        return self._run("statfs", path, False, act)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self._run("read", path, False, lambda: os.pread(self._files[fh][0], size, offset))

    def flush(self, path: str | None, fh: int) -> int:
        return self._run("flush", path, False, lambda: 0)

    def release(self, path: str | None, fh: int) -> int:
        def act() -> int:
            fd, _ = self._files.pop(fh)
            self._names.pop(fh, None)
            os.close(fd)
            return 0

        return self._run("release", path, False, act)

    # --- opening --------------------------------------------------------------------------

    @staticmethod
    def _backing_flags(flags: int) -> int:
        """Read-write always (fsync reads the file back), and no O_APPEND: FUSE sends offsets."""
        dropped = os.O_ACCMODE | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_DIRECT", 0)
        return (flags & ~dropped) | os.O_RDWR

    def open(self, path: str, flags: int) -> int:
        def act() -> int:
            fd = os.open(self._real(path), self._backing_flags(flags))
            return self._open_fd(fd, self.model.lookup(path), path)

        return self._run("open", path, bool(flags & os.O_TRUNC), act)

    def create(self, path: str, mode: int, flags: int) -> int:
        def act() -> int:
            real_flags = self._backing_flags(flags) | os.O_CREAT | os.O_EXCL
            fd = os.open(self._real(path), real_flags, mode)
            return self._open_fd(fd, self.model.create(path, "file", mode), path)

        return self._run("create", path, True, act)

    # --- changing: passed through, counted, modelled --------------------------------------

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        def act() -> int:
            return os.pwrite(self._files[fh][0], data, offset)

        return self._run("write", self._name(path, fh), True, act)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        def act() -> int:
            if fh in self._files:
                os.ftruncate(self._files[fh][0], length)
            else:
                os.truncate(self._real(str(path)), length)
            return 0

        return self._run("truncate", self._name(path, fh), True, act)

    def mkdir(self, path: str, mode: int) -> int:
        def act() -> int:
            os.mkdir(self._real(path), mode)
            self.model.create(path, "dir", mode)
            return 0

        return self._run("mkdir", path, True, act)

    def symlink(self, target: str, source: str) -> int:  # mfusepy: ln -s source target
        def act() -> int:
            os.symlink(source, self._real(target))
            self.model.create(target, "symlink", 0o777, source)
            return 0

        return self._run("symlink", target, True, act)

    def link(self, target: str, source: str) -> int:  # mfusepy: ln source target
        def act() -> int:
            os.link(self._real(source), self._real(target), follow_symlinks=False)
            self.model.link(source, target)
            return 0

        return self._run("link", target, True, act)

    def unlink(self, path: str) -> int:
        def act() -> int:
            os.unlink(self._real(path))
            self.model.remove(path)
            return 0

        return self._run("unlink", path, True, act)

    def rmdir(self, path: str) -> int:
        def act() -> int:
            os.rmdir(self._real(path))
            self.model.remove(path)
            return 0

        return self._run("rmdir", path, True, act)

    def rename(self, old: str, new: str) -> int:
        def act() -> int:
            os.rename(self._real(old), self._real(new))
            self.model.rename(old, new)
            return 0

        return self._run("rename", old, True, act)

    def chmod(self, path: str, mode: int) -> int:
        def act() -> int:
            os.chmod(self._real(path), mode)
            self.model.chmod(path, mode)
            return 0

        return self._run("chmod", path, True, act)

    def chown(self, path: str, uid: int, gid: int) -> int:
        def act() -> int:
            os.lchown(self._real(path), uid, gid)
            return 0

        return self._run("chown", path, True, act)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        def act() -> int:
            if times is None:
                os.utime(self._real(path), follow_symlinks=False)
            else:
                os.utime(self._real(path), ns=times, follow_symlinks=False)
            return 0

        return self._run("utimens", path, False, act)

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        def act() -> int:
            fd, inode = self._files[fh]
            os.fsync(fd)
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
            self.model.sync_file(inode, data)
            return 0

        name = "fdatasync" if datasync else "fsync"
        return self._run(name, self._name(path, fh), True, act)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        def act() -> int:
            self.model.sync_directory(path)
            return 0

        return self._run("fsyncdir", path, True, act)


class _Mounts:
    """The main thread's mounts, and the one the commands act on (None between mounts)."""

    def __init__(self, mount: str, cut_fd: int) -> None:
        self.mount = mount
        self.cut_fd = cut_fd
        self.current: PassthroughWithModel | None = None
        self.requests: queue.Queue[str | None] = queue.Queue()  # backing directories; None: stop

    def unmount(self, *, lazy: bool = False) -> None:
        """Release what blocks in the file system and unmount it; the main thread answers."""
        if self.current is not None:
            self.current.unblock()
        subprocess.run(["umount", *(["-l"] if lazy else []), self.mount], check=False)


def _serve_commands(mounts: _Mounts) -> None:
    """Answer the controller, one JSON line per command, until it closes stdin."""
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        reply: dict[str, Any] = {"ok": True}
        fs = mounts.current
        if command == "mount":
            mounts.requests.put(argument)  # answered by init, or by the main thread's error
            continue
        if command == "unmount" and fs is not None:
            mounts.unmount()  # answered by the main thread once libfuse returns
            continue
        if fs is None:
            reply = {"ok": False, "error": f"{command!r} with nothing mounted"}
        elif command == "arm":
            with fs._lock:
                fs.cut_at = int(argument)
                if fs.counted >= fs.cut_at:
                    fs.freeze()
        elif command == "cut":
            fs.cut_power()
        elif command == "count":
            with fs._lock:
                reply.update(counted=fs.counted, cut=fs.model.frozen)
        elif command == "trace":
            with fs._lock:
                reply.update(trace=list(fs.trace))
        elif command == "release":
            fs.unblock()
        elif command == "restore":
            if not fs.model.frozen:
                reply = {"ok": False, "error": "restore before the cut"}
            else:
                fs.model.restore(Path(argument))
        else:
            reply = {"ok": False, "error": f"unknown command {command!r}"}
        print(json.dumps(reply), flush=True)
    # The controller went away: let nothing hang on this mount, and take it down.
    mounts.requests.put(None)
    mounts.unmount(lazy=True)


class _Ready:
    """mfusepy calls ``init`` once the kernel has the mount: tell the controller."""

    def __init__(self, mount: str) -> None:
        self.mount = mount

    def __call__(self, path: str) -> None:
        print(json.dumps({"ok": True, "mounted": self.mount}), flush=True)


def main(argv: list[str]) -> int:
    from mfusepy import FUSE

    mount, cut_fd = argv
    mounts = _Mounts(mount, int(cut_fd))
    threading.Thread(target=_serve_commands, args=(mounts,), daemon=True).start()
    while (backing := mounts.requests.get()) is not None:
        try:
            fs = PassthroughWithModel(Path(backing), mounts.cut_fd)
            fs.init = _Ready(mount)  # type: ignore[attr-defined]
            mounts.current = fs
            FUSE(fs, mount, foreground=True, nothreads=False, hard_remove=True, fsname="powercut")
        except Exception as err:  # reported to the controller, which waits for an answer
            reply = {"ok": False, "error": f"mount failed: {err}"}
        else:
            reply = {"ok": True, "unmounted": mount}
        mounts.current = None
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
