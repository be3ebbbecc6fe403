"""The configuration file: where it lives, what it may say, and the frozen accounts it yields.

This module owns the TOML layout, its validation and the lookup order of the file. It reports
every fault at once, as one :class:`~pop3s_fetch.errors.ConfigError` whose ``problems`` hold
one ``FILE: KEYPATH: message`` line each, so a user fixes the whole file in one pass.

Layout::

    [defaults]              # optional; any account key except password
    timeout = 30

    [accounts.work]         # one table per account; the name is used by the state store
    host = "pop.example.com"  # and as the keyring entry, so it is restricted to
    username = "me"           # ACCOUNT_NAME_PATTERN
    destination = "~/Mail/work"

A key set in an account overrides the same key in ``[defaults]``. Paths (``destination``,
``ca_file``) have a leading ``~`` expanded; a relative path is taken relative to the directory
holding the configuration file, so the meaning of the file does not depend on the working
directory of cron or systemd. Environment variables in paths are *not* expanded.

Passwords are never read from here: they live in the OS keyring (see ``credentials``).

Must not know: click, rich, keyring, poplib, the state format, or how mail is delivered.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal

from pop3s_fetch.errors import ConfigError

ACCOUNT_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# Names become file names in the state directory; keep them well inside NAME_MAX.
MAX_ACCOUNT_NAME_LENGTH = 64

CONFIG_ENV_VAR = "POP3S_FETCH_CONFIG"
CONFIG_RELATIVE_PATH = Path("pop3s-fetch", "config.toml")

DEFAULT_FORMAT: Literal["maildir", "mbox"] = "maildir"
DEFAULT_PORT = 995
DEFAULT_KEEP = True
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 3600.0

MailFormat = Literal["maildir", "mbox"]


@dataclass(frozen=True, slots=True)
class Account:
    """One POP3S mailbox and where its mail goes; every path is absolute."""

    name: str
    host: str
    username: str
    destination: Path
    format: MailFormat = DEFAULT_FORMAT
    port: int = DEFAULT_PORT
    keep: bool = DEFAULT_KEEP  # leave messages on the server after fetching them
    ca_file: Path | None = None  # trust only these CAs instead of certifi's bundle
    timeout: float = DEFAULT_TIMEOUT  # seconds, for connecting and for each reply


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration file; ``accounts`` keeps the order of the file."""

    path: Path
    accounts: dict[str, Account]

    def select(self, names: Sequence[str]) -> list[Account]:
        """Return the named accounts in the order given (duplicates dropped), or all if none named.

        Raises:
            ConfigError: the file defines no account, or a name is not defined in it.
        """
        if not self.accounts:
            raise ConfigError(
                f"no accounts are defined in {self.path}",
                hint="add an [accounts.NAME] table; see config.example.toml",
            )
        if not names:
            return list(self.accounts.values())
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self.accounts]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise ConfigError(
                f"unknown account{plural} {', '.join(_toml_string(n) for n in unknown)}; "
                f"{self.path} defines: {', '.join(self.accounts)}"
            )
        return [self.accounts[name] for name in wanted]


def default_config_path(environ: Mapping[str, str]) -> Path:
    """Return ``$XDG_CONFIG_HOME/pop3s-fetch/config.toml``, falling back to ``~/.config``.

    The XDG Base Directory spec says a relative ``$XDG_CONFIG_HOME`` is invalid and must be
    ignored, as must an empty one.
    """
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / CONFIG_RELATIVE_PATH
    home = environ.get("HOME", "")
    home_path = Path(home) if home else Path.home()
    return home_path / ".config" / CONFIG_RELATIVE_PATH


def find_config_path(explicit: Path | None, environ: Mapping[str, str]) -> Path:
    """Return the file to load: ``--config``, then ``$POP3S_FETCH_CONFIG``, then the default."""
    if explicit is not None:
        return explicit.expanduser()
    from_env = environ.get(CONFIG_ENV_VAR, "")
    if from_env:
        return Path(from_env).expanduser()
    return default_config_path(environ)


def load(path: Path) -> Config:
    """Read and validate the configuration file at ``path``.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, not TOML, or invalid.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration file at {path}",
            hint=(
                f"pop3s-fetch looked for --config, then ${CONFIG_ENV_VAR}, then "
                f"$XDG_CONFIG_HOME/{CONFIG_RELATIVE_PATH.as_posix()} (default "
                f"~/.config/{CONFIG_RELATIVE_PATH.as_posix()}); copy config.example.toml "
                f"to {path} and edit it"
            ),
        ) from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"cannot read configuration file {path}: {reason}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (bad byte at offset {err.start}); TOML files must be UTF-8"
        ) from None
    return parse(text, path)


def parse(text: str, path: Path) -> Config:
    """Validate TOML ``text`` read from ``path`` (used for messages and relative paths).

    Raises:
        ConfigError: a syntax error (``FILE:LINE:COL: ...``) or a list of every invalid key.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{_syntax_error_location(str(err), text, path)}") from None
    return _Validator(path).validate(document)


# --- syntax errors -------------------------------------------------------------------------

# tomllib (3.11) puts the position only in the message text, e.g. "Invalid value (at line 3,
# column 7)"; the attributes arrived in 3.14.
_AT_LINE_COLUMN = re.compile(r"^(?P<reason>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_AT_END = re.compile(r"^(?P<reason>.*) \(at end of document\)$")


def _syntax_error_location(message: str, text: str, path: Path) -> str:
    """Format a tomllib message as ``FILE:LINE:COL: invalid TOML: reason``, as editors expect."""
    if match := _AT_LINE_COLUMN.match(message):
        line, col, reason = match["line"], match["col"], match["reason"]
    elif match := _AT_END.match(message):
        lines = text.split("\n")
        line, col, reason = str(len(lines)), str(len(lines[-1]) + 1), match["reason"]
    else:
        return f"{path}: invalid TOML: {message}"
    return f"{path}:{line}:{col}: invalid TOML: {reason[:1].lower()}{reason[1:]}"


# --- rendering keys and values as TOML would write them ------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_string(value: str) -> str:
    """Quote ``value`` as a TOML basic string, so the user can search the file for it."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: object) -> str:
    """Render a parsed TOML value the way it would appear in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}" if items else "{}"
    return repr(value)


# --- validating each account key ----------------------------------------------------------


class _Invalid(Exception):
    """A value was rejected; the message is the part after ``FILE: KEYPATH: ``."""


def _expect_host(value: object, _base: Path) -> str:
    # "/" catches URLs such as "pop3s://host"; whitespace catches stray pasted text.
    if not isinstance(value, str) or not value or "/" in value or any(c.isspace() for c in value):
        raise _Invalid(f'expected a host name such as "pop.example.com", got {_toml_value(value)}')
    return value


def _expect_non_empty_string(value: object, _base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"expected a non-empty string, got {_toml_value(value)}")
    return value


def _expect_path(value: object, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"expected a non-empty path, got {_toml_value(value)}")
    if "\0" in value:
        raise _Invalid(f"a path cannot contain a NUL character, got {_toml_value(value)}")
    try:
        expanded = Path(value).expanduser()
    except RuntimeError:  # "~someone" with no such user, or no home directory at all
        raise _Invalid(f"cannot expand the ~ in {_toml_value(value)}") from None
    return base / expanded  # an absolute `expanded` replaces `base`


def _expect_format(value: object, _base: Path) -> MailFormat:
    if value not in ("maildir", "mbox"):
        raise _Invalid(f'expected "maildir" or "mbox", got {_toml_value(value)}')
    return value


def _expect_port(value: object, _base: Path) -> int:
    # bool is a subclass of int, but `port = true` is a mistake, not port 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Invalid(f"expected an integer 1-65535, got {_toml_value(value)}")
    return value


def _expect_bool(value: object, _base: Path) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_toml_value(value)}")
    return value


def _expect_timeout(value: object, _base: Path) -> float:
    # The comparison is False for nan, so nan is refused too.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_TIMEOUT
    ):
        raise _Invalid(
            f"expected a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
            f"got {_toml_value(value)}"
        )
    return float(value)


_Converter = Callable[[object, Path], object]

# Every account key, in the order of the Account fields, with its converter.
_ACCOUNT_KEYS: dict[str, _Converter] = {
    "host": _expect_host,
    "username": _expect_non_empty_string,
    "destination": _expect_path,
    "format": _expect_format,
    "port": _expect_port,
    "keep": _expect_bool,
    "ca_file": _expect_path,
    "timeout": _expect_timeout,
}
_REQUIRED_KEYS = ("host", "username", "destination")
_TOP_LEVEL_KEYS = ("defaults", "accounts")
_PASSWORD_KEY = "password"  # noqa: S105  # the key we refuse, not a secret


def _unknown_key_message(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key (did you mean {_toml_string(close[0])}?)"
    return f"unknown key; known keys: {', '.join(known)}"


class _Validator:
    """Walks one parsed document, collecting every problem before giving up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.absolute().parent
        self.problems: list[str] = []

    def problem(self, keypath: Sequence[str], message: str) -> None:
        rendered = ".".join(_toml_key(part) for part in keypath)
        self.problems.append(f"{self.path}: {rendered}: {message}")

    def validate(self, document: dict[str, object]) -> Config:
        for key in document:
            if key not in _TOP_LEVEL_KEYS:
                self.problem([key], _unknown_key_message(key, sorted(_TOP_LEVEL_KEYS)))
        defaults, defaults_seen = self.defaults(document.get("defaults"))
        accounts = self.accounts(document.get("accounts"), defaults, defaults_seen)
        if self.problems:
            count = len(self.problems)
            raise ConfigError(
                f"{self.path}: {count} problem{'s' if count > 1 else ''} in the configuration",
                problems=self.problems,
            )
        return Config(path=self.path, accounts=accounts)

    def defaults(self, table: object) -> tuple[dict[str, object], set[str]]:
        """Return the valid default values and the names of every default key present."""
        if table is None:
            return {}, set()
        if not isinstance(table, dict):
            self.problem(["defaults"], f"expected a table, got {_toml_value(table)}")
            return {}, set()
        hint = "store each account's password in the OS keyring with: pop3s-fetch password set NAME"
        return self.keys(["defaults"], table, password_hint=hint), set(table)

    def accounts(
        self, table: object, defaults: dict[str, object], defaults_seen: set[str]
    ) -> dict[str, Account]:
        if table is None or table == {}:
            self.problem(["accounts"], "no accounts defined; add an [accounts.NAME] table")
            return {}
        if not isinstance(table, dict):
            self.problem(["accounts"], f"expected a table of accounts, got {_toml_value(table)}")
            return {}
        accounts = {}
        for name, body in table.items():
            account = self.account(name, body, defaults, defaults_seen)
            if account is not None:
                accounts[name] = account
        return accounts

    def account(
        self, name: str, body: object, defaults: dict[str, object], defaults_seen: set[str]
    ) -> Account | None:
        keypath = ["accounts", name]
        before = len(self.problems)
        if len(name) > MAX_ACCOUNT_NAME_LENGTH or not re.fullmatch(ACCOUNT_NAME_PATTERN, name):
            self.problem(
                keypath,
                f"invalid account name; use at most {MAX_ACCOUNT_NAME_LENGTH} letters, digits, "
                '".", "_" and "-", starting with a letter or digit',
            )
        if not isinstance(body, dict):
            self.problem(keypath, f"expected a table, got {_toml_value(body)}")
            return None
        hint = f"store it in the OS keyring with: pop3s-fetch password set {name}"
        values = defaults | self.keys(keypath, body, password_hint=hint)
        for key in _REQUIRED_KEYS:
            if key not in body and key not in defaults_seen:
                self.problem([*keypath, key], "missing required key (set it here or in [defaults])")
        # A required key may be absent here because its default was invalid (already reported).
        if len(self.problems) > before or any(key not in values for key in _REQUIRED_KEYS):
            return None
        return Account(name=name, **values)  # type: ignore[arg-type]  # checked by converters

    def keys(
        self, keypath: list[str], table: dict[str, object], *, password_hint: str
    ) -> dict[str, object]:
        """Convert each key of an account or defaults table, recording problems."""
        values: dict[str, object] = {}
        for key, raw in table.items():
            where = [*keypath, key]
            if key == _PASSWORD_KEY:
                self.problem(where, f"passwords are not read from the config file; {password_hint}")
                continue
            convert = _ACCOUNT_KEYS.get(key)
            if convert is None:
                self.problem(where, _unknown_key_message(key, list(_ACCOUNT_KEYS)))
                continue
            try:
                values[key] = convert(raw, self.base)
            except _Invalid as err:
                self.problem(where, str(err))
        return values
