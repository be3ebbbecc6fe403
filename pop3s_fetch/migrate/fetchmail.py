"""fetchmail's run control file (``~/.fetchmailrc``) and its UIDL list (``~/.fetchids``).

The rc file is free-form: tokens (keywords, numbers, unquoted and double-quoted strings, with
fetchmail's backslash escapes), ``#`` comments, noise words (``with``, ``and``, ``options``...)
and ignored punctuation, grouped into ``set`` statements and ``poll``/``skip``/``defaults``
entries, each with server options, then users with their options. The id file holds one line
per UIDL fetchmail has seen: ``user@label UIDL``. Parsed here from the manual page's
description of the grammar; every option met is translated or named in a note.
Knows nothing of our configuration file, the keyring or the state store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pop3s_fetch.migrate.model import (
    PeerAccount,
    PeerFileError,
    account_name,
    mda_argv,
    sha256_fingerprint,
    unique_names,
)

#: Words fetchmail ignores, "to make entries resemble English".
_NOISE = frozenset({"and", "with", "has", "wants", "options"})
_ENTRY = frozenset({"poll", "skip", "server", "defaults"})
#: Options taking one value.
_VALUE = frozenset(
    {
        "via",
        "proto",
        "protocol",
        "port",
        "service",
        "auth",
        "authenticate",
        "timeout",
        "interval",
        "principal",
        "esmtpname",
        "esmtppassword",
        "bad-header",
        "plugin",
        "plugout",
        "envelope",
        "qvirtual",
        "interface",
        "monitor",
        "pass",
        "password",
        "sslcert",
        "sslcertfile",
        "sslcertpath",
        "sslfingerprint",
        "sslkey",
        "sslproto",
        "smtpaddress",
        "smtpname",
        "mda",
        "bsmtp",
        "preconnect",
        "postconnect",
        "limit",
        "warnings",
        "batchlimit",
        "fetchlimit",
        "fetchsizelimit",
        "fastuidl",
        "expunge",
        "properties",
        "lmtp",
        "showdots",
        "tracepolls",
    }
)
#: Options taking a list of values (until the next keyword).
_LIST = frozenset({"aka", "localdomains", "folder", "smtphost", "fetchdomains", "antispam"})
#: Options that are flags (``no`` before one turns it off).
_FLAG = frozenset(
    {
        "ssl",
        "sslcertck",
        "keep",
        "flush",
        "limitflush",
        "fetchall",
        "rewrite",
        "stripcr",
        "forcecr",
        "pass8bits",
        "dropstatus",
        "dropdelivered",
        "mimedecode",
        "idle",
        "uidl",
        "dns",
        "checkalias",
        "envelope",
        "tracepolls",
        "softbounce",
        "bouncemail",
        "spambounce",
        "syslog",
        "invisible",
    }
)
_SET_VALUE = frozenset({"daemon", "postmaster", "logfile", "idfile", "pidfile", "properties"})
_USER_WORDS = frozenset({"user", "username", "is", "to", "here", "there"})
_KEYWORDS = _NOISE | _ENTRY | _VALUE | _LIST | _FLAG | _USER_WORDS | {"set", "no"}

#: Options whose behaviour pop3s-fetch has built in: named in a note, with no key to set.
_BUILT_IN = {
    "sslcertck": "pop3s-fetch always verifies the certificate",
    "uidl": "pop3s-fetch always tracks messages by UIDL",
    "no rewrite": "pop3s-fetch never rewrites headers",
    "no mimedecode": "pop3s-fetch never decodes MIME",
    "pass8bits": "pop3s-fetch keeps every byte",
    "no fetchall": "pop3s-fetch fetches only messages it has not delivered",
}
_NO_EQUIVALENT = {
    "fetchall": "has no equivalent: pop3s-fetch fetches each message once "
    "(pop3s-fetch state forget ACCOUNT --all fetches everything again)",
    "flush": "has no equivalent: pop3s-fetch deletes only what it delivered (keep = false)",
    "limitflush": "has no equivalent: oversize messages are left, or deleted with "
    'oversize = "delete"',
    "rewrite": "has no equivalent: pop3s-fetch never rewrites headers",
    "mimedecode": "has no equivalent: pop3s-fetch stores messages byte for byte",
    "stripcr": "has no equivalent: pop3s-fetch always stores LF line ends",
    "forcecr": "has no equivalent: pop3s-fetch always stores LF line ends",
    "idle": "has no equivalent: use pop3s-fetch sync --every",
    "folder": "has no equivalent: POP3 has one mailbox",
    "smtphost": "has no equivalent: pop3s-fetch writes a Maildir or mbox, or runs an MDA",
    "bsmtp": "has no equivalent: pop3s-fetch writes a Maildir or mbox, or runs an MDA",
    "lmtp": "has no equivalent: pop3s-fetch writes a Maildir or mbox, or runs an MDA",
    "preconnect": "has no equivalent: run the command before pop3s-fetch",
    "postconnect": "has no equivalent: use on_new_mail (runs after a sync that delivered)",
    "expunge": "has no equivalent: deletions are made final at the end of each session",
    "interval": "has no equivalent: every sync polls every account",
    "set logfile": "has no equivalent: pop3s-fetch writes to stderr (the journal under systemd)",
    "set syslog": "has no equivalent: pop3s-fetch writes to stderr (the journal under systemd)",
    "set no syslog": "needs no key: pop3s-fetch writes to stderr, not to syslog",
    "set pidfile": "has no equivalent: pop3s-fetch locks each account in its state directory",
    "set postmaster": "has no equivalent: pop3s-fetch forwards and bounces nothing",
    "set daemon": "has no equivalent in the file: run pop3s-fetch sync --every, or "
    "pop3s-fetch systemd --install",
}


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    line: int
    quoted: bool

    @property
    def word(self) -> str | None:
        """The keyword this token is, if it is one (quoted strings never are)."""
        lowered = self.text.lower()
        return None if self.quoted or lowered not in _KEYWORDS else lowered


def tokenize(text: str, path: Path) -> list[_Token]:
    """Split an rc file into tokens, dropping comments and the ignored punctuation ``,;:=``."""
    tokens: list[_Token] = []
    line, i, size = 1, 0, len(text)
    while i < size:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace() or c in ",;:=":
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = size if end < 0 else end
        elif c == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise PeerFileError(path, line, "a quoted string is not closed")
            raw = text[i + 1 : end]
            tokens.append(_Token(_unescape(raw), line, quoted=True))
            line += raw.count("\n")
            i = end + 1
        else:
            start = i
            while i < size and not text[i].isspace() and text[i] not in ',;:="#':
                i += 1
            tokens.append(_Token(text[start:i], line, quoted=False))
    return tokens


def _unescape(raw: str) -> str:
    """fetchmail's escapes: \\n \\t \\b \\r, \\nnn, \\0ooo, \\xhh; a backslash-newline joins."""
    out: list[str] = []
    i = 0
    simple = {"n": "\n", "t": "\t", "b": "\b", "r": "\r"}
    while i < len(raw):
        c = raw[i]
        if c != "\\" or i + 1 == len(raw):
            out.append(c)
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt == "\n":
            i += 2
        elif nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "x":
            digits = _run(raw, i + 2, "0123456789abcdefABCDEF", 2)
            out.append(chr(int(digits, 16)) if digits else "x")
            i += 2 + len(digits)
        elif nxt == "0":
            digits = _run(raw, i + 2, "01234567", 2)  # \0 and two more: three octal digits
            out.append(chr(int(digits, 8)) if digits else "\0")
            i += 2 + len(digits)
        elif nxt.isdigit():
            digits = _run(raw, i + 1, "0123456789", 3)
            out.append(chr(int(digits) % 256))
            i += 1 + len(digits)
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def _run(text: str, start: int, allowed: str, limit: int) -> str:
    end = start
    while end < len(text) and end - start < limit and text[end] in allowed:
        end += 1
    return text[start:end]


#: One option as written: its value (True/False for flags, text, or a list) and its line.
_Options = dict[str, tuple[object, int]]


@dataclass
class _User:
    remote: str
    line: int
    options: _Options
    local_names: list[str]


@dataclass
class _Entry:
    label: str
    line: int
    skip: bool
    options: _Options
    users: list[_User]


@dataclass
class RcFile:
    """A parsed rc file: its entries, its ``set`` statements, and the id file it names."""

    path: Path
    entries: list[_Entry]
    settings: _Options


class _Reader:
    def __init__(self, tokens: list[_Token], path: Path) -> None:
        self.tokens = tokens
        self.path = path
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            last = self.tokens[-1].line if self.tokens else 1
            raise PeerFileError(self.path, last, f"the file ends where {what} was expected")
        self.index += 1
        return token

    def value(self, option: str) -> _Token:
        token = self.take(f"a value for `{option}`")
        if token.word in _ENTRY | {"set"}:
            raise PeerFileError(self.path, token.line, f"`{option}` needs a value")
        return token


def parse_rc(text: str, path: Path) -> RcFile:
    """Parse an rc file's text into entries; raises :class:`PeerFileError` on a syntax error."""
    reader = _Reader(tokenize(text, path), path)
    entries: list[_Entry] = []
    settings: _Options = {}
    while (token := reader.peek()) is not None:
        reader.index += 1
        if token.word == "set":
            negated = reader.peek() is not None and reader.tokens[reader.index].word == "no"
            if negated:
                reader.index += 1
            name = reader.take("an option after `set`")
            key = name.text.lower()
            value: object = not negated
            if key in _SET_VALUE and not negated:
                value = reader.value(f"set {key}").text
            settings[("no " if negated else "") + key] = (value, name.line)
        elif token.word in _ENTRY:
            entries.append(_parse_entry(reader, token))
        else:
            raise PeerFileError(
                path,
                token.line,
                f"`{token.text}` where `poll`, `skip`, `defaults` or `set` belongs",
            )
    return RcFile(path, entries, settings)


def _parse_entry(reader: _Reader, start: _Token) -> _Entry:
    label = "" if start.word == "defaults" else reader.value(start.text).text
    entry = _Entry(label, start.line, start.word == "skip", {}, [])
    target = entry.options
    while (token := reader.peek()) is not None and token.word not in _ENTRY | {"set"}:
        reader.index += 1
        word = token.word
        if word in _NOISE or word == "there":
            continue
        if word in {"user", "username"}:
            name = reader.value("user")
            user = _User(name.text, token.line, {}, [])
            _parse_local_names(reader, user)
            entry.users.append(user)
            target = user.options
            continue
        negated = word == "no"
        if negated:
            token = reader.take("an option after `no`")
            word = token.word
        if word is None or word in _USER_WORDS:
            raise PeerFileError(reader.path, token.line, f"unknown keyword `{token.text}`")
        key = word
        if negated or (word in _FLAG and word not in _VALUE):
            target[key] = (not negated, token.line)
        elif word in _LIST:
            values = [reader.value(word).text]
            while (more := reader.peek()) is not None and more.word is None:
                values.append(more.text)
                reader.index += 1
            target[key] = (values, token.line)
        else:
            target[key] = (reader.value(word).text, token.line)
    return entry


def _parse_local_names(reader: _Reader, user: _User) -> None:
    """``user X there is Y here`` (X remote) or ``user Y here is X there`` (X remote)."""
    here_first = False
    while (token := reader.peek()) is not None and token.word in {"here", "there", "is", "to"}:
        reader.index += 1
        if token.word == "here" and not user.local_names:
            here_first = True
        if token.word in {"is", "to"}:
            while (name := reader.peek()) is not None and name.word is None:
                user.local_names.append(name.text)
                reader.index += 1
    if here_first and user.local_names:  # the reversed form: local first, remote after "is"
        user.remote, user.local_names = user.local_names[0], [user.remote]


def read_ids(path: Path) -> dict[str, set[str]]:
    """The id file: for each ``user@label``, the UIDLs fetchmail recorded as seen."""
    seen: dict[str, set[str]] = {}
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return seen
    except OSError as err:
        raise PeerFileError(path, None, f"cannot be read: {err.strerror}") from err
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        owner, _, uidl = line.strip().partition(" ")
        uidl = uidl.strip()
        if len(uidl) >= 2 and uidl[0] == uidl[-1] == '"':
            uidl = uidl[1:-1]
        if "@" not in owner or not uidl or any(c.isspace() for c in uidl):
            raise PeerFileError(path, number, "expected `user@server UIDL`")
        seen.setdefault(owner, set()).add(uidl)
    return seen


def accounts(rc: RcFile, ids_path: Path | None, destination: str) -> list[PeerAccount]:
    """Every user of every entry as an account of ours, with the UIDLs the id file holds.

    ``ids_path`` is the id file (``set idfile`` in the rc file wins over it); ``destination``
    is where mail goes for users that fetchmail forwarded by SMTP (it has no Maildir of its own).
    """
    idfile = rc.settings.get("idfile")
    if idfile is not None:
        ids_path = Path(str(idfile[0])).expanduser()
    seen = read_ids(ids_path) if ids_path is not None else {}
    defaults: _Options = {}
    found: list[PeerAccount] = []
    for entry in rc.entries:
        if not entry.label:
            defaults.update(entry.options)
            continue
        for user in entry.users:
            options = {**defaults, **entry.options, **user.options}
            several = len(entry.users) > 1
            name = account_name(entry.label, user.remote if several else "")
            account = PeerAccount(name=name, path=rc.path, line=user.line)
            _translate(account, entry, user, options, destination)
            uidls = seen.get(f"{user.remote}@{entry.label}", set())
            account.uidls = dict.fromkeys(sorted(uidls))
            if ids_path is not None:
                account.state_looked.append(ids_path)
                if ids_path.exists():
                    account.state_files.append(ids_path)
            found.append(account)
    for key, (_value, line) in rc.settings.items():
        if key not in {"idfile"} and found:
            why = _NO_EQUIVALENT.get(
                f"set {key}", "has no equivalent (pop3s-fetch has no such setting)"
            )
            found[0].note(line, f"set {key}", why)
    unique_names(found)
    return found


def _translate(
    account: PeerAccount, entry: _Entry, user: _User, options: _Options, destination: str
) -> None:
    keys = account.keys
    keys["host"] = str(options.pop("via", (entry.label, 0))[0])
    keys["username"] = user.remote
    if entry.skip:
        account.note(
            entry.line,
            "skip",
            "has no equivalent: the account is imported; fetchmail polled it only when named",
        )
    proto, proto_line = options.pop("proto", options.pop("protocol", ("POP3", entry.line)))
    proto = str(proto).upper()
    if proto == "APOP":
        keys["auth"] = "apop"
    elif proto not in {"POP3", "AUTO"}:
        account.skipped = f"protocol {proto}: pop3s-fetch speaks POP3 only"
        return
    elif proto == "AUTO":
        account.note(proto_line, "proto auto", "translated as POP3 (pop3s-fetch speaks only POP3)")
    port_value = options.pop("port", None) or options.pop("service", None)
    ssl = options.pop("ssl", (False, 0))[0]
    if ssl:
        keys["port"] = 995
    else:
        keys["port"] = 110
        keys["tls"] = "starttls"
        account.note(
            entry.line,
            "no ssl",
            'translated as tls = "starttls": fetchmail used STLS '
            "when offered; pop3s-fetch never logs in without TLS",
        )
    if port_value is not None:
        try:
            keys["port"] = int(str(port_value[0]))
        except ValueError:
            account.note(
                port_value[1],
                f"service {port_value[0]}",
                f"is not a port number; using {keys['port']}",
            )
    # fetchmail's default deletes what it fetched; "keep" leaves it, as here
    keys["keep"] = bool(options.pop("keep", (False, 0))[0])
    for option, key in (("sslcertfile", "ca"), ("sslcertpath", "ca"), ("sslcert", "client_cert"),
                        ("sslkey", "client_key")):  # fmt: skip
        if option in options:
            value, _line = options.pop(option)
            keys[key] = str(Path(str(value)).expanduser())
    if "sslfingerprint" in options:
        value, line = options.pop("sslfingerprint")
        pin = sha256_fingerprint(str(value))
        if pin is None:
            account.note(
                line,
                "sslfingerprint",
                "is not a SHA-256 fingerprint (fetchmail's are "
                "MD5): pin it with the sha256 that pop3s-fetch serverinfo ACCOUNT prints",
            )
        else:
            keys["fingerprint"] = pin
    if "mda" in options:
        value, _line = options.pop("mda")
        keys["format"] = "mda"
        keys["mda"] = mda_argv(str(value), "%F", "%T")
    else:
        keys["destination"] = destination
        account.note(
            user.line,
            "(delivery by SMTP)",
            "has no equivalent: fetchmail forwarded "
            f"to the mail server on localhost; this account writes the Maildir "
            f'{destination} (change destination, or set format = "mda")',
        )
    _numbers(account, options)
    if "pass" in options or "password" in options:
        value, line = options.pop("password") if "password" in options else options.pop("pass")
        account.password = str(value)
        account.password_where = f"{account.path.name} line {line}"
    auth = options.pop("auth", options.pop("authenticate", None))
    if auth is not None:
        method = {"password": None, "any": None, "cram-md5": "cram-md5", "apop": "apop"}.get(
            str(auth[0]).lower(), "?"
        )
        if method == "?":
            account.note(
                auth[1],
                f"auth {auth[0]}",
                "has no equivalent here: auth is left to choose the best method the server offers",
            )
        elif method is not None:
            keys["auth"] = method
    if len(user.local_names) > 1:
        account.note(
            user.line,
            "is " + " ".join(user.local_names),
            "has no equivalent: multidrop delivery to several local users",
        )
    for option, (value, line) in sorted(options.items(), key=lambda item: item[1][1]):
        if isinstance(value, bool):
            shown = option if value else f"no {option}"
        else:
            shown = f"{option} {_shown(value)}"
        if shown in _BUILT_IN:
            account.note(line, shown, f"needs no key: {_BUILT_IN[shown]}")
        else:
            account.note(line, shown, _NO_EQUIVALENT.get(shown, "has no equivalent here"))


def _numbers(account: PeerAccount, options: _Options) -> None:
    for option, key in (("limit", "max_message_size"), ("fetchlimit", "max_messages"),
                        ("timeout", "timeout")):  # fmt: skip
        if option not in options:
            continue
        value, line = options.pop(option)
        try:
            number = int(str(value))
        except ValueError:
            account.note(line, f"{option} {value}", "is not a number; left out")
            continue
        if number > 0:
            account.keys[key] = number
        elif option != "timeout":
            account.note(line, f"{option} 0", "means no limit, as pop3s-fetch's default")


def _shown(value: object) -> str:
    if isinstance(value, list):
        return " ".join(_shown(v) for v in value)
    text = str(value)
    return f'"{text}"' if not text or any(c.isspace() for c in text) else text
