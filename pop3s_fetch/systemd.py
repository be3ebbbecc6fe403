"""``pop3s-fetch systemd``: a user service and timer that run ``sync`` unattended.

Owns the text of the two unit files and their installation into the user's unit directory.
One plain ``pop3s-fetch.service`` (not a template) runs one ``sync`` over the accounts named, or
over every configured account when none is named: ``sync`` already runs accounts in parallel
and exits with the first failure's code, so one timer per account would only multiply the
units a user has to look after. The timer is monotonic (``OnBootSec=`` then
``OnUnitActiveSec=``), so any interval works, and ``RandomizedDelaySec=`` keeps many machines
from polling one server in the same second.

The hardening keeps what a sync needs: the session bus (the Secret Service lives there), the
network, and write access to ``$HOME`` (mail and state). Options that need user namespaces in a
user manager (``PrivateTmp=``, ``ProtectSystem=``, ``ProtectHome=``) are left out: they fail
the unit where unprivileged user namespaces are disabled, and ``ProtectHome=`` would hide the
mail.

Must not know: click or rich, the configuration format, keyring, or how mail is fetched.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from pop3s_fetch.durable import fsync_directory, fsync_file, make_dirs_durably
from pop3s_fetch.errors import ExitCode, Pop3sFetchError

SERVICE_NAME = "pop3s-fetch.service"
TIMER_NAME = "pop3s-fetch.timer"
UNIT_FILE_MODE = 0o644
DEFAULT_INTERVAL = "15min"
#: Waiting on a previous run that still holds an account beats failing with exit 75.
LOCK_WAIT_SECONDS = 300
#: Polling more often than this gains nothing and gets accounts throttled by providers.
MIN_INTERVAL_SECONDS = 60
#: Spread over at most this much, so a 1-day interval does not drift by hours.
MAX_RANDOM_DELAY_SECONDS = 300

ENABLE_COMMAND = f"systemctl --user daemon-reload && systemctl --user enable --now {TIMER_NAME}"


class UnitInstallError(Pop3sFetchError):
    """A unit file could not be written, or one that differs is in the way."""

    exit_code = ExitCode.IOERR


def units(
    accounts: Sequence[str],
    *,
    executable: str,
    interval: str = DEFAULT_INTERVAL,
    config_path: Path | None = None,
) -> dict[str, str]:
    """Return ``{file name: content}`` for the service and the timer.

    ``executable`` is the absolute path of the ``pop3s-fetch`` script; ``config_path``, when
    given, is passed as ``--config`` (a systemd service does not see the shell's
    ``$POP3S_FETCH_CONFIG``). ``interval`` is a systemd time span such as ``15min`` or ``1h``.

    Raises:
        ValueError: ``executable`` is not absolute or holds a character systemd refuses in a
            program path, or ``interval`` is not a time span of at least a minute.
    """
    seconds = interval_seconds(interval)
    arguments = ["--config", str(config_path)] if config_path is not None else []
    arguments += ["sync", "--quiet", "--wait", str(LOCK_WAIT_SECONDS), *accounts]
    command = " ".join([exec_path(executable), *(exec_quote(arg) for arg in arguments)])
    return {
        SERVICE_NAME: _service_text(command, accounts),
        TIMER_NAME: _timer_text(interval.strip(), seconds),
    }


def _service_text(command: str, accounts: Sequence[str]) -> str:
    which = ", ".join(accounts) if accounts else "every configured account"
    return f"""\
# Written by `pop3s-fetch systemd`; started by {TIMER_NAME}.
[Unit]
Description=Fetch mail over POP3S ({which})
Documentation=man:pop3s-fetch(1)

[Service]
Type=oneshot
ExecStart={command}
# Mail and state files are private to you.
UMask=0077
# Hardening that still lets the service reach the keyring (the D-Bus session bus), the
# network, and your home directory, where mail and state are written.
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# No keyring outside your desktop session (a server, a headless box)? Give the password to
# this service as an encrypted systemd credential instead (user services need systemd 256 or
# newer), and set password_credential = "NAME" for the account in the configuration:
#   systemd-ask-password -n | systemd-creds encrypt --user --name=NAME - NAME.cred
#   mv NAME.cred ~/.config/pop3s-fetch/
# then uncomment, once per account:
#LoadCredentialEncrypted=NAME:%h/.config/pop3s-fetch/NAME.cred
"""


def _timer_text(interval: str, seconds: int) -> str:
    spread = max(1, min(seconds // 10, MAX_RANDOM_DELAY_SECONDS))
    return f"""\
# Written by `pop3s-fetch systemd`; starts {SERVICE_NAME}.
[Unit]
Description=Fetch mail over POP3S every {interval}
Documentation=man:pop3s-fetch(1)

[Timer]
# Soon after boot (or at once, when enabled later), then {interval} after each run started.
OnBootSec=2min
OnUnitActiveSec={interval}
# Spread the start, so machines sharing a server do not all poll it in the same second.
RandomizedDelaySec={spread}s

[Install]
WantedBy=timers.target
"""


def install(units: Mapping[str, str], directory: Path, *, force: bool = False) -> list[Path]:
    """Write each unit into ``directory`` (mode 0644), atomically; return the paths written.

    A file that already holds the same text is left as it is. Nothing is written when any
    existing file differs, unless ``force``.

    Raises:
        UnitInstallError: a differing file is in the way (without ``force``), or writing failed.
    """
    paths = [directory / name for name in units]
    different = [p for p in paths if _differs(p, units[p.name])]
    if different and not force:
        names = ", ".join(str(p) for p in different)
        raise UnitInstallError(
            f"not overwriting {names}: it differs from what pop3s-fetch would write",
            hint="compare it with the output of `pop3s-fetch systemd`, or pass --force to "
            "replace it",
        )
    try:
        make_dirs_durably(directory, 0o755)  # unit directories are not secret
        for path in paths:
            if path in different or not path.exists():
                _write_atomically(path, units[path.name])
    except OSError as err:
        raise UnitInstallError(
            f"cannot write unit files into {directory}: {err.strerror or err}",
            hint=f"make {directory} writable by this user",
        ) from err
    return paths


def after_install_message(paths: Sequence[Path]) -> str:
    """What to tell the user once the files are written: systemd has not seen them yet."""
    written = "\n".join(f"wrote {path}" for path in paths)
    return f"{written}\nnow run: {ENABLE_COMMAND}"


def user_unit_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user``, or ``~/.config/systemd/user``, where systemd looks."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg, "systemd", "user")
    home = environ.get("HOME") or str(Path.home())
    return Path(home, ".config", "systemd", "user")


def default_executable(argv0: str) -> str | None:
    """The absolute path of the ``pop3s-fetch`` script running now, or found on PATH.

    Symlinks are kept, not resolved: ``~/.local/bin/pop3s-fetch`` from pipx survives upgrades,
    the venv file it points to may not. Returns None when no script can be found (e.g. run as
    ``python -m pop3s_fetch`` from a checkout that was never installed).
    """
    if Path(argv0).name == "pop3s-fetch" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    beside_python = Path(sys.executable).parent / "pop3s-fetch"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("pop3s-fetch")
    return os.path.abspath(found) if found else None


# --- systemd syntax -------------------------------------------------------------------------

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def exec_path(executable: str) -> str:
    """Write the program path of ``ExecStart=``, which systemd parses by stricter rules.

    It may be quoted (for spaces) and ``%`` must be doubled, but systemd expands no
    ``$VARIABLE`` in it and refuses quotes, backslashes and control characters outright.

    Raises:
        ValueError: the path is relative or holds a character systemd refuses.
    """
    if not os.path.isabs(executable):
        raise ValueError(f"the executable must be an absolute path, got {executable!r}")
    refused = sorted({c for c in executable if c in "\"'\\" or ord(c) < 0x20 or ord(c) == 0x7F})
    if refused:
        raise ValueError(
            f"systemd refuses {', '.join(repr(c) for c in refused)} in a program path: "
            f"{executable!r}; install pop3s-fetch under a plainer path"
        )
    doubled = executable.replace("%", "%%")
    return doubled if _SAFE_WORD.fullmatch(executable) else f'"{doubled}"'


def exec_quote(arg: str) -> str:
    """Quote one ``ExecStart=`` argument so systemd passes it to the program exactly as given.

    systemd splits on whitespace, undoes C escapes inside quotes, expands ``%`` specifiers
    and ``$VARIABLES`` anywhere in the line: ``%`` and ``$`` are doubled to stay literal.
    """
    if _SAFE_WORD.fullmatch(arg):
        return arg
    out = []
    for char in arg:
        if char in _C_ESCAPES:
            out.append(_C_ESCAPES[char])
        elif char in "%$":
            out.append(char * 2)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_TIMESPAN_UNITS = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_TIMESPAN_PART = re.compile(r"\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]*)")


def interval_seconds(interval: str) -> int:
    """Seconds in a systemd time span (``15min``, ``1h 30min``, ``900``; bare numbers are seconds).

    Raises:
        ValueError: not a time span, or shorter than a minute.
    """
    total = 0.0
    position = 0
    text = interval.strip()
    while position < len(text):
        match = _TIMESPAN_PART.match(text, position)
        if match is None or match["unit"] not in ("", *_TIMESPAN_UNITS):
            raise ValueError(f"not a time span: {interval!r} (examples: 15min, 1h, 1h 30min)")
        total += float(match["number"]) * _TIMESPAN_UNITS.get(match["unit"], 1)
        position = match.end()
    if not text:
        raise ValueError("the interval is empty (examples: 15min, 1h)")
    if total < MIN_INTERVAL_SECONDS:
        raise ValueError(
            f"the interval {interval!r} is shorter than a minute; servers throttle or lock out "
            "accounts that poll that often"
        )
    return int(total)


def _differs(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") != text
    except (FileNotFoundError, NotADirectoryError):
        return False  # nothing in the way; a missing directory is install's to report
    except (OSError, UnicodeDecodeError):
        return True  # something unreadable is in the way: only --force may replace it


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, rename: systemd never sees half a unit."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), UNIT_FILE_MODE)
            fsync_file(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
