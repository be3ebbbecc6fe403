"""Retention and limits against a real Dovecot (issue 12, items 2 and 3).

The installed command runs as a process with its config file; where time must pass, either
the state's delivery times are moved back (what 31 days would leave in the file) or, in
process, ``SyncOptions.clock`` is moved on. Nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path

import pytest

from pop3s_fetch.config import Account
from pop3s_fetch.destinations import read_messages
from pop3s_fetch.sync import SyncOptions, sync_account
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import as_stored
from tests.support.reporting import NullReporter
from tests.support.rig import keyring_env

pytestmark = pytest.mark.dovecot

DAY = 86400.0
SMALL = [f"Subject: small {n}\n\nbody {n}\n".encode() for n in range(5)]
BIG = b"Subject: big\n\n" + (b"y" * 99 + b"\n") * 3000
BIG_LISTED = len(BIG) + BIG.count(b"\n")  # CRLF line ends, as LIST counts
MAILBOX = [SMALL[0], SMALL[1], BIG, SMALL[2], SMALL[3], SMALL[4]]


def setup(dovecot: DovecotServer, tmp_path: Path, extra: str) -> tuple[Cli, DovecotUser, Path]:
    user = dovecot.add_user(MAILBOX)
    cli = make_cli(tmp_path, keyring_env(user.password))
    destination = cli.home / "Maildir"
    text = account_toml(
        "work",
        host=dovecot.host,
        port=dovecot.port,
        username=user.name,
        destination=destination,
        ca_file=dovecot.ca_file,
    )
    if extra.startswith("keep = "):  # the account's own keep line gives way
        text = "".join(line for line in text.splitlines(True) if not line.startswith("keep = "))
    cli.write_config(text.rstrip("\n") + "\n" + extra)
    return cli, user, destination


def landed(destination: Path) -> list[bytes]:
    return sorted(read_messages(destination, "maildir"))


def stored(*messages: bytes) -> list[bytes]:
    return sorted(as_stored(m, "maildir") for m in messages)


def account_json(cli: Cli, *args: str) -> dict[str, object]:
    result = cli.run("sync", "--json", *args)
    assert result.code == 0, result.output
    (account,) = json.loads(result.stdout)["accounts"]
    assert isinstance(account, dict)
    return account


def test_keep_30d_deletes_what_was_delivered_31_days_ago(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    cli, user, destination = setup(dovecot, tmp_path, 'keep = "30d"\n')
    first = cli.run("sync")
    assert first.code == 0, first.output
    assert landed(destination) == stored(*MAILBOX)
    assert cli.run("accounts").stdout.endswith("(maildir, delete 30d after download)\n")

    again = cli.run("sync")
    assert again.stdout == f"work: no new mail, {len(MAILBOX)} on server\n"
    assert len(user.messages_on_server()) == len(MAILBOX)

    # What 31 days leave in the state: the first two deliveries that long ago.
    with sqlite3.connect(cli.state_dir / "work.sqlite3") as db:
        aged = db.execute(
            "UPDATE messages SET recorded_at = recorded_at - 31 * 86400 WHERE rowid IN "
            "(SELECT rowid FROM messages ORDER BY target LIMIT 2)"
        )
        assert aged.rowcount == 2
    result = cli.run("sync")
    assert result.code == 0, result.output
    assert result.stdout == f"work: no new mail, {len(MAILBOX)} on server, 2 deleted\n"
    assert len(user.messages_on_server()) == len(MAILBOX) - 2
    assert landed(destination) == stored(*MAILBOX)  # nothing lost, nothing fetched again


def test_keep_duration_with_an_injected_clock(dovecot: DovecotServer, tmp_path: Path) -> None:
    user = dovecot.add_user(MAILBOX)
    account = Account(
        name="work",
        host=dovecot.host,
        port=dovecot.port,
        username=user.name,
        destination=tmp_path / "Maildir",
        ca_file=dovecot.ca_file,
        keep=True,
        delete_after=2 * 7 * DAY,
        timeout=20,
    )
    t0 = time.time()

    def at(when: float) -> SyncOptions:
        return SyncOptions(state_dir=tmp_path / "state", clock=lambda: when)

    first = sync_account(account, lambda: user.password, at(t0), NullReporter())
    assert (first.error, first.fetched, first.deleted) == (None, len(MAILBOX), 0)
    early = sync_account(account, lambda: user.password, at(t0 + 13 * DAY), NullReporter())
    assert (early.error, early.deleted) == (None, 0)
    assert len(user.messages_on_server()) == len(MAILBOX)
    late = sync_account(account, lambda: user.password, at(t0 + 15 * DAY), NullReporter())
    assert (late.error, late.fetched, late.deleted) == (None, 0, len(MAILBOX))
    assert user.messages_on_server() == []
    assert landed(account.destination) == stored(*MAILBOX)
    kept = dataclasses.replace(account, delete_after=None)
    assert sync_account(kept, lambda: user.password, at(t0), NullReporter()).fetched == 0


def test_oversize_skipped_is_warned_about_once_and_listed_every_run(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    cli, user, destination = setup(dovecot, tmp_path, 'max_message_size = "100kB"\n')
    first = cli.run("sync")
    assert first.code == 0, first.output
    assert first.stderr == (
        "warning: work: left 1 message over max_message_size (100,000 bytes) on the server "
        f"without downloading (first: message 3, {BIG_LISTED:,} bytes); this is said once, --json "
        "lists them on every run\n"
    )
    assert landed(destination) == stored(*SMALL)
    assert BIG in user.messages_on_server()

    second = cli.run("sync")
    assert (second.code, second.stderr) == (0, "")
    account = account_json(cli)
    assert account["warnings"] == []
    (oversize,) = account["oversize"]  # type: ignore[misc]
    assert oversize == {
        "uidl": oversize["uidl"],
        "size": BIG_LISTED,
        "action": "skip",
        "new": False,
    }
    assert len(user.messages_on_server()) == len(MAILBOX)


def test_oversize_delete_deletes_it_unread(dovecot: DovecotServer, tmp_path: Path) -> None:
    cli, user, destination = setup(
        dovecot, tmp_path, 'max_message_size = "100kB"\noversize = "delete"\n'
    )
    account = account_json(cli)
    assert account["deleted"] == 1
    assert [o["action"] for o in account["oversize"]] == ["delete"]  # type: ignore[attr-defined,index]
    (warning,) = account["warnings"]  # type: ignore[misc]
    assert "WITHOUT downloading" in warning
    assert landed(destination) == stored(*SMALL)
    assert sorted(user.messages_on_server()) == sorted(SMALL)  # keep = true for the rest


def test_max_messages_spreads_a_first_sync_over_runs(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    cli, user, destination = setup(dovecot, tmp_path, "keep = false\nmax_messages = 4\n")
    first = cli.run("sync")
    assert first.code == 0, first.output
    assert first.stdout.startswith("work: 4 new messages (")
    assert first.stdout.endswith(
        ", 6 on server, 4 deleted, 2 more next run (max_messages/max_bytes)\n"
    )
    account = account_json(cli)
    assert (account["fetched"], account["remaining"], account["deleted"]) == (2, 0, 2)
    assert landed(destination) == stored(*MAILBOX)
    assert user.messages_on_server() == []


def test_max_bytes_per_run(dovecot: DovecotServer, tmp_path: Path) -> None:
    cli, _, destination = setup(dovecot, tmp_path, 'max_bytes = "1kB"\n')
    fetched = []
    for _ in MAILBOX:
        account = account_json(cli)
        fetched.append(account["fetched"])
        if not account["remaining"]:
            break
    assert fetched == [2, 1, 3]  # the big one alone: the first of a run always comes
    assert landed(destination) == stored(*MAILBOX)
