"""What a server's own policy (RFC 2449 LOGIN-DELAY and EXPIRE) means for an account.

Pure decisions over a CAPA reply, the account's retention and what the state remembers, so
each rule is testable without a server; ``sync`` asks, acts and stores. LOGIN-DELAY is the
least number of seconds a server wants between two logins (a login sooner is refused with
``[LOGIN-DELAY]``); EXPIRE is the least number of days the server keeps a message once it was
downloaded, ``NEVER``, or ``0``: no message may stay on the server after it was read. Both
may be announced before login with ``USER`` (they vary per user) and given per user after it.

Must not know: the wire protocol, the state's tables, the configuration file or the UI.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DAY = 86400.0


def announced(capabilities: Mapping[str, Sequence[str]]) -> bool:
    """Whether CAPA named a policy whose value may differ once logged in (RFC 2449 section 6:
    "announced states / possible differences: both / yes"), so CAPA is worth asking again."""
    return "LOGIN-DELAY" in capabilities or "EXPIRE" in capabilities


def login_delay(capabilities: Mapping[str, Sequence[str]]) -> int | None:
    """LOGIN-DELAY's seconds, or None when not announced (or not a number, as a stray word
    must not stop a sync: the server enforces its delay anyway)."""
    args = capabilities.get("LOGIN-DELAY")
    if not args or not (args[0].isascii() and args[0].isdigit()):
        return None
    return int(args[0])


def expire(capabilities: Mapping[str, Sequence[str]]) -> str | None:
    """EXPIRE's value: ``"NEVER"`` or a whole number of days as text; None when absent."""
    args = capabilities.get("EXPIRE")
    if not args:
        return None
    value = args[0].upper()
    if value == "NEVER" or (value.isascii() and value.isdigit()):
        return value if value == "NEVER" else str(int(value))
    return None


def expire_warning(value: str | None, *, keep: bool, delete_after: float | None) -> str | None:
    """The warning EXPIRE calls for, or None when the server's policy changes nothing.

    With ``keep = false`` we delete each message anyway, and ``NEVER`` deletes nothing: no
    warning. Otherwise the server deletes mail on its own, and when it does so sooner than the
    account's ``keep`` (true: never; a duration: after it) the user's wish cannot hold.
    """
    if value is None or value == "NEVER" or not keep:
        return None
    days = int(value)
    if days == 0:
        server = "deletes every message once it has been downloaded (EXPIRE 0)"
    else:
        unit = "day" if days == 1 else "days"
        server = f"deletes messages on its own {days} {unit} after they were downloaded " + (
            f"(EXPIRE {days})"
        )
    if delete_after is None:
        return f"the server {server}, so keep = true cannot hold: no copy stays on the server"
    wished = _duration(delete_after)
    if delete_after > days * DAY:
        return (
            f'the server {server}, so keep = "{wished}" cannot hold: messages are gone from '
            "the server sooner"
        )
    return f'the server {server}; keep = "{wished}" deletes them before that'


@dataclass(frozen=True, slots=True)
class LoginDelay:
    """Why this run did not log in, or was refused: the server's LOGIN-DELAY.

    ``next_at`` (epoch seconds) is when the next login should be let in, None when the delay
    is unknown (a ``[LOGIN-DELAY]`` refusal from a server that never announced one);
    ``refused`` is the server's ``-ERR`` text when it refused a login in this run.
    """

    delay: int | None
    next_at: float | None
    refused: str | None = None

    def note(self, account: str) -> str:
        """The one line a run says instead of its summary."""
        if self.refused is not None:
            why = f"the server refused the login for now ({self.refused})"
        else:
            why = f"the server allows one login every {describe(self.delay or 0)}"
        when = f"next at {clock_time(self.next_at)}" if self.next_at else "try again later"
        return f"{account}: skipped, {why}; {when}"


def next_login(delay: int | None, last_login: float | None, refused_at: float | None) -> float:
    """When the server lets the next login in: the delay after the later of the last login
    and the last refusal (which says a login came too soon, so waiting from it is safe)."""
    if not delay:
        return 0.0
    since = max(t for t in (last_login, refused_at, 0.0) if t is not None)
    return since + delay if since else 0.0


def describe(seconds: float) -> str:
    """900 -> "15 min", 3600 -> "1 h", 5400 -> "1 h 30 min", 45 -> "45 s"."""
    whole = round(seconds)
    if whole < 60 or whole % 60:
        return f"{whole} s" if whole < 120 else f"{whole // 60} min {whole % 60} s"
    hours, minutes = divmod(whole // 60, 60)
    parts = [f"{hours} h"] if hours else []
    return " ".join(parts + ([f"{minutes} min"] if minutes or not hours else []))


def clock_time(when: float, now: float | None = None) -> str:
    """Local "14:32" for a time today, "2026-12-07 14:32" for another day."""
    local = time.localtime(when)
    today = time.localtime(time.time() if now is None else now)
    same_day = local[:3] == today[:3]
    return time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", local)


def _duration(seconds: float) -> str:
    """A retention as the configuration spells it: 2592000 -> "30d"."""
    whole = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
