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

    [accounts.work.oauth2]  # optional sub-table (also allowed as [defaults.oauth2])
    provider = "microsoft"
    client_id = "..."

A key set in an account overrides the same key in ``[defaults]``; ``[defaults.oauth2]`` is
merged key by key into each account's ``oauth2`` table. Two groups of keys override as a whole:
an account that sets ``ca`` or ``ca_file`` inherits neither from ``[defaults]``, and one that
sets any of ``password_command``, ``password_credential`` or ``oauth2`` inherits none of the
others. Paths (``destination``, ``ca``/``ca_file``, ``client_cert``, ``client_key``) have a
leading ``~`` expanded; a relative path is taken relative to the directory holding the
configuration file, so the meaning of the file does not depend on the working directory of
cron or systemd. Environment variables in paths are *not* expanded.

Passwords are never read from here: the file only says where one comes from (the OS keyring,
a ``password_command`` or a systemd credential; see ``credentials``). An OAuth2
``client_secret`` may be written here because installed-app secrets are not secret.

Must not know: click, rich, keyring, poplib, the state format, or how mail is delivered.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pop3s_fetch.errors import ConfigError
from pop3s_fetch.loopback import is_loopback
from pop3s_fetch.socks import Proxy

ACCOUNT_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# Names become file names in the state directory; keep them well inside NAME_MAX.
MAX_ACCOUNT_NAME_LENGTH = 64

CONFIG_ENV_VAR = "POP3S_FETCH_CONFIG"
CONFIG_RELATIVE_PATH = Path("pop3s-fetch", "config.toml")

DEFAULT_FORMAT: Literal["maildir", "mbox"] = "maildir"
DEFAULT_PORT = 995
DEFAULT_KEEP = True
DEFAULT_TIMEOUT = 60.0
#: An after-sync hook (on_new_mail) may index a whole mailbox on its first run (notmuch new).
DEFAULT_HOOK_TIMEOUT = 600.0
MAX_TIMEOUT = 3600.0
DEFAULT_MDA_TIMEOUT = 300.0  # a spam filter run by procmail may take a while on a big message
#: What an ``mda`` argument may name as ``{name}`` (destinations.mda substitutes the same).
MDA_PLACEHOLDERS = ("sender", "recipient", "account", "uidl")

#: A header filter runs once per new message, before its download: it should be quick.
DEFAULT_FILTER_TIMEOUT = 60.0
#: The trace fields add_headers may name, in the order they are written above the message.
TRACE_HEADERS = ("received", "delivered-to", "x-original-to")
TraceHeader = Literal["received", "delivered-to", "x-original-to"]

STARTTLS_PORT = 110  # the plaintext POP3 port, where STLS upgrades the session

MailFormat = Literal["maildir", "mbox", "mda"]
OversizeAction = Literal["skip", "delete"]
TlsMode = Literal["implicit", "starttls"]
TlsVersion = Literal["1.2", "1.3"]
AuthMethod = Literal[
    "auto",
    "scram-sha-256",
    "scram-sha-1",
    "plain",
    "user",
    "xoauth2",
    "oauthbearer",
    "apop",
    "cram-md5",
    "login",
]
OAuth2Provider = Literal["microsoft", "google", "custom"]
SecretSource = Literal["keyring", "password_command", "password_credential", "oauth2"]

TLS_MODES: tuple[TlsMode, ...] = get_args(TlsMode)
TLS_VERSIONS: tuple[TlsVersion, ...] = get_args(TlsVersion)
AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)
OAUTH_AUTH_METHODS: tuple[AuthMethod, ...] = ("xoauth2", "oauthbearer")
OAUTH2_PROVIDERS: tuple[OAuth2Provider, ...] = get_args(OAuth2Provider)
CA_CERTIFI = "certifi"  # the bundle shipped with the certifi package (the default)
CA_SYSTEM = "system"  # the operating system's trust store


@dataclass(frozen=True, slots=True)
class OAuth2Preset:
    """What a provider's documentation fixes for every client: endpoints and POP3 scopes."""

    company: str  # for messages: "register an application with Microsoft"
    token_endpoint: str
    device_endpoint: str
    scopes: tuple[str, ...]


# Provenance. These facts were checked against the providers' own documentation (Microsoft:
# "OAuth 2.0 device authorization grant" and "Authenticate an IMAP, POP or SMTP connection
# using OAuth"; Google: "Gmail XOAUTH2 protocol" for the scope). Two could not be confirmed
# there and are stated as such:
# - Google's device endpoint https://oauth2.googleapis.com/device/code is the one Google's
#   client libraries and many programs use, but the documentation page itself could not be
#   read; and Google documents that its device flow grants only "a limited set of scopes". It
#   was not confirmed whether https://mail.google.com/ is among them: if it is not, Google
#   answers invalid_scope and a Gmail account needs another way to obtain a refresh token.
# - Neither provider documents a client id that third-party programs may use, so no preset
#   carries one: client_id is always the user's own registered application (for Google, a
#   "TVs and Limited Input devices" client). Only the endpoints and scopes are preset.
OAUTH2_PRESETS: Mapping[str, OAuth2Preset] = {
    "microsoft": OAuth2Preset(
        company="Microsoft",
        token_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/token",  # noqa: S106
        device_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
        scopes=("https://outlook.office.com/POP.AccessAsUser.All", "offline_access"),
    ),
    "google": OAuth2Preset(
        company="Google",
        token_endpoint="https://oauth2.googleapis.com/token",  # noqa: S106  # a URL
        device_endpoint="https://oauth2.googleapis.com/device/code",
        scopes=("https://mail.google.com/",),
    ),
}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How to reach the server over TLS and which certificate to accept."""

    mode: TlsMode = "implicit"  # "starttls": STLS on a plaintext connection, never plaintext
    ca: str = CA_CERTIFI  # CA_CERTIFI, CA_SYSTEM, or an absolute path to a PEM file/directory
    fingerprint: str | None = None  # "sha256:<64 lowercase hex>": pin the server's certificate
    min_version: TlsVersion = "1.2"
    x509_strict: bool = True  # False relaxes Python 3.13's VERIFY_X509_STRICT for old CAs
    client_cert: Path | None = None
    client_key: Path | None = None  # None: the key is in client_cert's PEM file


@dataclass(frozen=True, slots=True)
class OAuth2Settings:
    """Where and as whom to get OAuth2 access tokens; presets are already filled in."""

    provider: OAuth2Provider
    token_endpoint: str  # https:// (http:// only on the loopback interface, for tests)
    device_endpoint: str  # RFC 8628 device authorization endpoint
    client_id: str
    client_secret: str | None  # Google's "installed app" clients have a non-secret secret
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Account:
    """One POP3S mailbox, how to log in to it, and where its mail goes; every path is absolute.

    ``ca_file`` and ``tls.ca`` always agree: ``ca_file`` is ``Path(tls.ca)`` when ``tls.ca`` is a
    path and None otherwise. Code that builds an Account may set either one; setting both to
    different things raises ValueError (so ``dataclasses.replace`` that changes ``tls.ca``
    must pass ``ca_file=None`` too).
    """

    name: str
    host: str
    username: str
    destination: Path | None  # None only with format "mda": the program decides where
    format: MailFormat = DEFAULT_FORMAT
    port: int = DEFAULT_PORT
    keep: bool = DEFAULT_KEEP  # leave messages on the server after fetching them
    ca_file: Path | None = None  # trust only these CAs instead of certifi's bundle
    timeout: float = DEFAULT_TIMEOUT  # seconds, for connecting and for each reply
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthMethod = "auto"
    password_command: tuple[str, ...] | None = None  # argv, run without a shell
    password_credential: str | None = None  # a file name in $CREDENTIALS_DIRECTORY
    oauth2: OAuth2Settings | None = None
    on_new_mail: tuple[str, ...] | None = None  # argv run after a sync that delivered mail
    on_new_mail_timeout: float = DEFAULT_HOOK_TIMEOUT  # seconds before the hook is stopped
    # Retention and limits (issue 12); sizes in octets as LIST counts them, times in seconds.
    delete_after: float | None = None  # keep = "30d": delete this long after delivery
    max_message_size: int | None = None  # larger messages are not downloaded
    oversize: OversizeAction = "skip"  # what happens to those: left, or deleted unread
    max_messages: int | None = None  # per run; the rest comes next run
    max_bytes: int | None = None  # per run, by LIST size; at least one message is fetched
    mda: tuple[str, ...] | None = None  # argv of the delivery program, with format "mda"
    mda_timeout: float = DEFAULT_MDA_TIMEOUT
    proxy: Proxy | None = None  # connect through this SOCKS5 proxy, which resolves host
    # Header filter and trace headers (issue 12, items 4 and 5).
    filter: tuple[str, ...] | None = None  # argv shown each new message's header: 0/1/2
    filter_timeout: float = DEFAULT_FILTER_TIMEOUT  # seconds per message
    filter_may_delete: bool = False  # whether the filter's exit 2 deletes unread
    add_headers: tuple[TraceHeader, ...] = ()  # prepended to each copy; () keeps it byte-exact

    def __post_init__(self) -> None:
        if self.ca_file is not None:
            if self.tls.ca == CA_CERTIFI:
                object.__setattr__(self, "tls", replace(self.tls, ca=str(self.ca_file)))
            elif self.tls.ca != str(self.ca_file):
                raise ValueError(f"ca_file={self.ca_file!s} contradicts tls.ca={self.tls.ca}")
        elif self.tls.ca not in (CA_CERTIFI, CA_SYSTEM):
            object.__setattr__(self, "ca_file", Path(self.tls.ca))

    @property
    def secret_source(self) -> SecretSource:
        """Where this account's login secret comes from (config allows at most one source)."""
        if self.oauth2 is not None:
            return "oauth2"
        if self.password_command is not None:
            return "password_command"
        if self.password_credential is not None:
            return "password_credential"
        return "keyring"


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
                hint="add an [accounts.NAME] table; pop3s-fetch config example shows one",
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


def example_command(path: Path) -> str:
    """The shell command that starts ``path`` from the annotated example, ready to paste.

    With ``mkdir -p`` first when the directory is missing, as it is on a fresh account:
    the shell's redirection would otherwise fail before pop3s-fetch even runs.
    """
    import shlex  # only on this error path: an ordinary run must not pay for the import

    command = f"pop3s-fetch config example > {shlex.quote(str(path))}"
    if path.parent.is_dir():
        return command
    return f"mkdir -p {shlex.quote(str(path.parent))} && {command}"


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
                f"~/.config/{CONFIG_RELATIVE_PATH.as_posix()}); run: pop3s-fetch init, or start "
                f"from the annotated example: {example_command(path)}"
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
    loaded = parse(text, path)
    problems = _unreadable_files(loaded)
    if problems:
        count = len(problems)
        raise ConfigError(
            f"{path}: {count} problem{'s' if count > 1 else ''} in the configuration",
            problems=problems,
        )
    return loaded


def _unreadable_files(loaded: Config) -> list[str]:
    """Files the configuration names that cannot be read now (a CA, a client certificate).

    Checked when a file is loaded, not when text is parsed: a typo in a path should be a
    configuration error (exit 78) at once, not a TLS refusal (exit 69) at the first connection.
    """
    problems: list[str] = []
    for account in loaded.accounts.values():
        tls = account.tls
        named: list[tuple[str, Path | None, bool]] = [
            ("ca", _ca_path(tls.ca), True),  # ca_file is the older spelling of the same key
            ("client_cert", tls.client_cert, False),
            ("client_key", tls.client_key, False),
        ]
        for key, file, directory_ok in named:
            if file is None:
                continue
            where = f"{loaded.path}: accounts.{_toml_key(account.name)}.{key}"
            if not file.exists():
                problems.append(f"{where}: there is no file {file}")
            elif file.is_dir() and not directory_ok:
                problems.append(f"{where}: {file} is a directory, not a file")
            elif not os.access(file, os.R_OK):
                problems.append(f"{where}: {file} is not readable by this user")
    return problems


def _ca_path(ca: str) -> Path | None:
    return None if ca in (CA_CERTIFI, CA_SYSTEM) else Path(ca)


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


_SHELL_VARIABLE = re.compile(r"\$\{?[A-Za-z_]")


def _expect_path(value: object, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"expected a non-empty path, got {_toml_value(value)}")
    if "\0" in value:
        raise _Invalid(f"a path cannot contain a NUL character, got {_toml_value(value)}")
    if _SHELL_VARIABLE.search(value):
        # TOML is not a shell: "$HOME/Mail" would become <config dir>/$HOME/Mail.
        raise _Invalid(
            f"{_toml_value(value)} names a shell variable, which is not expanded here; "
            "write the path itself, or ~ for your home directory"
        )
    try:
        expanded = Path(value).expanduser()
    except RuntimeError:  # "~someone" with no such user, or no home directory at all
        raise _Invalid(f"cannot expand the ~ in {_toml_value(value)}") from None
    return base / expanded  # an absolute `expanded` replaces `base`


def _meant(value: str | None) -> str:
    """`` (did you mean VALUE?)`` for a mistake with one obvious reading, else nothing."""
    return f" (did you mean {value}?)" if value is not None else ""


def _in_other_case(value: object, choices: Sequence[str]) -> str | None:
    """The choice ``value`` spells in other letter case (``"Maildir"``), as TOML writes it."""
    if isinstance(value, str) and value.strip().lower() in choices:
        return _toml_string(value.strip().lower())
    return None


#: A number written as a string, as many other programs' config files take them: "995", "60s".
_QUOTED_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds|m|min|minutes|h)?\s*")
_UNIT_SECONDS = {"m": 60, "min": 60, "minutes": 60, "h": 3600}


def _expect_format(value: object, _base: Path) -> MailFormat:
    if value not in ("maildir", "mbox", "mda"):
        guess = _meant(_in_other_case(value, ("maildir", "mbox", "mda")))
        raise _Invalid(f'expected "maildir", "mbox" or "mda", got {_toml_value(value)}{guess}')
    return value


def _unquoted(value: object, lowest: int, highest: int | None = None) -> str | None:
    """``995, without quotes`` for ``"995"`` when 995 is in range; other programs quote numbers."""
    digits = value.strip() if isinstance(value, str) else ""
    if not (digits.isascii() and digits.isdigit()):
        return None
    number = int(digits)
    in_range = number >= lowest and (highest is None or number <= highest)
    return f"{number}, without quotes" if in_range else None


def _expect_port(value: object, _base: Path) -> int:
    # bool is a subclass of int, but `port = true` is a mistake, not port 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        guess = _meant(_unquoted(value, 1, 65535))
        raise _Invalid(f"expected an integer 1-65535, got {_toml_value(value)}{guess}")
    return value


def _expect_bool(value: object, _base: Path) -> bool:
    if not isinstance(value, bool):
        guess = None
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on"):
            guess = "true"
        elif isinstance(value, str) and value.strip().lower() in ("false", "no", "off"):
            guess = "false"
        raise _Invalid(f"expected true or false, got {_toml_value(value)}{_meant(guess)}")
    return value


def _expect_timeout(value: object, _base: Path) -> float:
    # The comparison is False for nan, so nan is refused too.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_TIMEOUT
    ):
        match = _QUOTED_NUMBER.fullmatch(value) if isinstance(value, str) else None
        guess = None
        if match:
            seconds = float(match[1]) * _UNIT_SECONDS.get(match[2] or "", 1)
            spelt = f"{seconds:g}" if match[2] else f"{seconds:g}, without quotes"
            guess = spelt if 0 < seconds <= MAX_TIMEOUT else None
        raise _Invalid(
            f"expected a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
            f"got {_toml_value(value)}{_meant(guess)}"
        )
    return float(value)


#: What other programs call our two modes: fetchmail's "ssl", mpop's "tls_starttls".
_TLS_SYNONYMS = {"ssl": "implicit", "tls": "implicit", "pop3s": "implicit", "stls": "starttls"}


def _expect_tls_mode(value: object, _base: Path) -> TlsMode:
    if value not in TLS_MODES:
        guess = _in_other_case(value, TLS_MODES)
        if guess is None and isinstance(value, str) and value.strip().lower() in _TLS_SYNONYMS:
            guess = _toml_string(_TLS_SYNONYMS[value.strip().lower()])
        raise _Invalid(
            f'expected "implicit" or "starttls", got {_toml_value(value)}{_meant(guess)}'
        )
    return value


def _expect_ca(value: object, base: Path) -> str:
    if value in (CA_CERTIFI, CA_SYSTEM):
        return value
    if not isinstance(value, str) or not value:
        raise _Invalid(
            f'expected "{CA_CERTIFI}", "{CA_SYSTEM}" or the path of a PEM file or directory, '
            f"got {_toml_value(value)}"
        )
    return str(_expect_path(value, base))


_FINGERPRINT = re.compile(r"sha256:(?P<hex>[0-9a-f:]+)", re.IGNORECASE)


def _expect_fingerprint(value: object, _base: Path) -> str:
    """Accept what openssl and browsers print (upper case, colons); keep one canonical form."""
    match = _FINGERPRINT.fullmatch(value) if isinstance(value, str) else None
    digits = match["hex"].replace(":", "").lower() if match else ""
    if len(digits) != 64:
        raise _Invalid(
            'expected "sha256:" and 64 hex digits (colons allowed), as printed by '
            f"pop3s-fetch serverinfo NAME, got {_toml_value(value)}"
        )
    return f"sha256:{digits}"


def _expect_tls_version(value: object, _base: Path) -> TlsVersion:
    # `tls_min_version = 1.2` (a TOML float) is what people will write, so accept it too.
    text = repr(value) if isinstance(value, float) else value
    if text not in TLS_VERSIONS:
        raise _Invalid(f'expected "1.2" or "1.3", got {_toml_value(value)}')
    return text


def _expect_auth(value: object, _base: Path) -> AuthMethod:
    # SASL names are upper case on the wire and in serverinfo output; accept either case.
    method = value.lower() if isinstance(value, str) else value
    if method not in AUTH_METHODS:
        choices = ", ".join(f'"{m}"' for m in AUTH_METHODS)
        raise _Invalid(f"expected one of {choices}, got {_toml_value(value)}")
    return method


def _expect_argv(value: object, _base: Path) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(arg, str) and arg for arg in value)
    ):
        raise _Invalid(
            'expected an array of non-empty strings such as ["pass", "show", "mail/work"] '
            f"(it is run without a shell), got {_toml_value(value)}{_argv_guess(value)}"
        )
    return tuple(value)


#: Characters that make a command line mean more than its words: no array can hold that.
#: Not braces: ``{sender}`` is a placeholder of ``mda`` and ``filter``, and sh has no {a,b}.
_SHELL_SYNTAX = frozenset("|&;<>()$`*?[]~\\")


def _argv_guess(value: object) -> str:
    """For a command written as one string, the array that runs what it says.

    Only words: the words. Shell syntax (a pipe, ``$VAR``, ``~``, a glob), which split into
    words would run something else than meant: the line handed to ``sh -c``.
    """
    if not isinstance(value, str) or not value.strip():
        return ""
    if _SHELL_SYNTAX & set(value):
        return _meant(f'["sh", "-c", {_toml_string(value)}]')
    import shlex  # only on this error path

    try:
        words = shlex.split(value)
    except ValueError:  # an unclosed quote
        return ""
    return _meant("[" + ", ".join(_toml_string(word) for word in words) + "]")


def _expect_hook(value: object, base: Path) -> tuple[str, ...]:
    try:
        return _expect_argv(value, base)
    except _Invalid:
        raise _Invalid(
            'expected an array of non-empty strings such as ["notmuch", "new"] '
            f"(it is run without a shell), got {_toml_value(value)}{_argv_guess(value)}"
        ) from None


def _expect_credential_name(value: object, _base: Path) -> str:
    # The name is joined to $CREDENTIALS_DIRECTORY; it must not lead out of it.
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\0" in value:
        raise _Invalid(
            "expected a credential name as given to LoadCredential= or "
            f'LoadCredentialEncrypted= (a file name, no "/"), got {_toml_value(value)}'
        )
    return value


def _expect_provider(value: object, _base: Path) -> OAuth2Provider:
    if value not in OAUTH2_PROVIDERS:
        raise _Invalid(f'expected "microsoft", "google" or "custom", got {_toml_value(value)}')
    return value


def _expect_endpoint(value: object, _base: Path) -> str:
    """An https URL; plain http only to this machine, where test token servers listen."""
    if not isinstance(value, str) or not _is_acceptable_endpoint(value):
        raise _Invalid(
            "expected an https:// URL (http:// only for 127.0.0.1, localhost or [::1]), "
            f"got {_toml_value(value)}"
        )
    return value


def _is_acceptable_endpoint(url: str) -> bool:
    if any(char.isspace() for char in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
    if parts.username is not None:  # no credentials in URLs: they end up in logs
        return False
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and parts.hostname is not None and is_loopback(parts.hostname)


def _expect_scopes(value: object, _base: Path) -> tuple[str, ...]:
    # Scopes travel space-separated, so a scope with a space in it would become two.
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, str) and s and not any(c.isspace() for c in s) for s in value)
    ):
        raise _Invalid(
            'expected an array of scopes such as ["https://mail.google.com/"], '
            f"got {_toml_value(value)}"
        )
    return tuple(value)


# --- retention and limits: sizes and durations -------------------------------------------

#: Size units: SI (powers of 1000, as the summary line prints sizes) and IEC (powers of 1024).
SIZE_UNITS: Mapping[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
#: Duration units for keep = "30d".
DURATION_UNITS: Mapping[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_ALIASES = {  # what people write instead, and the unit they mean
    **dict.fromkeys(("sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("day", "days"), "d"),
    **dict.fromkeys(("wk", "wks", "week", "weeks"), "w"),
}
_DURATION_NAMES = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SIZE_NAMES = {"kb": "kB", "mb": "MB", "gb": "GB", "kib": "KiB", "mib": "MiB", "gib": "GiB"}
_SIZE_ALIASES = {"k": "kb", "m": "mb", "g": "gb", "ki": "kib", "mi": "mib", "gi": "gib"}
_AMOUNT = re.compile(r"\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]*)\s*")
MAX_DURATION = 100 * 365 * 86400  # a typo'd "3000w" still fits; more is surely a mistake


def _expect_size(value: object, _base: Path) -> int:
    """Octets: an integer, or a string such as "25MB" (10^6) or "25MiB" (2^20), any case."""
    expected = 'expected a size such as "25MB" (25,000,000 bytes), "20MiB" or a number of bytes'
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    match = _AMOUNT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid(f"{expected}, got {_toml_value(value)}")
    number, unit = match["number"], match["unit"].lower() or "b"
    if unit not in SIZE_UNITS:
        close = _SIZE_ALIASES.get(unit) or _SIZE_ALIASES.get(unit.rstrip("s"))
        close = close or _closest(unit, _SIZE_NAMES)
        guess = f' (did you mean "{number}{_SIZE_NAMES[close]}"?)' if close else ""
        raise _Invalid(f"{expected}, got {_toml_value(value)}{guess}")
    octets = int(float(number) * SIZE_UNITS[unit])
    if octets < 1:
        raise _Invalid(f"expected a size of at least 1 byte, got {_toml_value(value)}")
    return octets


def _expect_count(value: object, _base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        guess = _meant(_unquoted(value, 1))
        raise _Invalid(f"expected a whole number of at least 1, got {_toml_value(value)}{guess}")
    return value


def _expect_oversize(value: object, _base: Path) -> OversizeAction:
    if value not in ("skip", "delete"):
        raise _Invalid(f'expected "skip" or "delete", got {_toml_value(value)}')
    return value


def _expect_keep(value: object, _base: Path) -> bool | float:
    """true, false, or how long after delivery to delete: "30d", "12h", "2w" (seconds out).

    Units are strict (lower case, no space), as "30M" could mean minutes or months; what is
    close gets a "did you mean".
    """
    if isinstance(value, bool):
        return value
    expected = 'expected true, false or a duration such as "30d", "12h" or "2w"'
    match = _AMOUNT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        guess = ""
        if isinstance(value, int | float) and value in (0, 1):
            guess = " (did you mean false?)" if value == 0 else ' (did you mean true, or "1d"?)'
        elif isinstance(value, int | float) and value > 0:
            guess = f' (did you mean "{value:g}d"?)'
        elif isinstance(value, str) and value.lower() in ("yes", "no", "true", "false"):
            guess = f" (did you mean {'false' if value.lower() in ('no', 'false') else 'true'}?)"
        raise _Invalid(f"{expected}, got {_toml_value(value)}{guess}")
    number, written = match["number"], match["unit"]
    unit = _DURATION_ALIASES.get(written.lower(), written.lower())
    if unit in ("mo", "month", "months", "y", "yr", "year", "years"):
        days = float(number) * (30 if unit.startswith("m") else 365)
        raise _Invalid(f'months and years are not units here (did you mean "{days:g}d"?)')
    if unit not in DURATION_UNITS or "." in number:
        raise _Invalid(f"{expected} (a whole number and s, m, h, d or w), got {_toml_value(value)}")
    if value != number + unit:
        meaning = f"{number} {_DURATION_NAMES[unit]}"
        raise _Invalid(
            f'expected a duration such as "30d", got {_toml_value(value)} '
            f'(did you mean "{number}{unit}", {meaning}?)'
        )
    seconds = int(number) * DURATION_UNITS[unit]
    if seconds == 0:
        raise _Invalid("a duration of 0 would delete at once (did you mean keep = false?)")
    if seconds > MAX_DURATION:
        raise _Invalid(f"a duration over 100 years is surely a mistake, got {_toml_value(value)}")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """The largest unit that divides ``seconds`` exactly: 2592000 -> "30d"."""
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _expect_mda(value: object, _base: Path) -> tuple[str, ...]:
    """An argv run without a shell, whose ``{name}`` placeholders are all known ones."""
    return _expect_program(value, '"/usr/bin/procmail", "-f", "{sender}"')


def _expect_filter(value: object, _base: Path) -> tuple[str, ...]:
    """The header filter's argv: the same rules (and placeholders) as an MDA's."""
    return _expect_program(value, '"/usr/local/bin/spamcheck", "{sender}"')


def _expect_trace_headers(value: object, _base: Path) -> tuple[str, ...]:
    """Names from TRACE_HEADERS, any case, each once; written in TRACE_HEADERS' order."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise _Invalid(
            f'expected an array such as ["received", "delivered-to"], got {_toml_value(value)}'
        )
    names = [name.lower() for name in value]
    for name in names:
        if name not in TRACE_HEADERS:
            close = _closest(name, TRACE_HEADERS)
            known = ", ".join(f'"{n}"' for n in TRACE_HEADERS)
            advice = f"did you mean {_toml_string(close)}?" if close else f"known: {known}"
            raise _Invalid(f"unknown header {_toml_string(name)} ({advice})")
    if len(set(names)) < len(names):
        raise _Invalid("names a header more than once")
    return tuple(name for name in TRACE_HEADERS if name in names)


def _expect_program(value: object, example: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(arg, str) and arg for arg in value)
    ):
        raise _Invalid(
            f"expected an array of non-empty strings such as [{example}] "
            f"(it is run without a shell), got {_toml_value(value)}{_argv_guess(value)}"
        )
    for index, arg in enumerate(value):
        for name in _PLACEHOLDER.findall(arg):
            if name not in MDA_PLACEHOLDERS:
                close = _closest(name, MDA_PLACEHOLDERS)
                known = ", ".join(f"{{{p}}}" for p in MDA_PLACEHOLDERS)
                advice = f"did you mean {{{close}}}?" if close else f"known: {known}"
                raise _Invalid(f"unknown placeholder {{{name}}} in argument {index + 1} ({advice})")
    if "{" in value[0]:
        raise _Invalid("the program (the first argument) cannot hold a placeholder")
    return tuple(value)


_PROXY_SCHEMES = ("socks5", "socks5h")  # the same here: the proxy always resolves the name
_PROXY_EXAMPLE = '"socks5://127.0.0.1:9050"'


def _expect_proxy(value: object, _base: Path) -> Proxy | None:
    """A SOCKS5 proxy URL, ``socks5://HOST:PORT``; ``false`` means none (over [defaults]).

    Never with credentials: the URL is not echoed then, as it holds a password.
    """
    if value is False:
        return None
    if not isinstance(value, str) or not value or any(char.isspace() for char in value):
        raise _Invalid(
            f"expected a URL such as {_PROXY_EXAMPLE} (or false for a direct connection), "
            f"got {_toml_value(value)}"
        )
    if "@" in value:
        raise _Invalid(
            "a user name or password in the proxy URL is refused: pop3s-fetch does not do "
            "proxy authentication, because its password would sit in this file; remove "
            '"USER:PASSWORD@" and let the proxy accept this machine without one (Tor does)'
        )
    scheme, separator, rest = value.partition("://")
    if not separator:
        raise _Invalid(f'expected a socks5:// URL (did you mean "socks5://{value}"?)')
    if scheme.lower() not in _PROXY_SCHEMES:
        raise _Invalid(
            f'proxy scheme "{scheme}" is not supported, only SOCKS5 is (did you mean '
            f'"socks5://{rest}"?)'
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or not parts.hostname or port == 0:
        raise _Invalid(
            f"expected socks5://HOST:PORT such as {_PROXY_EXAMPLE}, got {_toml_value(value)}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _Invalid(f"expected nothing after HOST:PORT, got {_toml_value(value)}")
    if port is None:
        bare = value.rstrip("/")
        raise _Invalid(
            f'the port is missing (did you mean "{bare}:9050", Tor\'s, or "{bare}:1080"?)'
        )
    return Proxy(parts.hostname, port)


_Converter = Callable[[object, Path], object]

# Every account key, in the order of the Account fields, with its converter.
_ACCOUNT_KEYS: dict[str, _Converter] = {
    "host": _expect_host,
    "username": _expect_non_empty_string,
    "destination": _expect_path,
    "format": _expect_format,
    "port": _expect_port,
    "keep": _expect_keep,
    "ca_file": _expect_path,
    "timeout": _expect_timeout,
    "tls": _expect_tls_mode,
    "ca": _expect_ca,
    "fingerprint": _expect_fingerprint,
    "tls_min_version": _expect_tls_version,
    "x509_strict": _expect_bool,
    "client_cert": _expect_path,
    "client_key": _expect_path,
    "auth": _expect_auth,
    "password_command": _expect_argv,
    "password_credential": _expect_credential_name,
    "on_new_mail": _expect_hook,
    "on_new_mail_timeout": _expect_timeout,
    "max_message_size": _expect_size,
    "oversize": _expect_oversize,
    "max_messages": _expect_count,
    "max_bytes": _expect_size,
    "mda": _expect_mda,
    "mda_timeout": _expect_timeout,
    "proxy": _expect_proxy,
    "filter": _expect_filter,
    "filter_timeout": _expect_timeout,
    "filter_may_delete": _expect_bool,
    "add_headers": _expect_trace_headers,
}
_OAUTH2_KEY = "oauth2"  # a sub-table, validated key by key with _OAUTH2_KEYS
_KNOWN_ACCOUNT_KEYS = (*_ACCOUNT_KEYS, _OAUTH2_KEY)
_OAUTH2_KEYS: dict[str, _Converter] = {
    "provider": _expect_provider,
    "token_endpoint": _expect_endpoint,
    "device_endpoint": _expect_endpoint,
    "client_id": _expect_non_empty_string,
    "client_secret": _expect_non_empty_string,
    "scopes": _expect_scopes,
}
_CUSTOM_OAUTH2_REQUIRED = ("token_endpoint", "device_endpoint", "client_id", "scopes")
_PRESET_OAUTH2_REQUIRED = ("client_id",)
# TOML key -> TlsSettings field ("ca" and "ca_file" are merged separately).
_TLS_KEYS = {
    "tls": "mode",
    "fingerprint": "fingerprint",
    "tls_min_version": "min_version",
    "x509_strict": "x509_strict",
    "client_cert": "client_cert",
    "client_key": "client_key",
}
# Keys that override as a group: setting one in an account drops the others from [defaults].
_CA_KEYS = frozenset({"ca", "ca_file"})
_SECRET_KEYS = ("password_command", "password_credential", _OAUTH2_KEY)
_REQUIRED_KEYS = ("host", "username", "destination")
_TOP_LEVEL_KEYS = ("defaults", "accounts")
#: Every key an account (or [defaults]) table may hold, and every key of its oauth2 table:
#: public so that the documentation tests can check the man page names each one.
ACCOUNT_KEYS: tuple[str, ...] = _KNOWN_ACCOUNT_KEYS
OAUTH2_KEYS: tuple[str, ...] = tuple(_OAUTH2_KEYS)
_PASSWORD_KEY = "password"  # noqa: S105  # the key we refuse, not a secret


@dataclass(frozen=True, slots=True)
class _PartialOAuth2:
    """The valid keys of one oauth2 table, and every key it named (valid or not)."""

    values: dict[str, object]
    present: frozenset[str]

    def under(self, defaults: _PartialOAuth2 | None) -> _PartialOAuth2:
        """Merge onto ``defaults``; a key set here wins."""
        if defaults is None:
            return self
        return _PartialOAuth2(defaults.values | self.values, defaults.present | self.present)


def _inherit(
    defaults: dict[str, object], own: dict[str, object], named: set[str]
) -> dict[str, object]:
    """Merge an account's converted keys (``own``; ``named`` = every key it wrote) onto defaults."""
    merged = dict(defaults)
    for group in (_CA_KEYS, _SECRET_KEYS):
        if named.intersection(group):
            for key in group:
                merged.pop(key, None)
    merged.update(own)
    own_oauth2, default_oauth2 = own.get(_OAUTH2_KEY), defaults.get(_OAUTH2_KEY)
    if isinstance(own_oauth2, _PartialOAuth2) and isinstance(default_oauth2, _PartialOAuth2):
        merged[_OAUTH2_KEY] = own_oauth2.under(default_oauth2)
    return merged


def _listed(keys: Sequence[str]) -> str:
    return ", ".join(keys[:-1]) + f" and {keys[-1]}" if len(keys) > 1 else keys[0]


# What getmail6 and fetchmail call our retention and limit keys, for users who switch.
_PEER_KEYS = {
    "delete_after": 'keep = "30d"',
    "limit": "max_message_size",
    "max_bytes_per_session": "max_bytes",
    "max_messages_per_session": "max_messages",
    "fetchlimit": "max_messages",
    "proxy_host": 'proxy = "socks5://HOST:PORT"',
    "proxy_port": 'proxy = "socks5://HOST:PORT"',
}


def _closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like ``word``, if one is close: for "did you mean" in a mistake."""
    import difflib  # only a configuration with a mistake pays for it

    return next(iter(difflib.get_close_matches(word, list(choices), n=1)), None)


def _unknown_key_message(key: str, known: Sequence[str]) -> str:
    if key in _PEER_KEYS:
        return f"unknown key (did you mean {_PEER_KEYS[key]}?)"
    close = _closest(key, known)
    if close:
        return f"unknown key (did you mean {_toml_string(close)}?)"
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
        values = _inherit(defaults, self.keys(keypath, body, password_hint=hint), set(body))
        required = self.delivery_keys(keypath, body, values)
        for key in required:
            if key not in body and key not in defaults_seen:
                self.problem([*keypath, key], "missing required key (set it here or in [defaults])")
        # A required key may be absent here because its default was invalid (already reported).
        if len(self.problems) > before or any(key not in values for key in required):
            return None
        return self.build(name, values)

    def delivery_keys(
        self, keypath: list[str], body: dict[str, object], values: dict[str, object]
    ) -> tuple[str, ...]:
        """The required keys for this account's format; refuse what that format does not use.

        With format "mda" the program decides where mail goes, so ``destination`` is not
        needed, and ``mda`` is. A key the account's own table sets for the other kind of
        delivery is a mistake; one it inherits from [defaults] is simply not used.
        """
        if values.get("format") == "mda":
            if "destination" in body:
                self.problem(
                    [*keypath, "destination"],
                    'not used with format = "mda" (the MDA decides where mail goes); remove it',
                )
            values.pop("destination", None)
            return (*(key for key in _REQUIRED_KEYS if key != "destination"), "mda")
        for key in ("mda", "mda_timeout"):
            if key in body:
                self.problem(
                    [*keypath, key],
                    'used only with format = "mda"; remove it, or set format = "mda"',
                )
            values.pop(key, None)
        return _REQUIRED_KEYS

    def build(self, name: str, values: dict[str, object]) -> Account | None:
        """Apply the rules that involve several keys, then make the Account."""
        keypath = ["accounts", name]
        before = len(self.problems)
        tls = self.tls_settings(keypath, values)
        partial = values.get(_OAUTH2_KEY)
        oauth2 = (
            self.oauth2_settings([*keypath, _OAUTH2_KEY], partial)
            if isinstance(partial, _PartialOAuth2)
            else None
        )
        auth = values.get("auth", "auto")
        if auth in OAUTH_AUTH_METHODS and partial is None:
            self.problem(
                [*keypath, "auth"],
                f'"{auth}" logs in with an OAuth2 token; add an [accounts.{name}.oauth2] '
                "table (or [defaults.oauth2])",
            )
        elif partial is not None and auth not in ("auto", *OAUTH_AUTH_METHODS):
            self.problem(
                [*keypath, "auth"],
                f'"{auth}" logs in with a password, but this account has an oauth2 table; '
                'use "auto", "xoauth2" or "oauthbearer"',
            )
        if "oversize" in values and "max_message_size" not in values:
            self.problem(
                [*keypath, "oversize"],
                'has no effect without max_message_size (such as max_message_size = "25MB")',
            )
        self.filter_keys(keypath, values)
        if len(self.problems) > before:
            return None
        fields = {key: values[key] for key in _ACCOUNT_KEYS if key in values}
        for key in ("ca_file", "ca", *_TLS_KEYS):
            fields.pop(key, None)
        if not isinstance(fields.get("keep", True), bool):  # keep = "30d": kept, then deleted
            fields["delete_after"], fields["keep"] = fields["keep"], True
        fields["port"] = values.get(
            "port", STARTTLS_PORT if tls.mode == "starttls" else DEFAULT_PORT
        )
        fields.setdefault("destination", None)  # format "mda" has none
        return Account(name=name, tls=tls, oauth2=oauth2, **fields)  # type: ignore[arg-type]

    def filter_keys(self, keypath: list[str], values: dict[str, object]) -> None:
        """The header filter's and add_headers' rules that involve other keys."""
        for key in ("filter_timeout", "filter_may_delete"):
            if key in values and "filter" not in values:
                self.problem(
                    [*keypath, key],
                    'has no effect without filter (such as filter = ["/usr/local/bin/spamcheck"])',
                )
        names = values.get("add_headers", ())
        user = values.get("username")
        if (
            isinstance(names, tuple)
            and set(names) - {"received"}
            and isinstance(user, str)
            and not re.fullmatch(r"[!-~]+", user)
        ):
            self.problem(
                [*keypath, "add_headers"],
                "Delivered-To and X-Original-To name the username, which must then be one "
                "word of printable ASCII; remove them from add_headers",
            )

    def tls_settings(self, keypath: list[str], values: dict[str, object]) -> TlsSettings:
        """Collect the TLS keys; STLS is the default on the plaintext POP3 port."""
        fields = {field: values[key] for key, field in _TLS_KEYS.items() if key in values}
        if "tls" not in values and values.get("port") == STARTTLS_PORT:
            fields["mode"] = "starttls"
        ca = values.get("ca", values.get("ca_file"))
        if ca is not None:
            fields["ca"] = str(ca)
        if "client_key" in values and "client_cert" not in values:
            self.problem(
                [*keypath, "client_key"],
                "set client_cert too (the certificate that goes with this key)",
            )
        return TlsSettings(**fields)  # type: ignore[arg-type]  # checked by converters

    def oauth2_settings(self, keypath: list[str], partial: _PartialOAuth2) -> OAuth2Settings | None:
        """Fill a provider's preset in, then insist on whatever is still missing."""
        values = partial.values
        provider = values.get("provider")
        if provider is None:
            if "provider" not in partial.present:
                self.problem([*keypath, "provider"], _missing_oauth2_key("provider"))
            return None
        preset = OAUTH2_PRESETS.get(str(provider))
        required = _PRESET_OAUTH2_REQUIRED if preset else _CUSTOM_OAUTH2_REQUIRED
        missing = [key for key in required if key not in partial.present]
        for key in missing:
            self.problem([*keypath, key], _missing_oauth2_key(key, provider=str(provider)))
        if missing or any(key not in values for key in required):
            return None
        filled: dict[str, object] = {
            "token_endpoint": preset.token_endpoint if preset else None,
            "device_endpoint": preset.device_endpoint if preset else None,
            "scopes": preset.scopes if preset else None,
            "client_secret": None,
        }
        return OAuth2Settings(**(filled | values))  # type: ignore[arg-type]  # checked above

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
            if key == _OAUTH2_KEY:
                partial = self.oauth2_keys(where, raw)
                if partial is not None:
                    values[key] = partial
                continue
            convert = _ACCOUNT_KEYS.get(key)
            if convert is None:
                self.problem(where, _unknown_key_message(key, _KNOWN_ACCOUNT_KEYS))
                continue
            try:
                values[key] = convert(raw, self.base)
            except _Invalid as err:
                self.problem(where, str(err))
        self.exclusive_keys(keypath, table)
        return values

    def exclusive_keys(self, keypath: list[str], table: dict[str, object]) -> None:
        """Report keys that contradict each other within one table."""
        if table.keys() >= _CA_KEYS:
            self.problem(
                [*keypath, "ca_file"],
                "set ca or ca_file, not both (ca_file = PATH is the older spelling of ca = PATH)",
            )
        sources = [key for key in _SECRET_KEYS if key in table]
        if len(sources) > 1:
            self.problem(
                keypath,
                "set at most one of password_command, password_credential and oauth2 "
                f"(found {_listed(sources)})",
            )

    def oauth2_keys(self, keypath: list[str], table: object) -> _PartialOAuth2 | None:
        if not isinstance(table, dict):
            self.problem(keypath, f"expected a table, got {_toml_value(table)}")
            return None
        values: dict[str, object] = {}
        for key, raw in table.items():
            convert = _OAUTH2_KEYS.get(key)
            if convert is None:
                self.problem([*keypath, key], _unknown_key_message(key, list(_OAUTH2_KEYS)))
                continue
            try:
                values[key] = convert(raw, self.base)
            except _Invalid as err:
                self.problem([*keypath, key], str(err))
        return _PartialOAuth2(values, frozenset(table))


def _missing_oauth2_key(key: str, *, provider: str | None = None) -> str:
    preset = OAUTH2_PRESETS.get(provider or "")
    if preset is not None and key == "client_id":
        why = f"register an application with {preset.company} to get one; "
    else:
        why = f'provider "{provider}" needs it; ' if provider else ""
    return f"missing required key ({why}set it here or in [defaults.oauth2])"
