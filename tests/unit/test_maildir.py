"""Maildir specifics: names, collisions, where fsync runs, and reconcile after a crash."""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.destinations import DEFAULT_OWNER, Placement, open_destination, staging_prefix
from pop3s_fetch.destinations.maildir import (
    FILE_WORKERS,
    Maildir,
    sanitise_hostname,
    unique_name,
)
from pop3s_fetch.errors import DeliveryError
from tests.unit.test_delivery import deliver, stage

MESSAGE = b"Subject: hello\n\nFrom the body, exactly\n"
NAME = re.compile(r"(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]{16})\.(.+)")


@pytest.fixture
def maildir_path(tmp_path: Path) -> Path:
    return tmp_path / "Maildir"


@pytest.fixture
def maildir(maildir_path: Path) -> Iterator[Maildir]:
    with Maildir(maildir_path) as opened:
        yield opened


def only_tmp_name(path: Path) -> str:
    """The target name of the one message staged in tmp/ (its file there has our prefix)."""
    [name] = os.listdir(path / "tmp")
    assert name.startswith(staging_prefix(DEFAULT_OWNER))
    return name.removeprefix(staging_prefix(DEFAULT_OWNER))


def test_hostname_is_escaped() -> None:
    assert sanitise_hostname("mail/host:1.example") == r"mail\057host\0721.example"


def test_names_are_unique_and_say_who_made_them() -> None:
    names = {unique_name("host") for _ in range(1000)}

    assert len(names) == 1000
    for name in names:
        match = NAME.fullmatch(name)
        assert match is not None
        assert (match[3], match[6]) == (str(os.getpid()), "host")


def test_file_name_carries_the_escaped_hostname(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "odd/host:name")
    with Maildir(tmp_path / "Maildir") as maildir:
        [placement] = deliver(maildir, [MESSAGE])

    assert placement.target.endswith(r".odd\057host\072name")
    assert ":" not in placement.target


def test_missing_subdirectories_are_created(maildir_path: Path) -> None:
    (maildir_path / "cur").mkdir(parents=True)

    with Maildir(maildir_path):
        pass

    assert sorted(os.listdir(maildir_path)) == ["cur", "new", "tmp"]


def test_a_file_is_not_a_maildir(tmp_path: Path) -> None:
    (tmp_path / "mbox").write_bytes(b"")

    with pytest.raises(DeliveryError, match="it is not a directory"):
        open_destination(tmp_path / "mbox", "maildir")


def test_file_fsync_runs_off_the_calling_thread(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        threads.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    deliver(maildir, [MESSAGE, MESSAGE])

    caller = threading.current_thread().name
    # Two message files on the workers, then new/ once for the whole batch on the caller.
    assert [name != caller for name in threads] == [True, True, False]


def test_the_files_of_consecutive_messages_are_fsynced_at_once(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overlapping fsyncs are served together: FILE_WORKERS files must be able to sync at once."""
    together = threading.Barrier(FILE_WORKERS, timeout=10)
    real_fsync = os.fsync

    def fsync_in_step(fd: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            together.wait()  # breaks (and fails the batch) unless all those fsyncs are under way
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_in_step)
    staged = []
    for number in range(FILE_WORKERS):
        writer = maildir.open_message()
        writer.write(MESSAGE + b"%d\n" % number)
        staged.append(writer.finish())
    placements = maildir.publish(staged, lambda placements: None)

    assert not together.broken
    assert sorted((maildir.path / "new" / p.target).read_bytes() for p in placements) == [
        MESSAGE + b"%d\n" % number for number in range(FILE_WORKERS)
    ]
    assert FILE_WORKERS >= 4


def test_a_taken_name_is_replaced_before_it_is_journalled(
    maildir: Maildir, maildir_path: Path
) -> None:
    staged = stage(maildir, MESSAGE)
    taken = only_tmp_name(maildir_path)
    (maildir_path / "new" / taken).write_bytes(b"someone else's mail")
    recorded: list[list[Placement]] = []

    [placement] = maildir.publish([staged], recorded.append)

    assert recorded == [[placement]]
    assert placement.target != taken
    assert (maildir_path / "new" / taken).read_bytes() == b"someone else's mail"
    assert (maildir_path / "new" / placement.target).read_bytes() == MESSAGE
    assert os.listdir(maildir_path / "tmp") == []


def test_failed_link_is_a_delivery_error_and_cleans_up(
    maildir: Maildir, maildir_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = [stage(maildir, MESSAGE)]

    def no_space(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", no_space)
    with pytest.raises(DeliveryError, match=r"cannot link the message into .*: disk full"):
        maildir.publish(staged, lambda placements: None)

    assert os.listdir(maildir_path / "new") == []
    assert os.listdir(maildir_path / "tmp") == []


def test_a_failed_file_fsync_stops_the_batch_before_the_journal(
    maildir: Maildir, maildir_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    staged = [stage(maildir, MESSAGE)]
    recorded: list[list[Placement]] = []

    with pytest.raises(DeliveryError, match=r"cannot write the message file .*: disk full"):
        maildir.publish(staged, recorded.append)

    assert recorded == []
    assert os.listdir(maildir_path / "new") == []
    assert os.listdir(maildir_path / "tmp") == []


# --- reconcile ----------------------------------------------------------------------------


def intent(name: str) -> Placement:
    return Placement(name, 0, len(MESSAGE), "")


def test_reconcile_finds_a_message_a_reader_moved_to_cur(
    maildir: Maildir, maildir_path: Path
) -> None:
    flagged, plain = deliver(maildir, [MESSAGE, MESSAGE])
    for placement, suffix in ((flagged, ":2,S"), (plain, "")):
        os.rename(
            maildir_path / "new" / placement.target,
            maildir_path / "cur" / (placement.target + suffix),
        )

    assert maildir.reconcile([flagged, plain]) == [True, True]


def test_reconcile_of_a_staged_message_removes_the_leftover(
    maildir: Maildir, maildir_path: Path
) -> None:
    stage(maildir, MESSAGE)
    name = only_tmp_name(maildir_path)

    assert maildir.reconcile([intent(name)]) == [False]
    assert os.listdir(maildir_path / "tmp") == []


def test_reconcile_of_a_message_that_never_got_written(maildir: Maildir) -> None:
    assert maildir.reconcile([intent(unique_name("host"))]) == [False]


def test_reconcile_after_a_crash_between_link_and_unlink(
    maildir: Maildir, maildir_path: Path
) -> None:
    stage(maildir, MESSAGE)
    name = only_tmp_name(maildir_path)
    staged = maildir_path / "tmp" / (staging_prefix(DEFAULT_OWNER) + name)
    os.link(staged, maildir_path / "new" / name)

    assert maildir.reconcile([intent(name)]) == [True]
    assert os.listdir(maildir_path / "tmp") == []
    assert (maildir_path / "new" / name).read_bytes() == MESSAGE


def test_reconcile_does_not_mistake_a_foreign_file_for_ours(
    maildir: Maildir, maildir_path: Path
) -> None:
    stage(maildir, MESSAGE)
    name = only_tmp_name(maildir_path)
    (maildir_path / "new" / name).write_bytes(b"someone else's mail")

    assert maildir.reconcile([intent(name)]) == [False]
    assert os.listdir(maildir_path / "tmp") == []
    assert (maildir_path / "new" / name).read_bytes() == b"someone else's mail"
