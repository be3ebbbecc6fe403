"""mboxrd specifics: quoting across chunk boundaries, the From line, append safety, locks."""

from __future__ import annotations

import errno
import hashlib
import itertools
import mailbox
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3s_fetch.destinations import Placement, open_destination
from pop3s_fetch.destinations.mbox import Mbox, MboxrdQuoter, envelope_sender, from_line
from pop3s_fetch.errors import DeliveryError, ExitCode, LockedError
from tests.unit.test_delivery import deliver, read_mboxrd, stage

ONE_MESSAGE = b"Subject: one\n\nbody\n"


def reference_quote(data: bytes) -> bytes:
    """mboxrd quoting written the obvious way, one line at a time."""
    pieces = data.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]] + [pieces[-1]]
    return b"".join(b">" + line if re.match(rb">*From ", line) else line for line in lines)


def quote_in_chunks(data: bytes, cuts: list[int]) -> bytes:
    quoter = MboxrdQuoter()
    out: list[bytes] = []
    bounds = [0, *sorted(cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        out.extend(quoter.feed(data[start:end]))
    out.append(quoter.flush())
    return b"".join(out)


# Fragments that make From lines, ">" runs and line ends likely, mixed with arbitrary bytes.
FRAGMENTS = st.sampled_from(
    [b">", b">>", b"From ", b"From", b"Fr", b"om ", b"F", b"\n", b"x", b" "]
)
MAIL_LIKE = st.lists(FRAGMENTS | st.binary(max_size=6), max_size=40).map(b"".join)


@given(data=MAIL_LIKE | st.binary(), cut_seeds=st.lists(st.integers(min_value=0), max_size=12))
def test_quoting_does_not_depend_on_chunk_boundaries(data: bytes, cut_seeds: list[int]) -> None:
    cuts = [seed % (len(data) + 1) for seed in cut_seeds]

    assert quote_in_chunks(data, cuts) == reference_quote(data)


@settings(max_examples=60, deadline=None)
@given(data=MAIL_LIKE, chunk_size=st.integers(min_value=1, max_value=9))
def test_what_lands_in_the_mbox_is_the_quoted_message(data: bytes, chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as directory, Mbox(Path(directory) / "inbox") as box:
        [placement] = deliver(box, [data], chunk_size)
        stored = (Path(directory) / "inbox").read_bytes()

    ending = b"\n" if data.endswith(b"\n") else b"\n\n"
    assert stored.split(b"\n", 1)[1] == reference_quote(data) + ending
    assert placement.length == len(stored)
    assert read_mboxrd(stored) == [data if data.endswith(b"\n") else data + b"\n"]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"From a\n"], b">From a\n"),
        ([b"Fr", b"om a\n"], b">From a\n"),
        ([b">>", b">", b"From", b" a"], b">>>>From a"),
        ([b">" * 100_000, b"From x\n"], b">" * 100_001 + b"From x\n"),
        ([b"x\nF", b"rom\n", b"From"], b"x\nFrom\nFrom"),
        ([b"a From b\nFrom c"], b"a From b\n>From c"),
        ([b"Fro", b"m", b"", b" "], b">From "),
    ],
)
def test_quoting_examples(chunks: list[bytes], expected: bytes) -> None:
    quoter = MboxrdQuoter()
    out = b"".join(part for chunk in chunks for part in quoter.feed(chunk))

    assert out + quoter.flush() == expected


def test_a_long_run_of_quote_marks_is_not_held_back() -> None:
    quoter = MboxrdQuoter()

    assert b"".join(quoter.feed(b">" * 100_000)) == b">" * 100_000


@pytest.mark.parametrize(
    ("head", "sender"),
    [
        (b"Return-Path: <alice@example.com>\nSubject: x\n\nbody\n", "alice@example.com"),
        (b"return-path:<bob@example.org>\n\n", "bob@example.org"),
        (b"Subject: x\nReturn-Path:\n  <carol@example.net>\n\n", "carol@example.net"),
        (b"Return-Path: dave@example.com\n\n", "dave@example.com"),
        (b"Return-Path: <>\n\n", "MAILER-DAEMON"),
        (b"Subject: no return path\n\nbody\n", "MAILER-DAEMON"),
        (b"Subject: x\n\nReturn-Path: <in-the-body@example.com>\n", "MAILER-DAEMON"),
        (b"\nReturn-Path: <no-headers@example.com>\n", "MAILER-DAEMON"),
        (b'Return-Path: <"a b"@example.com>\n\n', "MAILER-DAEMON"),
        (b"Return-Path: <\xc3\xa9@example.com>\n\n", "MAILER-DAEMON"),
    ],
)
def test_envelope_sender(head: bytes, sender: str) -> None:
    assert envelope_sender(head) == sender


def test_from_line_uses_asctime_in_utc() -> None:
    assert from_line("alice@example.com", 0) == b"From alice@example.com Thu Jan  1 00:00:00 1970\n"


@pytest.fixture
def mbox_path(tmp_path: Path) -> Path:
    return tmp_path / "inbox"


@pytest.fixture
def box(mbox_path: Path) -> Iterator[Mbox]:
    with Mbox(mbox_path, lock_timeout=0.3) as opened:
        yield opened


FROM_LINE = re.compile(rb"From (\S+) [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")


def test_from_line_sender_comes_from_return_path(box: Mbox, mbox_path: Path) -> None:
    deliver(
        box,
        [
            b"Return-Path: <alice@example.com>\nSubject: a\n\nhi\n",
            b"Return-Path: <>\nSubject: bounce\n\nsorry\n",
            b"Subject: none\n\nhi\n",
        ],
    )

    from_lines = [line for line in mbox_path.read_bytes().split(b"\n") if line.startswith(b"From ")]
    assert [FROM_LINE.fullmatch(line) is not None for line in from_lines] == [True] * 3
    assert [line.split(b" ")[1] for line in from_lines] == [
        b"alice@example.com",
        b"MAILER-DAEMON",
        b"MAILER-DAEMON",
    ]


def test_stdlib_mailbox_reads_the_file(box: Mbox, mbox_path: Path) -> None:
    deliver(box, [b"Return-Path: <a@example.com>\nSubject: one\n\n1\n", b"Subject: two\n\n2\n"])

    reader = mailbox.mbox(mbox_path, create=False)
    try:
        messages = list(reader)
    finally:
        reader.close()
    assert [m["Subject"] for m in messages] == ["one", "two"]
    assert messages[0].get_from().startswith("a@example.com ")


def test_appending_after_foreign_mail_keeps_it_and_adds_a_blank_line(
    box: Mbox, mbox_path: Path
) -> None:
    existing = (
        b"From someone Thu Jan  1 00:00:00 1970\nSubject: old\n\nold body without blank line\n"
    )
    mbox_path.write_bytes(existing)

    [placement] = deliver(box, [ONE_MESSAGE])

    data = mbox_path.read_bytes()
    assert data.startswith(existing + b"\n")
    assert placement.offset == len(existing) + 1
    assert read_mboxrd(data) == [b"Subject: old\n\nold body without blank line\n", ONE_MESSAGE]


def test_refuses_a_file_that_is_not_an_mbox(box: Mbox, mbox_path: Path) -> None:
    mbox_path.write_bytes(b"my shopping list\n")
    staged = [stage(box, ONE_MESSAGE)]

    with pytest.raises(DeliveryError) as caught:
        box.publish(staged, lambda placements: None)

    assert str(caught.value) == (
        f"refusing to append to {mbox_path}: it is not an mbox file"
        ' (it does not start with "From ")'
    )
    assert mbox_path.read_bytes() == b"my shopping list\n"
    assert [name for name in os.listdir(mbox_path.parent) if name.endswith(".spool")] == []


def test_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="it is a directory"):
        open_destination(tmp_path, "mbox")


def test_disk_full_during_append_restores_the_file(
    box: Mbox, mbox_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(box, [ONE_MESSAGE])
    before = mbox_path.read_bytes()
    staged = [stage(box, b"Subject: two\n\n" + b"x" * 100_000 + b"\n")]
    recorded: list[list[Placement]] = []

    def half_then_full(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        os.write(out_fd, b"partial bytes that must go")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", half_then_full)
    with pytest.raises(DeliveryError) as caught:
        box.publish(staged, recorded.append)

    assert str(caught.value) == f"cannot append to the mbox {mbox_path}: disk full (ENOSPC)"
    assert caught.value.exit_code == ExitCode.IOERR
    assert len(recorded) == 1
    assert mbox_path.read_bytes() == before
    assert not (mbox_path.parent / "inbox.lock").exists()


def test_block_copy_is_used_where_sendfile_is_refused(
    box: Mbox, mbox_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", unsupported)
    deliver(box, [ONE_MESSAGE, b"From me\n"])

    assert read_mboxrd(mbox_path.read_bytes()) == [ONE_MESSAGE, b"From me\n"]


# --- reconcile ----------------------------------------------------------------------------


def test_reconcile_removes_a_partial_tail(box: Mbox, mbox_path: Path) -> None:
    first, second = deliver(box, [ONE_MESSAGE, b"Subject: two\n\nsecond body\n"])
    with mbox_path.open("r+b") as f:
        f.truncate(second.offset + second.length - 4)

    assert box.reconcile([first, second]) == [True, False]
    assert mbox_path.stat().st_size == second.offset


def test_reconcile_with_only_a_from_line_written(box: Mbox, mbox_path: Path) -> None:
    [placement] = deliver(box, [ONE_MESSAGE])
    with mbox_path.open("r+b") as f:
        f.truncate(placement.offset + 3)

    assert box.reconcile([placement]) == [False]
    assert mbox_path.stat().st_size == 0


def test_reconcile_does_not_touch_foreign_mail(box: Mbox, mbox_path: Path) -> None:
    [placement] = deliver(box, [ONE_MESSAGE])
    data = mbox_path.read_bytes()
    foreign = data.replace(b"body", b"BODY")
    mbox_path.write_bytes(foreign + b"From other Thu Jan  1 00:00:00 1970\n\nmore\n\n")
    after = mbox_path.read_bytes()

    assert box.reconcile([placement]) == [False]
    assert mbox_path.read_bytes() == after


def test_reconcile_leaves_a_foreign_short_tail(box: Mbox, mbox_path: Path) -> None:
    placement = Placement("", 0, 10_000, hashlib.sha256(b"").hexdigest())
    mbox_path.write_bytes(b"garbage that is no From line\n")

    assert box.reconcile([placement]) == [False]
    assert mbox_path.read_bytes() == b"garbage that is no From line\n"


def test_reconcile_of_a_message_never_written(box: Mbox, mbox_path: Path) -> None:
    [placement] = deliver(box, [ONE_MESSAGE])
    beyond = Placement("", placement.offset + placement.length, 50, placement.digest)

    assert box.reconcile([beyond, placement]) == [False, True]
    assert mbox_path.stat().st_size == placement.length


# --- locking ------------------------------------------------------------------------------

HOLDER = """
import fcntl, sys
f = open(sys.argv[1], "r+b")
(fcntl.flock if sys.argv[2] == "flock" else fcntl.lockf)(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_by_another_process(path: Path, how: str) -> Iterator[None]:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline() == b"locked\n"
            yield
        finally:
            holder.stdin.close()
            assert holder.wait(timeout=10) == 0


@pytest.mark.parametrize("how", ["flock", "lockf"])
def test_a_lock_held_by_another_program_times_out(box: Mbox, mbox_path: Path, how: str) -> None:
    staged = [stage(box, ONE_MESSAGE)]
    recorded: list[list[Placement]] = []

    with held_by_another_process(mbox_path, how), pytest.raises(LockedError) as caught:
        box.publish(staged, recorded.append)

    assert str(caught.value).startswith(f"the mbox {mbox_path} stayed locked by another program")
    assert caught.value.exit_code == ExitCode.TEMPFAIL
    assert recorded == []
    assert mbox_path.read_bytes() == b""


def test_a_live_dotlock_is_respected(box: Mbox, mbox_path: Path) -> None:
    dotlock = mbox_path.with_name("inbox.lock")
    dotlock.write_text(f"{os.getpid()}\n")
    os.utime(dotlock, (0, 0))  # old, but its owner (this process) is alive

    with pytest.raises(LockedError, match=r"lock file .*inbox\.lock"):
        box.reconcile([])

    assert dotlock.exists()


def test_a_dotlock_that_cannot_be_created_names_the_lock_file(
    box: Mbox, mbox_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse_lock_files(path: str | Path, flags: int, mode: int = 0o777, **kw: object) -> int:
        if ".lock" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse_lock_files)
    with pytest.raises(DeliveryError) as caught:
        box.reconcile([])

    assert str(caught.value) == (
        f"cannot create the lock file inbox.lock in {mbox_path.parent}: permission denied"
    )
    assert caught.value.hint == f"not writable: check the permissions of {mbox_path.parent}"


def test_a_stale_dotlock_is_broken(box: Mbox, mbox_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        assert gone.wait(timeout=10) == 0
    dotlock = mbox_path.with_name("inbox.lock")
    dotlock.write_text(f"{gone.pid}\n")
    os.utime(dotlock, (0, 0))

    deliver(box, [ONE_MESSAGE])

    assert read_mboxrd(mbox_path.read_bytes()) == [ONE_MESSAGE]
    assert not dotlock.exists()


def test_a_fresh_dotlock_of_a_dead_process_is_broken_at_once(
    mbox_path: Path,
) -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        assert gone.wait(timeout=10) == 0
    dotlock = mbox_path.with_name("inbox.lock")
    box = Mbox(mbox_path, lock_timeout=0.5)
    dotlock.write_text(f"{gone.pid}\n")  # as a killed run leaves it: just now

    deliver(box, [ONE_MESSAGE])

    assert read_mboxrd(mbox_path.read_bytes()) == [ONE_MESSAGE]
    assert not dotlock.exists()
    box.close()


def test_a_fresh_dotlock_of_a_live_process_is_respected(mbox_path: Path) -> None:
    dotlock = mbox_path.with_name("inbox.lock")
    box = Mbox(mbox_path, lock_timeout=0.2)
    dotlock.write_text(f"{os.getpid()}\n")

    with pytest.raises(LockedError):
        deliver(box, [ONE_MESSAGE])
    assert dotlock.exists()
    box.close()


def test_publish_waits_for_the_lock_and_then_appends(mbox_path: Path) -> None:
    waiting = threading.Event()

    def observed_pause(seconds: float) -> None:
        waiting.set()
        time.sleep(seconds)

    box = Mbox(mbox_path, lock_timeout=30, pause=observed_pause)
    staged = [stage(box, ONE_MESSAGE)]
    result: list[list[Placement]] = []
    with held_by_another_process(mbox_path, "flock"):
        publisher = threading.Thread(
            target=lambda: result.append(box.publish(staged, lambda placements: None))
        )
        publisher.start()
        assert waiting.wait(timeout=10)
        assert mbox_path.read_bytes() == b""
    publisher.join(timeout=10)

    assert len(result) == 1
    assert read_mboxrd(mbox_path.read_bytes()) == [ONE_MESSAGE]
    box.close()
