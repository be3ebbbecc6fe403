"""A server that trickles its reply cannot hold the connection (and the account lock) forever.

Each reply gets ``timeout`` seconds, then must keep coming at MIN_REPLY_RATE bytes per second
on average (issue 11, item 6). The trickling peer paces its bytes; nothing here waits on time
to synchronise.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from pop3s_fetch.errors import ConnectError
from pop3s_fetch.pop3 import transport
from pop3s_fetch.pop3.transport import Reader


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


def trickle(sock: socket.socket, data: bytes, interval: float, stop: threading.Event) -> None:
    for index in range(len(data)):
        if stop.wait(interval):
            return
        try:
            sock.sendall(data[index : index + 1])
        except OSError:
            return


def test_a_trickled_status_line_is_given_up(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ours.settimeout(0.5)
    stop = threading.Event()
    peer = threading.Thread(target=trickle, args=(theirs, b"+OK " + b"x" * 200, 0.1, stop))
    peer.start()
    try:
        with pytest.raises(ConnectError) as caught:
            Reader(ours).read_line()
    finally:
        stop.set()
        peer.join()
    assert str(caught.value).startswith("the server sent a reply too slowly (")
    assert caught.value.hint == (
        "after the timeout a reply must keep coming at 512 bytes per second or more; "
        "retry later, or raise timeout for a very slow link"
    )
    assert caught.value.exit_code == 75


def test_a_trickled_body_is_given_up(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ours.settimeout(0.5)
    stop = threading.Event()
    peer = threading.Thread(target=trickle, args=(theirs, b"line\r\n" * 100, 0.05, stop))
    peer.start()
    try:
        with pytest.raises(ConnectError, match="too slowly"):
            Reader(ours).read_body(lambda _: None)
    finally:
        stop.set()
        peer.join()


def test_a_steady_reply_past_the_timeout_is_read_whole(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow but steady (above the rate) is a slow link, not an attack: it is read to the end."""
    monkeypatch.setattr(transport, "MIN_REPLY_RATE", 10)
    ours, theirs = pair
    ours.settimeout(0.3)
    body = b"0123456789\r\n" * 6 + b".\r\n"  # 75 bytes at 50 bytes/s: 1.5 s, past the timeout
    stop = threading.Event()
    peer = threading.Thread(target=trickle, args=(theirs, body, 0.02, stop))
    peer.start()
    received: list[bytes] = []
    try:
        Reader(ours).read_body(received.append)
    finally:
        stop.set()
        peer.join()
    assert b"".join(received) == b"0123456789\n" * 6
