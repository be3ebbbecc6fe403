"""The power-cut file system keeps exactly what was made durable, and nothing runs on after a cut.

The rules of :mod:`tests.powercut.model` are checked twice: on the model alone (fast, no FUSE),
and through a mounted file system, where the test itself (or a child, when it must be frozen
by the cut) makes the system calls. These tests judge the tool that judges pop3s-fetch.
"""

from __future__ import annotations

import os
import select
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.powercut.control import PowerCut, unavailable_reason
from tests.powercut.model import DurabilityModel, FrozenError
from tests.support import server_unavailable

# --- the model alone ----------------------------------------------------------------------------


def restored(model: DurabilityModel, tmp_path: Path) -> dict[str, bytes | None]:
    """The restored tree as {relative path: bytes, or None for a directory}."""
    target = tmp_path / "restored"
    model.freeze()
    model.restore(target)
    return {
        str(path.relative_to(target)): None if path.is_dir() else path.read_bytes()
        for path in sorted(target.rglob("*"))
    }


def two_directories_and_a_file() -> tuple[DurabilityModel, int]:
    """/a and /b durable, /a/f durable with b"data"."""
    model = DurabilityModel()
    model.create("/a", "dir", 0o700)
    model.create("/b", "dir", 0o700)
    model.sync_directory("/")
    inode = model.create("/a/f", "file", 0o600)
    model.sync_file(inode, b"data")
    model.sync_directory("/a")
    return model, inode


def test_model_rename_within_a_directory_is_durable_with_that_directory(tmp_path: Path) -> None:
    model, _ = two_directories_and_a_file()
    model.rename("/a/f", "/a/g")
    model.sync_directory("/a")
    assert restored(model, tmp_path) == {"a": None, "a/g": b"data", "b": None}


def test_model_rename_across_directories_only_target_synced_leaves_both_names(
    tmp_path: Path,
) -> None:
    model, _ = two_directories_and_a_file()
    model.rename("/a/f", "/b/f")
    model.sync_directory("/b")
    tree = restored(model, tmp_path)
    assert tree == {"a": None, "a/f": b"data", "b": None, "b/f": b"data"}
    assert os.path.samefile(tmp_path / "restored/a/f", tmp_path / "restored/b/f")


def test_model_rename_across_directories_only_source_synced_leaves_neither(
    tmp_path: Path,
) -> None:
    model, _ = two_directories_and_a_file()
    model.rename("/a/f", "/b/f")
    model.sync_directory("/a")
    assert restored(model, tmp_path) == {"a": None, "b": None}


def test_model_rename_over_a_file_keeps_the_old_one_until_the_directory_is_synced(
    tmp_path: Path,
) -> None:
    model, _ = two_directories_and_a_file()
    replacement = model.create("/a/new", "file", 0o600)
    model.sync_file(replacement, b"replacement")
    model.rename("/a/new", "/a/f")  # the durable /a still names the old inode at f
    assert restored(model, tmp_path) == {"a": None, "a/f": b"data", "b": None}


def test_model_data_follows_the_inode_not_the_name(tmp_path: Path) -> None:
    model, inode = two_directories_and_a_file()
    model.rename("/a/f", "/a/g")
    model.sync_directory("/a")
    model.sync_file(inode, b"newer data")  # written and fsynced under its new name
    assert restored(model, tmp_path) == {"a": None, "a/g": b"newer data", "b": None}


def test_model_refuses_every_operation_after_the_cut() -> None:
    model, _ = two_directories_and_a_file()
    model.freeze()
    with pytest.raises(FrozenError):
        model.create("/a/late", "file", 0o600)
    with pytest.raises(FrozenError):
        model.sync_directory("/a")


# --- through FUSE -------------------------------------------------------------------------------


@pytest.fixture
def power(tmp_path: Path) -> Iterator[PowerCut]:
    """A fresh power-cut file system mounted at tmp_path/mnt."""
    reason = unavailable_reason()
    if reason is not None:
        server_unavailable(f"power-cut tests need FUSE: {reason}")
    (tmp_path / "backing").mkdir()
    (tmp_path / "mnt").mkdir()
    with PowerCut(tmp_path / "mnt", tmp_path / "powercut.log") as mounted:
        mounted.mount_over(tmp_path / "backing")
        yield mounted


def write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_and_restore(power: PowerCut) -> dict[str, bytes | None]:
    """Cut (nothing of this process is in the file system now), restore, list the image."""
    power.cut()
    power.release()
    target = power.mount.parent / "restored"
    power.restore(target)
    return {
        str(path.relative_to(target)): None if path.is_dir() else path.read_bytes()
        for path in sorted(target.rglob("*"))
    }


def test_unsynced_data_is_lost(power: PowerCut) -> None:
    mnt = power.mount
    write(mnt / "synced", b"kept", sync=True)
    write(mnt / "synced", b" and lost", sync=False)
    write(mnt / "never-synced", b"lost", sync=False)
    sync_directory(mnt)
    assert cut_and_restore(power) == {"never-synced": b"", "synced": b"kept"}


def test_a_synced_file_is_lost_without_its_directory_entry(power: PowerCut) -> None:
    mnt = power.mount
    write(mnt / "file", b"data", sync=True)
    # issue 16's pattern: a new directory whose contents are durable, its own entry not
    (mnt / "new").mkdir()
    write(mnt / "new" / "inside", b"data", sync=True)
    sync_directory(mnt / "new")
    assert cut_and_restore(power) == {}


def test_a_new_directory_is_durable_once_its_parent_is_synced(power: PowerCut) -> None:
    mnt = power.mount
    (mnt / "new").mkdir()
    write(mnt / "new" / "inside", b"data", sync=True)
    sync_directory(mnt / "new")
    sync_directory(mnt)
    assert cut_and_restore(power) == {"new": None, "new/inside": b"data"}


def test_maildir_link_then_unlink_is_durable_with_each_directory(power: PowerCut) -> None:
    mnt = power.mount
    for name in ("tmp", "new"):
        (mnt / name).mkdir()
    sync_directory(mnt)
    write(mnt / "tmp" / "x", b"message", sync=True)
    sync_directory(mnt / "tmp")
    write(mnt / "tmp" / "y", b"staged later", sync=True)  # its entry is never synced
    os.link(mnt / "tmp" / "x", mnt / "new" / "x")
    os.unlink(mnt / "tmp" / "x")
    sync_directory(mnt / "new")  # tmp/ is not synced again: its entry for x survives too
    assert cut_and_restore(power) == {
        "new": None,
        "new/x": b"message",
        "tmp": None,
        "tmp/x": b"message",
    }


def test_rename_across_directories_through_fuse(power: PowerCut) -> None:
    mnt = power.mount
    for name in ("a", "b"):
        (mnt / name).mkdir()
    sync_directory(mnt)
    write(mnt / "a" / "f", b"data", sync=True)
    sync_directory(mnt / "a")
    (mnt / "a" / "f").rename(mnt / "b" / "f")
    sync_directory(mnt / "a")
    sync_directory(mnt / "b")
    assert cut_and_restore(power) == {"a": None, "b": None, "b/f": b"data"}


def test_truncate_is_durable_only_with_an_fsync(power: PowerCut) -> None:
    mnt = power.mount
    write(mnt / "unsynced", b"abcdef", sync=True)
    write(mnt / "synced", b"abcdef", sync=True)
    os.truncate(mnt / "unsynced", 2)
    fd = os.open(mnt / "synced", os.O_RDWR)
    try:
        os.ftruncate(fd, 2)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    sync_directory(mnt)
    assert cut_and_restore(power) == {"synced": b"ab", "unsynced": b"abcdef"}


def start_child(power: PowerCut, script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(power.mount)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )


def kill_cut_and_restore(power: PowerCut, child: subprocess.Popen[str]) -> dict[str, bytes | None]:
    child.kill()
    power.release()
    child.wait(timeout=30)
    assert child.stdout is not None
    child.stdout.close()
    power.cut()  # already cut, if armed; a no-op then
    target = power.mount.parent / "restored"
    power.restore(target)
    return {
        str(path.relative_to(target)): None if path.is_dir() else path.read_bytes()
        for path in sorted(target.rglob("*"))
    }


def test_an_operation_after_the_cut_blocks_the_process(power: PowerCut) -> None:
    power.arm(3)  # 1: create, 2: write, 3: fsync -- never done
    child = start_child(
        power,
        """
        import os, sys
        fd = os.open(os.path.join(sys.argv[1], "f"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        print("wrote", flush=True)
        os.fsync(fd)
        print("ran on after the cut", flush=True)
        """,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "wrote\n"
    ready, _, _ = select.select([power.cut_signal], [], [], 10)  # said at once, never polled
    assert ready, "the cut did not come"
    assert power.is_cut()
    time.sleep(0.3)  # give a child that wrongly runs on the time to show it
    assert child.poll() is None, "the child ran on (or failed) after the cut"
    assert power.trace() == ["create /f", "write /f"]
    assert kill_cut_and_restore(power, child) == {}


def test_sqlite_wal_full_keeps_the_commit_and_drops_the_open_transaction(
    power: PowerCut,
) -> None:
    child = start_child(
        power,
        """
        import os, sqlite3, sys, time
        db = sqlite3.connect(os.path.join(sys.argv[1], "db.sqlite3"), isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (v TEXT)")
        db.execute("INSERT INTO t VALUES ('committed')")
        fd = os.open(sys.argv[1], os.O_RDONLY)  # the database's own entry, as the program must
        os.fsync(fd)
        os.close(fd)
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES ('open')")
        print("in a transaction", flush=True)
        time.sleep(60)
        """,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "in a transaction\n"
    power.cut()
    image = kill_cut_and_restore(power, child)
    assert "db.sqlite3" in image
    db = sqlite3.connect(power.mount.parent / "restored" / "db.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT v FROM t").fetchall() == [("committed",)]
    finally:
        db.close()


def test_the_same_process_mounts_a_fresh_file_system_after_a_cut(
    power: PowerCut, tmp_path: Path
) -> None:
    write(power.mount / "lost", b"never synced", sync=False)
    assert not select.select([power.cut_signal], [], [], 0)[0], "a cut signalled before the cut"
    power.cut()
    assert select.select([power.cut_signal], [], [], 10)[0], "the cut was not signalled"
    power.release()
    power.unmount()
    backing = tmp_path / "second"
    backing.mkdir()
    (backing / "seed").write_bytes(b"settled")

    power.mount_over(backing)  # no new process: the same one, a new file system and model

    assert not power.is_cut()
    assert power.counted() == 0
    assert not select.select([power.cut_signal], [], [], 0)[0], "the last mount's cut lingers"
    assert os.listdir(power.mount) == ["seed"]
    write(power.mount / "unsynced-entry", b"data", sync=True)
    assert power.trace() == [
        "create /unsynced-entry",
        "write /unsynced-entry",
        "fsync /unsynced-entry",
    ]
    assert cut_and_restore(power) == {"seed": b"settled"}
