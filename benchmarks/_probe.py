"""pop3s-fetch's CLI with time marks at the steps of a sync, for ``benchmarks.timeline``.

Run as ``python -m benchmarks._probe sync ...`` with ``POP3S_FETCH_PROBE_T0`` (the driver's
``time.time()`` just before it started this process) and ``POP3S_FETCH_PROBE_OUT`` (where the
marks go, as JSON). It wraps a few functions of pop3s_fetch to note when each step happens and
changes nothing else; it is a measuring tool, never imported by the program.
"""

from __future__ import annotations

import atexit
import json
import os
import time

_T0 = float(os.environ["POP3S_FETCH_PROBE_T0"])
_MARKS: list[tuple[str, float]] = []
_SEEN: set[str] = set()


def _mark(label: str, *, once: bool = True) -> None:
    """Note the first time ``label`` happens (or, with ``once=False``, the last)."""
    now = (time.time() - _T0) * 1000
    if label in _SEEN:
        if not once:
            _MARKS[:] = [(name, at) for name, at in _MARKS if name != label]
            _MARKS.append((label, now))
        return
    _SEEN.add(label)
    _MARKS.append((label, now))


_mark("interpreter ready")

import socket  # noqa: E402
import ssl  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

from pop3s_fetch import cli, sync  # noqa: E402
from pop3s_fetch.destinations import maildir  # noqa: E402
from pop3s_fetch.pop3 import Pop3Client  # noqa: E402
from pop3s_fetch.pop3.transport import Transport  # noqa: E402

_mark("pop3s_fetch imported")


def _wrap(
    owner: Any, name: str, before: str | None = None, after: str | None = None, once: bool = True
) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            _mark(before, once=once)
        result = original(*args, **kwargs)
        if after:
            _mark(after, once=once)
        return result

    setattr(owner, name, wrapper)


_wrap(sync._AccountSync, "run", before="account sync starts")
_wrap(socket, "create_connection", before="TCP connect", after="TCP connected")
# The transport does TCP and the handshake as two steps of its own: the handshake is the
# context's wrap_socket (do_handshake_on_connect), whoever calls it.
_wrap(ssl.SSLContext, "wrap_socket", after="TLS handshake done")
_wrap(Transport, "open_tls", after="greeting read")
_wrap(Transport, "open_plaintext", after="greeting read")
_wrap(sync, "log_in", after="logged in")
_wrap(Pop3Client, "uidl_reply", after="UIDL listing read")
_wrap(
    maildir.Maildir, "publish", before="last publish starts", after="last publish done", once=False
)

_send = Transport.send


def _probe_send(self: Transport, lines: Iterable[str]) -> None:
    lines = list(lines)
    verb = (lines[0].split(" ", 1)[0] if lines and lines[0] else "").upper()
    if verb in ("CAPA", "AUTH", "USER", "RETR", "QUIT"):
        _mark(f"{verb} sent")
    _send(self, lines)


Transport.send = _probe_send  # type: ignore[method-assign]

_read_body = Transport.read_body


def _probe_read_body(self: Transport, sink: Any, **options: Any) -> Any:
    decoder = _read_body(self, sink, **options)
    if "RETR sent" in _SEEN:
        _mark("first message read")
    return decoder


Transport.read_body = _probe_read_body  # type: ignore[method-assign]


def _write_marks() -> None:
    _mark("exit")
    with open(os.environ["POP3S_FETCH_PROBE_OUT"], "w", encoding="utf-8") as out:
        json.dump(_MARKS, out)


atexit.register(_write_marks)

if __name__ == "__main__":
    cli.main()
