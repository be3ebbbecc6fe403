"""Under cron the user's logged-in D-Bus session exists but the job is not told of it.

The keyring error then gives the one crontab line that reaches it, and only then; at a
terminal (init, password set) it says to export the variable in that shell instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch import credentials


@pytest.fixture
def run_user(tmp_path: Path) -> Iterator[Path]:
    """A /run/user with this user's directory holding a listening bus socket."""
    root = tmp_path / "run-user"
    (root / str(os.getuid())).mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(root / str(os.getuid()) / "bus"))
        yield root


def test_cron_without_the_session_variables_is_told_the_crontab_line(run_user: Path) -> None:
    bus = run_user / str(os.getuid()) / "bus"
    assert credentials.unseen_session_bus({"HOME": "/home/a"}, run_user) == (
        f"this run was not given your D-Bus session, whose socket is {bus}: put "
        f"DBUS_SESSION_BUS_ADDRESS=unix:path={bus} in the crontab (the keyring is usable "
        "while it is unlocked, that is while you are logged in)"
    )


def test_at_a_terminal_the_fix_is_an_export_in_that_shell(run_user: Path) -> None:
    """init and password set run in a shell the user is typing in: no crontab there."""
    bus = run_user / str(os.getuid()) / "bus"
    advice = credentials.unseen_session_bus({}, run_user, retry="pop3s-fetch password set work")
    assert advice == (
        f"this shell has no D-Bus session set, while yours is at {bus}: run "
        f"`export DBUS_SESSION_BUS_ADDRESS=unix:path={bus}` in this shell, then "
        "pop3s-fetch password set work (the keyring is usable while it is unlocked, that is "
        "while you are logged in)"
    )


@pytest.mark.parametrize(
    "environ",
    [
        {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/elsewhere"},
        {"XDG_RUNTIME_DIR": "/run/user/1000"},  # the bus there was looked at already
    ],
)
def test_no_advice_when_the_run_was_told_of_a_bus(run_user: Path, environ: dict[str, str]) -> None:
    assert credentials.unseen_session_bus(environ, run_user) == ""


def test_no_advice_without_a_socket(tmp_path: Path) -> None:
    assert credentials.unseen_session_bus({}, tmp_path) == ""
    (tmp_path / str(os.getuid())).mkdir()
    (tmp_path / str(os.getuid()) / "bus").write_text("not a socket")
    assert credentials.unseen_session_bus({}, tmp_path) == ""
