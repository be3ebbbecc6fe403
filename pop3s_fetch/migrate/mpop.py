"""mpop's configuration (``~/.mpoprc``, ``~/.config/mpop/config``) and its UIDL files.

The configuration is a list of lines: ``defaults``, ``account NAME [: BASE[, BASE...]]``, and
``KEY VALUE`` settings that belong to the block above them; a line starting with ``#`` is a
comment, and a value in double quotes keeps its spaces (``\\"`` and ``\\\\`` inside). An account
starts from the ``defaults`` seen before it and the accounts it names after a colon. The UIDL
file (``uidls_file``, ``%U`` the user and ``%H`` the host) holds lists, each opened by a line
`` COUNT HOST USER`` (a leading space) and followed by COUNT UIDLs. Knows nothing of our
configuration file, the keyring or the state store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pop3s_fetch.migrate.model import (
    PeerAccount,
    PeerFileError,
    account_name,
    mda_argv,
    sha256_fingerprint,
    shell_argv,
)

_ON = {"on", ""}  # mpop takes a bare "keep" as "keep on"
_NO_EQUIVALENT = {
    "filter": 'has no equivalent: filter in the MDA (format = "mda")',
    "pipelining": "needs no key: pop3s-fetch pipelines when the server offers PIPELINING",
    "only_new": "needs no key: pop3s-fetch fetches only messages it has not delivered",
    "tls_crl_file": "has no equivalent here",
    "tls_priorities": "has no equivalent: pop3s-fetch uses TLS 1.2 or newer (tls_min_version)",
    "tls_host_override": "has no equivalent: the certificate must name host",
    "tls_certcheck": "needs no key when on: pop3s-fetch always verifies the certificate",
    "proxy_host": "has no equivalent: pop3s-fetch connects directly",
    "proxy_port": "has no equivalent: pop3s-fetch connects directly",
    "source_ip": "has no equivalent here",
    "socket": "has no equivalent here",
    "ntlmdomain": "has no equivalent: pop3s-fetch has no NTLM",
    "eval": "has no equivalent: write the result into the configuration",
}
_AUTH = {"plain", "scram-sha-256", "scram-sha-1", "cram-md5", "apop", "user", "login",
         "xoauth2", "oauthbearer"}  # fmt: skip


@dataclass
class _Setting:
    value: str
    line: int


@dataclass
class Block:
    """``defaults`` or one ``account``: its settings, each with the line that set it."""

    name: str
    line: int
    settings: dict[str, _Setting]


def _value(rest: str, path: Path, line: int) -> str:
    rest = rest.strip()
    if not rest.startswith('"'):
        return rest
    out: list[str] = []
    i = 1
    while i < len(rest):
        c = rest[i]
        if c == "\\" and i + 1 < len(rest):
            out.append(rest[i + 1])
            i += 2
        elif c == '"':
            if rest[i + 1 :].strip():
                raise PeerFileError(path, line, "text after a closing quote")
            return "".join(out)
        else:
            out.append(c)
            i += 1
    raise PeerFileError(path, line, "a quoted value is not closed")


def parse_config(text: str, path: Path) -> list[Block]:
    """The accounts of an mpop configuration, each with its defaults and bases applied."""
    defaults: dict[str, _Setting] = {}
    blocks: dict[str, Block] = {}
    current: dict[str, _Setting] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        command, _, rest = line.partition(" ")
        if "\t" in command:
            command, _, more = command.partition("\t")
            rest = f"{more} {rest}"
        if command == "defaults":
            current = defaults
        elif command == "account":
            name, _, bases = rest.partition(":")
            name = name.strip()
            if not name:
                raise PeerFileError(path, number, "`account` needs a name")
            settings = dict(defaults)
            for base in (b.strip() for b in bases.split(",") if b.strip()):
                if base not in blocks:
                    raise PeerFileError(path, number, f"account {base} is not defined above")
                settings.update(blocks[base].settings)
            blocks[name] = Block(name, number, settings)
            current = settings
        elif current is None:
            raise PeerFileError(path, number, f"`{command}` before any `defaults` or `account`")
        else:
            current[command] = _Setting(_value(rest, path, number), number)
    return list(blocks.values())


def read_uidls(path: Path, host: str, user: str) -> dict[str, float | None] | None:
    """The UIDLs listed for ``host`` and ``user`` in a UIDL file; None if the file is missing."""
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PeerFileError(path, None, f"cannot be read: {err.strerror}") from err
    found: dict[str, float | None] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith(" "):
            if line.strip() and not line.startswith("#"):
                raise PeerFileError(path, i, "expected ` COUNT HOST USER` or a comment")
            continue
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            raise PeerFileError(path, i, "expected ` COUNT HOST USER`")
        count = int(fields[0])
        listed = lines[i : i + count]
        if len(listed) < count or any(not u or u[0].isspace() for u in listed):
            raise PeerFileError(path, i, f"the list promises {count} UIDLs")
        if fields[1] == host and " ".join(fields[2:]) == user:
            found.update(dict.fromkeys(listed))
        i += count
    return found


def uidls_path(
    template: str | None, host: str, user: str, environ: Mapping[str, str]
) -> list[Path]:
    """Where mpop keeps the UIDL file: ``uidls_file``, else its default (new, then old place)."""
    home = Path(environ.get("HOME") or Path.home())
    if template is None:
        data = environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
        candidates = [  # newer mpop's place (a directory, or one file), then mpop 1.4's
            f"{data}/mpop/uidls/%U_at_%H",
            f"{data}/mpop/uidls",
            str(home / ".mpop_uidls" / "%U_at_%H"),
        ]
    else:
        candidates = [template]
    out = []
    for candidate in candidates:
        expanded = candidate.replace("%U", user).replace("%H", host)
        if expanded.startswith("~"):
            expanded = str(home) + expanded[1:]
        out.append(Path(os.path.normpath(expanded)))
    return out


def accounts(blocks: list[Block], path: Path, environ: Mapping[str, str]) -> list[PeerAccount]:
    """Each mpop account as one of ours, with the UIDLs of its UIDL file."""
    return [_translate(block, path, environ) for block in blocks]


def _translate(block: Block, path: Path, environ: Mapping[str, str]) -> PeerAccount:
    settings = dict(block.settings)
    account = PeerAccount(name=account_name(block.name), path=path, line=block.line)
    keys = account.keys

    def take(key: str) -> _Setting | None:
        return settings.pop(key, None)

    host, user = take("host"), take("user")
    if host is None or user is None:
        account.skipped = "no host or user: mpop would not poll it either"
        return account
    keys["host"], keys["username"] = host.value, user.value
    tls, starttls = take("tls"), take("tls_starttls")
    # mpop's defaults: tls off, tls_starttls on; implicit TLS is "tls on" + "tls_starttls off"
    implicit = tls is not None and tls.value in _ON and starttls is not None
    implicit = implicit and starttls is not None and starttls.value not in _ON
    if tls is None or tls.value not in _ON:
        account.note(
            tls.line if tls else block.line,
            "tls off",
            'translated as tls = "starttls": pop3s-fetch never logs in without TLS',
        )
    keys["port"] = 995 if implicit else 110
    if not implicit:
        keys["tls"] = "starttls"
    port = take("port")
    if port is not None:
        try:
            keys["port"] = int(port.value)
        except ValueError:
            account.note(port.line, f"port {port.value}", "is not a port number; left out")
    trust = take("tls_trust_file")
    if trust is not None:
        keys["ca"] = "system" if trust.value == "system" else str(Path(trust.value).expanduser())
    for option, key in (("tls_cert_file", "client_cert"), ("tls_key_file", "client_key")):
        setting = take(option)
        if setting is not None:
            keys[key] = str(Path(setting.value).expanduser())
    pin = take("tls_fingerprint")
    if pin is not None:
        fingerprint = sha256_fingerprint(pin.value)
        if fingerprint is None:
            account.note(
                pin.line,
                "tls_fingerprint",
                "is not SHA-256: pin the sha256 that pop3s-fetch serverinfo ACCOUNT prints",
            )
        else:
            keys["fingerprint"] = fingerprint
    keep = take("keep")
    keys["keep"] = keep is not None and keep.value in _ON  # mpop deletes by default
    _sizes(account, take("killsize"), take("skipsize"))
    auth = take("auth")
    if auth is not None and auth.value not in {"on", ""}:
        if auth.value.lower() in _AUTH:
            keys["auth"] = auth.value.lower()
        else:
            account.note(
                auth.line,
                f"auth {auth.value}",
                "has no equivalent here: auth is left to choose the best method the server offers",
            )
    timeout = take("timeout")
    if timeout is not None and timeout.value.isdigit() and int(timeout.value) > 0:
        keys["timeout"] = int(timeout.value)
    password, command = take("password"), take("passwordeval")
    if password is not None and command is not None:  # the later line: the account's own
        password, command = (None, command) if command.line > password.line else (password, None)
    if password is not None:
        account.password = password.value
        account.password_where = f"{path.name} line {password.line}"
    elif command is not None:
        keys["password_command"] = shell_argv(command.value)
    else:
        account.note(
            block.line,
            "(no password)",
            "mpop may keep it in the keyring under its "
            "own name: run pop3s-fetch password set "
            f"{account.name}",
        )
    _delivery(account, take("delivery"))
    uidls = take("uidls_file")
    candidates = uidls_path(uidls.value if uidls else None, host.value, user.value, environ)
    account.state_looked += candidates
    for candidate in candidates:
        if candidate.is_dir():
            continue
        found = read_uidls(candidate, host.value, user.value)
        if found is not None:
            account.uidls = found
            account.state_files.append(candidate)
            break
    if "received_header" not in settings:
        account.note(
            account.line,
            "received_header (not set)",
            "mpop adds a Received header by default; pop3s-fetch keeps the server's bytes"
            ' unless add_headers = ["received"]',
        )
    for key, setting in sorted(settings.items(), key=lambda item: item[1].line):
        shown = f"{key} {setting.value}".strip()
        if key == "tls_certcheck" and setting.value in _ON:
            continue
        if key == "received_header" and setting.value == "off":
            account.note(
                setting.line, shown, "needs no key: pop3s-fetch adds no header unless asked"
            )
            continue
        if key == "received_header" and setting.value in _ON:
            account.keys["add_headers"] = ["received"]
            continue
        account.note(setting.line, shown, _NO_EQUIVALENT.get(key, "has no equivalent here"))
    return account


def _sizes(account: PeerAccount, kill: _Setting | None, skip: _Setting | None) -> None:
    for setting, oversize in ((skip, "skip"), (kill, "delete")):
        if setting is None:
            continue
        number = _size(setting.value)
        if number is None:
            account.note(setting.line, setting.value, "is not a size; left out")
        elif number > 0:
            account.keys["max_message_size"] = number
            if oversize == "delete":
                account.keys["oversize"] = "delete"


def _size(text: str) -> int | None:
    units = {"k": 1024, "m": 1024**2}
    text = text.strip().lower()
    factor = units.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in units else text
    return int(digits) * factor if digits.isdigit() else None


def _delivery(account: PeerAccount, delivery: _Setting | None) -> None:
    keys = account.keys
    method, _, argument = (delivery.value if delivery else "").partition(" ")
    argument = argument.strip()
    if method in {"maildir", "mbox"} and argument:
        keys["destination"] = str(Path(argument).expanduser())
        keys["format"] = method
    elif method == "mda" and argument:
        keys["format"] = "mda"
        keys["mda"] = mda_argv(argument, "%F", "%T")
    else:
        keys["destination"] = "~/Maildir"
        line = delivery.line if delivery else account.line
        account.note(
            line,
            f"delivery {delivery.value if delivery else '(none)'}",
            "has no equivalent: this account writes the Maildir ~/Maildir "
            "(change destination, or set an mda)",
        )
