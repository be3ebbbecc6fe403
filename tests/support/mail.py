"""Reading back what landed, and the messages the tests send through."""

from __future__ import annotations

from pathlib import Path

from pop3s_fetch.demo.samples import demo_messages


def corpus() -> list[bytes]:
    """The demo's hard cases plus a few more: 64 KiB lines, From/dot lines, 8-bit text."""
    extra = [
        b"Subject: long line\n\n" + b"y" * 65536 + b"\n" + b"z" * 200_000 + b"\nend\n",
        b"Subject: dots\n\n.\n..\n...\n. \nFrom here\n>From there\n>>From everywhere\n",
        b"Subject: 8bit\nContent-Type: text/plain; charset=iso-8859-1\n\n\xe4\xf6\xfc\xdf\n",
    ]
    return [*demo_messages(), *extra]


def as_stored(message: bytes, fmt: str) -> bytes:
    """What a client can receive: POP3 ends every message with a line end (RFC 1939 3), so a
    message stored without a final newline arrives with one, in either format."""
    del fmt
    if message and not message.endswith(b"\n"):
        return message + b"\n"
    return message


def leftovers(path: Path, fmt: str) -> list[Path]:
    """Temporary files a delivery may leave behind: Maildir tmp/, mbox spools and locks."""
    if fmt == "maildir":
        return sorted((path / "tmp").iterdir()) if (path / "tmp").exists() else []
    return sorted(p for p in path.parent.iterdir() if p != path)
