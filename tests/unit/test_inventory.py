"""``destinations.inventory`` streams: each message's size and digest equal those of the bytes
``read_messages`` gives, for hostile messages and odd mbox files, in bounded memory."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from pathlib import Path
from typing import Literal

import pytest

from pop3s_fetch.destinations import (
    Stored,
    inventory,
    open_destination,
    read_messages,
    stored_key,
    stored_keys,
)
from pop3s_fetch.destinations import maildir as maildir_module
from pop3s_fetch.destinations import mbox as mbox_module

SEPARATOR = b"From sender@example.com Sat Jan  1 00:00:00 2000\n"
Copy = Literal["maildir", "mbox"]  # the kinds that keep a copy to check
LONG_LINE = b"x" * (3 * 1024 * 1024) + b"\n"

HOSTILE = {
    "plain": b"Subject: plain\n\nbody\n",
    "quoted From": b"Subject: q\n\n>From here\n>>From there\n>>>>>From far\n",
    "From inside the body": b"Subject: f\n\nFrom me, with love\nFrom \nFrom\n",
    "starts with From": b"From someone\nSubject: s\n\nbody\n",
    "no final newline": b"Subject: n\n\nno end",
    "ends in a quoted From": b"Subject: e\n\n>From",
    "ends in an undecided run": b"Subject: e\n\n>>>Fro",
    "CRLF": b"Subject: c\r\n\r\nline one\r\nFrom inside\r\n>From quoted\r\n",
    "empty": b"",
    "a lone newline": b"\n",
    "ends in blank lines": b"Subject: b\n\nbody\n\n\n",
    "a 3 MB line": b"Subject: big\n\n" + LONG_LINE,
    "a 3 MB line, no end": b"Subject: big\n\n" + LONG_LINE[:-1],
    "a 3 MB run of > before From": b"Subject: r\n\n" + b">" * (3 * 1024 * 1024) + b"From x\n",
    "a 3 MB run of >": b"Subject: r\n\n" + b">" * (3 * 1024 * 1024) + b"\nFrom y\n",
}


def deliver(path: Path, kind: Copy, messages: list[bytes]) -> list[str]:
    """Deliver through the destination's own writer; the keys its placements are recorded as."""
    with open_destination(path, kind) as destination:
        staged = []
        for message in messages:
            writer = destination.open_message()
            writer.write(message)
            staged.append(writer.finish())
        placements = destination.publish(staged, lambda _: None)
    return [stored_key(kind, placement) for placement in placements]


def assert_streams_as_read(path: Path, kind: Copy) -> list[str]:
    """inventory's sizes and digests are read_messages' bytes'; stored_keys its keys."""
    read = read_messages(path, kind)
    listed = list(inventory(path, kind))
    assert [s.sha256 for s in listed] == [hashlib.sha256(m).hexdigest() for m in read]
    assert [s.wire_size for s in listed] == [len(m) + m.count(b"\n") for m in read]
    keys = [s.key for s in listed]
    assert list(stored_keys(path, kind)) == keys
    return keys


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
@pytest.mark.parametrize("block", [5, 7, 4096, None])
def test_hostile_messages_stream_as_read_messages_reads_them(
    tmp_path: Path, kind: Copy, block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block is not None:  # small pieces: every decision falls across a piece's end somewhere
        monkeypatch.setattr(mbox_module, "SCAN_BLOCK", block)
        monkeypatch.setattr(maildir_module, "READ_BLOCK", block)
    path = tmp_path / ("Maildir" if kind == "maildir" else "box.mbox")
    messages = list(HOSTILE.values())
    if block in (5, 7):  # a Python step per 5 bytes: the 3 MB lines would take minutes
        messages = [m for m in messages if len(m) < 1024 * 1024]
    keys = deliver(path, kind, messages)
    assert sorted(assert_streams_as_read(path, kind)) == sorted(keys)
    # And they are what was handed over: the mbox adds the final newline a message lacks.
    if kind == "mbox":
        messages = [m if m.endswith(b"\n") else m + b"\n" for m in messages]
    by_key = {s.key: s for s in inventory(path, kind)}
    assert [by_key[key].sha256 for key in keys] == [hashlib.sha256(m).hexdigest() for m in messages]


ODD_MBOXES = {
    "nothing before EOF": b"",
    "a preamble": b"not mail\n\n" + SEPARATOR + b"body\n\n",
    "no blank before the separator": SEPARATOR + b"a\n" + SEPARATOR + b"b\n",
    "CRLF blank before the separator": SEPARATOR + b"a\r\n\r\n" + SEPARATOR + b"b\r\n\r\n",
    "blank lines in a row": SEPARATOR + b"a\n\n\n\n" + SEPARATOR + b"\n\n",
    "a separator last, no newline": SEPARATOR + b"a\n\nFrom x",
    "a separator then EOF": SEPARATOR,
    "no final newline": SEPARATOR + b"a\n>From b",
    "ends in a run of >": SEPARATOR + b">>>>>>>>>",
    "an unquoted-looking >From at the start": SEPARATOR + b">From \n>From\n>>From x\n\n",
    "a long separator line": b"From " + b"y" * 100_000 + b"\nbody\n\n" + SEPARATOR + b"b\n",
    "a long > line": SEPARATOR + b">" * 100_000 + b"From z\n" + b">" * 100_000 + b"\n\n",
}


@pytest.mark.parametrize("content", ODD_MBOXES.values(), ids=ODD_MBOXES.keys())
@pytest.mark.parametrize("block", [5, 6, 64 * 1024])
def test_mbox_files_not_of_our_making_split_as_read_messages_splits_them(
    tmp_path: Path, content: bytes, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mbox_module, "SCAN_BLOCK", block)
    path = tmp_path / "box.mbox"
    path.write_bytes(content)
    keys = assert_streams_as_read(path, "mbox")
    # A key is the offset of a line starting "From ", at the start of a line.
    for key in keys:
        offset = int(key)
        assert content[offset : offset + 5] == b"From "
        assert offset == 0 or content[offset - 1 : offset] == b"\n"


def test_random_mbox_files_split_as_read_messages_splits_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeded, so a failure repeats: lines drawn from the ones the rules tell apart."""
    lines = [
        SEPARATOR,
        b"From ",
        b"From\n",
        b"\n",
        b"\r\n",
        b"text\n",
        b">From x\n",
        b">>From \n",
        b">>>\n",
        b">Fro",
        b"Fro",
        b">" * 13 + b"From y\n",
        b">" * 9,
        b"x" * 20 + b"\n",
    ]
    draw = random.Random(20261206)
    path = tmp_path / "box.mbox"
    for trial in range(400):
        monkeypatch.setattr(mbox_module, "SCAN_BLOCK", draw.choice([5, 6, 8, 13, 64 * 1024]))
        path.write_bytes(b"".join(draw.choices(lines, k=draw.randrange(0, 30))))
        try:
            assert_streams_as_read(path, "mbox")
        except AssertionError:
            print(f"trial {trial}: {path.read_bytes()!r}")
            raise


def test_a_missing_destination_holds_nothing(tmp_path: Path) -> None:
    kinds: list[Copy] = ["maildir", "mbox"]
    for kind in kinds:
        assert list(inventory(tmp_path / "none", kind)) == []
        assert list(stored_keys(tmp_path / "none", kind)) == []


def test_a_maildir_message_moved_or_deleted_after_the_listing_is_found_or_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail reader open on the copy moves new/ files to cur/ (adding flags) at any time."""
    path = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True)
    (path / "cur" / "1.moved:2,S").write_bytes(b"moved\n")
    (path / "cur" / "1.movedless:2,S").write_bytes(b"not this one\n")
    # The listing as it was a moment before: both still in new/.
    listed = [("1.moved", path / "new" / "1.moved"), ("1.deleted", path / "new" / "1.deleted")]
    monkeypatch.setattr(maildir_module, "_files", lambda _: iter(listed))
    assert list(inventory(path, "maildir")) == [
        Stored("1.moved", 7, hashlib.sha256(b"moved\n").hexdigest())
    ]


BIG = 60 * 1024 * 1024


def peak_while_listing(path: Path, kind: Copy) -> tuple[list[Stored], int]:
    tracemalloc.start()
    try:
        listed = list(inventory(path, kind))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return listed, peak


@pytest.mark.parametrize("line", [1000, BIG], ids=["1000-byte lines", "one line"])
@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_a_60_mb_message_is_checked_in_little_memory(tmp_path: Path, kind: Copy, line: int) -> None:
    """Our design: never a whole message in memory (a 50 MB one stays under 40 MB RSS)."""
    path = tmp_path / ("Maildir" if kind == "maildir" else "box.mbox")
    block = b"y" * (line - 1) + b"\n" if line < BIG else b"y" * (1024 * 1024)
    if kind == "maildir":
        for sub in ("new", "cur", "tmp"):
            (path / sub).mkdir(parents=True)
    with (path / "new" / "1.big" if kind == "maildir" else path).open("wb") as file:
        file.write(SEPARATOR if kind == "mbox" else b"")
        written = 0
        digest = hashlib.sha256()
        while written < BIG:
            file.write(block)
            digest.update(block)
            written += len(block)
    listed, peak = peak_while_listing(path, kind)
    newlines = written // line if line < BIG else 0
    assert listed == [Stored(listed[0].key, written + newlines, digest.hexdigest())]
    assert peak < 10 * 1024 * 1024
