"""Sample messages for ``pop3s-fetch demo``: small, deterministic, and each one a hard case.

Owns only the bytes of the samples (LF line ends, as a Maildir file stores them). Each builder
names the case it exercises, so that a demo run (and the tests that reuse these) shows the
client coping with long lines, 8-bit bodies, dot and "From " lines, a large attachment, a
missing final newline and a Return-Path header. It must not know POP3 or delivery formats.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

__all__ = [
    "attachment_message",
    "demo_messages",
    "eight_bit_message",
    "long_line_message",
    "no_final_newline_message",
    "plain_message",
    "return_path_message",
    "tricky_lines_message",
]

_DATE = "Sat, 01 Jun 2024 12:00:00 +0000"
_FILLER = b"The quick brown fox jumps over the lazy dog. "


def _header(
    number: int, subject: str, *, trace: Sequence[str] = (), content: Sequence[str] = ()
) -> bytes:
    """An RFC 5322 header block ending in the blank line: trace fields first, MIME fields last."""
    fields = [
        *trace,
        "From: Demo Sender <sender@example.org>",
        "To: Demo Recipient <recipient@example.net>",
        f"Subject: {subject}",
        f"Date: {_DATE}",
        f"Message-ID: <demo-{number}@pop3s-fetch.example>",
        "MIME-Version: 1.0",
        *content,
    ]
    return "".join(f"{field}\n" for field in fields).encode("ascii") + b"\n"


def _text_header(number: int, subject: str, *, trace: Sequence[str] = ()) -> bytes:
    content = ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
    return _header(number, subject, trace=trace, content=content)


def _multipart_header(number: int, subject: str, boundary: bytes) -> bytes:
    content = [f'Content-Type: multipart/mixed; boundary="{boundary.decode("ascii")}"']
    return _header(number, subject, content=content)


def _filler_line(length: int) -> bytes:
    """``length`` octets of readable text, with no line end."""
    repeats = length // len(_FILLER) + 1
    return (_FILLER * repeats)[:length]


def plain_message(number: int = 1) -> bytes:
    """A short, ordinary text message."""
    body = b"Hello,\n\nthis is an ordinary message with nothing unusual in it.\n\nBye\n"
    return _text_header(number, "A plain message") + body


def long_line_message(number: int, line_octets: int) -> bytes:
    """A message whose body holds one line of ``line_octets`` octets (poplib stops at 2048)."""
    subject = f"A single line of {line_octets} octets"
    body = b"Before the long line.\n" + _filler_line(line_octets) + b"\nAfter the long line.\n"
    return _text_header(number, subject) + body


def eight_bit_message(number: int) -> bytes:
    """Two 8-bit text parts: UTF-8, and Latin-1 (which is not valid UTF-8)."""
    boundary = b"8bit-boundary"
    utf8 = "Grüße aus Köln, naïve café, 日本語, emoji 📬.\n".encode()
    latin1 = "Grüße aus Köln, naïve café: Latin-1 octets.\n".encode("latin-1")
    header = _multipart_header(number, "Eight-bit UTF-8 and Latin-1 bodies", boundary)
    return header + b"".join(
        [
            b"This is a multi-part message in MIME format.\n",
            b"--" + boundary + b"\n",
            b"Content-Type: text/plain; charset=utf-8\n",
            b"Content-Transfer-Encoding: 8bit\n\n",
            utf8,
            b"--" + boundary + b"\n",
            b"Content-Type: text/plain; charset=iso-8859-1\n",
            b"Content-Transfer-Encoding: 8bit\n\n",
            latin1,
            b"--" + boundary + b"--\n",
        ]
    )


def tricky_lines_message(number: int) -> bytes:
    """Body lines that dot-stuffing and mbox quoting must get right."""
    body_lines = [
        b"From the first line of the body, which mbox would mistake for a separator.",
        b">From an already quoted line.",
        b">>From a doubly quoted line.",
        b".",
        b"..",
        b".leading dot",
        b"...three dots",
        b"From ",
        b" .not a dot line (leading space)",
        b"The last line.",
    ]
    return _text_header(number, "Dots and From lines") + b"\n".join(body_lines) + b"\n"


def attachment_message(number: int, attachment_octets: int = 225 * 1024) -> bytes:
    """A MIME message with a binary attachment, ~300 KB once base64-encoded."""
    boundary = b"attachment-boundary"
    payload = hashlib.shake_256(b"pop3s-fetch demo attachment").digest(attachment_octets)
    header = _multipart_header(number, "A message with an attachment", boundary)
    return header + b"".join(
        [
            b"--" + boundary + b"\n",
            b"Content-Type: text/plain; charset=us-ascii\n\n",
            b"The attachment holds pseudo-random octets.\n",
            b"--" + boundary + b"\n",
            b"Content-Type: application/octet-stream\n",
            b"Content-Transfer-Encoding: base64\n",
            b'Content-Disposition: attachment; filename="random.bin"\n\n',
            base64.encodebytes(payload),
            b"--" + boundary + b"--\n",
        ]
    )


def no_final_newline_message(number: int) -> bytes:
    """A message whose last line has no line end (the server adds one on the wire)."""
    return _text_header(number, "No newline at the end") + b"The last line has no newline."


def return_path_message(number: int) -> bytes:
    """A message as a delivery agent leaves it, with Return-Path and Delivered-To on top."""
    trace = ["Return-Path: <bounces+demo@example.org>", "Delivered-To: recipient@example.net"]
    body = b"This message carries delivery trace header fields.\n"
    return _text_header(number, "A message with a Return-Path", trace=trace) + body


def demo_messages() -> list[bytes]:
    """The demo's maildrop, in order; the same bytes on every call."""
    return [
        plain_message(1),
        long_line_message(2, 64 * 1024),
        long_line_message(3, 120 * 1000),
        eight_bit_message(4),
        tricky_lines_message(5),
        attachment_message(6),
        no_final_newline_message(7),
        return_path_message(8),
    ]
