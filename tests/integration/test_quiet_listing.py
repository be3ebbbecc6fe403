"""Idle runs over a listing the last complete run settled (issue 15, target 2): no per-message
work, and never a missed message: any change to the listing, the state or a setting that
could decide otherwise brings the full run back."""

from __future__ import annotations

import dataclasses
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.pop3 import codec
from pop3s_fetch.state import StateStore, open_store
from pop3s_fetch.sync import AccountResult, sync_account
from tests.support.reporting import NullReporter
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "quiet-test-password"
MAILBOX = [f"Subject: m{n}\n\nbody {n}\n".encode() for n in range(3)]


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> Iterator[InProcessRig]:
    with serve(server_ssl_context, MAILBOX, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            MAILBOX,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=True,
            ca_file=ca_file,
            timeout=2.0,
        )


@dataclasses.dataclass
class Work:
    """Per-message work done in a run: listings parsed, delivered sets read."""

    parsed: int = 0
    delivered_reads: int = 0


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Work:
    counts = Work()
    parse, delivered = codec.parse_listing, StateStore.delivered

    def counting_parse(body: bytes, verb: str) -> object:
        counts.parsed += 1
        return parse(body, verb)

    def counting_delivered(self: StateStore) -> set[str]:
        counts.delivered_reads += 1
        return delivered(self)

    monkeypatch.setattr(codec, "parse_listing", counting_parse)
    monkeypatch.setattr(StateStore, "delivered", counting_delivered)
    return counts


def run(rig: InProcessRig, **changes: object) -> AccountResult:
    account = dataclasses.replace(rig.account, **changes)  # type: ignore[arg-type]
    result = sync_account(account, lambda: PASSWORD, rig.options, NullReporter())
    assert result.error is None
    return result


def settle(rig: InProcessRig) -> None:
    """The first download, then the idle run that records the listing as settled."""
    assert run(rig).fetched == 3
    assert run(rig).fetched == 0
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        assert store.quiet_listing() is not None


def test_a_settled_listing_is_neither_parsed_nor_compared_again(
    rig: InProcessRig, work: Work
) -> None:
    settle(rig)
    before = dataclasses.replace(work)
    quiet = run(rig)
    assert (quiet.fetched, quiet.on_server, quiet.skipped) == (0, 3, 3)
    assert (work.parsed, work.delivered_reads) == (before.parsed, before.delivered_reads)
    # A small mailbox gets LIST with UIDL, in the login's flight (it costs no round trip).
    assert not [c for c in rig.sessions()[-1] if c.startswith(("RETR", "DELE", "TOP"))]
    assert rig.landed() == rig.expected()


def test_new_mail_changes_the_listing_and_is_fetched(rig: InProcessRig, work: Work) -> None:
    settle(rig)
    rig.store.add(b"Subject: new\n\nnew\n")
    parsed = work.parsed
    assert run(rig).fetched == 1
    assert work.parsed == parsed + 1
    assert run(rig).fetched == 0  # and that run settles the new listing again


def test_mail_removed_and_added_elsewhere_is_fetched(rig: InProcessRig) -> None:
    settle(rig)
    first = rig.store.messages()[0][0]
    rig.store.delete([first])
    rig.store.add(b"Subject: other\n\nother\n")
    assert run(rig).fetched == 1


def test_state_forget_brings_the_message_back(rig: InProcessRig) -> None:
    settle(rig)
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        store.forget_everywhere([rig.store.messages()[1][0]])
    assert run(rig).fetched == 1


def test_a_row_deleted_by_another_program_brings_the_message_back(rig: InProcessRig) -> None:
    settle(rig)
    db = sqlite3.connect(rig.options.state_dir / "test.sqlite3")
    with db:
        db.execute("DELETE FROM messages WHERE uidl = ?", (rig.store.messages()[2][0],))
    db.close()
    assert run(rig).fetched == 1


def test_keep_false_is_never_a_quiet_run(rig: InProcessRig, work: Work) -> None:
    settle(rig)
    done = run(rig, keep=False)
    assert (done.fetched, done.deleted) == (0, 3)
    assert rig.store.messages() == []


@pytest.mark.parametrize(
    "setting", [{"max_message_size": 10}, {"max_messages": 1}, {"delete_after": 1.0}]
)
def test_a_changed_setting_lists_again(
    rig: InProcessRig, work: Work, setting: dict[str, object]
) -> None:
    settle(rig)
    parsed = work.parsed
    run(rig, **setting)
    assert work.parsed == parsed + 1


def test_a_quiet_run_writes_nothing_to_the_state(rig: InProcessRig) -> None:
    settle(rig)
    watcher = sqlite3.connect(rig.options.state_dir / "test.sqlite3")
    before = watcher.execute("PRAGMA data_version").fetchone()[0]
    run(rig)
    assert watcher.execute("PRAGMA data_version").fetchone()[0] == before
    run(rig, max_messages=5)  # a full run (another fingerprint) does write
    assert watcher.execute("PRAGMA data_version").fetchone()[0] != before
    watcher.close()


def test_a_quiet_run_reads_no_table_whole(
    rig: InProcessRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement of a quiet run is an index search or touches a small table: a scan of
    the messages (opening the store, looking for pending deliveries) grows with the mailbox."""
    settle(rig)
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = connect(*args, **kwargs)  # type: ignore[arg-type]
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    run(rig)
    monkeypatch.undo()
    planner = sqlite3.connect(rig.options.state_dir / "test.sqlite3")
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "messages" in s]
    assert reads  # the pending deliveries were looked for
    for statement in reads:
        plan = " | ".join(row[3] for row in planner.execute(f"EXPLAIN QUERY PLAN {statement}"))
        stops_at_once = statement.rstrip().endswith("LIMIT 1")
        assert stops_at_once or "SCAN messages" not in plan, (statement, plan)
    planner.close()
