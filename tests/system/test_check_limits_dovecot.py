"""``check`` and ``sync --dry-run`` know what a sync's limits and retention will do (Dovecot).

One mailbox, one config with every rule at once: ``keep = "30d"``, ``max_message_size`` with
one message over it, ``max_messages = 2``. At each step the dry run must list exactly what
the next sync then does, check must count as new only what a sync will download (now or in a
later run; never the message over max_message_size), and neither may change the state file.
UIDLs are Dovecot's, read from ``--dry-run --json``; times pass by moving the state's delivery
times back, as 31 days would.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer
from tests.support.rig import keyring_env

pytestmark = pytest.mark.dovecot

SMALL = [f"Subject: small {n}\n\nbody {n}\n".encode() for n in range(4)]
BIG = b"Subject: big\n\n" + (b"y" * 99 + b"\n") * 3000
MAILBOX = [SMALL[0], SMALL[1], BIG, SMALL[2], SMALL[3]]
DRY = "(dry run: nothing was written or deleted)"


def wire_size(message: bytes) -> int:
    """What Dovecot's LIST counts: the stored bytes with CRLF line ends."""
    return len(message) + message.count(b"\n")


SIZES = [wire_size(m) for m in MAILBOX]


def configure(cli: Cli, dovecot: DovecotServer, username: str) -> None:
    text = account_toml(
        "work",
        host=dovecot.host,
        port=dovecot.port,
        username=username,
        destination=cli.home / "Maildir",
        ca_file=dovecot.ca_file,
    ).replace("keep = true", 'keep = "30d"')
    cli.write_config(text + 'max_message_size = "100kB"\nmax_messages = 2\n')


def uidls(cli: Cli) -> dict[int, str]:
    """Message number -> UIDL, from the dry run's JSON (every list it makes)."""
    result = cli.run("sync", "--dry-run", "--json")
    assert result.code == 0, result.output
    (account,) = json.loads(result.stdout)["accounts"]
    found = {}
    for key in ("fetch", "defer", "skip", "delete"):
        found.update({entry["number"]: entry["uidl"] for entry in account[key]})
    return found


def state_bytes(cli: Cli) -> list[str] | None:
    """The state's contents as SQL (its bytes may move as SQLite checkpoints its log)."""
    path = cli.state_dir / "work.sqlite3"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return list(db.iterdump())


def test_dry_run_and_check_follow_retention_oversize_and_per_run_limits(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    user = dovecot.add_user(MAILBOX)
    cli = make_cli(tmp_path, keyring_env(user.password))
    configure(cli, dovecot, user.name)
    uidl = uidls(cli)
    assert sorted(uidl) == [1, 2, 3, 4, 5]
    small = sum(SIZES) - SIZES[2]

    # Before any sync: four new (two now, two next run), the big one skipped and not new.
    check = cli.run("check")
    assert (check.code, check.stderr) == (0, "")
    assert check.stdout == (
        f"work: 4 new messages ({small} bytes), 5 on server, 1 over max_message_size\n"
    )
    dry = cli.run("sync", "--dry-run")
    assert (dry.code, dry.stderr) == (0, "")
    assert dry.stdout == (
        f"work: fetch message 1 ({SIZES[0]} bytes, UIDL {uidl[1]})\n"
        f"work: fetch message 2 ({SIZES[1]} bytes, UIDL {uidl[2]})\n"
        f"work: defer message 4 ({SIZES[3]} bytes, UIDL {uidl[4]}, "
        "max_messages/max_bytes: a later run)\n"
        f"work: defer message 5 ({SIZES[4]} bytes, UIDL {uidl[5]}, "
        "max_messages/max_bytes: a later run)\n"
        f"work: skip message 3 ({SIZES[2]} bytes, UIDL {uidl[3]}, over max_message_size, "
        "left on the server)\n"
        f"work: would fetch 2 messages ({SIZES[0] + SIZES[1]} bytes), leave 2 new for a later "
        "run (max_messages/max_bytes), skip 1 over max_message_size and delete nothing, "
        f"of 5 on the server {DRY}\n"
    )
    assert state_bytes(cli) is None  # nothing written: not even a state file

    first = cli.run("sync", "--json")
    assert first.code == 0, first.output
    (account,) = json.loads(first.stdout)["accounts"]
    assert (account["fetched"], account["remaining"]) == (2, 2)
    assert [o["uidl"] for o in account["oversize"]] == [uidl[3]]
    second = cli.run("sync")
    assert second.code == 0, second.output

    # Everything a sync will download is here; the big one was reported by the first sync.
    before = state_bytes(cli)
    none = cli.run("check")
    assert (none.code, none.stdout, none.stderr) == (
        1,
        "work: no new mail, 5 on server, 1 over max_message_size\n",
        "",
    )
    document = json.loads(cli.run("check", "--json").stdout)
    assert (document["exit_code"], document["new"]) == (1, 0)
    assert document["accounts"][0]["oversize"] == 1
    idle = cli.run("sync", "--dry-run")
    assert idle.stdout == (
        f"work: skip message 3 ({SIZES[2]} bytes, UIDL {uidl[3]}, over max_message_size, "
        "left on the server (reported earlier))\n"
        f"work: would fetch nothing, skip 1 over max_message_size and delete nothing, of 5 on "
        f"the server {DRY}\n"
    )
    assert state_bytes(cli) == before

    # 31 days on for messages 1 and 4: keep = "30d" deletes them, and says why.
    with contextlib.closing(sqlite3.connect(cli.state_dir / "work.sqlite3")) as db, db:
        aged = db.execute(
            "UPDATE messages SET recorded_at = recorded_at - 31 * 86400 WHERE uidl IN (?, ?)",
            (uidl[1], uidl[4]),
        )
        assert aged.rowcount == 2
    before = state_bytes(cli)
    expiring = cli.run("sync", "--dry-run")
    assert (expiring.code, expiring.stderr) == (0, "")
    assert expiring.stdout == (
        f"work: skip message 3 ({SIZES[2]} bytes, UIDL {uidl[3]}, over max_message_size, "
        "left on the server (reported earlier))\n"
        f'work: delete message 1 (UIDL {uidl[1]}, delivered over 30d ago (keep = "30d"))\n'
        f'work: delete message 4 (UIDL {uidl[4]}, delivered over 30d ago (keep = "30d"))\n'
        f"work: would fetch nothing, skip 1 over max_message_size and delete 2 from the "
        f"server, of 5 on the server {DRY}\n"
    )
    assert state_bytes(cli) == before
    assert len(user.messages_on_server()) == 5

    # The sync then does exactly that.
    synced = cli.run("sync")
    assert synced.code == 0, synced.output
    assert synced.stdout == "work: no new mail, 5 on server, 2 deleted\n"
    assert sorted(user.messages_on_server()) == sorted([SMALL[1], BIG, SMALL[3]])
    after = cli.run("check")
    assert (after.code, after.stdout) == (
        1,
        "work: no new mail, 3 on server, 1 over max_message_size\n",
    )
