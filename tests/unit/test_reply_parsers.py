"""Every parse of server text ends in a protocol error, never in another exception (issue 11).

A malformed number used to end the whole run with exit 70 ("internal error"), so the other
accounts never ran. The fuzz tests feed any bytes to every reply parser and decoder; the only
exception allowed out is ours (exit 76 for that account alone).
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3s_fetch import sasl
from pop3s_fetch.errors import ProtocolError, RemoteError
from pop3s_fetch.pop3 import codec


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (["1 a", "1 b", "2 c"], "the server's UIDL reply names message 1 twice"),
        (["0 a"], "UIDL from the server names message 0"),
        (
            ["99999999999999999999999999 a"],
            "UIDL from the server names message 99999999999999999999",
        ),
        (["1 a b"], "malformed UIDL line from the server: '1 a b'"),
        (["", "1 a"], "malformed UIDL line from the server: ''"),
        (["-1 a"], "malformed UIDL line from the server: '-1 a'"),
        (["\u0661 a"], "malformed UIDL line from the server: '\u0661 a'"),  # Arabic-Indic 1
    ],
)
def test_a_listing_that_could_misfile_a_message_is_refused(lines: list[str], error: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        codec.parse_pairs(lines, "UIDL")
    assert str(caught.value) == error
    assert caught.value.exit_code == 76


@pytest.mark.parametrize(
    "line",
    [
        "1 abc",
        "1 1.5",
        "1 99999999999999999999999999",
        "1 -4",
        "1 \u0664\u0664",
        f"1 {(1 << 40) + 1}",
    ],
)
def test_a_list_size_that_is_not_a_size_is_refused(line: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        codec.parse_sizes(["2 10", line])
    assert str(caught.value) == f"malformed LIST line from the server: {line!r}"


def test_sizes_in_range_are_read() -> None:
    assert codec.parse_sizes(["1 0", "2 44", f"3 {1 << 40}"]) == {1: 0, 2: 44, 3: 1 << 40}


def test_a_repeated_list_number_is_refused() -> None:
    with pytest.raises(ProtocolError, match="the server's LIST reply names message 2 twice"):
        codec.parse_sizes(["2 10", "2 11"])


def test_more_messages_than_the_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_MESSAGES", 3)
    with pytest.raises(ProtocolError) as caught:
        codec.parse_pairs(["1 a", "2 b", "3 c", "4 d"], "UIDL")
    assert str(caught.value) == "the server's UIDL reply names more than 3 messages"


def test_blank_capability_lines_are_skipped() -> None:
    assert codec.parse_capabilities(["UIDL", "", "  ", "SASL PLAIN"]) == {
        "UIDL": [],
        "SASL": ["PLAIN"],
    }


def test_a_body_past_its_limit_stops_the_read() -> None:
    received: list[bytes] = []
    decoder = codec.BodyDecoder(received.append, emit_size=8, limit=20)
    buf = bytearray(b"0123456789\r\n" * 10)
    with pytest.raises(codec.BodyTooLong) as caught:
        decoder.feed(buf)
    assert str(caught.value) == "the server sent a reply longer than 20 bytes"
    assert decoder.octets <= 20


def test_octets_are_counted_as_list_counts_them() -> None:
    """CRLF line ends count two octets; a stuffing dot is not part of the message."""
    decoder = codec.BodyDecoder(lambda _: None)
    assert decoder.feed(bytearray(b"a\r\n..b\r\n\r\n.\r\n"))
    assert decoder.octets == len(b"a\r\n.b\r\n\r\n")
    assert decoder.written == len(b"a\n.b\n\n")


# --- fuzz: any bytes, only our exception ------------------------------------------------------

LINES = st.lists(st.binary(max_size=40), max_size=12).map(
    lambda items: codec.text_lines([b"\r\n".join(items)])
)
TEXT = st.binary(max_size=200).map(lambda data: data.decode("utf-8", "replace"))


@settings(max_examples=400, deadline=None)
@given(LINES)
def test_listing_parsers_raise_only_protocol_errors(lines: list[str]) -> None:
    for parse in (lambda: codec.parse_pairs(lines, "UIDL"), lambda: codec.parse_sizes(lines)):
        with contextlib.suppress(ProtocolError):
            parse()


@settings(max_examples=400, deadline=None)
@given(LINES)
def test_capability_parser_never_raises(lines: list[str]) -> None:
    codec.parse_capabilities(lines)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_status_and_greeting_parsers_raise_only_protocol_errors(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        codec.parse_status(text)
    sasl.apop_timestamp(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_body_decoder_raises_only_protocol_errors(data: bytes, limit: int) -> None:
    decoder = codec.BodyDecoder(lambda _: None, emit_size=16, max_line=32, limit=limit)
    buf = bytearray(data)
    with contextlib.suppress(ProtocolError):
        decoder.feed(buf)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_sasl_challenges_raise_only_our_errors(challenge: str) -> None:
    for name in ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"):
        exchange = sasl.Exchange(sasl.mechanism(name, username="u", secret="s"))
        try:
            exchange.answer(challenge)
            exchange.succeeded(challenge)
        except RemoteError:
            pass
