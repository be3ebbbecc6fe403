"""Daemon mode (``sync --every``): sync, sleep, repeat, until a signal says stop.

For containers and sessions without systemd or cron. The loop's promises:

* SIGTERM or SIGINT asks for a graceful stop: a round in progress finishes the message it is
  reading, publishes what it has (``SyncOptions.stop_requested`` is how sync hears it), and the
  process exits 0; while sleeping it exits at once. A second such signal stops at once, as
  Ctrl-C always did (KeyboardInterrupt: exit 130; a kill never loses or duplicates mail).
* SIGHUP re-reads the configuration; a broken one is reported in one line and the one loaded
  before stays in use. The next round uses what was read.
* A failing account is tried again after one interval, then two, four, ... up to
  :data:`BACKOFF_CAP` (or the interval, if longer); a success resets it. No failure ends the
  loop.

The clock and the sleep are injected, so the schedule is tested without time passing.

Must not know: click, rich or how lines are rendered (callers pass ``say``), POP3, mailbox
formats, or how accounts are synced (callers pass ``run_round``).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pop3s_fetch.config import Account
from pop3s_fetch.errors import ConfigError, Pop3sFetchError
from pop3s_fetch.sync import AccountResult

#: The shortest interval accepted (tests use it); below :data:`FREQUENT` a warning is printed.
MIN_INTERVAL = 1.0
FREQUENT = 60.0
#: A failing account is retried at most this far apart (unless the interval is longer).
BACKOFF_CAP = 3600.0

_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"(\d{1,9})(s|m|min|h|d|)")

Level = Literal["info", "warning", "error"]
Job = tuple[Account, Callable[[], str]]


def parse_interval(text: str) -> float:
    """``"90"``, ``"30s"``, ``"5m"``/``"5min"``, ``"1h"``, ``"1d"`` -> seconds.

    Raises:
        ValueError: with a sentence that says what is accepted.
    """
    match = _INTERVAL.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(
            f"expected a whole number of seconds or a duration such as 30s, 5m, 1h; got {text!r}"
        )
    seconds = float(int(match[1]) * _UNITS[match[2]])
    if seconds < MIN_INTERVAL:
        raise ValueError(f"the interval must be at least 1s; got {text!r}")
    return seconds


def describe(seconds: float) -> str:
    """3600 -> "1h", 90 -> "90s", 600 -> "10m": as short as the value allows."""
    whole = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def backoff_delay(interval: float, failures: int) -> float:
    """How long after its ``failures``-th failure in a row an account is tried again."""
    doubled = interval * 2.0 ** min(max(failures - 1, 0), 32)
    return min(doubled, max(interval, BACKOFF_CAP))


class Wakeup:
    """What signal handlers ask for, and a sleep that their asking cuts short.

    A Python signal handler runs in the main thread between two bytecodes, perhaps while that
    thread holds a lock; ``threading.Event.set()`` takes one, so calling it there can deadlock.
    So the handlers only set plain attributes and write a byte to a pipe, and :meth:`sleep`
    waits on the pipe (an ``Event.wait`` whose ``set`` is safe in a handler).
    """

    def __init__(self) -> None:
        self.stop_signal: int | None = None
        self.reload = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def stop_requested(self) -> bool:
        return self.stop_signal is not None

    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum
        self._poke()

    def request_reload(self) -> None:
        self.reload = True
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the sleeper
            os.write(self._write, b"\0")

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``; return early once a stop or a reload is asked for."""
        if seconds > 0 and not (self.stop_requested() or self.reload):
            select.select([self._read], [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 4096)

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


@contextlib.contextmanager
def signals_handled(wakeup: Wakeup, announce: Callable[[str], None]) -> Iterator[None]:
    """Route SIGTERM, SIGINT and SIGHUP to ``wakeup`` (main thread only); restore on exit.

    ``announce`` acknowledges a stop at once; it runs in the handler, so it must take no lock.
    """

    def stop(signum: int, frame: object) -> None:
        if wakeup.stop_requested():
            raise KeyboardInterrupt  # asked twice: stop now, as Ctrl-C does without a daemon
        wakeup.request_stop(signum)
        announce(
            f"{signal.Signals(signum).name}: stopping after the current message "
            "(send it again to stop at once)"
        )

    def reload(signum: int, frame: object) -> None:
        wakeup.request_reload()

    handlers = {signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class _Backoff:
    failures: int = 0
    due: float = 0.0  # clock time before which the account is not tried


@dataclass
class Daemon:
    """The loop; :meth:`run` returns the exit code once a stop was asked for.

    ``load`` reads the configuration afresh (raising ConfigError when it is broken);
    ``run_round`` syncs the jobs it is given and reports their results; ``say`` prints a line
    about the loop itself, ``report_error`` an error line.
    """

    interval: float
    load: Callable[[], Sequence[Job]]
    run_round: Callable[[Sequence[Job]], Sequence[AccountResult]]
    say: Callable[[Level, str], None]
    report_error: Callable[[Pop3sFetchError], None]
    wakeup: Wakeup
    clock: Callable[[], float] = time.monotonic
    _jobs: Sequence[Job] = field(default=(), init=False)
    _backoff: dict[str, _Backoff] = field(default_factory=dict, init=False)

    def run(self, jobs: Sequence[Job]) -> int:
        self._jobs = jobs
        if self.interval < FREQUENT:
            self.say(
                "warning",
                f"warning: syncing every {describe(self.interval)}: servers may refuse logins "
                "this frequent (most expect a few minutes between them)",
            )
        self.say(
            "info",
            f"syncing every {describe(self.interval)}; SIGTERM or Ctrl-C stops after the "
            "current message, SIGHUP re-reads the configuration",
        )
        while not self.wakeup.stop_requested():
            self._reload_if_asked()
            self._round()
            deadline = self.clock() + self.interval
            while not self.wakeup.stop_requested() and (left := deadline - self.clock()) > 0:
                self.wakeup.sleep(left)
                self._reload_if_asked()
        signum = self.wakeup.stop_signal
        name = signal.Signals(signum).name if signum is not None else "a request"
        self.say("info", f"stopped by {name}")
        return 0

    def _round(self) -> None:
        now = self.clock()
        due = [job for job in self._jobs if self._state(job).due <= now]
        if not due:
            return
        for result in self.run_round(due):
            self._record(result, now)

    def _state(self, job: Job) -> _Backoff:
        return self._backoff.setdefault(job[0].name, _Backoff())

    def _record(self, result: AccountResult, started: float) -> None:
        state = self._backoff.setdefault(result.account, _Backoff())
        if result.error is None:
            if state.failures:
                noun = "failure" if state.failures == 1 else "failures"
                self.say("info", f"{result.account}: working again after {state.failures} {noun}")
            state.failures, state.due = 0, 0.0
            return
        state.failures += 1
        delay = backoff_delay(self.interval, state.failures)
        state.due = started + delay
        noun = "failure" if state.failures == 1 else "failures"
        self.say(
            "info",
            f"{result.account}: next try in {describe(delay)} ({state.failures} {noun} in a row)",
        )

    def _reload_if_asked(self) -> None:
        if not self.wakeup.reload:
            return
        self.wakeup.reload = False
        try:
            jobs = self.load()
        except Pop3sFetchError as err:
            # One line (not the problem list): the log of a long-running process stays readable.
            self.report_error(
                ConfigError(
                    err.message,
                    hint="still using the configuration read before; "
                    "pop3s-fetch config check lists every problem",
                )
            )
            return
        self._jobs = jobs
        names = ", ".join(job[0].name for job in jobs) or "none"
        self.say("info", f"configuration re-read; accounts: {names}")
