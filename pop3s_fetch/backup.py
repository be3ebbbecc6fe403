"""``pop3s-fetch backup``: a one-off copy of a mailbox that is checked against the server.

A backup is a sync: of an Account synthesized from the command line (or of a configured one)
that can never delete (keep = true; no retention, no size limits, no hook, no MDA), into the
directory or mbox given with ``--to``. So it has no downloader of its own: streaming, crash
safety, "never twice" and resuming an interrupted run are sync's. It then verifies the copy:
every message on the server (UIDL and LIST size; STAT's totals must agree with the listing) is
in the copy exactly once and its size matches (the copy read back through its destination's
reader, which undoes mbox quoting, with LF line ends counted as CRLF as LIST counts them).
The copy is streamed, a size and digest per message, never held in memory: a backup is as
large as the mailbox.

Its state lives in the state directory under ``backups/KEY/``, KEY being a hash of the host,
port, user name and the target's absolute path. Not inside the backup: an mbox target is a
file with no inside, a Maildir's top level is read by mail programs, and the state directory
is private (0700) and checked as such. Not among the accounts' state files either: no
configured account's state (nor ``state prune``) ever sees a backup's, and a configured
account backed up to a new place never looks delivered already because its own sync ran.

Passwords: a configured account's come from where its configuration says. For a server named
on the command line: ``--password-command``, else the keyring (a configured account of the
same host and user, then the entry an earlier backup kept, service ``pop3s-fetch``, user
name ``USER@HOST``, which no account name can be, as account names hold no "@"), else a
prompt without echo on a terminal; a password typed there is kept in the keyring once the
server accepted it, so the next run of the same backup needs no one at the keyboard.

Must not know: click or rich (the CLI passes a prompt and a Reporter, ui draws), keyring
(``credentials`` does), the POP3 wire (``pop3``), how a destination lays mail out (it reads
the copy back through ``destinations.inventory``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pop3s_fetch import config, credentials
from pop3s_fetch.config import Account
from pop3s_fetch.connect import log_in, open_session
from pop3s_fetch.destinations import Placement, inventory, stored_key, stored_keys
from pop3s_fetch.errors import ConfigError, CredentialError, ExitCode, Pop3sFetchError
from pop3s_fetch.state import SEEDED_PREFIX, AccountLock, open_store
from pop3s_fetch.sync import AccountResult, Reporter, SyncOptions, check_uidls, sync_account
from pop3s_fetch.ui import human_bytes

Format = Literal["maildir", "mbox"]

#: Backups' state, inside the state directory: one subdirectory per server, user and target.
BACKUPS_DIRECTORY = "backups"
#: Differences listed one by one when a verification fails; the rest are counted.
MAX_LISTED = 20
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._@+-]")
#: The command-line option behind each key of the synthesized account, for error messages.
_OPTIONS = {
    "host": "HOST",
    "username": "--user",
    "destination": "--to",
    "format": "--format",
    "port": "--port",
    "tls": "--tls",
    "ca": "--ca",
    "fingerprint": "--fingerprint",
    "password_command": "--password-command",
}


class BadOption(Pop3sFetchError):
    """A command-line value the configuration's rules refuse (as a config key would be)."""

    exit_code = ExitCode.USAGE


class NotVerified(Pop3sFetchError):
    """The copy does not hold every message on the server exactly once, at its size."""

    exit_code = ExitCode.IOERR

    def __init__(self, message: str, *, differences: list[str], hint: str) -> None:
        super().__init__(message, hint=hint)
        self.differences = differences


@dataclass(frozen=True, slots=True)
class Plan:
    """What to back up, where to, and where its password may be found."""

    account: Account  # synthesized: keep = true, destination = the target
    shown: str  # the target as the user typed it, for the verdict
    keyring_names: tuple[str, ...]  # entries to try, in order (none: the account's own source)
    store_as: str | None  # keep a typed password under this keyring name
    by_options: bool = False  # the server came from the command line: fixes name its options


def keyring_name(username: str, host: str) -> str:
    """Where a backup of a server named on the command line keeps its password."""
    return f"{username}@{host}"


def for_server(
    host: str,
    username: str,
    target: str,
    fmt: Format,
    *,
    port: int | None = None,
    tls: str | None = None,
    ca: str | None = None,
    fingerprint: str | None = None,
    password_command: Sequence[str] | None = None,
    configured: Sequence[Account] = (),
    cwd: Path,
) -> Plan:
    """A backup of a server named on the command line, validated as a config account would be.

    Raises:
        BadOption: a value the configuration would refuse (the option is named).
    """
    values: dict[str, object] = {
        "host": host,
        "username": username,
        "destination": target,
        "format": fmt,
        "keep": True,
    }
    optional = {"port": port, "tls": tls, "ca": ca, "fingerprint": fingerprint}
    values |= {key: value for key, value in optional.items() if value is not None}
    if password_command is not None:
        values["password_command"] = list(password_command)
    if ca not in (None, config.CA_CERTIFI, config.CA_SYSTEM) and not (cwd / str(ca)).exists():
        raise BadOption(f"--ca: there is no file {cwd / str(ca)}")
    # JSON's strings, numbers and lists are TOML's too: the configuration's own validation.
    text = "[accounts.backup]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    try:
        parsed = config.parse(text, cwd / "command-line").accounts["backup"]
    except ConfigError as err:
        raise _bad_option(err) from None
    name = _UNSAFE_NAME.sub("_", keyring_name(username, host))
    account = dataclasses.replace(parsed, name=name)
    own = keyring_name(username, host)
    names: tuple[str, ...] = ()
    if _uses_keyring(account):
        same = [
            a.name
            for a in configured
            if a.host.lower() == host.lower() and a.username == username and _uses_keyring(a)
        ]
        names = (*same, own)
    return Plan(account, target, names, own if names else None, by_options=True)


#: ``key = "value"`` (or a number) in a hint, for the keys a backup takes as options.
_KEY_IN_HINT = re.compile(r'\b(ca|fingerprint|tls|port) = (?:"([^"]*)"|(\d+))')


def in_options(err: Pop3sFetchError) -> Pop3sFetchError:
    """Make ``err``'s fix name the backup's options (``--ca FILE``), not configuration keys.

    A server named on the command line has no configuration to edit: "set ca =
    "/path/to/ca.pem"" would send the user looking for a file that does not exist.
    """
    if err.hint:
        err.hint = _KEY_IN_HINT.sub(
            lambda m: f"--{m[1]} {shlex.quote(m[2] if m[2] is not None else m[3])}", err.hint
        ).replace("set --", "give --")
    return err


class _OptionHints:
    """A Reporter that passes everything on, with a failed sync's fix in the backup's options."""

    def __init__(self, inner: Reporter) -> None:
        self._inner = inner

    def started(self, account: str, phase: str) -> None:
        self._inner.started(account, phase)

    def listed(self, account: str, messages: int, octets: int) -> None:
        self._inner.listed(account, messages, octets)

    def fetched(self, account: str, message_octets: int) -> None:
        self._inner.fetched(account, message_octets)

    def warned(self, account: str, text: str, *, loud: bool = False) -> None:
        self._inner.warned(account, text, loud=loud)

    def finished(self, result: AccountResult) -> None:
        if result.error is not None:
            in_options(result.error)
        self._inner.finished(result)


def for_account(account: Account, target: str, fmt: Format, *, cwd: Path) -> Plan:
    """A backup of a configured account: its server, login and TLS; never its retention."""
    synthesized = dataclasses.replace(
        account,
        destination=(cwd / Path(target).expanduser()).absolute(),
        format=fmt,
        keep=True,
        delete_after=None,
        max_message_size=None,
        oversize="skip",
        max_messages=None,
        max_bytes=None,
        on_new_mail=None,
        mda=None,
    )
    names = (account.name,) if _uses_keyring(account) else ()
    return Plan(synthesized, target, names, None)


def state_location(state_root: Path, account: Account) -> Path:
    """The backup's own state directory, named by a hash of server, user and target."""
    key = "\0".join(
        [account.host.lower(), str(account.port), account.username, str(account.destination)]
    )
    return state_root / BACKUPS_DIRECTORY / hashlib.sha256(key.encode()).hexdigest()[:32]


# --- the password ------------------------------------------------------------------------


@dataclass
class Secret:
    """The password found for a plan, and whether it was typed (then kept once it worked)."""

    value: str
    typed: bool = False


def find_password(plan: Plan, ask: Callable[[str], str] | None) -> Secret:
    """The login secret: the account's source, or the keyring entries, or ``ask`` (a prompt
    without echo, None when there is no terminal).

    Raises:
        CredentialError: none found and nobody to ask (exit 77, as sync).
    """
    account = plan.account
    if not plan.keyring_names:
        return Secret(credentials.login_secret(account))
    for name in plan.keyring_names:
        try:
            return Secret(credentials.get_password(name))
        except CredentialError:
            continue
    if ask is None:
        where = " or ".join(f'"{n}"' for n in plan.keyring_names)
        raise CredentialError(
            f"no password for {account.username} at {account.host}: none in the keyring "
            f"(as {where}) and no terminal to ask on",
            hint="run the backup once on a terminal, which keeps the password in the "
            "keyring, or give --password-command",
        )
    return Secret(ask(f"Password for {account.username} at {account.host}"), typed=True)


def keep_password(plan: Plan, secret: Secret) -> tuple[bool, str] | None:
    """After the server accepted a typed password: keep it for the next run. Returns whether
    that worked and a line saying so, or None when there was nothing to keep."""
    if not secret.typed or plan.store_as is None:
        return None
    try:
        credentials.set_password(plan.store_as, secret.value)
    except CredentialError as err:
        return False, f"the password was not kept ({err.message}); the next run asks again"
    return True, (
        f'the password is kept in the keyring as "{plan.store_as}" for the next run (remove '
        f"it with: pop3s-fetch password delete {plan.store_as})"
    )


# --- running -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a backup (or --verify-only) did; ``error`` set when it failed."""

    result: AccountResult | None = None  # None with --verify-only
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)  # worth knowing
    warnings: list[str] = field(default_factory=list)  # something did not work out
    error: Pop3sFetchError | None = None


def run(
    plan: Plan,
    secret: Secret,
    state_root: Path,
    reporter: Reporter,
    *,
    verify_only: bool = False,
    wait: float = 0.0,
) -> Outcome:
    """Sync the plan's account into its target (unless ``verify_only``), then verify the copy.

    Failures are returned in the outcome (the sync's are reported through ``reporter``).
    """
    outcome = _run(
        plan,
        secret,
        state_root,
        _OptionHints(reporter) if plan.by_options else reporter,
        verify_only=verify_only,
        wait=wait,
    )
    if plan.by_options and outcome.error is not None:
        in_options(outcome.error)
    return outcome


def _run(
    plan: Plan,
    secret: Secret,
    state_root: Path,
    reporter: Reporter,
    *,
    verify_only: bool,
    wait: float,
) -> Outcome:
    account = plan.account
    location = state_location(state_root, account)
    outcome = Outcome()
    if not verify_only:
        try:
            again = _forget_vanished(account, location, wait)
        except Pop3sFetchError as err:
            outcome.error = err
            return outcome
        if again:
            reporter.warned(
                account.name,
                f"{again} message(s) recorded as saved are no longer in {plan.shown}; "
                "they are fetched again",
            )
        options = SyncOptions(state_dir=location, wait=wait)
        result = sync_account(account, lambda: secret.value, options, reporter)
        outcome.result = result
        if result.on_server is not None:  # logged in: the password is right
            kept = keep_password(plan, secret)
            if kept is not None:
                (outcome.notes if kept[0] else outcome.warnings).append(kept[1])
        if result.error is not None:
            outcome.error = result.error
            return outcome
    reporter.started(account.name, "verifying")
    try:
        outcome.verdict = verify(plan, secret.value, location, wait=wait)
    except Pop3sFetchError as err:
        outcome.error = err
        return outcome
    if not outcome.verdict.ok:
        outcome.error = outcome.verdict.failure()
    return outcome


def _forget_vanished(account: Account, location: Path, wait: float) -> int:
    """Forget deliveries whose copy is gone from the target, so this run fetches them again."""
    path = location / f"{account.name}.sqlite3"
    if not path.exists():
        return 0
    fmt = _format(account)
    with AccountLock(location / f"{account.name}.lock", account.name) as lock:
        lock.acquire(wait)
        with open_store(path) as store:
            recorded = [
                i for i in store.delivered_intents() if not i.target.startswith(SEEDED_PREFIX)
            ]
            if not recorded:
                return 0
            assert account.destination is not None  # backups always have one
            present = set(stored_keys(account.destination, fmt))
            gone = [i.uidl for i in recorded if _key(fmt, i.target, i.offset) not in present]
            store.forget(gone)
            return len(gone)


# --- verifying ---------------------------------------------------------------------------


@dataclass
class Verdict:
    """The copy compared with the server: counts, bytes, and each difference found."""

    shown: str
    on_server: int
    octets: int  # STAT's total
    found: int = 0  # messages on the server that are in the copy exactly once, at their size
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    listing: list[str] = field(default_factory=list)  # STAT disagreeing with UIDL/LIST
    extra: int = 0  # in the copy, of no message now on the server (deleted there since)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.wrong_size or self.listing)

    def line(self) -> str:
        """The verdict, one line, as the terminal shows it."""
        noun = "message" if self.on_server == 1 else "messages"
        size = human_bytes(self.octets)
        if self.ok:
            text = (
                f"backup verified: {self.on_server} {noun}, {size}, all on the server are in "
                f"{self.shown} exactly once"
            )
        else:
            text = (
                f"backup NOT verified: of {self.on_server} {noun} on the server ({size}), "
                f"{len(self.missing)} missing from {self.shown}, {len(self.duplicated)} there "
                f"more than once, {len(self.wrong_size)} with another size"
            )
            if self.listing:
                text += ", and the server's STAT disagrees with its listing"
        if self.extra:
            text += (
                f" ({self.extra} more in the copy that the server no longer has, or that "
                "are not from it)"
            )
        return text

    def differences(self) -> list[str]:
        every = [*self.listing, *self.missing, *self.duplicated, *self.wrong_size]
        if len(every) > MAX_LISTED:
            return [*every[:MAX_LISTED], f"... and {len(every) - MAX_LISTED} more"]
        return every

    def failure(self) -> NotVerified:
        hint = "run the backup again to fetch what is missing"
        if self.duplicated:
            hint += "; remove the extra copies named, or start a new backup elsewhere"
        return NotVerified(self.line(), differences=self.differences(), hint=hint)


def verify(plan: Plan, secret: str, location: Path, *, wait: float = 0.0) -> Verdict:
    """Log in, list (UIDL, LIST, STAT), log out without DELE; compare with the copy.

    Raises:
        Pop3sFetchError: the server or the state could not be read (as for a sync).
    """
    account = plan.account
    session = open_session(account)
    try:
        log_in(session, account, secret)
        uidls = session.unique_ids()
        check_uidls(uidls)
        listed = session.with_sizes(uidls, list(uidls))
        count, octets = session.stat()
        session.quit()
    finally:
        session.close()
    verdict = Verdict(plan.shown, count, octets)
    if count != len(listed) or octets != sum(m.size for m in listed):
        verdict.listing.append(
            f"STAT says {count} messages of {octets:,} bytes, UIDL and LIST name "
            f"{len(listed)} of {sum(m.size for m in listed):,} bytes"
        )
    fmt = _format(account)
    path = location / f"{account.name}.sqlite3"
    recorded: dict[str, str] = {}
    with AccountLock(location / f"{account.name}.lock", account.name) as lock:
        lock.acquire(wait)
        if path.exists():
            with open_store(path) as store:
                recorded = {
                    i.uidl: _key(fmt, i.target, i.offset) for i in store.delivered_intents()
                }
        assert account.destination is not None
        # Streamed: a size and a digest per message, never the copy's bytes in memory.
        by_key = {stored.key: stored for stored in inventory(account.destination, fmt)}
    digests = {key: stored.sha256 for key, stored in by_key.items()}
    times = Counter(digests.values())
    referenced: dict[str, str] = {}  # digest -> UIDL, for the copies a server message owns
    for message in listed:
        what = f"message {message.number} (UIDL {message.uidl}, {message.size:,} bytes)"
        key = recorded.get(message.uidl)
        stored = by_key.get(key) if key is not None else None
        if key is None:
            verdict.missing.append(f"missing: {what} was never saved by this backup")
            continue
        if stored is None:
            verdict.missing.append(f"missing: {what} was saved as {key}, which is gone")
            continue
        octets_here = stored.wire_size  # LF in the copy, CRLF on the wire
        if octets_here not in (message.size, message.size + 2):  # + a final line end added
            verdict.wrong_size.append(
                f"another size: {what}: the copy ({key}) holds {octets_here:,} bytes"
            )
            continue
        referenced[digests[key]] = message.uidl
        verdict.found += 1
    owned = {recorded[m.uidl] for m in listed if m.uidl in recorded}
    for key, digest in digests.items():
        if key in owned:
            continue
        if digest in referenced:
            uidl = referenced[digest]
            verdict.duplicated.append(
                f"duplicated: UIDL {uidl} is in the copy {times[digest]} times (also as {key})"
            )
        else:
            verdict.extra += 1
    return verdict


def _uses_keyring(account: Account) -> bool:
    return account.secret_source == "keyring"  # noqa: S105 - a source's name, not a secret


def _format(account: Account) -> Format:
    return "mbox" if account.format == "mbox" else "maildir"


def _key(fmt: Format, target: str, offset: int) -> str:
    return stored_key(fmt, Placement(target, offset, 0, ""))


def _bad_option(err: ConfigError) -> BadOption:
    """The configuration's complaint about a synthesized key, reworded for its option."""
    lines = err.problems or [err.message]
    for line in lines:
        match = re.search(r"accounts\.backup\.(\w+): (.*)$", line)
        if match:
            option = _OPTIONS.get(match.group(1), match.group(1))
            return BadOption(f"{option}: {match.group(2)}")
    return BadOption(lines[0])
