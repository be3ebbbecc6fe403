"""Trace header fields (``add_headers``): the lines written above a message, opt-in.

A copy is the server's bytes unchanged unless the user asks for these, as fetchmail and mpop
users may expect: ``Received`` (which server, which program and version, the TLS in use, when,
as RFC 5321 section 4.4 lays a trace field out) and ``Delivered-To`` / ``X-Original-To`` (the
account's user, which procmail and sieve rules and some mail readers look for). They go above
the server's header block, with LF line ends like the rest of a stored message, so a reader
sees the newest hop first.

Must not know: POP3, storage, the state store or the configuration file: the caller passes
plain values, already checked to be header-safe where they come from the user.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import socket
from collections.abc import Sequence

#: What may stand in a header field's value here: printable ASCII, no line breaks.
_SAFE = re.compile(r"[!-~]+")


def trace_lines(
    names: Sequence[str],
    *,
    server: str,
    user: str,
    program: str,
    tls: str,
    when: float,
    local_host: str | None = None,
) -> bytes:
    """The fields ``names`` asks for ("received", "delivered-to", "x-original-to"), in that
    order, as bytes ending in LF. A value that is not one word of printable ASCII (a host
    name the system gave oddly, say) is left out of the field rather than written."""
    lines: list[str] = []
    for name in names:
        if name == "received":
            lines.append(_received(server, user, program, tls, when, local_host))
        elif name == "delivered-to" and _SAFE.fullmatch(user):
            lines.append(f"Delivered-To: {user}")
        elif name == "x-original-to" and _SAFE.fullmatch(user):
            lines.append(f"X-Original-To: {user}")
    return "".join(line + "\n" for line in lines).encode("ascii")


def _received(
    server: str, user: str, program: str, tls: str, when: float, local_host: str | None
) -> str:
    here = local_host if local_host is not None else socket.gethostname()
    by = f"\n\tby {here}" if _SAFE.fullmatch(here) else ""
    comment = "; ".join(_comment_safe(part) for part in (program, tls) if part)
    recipient = f"\n\tfor <{user}>" if "@" in user and _SAFE.fullmatch(user) else ""
    stamp = email.utils.format_datetime(datetime.datetime.fromtimestamp(when).astimezone())
    return f"Received: from {server}{by} with POP3S ({comment}){recipient};\n\t{stamp}"


def _comment_safe(text: str) -> str:
    """Printable ASCII without the characters that would end or nest a comment."""
    return "".join(c for c in text if " " <= c <= "~" and c not in "()\\")
