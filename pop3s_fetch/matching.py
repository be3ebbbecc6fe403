"""Which message on the server is which copy in the destination, told by headers and size.

For ``state rebuild``: after a lost state, the messages still on the server are paired with
the copies already in the destination without downloading a body. A message is known by
its Message-ID, Date and From fields (from ``TOP n 0`` on the server, from the header block
of the copy) and by its size as the server counts it: the copy's bytes with CRLF line ends
(Maildir stores LF; mbox also adds a From line, quotes ">From " lines and a blank line
after each message, which the reader of the copy undoes before counting, see
``StoredCopy``), plus at most the one line end POP3 adds to a message stored without one
(FINAL_LINE_END). A copy that a program changed on the way (an added header) has another
size and is not matched: it is fetched again, a duplicate rather than a loss.

Only one-to-one pairs count: two messages on the server with the key of one copy, or two
copies with the key of one message, are ambiguous and neither is recorded (a wrong record
would skip, or with keep = false delete, a message that has no copy). A message with
neither Message-ID nor Date is never matched: size and sender alone say too little.

Must not know: POP3, the state store, how a destination is read; it compares bytes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

#: The fields a message is known by, with its size.
FIELDS = (b"message-id", b"date", b"from")

_FOLD = re.compile(rb"\r?\n(?=[ \t])")


class Copy(Protocol):
    """What matching needs of a copy in the destination."""

    @property
    def head(self) -> bytes: ...

    @property
    def wire_size(self) -> int: ...


C = TypeVar("C", bound=Copy)


@dataclass(frozen=True, slots=True)
class Listed:
    """A message on the server: its UIDL, LIST size and ``TOP n 0`` header block."""

    number: int
    uidl: str
    size: int
    head: bytes


Key = tuple[str, str, str]

#: A copy may be this much longer on the wire than LIST says: a message stored on the server
#: without a final line end is sent with one (RFC 1939 section 3), which LIST does not count.
FINAL_LINE_END = 2


@dataclass
class Matching(Generic[C]):
    """The outcome: pairs to record, messages left to fetch, and those too alike to tell."""

    matched: list[tuple[Listed, C]] = field(default_factory=list)
    unmatched: list[Listed] = field(default_factory=list)  # no copy: the next sync fetches them
    ambiguous: list[Listed] = field(default_factory=list)  # not recorded: fetched as well


def key(head: bytes) -> Key | None:
    """A message's Message-ID, Date and From (unfolded, spaces collapsed); None when it has
    neither Message-ID nor Date."""
    values = fields(head)
    message_id, date, sender = (values.get(name, "") for name in FIELDS)
    if not message_id and not date:
        return None
    return message_id, date, sender


def fits(listed: int, wire_size: int) -> bool:
    """Whether a copy of this size on the wire can be the message LIST gave as ``listed``."""
    return listed <= wire_size <= listed + FINAL_LINE_END


def fields(head: bytes) -> dict[bytes, str]:
    """The first value of each of FIELDS in a header block, as comparable text."""
    end = head.find(b"\n\n")
    block = _FOLD.sub(b"", head if end < 0 else head[: end + 1])
    found: dict[bytes, str] = {}
    for line in block.split(b"\n"):
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if colon and name in FIELDS and name not in found:
            # latin-1 maps every byte to one character: 8-bit headers compare as bytes.
            found[name] = " ".join(value.decode("latin-1").split())
    return found


def match(listed: Sequence[Listed], copies: Sequence[C]) -> Matching[C]:
    """Pair each message with the one copy it fits, when that copy fits no other message."""
    by_key: defaultdict[Key, list[int]] = defaultdict(list)
    for index, copy in enumerate(copies):
        copy_key = key(copy.head)
        if copy_key is not None:
            by_key[copy_key].append(index)
    candidates: list[list[int]] = []
    claimed: defaultdict[int, int] = defaultdict(int)  # copy -> how many messages it fits
    for message in listed:
        message_key = key(message.head)
        fitting = [
            index
            for index in (by_key.get(message_key, []) if message_key is not None else [])
            if fits(message.size, copies[index].wire_size)
        ]
        candidates.append(fitting)
        for index in fitting:
            claimed[index] += 1
    outcome: Matching[C] = Matching()
    for message, fitting in zip(listed, candidates, strict=True):
        if not fitting:
            outcome.unmatched.append(message)
        elif len(fitting) == 1 and claimed[fitting[0]] == 1:
            outcome.matched.append((message, copies[fitting[0]]))
        else:
            outcome.ambiguous.append(message)
    return outcome
