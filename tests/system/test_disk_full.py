"""A destination that runs out of space: exit 74, one "disk full" line, nothing lost or deleted.

Two ways to fill the disk, so that both are always covered somewhere:

- for real: as root, a small tmpfs is mounted under the destination and filled with a filler
  file, and the installed command runs against the built-in server; freeing the filler lets
  the next run finish. Skipped where mounting is impossible (not root, or a container that
  refuses ``mount``), but failed as root under ``POP3S_FETCH_REQUIRE_SERVERS=1``, so that
  CI cannot lose it to a skip;
- simulated, in-process and always: the functions through which the destinations write are
  wrapped to raise ``ENOSPC`` once a byte budget is spent (a short write first, as the
  kernel does), at several budgets, including one where the mbox spools fit and the append
  does not.

Either way the failed run must leave only whole messages and no temporary file, delete
nothing on the server, and the run after it must deliver every message exactly once.
"""

from __future__ import annotations

import errno
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pop3s_fetch.destinations import file_writers, files, mbox
from pop3s_fetch.errors import ExitCode
from pop3s_fetch.ui import error_line
from tests.support import REQUIRE_SERVERS_VARIABLE, servers_required
from tests.support.mail import corpus
from tests.support.rig import (
    BuiltinMaildrop,
    CliRig,
    Rig,
    builtin_login,
    destination_in,
    in_process_rig,
    serve,
)

USER = "alice"
PASSWORD = "disk-full-test-password"
ACCOUNT = "full"
#: The tmpfs: big enough for the corpus twice over (mbox spools plus the mbox itself) once
#: the filler is gone, with only FREE_WHILE_FULL left beside the filler, which it does not fit.
TMPFS_SIZE = 4 * 1024 * 1024
FREE_WHILE_FULL = 300 * 1024
UNLIMITED = 1 << 62

# The corpus is ~766 KB: more than FREE_WHILE_FULL, less than TMPFS_SIZE / 2.
MESSAGES = corpus()
CORPUS_BYTES = sum(len(message) for message in MESSAGES)


def only_whole_messages(rig: Rig[BuiltinMaildrop]) -> list[bytes]:
    """What a failed run left: each an original, byte for byte, at most once."""
    landed = rig.landed()
    assert len(landed) == len(set(landed)), "a message was delivered twice"
    assert set(landed) <= set(rig.expected()), "a partial or damaged message was delivered"
    assert rig.temporary_files() == []
    return landed


@pytest.fixture(params=["maildir", "mbox"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(server_ssl_context: ssl.SSLContext) -> Iterator[BuiltinMaildrop]:
    """The built-in server, in this process, holding the corpus for USER."""
    with serve(server_ssl_context, MESSAGES, user=USER, password=PASSWORD) as maildrop:
        yield maildrop


def retrieved(session: list[str]) -> int:
    return sum(1 for command in session if command.startswith("RETR "))


# --- a real full disk: a tmpfs ------------------------------------------------------------


def tmpfs_unavailable(reason: str) -> NoReturn:
    """Skip; but as root under POP3S_FETCH_REQUIRE_SERVERS=1 fail, since CI runs as root."""
    if os.geteuid() == 0 and servers_required():
        pytest.fail(
            f"{reason} ({REQUIRE_SERVERS_VARIABLE}=1 as root forbids skipping)", pytrace=False
        )
    pytest.skip(reason)


def mount_tmpfs(mount_point: Path, size: int) -> None:
    if os.geteuid() != 0:
        tmpfs_unavailable("mounting a tmpfs to fill needs root")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        tmpfs_unavailable("there is no mount command")
    if done.returncode != 0:
        why = done.stderr.strip() or "no message"
        tmpfs_unavailable(f"mount -t tmpfs was refused (exit {done.returncode}): {why}")


def unmount(mount_point: Path) -> None:
    """Unmount, lazily if something still holds a file there (a test that failed midway)."""
    if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A TMPFS_SIZE tmpfs, unmounted again whatever the test does."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mount_tmpfs(mount_point, TMPFS_SIZE)
    try:
        yield mount_point
    finally:
        unmount(mount_point)


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file so that only about ``leave`` bytes stay free; return its path."""
    status = os.statvfs(disk)
    free = status.f_bavail * status.f_frsize
    filler = disk / "filler"
    with filler.open("wb") as file:
        file.write(b"\0" * (free - leave))
    return filler


def test_full_tmpfs_exit_74_then_sync_once_space_is_freed(
    small_disk: Path, tmp_path: Path, served: BuiltinMaildrop, ca_file: Path, fmt: str
) -> None:
    rig = CliRig.configure(
        tmp_path,
        served,
        MESSAGES,
        builtin_login(served, ca_file),
        name=ACCOUNT,
        fmt=fmt,
        keep=False,
        destination=destination_in(small_disk, fmt),
    )
    filler = fill(small_disk, FREE_WHILE_FULL)

    failed = rig.sync()
    assert failed.code == 74, failed.output
    lines = failed.stderr.splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith(f"error: {ACCOUNT}: cannot ")
    assert "disk full (ENOSPC)" in lines[0]
    assert "QUIT" not in served.last_session()
    assert rig.on_server() == sorted(MESSAGES), "a message was deleted from the server"
    delivered = len(only_whole_messages(rig))
    print(f"{fmt}: {lines[0]}; {delivered} delivered before it")

    filler.unlink()
    again = rig.sync()
    assert again.code == 0, again.output
    assert again.stderr == ""
    assert retrieved(served.last_session()) == len(MESSAGES) - delivered
    assert rig.landed() == rig.expected()
    assert rig.temporary_files() == []
    assert rig.on_server() == []


# --- a simulated full disk, in-process --------------------------------------------------------


class FullDisk:
    """Stands in for the destination's file system with ``free`` bytes left.

    Wraps the three functions through which the destinations write message bytes: the
    staging writer (:func:`pop3s_fetch.destinations.files.write_all`, under Maildir tmp/ files and
    mbox spools) and the mbox append (``write_all`` and ``copy_spool`` as mbox calls them).
    Space freed by deleting files is not given back: the disk only fills.
    """

    def __init__(self, free: int) -> None:
        self.free = free
        self.refused = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_write_all = files.write_all
        real_copy_spool = mbox.copy_spool

        def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
            view = memoryview(data)
            allowed = self._take(len(view))
            real_write_all(fd, view[:allowed])
            self._refuse_beyond(allowed, len(view))

        def copy_spool(spool: Path, out_fd: int, length: int) -> None:
            allowed = self._take(length)
            real_copy_spool(spool, out_fd, allowed)
            self._refuse_beyond(allowed, length)

        monkeypatch.setattr(files, "write_all", write_all)
        monkeypatch.setattr(file_writers, "write_all", write_all)
        monkeypatch.setattr(mbox, "write_all", write_all)
        monkeypatch.setattr(mbox, "copy_spool", copy_spool)

    def _take(self, wanted: int) -> int:
        allowed = min(wanted, self.free)
        self.free -= allowed
        return allowed

    def _refuse_beyond(self, allowed: int, wanted: int) -> None:
        if allowed < wanted:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    ("fmt", "free", "failing_write"),
    [
        pytest.param("maildir", 0, "write the message file", id="maildir-no-space"),
        pytest.param("maildir", 150_000, "write the message file", id="maildir-some-fit"),
        pytest.param("mbox", 0, "write the spool file", id="mbox-no-space"),
        pytest.param("mbox", 150_000, "write the spool file", id="mbox-some-fit"),
        # mbox writes each message twice (spool, then append): the spools fit, the append not.
        pytest.param("mbox", CORPUS_BYTES * 5 // 4, "append to the mbox", id="mbox-spools-fit"),
    ],
)
def test_enospc_exit_74_then_sync_once_space_is_freed(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    served: BuiltinMaildrop,
    ca_file: Path,
    fmt: str,
    free: int,
    failing_write: str,
) -> None:
    rig = in_process_rig(
        served, MESSAGES, tmp_path, name=ACCOUNT, fmt=fmt, keep=False, ca_file=ca_file, timeout=5.0
    )
    disk = FullDisk(free)
    disk.install(monkeypatch)

    failed = rig.sync()
    assert failed.error is not None, "the disk never filled up"
    assert failed.exit_code == ExitCode.IOERR
    assert int(failed.exit_code) == 74
    line = error_line(ACCOUNT, failed.error)
    assert "\n" not in line
    assert "disk full (ENOSPC)" in line
    assert f"cannot {failing_write}" in line
    assert disk.refused >= 1
    assert "QUIT" not in served.last_session()
    assert rig.on_server() == sorted(MESSAGES), "a message was deleted from the server"
    delivered = only_whole_messages(rig)
    assert len(delivered) == failed.fetched
    print(f"{fmt}, {free} bytes free: {line}; {len(delivered)} delivered before it")

    disk.free = UNLIMITED
    again = rig.sync()
    assert again.error is None, again.error
    assert again.fetched == len(MESSAGES) - len(delivered)
    assert retrieved(served.last_session()) == again.fetched
    assert rig.landed() == rig.expected()
    assert rig.temporary_files() == []
    assert rig.on_server() == []
