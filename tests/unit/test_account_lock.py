"""The lock file names its holder: exactly this pid, whatever an earlier holder left there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pop3s_fetch.state import AccountLock


@pytest.mark.parametrize("left", [b"", b"4194304999\n", b"1\n", None])
def test_the_lock_file_holds_exactly_our_pid(tmp_path: Path, left: bytes | None) -> None:
    path = tmp_path / "state" / "a.lock"
    if left is not None:
        path.parent.mkdir(mode=0o700)
        path.write_bytes(left)
        path.chmod(0o600)
    for _ in range(2):  # a daemon takes it again every poll
        with AccountLock(path, "a") as lock:
            lock.acquire()
            assert path.read_bytes() == f"{os.getpid()}\n".encode()
