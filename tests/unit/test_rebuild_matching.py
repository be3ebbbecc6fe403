"""What ``state rebuild`` relies on: copies read back with the placement a delivery
journalled, their sizes as the server counts them, and matching that records only pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from pop3s_fetch.destinations import holds, open_destination, stored_copies
from pop3s_fetch.matching import Listed, fields, match
from tests.unit.test_delivery import MESSAGES, deliver

Kind = Literal["maildir", "mbox"]


def on_the_wire(message: bytes) -> int:
    """LIST's size: CRLF line ends; a final line end is added by POP3, not counted by LIST."""
    return len(message) + message.count(b"\n")


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_copies_come_back_with_the_placement_a_delivery_journalled(
    tmp_path: Path, kind: Kind
) -> None:
    path = tmp_path / "box"
    received = [m if m.endswith(b"\n") else m + b"\n" for m in MESSAGES.values()]  # as POP3 sends
    with open_destination(path, kind) as destination:
        first = deliver(destination, received[:3])
        rest = deliver(destination, received[3:])
    copies = stored_copies(path, kind)
    placements = [c.placement for c in copies]
    if kind == "maildir":
        assert sorted(p.target for p in placements) == sorted(p.target for p in first + rest)
    else:
        assert placements == first + rest  # offset, length and digest, byte for byte
    assert holds(path, kind, placements) == [True] * len(placements)
    by_head = {c.head: c for c in copies}
    for message in received:
        copy = by_head[message[: message.index(b"\n\n") + 1]]
        assert copy.wire_size == on_the_wire(message)


def test_holds_is_false_for_what_is_not_there(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    with open_destination(path, "mbox") as destination:
        [placement] = deliver(destination, [b"Subject: a\n\nx\n"])
    moved = placement.__class__(placement.target, placement.offset + 1, placement.length, "")
    assert holds(path, "mbox", [placement, moved]) == [True, False]
    assert holds(tmp_path / "none", "mbox", [placement]) == [False]
    assert holds(tmp_path / "none", "maildir", [placement]) == [False]


class Copy:
    def __init__(self, head: bytes, wire_size: int) -> None:
        self.head = head
        self.wire_size = wire_size


HEAD = b"From: a@example.org\nDate: Mon, 7 Dec 2026 10:00:00 +0000\nMessage-ID: <1@x>\n"


def test_fields_are_unfolded_and_compared_as_bytes() -> None:
    folded = b"Message-ID:\n <1@x>\nfrom:  a@example.org\nDate: d\nFrom: second\n\nFrom: body\n"
    assert fields(folded) == {b"message-id": "<1@x>", b"from": "a@example.org", b"date": "d"}


def test_only_one_to_one_pairs_are_matched() -> None:
    other = HEAD.replace(b"<1@x>", b"<2@x>")
    listed = [
        Listed(1, "u1", 100, HEAD),  # one copy of its size: matched
        Listed(2, "u2", 50, other),  # two copies fit it: ambiguous
        Listed(3, "u3", 70, HEAD.replace(b"<1@x>", b"<3@x>")),  # no copy: to fetch
        Listed(4, "u4", 10, b"From: a@example.org\n"),  # neither Message-ID nor Date: to fetch
    ]
    copies = [
        Copy(HEAD, 100),
        Copy(HEAD, 99),  # the same headers, another size: not this message
        Copy(other, 50),
        Copy(other, 52),  # a final line end POP3 added: fits as well
        Copy(b"From: a@example.org\n", 10),
    ]
    outcome = match(listed, copies)
    assert [(m.uidl, c) for m, c in outcome.matched] == [("u1", copies[0])]
    assert [m.uidl for m in outcome.ambiguous] == ["u2"]
    assert [m.uidl for m in outcome.unmatched] == ["u3", "u4"]


def test_two_messages_on_the_server_fitting_one_copy_record_neither() -> None:
    listed = [Listed(1, "u1", 100, HEAD), Listed(2, "u2", 100, HEAD)]
    outcome = match(listed, [Copy(HEAD, 100)])
    assert (outcome.matched, [m.uidl for m in outcome.ambiguous]) == ([], ["u1", "u2"])
