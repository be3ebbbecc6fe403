"""``pop3s-fetch import``: a peer's accounts, its UIDL lists and its passwords, made ours.

The order of the writes is what keeps the promise "the first sync fetches nothing the peer
already fetched": each account's state is seeded first (under the account's lock), then the
passwords go into the keyring, and the configuration is written last, since an account in the
configuration is one a sync would run. A run stopped half-way leaves state for accounts not yet
configured (``state prune`` removes it; importing again adds nothing twice), never an account
without its state. The peer's files are only read.

Sizes: the peers keep no message sizes, and the import does not log in to ask the server
(it works offline, needs no password, and cannot collide with the peer's own session), so
seeded rows carry size 0. Nothing compares a delivered row's size; UIDLs no longer on the
server are forgotten by sync's usual rule (missing from several listings over a day).

Knows nothing of POP3, mailbox formats or the command line; the parsers of the peers' files
are in :mod:`.fetchmail`, :mod:`.getmail` and :mod:`.mpop`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pop3s_fetch import config, credentials, starter
from pop3s_fetch.errors import ConfigError
from pop3s_fetch.migrate import fetchmail, getmail, mpop
from pop3s_fetch.migrate.model import PeerAccount, PeerFileError, unique_names
from pop3s_fetch.state import AccountLock, open_store, state_dir

PEERS = ("fetchmail", "getmail", "mpop")
#: Our keys in the order they are written, so every imported account reads alike.
_KEY_ORDER = (
    "host",
    "port",
    "tls",
    "username",
    "destination",
    "format",
    "mda",
    "keep",
    "ca",
    "fingerprint",
    "client_cert",
    "client_key",
    "auth",
    "password_command",
    "timeout",
    "max_message_size",
    "oversize",
    "max_messages",
    "max_bytes",
)
_PATH_KEYS = ("destination", "ca", "client_cert", "client_key")


@dataclass
class Plan:
    """What an import would write: the accounts, their text, and the configuration after it."""

    peer: str
    sources: list[Path]
    accounts: list[PeerAccount]
    skipped: list[PeerAccount]
    blocks: dict[str, str]
    config_path: Path
    config_text: str
    new_file: bool


def default_files(peer: str, environ: Mapping[str, str]) -> list[Path]:
    """The peer's own configuration files, where it looks for them by default.

    Raises:
        ConfigError: none is there; the message names every place looked in.
    """
    home = Path(environ.get("HOME") or Path.home())
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    if peer == "fetchmail":
        fetchmail_home = environ.get("FETCHMAILHOME")
        places = [Path(fetchmail_home) / "fetchmailrc" if fetchmail_home else home / ".fetchmailrc"]
    elif peer == "mpop":
        places = [xdg / "mpop" / "config", home / ".mpoprc"]
    else:
        places = [xdg / "getmail", home / ".getmail"]
        found = [p for d in places if d.is_dir() for p in _getmail_rc_files(d)]
        if found:
            return found
        raise ConfigError(
            f"found no getmail rc file (one with a [retriever] section) in {places[0]}/ "
            f"or {places[1]}/",
            hint="name the rc files: pop3s-fetch import getmail FILE...",
        )
    for place in places:
        if place.exists():
            return [place]
    raise ConfigError(
        f"found no {peer} configuration at {' or '.join(str(p) for p in places)}",
        hint=f"name the file: pop3s-fetch import {peer} FILE",
    )


def given_files(peer: str, files: Sequence[Path]) -> list[Path]:
    """The files named on the command line; a directory is getmail's --getmaildir.

    Raises:
        ConfigError: a directory for fetchmail or mpop, or one holding no getmail rc file.
    """
    found: list[Path] = []
    for path in files:
        if not path.is_dir():
            found.append(path)
        elif peer != "getmail":
            raise ConfigError(
                f"{path} is a directory, not {peer}'s configuration file",
                hint=f"name the file: pop3s-fetch import {peer} FILE",
            )
        elif rc_files := _getmail_rc_files(path):
            found += rc_files
        else:
            raise ConfigError(
                f"found no getmail rc file (one with a [retriever] section) in {path}",
                hint="name the rc files: pop3s-fetch import getmail FILE...",
            )
    return found


def _getmail_rc_files(directory: Path) -> list[Path]:
    """getmail's rc files in its directory: not its oldmail- state files, not hidden ones."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(("oldmail-", ".")) and _has_retriever(p)
    )


def _has_retriever(path: Path) -> bool:
    try:
        return "[retriever]" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _read(path: Path, peer: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist",
            hint=f"check the name, or leave it out: pop3s-fetch import {peer} reads {peer}'s "
            "own configuration where it keeps it",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not UTF-8 text", hint="convert it, then import again"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err


def read_peer(
    peer: str, files: Sequence[Path], environ: Mapping[str, str], destination: str
) -> tuple[list[PeerAccount], list[Path]]:
    """The accounts of the peer's files, and every file read (rc files and UIDL files)."""
    accounts: list[PeerAccount] = []
    try:
        for path in files:
            text = _read(path, peer)
            if peer == "fetchmail":
                home = Path(environ.get("HOME") or Path.home())
                ids_home = Path(environ.get("FETCHMAILHOME") or home)
                rc = fetchmail.parse_rc(text, path)
                accounts += fetchmail.accounts(rc, ids_home / ".fetchids", destination)
            elif peer == "getmail":
                accounts.append(getmail.parse(text, path))
            else:
                accounts += mpop.accounts(mpop.parse_config(text, path), path, environ)
    except PeerFileError as err:
        raise ConfigError(
            f"cannot import from {peer}: {err}",
            hint=f"fix that line (does {peer} accept the file?), then import again",
        ) from None
    read = list(files)
    for account in accounts:
        read += [p for p in account.state_files if p not in read]
    return accounts, read


def plan(
    peer: str,
    files: Sequence[Path],
    config_path: Path,
    environ: Mapping[str, str],
    *,
    prefix: str = "",
    destination: str = "~/Maildir",
) -> Plan:
    """Read the peer, translate, and check the result against our configuration file.

    Raises:
        ConfigError: a peer file is unreadable or malformed, an imported name is taken, or
            the result would not load (nothing has been written).
    """
    chosen = given_files(peer, files) if files else default_files(peer, environ)
    found, sources = read_peer(peer, chosen, environ, destination)
    accounts = [a for a in found if a.skipped is None]
    skipped = [a for a in found if a.skipped is not None]
    existing = config_path.read_text(encoding="utf-8") if config_path.exists() else None
    taken = set(config.load(config_path).accounts) if existing is not None else set()
    for account in accounts:
        account.name = f"{prefix}{account.name}"
    unique_names(accounts)  # two getmail rc files for one server, say
    blocks: dict[str, str] = {}
    for account in accounts:
        if account.name in taken:
            raise ConfigError(
                f'account "{account.name}" (from {account.path} line {account.line}) is '
                f"already in {config_path}; nothing was imported",
                hint=f"import with --prefix {peer}- (accounts become {peer}-NAME), or rename "
                f"[accounts.{account.name}] in {config_path.name}",
            )
        blocks[account.name] = render(account, peer)
    text = existing or ""
    for block in blocks.values():
        text = _append(text, block)
    if not accounts:
        raise ConfigError(
            f"no account to import from {', '.join(str(p) for p in sources)}",
            hint="; ".join(f"{a.name}: {a.skipped}" for a in skipped) or "is it the right file?",
        )
    try:
        config.parse(text, config_path)  # never write a file that would not load
    except ConfigError as err:
        raise ConfigError(
            f"the imported accounts would not load ({err.message}); nothing was imported",
            problems=err.problems,
            hint="fix the value in the peer's file (or import into another --config)",
        ) from None
    return Plan(peer, sources, accounts, skipped, blocks, config_path, text, existing is None)


def _append(text: str, block: str) -> str:
    if not text:
        return block
    separator = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return f"{text}{separator}{block}"


def render(account: PeerAccount, peer: str) -> str:
    """The ``[accounts.NAME]`` table of one imported account (no password in it, ever)."""
    lines = [
        f"# imported from {peer} ({account.path} line {account.line}) by pop3s-fetch import",
        f"[accounts.{account.name}]",
    ]
    keys = dict(account.keys)
    for key in _PATH_KEYS:
        value = keys.get(key)
        if isinstance(value, str) and not value.startswith("~") and not os.path.isabs(value):
            keys[key] = str(account.path.parent / value)  # as the peer read it, from its file
    for key in (*_KEY_ORDER, *sorted(set(keys) - set(_KEY_ORDER))):
        if key in keys:
            lines.append(f"{key} = {toml_value(keys[key])}")
    return "\n".join(lines) + "\n"


def toml_value(value: object) -> str:
    """A TOML value: a basic string (control characters escaped), a number, a bool, a list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    out = []
    for c in str(value):
        if c in '"\\':
            out.append("\\" + c)
        elif c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True, slots=True)
class Done:
    """What an import wrote."""

    seeded: dict[str, int]  # account name: UIDLs added to its state
    passwords: list[str]  # accounts whose password went into the keyring


def apply(imported: Plan, environ: Mapping[str, str], *, store_passwords: bool) -> Done:
    """Write the plan: state (under each account's lock), then passwords, then the configuration.

    Raises:
        LockedError: a sync of one of the accounts is running (75).
        StateError, CredentialError, ConfigError: as their commands.
    """
    with_password = [a for a in imported.accounts if a.password is not None and store_passwords]
    if with_password:
        credentials.require_keyring(with_password[0].name)  # before any write
    directory = state_dir(environ)
    seeded: dict[str, int] = {}
    for account in imported.accounts:
        with AccountLock(directory / f"{account.name}.lock", account.name) as lock:
            lock.acquire()
            with open_store(directory / f"{account.name}.sqlite3") as store:
                when = {u: t for u, t in account.uidls.items() if t is not None}
                seeded[account.name] = store.seed(
                    dict.fromkeys(account.uidls, 0), origin=imported.peer, when=when
                )
    for account in with_password:
        assert account.password is not None
        credentials.set_password(account.name, account.password)
    if imported.new_file:
        starter.write_new(imported.config_path, imported.config_text)
    else:
        starter.replace(imported.config_path, imported.config_text)
    return Done(seeded, [a.name for a in with_password])


def describe(imported: Plan, done: Done | None, *, store_passwords: bool) -> list[str]:
    """The lines the command prints: each account's table, state, password, and every note."""
    would = done is None
    lines = [f"import from {imported.peer}: {', '.join(str(p) for p in imported.sources)}"]
    for account in imported.accounts:
        where = f"{account.username}@{account.host}"
        lines.append(
            f"account {account.name} ({where}), from {account.path.name} line {account.line}:"
        )
        lines += [f"    {line}" for line in imported.blocks[account.name].splitlines()[1:]]
        count = len(account.uidls)
        looked = " or ".join(str(p) for p in account.state_looked)
        files = ", ".join(str(p) for p in account.state_files) or (
            f"no UIDL file at {looked}" if looked else "no UIDL file found"
        )
        if would:
            lines.append(f"  state: would mark {count} UIDLs delivered ({files})")
        else:
            assert done is not None
            added = done.seeded.get(account.name, 0)
            lines.append(
                f"  state: {count} UIDLs the peer fetched marked delivered "
                f"({added} added to the state; {files})"
            )
        if not count and account.keys.get("keep") is not False:  # else the peer deleted them
            lines.append(
                "  nothing recorded as fetched: the first sync downloads every message now on "
                "the server; if the peer fetched them already, run pop3s-fetch state seed "
                f"{account.name} before it (it marks them all delivered, downloading nothing)"
            )
        if count and account.keys.get("keep") is False:
            lines.append(
                "  keep = false: the first sync deletes from the server what the peer fetched "
                "and left there (its copies are where the peer delivered them)"
            )
        if account.password is not None:
            if not store_passwords:
                verdict = f"not stored (--no-passwords): pop3s-fetch password set {account.name}"
            elif would:
                verdict = "would go into the keyring, not into the configuration"
            else:
                verdict = "stored in the keyring (not in the configuration)"
            lines.append(f"  password: found in {account.password_where}; {verdict}")
        untranslated = [n for n in account.notes if not n.why.startswith("needs no key")]
        built_in = [n for n in account.notes if n.why.startswith("needs no key")]
        if untranslated:
            lines.append("  not translated:")
            lines += [f"    {note}" for note in sorted(untranslated, key=lambda n: n.line)]
        if built_in:
            lines.append("  built in here:")
            lines += [f"    {note}" for note in sorted(built_in, key=lambda n: n.line)]
    for account in imported.skipped:
        lines.append(f"not imported: {account.path.name} line {account.line}: {account.skipped}")
    names = ", ".join(a.name for a in imported.accounts)
    if would:
        lines.append(f"dry run: nothing was written (would add {names} to {imported.config_path})")
        return lines
    assert done is not None
    lines.append(
        f"added {names} to {imported.config_path}; "
        f"{sum(done.seeded.values())} UIDLs recorded as delivered"
    )
    for account in imported.accounts:
        if account.password is not None:
            lines.append(
                f"remove the password from {account.password_where} now: "
                f"pop3s-fetch keeps it in the keyring (pop3s-fetch password set {account.name} "
                "replaces it)"
            )
    lines.append(
        f"next: pop3s-fetch sync --dry-run {names.split(', ')[0]} (it should fetch "
        "nothing the peer already fetched), then pop3s-fetch sync"
    )
    return lines
