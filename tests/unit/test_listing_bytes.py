"""Whole listings parsed from their bytes (issue 15, target 2): the same answers and errors as
the line parsers, with one value per message kept, not a dict and an int object per line."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from pop3s_fetch.errors import ProtocolError
from pop3s_fetch.pop3 import codec

COUNT = 100_000
UIDL_BODY = b"".join(b"%d %08X%08X\n" % (n, 0x5F000000, n) for n in range(1, COUNT + 1))
LIST_BODY = b"".join(b"%d %d\n" % (n, 500 + n % 2500) for n in range(1, COUNT + 1))


def outcome(parse: object) -> object:
    """What a parser returned (as a dict) or the text of the ProtocolError it raised."""
    try:
        return dict(parse())  # type: ignore[operator]
    except ProtocolError as err:
        return ("error", str(err))


# Mostly well-formed numbered lines, with the faults a hostile server might send.
WORD = st.sampled_from(["a", "b", "x1", "0", "7", "01", "99999999999999999999", "1.5", "é"])
LINE = st.one_of(
    st.tuples(st.integers(0, 6).map(str), WORD).map(" ".join),
    st.text(alphabet=" \t\r\x0b\u2028ab01", max_size=8),
)
BODY = st.lists(LINE, max_size=8).map(lambda lines: "".join(f"{x}\n" for x in lines).encode())
SEQUENTIAL = st.lists(WORD, max_size=8).map(
    lambda words: "".join(f"{n} {w}\n" for n, w in enumerate(words, 1)).encode()
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(BODY, SEQUENTIAL, st.binary(max_size=60)))
def test_the_bytes_parsers_agree_with_the_line_parsers(body: bytes) -> None:
    lines = codec.text_lines([body])
    assert outcome(lambda: codec.parse_listing(body, "UIDL")) == outcome(
        lambda: codec.parse_pairs(lines, "UIDL")
    )
    assert outcome(lambda: codec.parse_listing_sizes(body)) == outcome(
        lambda: codec.parse_sizes(lines)
    )


def test_a_numbered_listing_behaves_as_a_dict() -> None:
    uidls = codec.parse_listing(b"1 a\n2 b\n3 c\n", "UIDL")
    assert isinstance(uidls, codec.Numbered)
    assert uidls == {1: "a", 2: "b", 3: "c"}
    assert list(uidls.items()) == [(1, "a"), (2, "b"), (3, "c")]
    assert list(uidls.values()) == ["a", "b", "c"]
    assert (uidls[2], 3 in uidls, 0 in uidls, 4 in uidls, "1" in uidls) == (
        "b",
        True,
        False,
        False,
        False,
    )
    assert uidls.pick([1, 3]) == ["a", "c"]
    assert (uidls.covers([1, 3]), uidls.covers([2, 4]), uidls.covers([])) == (True, False, True)
    sizes = codec.parse_listing_sizes(b"1 10\n2 1099511627776\n")
    assert isinstance(sizes, codec.Numbered)
    assert sizes == {1: 10, 2: 1 << 40}


def test_parsing_a_100000_line_listing_keeps_one_object_per_message() -> None:
    """The line parsers kept 13.9 MiB (UIDL) and 10.3 MiB (LIST), peaking at 32 and 30."""
    tracemalloc.start()
    try:
        uidls = codec.parse_listing(UIDL_BODY, "UIDL")
        kept_uidls, peak_uidls = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        sizes = codec.parse_listing_sizes(LIST_BODY)
        kept_both, peak_sizes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(uidls) == len(sizes) == COUNT
    mib = 1 << 20
    assert kept_uidls < 8 * mib  # 100,000 UIDL strings (~7 MiB) and one list
    assert peak_uidls < 18 * mib
    assert kept_both - kept_uidls < 2 * mib  # 8 bytes a size
    assert peak_sizes - kept_uidls < 15 * mib
