"""Worker threads that fill, fsync and close files for the thread reading the network.

Each of those steps is a system call that releases the GIL, so handing them to a worker lets
the reading thread decrypt and decode the next message meanwhile instead of waiting on the
file system. The caller creates each file itself, so that a file exists, and a failure to
create it is known, as soon as the message starts. Bytes handed over but not yet written are
bounded, so memory stays flat whatever the size of a message.

It must not know Maildir, mbox (no backend), POP3 or the state store: a file is a path and bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from queue import SimpleQueue

from pop3s_fetch.destinations.files import write_all
from pop3s_fetch.durable import fsync_file

#: Bytes gathered on the caller's side before they are handed to a worker in one piece.
HANDOFF_SIZE = 256 * 1024
#: Bytes handed to workers but not yet written; a caller past it waits.
MAX_PENDING_BYTES = 512 * 1024
#: Worker threads of all pools of the process together. Accounts synced side by side
#: (``--jobs``) each have a pool, and past this more threads only contend for the GIL: the
#: accounts20 benchmark (8 accounts at a time) took 14% more CPU with up to 8 workers per
#: pool than with 2, about 5% more with 16 in all, and the same with 8 in all. Every pool may
#: have one worker, whatever the others hold.
PROCESS_WORKERS = 8

_running = 0  # workers started and not yet shut down, all pools together
_running_lock = threading.Lock()


def _claim_worker(*, first: bool) -> bool:
    """May a pool start one more worker? Its first one always; others while there is room."""
    global _running
    with _running_lock:
        if first or _running < PROCESS_WORKERS:
            _running += 1
            return True
        return False


def _release_workers(count: int) -> None:
    global _running
    with _running_lock:
        _running -= count


class FileJob:
    """One file on its way to the disk; :meth:`wait` tells how it ended."""

    def __init__(self, fd: int, path: str) -> None:
        self.path = path
        self.size = 0
        self.error: OSError | None = None  # set by the worker; read by the caller
        self._fd: int | None = fd
        self._chunks: list[bytes] = []  # gathered, not yet handed over
        self._gathered = 0
        self._done = threading.Event()

    def wait(self) -> str:
        """Block until the file is written, fsynced and closed (or aborted); return its path.

        Raises:
            OSError: writing or fsyncing failed (the file was removed).
        """
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.path


class _Handoff:
    __slots__ = ("abort", "chunks", "finish", "job", "octets")

    def __init__(
        self, job: FileJob, chunks: list[bytes], octets: int, finish: bool, abort: bool
    ) -> None:
        self.job = job
        self.chunks = chunks
        self.octets = octets
        self.finish = finish
        self.abort = abort


class FileWriterPool:
    """A few worker threads; every step of one file is done by the same worker, in order.

    Files are dealt to the workers in turn, and a worker starts with the first file dealt to
    it: a run with nothing new (a daemon's idle poll) starts none, and a run with one new
    message starts one, instead of paying a clone and a GIL hand-off for each. While other
    pools hold the process's PROCESS_WORKERS, files go to the workers already running.
    """

    def __init__(self, workers: int, thread_name: str = "file-writer") -> None:
        self._queues: list[SimpleQueue[_Handoff | None]] = [SimpleQueue() for _ in range(workers)]
        self._next = 0
        self._assigned: dict[FileJob, SimpleQueue[_Handoff | None]] = {}
        self._pending = 0
        self._waiting = False
        self._room = threading.Condition()
        self._thread_name = thread_name
        self._threads: list[threading.Thread] = []  # worker i starts with its first file

    @property
    def pending_bytes(self) -> int:
        """Bytes handed to the workers but not yet written: what MAX_PENDING_BYTES bounds."""
        return self._pending

    # --- the caller's side -------------------------------------------------------------

    def adopt(self, fd: int, path: str) -> FileJob:
        """Take over ``fd``, a new empty file at ``path``: from now on the pool closes it."""
        if self._next == len(self._threads) and _claim_worker(first=not self._threads):
            self._start_worker(self._next)
        index = self._next if self._next < len(self._threads) else 0
        job = FileJob(fd, path)
        self._assigned[job] = self._queues[index]
        self._next = (index + 1) % len(self._queues)
        return job

    def write(self, job: FileJob, data: bytes) -> None:
        """Queue ``data`` for ``job``.

        Raises:
            OSError: a worker already failed on this file (it was removed).
        """
        if job.error is not None:
            raise job.error
        job.size += len(data)
        job._chunks.append(data)
        job._gathered += len(data)
        if job._gathered >= HANDOFF_SIZE:
            self._hand_over(job, finish=False, abort=False)

    def finish(self, job: FileJob) -> None:
        """Queue the end of ``job``: write what is left, fsync, close. :meth:`FileJob.wait` then."""
        self._hand_over(job, finish=True, abort=False)

    def abort(self, job: FileJob) -> None:
        """Give ``job`` up: its file is closed and removed by the time this returns."""
        if job not in self._assigned:
            return
        job._chunks.clear()
        job._gathered = 0
        self._hand_over(job, finish=False, abort=True)
        job._done.wait()

    def shutdown(self) -> None:
        """Let the workers finish what is queued, then stop them."""
        for q in self._queues[: len(self._threads)]:
            q.put(None)
        for thread in self._threads:
            thread.join()
        stopped, self._threads, self._next = len(self._threads), [], 0
        _release_workers(stopped)

    def _start_worker(self, index: int) -> None:
        thread = threading.Thread(
            target=self._work,
            args=(self._queues[index],),
            name=f"{self._thread_name}-{index}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            _release_workers(1)
            raise
        self._threads.append(thread)

    def _hand_over(self, job: FileJob, *, finish: bool, abort: bool) -> None:
        octets, chunks = job._gathered, job._chunks
        job._chunks, job._gathered = [], 0
        if octets:
            with self._room:
                while self._pending and self._pending + octets > MAX_PENDING_BYTES:
                    self._waiting = True
                    self._room.wait()
                self._pending += octets
        queue = self._assigned[job] if not (finish or abort) else self._assigned.pop(job)
        queue.put(_Handoff(job, chunks, octets, finish, abort))

    # --- the worker's side ---------------------------------------------------------------

    def _work(self, queue: SimpleQueue[_Handoff | None]) -> None:
        while (handoff := queue.get()) is not None:
            job = handoff.job
            try:
                if job.error is None and not handoff.abort:
                    self._write(job, handoff.chunks, handoff.finish)
            except OSError as err:
                job.error = err
                self._discard(job)
            except Exception as err:  # a dead worker would leave its caller waiting forever
                job.error = OSError(errno.EIO, f"the file writer failed: {err!r}")
                self._discard(job)
            if handoff.abort:
                self._discard(job)
            handoff.chunks.clear()
            if handoff.octets:
                with self._room:
                    self._pending -= handoff.octets
                    if self._waiting:
                        self._waiting = False
                        self._room.notify_all()
            if handoff.finish or handoff.abort:
                job._done.set()

    @staticmethod
    def _write(job: FileJob, chunks: list[bytes], finish: bool) -> None:
        assert job._fd is not None
        for chunk in chunks:
            write_all(job._fd, chunk)
        if finish:
            fd, job._fd = job._fd, None
            try:
                fsync_file(fd)
            finally:
                os.close(fd)

    @staticmethod
    def _discard(job: FileJob) -> None:
        if job._fd is not None:
            fd, job._fd = job._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(job.path)
