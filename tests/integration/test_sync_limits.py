"""Retention and limits end to end against the built-in server (issue 12, items 2 and 3).

Time is moved with ``SyncOptions.clock``, never slept. The promises checked: a message is
deleted only once delivered and old enough (or, when asked, unread for its size), a held one
never; an oversize message stays on the server, is warned about once and listed every time;
a download past max_message_size writes nothing past it; per-run limits spread a mailbox over
runs that together deliver each message exactly once.
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults
from pop3s_fetch.state import open_store
from pop3s_fetch.sync import AccountResult, Oversize, SyncOptions, sync_account
from tests.support.mail import as_stored, leftovers
from tests.support.reporting import NullReporter
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "limits-test-password"
DAY = 86400.0
SMALL = [f"Subject: small {n}\n\nbody {n}\n".encode() for n in range(5)]
BIG = b"Subject: big\n\n" + b"x" * 70 + b"\n" + (b"y" * 99 + b"\n") * 3000  # ~300 kB
MAILBOX = [SMALL[0], SMALL[1], BIG, SMALL[2], SMALL[3], SMALL[4]]
BIG_LISTED = len(BIG) + BIG.count(b"\n")  # CRLF line ends, as LIST counts
LIMIT = 100_000


@pytest.fixture(params=["maildir", "mbox"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path, fmt: str
) -> Iterator[InProcessRig]:
    with serve(server_ssl_context, MAILBOX, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            MAILBOX,
            tmp_path,
            name="test",
            fmt=fmt,
            keep=True,
            ca_file=ca_file,
            timeout=2.0,
        )


def run(rig: InProcessRig, at: float | None = None, **changes: object) -> AccountResult:
    """One sync of a variant of the rig's account, at clock time ``at``."""
    options = rig.options if at is None else dataclasses.replace(rig.options, clock=lambda: at)
    account = dataclasses.replace(rig.account, **changes)  # type: ignore[arg-type]
    return sync_account(account, lambda: PASSWORD, options, NullReporter())


def stored(rig: InProcessRig, *messages: bytes) -> list[bytes]:
    return sorted(as_stored(m, rig.fmt) for m in messages)


def commands(rig: InProcessRig, verb: str) -> list[str]:
    return [c for c in rig.sessions()[-1] if c.startswith(verb)]


# --- retention ----------------------------------------------------------------------------


def test_keep_duration_deletes_each_message_once_old_enough(rig: InProcessRig) -> None:
    t0 = time.time()
    keep_30d = {"keep": True, "delete_after": 30 * DAY}
    first = run(rig, t0, max_messages=2, **keep_30d)  # two delivered at t0
    assert (first.error, first.fetched, first.deleted) == (None, 2, 0)
    later = run(rig, t0 + 20 * DAY, **keep_30d)  # the rest at t0 + 20 days
    assert (later.error, later.fetched, later.deleted) == (None, 4, 0)
    assert rig.landed() == rig.expected()

    early = run(rig, t0 + 30 * DAY - 60, **keep_30d)
    assert (early.error, early.deleted) == (None, 0)
    assert commands(rig, "DELE") == []
    assert rig.on_server() == sorted(MAILBOX)

    expired = run(rig, t0 + 31 * DAY, **keep_30d)
    assert (expired.error, expired.fetched, expired.deleted) == (None, 0, 2)
    assert rig.on_server() == sorted(MAILBOX[2:])
    assert rig.landed() == rig.expected()  # deleting never fetches or loses anything

    rest = run(rig, t0 + 51 * DAY, **keep_30d)
    assert (rest.error, rest.fetched, rest.deleted) == (None, 0, 4)
    assert rig.on_server() == []
    assert rig.landed() == rig.expected()


def test_keep_duration_never_deletes_a_held_message(rig: InProcessRig) -> None:
    rig.server.faults = Faults(list_size_delta={1: 7})  # message 1 arrives "another size"
    t0 = time.time()
    assert run(rig, t0, keep=True, delete_after=DAY).error is None
    rig.server.faults = Faults()
    result = run(rig, t0 + 2 * DAY, keep=True, delete_after=DAY)
    assert (result.error, result.deleted) == (None, len(MAILBOX) - 1)
    assert rig.on_server() == [MAILBOX[0]]
    assert rig.landed() == rig.expected()


# --- max_message_size and oversize ----------------------------------------------------------


def test_oversize_is_left_on_the_server_and_reported_once(rig: InProcessRig) -> None:
    first = run(rig, max_message_size=LIMIT)
    assert first.error is None
    assert first.fetched == len(MAILBOX) - 1
    assert rig.landed() == stored(rig, *SMALL)
    assert commands(rig, "RETR 3") == []
    assert rig.on_server() == sorted(MAILBOX)
    uidl = rig.store.messages()[2][0]
    assert first.oversize == [Oversize(uidl, BIG_LISTED, "skip", True)]
    (warning,) = first.warnings
    assert warning.startswith("left 1 message over max_message_size (100,000 bytes) on the ")
    assert f"(first: message 3, {BIG_LISTED:,} bytes); this is said once" in warning

    second = run(rig, max_message_size=LIMIT)
    assert (second.error, second.fetched, second.warnings) == (None, 0, [])
    assert second.oversize == [dataclasses.replace(first.oversize[0], new=False)]

    raised = run(rig, max_message_size=10 * LIMIT)  # the user raised the limit: it comes
    assert (raised.error, raised.fetched, raised.oversize) == (None, 1, [])
    assert rig.landed() == rig.expected()
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        assert store.oversize() == {}


def test_oversize_delete_deletes_it_unread_with_a_warning(rig: InProcessRig) -> None:
    result = run(rig, max_message_size=LIMIT, oversize="delete")
    assert result.error is None
    assert result.deleted == 1
    assert commands(rig, "RETR 3") == []
    assert commands(rig, "DELE") == ["DELE 3"]
    assert rig.landed() == stored(rig, *SMALL)
    assert rig.on_server() == sorted(SMALL)  # keep = true: the others stay
    assert [o.action for o in result.oversize] == ["delete"]
    (warning,) = result.warnings
    assert "WITHOUT downloading" in warning
    assert warning.startswith("deleted 1 message over max_message_size (100,000 bytes) from ")


def test_a_download_past_max_message_size_is_stopped_and_skipped_from_then_on(
    rig: InProcessRig,
) -> None:
    # LIST says message 3 is 50 kB, within the limit; it sends ~300 kB. retr_limit alone
    # would allow 114 kB: the limit of 100 kB is what must stop it.
    rig.server.faults = Faults(list_size_delta={3: 50_000 - BIG_LISTED})
    first = run(rig, max_message_size=LIMIT, oversize="delete", keep=False)
    assert first.error is not None
    assert first.exit_code == 76
    assert first.error.message == (
        "message 3 ran past 100000 bytes though the server listed it as 50000 bytes, so it "
        "was not saved; it is over max_message_size (100,000 bytes)"
    )
    assert "later runs skip it" in str(first.error.hint)
    assert rig.landed() == stored(rig, SMALL[0], SMALL[1])  # those before it were kept
    assert leftovers(rig.destination, rig.fmt) == []
    assert rig.on_server() == sorted(MAILBOX)  # no QUIT: nothing deleted

    second = run(rig, max_message_size=LIMIT, oversize="delete", keep=False)
    assert second.error is None
    assert commands(rig, "RETR 3") == []
    assert "DELE 3" not in commands(rig, "DELE")  # never deleted unread: it may not be itself
    assert rig.landed() == stored(rig, *SMALL)
    assert rig.on_server() == [BIG]
    assert [(o.action, o.new) for o in second.oversize] == [("skip", False)]


# --- max_messages and max_bytes -------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [{"max_messages": 2}, {"max_bytes": 100}, {"max_messages": 4, "max_bytes": 400_000}],
    ids=["messages", "bytes", "both"],
)
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "delete"])
def test_per_run_limits_spread_a_mailbox_over_runs(
    rig: InProcessRig, limits: dict[str, int], keep: bool
) -> None:
    remaining, runs = len(MAILBOX), 0
    while remaining:
        result = run(rig, keep=keep, **limits)
        assert result.error is None
        assert result.fetched >= 1
        if "max_messages" in limits:
            assert result.fetched <= limits["max_messages"]
        assert result.remaining == remaining - result.fetched
        remaining, runs = result.remaining, runs + 1
        assert runs <= len(MAILBOX)
    assert runs > 1
    assert rig.landed() == rig.expected()
    assert rig.on_server() == ([] if not keep else sorted(MAILBOX))
    assert run(rig, keep=keep, **limits).fetched == 0


def test_clock_defaults_to_the_wall_clock() -> None:
    assert SyncOptions(state_dir=Path("/x")).clock() == pytest.approx(time.time(), abs=60)
