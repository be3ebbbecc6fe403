"""The per-account lock, held by another process: the refusal names the holder's pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pop3s_fetch.errors import LockedError
from pop3s_fetch.state import AccountLock


def test_lock_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "work.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from pop3s_fetch.state import AccountLock;"
            f"lock = AccountLock(Path({str(path)!r}), 'work'); lock.acquire();"
            "print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(LockedError) as caught:
            AccountLock(path, "work").acquire(wait=0)
        assert str(caught.value) == (
            f'account "work" is being synced by another pop3s-fetch (pid {holder.pid})'
        )
        assert caught.value.exit_code == 75
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    with AccountLock(path, "work") as lock:  # released when the holder exits
        lock.acquire()
        assert path.read_text() == f"{os.getpid()}\n"
