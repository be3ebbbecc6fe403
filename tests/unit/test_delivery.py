"""Behaviour every destination shares, run against both Maildir and mbox on a real file system."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest

from pop3s_fetch.destinations import Destination, Placement, StagedMessage, open_destination
from pop3s_fetch.errors import DeliveryError, ExitCode

Kind = Literal["maildir", "mbox"]

MESSAGES = {
    "plain": b"Subject: plain\n\nhello\n",
    "8-bit": b"Subject: 8bit\n\n" + bytes(range(256)).replace(b"\n", b"") + b"\n\xff\xfe\x00\r\n",
    "64 KiB line": b"X-Long: yes\n\n" + b"a" * 65536 + b"\nend\n",
    "no final newline": b"Subject: t\n\nno newline at the end",
    "From lines": b"Subject: f\n\nFrom here\n>From there\n>>From everywhere\nFrom\nFrom the end",
    "empty body": b"Subject: nothing\n\n",
}


def stage(destination: Destination, message: bytes, chunk_size: int = 7) -> StagedMessage:
    """Stream one message into the destination in chunks of ``chunk_size`` bytes.

    Returns once the staged bytes are on disk, as a crash after staging would find them
    (Maildir's worker threads write them a little later; the tests inspect tmp/ directly).
    """
    writer = destination.open_message()
    for start in range(0, len(message), chunk_size):
        writer.write(message[start : start + chunk_size])
    staged = writer.finish()
    job = getattr(staged, "job", None)
    if job is not None:
        with contextlib.suppress(OSError):  # a failed write is the caller's to see at publish
            job.wait()
    return staged


def deliver(
    destination: Destination, messages: Sequence[bytes], chunk_size: int = 7
) -> list[Placement]:
    staged = [stage(destination, message, chunk_size) for message in messages]
    return destination.publish(staged, lambda placements: None)


def read_mboxrd(data: bytes) -> list[bytes]:
    """A deliberately simple mboxrd reader: split at From lines, unquote one ">"."""
    messages: list[list[bytes]] = []
    for line in (piece + b"\n" for piece in data.split(b"\n")[:-1]):
        if line.startswith(b"From "):
            messages.append([])
        else:
            messages[-1].append(re.sub(rb"^>(>*From )", rb"\1", line))
    bodies = [b"".join(lines) for lines in messages]
    assert all(body.endswith(b"\n\n") for body in bodies), "each message ends with a blank line"
    return [body[:-1] for body in bodies]


def delivered(kind: Kind, path: Path, placements: Sequence[Placement]) -> list[bytes]:
    """The messages as a reader would get them back, in placement order."""
    if kind == "maildir":
        return [(path / "new" / placement.target).read_bytes() for placement in placements]
    return read_mboxrd(path.read_bytes())


def as_stored(kind: Kind, message: bytes) -> bytes:
    """mbox must end every message with a newline; Maildir keeps the bytes as they are."""
    if kind == "mbox" and not message.endswith(b"\n"):
        return message + b"\n"
    return message


def temporary_files(kind: Kind, path: Path) -> list[str]:
    if kind == "maildir":
        return os.listdir(path / "tmp")
    return [name for name in os.listdir(path.parent) if name.endswith(".spool")]


def visible_state(kind: Kind, path: Path) -> object:
    """What a mail reader would see: new/ entries, or the mbox bytes."""
    if kind == "maildir":
        return sorted(os.listdir(path / "new"))
    return path.read_bytes()


@pytest.fixture(params=["maildir", "mbox"])
def kind(request: pytest.FixtureRequest) -> Kind:
    value: Kind = request.param
    return value


@pytest.fixture
def dest_path(tmp_path: Path, kind: Kind) -> Path:
    # Nested below a missing directory so that creating the parents is exercised too.
    return tmp_path / "mail" / ("Maildir" if kind == "maildir" else "inbox.mbox")


@pytest.fixture
def destination(dest_path: Path, kind: Kind) -> Iterator[Destination]:
    with open_destination(dest_path, kind) as opened:
        yield opened


def stage_and_publish(destination: Destination, message: bytes) -> None:
    staged = stage(destination, message, chunk_size=65536)
    destination.publish([staged], lambda placements: None)


class TestDestination:
    @pytest.mark.parametrize("chunk_size", [1, 5, 4096])
    def test_messages_come_back_as_sent(
        self, destination: Destination, kind: Kind, dest_path: Path, chunk_size: int
    ) -> None:
        messages = list(MESSAGES.values())

        placements = deliver(destination, messages, chunk_size)

        assert delivered(kind, dest_path, placements) == [as_stored(kind, m) for m in messages]

    def test_staged_size_counts_the_bytes_received(self, destination: Destination) -> None:
        message = MESSAGES["no final newline"]

        assert stage(destination, message).size == len(message)

    def test_files_are_private(self, destination: Destination, kind: Kind, dest_path: Path) -> None:
        [placement] = deliver(destination, [MESSAGES["plain"]])

        if kind == "maildir":
            files = [dest_path / "new" / placement.target]
            directories = [dest_path.parent, dest_path] + [
                dest_path / d for d in ("cur", "new", "tmp")
            ]
        else:
            files, directories = [dest_path], [dest_path.parent]
        assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600] * len(files)
        assert [stat.S_IMODE(d.stat().st_mode) for d in directories] == [0o700] * len(directories)

    def test_intents_are_recorded_once_before_anything_is_visible(
        self, destination: Destination, kind: Kind, dest_path: Path
    ) -> None:
        staged = [stage(destination, m) for m in (MESSAGES["plain"], MESSAGES["From lines"])]
        before = visible_state(kind, dest_path)
        calls: list[tuple[list[Placement], object]] = []

        def record_intents(placements: list[Placement]) -> None:
            calls.append((list(placements), visible_state(kind, dest_path)))

        placements = destination.publish(staged, record_intents)

        assert calls == [(placements, before)]
        assert visible_state(kind, dest_path) != before

    def test_placements_locate_each_message(
        self, destination: Destination, kind: Kind, dest_path: Path
    ) -> None:
        placements = deliver(destination, [MESSAGES["plain"], MESSAGES["8-bit"]])

        if kind == "maildir":
            for placement in placements:
                size = (dest_path / "new" / placement.target).stat().st_size
                assert (placement.offset, placement.length, placement.digest) == (0, size, "")
        else:
            data = dest_path.read_bytes()
            assert placements[0].offset == 0
            assert placements[1].offset == placements[0].offset + placements[0].length
            assert placements[1].offset + placements[1].length == len(data)
            for placement in placements:
                record = data[placement.offset : placement.offset + placement.length]
                from_line, body = record.split(b"\n", 1)
                assert from_line.startswith(b"From ")
                assert placement.target == ""
                assert hashlib.sha256(body).hexdigest() == placement.digest

    def test_published_messages_reconcile_as_present(self, destination: Destination) -> None:
        placements = deliver(destination, [MESSAGES["plain"], MESSAGES["From lines"]])

        assert destination.reconcile(placements) == [True, True]

    def test_abort_removes_the_temporary_file(
        self, destination: Destination, kind: Kind, dest_path: Path
    ) -> None:
        writer = destination.open_message()
        writer.write(MESSAGES["plain"])
        assert len(temporary_files(kind, dest_path)) == 1

        writer.abort()
        writer.abort()

        assert temporary_files(kind, dest_path) == []

    def test_close_removes_what_was_never_published(self, kind: Kind, dest_path: Path) -> None:
        destination = open_destination(dest_path, kind)
        stage(destination, MESSAGES["plain"])
        destination.open_message().write(b"half a mess")
        assert len(temporary_files(kind, dest_path)) == 2

        destination.close()

        assert temporary_files(kind, dest_path) == []
        assert visible_state(kind, dest_path) in ([], b"")

    def test_a_killed_runs_staging_is_removed_by_the_next_run_of_its_owner_only(
        self, kind: Kind, dest_path: Path
    ) -> None:
        killed = open_destination(dest_path, kind, owner="work")  # never closed: "killed"
        stage(killed, MESSAGES["plain"])
        killed.open_message().write(b"half a mess")
        other = open_destination(dest_path, kind, owner="home")
        stage(other, MESSAGES["plain"])  # another account's run in progress
        assert len(temporary_files(kind, dest_path)) == 3

        with open_destination(dest_path, kind, owner="work") as next_run:
            assert next_run.remove_stale_staging() == 2

        [survivor] = temporary_files(kind, dest_path)
        assert ".home." in survivor
        other.close()
        killed.close()
        assert temporary_files(kind, dest_path) == []

    def test_a_failing_journal_leaves_nothing_behind(
        self, destination: Destination, kind: Kind, dest_path: Path
    ) -> None:
        staged = [stage(destination, MESSAGES["plain"])]
        before = visible_state(kind, dest_path)

        def record_intents(placements: list[Placement]) -> None:
            raise RuntimeError("journal is broken")

        with pytest.raises(RuntimeError, match="journal is broken"):
            destination.publish(staged, record_intents)

        assert visible_state(kind, dest_path) == before
        assert temporary_files(kind, dest_path) == []

    def test_a_staged_message_is_published_only_once(self, destination: Destination) -> None:
        staged = [stage(destination, MESSAGES["plain"])]
        destination.publish(staged, lambda placements: None)

        with pytest.raises(ValueError, match="already published"):
            destination.publish(staged, lambda placements: None)

    def test_disk_full_while_writing_is_a_delivery_error(
        self,
        destination: Destination,
        kind: Kind,
        dest_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def full_disk(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(os, "write", full_disk)
            # mbox writes as it goes; Maildir's workers report by publish() at the latest.
            with pytest.raises(DeliveryError) as caught:
                stage_and_publish(destination, MESSAGES["64 KiB line"] * 8)

        error = caught.value
        assert "disk full (ENOSPC)" in str(error)
        assert str(dest_path.parent) in str(error)
        assert "free some space" in (error.hint or "")
        assert error.exit_code == ExitCode.IOERR
        assert temporary_files(kind, dest_path) == []

    def test_permission_denied_names_the_path_and_a_hint(
        self, destination: Destination, dest_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def denied(path: object, flags: int, mode: int = 0o777, **kwargs: object) -> int:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        with monkeypatch.context() as patch:
            patch.setattr(os, "open", denied)
            with pytest.raises(DeliveryError) as caught:
                destination.open_message()

        error = caught.value
        assert str(error).startswith("cannot create ")
        assert str(error).endswith(": permission denied")
        assert str(dest_path.parent) in str(error)
        assert (error.hint or "").startswith("not writable: check the permissions of ")

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
    def test_unwritable_destination_is_a_delivery_error(
        self, tmp_path: Path, kind: Kind, dest_path: Path
    ) -> None:
        open_destination(dest_path, kind).close()
        locked = dest_path / "tmp" if kind == "maildir" else dest_path.parent
        locked.chmod(0o500)
        try:
            with pytest.raises(DeliveryError) as caught, open_destination(dest_path, kind) as dest:
                stage(dest, MESSAGES["plain"])
        finally:
            locked.chmod(0o700)
        assert str(locked) in str(caught.value)
        assert caught.value.hint == f"not writable: check the permissions of {locked}"

    def test_a_large_message_streams_in_bounded_memory(
        self, destination: Destination, kind: Kind, dest_path: Path
    ) -> None:
        chunk = (b"From the stream, a line of text that goes on for a while\n" * 1130)[:65536]
        chunks = 50 * 1024 * 1024 // len(chunk)
        writer = destination.open_message()
        writer.write(b"Subject: big\n\n")

        tracemalloc.start()
        try:
            for _ in range(chunks):
                writer.write(chunk)
            staged = writer.finish()
            [placement] = destination.publish([staged], lambda placements: None)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert peak < 4 * 1024 * 1024
        assert staged.size == 14 + chunks * len(chunk)
        stored = dest_path.stat().st_size if kind == "mbox" else placement.length
        assert stored >= staged.size
