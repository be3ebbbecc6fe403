"""The file workers: bytes land in order, memory handed over stays bounded, failures surface."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.destinations import file_writers
from pop3s_fetch.destinations.file_writers import FileWriterPool


@pytest.fixture
def pool() -> Iterator[FileWriterPool]:
    workers = FileWriterPool(2)
    yield workers
    workers.shutdown()


def new_file(directory: Path, name: str) -> tuple[int, str]:
    path = str(directory / name)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path


def test_interleaved_files_get_their_own_bytes_in_order(
    pool: FileWriterPool, tmp_path: Path
) -> None:
    jobs = [pool.adopt(*new_file(tmp_path, f"f{i}")) for i in range(5)]
    expected = {job.path: b"" for job in jobs}
    for round_ in range(40):
        for i, job in enumerate(jobs):
            chunk = bytes([65 + i]) * (round_ * 997 % 70_000) + b"|%d\n" % round_
            pool.write(job, chunk)
            expected[job.path] += chunk
    for job in jobs:
        pool.finish(job)

    for job in jobs:
        assert job.wait() == job.path
        assert Path(job.path).read_bytes() == expected[job.path]
        assert job.size == len(expected[job.path])


def test_bytes_handed_over_stay_bounded_whatever_the_message_size(
    pool: FileWriterPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_write_all = file_writers.write_all

    def recording_write_all(fd: int, data: bytes) -> None:
        seen.append(pool.pending_bytes)
        real_write_all(fd, data)

    monkeypatch.setattr(file_writers, "write_all", recording_write_all)
    job = pool.adopt(*new_file(tmp_path, "big"))
    piece = b"x" * 65_536
    for _ in range(600):  # 37.5 MiB
        pool.write(job, piece)
    pool.finish(job)

    assert job.wait() == job.path
    assert os.path.getsize(job.path) == 600 * 65_536
    assert max(seen) <= file_writers.MAX_PENDING_BYTES


def test_a_failed_write_removes_the_file_and_is_raised(
    pool: FileWriterPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_writers, "write_all", full_disk)
    job = pool.adopt(*new_file(tmp_path, "full"))
    pool.write(job, b"x" * file_writers.HANDOFF_SIZE)  # handed over: the worker fails
    pool.finish(job)

    with pytest.raises(OSError, match="No space left") as caught:
        job.wait()
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []
    with pytest.raises(OSError, match="No space left"):  # later writes fail at once
        pool.write(job, b"more")


def test_abort_closes_and_removes_the_file_before_returning(
    pool: FileWriterPool, tmp_path: Path
) -> None:
    job = pool.adopt(*new_file(tmp_path, "aborted"))
    pool.write(job, b"y" * (file_writers.HANDOFF_SIZE + 1))

    pool.abort(job)

    assert os.listdir(tmp_path) == []


def test_an_unexpected_failure_in_a_worker_is_reported_not_hung_on(
    pool: FileWriterPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, data: bytes) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(file_writers, "write_all", broken)
    job = pool.adopt(*new_file(tmp_path, "broken"))
    pool.write(job, b"z" * file_writers.HANDOFF_SIZE)
    pool.finish(job)

    with pytest.raises(OSError, match="the file writer failed: RuntimeError") as caught:
        job.wait()
    assert caught.value.errno == errno.EIO
    assert os.listdir(tmp_path) == []


def test_a_worker_starts_with_the_first_file_it_gets_not_before(tmp_path: Path) -> None:
    # A daemon's idle poll writes nothing, and a poll with one new message writes one file:
    # no more threads to start and stop than there are files.
    def workers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("lazy-writer")]

    idle = FileWriterPool(2, thread_name="lazy-writer")
    assert workers() == []
    idle.shutdown()

    busy = FileWriterPool(3, thread_name="lazy-writer")
    job = busy.adopt(*new_file(tmp_path, "f"))
    assert workers() == ["lazy-writer-0"]  # one file, one worker
    busy.write(job, b"mail\n")
    busy.finish(job)
    assert job.wait() == job.path
    more = [busy.adopt(*new_file(tmp_path, f"g{i}")) for i in range(3)]
    assert sorted(workers()) == ["lazy-writer-0", "lazy-writer-1", "lazy-writer-2"]
    for other in more:
        busy.finish(other)
    busy.shutdown()
    assert workers() == []
    assert Path(job.path).read_bytes() == b"mail\n"
    assert all(Path(other.wait()).read_bytes() == b"" for other in more)


def test_pools_side_by_side_share_the_process_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Accounts synced at once each have a pool: together they stay within PROCESS_WORKERS,
    # each has one worker at least, and a pool grows again once another has shut down.
    monkeypatch.setattr(file_writers, "PROCESS_WORKERS", 3)
    monkeypatch.setattr(file_writers, "_running", 0)  # whatever other tests left running

    def workers(prefix: str) -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))

    first = FileWriterPool(8, thread_name="share-a")
    second = FileWriterPool(8, thread_name="share-b")
    first_jobs = [first.adopt(*new_file(tmp_path, f"a{i}")) for i in range(4)]
    second_jobs = [second.adopt(*new_file(tmp_path, f"b{i}")) for i in range(3)]
    assert workers("share-a") == ["share-a-0", "share-a-1", "share-a-2"]
    assert workers("share-b") == ["share-b-0"]  # its first, although the three are taken

    for job in first_jobs:
        first.write(job, b"a\n")
        first.finish(job)
    first.shutdown()
    assert workers("share-a") == []
    more = [second.adopt(*new_file(tmp_path, f"c{i}")) for i in range(3)]
    assert workers("share-b") == ["share-b-0", "share-b-1", "share-b-2"]

    for job in second_jobs + more:
        second.write(job, b"b\n")
        second.finish(job)
    second.shutdown()
    assert [Path(job.wait()).read_bytes() for job in first_jobs] == [b"a\n"] * 4
    assert [Path(job.wait()).read_bytes() for job in second_jobs + more] == [b"b\n"] * 6
    assert file_writers._running == 0
