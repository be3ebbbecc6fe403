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
from pop3s_fetch.logcontext import current_account
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


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the moment of each record.

    While rich's live progress runs, it replaces ``sys.stderr`` with a proxy that prints above
    the live rows; a handler that kept the stream it saw at start-up would write straight
    across them and leave a half-drawn row behind (``-v`` on a terminal).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # always the current sys.stderr


class PrintableLogFormatter(logging.Formatter):
    """The -v/--debug formatter: a log line quotes the server (the dialogue), so escape it."""

    def format(self, record: logging.LogRecord) -> str:
        account = current_account.get()
        message = record.getMessage()
        if account and not message.startswith(f"{account}: "):
            # Parallel accounts' dialogues interleave: say whose line this is.
            record.msg, record.args = f"{account}: {message}", None
        return printable(super().format(record), newlines=True)


def log_format(environ: Mapping[str, str]) -> str:
    """The logging format for -v/--debug: with the journal's debug priority when it listens."""
    prefix = _PRIORITY["debug"] if detect_mode(sys.stderr, environ) == "journal" else ""
    return prefix + "%(levelname)s %(name)s: %(message)s"


def _on_server(count: int | None) -> str:
    """A mailbox never listed (the connection failed) shows a dash, not a false 0."""
    return "-" if count is None else str(count)


def human_bytes(octets: int) -> str:
    """1536 -> "1.5 kB" (SI units, as rich shows them)."""
    size = float(octets)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def summary_line(result: AccountResult) -> str:
    """One line per account: what was fetched and deleted, or why it was skipped."""
    if result.login_delay is not None:
        return result.login_delay.note(result.account)
    parts = [f"{result.account}:"]
    if result.fetched:
        noun = "message" if result.fetched == 1 else "messages"
        parts.append(f"{result.fetched} new {noun} ({human_bytes(result.octets)})")
    else:
        parts.append("no new mail")
    extra = [f"{_on_server(result.on_server)} on server"]
    if result.deleted:
        extra.append(f"{result.deleted} deleted")
    if result.recovered:
        extra.append(f"{result.recovered} recovered from an interrupted run")
    if result.remaining:
        extra.append(f"{result.remaining} more next run (max_messages/max_bytes)")
    for action, done in (("skip", "skipped"), ("delete", "deleted")):
        count = sum(1 for f in result.filtered if f.action == action and f.new)
        if count:
            extra.append(f"{count} {done} by the filter")
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

    def warning(self, account: str, text: str, *, loud: bool = False) -> None:
        """Something worth knowing that did not stop the run (not with --json, nor with
        --quiet unless ``loud``)."""
        if not self.json and (loud or not self.quiet):
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
    from rich.markup import escape
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
        if r.login_delay is not None and r.error is None:  # the note says when it is due
            why = r.login_delay.note(r.account).partition(", ")[2]  # may quote the server
            status = "[yellow]skipped[/]: " + escape(printable(why))
        if r.remaining:  # max_messages / max_bytes left some for the next run
            status += f", {r.remaining} more next run"
        if r.filtered:
            status += f", {len(r.filtered)} filtered"
        table.add_row(
            r.account,
            status,
            str(r.fetched),
            human_bytes(r.octets),
            str(r.deleted),
            _on_server(r.on_server),
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
        #: Every account finished so far, interrupted ones too (for the Ctrl-C summary).
        self.results: list[AccountResult] = []
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
        if messages == 0:
            self._update(account, total=0, state="no new mail")
            return
        self._update(account, total=octets, state=f"downloading 0/{messages}")

    def fetched(self, account: str, message_octets: int) -> None:
        with self._lock:
            done, total = self._counts.get(account, (0, 0))
            self._counts[account] = (done + 1, total)
        self._update(account, advance=message_octets, state=f"downloading {done + 1}/{total}")

    def warned(self, account: str, text: str, *, loud: bool = False) -> None:
        self.output.warning(account, text, loud=loud)

    def interrupted_lines(self) -> list[str]:
        """After Ctrl-C: per account, what is safe, so nobody wonders what was lost."""
        lines = []
        for result in self.results:
            _, total = self._counts.get(result.account, (0, 0))
            of = f" of {total}" if total else ""
            noun = "message" if (total or result.fetched) == 1 else "messages"
            deleted = f"{result.deleted} deleted" if result.deleted else "nothing deleted"
            done = "" if result.interrupted else "finished, "
            lines.append(f"{result.account}: {done}{result.fetched}{of} {noun} saved, {deleted}")
        return lines

    def finished(self, result: AccountResult) -> None:
        self.results.append(result)
        if result.interrupted:
            self._update(result.account, state="interrupted")
            return
        if result.login_delay is not None:
            self._update(result.account, state="skipped (LOGIN-DELAY)")
        elif result.error is None:
            self._update(result.account, state="done" if result.fetched else "no new mail")
        else:
            self._update(result.account, state="failed")
            self.output.error(result.account, result.error)
