"""What the user and scripts are told about limits (issue 12): messages left for the next run
and oversize messages, in the summary line, the table and the --json document."""

from __future__ import annotations

import datetime
import io

from rich.console import Console

from pop3s_fetch.report import json_document
from pop3s_fetch.sync import AccountResult, Oversize
from pop3s_fetch.ui import summary_line, summary_table


def result() -> AccountResult:
    return AccountResult(
        "work",
        fetched=2,
        octets=2000,
        on_server=9,
        remaining=5,
        oversize=[Oversize("u1", 30_000_000, "skip", False), Oversize("u2", 40, "delete", True)],
    )


def test_summary_line_says_more_remain() -> None:
    assert summary_line(result()) == (
        "work: 2 new messages (2.0 kB), 9 on server, 5 more next run (max_messages/max_bytes)"
    )
    assert "more next run" not in summary_line(AccountResult("work"))


def test_summary_table_says_more_remain() -> None:
    out = io.StringIO()
    Console(file=out, width=120).print(summary_table([result()]))
    assert "ok, 5 more next run" in out.getvalue()


def test_json_lists_remaining_and_oversize() -> None:
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    (account,) = json_document([result()], started, 1.0)["accounts"]
    assert account["remaining"] == 5
    assert account["oversize"] == [
        {"uidl": "u1", "size": 30_000_000, "action": "skip", "new": False},
        {"uidl": "u2", "size": 40, "action": "delete", "new": True},
    ]
    (plain,) = json_document([AccountResult("work")], started, 1.0)["accounts"]
    assert (plain["remaining"], plain["oversize"]) == (0, [])
