"""Files that are not ours in a destination (issue 11, items 10 and 11).

A shared spool such as /var/mail lets other users create entries beside the mbox: a link
planted there must not redirect a write. Links the user made are the user's business.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pop3s_fetch.destinations import open_destination
from pop3s_fetch.destinations.mbox import LOCK_SCRATCH_SUFFIX, MboxLock
from pop3s_fetch.errors import DeliveryError

OTHER_UID = 65534  # nobody
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's link")


def test_a_link_planted_at_the_dotlock_scratch_name_is_not_written_through(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    mbox = tmp_path / "inbox"
    mbox.touch()
    scratch = tmp_path / f".x.{os.getpid()}{LOCK_SCRATCH_SUFFIX}"
    scratch.symlink_to(victim)
    with MboxLock(mbox, scratch_prefix=".x."):
        assert (tmp_path / "inbox.lock").read_text() == f"{os.getpid()}\n"
    assert victim.read_text() == "precious\n"
    assert not scratch.exists()
    assert not scratch.is_symlink()


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_the_users_own_link_to_a_destination_is_followed(tmp_path: Path, kind: str) -> None:
    real = tmp_path / "disk" / "mail"
    real.parent.mkdir()
    link = tmp_path / "Mail"
    if kind == "maildir":
        real.mkdir()
    else:
        real.touch()
    link.symlink_to(real)
    open_destination(link, kind, owner="test").close()  # type: ignore[arg-type]
    assert (real / "new").is_dir() if kind == "maildir" else real.is_file()


@as_root
@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_another_users_link_as_the_destination_is_refused(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "where-they-want-it"
    target.mkdir() if kind == "maildir" else target.touch()
    planted = tmp_path / "Mail"
    planted.symlink_to(target)
    os.lchown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(DeliveryError) as caught:
        open_destination(planted, kind, owner="test")  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"cannot use {planted}: it is a symbolic link made by another user (uid {OTHER_UID})"
    )
    assert list(target.iterdir()) == [] if kind == "maildir" else target.stat().st_size == 0


@as_root
def test_another_users_link_as_maildir_new_is_refused(tmp_path: Path) -> None:
    maildir = tmp_path / "Mail"
    for name in ("cur", "tmp"):
        (maildir / name).mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (maildir / "new").symlink_to(elsewhere)
    os.lchown(maildir / "new", OTHER_UID, OTHER_UID)
    with pytest.raises(DeliveryError, match="is a symbolic link made by another user"):
        open_destination(maildir, "maildir", owner="test")
