"""Deterministic test mail: the messages every client downloads and is checked against.

Owns the shape of the corpus (sizes, attachments, long lines, ``From ``/dot lines, 8-bit
text) and the marker that identifies each copy. Knows nothing about servers or clients.
Every message ends with a newline and uses LF line ends, as Dovecot stores them, so the bytes a
POP3 client should deliver are exactly the bytes generated here.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Iterable

#: Every message carries ``Message-ID: <bench.SEED.INDEX@pop3s-fetch.invalid>``; clients that
#: add headers leave it alone, so copies are identified by it even when their bytes differ.
MARKER = re.compile(rb"^Message-ID: <bench\.(\d+)\.(\d+)@pop3s-fetch\.invalid>$", re.MULTILINE)

_WORDS = (
    b"mail server client message byte line header body ready fetch store sync keep queue "
    b"delivery maildir mbox latency round trip pipeline commit journal state crash safe "
    b"\xc3\xa4rger gr\xc3\xbc\xc3\x9fe na\xc3\xafve \xe4\xf6\xfc caf\xe9"
).split()


def marker_of(message: bytes) -> tuple[int, int] | None:
    """(seed, index) of a corpus message, or None for a message without our marker."""
    found = MARKER.search(message)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _headers(seed: int, index: int, subject: str, extra: Iterable[bytes] = ()) -> bytes:
    lines = [
        b"Return-Path: <sender@example.invalid>",
        b"From: Sender <sender@example.invalid>",
        b"To: Reader <reader@example.invalid>",
        f"Subject: {subject} {index}".encode(),
        b"Date: Mon, 06 Jan 2025 10:00:00 +0000",
        f"Message-ID: <bench.{seed}.{index}@pop3s-fetch.invalid>".encode(),
        *extra,
    ]
    return b"\n".join(lines) + b"\n\n"


def _text_line(rng: random.Random) -> bytes:
    """One body line; a few start with ``From `` or ``.`` to exercise quoting and stuffing."""
    words = b" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14)))
    roll = rng.random()
    if roll < 0.03:
        return b"From " + words
    if roll < 0.06:
        return b"." + words
    if roll < 0.07:
        return b">From " + words
    return words


def _text_body(rng: random.Random, size: int) -> bytes:
    lines: list[bytes] = []
    total = 0
    while total < size:
        line = _text_line(rng)
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines) + b"\n"


def text_message(seed: int, index: int, rng: random.Random, size: int) -> bytes:
    """A plain 8-bit text message of about ``size`` bytes."""
    head = _headers(
        seed,
        index,
        "text",
        [
            b"MIME-Version: 1.0",
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Transfer-Encoding: 8bit",
        ],
    )
    return head + _text_body(rng, max(size - len(head), 1))


def long_line_message(seed: int, index: int, rng: random.Random) -> bytes:
    """A message with a few lines of 4-64 KB (no line-length limit may break it)."""
    body = _text_body(rng, 1000)
    for _ in range(rng.randint(1, 3)):
        length = rng.randint(4 * 1024, 64 * 1024)
        body += bytes(rng.choice(b"abcdefghij.From ") for _ in range(length)) + b"\n"
    return _headers(seed, index, "long lines") + body


def attachment_message(seed: int, index: int, rng: random.Random, size: int) -> bytes:
    """A MIME message with one base64 attachment of about ``size`` bytes once encoded."""
    boundary = f"=-bench-{seed}-{index}".encode()
    payload = base64.encodebytes(rng.randbytes(size * 3 // 4))
    head = _headers(
        seed,
        index,
        "attachment",
        [b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'],
    )
    parts = [
        b"--" + boundary,
        b"Content-Type: text/plain; charset=utf-8\n",
        _text_body(rng, 800),
        b"--" + boundary,
        b"Content-Type: application/octet-stream",
        b"Content-Transfer-Encoding: base64",
        b'Content-Disposition: attachment; filename="data.bin"\n',
        payload,
        b"--" + boundary + b"--",
    ]
    return head + b"\n".join(parts) + b"\n"


def mixed_corpus(seed: int, count: int, *, large: bool = True) -> list[bytes]:
    """``count`` messages: mostly 2-50 KB text, ~4% 200 KB-2 MB attachments (if ``large``),
    ~4% with 4-64 KB lines. The same (seed, count) always gives the same bytes."""
    rng = random.Random(seed)
    messages = []
    for index in range(count):
        roll = rng.random()
        if large and roll < 0.04:
            messages.append(attachment_message(seed, index, rng, rng.randint(200_000, 2_000_000)))
        elif roll < 0.08:
            messages.append(long_line_message(seed, index, rng))
        else:
            messages.append(text_message(seed, index, rng, rng.randint(2_000, 50_000)))
    return messages


def small_corpus(seed: int, count: int) -> list[bytes]:
    """``count`` short (0.5-3 KB) text messages, for mailboxes where the count matters."""
    rng = random.Random(seed)
    return [text_message(seed, i, rng, rng.randint(500, 3_000)) for i in range(count)]


def big_message(seed: int, size: int) -> list[bytes]:
    """One message of ``size`` bytes, nearly all of it a base64 attachment."""
    rng = random.Random(seed)
    return [attachment_message(seed, 0, rng, size)]
