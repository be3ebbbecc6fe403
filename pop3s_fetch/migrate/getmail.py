"""getmail6's rc files (INI: ``[retriever]``, ``[destination]``, ``[options]``) and ``oldmail-*``.

An rc file is read with :mod:`configparser` without interpolation (a ``%`` in a password
stays a ``%``); tuple values (``arguments``, ``password_command``) are Python literals, read
with :func:`ast.literal_eval` and never executed. getmail records what it fetched in
``oldmail-SERVER-PORT-USER`` next to the rc file: one line per UIDL, the UIDL, a NUL byte and
the time it was first seen (epoch seconds). Knows nothing of our configuration file, the
keyring or the state store.
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Callable
from pathlib import Path

from pop3s_fetch.migrate.model import PeerAccount, PeerFileError, account_name, sha256_fingerprint

#: Where ``[section] key`` was written, for notes.
_At = Callable[[str, str], int]
_POP3 = {
    "SimplePOP3SSLRetriever": "implicit",
    "MultidropPOP3SSLRetriever": "implicit",
    "BrokenUIDLPOP3SSLRetriever": "implicit",
    "SimplePOP3Retriever": "starttls",
    "MultidropPOP3Retriever": "starttls",
    "BrokenUIDLPOP3Retriever": "starttls",
}
_NO_EQUIVALENT = {
    "read_all": "has no equivalent: pop3s-fetch fetches only messages it has not delivered",
    "delete_bigger_than": 'has no equivalent: use max_message_size with oversize = "delete"',
    "message_log": "has no equivalent: pop3s-fetch reports each run on stderr (or --json)",
    "message_log_syslog": "has no equivalent: under systemd the journal keeps pop3s-fetch's lines",
    "verbose": "has no equivalent: use --quiet or -v",
    "ssl_version": "has no equivalent: pop3s-fetch uses TLS 1.2 or newer (tls_min_version)",
    "ssl_ciphers": "has no equivalent: pop3s-fetch uses Python's default ciphers",
    "ssl_cert_hostname": "has no equivalent: the certificate must name host",
    "envelope_recipient": "has no equivalent: multidrop delivery",
    "user": "has no equivalent: pop3s-fetch delivers as the user running it",
}
_BUILT_IN = {
    ("read_all", "false"): "pop3s-fetch fetches only messages it has not delivered",
    ("delivered_to", "false"): "pop3s-fetch adds no header unless add_headers names it",
    ("received", "false"): "pop3s-fetch adds no header unless add_headers names it",
    ("verbose", "0"): "pop3s-fetch says only what matters (--quiet: only errors)",
    ("verbose", "1"): "pop3s-fetch says only what matters (--quiet: only errors)",
}


def oldmail_name(server: str, port: int, username: str) -> str:
    """The state file name getmail6 uses for a POP3 retriever (``/`` would leave the directory)."""
    return f"oldmail-{server}-{port}-{username}".replace("/", "-")


def read_oldmail(path: Path) -> dict[str, float | None]:
    """UIDL to first-seen time from an ``oldmail-*`` file (a missing file: nothing fetched)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise PeerFileError(path, None, f"cannot be read: {err.strerror}") from err
    seen: dict[str, float | None] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        uidl_bytes, nul, stamp = raw.partition(b"\0")
        uidl = uidl_bytes.decode("utf-8", "surrogateescape")
        if not nul or not uidl or any(c.isspace() for c in uidl):
            raise PeerFileError(path, number, "expected a UIDL, a NUL byte and a time")
        try:
            seen[uidl] = float(stamp.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            seen[uidl] = None  # the UIDL is what matters; the time is only for keep = "Nd"
    return seen


def _lines(path: Path, text: str) -> dict[tuple[str, str], int]:
    """Where each ``[section] key`` is defined, for notes that point at a line."""
    where: dict[tuple[str, str], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        elif stripped and stripped[0] not in "#;" and not line[0].isspace():
            key = stripped.replace(":", "=", 1).split("=", 1)[0].strip().lower()
            where.setdefault((section, key), number)
    del path
    return where


def parse(text: str, path: Path) -> PeerAccount:
    """One rc file as one account, with the UIDLs of the ``oldmail-*`` file beside it."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as err:
        line = getattr(err, "lineno", None)
        raise PeerFileError(path, line, f"not a getmail rc file ({err.message})") from err
    if not parser.has_section("retriever"):
        raise PeerFileError(path, None, "has no [retriever] section: not a getmail rc file")
    lines = _lines(path, text)
    retriever = dict(parser["retriever"])
    kind = retriever.pop("type", "")
    account = PeerAccount(name="", path=path, line=lines.get(("retriever", "type"), 1))

    def at(section: str, key: str) -> int:
        return lines.get((section, key), 1)

    mode = _POP3.get(kind)
    if mode is None:
        account.skipped = f"retriever type {kind or '(none)'}: pop3s-fetch speaks POP3 only"
        return account
    keys = account.keys
    server = retriever.pop("server", "")
    username = retriever.pop("username", "")
    if not server or not username:
        raise PeerFileError(path, account.line, "[retriever] needs server and username")
    keys["host"], keys["username"] = server, username
    default_port = 995 if mode == "implicit" else 110
    port = _integer(account, retriever.pop("port", str(default_port)), at("retriever", "port"))
    keys["port"] = port or default_port
    if mode == "starttls":
        keys["tls"] = "starttls"
        account.note(
            account.line,
            f"type = {kind}",
            'translated as tls = "starttls": pop3s-fetch never logs in without TLS',
        )
    account.name = account_name(path.stem if path.name != "getmailrc" else server)
    if "password" in retriever:
        account.password = retriever.pop("password")
        account.password_where = f"{path.name} line {at('retriever', 'password')}"
    if "password_command" in retriever:
        argv = _literal(
            account, retriever.pop("password_command"), at("retriever", "password_command")
        )
        if argv:
            keys["password_command"] = argv
    for option, key in (("ca_certs", "ca"), ("certfile", "client_cert"), ("keyfile", "client_key")):
        if option in retriever:
            keys[key] = str(Path(retriever.pop(option)).expanduser())
    if "ssl_fingerprints" in retriever:
        raw = retriever.pop("ssl_fingerprints")
        prints = "".join(c if c not in "(),'\"" else " " for c in raw).split()
        pins = [sha256_fingerprint(p) for p in prints]
        if len(pins) == 1 and pins[0] is not None:
            keys["fingerprint"] = pins[0]
        else:
            account.note(
                at("retriever", "ssl_fingerprints"),
                "ssl_fingerprints",
                "has no equivalent unless it is one SHA-256 fingerprint",
            )
    if retriever.pop("use_apop", "false").lower() in {"true", "1", "yes", "on"}:
        keys["auth"] = "apop"
    if "timeout" in retriever:
        keys["timeout"] = _integer(account, retriever.pop("timeout"), at("retriever", "timeout"))
    for key, value in retriever.items():
        account.note(
            at("retriever", key),
            f"{key} = {value}",
            _NO_EQUIVALENT.get(key, "has no equivalent here"),
        )
    _destination(account, parser, at)
    _options(account, parser, at)
    for section in parser.sections():
        if section not in {"retriever", "destination", "options"}:
            account.note(
                at(section, "type") if (section, "type") in lines else 1,
                f"[{section}]",
                "has no equivalent: filter in the MDA, or with on_new_mail",
            )
    oldmail = path.parent / oldmail_name(server, port or default_port, username)
    account.uidls = read_oldmail(oldmail)
    account.state_looked.append(oldmail)
    if oldmail.exists():
        account.state_files.append(oldmail)
    return account


def _destination(account: PeerAccount, parser: configparser.ConfigParser, at: _At) -> None:
    keys = account.keys
    destination = dict(parser["destination"]) if parser.has_section("destination") else {}
    kind = destination.pop("type", "")
    line = at("destination", "type")
    if kind == "Maildir" and "path" in destination:
        keys["destination"] = str(Path(destination.pop("path")).expanduser())
        keys["format"] = "maildir"
    elif kind in {"Mboxrd", "Mboxo"} and "path" in destination:
        keys["destination"] = str(Path(destination.pop("path")).expanduser())
        keys["format"] = "mbox"
        if kind == "Mboxo":
            account.note(
                line, "type = Mboxo", "translated as mbox, which pop3s-fetch writes as mboxrd"
            )
    elif kind == "MDA_external" and "path" in destination:
        argv = [destination.pop("path")]
        if "arguments" in destination:
            extra = _literal(account, destination.pop("arguments"), at("destination", "arguments"))
            argv += extra or []
        keys["format"] = "mda"
        where = at("destination", "arguments")
        keys["mda"] = [_placeholders(account, arg, where) for arg in argv]
    else:
        keys["destination"] = "~/Maildir"
        account.note(
            line,
            f"type = {kind or '(none)'}",
            "has no equivalent: this account "
            "writes the Maildir ~/Maildir (change destination, or set an mda)",
        )
    for key, value in destination.items():
        account.note(
            at("destination", key),
            f"{key} = {value}",
            _NO_EQUIVALENT.get(key, "has no equivalent here"),
        )


def _placeholders(account: PeerAccount, arg: str, line: int) -> str:
    """getmail's ``%(sender)`` and ``%(recipient)`` become ours; others are named in a note."""
    out = arg.replace("%(sender)", "{sender}").replace("%(recipient)", "{recipient}")
    if "%(" in out:
        account.note(
            line,
            arg,
            "uses a getmail placeholder pop3s-fetch does not fill "
            "({sender}, {recipient}, {account} and {uidl} are what it offers)",
        )
    return out


def _options(account: PeerAccount, parser: configparser.ConfigParser, at: _At) -> None:
    keys = account.keys
    options = dict(parser["options"]) if parser.has_section("options") else {}
    delete = options.pop("delete", "false").strip().lower() in {"true", "1", "yes", "on"}
    keys["keep"] = not delete
    if "delete_after" in options:
        days = _integer(account, options.pop("delete_after"), at("options", "delete_after"))
        if days and not delete:
            keys["keep"] = f"{days}d"
    for option, key in (("max_message_size", "max_message_size"),
                        ("max_messages_per_session", "max_messages"),
                        ("max_bytes_per_session", "max_bytes")):  # fmt: skip
        if option in options:
            number = _integer(account, options.pop(option), at("options", option))
            if number:
                keys[key] = number
    _trace_headers(account, options, at)
    for key, value in options.items():
        built_in = _BUILT_IN.get((key, value.strip().lower()))
        if built_in is not None:
            account.note(at("options", key), f"{key} = {value}", f"needs no key: {built_in}")
        else:
            account.note(
                at("options", key),
                f"{key} = {value}",
                _NO_EQUIVALENT.get(key, "has no equivalent here"),
            )


def _integer(account: PeerAccount, text: str, line: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        account.note(line, text, "is not a whole number; left out")
        return 0


def _literal(account: PeerAccount, text: str, line: int) -> list[str] | None:
    """A tuple of strings written as a Python literal (never evaluated as code)."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
        account.note(line, text, "is not a tuple of strings; left out")
        return None
    return [str(v) for v in value]


def _trace_headers(account: PeerAccount, options: dict[str, str], at: _At) -> None:
    """getmail's ``received`` and ``delivered_to`` (on unless set false) as ``add_headers``.

    Only what the file says is translated: where it is silent, getmail's default (both on)
    is named in a note instead, so the copy stays the server's bytes unless the user asks.
    """
    headers: list[str] = []
    unset: list[str] = []
    for option, header in (("received", "received"), ("delivered_to", "delivered-to")):
        value = options.get(option)
        if value is None:
            unset.append(option)
        elif value.strip().lower() in {"true", "1", "yes", "on"}:
            del options[option]
            headers.append(header)
    if headers:
        account.keys["add_headers"] = headers
    if unset:
        account.note(
            account.line,
            " and ".join(f"{option} (not set)" for option in unset),
            "getmail adds that header by default; pop3s-fetch keeps the server's bytes unless"
            " add_headers names it (received, delivered-to)",
        )
