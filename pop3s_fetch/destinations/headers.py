"""The few header fields a backend reads from a message it delivers: who sent it, to whom.

An mbox needs the envelope sender for its ``From`` line, and a delivery program (an MDA) is
told the sender and the recipient on its command line. Both come from the header block the
receiving server wrote (``Return-Path``, ``Delivered-To``, ``X-Original-To``), read from at
most the first HEADER_SNIFF_LIMIT bytes, and only ever as one word of printable ASCII, so a
hostile message cannot put a space, a control character or an empty string where a program
expects one address.

It must not know any backend, nor POP3 or the state store: a message is bytes.
"""

from __future__ import annotations

import re

DEFAULT_SENDER = "MAILER-DAEMON"
#: Only this much of a message is searched for its header fields.
HEADER_SNIFF_LIMIT = 64 * 1024

_ANGLE_ADDRESS = re.compile(rb"<([^<>]*)>")
_ENVELOPE_ADDRESS = re.compile(rb"[!-~]+")  # printable ASCII without spaces: one word


def _field(name: bytes) -> re.Pattern[bytes]:
    """The first ``name:`` field and its folded continuation lines."""
    return re.compile(
        rb"^" + re.escape(name) + rb":[ \t]*(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE
    )


_RETURN_PATH = _field(b"return-path")
_DELIVERED_TO = _field(b"delivered-to")
_ORIGINAL_TO = _field(b"x-original-to")


def envelope_sender(head: bytes) -> str:
    """The address in the Return-Path field of the header block, else MAILER-DAEMON."""
    return _address(head, _RETURN_PATH) or DEFAULT_SENDER


def envelope_recipient(head: bytes) -> str | None:
    """The address the receiving server delivered to: Delivered-To, else X-Original-To.

    The first field wins: a server prepends its own above any the sender wrote.
    """
    return _address(head, _DELIVERED_TO) or _address(head, _ORIGINAL_TO)


def _address(head: bytes, field: re.Pattern[bytes]) -> str | None:
    match = field.search(_header_block(head))
    if match is None:
        return None
    value = match.group(1).replace(b"\r", b"").replace(b"\n", b"")
    bracketed = _ANGLE_ADDRESS.search(value)
    address = (bracketed.group(1) if bracketed else value).strip()
    if not _ENVELOPE_ADDRESS.fullmatch(address):
        return None  # "<>" (a bounce), or nothing one word of ASCII could carry
    return address.decode("ascii")


def _header_block(head: bytes) -> bytes:
    """The header lines: up to the first empty line, or all of ``head`` if none was seen."""
    if head.startswith(b"\n"):
        return b""
    end = head.find(b"\n\n")
    return head if end < 0 else head[: end + 1]
