"""Run one command and measure it: wall time, CPU time and peak RSS of the child.

Owns the measuring only (``os.wait4`` gives the finished child's own rusage, so other work of
this process does not blur it). Knows nothing about what the command does.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Measurement:
    """One finished run."""

    wall: float  # seconds
    cpu: float  # user + system seconds of the child and its own children
    max_rss_kib: int  # peak resident set of the largest process in the tree
    returncode: int


@dataclass(frozen=True, slots=True)
class Command:
    """What to run, and how (its environment, its directory, optionally another user)."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    user: int | None = None
    group: int | None = None
    ok_codes: tuple[int, ...] = (0,)


#: GNU time reports the peak RSS of the process it starts. Our own wait4 cannot: Linux carries
#: the forking parent's (this Python's, holding the corpus) peak RSS into the child's ru_maxrss
#: across exec, so a child of a large parent looks at least that large.
GNU_TIME = "/usr/bin/time"


def run_measured(command: Command, log: Path, timeout: float = 3600.0) -> Measurement:
    """Run ``command`` to completion, output to ``log``; wall and CPU from ``wait4``, peak
    RSS from GNU time (or, without it, wait4's upper bound). Dirty data is synced first."""
    rss_file = log.with_suffix(".rss")
    argv = list(command.argv)
    # Start with no dirty data of earlier runs waiting to be written back: a client that
    # fsyncs would otherwise pay for the writeback of one that did not (on ext4, a journal
    # commit also writes out other files' data), and which client follows which is fixed.
    os.sync()
    if Path(GNU_TIME).exists():
        argv = [GNU_TIME, "--quiet", "-f", "%M", "-o", str(rss_file), *argv]
    with log.open("ab") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            env=dict(command.env),
            cwd=command.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=command.user,
            group=command.group,
            extra_groups=[] if command.user is not None else None,
            start_new_session=True,  # so a timeout kills the client, not only GNU time
        )
        _, status, usage = _wait4_with_deadline(process, started + timeout)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_kib=_reported_rss(rss_file, usage.ru_maxrss),
        returncode=process.returncode,
    )


def _reported_rss(rss_file: Path, fallback: int) -> int:
    """GNU time's %M (KiB): the last line it wrote (a first line may report the exit code)."""
    try:
        lines = rss_file.read_text().split()
        rss_file.unlink()
        return int(lines[-1])
    except (OSError, ValueError, IndexError):
        return fallback


def _wait4_with_deadline(
    process: subprocess.Popen[bytes], deadline: float
) -> tuple[int, int, resource.struct_rusage]:
    """Block in wait4; a watchdog kills the child if it runs past ``deadline``."""
    import threading

    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(max(deadline - time.monotonic(), 0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        return os.wait4(process.pid, 0)
    finally:
        done.set()


def median_of(runs: Sequence[Measurement], key: Callable[[Measurement], float]) -> float:
    return statistics.median(key(run) for run in runs)
