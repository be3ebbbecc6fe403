"""``pop3s-fetch doctor``: check, in the order a sync depends on them, everything a sync needs.

Each check yields one :class:`Check` with a verdict, what was found and, when something is
wrong, the fix. A check that depends on one that failed is reported as ``skip`` with the reason,
so the first ``fail`` is the one to fix first. Checks are yielded as they finish, because the
network ones can take up to an account's timeout each.

The checks read and never write: the state directory is not created, no message is downloaded
or deleted (the login check lists the maildrop and ends with QUIT having marked nothing).
No password is ever put in a Check: the password check only says whether one is stored.

Must not know: click or rich (the CLI prints the checks, :func:`render` gives plain lines),
keyring (``credentials`` owns it), poplib (``pop3`` owns it), or how mail is delivered.
"""

from __future__ import annotations

import datetime
import os
import shlex
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pop3s_fetch import config, connect, credentials, pop3, socks, state, tls
from pop3s_fetch.config import Account, Config
from pop3s_fetch.errors import (
    AuthError,
    ConfigError,
    ExitCode,
    Pop3sFetchError,
)

Status = Literal["ok", "warn", "fail", "skip"]

#: A certificate expiring sooner than this is worth a warning: renewals are often automated
#: with a month's margin, so two weeks left means the automation has failed.
EXPIRY_WARNING_DAYS = 14

#: Backends keyring falls back to when it finds nothing; they can never hold a password.
#: Matched on credentials.backend_description(), because keyring belongs to ``credentials``.
_UNUSABLE_BACKEND_PREFIXES = ("fail Keyring", "null Keyring", "unavailable (")
_EMPTY_CHAINER_SUFFIX = ": no backends"

# Checks per account, in order; each names the checks it needs to have passed.
PASSWORD = "password"  # noqa: S105  # the name of a check, not a secret
DNS = "DNS"
TCP = "TCP connect"
TLS = "TLS"
LOGIN = "login"
CAPABILITIES = "capabilities"
KEYRING = "keyring"
#: Secret sources that need no keyring, so their password check does not wait for one.
_KEYRINGLESS = ("password_command", "password_credential")
_NEEDS: dict[str, tuple[str, ...]] = {
    PASSWORD: (KEYRING,),
    DNS: (),
    TCP: (DNS,),
    TLS: (TCP,),
    LOGIN: (PASSWORD, TLS),
    CAPABILITIES: (TLS,),
}


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict. ``exit_code`` is set on ``fail``: the code a sync would exit with."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    exit_code: ExitCode | None = None


def run_checks(
    config_path: Path,
    environ: Mapping[str, str],
    accounts: Sequence[str] = (),
    *,
    timeout: float | None = None,
) -> Iterator[Check]:
    """Check the configuration, state directory, keyring, then each account (all if none named).

    ``timeout`` (seconds) replaces each account's own timeout for the network checks.
    """
    config_check, selected, configured = _check_config(config_path, accounts)
    yield config_check
    directory = state.state_dir(environ)
    yield _check_state_dir(directory)
    stale = _check_stale_state(directory, configured) if configured is not None else None
    if stale is not None:
        yield stale
    if selected is not None and all(a.secret_source in _KEYRINGLESS for a in selected):
        keyring_check = _skip(KEYRING, "not needed: every account reads its password elsewhere")
    else:
        keyring_check = _check_keyring()
    yield keyring_check
    if selected is None:
        yield _skip("accounts", "the configuration could not be loaded")
        return
    keyring_ok = keyring_check.status in ("ok", "warn")
    for account in selected:
        probe = _AccountProbe(account, config_path, account.timeout if timeout is None else timeout)
        try:
            yield from probe.run(keyring_ok)
        finally:
            probe.close()


def doctor_exit_code(checks: Iterable[Check]) -> int:
    """0 if nothing failed, else the exit code of the first failure (as ``sync`` would exit)."""
    for check in checks:
        if check.status == "fail":
            return int(check.exit_code or ExitCode.SOFTWARE)
    return int(ExitCode.OK)


_LABELS: dict[Status, str] = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}
_INDENT = " " * 6


def render(check: Check) -> list[str]:
    """Plain text lines for one check: ``FAIL  name: detail``, then indented detail and fix."""
    first, *rest = check.detail.splitlines() or [""]
    lines = [f"{_LABELS[check.status]:<4}  {check.name}: {first}"]
    lines += [f"{_INDENT}{line}" for line in rest]
    if check.fix:
        lines.append(f"{_INDENT}fix: {check.fix}")
    return lines


def summary(checks: Sequence[Check]) -> str:
    """One closing line: all good, or how many failed and which to fix first."""
    failed = [c for c in checks if c.status == "fail"]
    warned = sum(1 for c in checks if c.status == "warn")
    warnings = f", {warned} warning{'s' if warned != 1 else ''}" if warned else ""
    if not failed:
        return f"no problems found{warnings}"
    count = f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed"
    return (
        f"{count}{warnings}; fix the first one first: {failed[0].name} "
        f"(exit {doctor_exit_code(failed)})"
    )


# --- configuration, state directory, keyring -------------------------------------------------


def _check_config(
    path: Path, names: Sequence[str]
) -> tuple[Check, list[Account] | None, set[str] | None]:
    name = "config"
    try:
        loaded = config.load(path)
        selected = loaded.select(names)
    except ConfigError as err:
        detail = "\n".join([err.message, *err.problems])
        fix = err.hint or (
            "correct each key listed; pop3s-fetch config example documents every key"
            if err.problems
            else None
        )
        return _fail(name, err, detail=detail, fix=fix), None, None
    return _ok(name, _describe_config(loaded, selected)), selected, set(loaded.accounts)


def _check_stale_state(directory: Path, configured: set[str]) -> Check | None:
    """State of accounts no longer configured only grows stale (34 in one afternoon, seen).

    Shown only when there is some: a line on every run saying all is well is noise.
    """
    stale = sorted(state.accounts_with_state(directory) - configured)
    if not stale:
        return None
    return Check(
        STALE_STATE,
        "warn",
        f"state of {len(stale)} account(s) no longer in the configuration: {', '.join(stale)}",
        "pop3s-fetch state prune (their messages would be downloaded again if you add them back)",
    )


def _describe_config(loaded: Config, selected: Sequence[Account]) -> str:
    count = len(loaded.accounts)
    text = (
        f"{loaded.path}: {count} account{'s' if count != 1 else ''} ({', '.join(loaded.accounts)})"
    )
    if len(selected) != count:
        text += f"; checking {', '.join(a.name for a in selected)}"
    return text


STALE_STATE = "old state"


def _check_state_dir(directory: Path) -> Check:
    name = "state directory"
    try:
        info = directory.stat()
    except FileNotFoundError:
        return _check_state_dir_creatable(directory)
    except OSError as err:
        return _state_fail(name, f"cannot inspect {directory}: {err.strerror}", None)
    if not stat.S_ISDIR(info.st_mode):
        return _state_fail(
            name,
            f"{directory} is not a directory",
            f"move it aside; pop3s-fetch creates {directory} itself",
        )
    if info.st_uid != os.geteuid():
        return _state_fail(
            name,
            f"{directory} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()})",
            f"run pop3s-fetch as its owner, or: chown -R {os.geteuid()} {_sh(directory)}",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        return _state_fail(name, f"{directory} is not writable", f"chmod 700 {_sh(directory)}")
    return _check_state_permissions(name, directory, info.st_mode)


def _check_state_dir_creatable(directory: Path) -> Check:
    name = "state directory"
    ancestor = next(p for p in directory.parents if p.exists() or p == p.parent)
    if ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK):
        return _ok(name, f"{directory} does not exist yet; the first sync creates it (mode 0700)")
    return _state_fail(
        name,
        f"{directory} does not exist and cannot be created: {ancestor} is not a writable directory",
        f"mkdir -p -m 700 {_sh(directory)} (as a user who may), or set XDG_STATE_HOME "
        "to a directory you can write",
    )


def _check_state_permissions(name: str, directory: Path, mode: int) -> Check:
    """Fail where sync refuses (others may write), warn where it works (others may read)."""
    if mode & 0o022:
        return Check(
            name,
            "fail",
            f"{directory} is writable by other users (mode {stat.S_IMODE(mode):04o}), so sync "
            "refuses to trust its records",
            f"check that nobody else changed its files, then: chmod 700 {_sh(directory)}",
            ExitCode.NOPERM,
        )
    problems: list[str] = []
    fixes: list[str] = []
    if mode & 0o077:
        problems.append(
            f"{directory} is accessible to other users (mode {stat.S_IMODE(mode):04o}, "
            f"expected {state.STATE_DIR_MODE:04o})"
        )
        fixes.append(f"chmod {state.STATE_DIR_MODE:o} {_sh(directory)}")
    loose = sorted(p for p in directory.iterdir() if p.is_file() and p.stat().st_mode & 0o077)
    if loose:
        names = ", ".join(p.name for p in loose)
        problems.append(
            f"state files readable by other users (expected mode "
            f"{state.STATE_FILE_MODE:04o}): {names}"
        )
        fixes.append(f"chmod {state.STATE_FILE_MODE:o} {' '.join(_sh(p) for p in loose)}")
    if problems:
        return Check(name, "warn", "\n".join(problems), " && ".join(fixes))
    files = sum(1 for p in directory.iterdir() if p.is_file())
    return _ok(name, f"{directory}: private (mode 0700), {files} state file(s), all mode 0600")


def _state_fail(name: str, detail: str, fix: str | None) -> Check:
    return Check(name, "fail", detail, fix, ExitCode.IOERR)


def _check_keyring() -> Check:
    description = credentials.backend_description()
    if description.startswith(_UNUSABLE_BACKEND_PREFIXES) or description.endswith(
        _EMPTY_CHAINER_SUFFIX
    ):
        fix = (
            "run pop3s-fetch inside your desktop session, start a keyring daemon for the job "
            "(gnome-keyring-daemon --unlock inside dbus-run-session), or choose a backend "
            "with PYTHON_KEYRING_BACKEND (`keyring --list-backends` lists them)"
        )
        advice = credentials.unseen_session_bus(os.environ)
        return Check(
            KEYRING,
            "fail",
            f"no usable keyring backend: keyring chose {description}, which cannot store "
            "passwords (no Secret Service such as gnome-keyring in this D-Bus session?)",
            f"{advice}; or else: {fix}" if advice else fix,
            ExitCode.NOPERM,
        )
    return _ok(KEYRING, description)


# --- one account ----------------------------------------------------------------------------


@dataclass
class _ProbeFindings:
    """What one POP3 session told us; errors are kept to become verdicts."""

    capabilities: dict[str, list[str]] | None = None
    error: Pop3sFetchError | None = None  # connect, greeting or CAPA failed
    login_error: Pop3sFetchError | None = None
    listing: list[pop3.RemoteMessage] | None = None
    listing_error: Pop3sFetchError | None = None
    logged_in: bool = False


@dataclass
class _AccountProbe:
    """The network checks of one account, in order, sharing what earlier ones found."""

    account: Account
    config_path: Path
    timeout: float
    password: str | None = field(default=None, repr=False)
    oauth_ready: bool = False
    live: pop3.Pop3Client | None = None
    session: _ProbeFindings | None = None

    def run(self, keyring_ok: bool) -> Iterator[Check]:
        passed = {KEYRING} if keyring_ok else set()
        steps: dict[str, Callable[[], Check]] = {
            PASSWORD: self.check_password,
            DNS: self.check_dns,
            TCP: self.check_tcp,
            TLS: self.check_tls,
            LOGIN: self.check_login,
            CAPABILITIES: self.check_capabilities,
        }
        for step, check in steps.items():
            needs = _NEEDS[step]
            if step == PASSWORD and self.account.secret_source in _KEYRINGLESS:
                needs = ()
            missing = [need for need in needs if need not in passed]
            if missing:
                result = _skip(self.name(step), f"skipped: the {missing[0]} check did not pass")
            else:
                result = check()
            if result.status in ("ok", "warn"):
                passed.add(step)
            yield result

    def name(self, step: str) -> str:
        return f"{self.account.name}: {step}"

    @property
    def where(self) -> str:
        return f"{self.account.host}:{self.account.port}"

    def check_password(self) -> Check:
        name = self.name(PASSWORD)
        source = self.account.secret_source
        try:
            if source == "oauth2":
                credentials.get_refresh_token(self.account.name)
                self.oauth_ready = True
                return _ok(name, "an OAuth2 refresh token is stored in the keyring (not shown)")
            self.password = credentials.get_secret(self.account)
        except Pop3sFetchError as err:
            return _fail(name, err)
        where = {
            "password_command": "password_command printed a password",
            "password_credential": (
                f"the systemd credential {self.account.password_credential} holds a password"
            ),
        }.get(source, "a password is stored in the keyring")
        return _ok(name, f"{where} (not shown)")

    def check_dns(self) -> Check:
        host = self.account.host
        proxy = self.account.proxy
        if proxy is not None:  # a local lookup is just what a proxy (Tor) is there to avoid
            return _ok(
                self.name(DNS),
                f"{host} is resolved by the proxy {proxy}, not looked up here",
            )
        try:
            infos = socket.getaddrinfo(host, self.account.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            reason = err.strerror if isinstance(err, socket.gaierror) else str(err)
            return Check(
                self.name(DNS),
                "fail",
                f"cannot resolve host name {host}: {reason}",
                f"check host in {self.config_path}, and the network and DNS "
                f"(try: getent hosts {shlex.quote(host)})",
                ExitCode.TEMPFAIL,
            )
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return _ok(self.name(DNS), f"{host} resolves to {', '.join(addresses)}")

    def check_tcp(self) -> Check:
        started = time.monotonic()
        proxy = self.account.proxy
        if proxy is not None:
            try:
                socks.open_connection(
                    proxy, self.account.host, self.account.port, self.timeout
                ).close()
            except Pop3sFetchError as err:
                return _fail(self.name(TCP), err)
            elapsed_ms = (time.monotonic() - started) * 1000
            return _ok(
                self.name(TCP),
                f"connected to {self.where} through the proxy {proxy} in {elapsed_ms:.0f} ms",
            )
        try:
            with socket.create_connection(
                (self.account.host, self.account.port), timeout=self.timeout
            ) as sock:
                peer = sock.getpeername()
        except OSError as err:
            return self.connect_failure(TCP, err)
        elapsed_ms = (time.monotonic() - started) * 1000
        return _ok(self.name(TCP), f"connected to {peer[0]} port {peer[1]} in {elapsed_ms:.0f} ms")

    def connect_failure(self, step: str, err: OSError) -> Check:
        if isinstance(err, TimeoutError):
            detail = f"no answer from {self.where} within {self.timeout:g} s"
            fix = "a firewall may be dropping the connection; check host and port, or raise timeout"
        elif isinstance(err, ConnectionRefusedError):
            detail = (
                f"{self.where} refused the connection: nothing listens on port {self.account.port}"
            )
            fix = (
                f"check port in {self.config_path} (POP3S is usually 995) "
                "and that the server is running"
            )
        else:
            detail = f"cannot connect to {self.where}: {err.strerror or err}"
            fix = "check host and port, and the network"
        return Check(self.name(step), "fail", detail, fix, ExitCode.TEMPFAIL)

    def check_tls(self) -> Check:
        """Connect exactly as sync does (STLS, trust, pin); the session is kept for login."""
        name = self.name(TLS)
        try:
            self.live = connect.open_session(self.account, timeout=self.timeout)
        except OSError as err:  # pragma: no cover - open_session translates these
            return self.connect_failure(TLS, err)
        except Pop3sFetchError as err:
            return _fail(name, err)
        summary = tls.describe(self.live.peer_certificate())
        days_left = (summary.not_after - datetime.datetime.now(datetime.UTC)).days
        trust = "pinned" if self.account.tls.fingerprint else "verified"
        detail = (
            f"{self.live.tls_version}, {self.live.cipher}; certificate {summary.subject} "
            f"({trust}), issued by {summary.issuer}, expires {summary.not_after:%Y-%m-%d} "
            f"(in {days_left} days); {summary.sha256}"
        )
        if days_left < EXPIRY_WARNING_DAYS:
            return Check(
                name,
                "warn",
                detail,
                "the certificate expires soon; tell the server's administrator",
            )
        return _ok(name, detail)

    def check_login(self) -> Check:
        session = self.open_session()
        failure = session.error or session.login_error
        if failure is not None:
            fix = failure.hint
            if isinstance(failure, AuthError):
                fix = f"username is {self.account.username} in {self.config_path}; {failure.hint}"
            return _fail(self.name(LOGIN), failure, fix=fix)
        detail = f"logged in as {self.account.username}"
        if session.listing is not None:
            count = len(session.listing)
            octets = sum(m.size for m in session.listing)
            detail += f"; {count} message{'s' if count != 1 else ''} ({octets} bytes) on the server"
        return _ok(self.name(LOGIN), detail)

    def check_capabilities(self) -> Check:
        session = self.open_session()
        name = self.name(CAPABILITIES)
        if session.error is not None:
            return _fail(name, session.error)
        if session.listing_error is not None:
            return _fail(name, session.listing_error)
        capabilities = session.capabilities or {}
        advertised = _describe_capabilities(capabilities)
        pipelining = (
            "PIPELINING yes"
            if "PIPELINING" in capabilities
            else "PIPELINING no (each command waits for its reply: slower on distant servers)"
        )
        if "UIDL" in capabilities or session.listing is not None:
            uidl = "UIDL yes" if "UIDL" in capabilities else "UIDL works (not advertised)"
            return _ok(name, f"{uidl}, {pipelining}; advertised: {advertised}")
        return Check(
            name,
            "warn",
            f"UIDL not advertised before login, {pipelining}; advertised: {advertised}",
            "once doctor can log in it tries UIDL itself; pop3s-fetch needs UIDL to tell "
            "messages apart between runs",
        )

    def open_session(self) -> _ProbeFindings:
        """Connect once (lazily), ask CAPA, log in and list when a password is known."""
        if self.session is None:
            self.session = self._probe_session()
        return self.session

    def _probe_session(self) -> _ProbeFindings:
        assert self.live is not None  # both callers need the TLS check to have passed
        result = _ProbeFindings()
        session = self.live
        try:
            if not session.capabilities:
                session.capa()
            result.capabilities = dict(session.capabilities)
        except Pop3sFetchError as err:
            result.error = err
            return result
        if self.password is None and not self.oauth_ready:
            return result
        try:
            secret = self.password
            if secret is None:  # OAuth2: exchange the refresh token, as sync does
                secret = credentials.login_secret(self.account)
            connect.log_in(session, self.account, secret, then_list=True)
        except Pop3sFetchError as err:
            result.login_error = err
            return result
        result.logged_in = True
        try:
            result.listing = session.listing()
            session.quit()  # nothing was marked for deletion, so QUIT changes nothing
        except Pop3sFetchError as err:
            result.listing_error = err
        return result

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live = None


def _describe_capabilities(capabilities: Mapping[str, list[str]]) -> str:
    if not capabilities:
        return "nothing (the server does not answer CAPA)"
    return " ".join(
        f"{name}({' '.join(args)})" if args else name for name, args in capabilities.items()
    )


# --- small helpers --------------------------------------------------------------------------


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _skip(name: str, reason: str) -> Check:
    return Check(name, "skip", reason)


def _fail(
    name: str, err: Pop3sFetchError, *, detail: str | None = None, fix: str | None = None
) -> Check:
    return Check(name, "fail", detail or err.message, fix or err.hint, err.exit_code)


def _sh(path: Path) -> str:
    return shlex.quote(str(path))
