"""Global options work after the command, and -q/--json before it (issue 14, item 2)."""

from __future__ import annotations

import pytest

from pop3s_fetch.cli import hoist_options


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        (["sync", "-v"], ["-v", "sync"]),
        (["sync", "-vv", "work"], ["-vv", "sync", "work"]),
        (["sync", "work", "--debug"], ["--debug", "sync", "work"]),
        (["sync", "--config", "c.toml", "work"], ["--config", "c.toml", "sync", "work"]),
        (["sync", "-c", "c.toml"], ["-c", "c.toml", "sync"]),
        (["sync", "--config=c.toml"], ["--config=c.toml", "sync"]),
        (["--json", "sync", "work"], ["sync", "--json", "work"]),
        (["-q", "--debug", "sync"], ["--debug", "sync", "-q"]),
        (["sync", "--wait", "5", "-q"], ["sync", "--wait", "5", "-q"]),
        (["password", "set", "work", "-v"], ["-v", "password", "set", "work"]),
        (["--json", "config", "check"], ["config", "check", "--json"]),
        (["sync", "--", "-v"], ["sync", "--", "-v"]),  # after --, a name, not an option
        (["-c", "c.toml", "sync"], ["-c", "c.toml", "sync"]),
        (["--version"], ["--version"]),
    ],
)
def test_options_are_moved_to_where_click_reads_them(typed: list[str], parsed: list[str]) -> None:
    assert hoist_options(typed) == parsed
