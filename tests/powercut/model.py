"""What a file system must still hold after a power cut: a model of durability, no FUSE.

Its one job is to follow a file system's operations and remember which of their effects are
durable under the strict POSIX reading that careful programs must assume:

* a file's data (and size) is durable as of the last fsync or fdatasync of that file;
* a directory's entries (create, link, unlink, mkdir, rmdir, either half of a rename) are
  durable as of the last fsync of that directory, and that fsync covers nothing else: a new
  directory's own entry in its parent needs the parent fsynced too;
* a rename is two entry changes, each durable with its own directory, so a cut after only
  the target directory's fsync leaves the file under both names (the inode's data is its own,
  whatever names it has);
* a durable entry whose file was never fsynced names an empty file.

Simplifications, on purpose: an unsynced write is lost whole (a real file system may keep some
of it; the model explores the worst case, not every case); permission bits and times are taken
as they are when restored (no program here depends on their durability); symlink targets are
durable with the symlink's entry; renaming a directory that is then reachable under two durable
names restores it under the first. This module must not know FUSE, processes or pop3s-fetch:
it is fed paths, and the bytes of a file when that file is fsynced.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

ROOT = 0


class FrozenError(RuntimeError):
    """An operation reached the model after the power cut."""


@dataclass
class Inode:
    """One file, directory or symlink; names live in the directories that list it."""

    kind: str  # "file", "dir" or "symlink"
    mode: int
    durable_data: bytes = b""  # file: contents as of the last fsync; symlink: its target
    durable_entries: dict[str, int] = field(default_factory=dict)  # dir: as of its last fsync


class DurabilityModel:
    """The live tree of names, and what of it would survive a power cut now."""

    def __init__(self) -> None:
        self.inodes: dict[int, Inode] = {ROOT: Inode("dir", 0o755)}
        self.live: dict[int, dict[str, int]] = {ROOT: {}}  # directory inode -> name -> inode
        self.frozen = False
        self._next = ROOT + 1

    # --- building -------------------------------------------------------------------------

    @classmethod
    def of_directory(cls, root: Path) -> DurabilityModel:
        """A model in which everything already under ``root`` is durable (a settled disk)."""
        model = cls()
        model.inodes[ROOT].mode = stat.S_IMODE(root.stat().st_mode)
        seen: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> inode, for hard links
        model._adopt(root, ROOT, seen)
        return model

    def _adopt(self, directory: Path, number: int, seen: dict[tuple[int, int], int]) -> None:
        for child in sorted(directory.iterdir()):
            info = child.lstat()
            key = (info.st_dev, info.st_ino)
            if key in seen:
                inode = seen[key]
            elif stat.S_ISDIR(info.st_mode):
                inode = self._new("dir", stat.S_IMODE(info.st_mode))
                self._adopt(child, inode, seen)
            elif stat.S_ISLNK(info.st_mode):
                inode = self._new("symlink", 0o777)
                self.inodes[inode].durable_data = os.readlink(child).encode()
            else:
                inode = self._new("file", stat.S_IMODE(info.st_mode))
                self.inodes[inode].durable_data = child.read_bytes()
            seen[key] = inode
            self.live[number][child.name] = inode
        self.inodes[number].durable_entries = dict(self.live[number])

    def _new(self, kind: str, mode: int) -> int:
        number = self._next
        self._next += 1
        self.inodes[number] = Inode(kind, mode)
        if kind == "dir":
            self.live[number] = {}
        return number

    # --- names ----------------------------------------------------------------------------

    def lookup(self, path: str) -> int:
        """The inode at ``path`` ("/a/b", relative to the mount); KeyError if there is none."""
        number = ROOT
        for part in _parts(path):
            number = self.live[number][part]
        return number

    def _parent(self, path: str) -> tuple[int, str]:
        *parents, name = _parts(path)
        return self.lookup("/" + "/".join(parents)), name

    def _check(self) -> None:
        if self.frozen:
            raise FrozenError("the power is cut")

    # --- operations, applied after the real file system did them --------------------------

    def create(self, path: str, kind: str, mode: int, target: str = "") -> int:
        """A new file, directory or symlink (``target``) now named ``path``."""
        self._check()
        parent, name = self._parent(path)
        number = self._new(kind, stat.S_IMODE(mode))
        if kind == "symlink":
            self.inodes[number].durable_data = target.encode()
        self.live[parent][name] = number
        return number

    def link(self, existing: str, new: str) -> None:
        self._check()
        number = self.lookup(existing)
        parent, name = self._parent(new)
        self.live[parent][name] = number

    def remove(self, path: str) -> None:
        """unlink or rmdir: the inode lives on while a durable entry still names it."""
        self._check()
        parent, name = self._parent(path)
        del self.live[parent][name]

    def rename(self, old: str, new: str) -> None:
        self._check()
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        number = self.live[old_parent].pop(old_name)
        self.live[new_parent][new_name] = number

    def chmod(self, path: str, mode: int) -> None:
        self._check()
        self.inodes[self.lookup(path)].mode = stat.S_IMODE(mode)

    def sync_file(self, number: int, data: bytes) -> None:
        """fsync/fdatasync of a file whose whole contents are now ``data``."""
        self._check()
        self.inodes[number].durable_data = data

    def sync_directory(self, path: str) -> None:
        """fsync of a directory: its entries, exactly as they are now, become durable."""
        self._check()
        number = self.lookup(path)
        self.inodes[number].durable_entries = dict(self.live[number])

    def freeze(self) -> None:
        """The power cut: from now on every operation is refused; the durable state is final."""
        self.frozen = True

    # --- after the cut --------------------------------------------------------------------

    def restore(self, target: Path) -> None:
        """Write exactly the durable state into the empty or missing directory ``target``."""
        target.mkdir(exist_ok=True)
        if any(target.iterdir()):
            raise FileExistsError(f"{target} is not empty")
        placed: dict[int, Path] = {ROOT: target}
        self._restore_directory(ROOT, target, placed)
        for number, path in placed.items():
            inode = self.inodes[number]
            if inode.kind != "symlink":
                path.chmod(inode.mode)

    def _restore_directory(self, number: int, path: Path, placed: dict[int, Path]) -> None:
        for name, child in sorted(self.inodes[number].durable_entries.items()):
            inode = self.inodes[child]
            where = path / name
            if child in placed:
                if inode.kind == "dir":
                    continue  # a directory has one name; see the module's simplifications
                os.link(placed[child], where, follow_symlinks=False)
                continue
            placed[child] = where
            if inode.kind == "dir":
                where.mkdir()
                self._restore_directory(child, where, placed)
            elif inode.kind == "symlink":
                where.symlink_to(inode.durable_data.decode())
            else:
                where.write_bytes(inode.durable_data)


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
