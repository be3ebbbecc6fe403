"""Everything the user sees: live progress, summaries, one-line errors, in the right dialect.

The only module that imports rich. Three audiences, told apart by where output goes:

* a terminal (stderr is a TTY): one live progress row per account, then a summary table;
* a pipe or cron (no TTY): plain lines, no escape codes, no spinners;
* the systemd journal (``$JOURNAL_STREAM`` names our stderr): plain lines with ``<N>`` syslog
  priority prefixes, so the journal records levels.

Results go to stdout, errors and progress to stderr. ``NO_COLOR`` is honoured by rich.
Every line passes :func:`~pop3s_fetch.printable.printable` here, since much of it quotes the
server (see that module for why).
rich is imported only when a terminal will show its work: cron and pipes do not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, TextIO

from pop3s_fetch.errors import Pop3sFetchError
from pop3s_fetch.printable import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from pop3s_fetch.sync import AccountResult

Mode = Literal["terminal", "plain", "journal"]

# syslog priorities (sd-daemon(3)): the journal reads a "<N>" prefix on each line.
_PRIORITY = {"error": "<3>", "warning": "<4>", "info": "<6>", "debug": "<7>"}


def detect_mode(stream: TextIO, environ: Mapping[str, str]) -> Mode:
    """Journal if $JOURNAL_STREAM is this stream's device:inode, else terminal or plain."""
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        return "plain"
    journal = environ.get("JOURNAL_STREAM", "")
    if journal:
        try:
            info = os.fstat(fd)
            if journal == f"{info.st_dev}:{info.st_ino}":
                return "journal"
        except OSError:
            pass
    return "terminal" if os.isatty(fd) else "plain"


class PrintableLogFormatter(logging.Formatter):
    """The -v/--debug formatter: a log line quotes the server (the dialogue), so escape it."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), newlines=True)


def log_format(environ: Mapping[str, str]) -> str:
    """The logging format for -v/--debug: with the journal's debug priority when it listens."""
    prefix = _PRIORITY["debug"] if detect_mode(sys.stderr, environ) == "journal" else ""
    return prefix + "%(levelname)s %(name)s: %(message)s"


def human_bytes(octets: int) -> str:
    """1536 -> "1.5 kB" (SI units, as rich shows them)."""
    size = float(octets)
    for unit in ("bytes", "kB", "MB", "GB"):
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
    """``error: ACCOUNT: cause (fix)`` on one line, as cron mails and journals show best."""
    where = f"{account}: " if account else ""
    text = f"error: {where}{err.message}"
    if err.hint:
        text += f" ({err.hint})"
    return printable(" ".join(text.split()))


def write_traceback(err: BaseException, stream: TextIO) -> None:
    """Full traceback for --debug; our exception texts never contain secrets."""
    stream.write(printable("".join(traceback.format_exception(err)), newlines=True))


class Output:
    """Where and how this run speaks; shared by the CLI and the reporter."""

    def __init__(
        self,
        *,
        quiet: bool = False,
        progress: bool = True,
        debug: bool = False,
        json: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.mode = detect_mode(sys.stderr, environ)
        self.quiet = quiet
        self.debug = debug
        self.json = json
        self.progress_enabled = progress and not quiet and not debug and self.mode == "terminal"
        self.table_enabled = (
            not quiet and not json and detect_mode(sys.stdout, environ) == "terminal"
        )
        self._lock = threading.Lock()

    @functools.cached_property
    def out(self) -> Console:
        from rich.console import Console

        return Console(file=sys.stdout, highlight=False, soft_wrap=True)

    @functools.cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def _line(self, stream: TextIO, level: str, text: str, style: str | None = None) -> None:
        text = printable(text)
        with self._lock:
            if self.mode == "terminal" and stream.isatty():
                console = self.out if stream is sys.stdout else self.err
                console.print(text, markup=False, style=style)
                return
            # Plain write: no escape codes, and nothing may split a journal priority prefix.
            prefix = _PRIORITY[level] if self.mode == "journal" else ""
            stream.write(f"{prefix}{text}\n")
            stream.flush()

    def info(self, text: str) -> None:
        """A result line on stdout (not with --quiet or --json)."""
        if not self.quiet and not self.json:
            self._line(sys.stdout, "info", text)

    def error(self, account: str | None, err: Pop3sFetchError) -> None:
        self._line(sys.stderr, "error", error_line(account, err), "red")
        if self.debug:
            write_traceback(err, sys.stderr)

    def warning(self, account: str, text: str) -> None:
        """Something worth knowing that did not stop the run (not with --quiet or --json)."""
        if not self.json and not self.quiet:
            self._line(sys.stderr, "warning", f"warning: {account}: {text}", "yellow")

    def notice(self, level: Literal["info", "warning", "error"], text: str) -> None:
        """A line about the run itself (daemon mode) on stderr; with --quiet, errors only."""
        if level == "error" or not self.quiet:
            style = {"info": None, "warning": "yellow", "error": "red"}[level]
            self._line(sys.stderr, level, text, style)

    def notice_from_signal_handler(self, text: str) -> None:
        """:meth:`notice` for a signal handler: one os.write, no lock (the handler may have
        interrupted the thread that holds ours). For our own text only, never a server's."""
        if not self.quiet:
            prefix = _PRIORITY["info"] if self.mode == "journal" else ""
            with contextlib.suppress(OSError):
                os.write(sys.stderr.fileno(), f"{prefix}{text}\n".encode())

    def summary(self, results: Sequence[AccountResult]) -> None:
        """A table on a terminal, else one line per successful account."""
        if self.table_enabled:
            self.out.print(summary_table(results))
            return
        for result in results:
            if result.error is None:
                self.info(summary_line(result))


def summary_table(results: Sequence[AccountResult]) -> Table:
    from rich.table import Table

    table = Table(title=None, box=None, pad_edge=False, header_style="bold")
    for column, justify in (
        ("account", "left"),
        ("status", "left"),
        ("new", "right"),
        ("size", "right"),
        ("deleted", "right"),
        ("on server", "right"),
        ("time", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in results:
        status = "[red]failed[/]" if r.error else "[green]ok[/]"
        table.add_row(
            r.account,
            status,
            str(r.fetched),
            human_bytes(r.octets),
            str(r.deleted),
            str(r.on_server),
            f"{r.duration:.1f} s",
        )
    return table


class ProgressReporter:
    """A sync.Reporter: live rows on a terminal, plain lines elsewhere; thread-safe."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._counts: dict[str, tuple[int, int]] = {}
        self._progress: Progress | None = None
        if output.progress_enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.fields[account]}"),
                TextColumn("{task.fields[state]}"),
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

    def _update(self, account: str, **fields: object) -> None:
        if self._progress is None:
            return
        with self._lock:
            task = self._tasks.get(account)
            if task is None:
                task = self._progress.add_task("", total=None, account=account, state="")
                self._tasks[account] = task
        self._progress.update(task, **fields)  # type: ignore[arg-type]

    def started(self, account: str, phase: str) -> None:
        if phase == "downloading":
            done, total = self._counts.get(account, (0, 0))
            phase = f"downloading {done}/{total}"
        self._update(account, state=phase)

    def listed(self, account: str, messages: int, octets: int) -> None:
        with self._lock:
            self._counts[account] = (0, messages)
        self._update(account, total=max(octets, 1), state=f"downloading 0/{messages}")

    def fetched(self, account: str, message_octets: int) -> None:
        with self._lock:
            done, total = self._counts.get(account, (0, 0))
            self._counts[account] = (done + 1, total)
        self._update(account, advance=message_octets, state=f"downloading {done + 1}/{total}")

    def warned(self, account: str, text: str) -> None:
        self.output.warning(account, text)

    def finished(self, result: AccountResult) -> None:
        if result.error is None:
            self._update(result.account, state="done")
        else:
            self._update(result.account, state="failed")
            self.output.error(result.account, result.error)
