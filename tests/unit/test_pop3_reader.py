"""The body decoder: terminator, dot un-stuffing, CRLF -> LF, whatever the recv boundaries.

The codec is driven directly with any cut of the input; the receive buffer over a socket
(``transport.Reader``) with a stand-in socket that hands out pre-cut pieces.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3s_fetch.errors import ProtocolError
from pop3s_fetch.pop3 import codec
from pop3s_fetch.pop3.transport import ConnectionClosed, Reader


class ChunkedSocket:
    """Hands out pre-cut pieces, as TLS records arrive; then EOF."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = list(pieces)

    def gettimeout(self) -> float | None:
        return None  # pieces are all there: nothing to wait for

    def recv_into(self, buffer: memoryview) -> int:
        if not self.pieces:
            return 0
        piece = self.pieces.pop(0)
        if len(piece) > len(buffer):  # as a socket would: the rest comes with the next read
            self.pieces.insert(0, piece[len(buffer) :])
            piece = piece[: len(buffer)]
        buffer[: len(piece)] = piece
        return len(piece)


def wire(message: bytes) -> bytes:
    """What an RFC 1939 server sends for a message stored with LF line ends (reference)."""
    lines = message.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def expected(message: bytes) -> bytes:
    return message if message.endswith(b"\n") or not message else message + b"\n"


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def decode(pieces: list[bytes]) -> tuple[bytes, Reader]:
    reader = Reader(ChunkedSocket(pieces))  # type: ignore[arg-type]
    out: list[bytes] = []
    reader.read_body(out.append)
    return b"".join(out), reader


def decode_pure(pieces: list[bytes], *, emit_size: int, max_line: int) -> tuple[bytes, bytes]:
    """Feed ``pieces`` to the codec as they would arrive; return the body and what is left."""
    out: list[bytes] = []
    decoder = codec.BodyDecoder(out.append, emit_size=emit_size, max_line=max_line)
    buf = bytearray()
    arriving = iter(pieces)
    while not decoder.feed(buf):
        buf += next(arriving)  # StopIteration here: the decoder wanted more than the body
    assert decoder.written == len(b"".join(out))
    return b"".join(out), bytes(buf) + b"".join(arriving)


lines = st.lists(
    st.one_of(
        st.sampled_from([b"", b".", b"..", b".\r", b"From x", b"\r", b"a.b", b". ", b"...x"]),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    ),
    max_size=30,
)


@settings(max_examples=600, deadline=None)
@given(
    lines=lines,
    points=st.lists(st.integers(min_value=0), max_size=12),
    emit_size=st.integers(min_value=1, max_value=80),
    max_line=st.integers(min_value=1, max_value=80),
)
def test_any_message_any_chunking_round_trips(
    lines: list[bytes], points: list[int], emit_size: int, max_line: int
) -> None:
    message = b"".join(line + b"\n" for line in lines)
    data = wire(message) + b"+OK next\r\n"
    # Tiny emit and line limits drive every branch: partial lines, CRs split from LFs.
    body, rest = decode_pure(cut(data, points), emit_size=emit_size, max_line=max_line)
    assert body == message
    assert rest == b"+OK next\r\n"
    assert codec.take_line(bytearray(rest)) == b"+OK next"


@settings(max_examples=200, deadline=None)
@given(lines=lines, points=st.lists(st.integers(min_value=0), max_size=12))
def test_the_socket_reader_leaves_the_next_reply_after_the_body(
    lines: list[bytes], points: list[int]
) -> None:
    message = b"".join(line + b"\n" for line in lines)
    body, reader = decode(cut(wire(message) + b"+OK next\r\n", points))
    assert body == message
    assert reader.read_line() == b"+OK next"
    assert reader.buffered() == 0


@pytest.mark.parametrize(
    ("message", "decoded"),
    [
        (b"", b""),
        (b".\n", b".\n"),
        (b"..\n", b"..\n"),
        (b"a\n.\nb\n", b"a\n.\nb\n"),
        (b"no newline at end", b"no newline at end\n"),
        (b"From me\n>From you\n", b"From me\n>From you\n"),
        (b"\xe4\xf6\xfc 8-bit\n", b"\xe4\xf6\xfc 8-bit\n"),
    ],
)
def test_known_cases(message: bytes, decoded: bytes) -> None:
    body, _ = decode([wire(message)])
    assert body == decoded


def test_line_of_several_megabytes_is_passed_through_in_pieces() -> None:
    long_line = b"x" * (3 * codec.MAX_BUFFERED_LINE + 7)
    message = b"Subject: long\n\n" + long_line + b"\n.dot\n"
    data = wire(message)
    pieces = [data[i : i + 16384] for i in range(0, len(data), 16384)]
    got: list[bytes] = []
    reader = Reader(ChunkedSocket(pieces))  # type: ignore[arg-type]
    reader.read_body(got.append)
    assert b"".join(got) == message
    assert max(len(g) for g in got) <= codec.MAX_BUFFERED_LINE + 16384


def test_eof_before_terminator_is_an_error_not_a_message() -> None:
    data = wire(b"Subject: cut\n\nbody\n")[:-3]  # no ".\r\n"
    with pytest.raises(ConnectionClosed, match="closed the connection"):
        decode([data])


def test_status_line_over_the_limit_is_a_protocol_error() -> None:
    reader = Reader(ChunkedSocket([b"+OK " + b"x" * 100_000 + b"\r\n"]))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="reply line longer than 8192 bytes"):
        reader.read_line()
