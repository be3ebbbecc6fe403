"""The command line: parse, call, report. No mail logic lives here.

The only module that imports click. Heavy modules (rich, keyring, ssl, sqlite3) are imported
inside the commands that need them, so ``--help`` and ``--version`` start fast.
Every expected failure is a :class:`~pop3s_fetch.errors.Pop3sFetchError`, printed as one line
with its exit code; anything else is a bug (exit 70), with a traceback only under ``--debug``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from pop3s_fetch import __version__
from pop3s_fetch.errors import ConfigError, CredentialError, ExitCode, Pop3sFetchError

if TYPE_CHECKING:
    from pop3s_fetch import matching, statetools
    from pop3s_fetch.config import Account, Config
    from pop3s_fetch.starter import Answers as Starter
    from pop3s_fetch.ui import Output

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def _echo(text: str, *, err: bool = False) -> None:
    """Print a line that may quote a server or a certificate, with its controls escaped."""
    from pop3s_fetch.printable import printable

    click.echo(printable(text, newlines=True), err=err)


def _split_words(text: str) -> list[str]:
    """``text`` split as a shell would, without running one (shlex: only the commands that
    take a command line pay for importing it)."""
    import shlex

    return shlex.split(text)


def _joined_words(words: Sequence[str]) -> str:
    """``words`` quoted for a shell, for showing."""
    import shlex

    return shlex.join(words)


@dataclass
class _Globals:
    config_path: Path | None
    debug: bool
    verbose: int


def _fail(err: Pop3sFetchError, account: str | None = None, *, debug: bool = False) -> NoReturn:
    from pop3s_fetch.ui import error_line, write_traceback

    _echo(error_line(account, err), err=True)
    if isinstance(err, ConfigError):
        for problem in err.problems:
            _echo(f"  {problem}", err=True)
    if debug:
        write_traceback(err, sys.stderr)
    sys.exit(int(err.exit_code))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a command starts up, then all of it frozen.

    Importing the modules of a sync and loading the configuration allocate tens of
    thousands of objects and free almost none: the collector's ~20 passes over them found
    nothing and cost ~3 ms of a ~0.25 s idle run. Frozen (moved out of every generation),
    they are never walked again; what the run allocates afterwards is collected as usual.
    """
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _load_config(g: _Globals) -> Config:
    from pop3s_fetch import config

    return config.load(config.find_config_path(g.config_path, os.environ))


def _complete_accounts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of account names from the configuration (silent when it is broken)."""
    from pop3s_fetch import config

    root = ctx.find_root()
    explicit = root.params.get("config_path") if root.params else None
    try:
        loaded = config.load(config.find_config_path(explicit, os.environ))
    except Pop3sFetchError:
        return []
    chosen = set(ctx.params.get(param.name or "") or ())  # "sync work <Tab>" offers work no more
    return [name for name in loaded.accounts if name.startswith(incomplete) and name not in chosen]


def _output(
    g: _Globals, *, quiet: bool = False, progress: bool = True, json: bool = False
) -> Output:
    from pop3s_fetch.ui import Output

    return Output(quiet=quiet, progress=progress, debug=g.debug, json=json)


def _setup_logging(g: _Globals) -> None:
    if g.debug or g.verbose:
        import logging  # only when asked for: it costs start-up time

        from pop3s_fetch.ui import CurrentStderrHandler, PrintableLogFormatter, log_format

        handler = CurrentStderrHandler()
        handler.setFormatter(PrintableLogFormatter(log_format(os.environ)))
        logging.basicConfig(level=logging.DEBUG if g.debug else logging.INFO, handlers=[handler])
        # keyring's own chatter ("Loading KWallet" six times) is not ours to show.
        logging.getLogger("keyring").setLevel(logging.WARNING)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="pop3s-fetch")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file (default: $POP3S_FETCH_CONFIG, then "
    "$XDG_CONFIG_HOME/pop3s-fetch/config.toml).",
)
@click.option("-v", "--verbose", count=True, help="Say more about what happens.")
@click.option(
    "--debug", is_flag=True, help="Show the POP3 dialogue (passwords masked) and tracebacks."
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int, debug: bool) -> None:
    """Download mail from POP3 servers over verified TLS into Maildir or mbox.

    \b
    Start with:   pop3s-fetch demo
    Then:         pop3s-fetch init   (asks for the server, login and password)
    And fetch:    pop3s-fetch sync
    """
    ctx.obj = _Globals(config_path, debug, verbose)
    _setup_logging(ctx.obj)


def _interval(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """--every's value: "90" (seconds), "30s", "5m", "1h", "1d"; at least one second."""
    if value is None:
        return None
    from pop3s_fetch.daemon import parse_interval

    try:
        return parse_interval(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


_Command = TypeVar("_Command", bound=Callable[..., object])


def _jobs_option(done: str) -> Callable[[_Command], _Command]:
    """``-j/--jobs``, one definition for the commands that work on accounts side by side."""
    return click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1, max=64),
        default=8,
        show_default=True,
        help=f"Accounts {done} at the same time.",
    )


@cli.command()
@click.argument("accounts", nargs=-1, shell_complete=_complete_accounts)
@click.option(
    "--every",
    callback=_interval,
    metavar="INTERVAL",
    help="Stay in the foreground and sync again this long after each round (90, 30s, 5m, "
    "1h). SIGTERM/SIGINT stop after the current message; SIGHUP re-reads the configuration.",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="If another run holds an account, wait this long for it before giving up (exit 75).",
)
@_jobs_option("synced")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only (for cron).")
@click.option("--no-progress", is_flag=True, help="No progress display, even on a terminal.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document with every account's results on stdout.",
)
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Only show what would be fetched and deleted; write nothing, delete nothing.",
)
@click.option(
    "--ignore-login-delay",
    is_flag=True,
    help="Log in even if the server's LOGIN-DELAY has not passed since the last login "
    "(the server may refuse: that is a note, not an error).",
)
@click.pass_obj
def sync(
    g: _Globals,
    accounts: tuple[str, ...],
    ignore_login_delay: bool,
    wait: float,
    jobs: int,
    quiet: bool,
    no_progress: bool,
    as_json: bool,
    dry_run: bool,
    every: float | None,
) -> None:
    """Download new mail for every account, or only the ACCOUNTS named.

    Each message is written to the account's Maildir or mbox and recorded, so it is never
    downloaded twice; with keep = false it is deleted from the server only after that.
    Exit status 0 also when there was no new mail; 1 when some accounts failed and others
    did not. With --every it runs until stopped, then exits 0.
    """
    if every is not None:
        if as_json or dry_run:
            flag = "--json" if as_json else "--dry-run"
            raise click.UsageError(f"{flag} cannot be combined with --every (it is for one run)")
        sys.exit(
            _sync_every(
                g,
                accounts,
                every,
                wait=wait,
                jobs=jobs,
                quiet=quiet,
                ignore_login_delay=ignore_login_delay,
            )
        )
    import gc
    import time

    with _collector_paused():
        from pop3s_fetch import credentials, report
        from pop3s_fetch.state import state_dir
        from pop3s_fetch.sync import SyncOptions, sync_accounts
        from pop3s_fetch.ui import ProgressReporter

        selected = _load_config(g).select(list(accounts))
        output = _output(g, quiet=quiet, progress=not no_progress, json=as_json)
    if dry_run:
        _survey(selected, output, jobs, dry_run=True)
    reporter = ProgressReporter(output)
    options = SyncOptions(
        state_dir=state_dir(os.environ), wait=wait, ignore_login_delay=ignore_login_delay
    )
    pairs = [(a, functools.partial(credentials.login_secret, a)) for a in selected]
    started_at = time.time()
    started = time.monotonic()
    # What start-up created lives until exit: keep it out of the cyclic collector's passes,
    # which otherwise walk it again and again while mail streams in (a few % of a download).
    gc.freeze()
    try:
        with reporter.live():
            results = sync_accounts(pairs, options, reporter, jobs=jobs)
    except KeyboardInterrupt:
        for line in reporter.interrupted_lines():
            _echo(f"interrupted: {line}", err=True)
        _echo("run sync again to continue", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    if as_json:
        import datetime
        import json

        begun = datetime.datetime.fromtimestamp(started_at, datetime.UTC)
        document = report.json_document(results, begun, time.monotonic() - started)
        _echo(json.dumps(document, indent=2))
    else:
        output.summary(results)
    sys.exit(report.exit_code(results))


def _sync_every(
    g: _Globals,
    names: tuple[str, ...],
    interval: float,
    *,
    wait: float,
    jobs: int,
    quiet: bool,
    ignore_login_delay: bool,
) -> int:
    """Daemon mode: the loop is pop3s_fetch.daemon's; here it is only wired to the world."""
    from pop3s_fetch import connect, credentials, daemon
    from pop3s_fetch.state import state_dir
    from pop3s_fetch.sync import AccountResult, SyncOptions, sync_accounts
    from pop3s_fetch.ui import ProgressReporter, summary_line

    contexts = connect.KeptContexts()  # made once per server, not at each poll
    hints = connect.KeptHints()  # so that a poll connects before it opens the state

    def load() -> list[daemon.Job]:
        selected = _load_config(g).select(list(names))
        contexts.clear()  # a re-read configuration re-reads CA files and client certificates
        hints.clear()  # and its first poll reads the hints from the state again
        return [(a, functools.partial(credentials.login_secret, a)) for a in selected]

    first = load()  # a broken configuration at the start is fatal (78), as for one sync
    output = _output(g, quiet=quiet, progress=False)  # plain lines, as under systemd
    reporter = ProgressReporter(output)  # one per round: it keeps the round's results
    wakeup = daemon.Wakeup()
    options = SyncOptions(
        state_dir=state_dir(os.environ),
        wait=wait,
        stop_requested=wakeup.stop_requested,
        ignore_login_delay=ignore_login_delay,
        context_factory=contexts,
        server_hints=hints,
    )

    def run_round(due: Sequence[daemon.Job]) -> list[AccountResult]:
        nonlocal reporter
        reporter = ProgressReporter(output)
        results = sync_accounts(due, options, reporter, jobs=jobs)
        for result in results:
            if result.error is None:  # failures were reported as they happened
                output.info(summary_line(result))
        return results

    loop = daemon.Daemon(
        interval=interval,
        load=load,
        run_round=run_round,
        say=output.notice,
        report_error=lambda err: output.error(None, err),
        wakeup=wakeup,
    )
    try:
        with (
            credentials.secret_service_kept_open(),
            daemon.signals_handled(wakeup, output.notice_from_signal_handler),
        ):
            return loop.run(first)
    except KeyboardInterrupt:  # a second SIGTERM or SIGINT: as Ctrl-C without --every
        for line in reporter.interrupted_lines():
            _echo(f"interrupted: {line}", err=True)
        _echo("run sync again to continue", err=True)
        return int(ExitCode.INTERRUPTED)


@cli.command()
@click.argument("accounts", nargs=-1, shell_complete=_complete_accounts)
@_jobs_option("checked")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only; the exit status answers.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document (schema pop3s-fetch.check/1) on stdout.",
)
@click.pass_obj
def check(g: _Globals, accounts: tuple[str, ...], jobs: int, quiet: bool, as_json: bool) -> None:
    """Count new messages and bytes on the server, without downloading anything.

    Logs in, lists, and logs out: nothing is fetched, deleted or written. Exit status (like
    grep's): 0 when there is new mail, 1 when there is none; any other code when no new mail
    was found and some account could not be checked.
    """
    selected = _load_config(g).select(list(accounts))
    _survey(selected, _output(g, quiet=quiet, json=as_json), jobs, dry_run=False)


def _survey(selected: list[Account], output: Output, jobs: int, *, dry_run: bool) -> NoReturn:
    """check, or sync --dry-run: log in and list each account, print, exit."""
    import datetime
    import time

    from pop3s_fetch import check as check_module
    from pop3s_fetch import credentials
    from pop3s_fetch.state import state_dir

    begun = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    pairs = [(a, functools.partial(credentials.login_secret, a)) for a in selected]
    surveys = check_module.survey_accounts(pairs, state_dir(os.environ), jobs=jobs)
    for survey in surveys:
        if survey.error is not None:
            output.error(survey.account, survey.error)
    if output.json:
        import json

        document = check_module.json_document(
            surveys, begun, time.monotonic() - started, dry_run=dry_run
        )
        _echo(json.dumps(document, indent=2))
    elif dry_run:
        for survey in surveys:
            if survey.error is None:
                for line in check_module.plan_lines(survey, terminal=output.table_enabled):
                    output.info(line)
    else:
        for line in check_module.check_lines(surveys):
            output.info(line)
    if dry_run:
        sys.exit(check_module.dry_run_exit_code(surveys))
    sys.exit(check_module.check_exit_code(surveys))


@cli.command()
@click.argument("host", metavar="HOST|ACCOUNT", shell_complete=_complete_accounts)
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(),
    help="The Maildir directory or mbox file to copy into (created if missing).",
)
@click.option("--user", help="Login name on HOST (without it, ACCOUNT names a configured one).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["maildir", "mbox"]),
    default="maildir",
    show_default=True,
    help="How the copy is kept.",
)
@click.option("--port", type=click.IntRange(1, 65535), help="POP3S port [default: 995].")
@click.option(
    "--tls",
    type=click.Choice(["implicit", "starttls"]),
    help="implicit, or starttls (STLS) [default: implicit; starttls on port 110].",
)
@click.option("--ca", help='CAs to trust: "certifi", "system", or a PEM file or directory.')
@click.option("--fingerprint", help='Pin the server\'s certificate: "sha256:...".')
@click.option(
    "--password-command",
    metavar="COMMAND",
    help="A command (run without a shell) whose first line of output is the password.",
)
@click.option(
    "--verify-only", is_flag=True, help="Only check an existing backup against the server."
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="If another run holds this backup, wait this long for it (else exit 75).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print errors only (for cron).")
@click.option("--no-progress", is_flag=True, help="No progress display, even on a terminal.")
@click.pass_obj
def backup(
    g: _Globals,
    host: str,
    target: str,
    user: str | None,
    fmt: str,
    port: int | None,
    tls: str | None,
    ca: str | None,
    fingerprint: str | None,
    password_command: str | None,
    verify_only: bool,
    wait: float,
    quiet: bool,
    no_progress: bool,
) -> None:
    """Copy a mailbox into --to and verify it; never deletes from the server.

    \b
    pop3s-fetch backup pop.example.com --user alice --to ./alice-2026-12/
    pop3s-fetch backup ACCOUNT --to ./work-backup.mbox --format mbox

    An interrupted backup continues where it stopped when run again. It ends by checking that
    every message on the server is in the copy exactly once, at its size (exit 74 if not,
    with the differences listed). Exit status otherwise as for sync.
    """
    from pop3s_fetch import backup as backup_module
    from pop3s_fetch.state import state_dir
    from pop3s_fetch.ui import ProgressReporter, summary_line

    chosen: backup_module.Format = "mbox" if fmt == "mbox" else "maildir"
    if user is None:
        given = {"--port": port, "--tls": tls, "--ca": ca, "--fingerprint": fingerprint}
        given["--password-command"] = password_command
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise click.UsageError(
                f"{extra[0]} is for a server named on the command line (with --user); "
                f'account "{host}" takes it from the configuration'
            )
        account = _backup_account(g, host, target)
        plan = backup_module.for_account(account, target, chosen, cwd=Path.cwd())
    else:
        plan = backup_module.for_server(
            host,
            user,
            target,
            chosen,
            port=port,
            tls=tls,
            ca=ca,
            fingerprint=fingerprint,
            password_command=_split_words(password_command) if password_command else None,
            configured=_configured_quietly(g),
            cwd=Path.cwd(),
        )
    name = plan.account.name
    ask = _ask_password if sys.stdin.isatty() else None
    output = _output(g, quiet=quiet, progress=not no_progress)
    reporter = ProgressReporter(output)
    secret = backup_module.find_password(plan, ask)  # before the progress display takes over
    with reporter.live():
        outcome = backup_module.run(
            plan, secret, state_dir(os.environ), reporter, verify_only=verify_only, wait=wait
        )
    for note in outcome.notes:
        output.notice("info", f"{name}: {note}")
    for warning in outcome.warnings:
        output.warning(name, warning)
    if outcome.result is not None and outcome.result.error is None:
        output.info(summary_line(outcome.result))
    if isinstance(outcome.error, backup_module.NotVerified):
        output.error(name, outcome.error)
        for line in outcome.error.differences:
            _echo(f"  {line}", err=True)
        sys.exit(int(outcome.error.exit_code))
    if outcome.error is not None:
        if outcome.result is None or outcome.result.error is None:  # else reported already
            output.error(name, outcome.error)
        sys.exit(int(outcome.error.exit_code))
    assert outcome.verdict is not None
    output.info(outcome.verdict.line())


def _backup_account(g: _Globals, name: str, target: str) -> Account:
    """The configured account ``backup NAME`` names; a name that is none (a host, most
    likely, given without --user) is a usage error saying so, not 'no configuration file'."""
    from pop3s_fetch import backup as backup_module
    from pop3s_fetch import config

    path = config.find_config_path(g.config_path, os.environ)
    if path.exists():
        loaded = config.load(path)
        if name in loaded.accounts:
            return loaded.accounts[name]
        why = f"{path} defines: {', '.join(loaded.accounts) or 'no account'}"
    else:
        why = f"there is no configuration file at {path}"
    raise backup_module.BadOption(
        f"{_quoted(name)} is not a configured account: {why}",
        hint=f"to back up a server by its host name, give the login name: pop3s-fetch backup "
        f"{_quoted(name)} --user NAME --to {_quoted(target)}",
    )


def _quoted(word: str) -> str:
    """``word`` as a shell reads it back, quoted only when it must be."""
    import shlex

    return shlex.quote(word)


def _ask_password(prompt: str) -> str:
    secret: str = click.prompt(prompt, hide_input=True, err=True)
    return secret


def _configured_quietly(g: _Globals) -> list[Account]:
    """The configured accounts, or none when there is no (valid) configuration: a backup of a
    server named on the command line needs none, it only looks for a stored password."""
    try:
        return list(_load_config(g).accounts.values())
    except ConfigError:
        return []


@cli.command()
@click.pass_obj
def accounts(g: _Globals) -> None:
    """List the configured accounts."""
    from pop3s_fetch.config import format_duration

    config = _load_config(g)
    for account in config.accounts.values():
        port = "" if account.port == 995 else f":{account.port}"
        keep = "keep" if account.keep else "delete after download"
        if account.delete_after is not None:
            keep = f"delete {format_duration(account.delete_after)} after download"
        where = account.destination or _joined_words(account.mda or ())
        _echo(
            f"{account.name}: {account.username}@{account.host}{port} -> "
            f"{where} ({account.format}, {keep})"
        )


@cli.group("config")
def config_group() -> None:
    """Find and check the configuration file."""


@config_group.command("path")
@click.pass_obj
def config_path(g: _Globals) -> None:
    """Print the configuration file this run would use, and whether it exists."""
    from pop3s_fetch import config

    path = config.find_config_path(g.config_path, os.environ)
    _echo(str(path))
    if not path.exists():
        _echo(
            f"(it does not exist yet: run pop3s-fetch init, or: {config.example_command(path)})",
            err=True,
        )


@config_group.command("example")
def config_example() -> None:
    """Print the annotated example configuration, every key explained.

    \b
    Start a configuration from it:
        mkdir -p ~/.config/pop3s-fetch
        pop3s-fetch config example > ~/.config/pop3s-fetch/config.toml
    """
    from pop3s_fetch import starter

    click.echo(starter.example_text(), nl=False)


@config_group.command("check")
@click.pass_obj
def config_check(g: _Globals) -> None:
    """Validate the configuration file; report every problem at once (exit 78)."""
    loaded = _load_config(g)
    names = ", ".join(loaded.accounts) or "none"
    _echo(f"{loaded.path}: valid; accounts: {names}")


@cli.group("state")
def state_group() -> None:
    """Look after the state store (what was delivered, per account)."""


@state_group.command("prune")
@click.option("-n", "--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_obj
def state_prune(g: _Globals, dry_run: bool) -> None:
    """Remove the state of accounts that are no longer in the configuration.

    Their messages would be downloaded again if such an account came back.
    """
    from pop3s_fetch import state

    configured = set(_load_config(g).accounts)
    directory = state.state_dir(os.environ)
    stale = sorted(state.accounts_with_state(directory) - configured)
    if not stale:
        _echo("no state of unconfigured accounts", err=True)
    for account in stale:
        if dry_run:
            _echo(f"would remove the state of {account}")
            continue
        state.remove_account_state(directory, account)
        _echo(f"removed the state of {account}")


@contextlib.contextmanager
def _speaking_for(g: _Globals, account: str) -> Iterator[None]:
    """Report a failure as ``error: ACCOUNT: ...``, as sync does (a lock's names it itself)."""
    from pop3s_fetch.errors import LockedError

    try:
        yield
    except LockedError:
        raise
    except Pop3sFetchError as err:
        _fail(err, account, debug=g.debug)


@state_group.command("list")
@click.argument("account", shell_complete=_complete_accounts)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_obj
def state_list(g: _Globals, account: str, as_json: bool) -> None:
    """List what ACCOUNT's state records: UIDL, size, first delivered, and where."""
    import datetime

    from pop3s_fetch import statetools
    from pop3s_fetch.state import state_dir

    selected = _load_config(g).select([account])[0]
    with _speaking_for(g, selected.name):
        rows = statetools.list_state(selected, state_dir(os.environ))
    if as_json:
        import json

        document = {
            "schema": "pop3s-fetch.state/1",
            "account": selected.name,
            "messages": [row.as_json() for row in rows or []],
        }
        _echo(json.dumps(document, indent=2))
        return
    if rows is None:
        _echo(f"{selected.name}: no state yet (nothing was delivered)", err=True)
        return
    for row in rows:
        when = datetime.datetime.fromtimestamp(row.delivered_at).strftime("%Y-%m-%d %H:%M")
        pending = " (pending: settled by the next sync)" if row.pending else ""
        _echo(f"{row.uidl}  {row.size}  {when}  {row.where}{pending}")
    noun = "message" if len(rows) == 1 else "messages"
    _echo(f"{selected.name}: {len(rows)} {noun} recorded", err=True)


@state_group.command("forget")
@click.argument("account", shell_complete=_complete_accounts)
@click.argument("uidls", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Forget every message of ACCOUNT.")
@click.pass_obj
def state_forget(g: _Globals, account: str, uidls: tuple[str, ...], everything: bool) -> None:
    """Forget UIDLS (or --all): the next sync fetches them again.

    Only those still on the server, of course. Exit status 1 when a UIDL named was not
    recorded (the others are forgotten).
    """
    from pop3s_fetch import statetools
    from pop3s_fetch.state import state_dir

    if everything == bool(uidls):
        raise click.UsageError("name the UIDLs to forget, or --all (not both)")
    name = _load_config(g).select([account])[0].name
    with _speaking_for(g, name):
        removed, missing = statetools.forget(
            state_dir(os.environ), name, None if everything else list(uidls)
        )
    noun = "message" if removed == 1 else "messages"
    _echo(f"{name}: forgot {removed} {noun}; the next sync fetches them again if on the server")
    if missing:
        _echo(f"{name}: not in the state, so not forgotten: {' '.join(missing)}", err=True)
        sys.exit(1)


@state_group.command("seed")
@click.argument("account", shell_complete=_complete_accounts)
@click.pass_obj
def state_seed(g: _Globals, account: str) -> None:
    """Mark every message now on ACCOUNT's server as delivered, downloading nothing.

    For "start from now": the next sync fetches only mail that arrives later.
    """
    from pop3s_fetch import credentials, statetools
    from pop3s_fetch.state import state_dir

    selected = _load_config(g).select([account])[0]
    password = functools.partial(credentials.login_secret, selected)
    with _speaking_for(g, selected.name):
        added, on_server = statetools.seed(selected, password, state_dir(os.environ))
    _echo(
        f"{selected.name}: marked {added} of the {on_server} messages on the server as "
        "delivered (nothing was downloaded); the next sync fetches only what arrives later"
    )


@state_group.command("rebuild")
@click.argument("account", shell_complete=_complete_accounts)
@click.pass_obj
def state_rebuild(g: _Globals, account: str) -> None:
    """Rebuild a lost state from the copies already in ACCOUNT's destination.

    Matches each message on the server (by TOP: Message-ID, Date, From, and its size) with
    the copies in the Maildir or mbox, downloading no body, and records the one-to-one
    matches. The rest is fetched by the next sync; what is ambiguous is said.
    """
    from pop3s_fetch import credentials, destcheck, statetools
    from pop3s_fetch.state import state_dir

    selected = _load_config(g).select([account])[0]
    password = functools.partial(credentials.login_secret, selected)
    with _speaking_for(g, selected.name):
        report = statetools.rebuild(selected, password, state_dir(os.environ))
    for line in _rebuild_lines(selected.name, destcheck.where(selected).shown, report):
        _echo(line)


def _rebuild_lines(name: str, shown: str, report: statetools.Rebuilt) -> list[str]:
    def some(messages: Sequence[matching.Listed]) -> str:
        numbers = ", ".join(str(m.number) for m in messages[:10])
        return numbers + (f" and {len(messages) - 10} more" if len(messages) > 10 else "")

    lines = [
        f"{name}: {report.on_server} messages on the server, {report.copies} copies in {shown}"
        + (f", {report.known} already recorded (left as they were)" if report.known else ""),
        f"{name}: recorded {report.matched} found in {shown} (by Message-ID, Date, From and "
        "size; no body downloaded)",
    ]
    if report.to_fetch:
        refused = (
            f" ({report.no_headers} without headers: TOP refused)" if report.no_headers else ""
        )
        lines.append(
            f"{name}: {len(report.to_fetch)} not found there{refused}: the next sync fetches "
            f"them (messages {some(report.to_fetch)})"
        )
    else:
        lines.append(f"{name}: nothing left to fetch")
    if report.ambiguous:
        lines.append(
            f"{name}: {len(report.ambiguous)} ambiguous (alike to another message or copy), "
            f"not recorded, so fetched again: messages {some(report.ambiguous)}"
        )
    return lines


@cli.command("import")
@click.argument("peer", type=click.Choice(["fetchmail", "getmail", "mpop"]))
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("-n", "--dry-run", is_flag=True, help="Only print what would be written.")
@click.option("--prefix", default="", help="Put this before every imported account's name.")
@click.option(
    "--destination",
    default="~/Maildir",
    show_default=True,
    help="Maildir for accounts the peer delivered by SMTP or another way pop3s-fetch lacks.",
)
@click.option("--no-passwords", is_flag=True, help="Do not put passwords found into the keyring.")
@click.pass_obj
def import_command(
    g: _Globals,
    peer: str,
    files: tuple[Path, ...],
    dry_run: bool,
    prefix: str,
    destination: str,
    no_passwords: bool,
) -> None:
    """Import accounts and their UIDL state from fetchmail, getmail6 or mpop.

    \b
    pop3s-fetch import mpop --dry-run            show what would be written
    pop3s-fetch import getmail ~/.getmail/       every rc file in that directory
    pop3s-fetch import fetchmail ~/old/fetchmailrc

    Reads the peer's configuration (FILE..., or where the peer looks: ~/.fetchmailrc;
    ~/.config/getmail/ or ~/.getmail/; ~/.config/mpop/config or ~/.mpoprc) and the UIDLs it
    recorded as fetched, adds the accounts to the configuration, marks those UIDLs delivered,
    and puts passwords found into the OS keyring. The first sync then fetches only what the
    peer had not. Every option it cannot translate is listed. A file that is missing or
    wrong, or an account name already configured, is exit 78 and nothing is written.
    """
    from pop3s_fetch import config
    from pop3s_fetch.migrate import importer

    path = config.find_config_path(g.config_path, os.environ)
    plan = importer.plan(peer, files, path, os.environ, prefix=prefix, destination=destination)
    done = None if dry_run else importer.apply(plan, os.environ, store_passwords=not no_passwords)
    for line in importer.describe(plan, done, store_passwords=not no_passwords):
        _echo(line)


@cli.command()
@click.pass_obj
def init(g: _Globals) -> None:
    """Set up an account by asking on the terminal (a new file, or one more account).

    It tries the server's TLS as sync would and, when the certificate is refused, offers to
    trust a CA file or to pin the certificate. Other accounts and comments are left alone;
    the password goes into the OS keyring.
    """
    from pop3s_fetch import config, credentials, starter

    path = config.find_config_path(g.config_path, os.environ)
    if not sys.stdin.isatty():
        raise ConfigError(
            "init asks questions and needs a terminal",
            hint=f"start from the annotated example: {config.example_command(path)}",
        )
    existing = path.read_text(encoding="utf-8") if path.exists() else None
    taken = set(config.load(path).accounts) if existing is not None else set()
    if existing is not None:
        _echo(f"adding an account to {path} (accounts now: {', '.join(sorted(taken))})", err=True)
    name = click.prompt("Account name (letters, digits, . _ -)", default="mail", err=True)
    while name in taken:
        name = click.prompt(f"{name} is taken; account name", err=True)
    host = click.prompt("POP3S server (host name)", err=True)
    port = click.prompt("Port", default=995, type=click.IntRange(1, 65535), err=True)
    answers = starter.Answers(
        name=name,
        host=host,
        port=port,
        username=click.prompt("User name", err=True),
        destination=starter.resolve_answer_path(
            click.prompt(
                "Deliver to (Maildir directory or mbox file; ~/ for your home)",
                default="~/Maildir",
                err=True,
            ),
            Path.cwd(),
        ),
        format=click.prompt(
            "Format", default="maildir", type=click.Choice(["maildir", "mbox"]), err=True
        ),
        keep=click.confirm("Keep messages on the server after download?", default=True, err=True),
    )
    answers = _settle_trust(answers, path)
    text = starter.render(answers) if existing is None else starter.with_account(existing, answers)
    config.parse(text, path)  # never write a file that would not load
    if existing is None:
        starter.write_new(path, text)
        _echo(f"wrote {path}", err=True)
    else:
        starter.replace(path, text)
        _echo(f"added account {answers.name} to {path}", err=True)
    if click.confirm("Store the password in the OS keyring now?", default=True, err=True):
        credentials.require_keyring(answers.name, retry=f"pop3s-fetch password set {answers.name}")
        credentials.set_password(answers.name, _read_password(answers.name))
        _echo(f'password for account "{answers.name}" stored in the keyring', err=True)
        _echo(f"next: pop3s-fetch sync {answers.name}", err=True)
    else:
        _echo(
            f"next: pop3s-fetch password set {answers.name}, then pop3s-fetch sync {answers.name}",
            err=True,
        )


def _settle_trust(answers: Starter, path: Path) -> Starter:
    """Try the server's TLS as sync will; on a refused certificate, offer a CA file or a pin.

    The check sends no credential. A server that cannot be reached is reported, and the
    account is written anyway (it may be reachable only from elsewhere).
    """
    import dataclasses

    from pop3s_fetch import config, starter, tls
    from pop3s_fetch import serverinfo as info_module
    from pop3s_fetch.errors import TLSError

    while True:
        account = config.parse(starter.render(answers), path).accounts[answers.name]
        try:
            info = info_module.gather(account)
        except TLSError as err:
            failure = err.message
            # A refusal describes the certificate and the choice below is its fix; a CA file
            # that would not load (DER, a key) says nothing of the server: show its fix.
            fix = "" if "sha256:" in failure or not err.hint else f" ({err.hint})"
            _echo(f"the TLS check failed: {failure}{fix}", err=True)
        except Pop3sFetchError as err:
            _echo(f"could not check the server now ({err.message}); writing it anyway", err=True)
            return answers
        else:
            _echo(
                f"TLS: {info.tls_version}, certificate {info.certificate.subject} "
                f"({'pinned' if info.pinned else 'verified'})",
                err=True,
            )
            return answers
        try:
            summary = tls.describe(
                tls.fetch_peer_certificate(
                    account.host,
                    account.port,
                    account.timeout,
                    starttls=account.tls.mode == "starttls",
                    proxy=account.proxy,
                )
            )
        except Pop3sFetchError:
            return answers
        if summary.sha256 not in failure:  # else said just above, in the refusal
            _echo(
                f"its certificate: {summary.subject}; issuer {summary.issuer}; {summary.sha256}",
                err=True,
            )
        choice = click.prompt(
            "Trust it by a CA file (c), pin this certificate (p), or write it as is (w)?",
            type=click.Choice(["c", "p", "w"]),
            err=True,
        )
        if choice == "w":
            return answers
        if choice == "p":
            _echo("pin it only if the server's administrator confirms this fingerprint", err=True)
            answers = dataclasses.replace(answers, fingerprint=summary.sha256, ca=None)
        else:
            ca = click.prompt("CA file (PEM)", err=True)
            answers = dataclasses.replace(
                answers, ca=starter.resolve_answer_path(ca, Path.cwd()), fingerprint=None
            )


@cli.command()
@click.argument("accounts", nargs=-1, shell_complete=_complete_accounts)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Network timeout per check (default: each account's timeout).",
)
@click.pass_obj
def doctor(g: _Globals, accounts: tuple[str, ...], timeout: float | None) -> None:
    """Check the set-up step by step, with a verdict and a fix for each.

    In order: configuration, state directory, keyring, then per account the password, DNS,
    TCP, TLS and certificate, login and capabilities. Nothing is downloaded or deleted.
    Exit status: 0 when nothing failed, else the code of the first failure.
    """
    from pop3s_fetch import config
    from pop3s_fetch import doctor as checks_module

    path = config.find_config_path(g.config_path, os.environ)
    checks = []
    for check in checks_module.run_checks(path, os.environ, accounts, timeout=timeout):
        checks.append(check)
        for line in checks_module.render(check):
            _echo(line)
    _echo(checks_module.summary(checks))
    sys.exit(checks_module.doctor_exit_code(checks))


@cli.command("systemd")
@click.argument("accounts", nargs=-1, shell_complete=_complete_accounts)
@click.option("--install", is_flag=True, help="Write the units into ~/.config/systemd/user/.")
@click.option("--force", is_flag=True, help="With --install, replace units that differ.")
@click.option(
    "--interval",
    default="15min",
    show_default=True,
    help="How often the timer runs sync (systemd time span, at least 1min).",
)
@click.pass_obj
def systemd_units(
    g: _Globals, accounts: tuple[str, ...], install: bool, force: bool, interval: str
) -> None:
    """Print (or --install) a systemd user service and timer that run sync quietly."""
    from pop3s_fetch import systemd

    names = [a.name for a in _load_config(g).select(list(accounts))] if accounts else []
    executable = systemd.default_executable(sys.argv[0])
    if executable is None:
        raise ConfigError(
            "cannot tell where the pop3s-fetch program is installed",
            hint="run the installed pop3s-fetch command (not python -m) to generate units",
        )
    explicit = g.config_path or os.environ.get("POP3S_FETCH_CONFIG")
    try:
        units = systemd.units(
            names,
            executable=executable,
            interval=interval,
            config_path=Path(explicit).resolve() if explicit else None,
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--interval") from None
    if not install:
        for name, text in units.items():
            _echo(f"# {name}\n{text}")
        return
    paths = systemd.install(units, systemd.user_unit_dir(os.environ), force=force)
    _echo(systemd.after_install_message(paths))


@cli.command()
@click.argument("account", shell_complete=_complete_accounts)
@click.option("--login", is_flag=True, help="Also log in, to check the credentials.")
@click.pass_obj
def serverinfo(g: _Globals, account: str, login: bool) -> None:
    """Show what ACCOUNT's server offers: TLS, certificate (to pin), capabilities.

    Works before any password is stored; with --login it also authenticates (and marks
    nothing for deletion).
    """
    from pop3s_fetch import credentials
    from pop3s_fetch import serverinfo as info_module

    selected = _load_config(g).select([account])[0]
    secret = functools.partial(credentials.login_secret, selected) if login else None
    with _speaking_for(g, selected.name):
        info = info_module.gather(selected, secret)
    for line in info_module.render(info):
        _echo(line)


@cli.group("oauth2")
def oauth2_group() -> None:
    """Log in to accounts that use OAuth2 (Microsoft 365, Gmail)."""


@oauth2_group.command("login")
@click.argument("account", shell_complete=_complete_accounts)
@click.pass_obj
def oauth2_login(g: _Globals, account: str) -> None:
    """Authorize ACCOUNT with the device flow; keep the refresh token in the keyring.

    Prints a web address and a code: open it on any device (this one needs no browser),
    sign in, enter the code. Works over ssh and on headless machines.
    """
    from pop3s_fetch import credentials, oauth2, tls
    from pop3s_fetch.config import TlsSettings

    selected = _load_config(g).select([account])[0]
    if selected.oauth2 is None:
        raise ConfigError(
            f'account "{selected.name}" has no OAuth2 settings',
            hint=f"add an [accounts.{selected.name}.oauth2] table; "
            "pop3s-fetch config example shows one",
        )

    def show(uri: str, code: str, expires_in: int) -> None:
        _echo(
            f"To let pop3s-fetch read {selected.name}'s mail, open {uri} and enter the code "
            f"{code} (within {max(1, expires_in // 60)} minutes). Waiting...",
            err=True,
        )

    tokens = oauth2.device_login(
        selected.oauth2,
        show,
        account_name=selected.name,
        context=tls.client_context(TlsSettings()),
    )
    if tokens.refresh_token is None:
        raise CredentialError(
            f'the provider gave account "{selected.name}" no refresh token',
            hint='add "offline_access" to scopes (Microsoft), or check the OAuth client',
        )
    credentials.set_refresh_token(selected.name, tokens.refresh_token)
    _echo(f'account "{selected.name}" is authorized; its refresh token is in the keyring', err=True)


@cli.group()
def password() -> None:
    """Store, check or delete an account's password in the OS keyring."""


@password.command("set")
@click.argument("account", shell_complete=_complete_accounts)
@click.pass_obj
def password_set(g: _Globals, account: str) -> None:
    """Store ACCOUNT's password in the OS keyring.

    On a terminal it is asked for twice without echo; otherwise the first line of standard
    input is read (so it never has to appear in a command line or a shell history).
    """
    from pop3s_fetch import credentials

    name = _load_config(g).select([account])[0].name
    # Before asking: a typed password must have a home. At a terminal a missing session bus
    # is fixed in that shell; from a pipe (perhaps a cron job) the crontab wording stays.
    retry = f"pop3s-fetch password set {name}" if sys.stdin.isatty() else None
    credentials.require_keyring(name, retry=retry)
    secret = _read_password(name)
    credentials.set_password(name, secret)
    _echo(f'password for account "{name}" stored in the keyring', err=True)


def _read_password(name: str) -> str:
    if sys.stdin.isatty():
        secret: str = click.prompt(
            f'Password for account "{name}"',
            hide_input=True,
            confirmation_prompt=True,
            err=True,
        )
        return secret
    line = sys.stdin.readline()
    secret = line.rstrip("\r\n")
    if not secret:
        raise CredentialError(
            f'no password given for account "{name}" on standard input',
            hint=f"pipe it in, e.g.: pass show mail | pop3s-fetch password set {name}",
        )
    return secret


@password.command("delete")
@click.argument("account", shell_complete=_complete_accounts)
@click.pass_obj
def password_delete(g: _Globals, account: str) -> None:
    """Remove ACCOUNT's password from the OS keyring."""
    from pop3s_fetch import credentials

    del g  # the account need not be configured any more to clean up after it
    credentials.delete_password(account)
    _echo(f'password for account "{account}" deleted from the keyring', err=True)


@password.command("check")
@click.argument("account", shell_complete=_complete_accounts)
@click.pass_obj
def password_check(g: _Globals, account: str) -> None:
    """Check that a password for ACCOUNT is stored (it is never printed)."""
    from pop3s_fetch import credentials

    name = _load_config(g).select([account])[0].name
    credentials.get_password(name)
    _echo(f'a password for account "{name}" is stored ({credentials.backend_description()})')


@cli.command()
@click.option(
    "-d",
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pop3s-fetch-demo"),
    show_default=True,
    help="Where the demo writes its Maildir, mbox and state.",
)
@click.pass_obj
def demo(g: _Globals, directory: Path) -> None:
    """Run a real sync against a built-in POP3S server, with no setup.

    Starts a POP3S server on 127.0.0.1 with a throwaway CA and sample messages (a 64 KiB
    line, 8-bit text, lines starting with "From " and "."), syncs them into a Maildir and an
    mbox under DIRECTORY, syncs again to show nothing is fetched twice, and reports.
    """
    from pop3s_fetch.demo import run as demo_module
    from pop3s_fetch.ui import ProgressReporter

    output = _output(g)
    reporter = ProgressReporter(output)
    with reporter.live():
        report = demo_module.run(directory.resolve(), reporter, output.info, output.summary)
    for line in report.lines:
        output.info(line)
    if not report.ok:
        sys.exit(int(ExitCode.SOFTWARE))


#: Options of the whole program, accepted after the command too (as systemctl and kubectl do).
_GLOBAL_FLAGS = frozenset({"-v", "--verbose", "--debug"})
_GLOBAL_WITH_VALUE = frozenset({"-c", "--config"})
#: Options of some commands, accepted before the command too ("pop3s-fetch --json sync").
_COMMAND_FLAGS = frozenset({"-q", "--quiet", "--json"})


def hoist_options(args: list[str]) -> list[str]:
    """Put global options before the command and command flags after it, wherever typed.

    click reads an option only at its own level; people type ``sync -v`` and ``--json sync``
    alike. Stops at ``--``. A combined count such as ``-vv`` is a global flag too.
    """
    front: list[str] = []
    command: list[str] = []
    back: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            back.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_FLAGS or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            front.append(arg)
        elif name in _GLOBAL_WITH_VALUE:
            front.append(arg)
            if "=" not in arg and index + 1 < len(args):
                index += 1
                front.append(args[index])
        elif arg in _COMMAND_FLAGS and not command:
            back.append(arg)
        elif not command and not arg.startswith("-"):
            command.append(arg)
            # A group's subcommand ("config check", "password set") continues the command.
            while index + 1 < len(args) and args[index + 1] in _SUBCOMMANDS.get(arg, ()):
                index += 1
                arg = args[index]
                command.append(arg)
        else:
            (back if command else front).append(arg)
        index += 1
    return [*front, *command, *back]


def main() -> None:
    """Console-script entry point: map every outcome to one line and a sysexits code."""
    args = hoist_options(sys.argv[1:])
    debug = "--debug" in args
    try:
        cli.main(args=args, standalone_mode=False, prog_name="pop3s-fetch")
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        _echo("aborted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as err:
        err.show()
        sys.exit(int(ExitCode.USAGE))
    except Pop3sFetchError as err:
        _fail(err, debug=debug)
    except KeyboardInterrupt:
        _echo("interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as err:  # a bug: say so plainly, traceback on request
        _echo(
            f"internal error (a bug in pop3s-fetch): {type(err).__name__}: {err} "
            "(run again with --debug for the traceback, and please report it)",
            err=True,
        )
        if debug:
            from pop3s_fetch.ui import write_traceback

            write_traceback(err, sys.stderr)
        sys.exit(int(ExitCode.SOFTWARE))


#: The groups' subcommands, read once from click, for :func:`hoist_options`.
_SUBCOMMANDS: dict[str, frozenset[str]] = {
    name: frozenset(command.commands)
    for name, command in cli.commands.items()
    if isinstance(command, click.Group)
}
