"""Everything the user sees: progress on a terminal, summary lines, one-line errors.

The only module that imports rich. Progress goes to stderr and only when stderr is a terminal,
so cron and pipes get plain lines and no escape codes; summaries go to stdout, errors to stderr.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pop3s_fetch.errors import Pop3sFetchError

if TYPE_CHECKING:
    from pop3s_fetch.sync import AccountResult


def human_bytes(octets: int) -> str:
    """1536 -> "1.5 KB" (decimal units, as rich shows them)."""
    size = float(octets)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def summary_line(result: AccountResult) -> str:
    """One line per account: what was fetched and deleted."""
    parts = [f"{result.account}:"]
    if result.fetched:
        noun = "message" if result.fetched == 1 else "messages"
        parts.append(f"{result.fetched} new {noun} ({human_bytes(result.octets)})")
    else:
        parts.append("no new mail")
    extra = [f"{result.on_server} on server"]
    if result.deleted:
        extra.append(f"{result.deleted} deleted")
    if result.recovered:
        extra.append(f"{result.recovered} recovered from an interrupted run")
    return " ".join(parts) + ", " + ", ".join(extra)


def error_line(account: str | None, err: Pop3sFetchError) -> str:
    """``error: ACCOUNT: cause; fix`` on one line, as cron mails and journals show best."""
    where = f"{account}: " if account else ""
    text = f"error: {where}{err.message}"
    if err.hint:
        text += f" ({err.hint})"
    return " ".join(text.split())


class Output:
    """The run's consoles and verbosity; shared by the CLI and the reporter."""

    def __init__(self, *, quiet: bool = False, progress: bool = True, debug: bool = False) -> None:
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.debug = debug
        self.progress_enabled = progress and not quiet and self.err.is_terminal

    def info(self, text: str) -> None:
        """A normal result line on stdout (suppressed by --quiet)."""
        if not self.quiet:
            self.out.print(text, markup=False)

    def error(self, account: str | None, err: Pop3sFetchError) -> None:
        self.err.print(error_line(account, err), markup=False, style="red")
        if self.debug:
            self.traceback(err)

    def warning(self, account: str, text: str) -> None:
        self.err.print(f"warning: {account}: {text}", markup=False, style="yellow")

    def traceback(self, err: BaseException) -> None:
        write_traceback(err, sys.stderr)


def write_traceback(err: BaseException, stream: TextIO) -> None:
    """Full traceback for --debug; our exception texts never contain secrets."""
    stream.write("".join(traceback.format_exception(err)))


class ProgressReporter:
    """A sync.Reporter: live rows on a terminal, plain lines elsewhere, thread-safe."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        if output.progress_enabled:
            self._progress = Progress(
                TextColumn("{task.fields[account]:<12} {task.fields[phase]:<11}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=output.err,
                transient=True,
            )

    @contextmanager
    def live(self) -> Iterator[ProgressReporter]:
        if self._progress is None:
            yield self
            return
        with self._progress:
            yield self

    def _task(self, account: str) -> TaskID | None:
        if self._progress is None:
            return None
        with self._lock:
            if account not in self._tasks:
                self._tasks[account] = self._progress.add_task(
                    "", total=None, account=account, phase="starting"
                )
            return self._tasks[account]

    def started(self, account: str, phase: str) -> None:
        task = self._task(account)
        if task is not None and self._progress is not None:
            self._progress.update(task, phase=phase)

    def listed(self, account: str, messages: int, octets: int) -> None:
        task = self._task(account)
        if task is not None and self._progress is not None:
            self._progress.update(task, total=max(octets, 1), phase=f"0/{messages} new")
            self._progress.tasks[task].fields["count"] = messages

    def fetched(self, account: str, message_octets: int) -> None:
        task = self._task(account)
        if task is not None and self._progress is not None:
            state = self._progress.tasks[task]
            done = int(state.fields.get("done", 0)) + 1
            state.fields["done"] = done
            self._progress.update(
                task, advance=message_octets, phase=f"{done}/{state.fields.get('count', '?')}"
            )

    def warned(self, account: str, text: str) -> None:
        self.output.warning(account, text)

    def finished(self, result: AccountResult) -> None:
        task = self._task(result.account)
        if task is not None and self._progress is not None:
            self._progress.update(task, phase="failed" if result.error else "done")
        if result.error is not None:
            self.output.error(result.account, result.error)
        else:
            self.output.info(summary_line(result))
