"""UIDL/LIST parsing and UIDL checks, done in bulk: still exact about what is malformed."""

from __future__ import annotations

import pytest

from pop3s_fetch.errors import ProtocolError
from pop3s_fetch.pop3.codec import parse_pairs
from pop3s_fetch.sync import check_uidls


def test_pairs_parse_in_bulk() -> None:
    lines = [f"{n} uid-{n}" for n in range(1, 20001)]
    pairs = parse_pairs(lines, "UIDL")
    assert len(pairs) == 20000
    assert pairs[1] == "uid-1"
    assert pairs[20000] == "uid-20000"
    assert parse_pairs([], "LIST") == {}


@pytest.mark.parametrize("bad", ["3 a b", "x 12", "7", "\u00b2 12", "4  "])
def test_a_malformed_line_is_named(bad: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_pairs(["1 ok", bad, "9 fine"], "LIST")
    assert str(caught.value) == f"malformed LIST line from the server: {bad!r}"


def listing(*uidls: str) -> dict[int, str]:
    return dict(enumerate(uidls, start=1))


def test_good_uidls_pass() -> None:
    check_uidls(listing(*(f"{n:08X}abc~!" for n in range(5000))))
    check_uidls({})


@pytest.mark.parametrize("bad", ["has space", "", "x" * 71, "caf\u00e9", "tab\there"])
def test_invalid_uidls_are_refused_by_number(bad: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_uidls(listing("fine", bad))
    assert str(caught.value).startswith("the server sent an invalid UIDL for message 2: ")


def test_duplicate_uidls_name_both_messages() -> None:
    with pytest.raises(ProtocolError) as caught:
        check_uidls(listing("a", "b", "c", "b"))
    assert str(caught.value) == "the server gave messages 2 and 4 the same UIDL 'b'"
