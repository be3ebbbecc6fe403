"""check, the dry-run plan and the on_new_mail hook against the built-in server, in process.

check must log in, list and QUIT (no RETR, no DELE), leave the state file as it was (or not
create one) and never touch the destination; the hook must see the delivered mail on disk,
with the account's lock released, and its failure must not fail the sync.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import ssl
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.check import DELIVERED_EARLIER, ONCE_SAVED, Deletion, survey_account
from pop3s_fetch.demo.server import Faults, wire_size
from tests.support.mail import corpus
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=[True, False], ids=["keep", "delete"])
def keep(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path, keep: bool
) -> Iterator[InProcessRig]:
    originals = corpus()
    with serve(server_ssl_context, originals, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            originals,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=keep,
            ca_file=ca_file,
            timeout=5.0,
        )


def survey(rig: InProcessRig):  # type: ignore[no-untyped-def]
    return survey_account(rig.account, lambda: PASSWORD, rig.options.state_dir)


def state_dump(rig: InProcessRig) -> list[str]:
    with sqlite3.connect(rig.options.state_dir / "test.sqlite3") as db:
        return list(db.iterdump())


def verbs(session: list[str]) -> list[str]:
    return [line.split()[0] for line in session]


def test_check_before_any_sync_counts_everything_and_creates_nothing(rig: InProcessRig) -> None:
    found = survey(rig)
    assert found.error is None
    assert found.new == found.on_server == len(rig.originals)
    assert found.octets == sum(wire_size(m) for m in rig.originals)
    assert "RETR" not in verbs(rig.sessions()[-1])
    assert "DELE" not in verbs(rig.sessions()[-1])
    assert not rig.options.state_dir.exists()
    assert not rig.destination.exists()
    assert rig.on_server() == sorted(rig.originals)


def test_check_after_a_sync_counts_only_what_arrived_since(rig: InProcessRig) -> None:
    assert rig.sync().error is None
    before = state_dump(rig)
    landed = rig.landed()
    late = [b"Subject: late\n\nhello\n", b"Subject: later\n\n" + b"x" * 5000 + b"\n"]
    for message in late:
        rig.store.add(message)
    found = survey(rig)
    assert found.error is None
    assert (found.new, found.octets) == (2, sum(wire_size(m) for m in late))
    assert found.on_server == (len(rig.originals) if rig.keep else 0) + 2
    assert "RETR" not in verbs(rig.sessions()[-1])
    assert "DELE" not in verbs(rig.sessions()[-1])
    assert state_dump(rig) == before
    assert rig.landed() == landed


def test_dry_run_plan_lists_deletions_with_keep_false(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    """A sync that kept its mail, then keep = false: the plan deletes the delivered ones."""
    originals = corpus()[:3]
    with serve(server_ssl_context, originals, user="alice", password=PASSWORD) as maildrop:
        rig = in_process_rig(
            maildrop,
            originals,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=True,
            ca_file=ca_file,
            timeout=5.0,
        )
        assert rig.sync().error is None
        uidl = maildrop.store.add(b"Subject: new\n\nnew\n")
        deleting = dataclasses.replace(rig.account, keep=False)
        found = survey_account(deleting, lambda: PASSWORD, rig.options.state_dir)
        assert found.error is None
        assert [(m.number, m.uidl) for m in found.fetch] == [(4, uidl)]
        delivered = [u for u, _ in maildrop.store.messages()][:3]
        assert found.delete == [
            *(Deletion(n, u, DELIVERED_EARLIER) for n, u in enumerate(delivered, 1)),
            Deletion(4, uidl, ONCE_SAVED),
        ]
        assert len(maildrop.store.messages()) == 4  # nothing was deleted
        assert "DELE" not in verbs(maildrop.sessions()[-1])


def test_check_reports_a_refused_login(rig: InProcessRig) -> None:
    found = survey_account(rig.account, lambda: "wrong", rig.options.state_dir)
    assert found.error is not None
    assert int(found.error.exit_code) == 77
    assert not rig.options.state_dir.exists()


HOOK = """
import fcntl, json, os, sys
maildir = os.environ["POP3S_FETCH_DESTINATION"]
lock = os.open(sys.argv[2], os.O_RDWR)
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the sync still held it
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({
        "new": os.environ["POP3S_FETCH_NEW"],
        "bytes": os.environ["POP3S_FETCH_BYTES"],
        "on_disk": len(os.listdir(os.path.join(maildir, "new"))),
    }) + "\\n")
sys.exit(int(os.environ.get("HOOK_EXIT", "0")))
"""


def with_hook(rig: InProcessRig, tmp_path: Path, *, exit_code: int = 0) -> Path:
    seen = tmp_path / "hook.jsonl"
    script = tmp_path / "hook.py"
    script.write_text(textwrap.dedent(HOOK).replace('"0"', f'"{exit_code}"'))
    lock = rig.options.state_dir / "test.lock"
    rig.account = dataclasses.replace(
        rig.account, on_new_mail=(sys.executable, str(script), str(seen), str(lock))
    )
    return seen


def test_hook_runs_after_the_mail_is_on_disk_and_the_lock_is_free(
    rig: InProcessRig, tmp_path: Path
) -> None:
    seen = with_hook(rig, tmp_path)
    first = rig.sync()
    assert (first.error, first.warnings) == (None, [])
    assert json.loads(seen.read_text()) == {
        "new": str(len(rig.originals)),
        "bytes": str(first.octets),
        "on_disk": len(rig.originals),
    }
    again = rig.sync()  # nothing new: no hook
    assert (again.error, again.fetched) == (None, 0)
    assert len(seen.read_text().splitlines()) == 1


def test_a_failing_hook_is_a_warning_and_the_mail_stays_delivered(
    rig: InProcessRig, tmp_path: Path
) -> None:
    seen = with_hook(rig, tmp_path, exit_code=4)
    result = rig.sync()
    assert result.error is None
    assert result.exit_code == 0
    assert result.warnings == [
        f"on_new_mail ({Path(sys.executable).name}) failed (exit status 4); the mail was delivered"
    ]
    assert seen.exists()
    assert rig.landed() == rig.expected()
    assert rig.on_server() == rig.expected_on_server()
    assert rig.sync().fetched == 0  # delivered, recorded: never fetched again


def test_a_server_without_uidl_is_all_new_with_keep_false_and_the_clear_error_otherwise(
    rig: InProcessRig,
) -> None:
    """As a sync decides: with keep = false every message is fetched and deleted in one
    session, so all are new and each is deleted once saved; keeping is refused with the fix."""
    rig.server.faults = Faults(no_uidl=True)
    found = survey(rig)
    assert verbs(rig.sessions()[-1]).count("RETR") == 0
    assert "DELE" not in verbs(rig.sessions()[-1])
    if rig.keep:
        assert found.error is not None
        assert found.error.exit_code == 76
        assert "set keep = false" in (found.error.hint or "")
        return
    assert found.error is None
    assert found.new == found.on_server == len(rig.originals)
    assert found.octets == sum(wire_size(m) for m in rig.originals)
    assert [d.reason for d in found.delete] == [ONCE_SAVED] * len(rig.originals)
    assert rig.on_server() == sorted(rig.originals)
