"""The command line: parse, call, report. No mail logic lives here.

The only module that imports click. Heavy modules (rich, keyring, ssl, sqlite3) are imported
inside the commands that need them, so ``--help`` and ``--version`` start fast.
Every expected failure is a :class:`~pop3s_fetch.errors.Pop3sFetchError`, printed as one line
with its exit code; anything else is a bug (exit 70), with a traceback only under ``--debug``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from pop3s_fetch import __version__
from pop3s_fetch.errors import ConfigError, CredentialError, ExitCode, Pop3sFetchError

if TYPE_CHECKING:
    from pop3s_fetch.config import Config
    from pop3s_fetch.ui import Output

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def _echo(text: str, *, err: bool = False) -> None:
    """Print a line that may quote a server or a certificate, with its controls escaped."""
    from pop3s_fetch.printable import printable

    click.echo(printable(text, newlines=True), err=err)


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
    return [name for name in loaded.accounts if name.startswith(incomplete)]


def _output(
    g: _Globals, *, quiet: bool = False, progress: bool = True, json: bool = False
) -> Output:
    from pop3s_fetch.ui import Output

    return Output(quiet=quiet, progress=progress, debug=g.debug, json=json)


def _setup_logging(g: _Globals) -> None:
    if g.debug or g.verbose:
        import logging  # only when asked for: it costs start-up time

        from pop3s_fetch.ui import PrintableLogFormatter, log_format

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PrintableLogFormatter(log_format(os.environ)))
        logging.basicConfig(level=logging.DEBUG if g.debug else logging.INFO, handlers=[handler])


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
    Then:         pop3s-fetch password set ACCOUNT && pop3s-fetch sync
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
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=8,
    show_default=True,
    help="Accounts synced at the same time.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print errors only (for cron).")
@click.option("--no-progress", is_flag=True, help="No progress display, even on a terminal.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document with every account's results on stdout.",
)
@click.pass_obj
def sync(
    g: _Globals,
    accounts: tuple[str, ...],
    wait: float,
    jobs: int,
    quiet: bool,
    no_progress: bool,
    as_json: bool,
    every: float | None,
) -> None:
    """Download new mail for every account, or only the ACCOUNTS named.

    Each message is written to the account's Maildir or mbox and recorded, so it is never
    downloaded twice; with keep = false it is deleted from the server only after that.
    Exit status 0 also when there was no new mail; 1 when some accounts failed and others
    did not. With --every it runs until stopped, then exits 0.
    """
    if every is not None:
        if as_json:
            raise click.UsageError("--json cannot be combined with --every (one document per run)")
        sys.exit(_sync_every(g, accounts, every, wait=wait, jobs=jobs, quiet=quiet))
    import gc
    import time

    from pop3s_fetch import credentials, report
    from pop3s_fetch.state import state_dir
    from pop3s_fetch.sync import SyncOptions, sync_accounts
    from pop3s_fetch.ui import ProgressReporter

    selected = _load_config(g).select(list(accounts))
    output = _output(g, quiet=quiet, progress=not no_progress, json=as_json)
    reporter = ProgressReporter(output)
    options = SyncOptions(state_dir=state_dir(os.environ), wait=wait)
    pairs = [(a, functools.partial(credentials.login_secret, a)) for a in selected]
    started_at = time.time()
    started = time.monotonic()
    # What start-up created lives until exit: keep it out of the cyclic collector's passes,
    # which otherwise walk it again and again while mail streams in (a few % of a download).
    gc.freeze()
    with reporter.live():
        results = sync_accounts(pairs, options, reporter, jobs=jobs)
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
    g: _Globals, names: tuple[str, ...], interval: float, *, wait: float, jobs: int, quiet: bool
) -> int:
    """Daemon mode: the loop is pop3s_fetch.daemon's; here it is only wired to the world."""
    from pop3s_fetch import credentials, daemon
    from pop3s_fetch.state import state_dir
    from pop3s_fetch.sync import AccountResult, SyncOptions, sync_accounts
    from pop3s_fetch.ui import ProgressReporter, summary_line

    def load() -> list[daemon.Job]:
        selected = _load_config(g).select(list(names))
        return [(a, functools.partial(credentials.login_secret, a)) for a in selected]

    first = load()  # a broken configuration at the start is fatal (78), as for one sync
    output = _output(g, quiet=quiet, progress=False)  # plain lines, as under systemd
    reporter = ProgressReporter(output)
    wakeup = daemon.Wakeup()
    options = SyncOptions(
        state_dir=state_dir(os.environ), wait=wait, stop_requested=wakeup.stop_requested
    )

    def run_round(due: Sequence[daemon.Job]) -> list[AccountResult]:
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
    with daemon.signals_handled(wakeup, output.notice_from_signal_handler):
        return loop.run(first)


@cli.command()
@click.pass_obj
def accounts(g: _Globals) -> None:
    """List the configured accounts."""
    config = _load_config(g)
    for account in config.accounts.values():
        port = "" if account.port == 995 else f":{account.port}"
        keep = "keep" if account.keep else "delete after download"
        _echo(
            f"{account.name}: {account.username}@{account.host}{port} -> "
            f"{account.destination} ({account.format}, {keep})"
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
            f"(it does not exist yet: run pop3s-fetch init, or copy config.example.toml to {path})",
            err=True,
        )


@config_group.command("check")
@click.pass_obj
def config_check(g: _Globals) -> None:
    """Validate the configuration file; report every problem at once (exit 78)."""
    loaded = _load_config(g)
    names = ", ".join(loaded.accounts) or "none"
    _echo(f"{loaded.path}: valid; accounts: {names}")


@cli.command()
@click.pass_obj
def init(g: _Globals) -> None:
    """Write a first configuration file for one account, asking on the terminal.

    It never overwrites an existing file; the password goes into the OS keyring.
    """
    from pop3s_fetch import config, credentials, starter

    path = config.find_config_path(g.config_path, os.environ)
    if not sys.stdin.isatty():
        raise ConfigError(
            "init asks questions and needs a terminal",
            hint=f"copy config.example.toml to {path} and edit it instead",
        )
    if path.exists():
        starter.write_new(path, "")  # raises the "already exists" error
    answers = starter.Answers(
        name=click.prompt("Account name (letters, digits, . _ -)", default="mail", err=True),
        host=click.prompt("POP3S server (host name)", err=True),
        port=click.prompt("Port", default=995, type=click.IntRange(1, 65535), err=True),
        username=click.prompt("User name", err=True),
        destination=click.prompt(
            "Deliver to (Maildir directory or mbox file)", default="~/Maildir", err=True
        ),
        format=click.prompt(
            "Format", default="maildir", type=click.Choice(["maildir", "mbox"]), err=True
        ),
        keep=click.confirm("Keep messages on the server after download?", default=True, err=True),
    )
    text = starter.render(answers)
    config.parse(text, path)  # never write a file that would not load
    starter.write_new(path, text)
    _echo(f"wrote {path}", err=True)
    if click.confirm("Store the password in the OS keyring now?", default=True, err=True):
        credentials.set_password(answers.name, _read_password(answers.name))
        _echo(f'password for account "{answers.name}" stored in the keyring', err=True)
    _echo(f"next: pop3s-fetch sync {answers.name}", err=True)


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
    for line in info_module.render(info_module.gather(selected, secret)):
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
            hint=f"add an [accounts.{selected.name}.oauth2] table; see config.example.toml",
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


def main() -> None:
    """Console-script entry point: map every outcome to one line and a sysexits code."""
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False, prog_name="pop3s-fetch")
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
