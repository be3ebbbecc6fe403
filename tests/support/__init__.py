"""Fixtures that start real servers (Dovecot, a Secret Service) and mint test certificates.

Each fixture module is a pytest plugin loaded from ``tests/conftest.py``. This package provides
the world the program talks to, not the program, so the only modules of ``pop3s_fetch`` the
fixture modules may import are the shipped stand-ins for that world: ``pop3s_fetch.demo.server``,
``pop3s_fetch.demo.samples`` and ``pop3s_fetch.demo.ca`` (which themselves import nothing of
the package but ``pop3s_fetch.errors``). ``rig`` is the one exception: it is how the sync-safety
suites drive the program in-process (``sync_account``) and read back what it did
(``destinations.read_messages``). The import-linter contracts in ``pyproject.toml`` hold this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_SERVERS_VARIABLE = "POP3S_FETCH_REQUIRE_SERVERS"
POLL_INTERVAL = 0.05


def servers_required() -> bool:
    """True when CI demands the real servers, so that a missing one cannot pass as a skip."""
    return os.environ.get(REQUIRE_SERVERS_VARIABLE) == "1"


def server_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``POP3S_FETCH_REQUIRE_SERVERS=1`` is set."""
    if servers_required():
        pytest.fail(f"{reason} ({REQUIRE_SERVERS_VARIABLE}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


def session_members(session_id: int) -> list[int]:
    """Pids of the live processes in session ``session_id`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat.rpartition(")")[2].split()
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def kill_session_leftovers(session_id: int, timeout: float) -> None:
    """Give a daemon's children ``timeout`` seconds to follow it out, then SIGKILL the rest.

    Servers are started with ``start_new_session=True``, so their session id is their pid and
    every process they fork is found here even once reparented (unless it calls setsid()).
    """
    deadline = time.monotonic() + timeout
    while session_members(session_id) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)  # polling external processes' exit, with a deadline
    for pid in session_members(session_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
