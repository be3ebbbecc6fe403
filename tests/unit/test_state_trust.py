"""The state store trusts only what no other user could have written (issue 11, items 8-9).

A planted record can make ``keep = false`` delete a message that was never saved, and a planted
link can make the lock truncate a victim file: both are refused before anything is read or written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pop3s_fetch import durable
from pop3s_fetch.state import AccountLock, UnsafeStateError, open_store

OTHER_UID = 65534  # nobody


def test_a_world_writable_state_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    directory.chmod(0o777)
    with pytest.raises(UnsafeStateError) as caught:
        open_store(directory / "work.sqlite3")
    assert str(caught.value) == (
        f"the state directory {directory} is writable by other users (mode 0777), "
        "so its records of delivered mail cannot be trusted"
    )
    assert caught.value.hint == (
        f"check that nobody else changed its files, then: chmod 700 {directory}"
    )
    assert caught.value.exit_code == 77
    assert not (directory / "work.sqlite3").exists()


def test_a_group_writable_state_directory_refuses_the_lock_too(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    directory.chmod(0o770)
    with pytest.raises(UnsafeStateError, match=r"writable by other users \(mode 0770\)"):
        AccountLock(directory / "work.lock", "work").acquire()
    assert list(directory.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory to another user")
def test_a_state_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    os.chown(directory, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeStateError) as caught:
        open_store(directory / "work.sqlite3")
    assert str(caught.value) == (
        f"the state directory {directory} belongs to another user (uid {OTHER_UID}), "
        "so its records of delivered mail cannot be trusted"
    )
    assert caught.value.exit_code == 77


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_state_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "work.sqlite3"
    path.touch(mode=0o600)
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeStateError) as caught:
        open_store(path)
    assert str(caught.value) == (
        f"the state file {path} is another user's, so it cannot be trusted"
    )


def test_a_lock_file_planted_as_a_link_does_not_touch_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock = tmp_path / "work.lock"
    lock.symlink_to(victim)
    with pytest.raises(UnsafeStateError) as caught:
        AccountLock(lock, "work").acquire()
    assert str(caught.value) == (
        f"the lock file {lock} is a symbolic link, which pop3s-fetch never makes"
    )
    assert caught.value.exit_code == 77
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_state_file_planted_as_a_link_is_refused_and_its_target_kept(
    tmp_path: Path, suffix: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    path = tmp_path / "work.sqlite3"
    Path(f"{path}{suffix}").symlink_to(victim)
    with pytest.raises(UnsafeStateError, match="is a symbolic link, which pop3s-fetch never makes"):
        open_store(path)
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_a_state_directory_reached_through_the_users_own_link_is_used(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(real)
    with open_store(tmp_path / "state" / "work.sqlite3") as store:
        assert store.delivered() == set()
    assert (real / "work.sqlite3").is_file()


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories fsynced through durable.fsync_directory, in order (they still are)."""
    seen: list[Path] = []
    real_fsync_directory = durable.fsync_directory

    def recording(path: Path) -> None:
        seen.append(path)
        real_fsync_directory(path)

    monkeypatch.setattr(durable, "fsync_directory", recording)
    return seen


def test_new_directory_levels_are_fsynced_into_their_parents_deepest_first(
    tmp_path: Path, synced: list[Path]
) -> None:
    target = tmp_path / "a" / "b" / "c"
    created = durable.make_dirs_durably(target, 0o700)
    assert created == [tmp_path / "a", tmp_path / "a" / "b", target]
    assert synced == [tmp_path / "a" / "b", tmp_path / "a", tmp_path]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in created)
    synced.clear()
    assert durable.make_dirs_durably(target, 0o700) == []
    assert synced == []  # an existing directory costs no fsync


def test_a_new_state_file_is_fsynced_into_its_directory_only_when_created(
    tmp_path: Path, synced: list[Path]
) -> None:
    path = tmp_path / "state" / "work.sqlite3"
    open_store(path).close()
    assert synced == [tmp_path, tmp_path / "state"]  # the new directory, then the new file
    synced.clear()
    open_store(path).close()
    assert synced == []
