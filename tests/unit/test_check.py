"""check and sync --dry-run, without a server: the plan, the exit codes, the lines, the JSON."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import pytest

from pop3s_fetch.check import (
    DELIVERED_EARLIER,
    ONCE_SAVED,
    OVERRAN,
    OVERSIZE_UNREAD,
    SCHEMA,
    TOO_BIG,
    Deletion,
    Known,
    Skip,
    Survey,
    check_exit_code,
    check_lines,
    dry_run_exit_code,
    json_document,
    limit,
    plan,
    plan_lines,
    read_known,
)
from pop3s_fetch.config import Account
from pop3s_fetch.errors import AuthError, ConnectError
from pop3s_fetch.pop3 import RemoteMessage

UIDLS = {1: "a", 2: "b", 3: "c", 4: "d"}
KNOWN = Known(delivered=frozenset({"a", "b", "c"}), held=frozenset({"b"}))


def test_plan_keep_fetches_only_what_is_new_and_deletes_nothing() -> None:
    assert plan(UIDLS, KNOWN, keep=True) == ([4], [])


def test_plan_delete_removes_the_delivered_except_held_then_each_new_once_saved() -> None:
    new, deletions = plan(UIDLS, KNOWN, keep=False)
    assert new == [4]
    assert deletions == [Deletion(1, "a", DELIVERED_EARLIER), Deletion(3, "c", DELIVERED_EARLIER)]
    listed = [RemoteMessage(4, "d", 10)]
    _, _, later = limit(listed, KNOWN, account(keep=False))
    assert later == [Deletion(4, "d", ONCE_SAVED)]


def test_plan_retention_deletes_only_the_expired_and_never_the_held() -> None:
    known = dataclasses.replace(KNOWN, expired=frozenset({"b", "c"}))
    new, deletions = plan(UIDLS, known, keep=True, delete_after=30 * 86400)
    assert new == [4]
    assert deletions == [Deletion(3, "c", 'delivered over 30d ago (keep = "30d")')]
    assert plan(UIDLS, known, keep=True) == ([4], [])  # keep = true: expired means nothing


def account(**values: object) -> Account:
    return Account(name="work", host="h", username="u", destination=Path("/m"), **values)  # type: ignore[arg-type]


LISTED = [
    RemoteMessage(1, "n1", 100),
    RemoteMessage(2, "big", 5000),
    RemoteMessage(3, "n3", 100),
    RemoteMessage(4, "ran", 50),
    RemoteMessage(5, "n5", 100),
    RemoteMessage(6, "n6", 100),
]
LIMITED = Known(oversize=frozenset({"ran"}), overran=frozenset({"ran"}))


def test_limit_skips_oversize_and_defers_past_max_messages() -> None:
    plan_, skipped, later = limit(
        LISTED, LIMITED, account(max_message_size=1000, max_messages=2, keep=False)
    )
    assert [m.uidl for m in plan_.fetch] == ["n1", "n3"]
    assert [m.uidl for m in plan_.deferred] == ["n5", "n6"]
    assert skipped == [
        Skip(2, "big", 5000, TOO_BIG, reported=False),
        Skip(4, "ran", 50, OVERRAN, reported=True),
    ]
    # Deleted once saved: only what this run fetches; the skipped and deferred stay.
    assert later == [Deletion(1, "n1", ONCE_SAVED), Deletion(3, "n3", ONCE_SAVED)]


def test_limit_oversize_delete_deletes_unread_but_never_one_that_overran() -> None:
    _, skipped, later = limit(
        LISTED, LIMITED, account(max_message_size=1000, oversize="delete", max_bytes=250)
    )
    assert skipped == [Skip(4, "ran", 50, OVERRAN, reported=True)]
    assert later == [Deletion(2, "big", OVERSIZE_UNREAD)]


def test_plan_with_no_state_everything_is_new() -> None:
    assert plan(UIDLS, Known(), keep=True) == ([1, 2, 3, 4], [])


def test_read_known_creates_no_state_file_or_directory(tmp_path: Path) -> None:
    state = tmp_path / "state" / "pop3s-fetch"
    assert read_known(state / "work.sqlite3") == Known()
    assert list(tmp_path.iterdir()) == []


def survey(name: str, new: int = 0, *, error: Exception | None = None) -> Survey:
    messages = [RemoteMessage(n, f"u{n}", 1000 * n) for n in range(1, new + 1)]
    return Survey(name, on_server=new + 2, fetch=messages, error=error)  # type: ignore[arg-type]


REFUSED = AuthError("the server refused the login")
UNREACHABLE = ConnectError("cannot connect")


@pytest.mark.parametrize(
    ("surveys", "code"),
    [
        pytest.param([survey("a", 2)], 0, id="new mail"),
        pytest.param([survey("a")], 1, id="none"),
        pytest.param([survey("a"), survey("b", 1)], 0, id="new in one of two"),
        pytest.param([survey("a", error=REFUSED), survey("b", 1)], 0, id="new despite a failure"),
        pytest.param([survey("a"), survey("b", error=UNREACHABLE)], 75, id="none, one failed"),
        pytest.param(
            [survey("a", error=REFUSED), survey("b", error=UNREACHABLE)], 77, id="all failed"
        ),
    ],
)
def test_check_exit_code_answers_like_grep(surveys: list[Survey], code: int) -> None:
    assert check_exit_code(surveys) == code


@pytest.mark.parametrize(
    ("surveys", "code"),
    [
        pytest.param([survey("a")], 0, id="nothing to do is success"),
        pytest.param([survey("a", 3)], 0, id="something to do"),
        pytest.param([survey("a"), survey("b", error=UNREACHABLE)], 1, id="partial"),
        pytest.param([survey("a", error=REFUSED)], 77, id="all failed"),
    ],
)
def test_dry_run_exit_code_is_a_syncs(surveys: list[Survey], code: int) -> None:
    assert dry_run_exit_code(surveys) == code


def test_check_lines_one_per_account_that_answered() -> None:
    lines = check_lines([survey("a", 2), survey("b"), survey("c", 1), survey("d", error=REFUSED)])
    assert lines == [
        "a: 2 new messages (3.0 kB), 4 on server",
        "b: no new mail, 2 on server",
        "c: 1 new message (1.0 kB), 3 on server",
    ]


def planned() -> Survey:
    return Survey(
        "work",
        on_server=3,
        fetch=[RemoteMessage(2, "x2", 1500), RemoteMessage(3, "x3", 20)],
        delete=[Deletion(1, "x1", DELIVERED_EARLIER), Deletion(2, "x2", ONCE_SAVED)],
        interrupted=frozenset({"x3"}),
    )


def test_plan_lines_plain_one_fact_per_line() -> None:
    assert plan_lines(planned(), terminal=False) == [
        "work: fetch message 2 (1500 bytes, UIDL x2)",
        "work: fetch message 3 (20 bytes, UIDL x3, interrupted earlier)",
        "work: delete message 1 (UIDL x1, delivered earlier)",
        "work: delete message 2 (UIDL x2, once it is saved)",
        "work: would fetch 2 messages (1.5 kB) and delete 2 from the server, of 3 on the "
        "server (dry run: nothing was written or deleted)",
    ]


def test_plan_lines_terminal_aligned_list() -> None:
    assert plan_lines(planned(), terminal=True) == [
        "work: would fetch 2 messages (1.5 kB) and delete 2 from the server, of 3 on the "
        "server (dry run: nothing was written or deleted)",
        "          message      size  UIDL",
        "  fetch         2    1.5 kB  x2",
        "  fetch         3  20 bytes  x3    interrupted earlier: fetched only if not found in "
        "the destination",
        "  delete        1            x1    delivered earlier",
        "  delete        2            x2    once it is saved",
    ]


def test_plan_lines_nothing_to_do() -> None:
    assert plan_lines(Survey("work", on_server=5), terminal=True) == [
        "work: would fetch nothing and delete nothing, of 5 on the server "
        "(dry run: nothing was written or deleted)"
    ]


def test_json_document_check_and_dry_run() -> None:
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    surveys = [planned(), survey("down", error=UNREACHABLE)]
    document = json.loads(json.dumps(json_document(surveys, started, 1.25)))
    assert document["schema"] == SCHEMA == "pop3s-fetch.check/1"
    assert (document["exit_code"], document["new"], document["bytes"]) == (0, 2, 1520)
    assert document["dry_run"] is False
    first, second = document["accounts"]
    assert first == {
        "name": "work",
        "status": "new",
        "new": 2,
        "bytes": 1520,
        "on_server": 3,
        "oversize": 0,
        "duration": 0.0,
        "errors": [],
    }
    assert second["status"] == "failed"
    assert second["errors"][0]["code"] == 75
    dry = json_document(surveys, started, 1.25, dry_run=True)
    assert dry["exit_code"] == 1  # as a sync's: one of two failed
    assert dry["accounts"][0]["fetch"][0] == {"number": 2, "uidl": "x2", "size": 1500}
    assert dry["accounts"][0]["delete"][1] == {"number": 2, "uidl": "x2", "reason": ONCE_SAVED}


def test_dry_run_and_check_run_no_filter() -> None:
    """check and --dry-run never run the filter; what it skipped before is not new."""
    known = Known(filtered={"b": "skip", "c": "delete"})
    listing = {1: "a", 2: "b", 3: "c"}
    assert plan(listing, known, keep=True, filter_deletes=True)[0] == [1]
    assert [d.number for d in plan(listing, known, keep=True, filter_deletes=True)[1]] == [3]
    assert plan(listing, known, keep=True, filter_deletes=False) == ([1], [])
    assert plan(listing, known, keep=True) == ([1, 2, 3], [])  # no filter: its verdicts idle


def limited() -> Survey:
    return Survey(
        "work",
        on_server=5,
        fetch=[RemoteMessage(1, "n1", 100)],
        deferred=[RemoteMessage(3, "n3", 200)],
        skipped=[Skip(2, "big", 5000, TOO_BIG, reported=True)],
        delete=[Deletion(4, "old", 'delivered over 30d ago (keep = "30d")')],
    )


def test_plan_lines_list_deferred_skipped_and_expired() -> None:
    summary = (
        "work: would fetch 1 message (100 bytes), leave 1 new for a later run "
        "(max_messages/max_bytes), skip 1 over max_message_size and delete 1 from the server, "
        "of 5 on the server (dry run: nothing was written or deleted)"
    )
    assert plan_lines(limited(), terminal=False) == [
        "work: fetch message 1 (100 bytes, UIDL n1)",
        "work: defer message 3 (200 bytes, UIDL n3, max_messages/max_bytes: a later run)",
        "work: skip message 2 (5000 bytes, UIDL big, over max_message_size, left on the "
        "server (reported earlier))",
        'work: delete message 4 (UIDL old, delivered over 30d ago (keep = "30d"))',
        summary,
    ]
    assert plan_lines(limited(), terminal=True) == [
        summary,
        "          message       size  UIDL",
        "  fetch         1  100 bytes  n1",
        "  defer         3  200 bytes  n3    max_messages/max_bytes: a later run",
        "  skip          2     5.0 kB  big   over max_message_size, left on the server "
        "(reported earlier)",
        '  delete        4             old   delivered over 30d ago (keep = "30d")',
    ]


def test_check_counts_deferred_as_new_and_oversize_apart() -> None:
    assert limited().new == 2
    assert check_lines([limited()]) == [
        "work: 2 new messages (300 bytes), 5 on server, 1 over max_message_size"
    ]
    only_big = Survey("work", on_server=1, skipped=[Skip(1, "big", 5000, TOO_BIG, False)])
    assert check_exit_code([only_big]) == 1  # nothing a sync will download: no new mail
    assert check_lines([only_big]) == ["work: no new mail, 1 on server, 1 over max_message_size"]
