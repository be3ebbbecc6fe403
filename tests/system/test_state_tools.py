"""``state list/forget/seed/rebuild`` and the changed-destination refusal, through the command.

A private Dovecot holds the mail and the command runs as a process, as a user runs it; the
assertions are on exit codes, exact lines, and the bytes in the destination.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pop3s_fetch.demo.samples import demo_messages
from pop3s_fetch.destinations import read_messages, stored_copies
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.rig import keyring_env

pytestmark = pytest.mark.dovecot


def message(n: int, body: bytes = b"hello\n") -> bytes:
    return (
        f"From: Sender {n} <s{n}@example.org>\nTo: r@example.net\nSubject: m{n}\n"
        f"Date: Mon, 07 Dec 2026 10:{n % 60:02d}:00 +0000\nMessage-ID: <m{n}@example.org>\n\n"
    ).encode() + body


def setup(
    tmp_path: Path, dovecot: DovecotServer, messages: list[bytes], fmt: str = "maildir"
) -> tuple[Cli, DovecotUser, Path]:
    user = dovecot.add_user(messages)
    cli = make_cli(tmp_path, keyring_env(user.password))
    destination = cli.home / ("Mail" if fmt == "maildir" else "mbox")
    configure(cli, dovecot, user, destination, fmt)
    return cli, user, destination


def configure(
    cli: Cli, dovecot: DovecotServer, user: DovecotUser, destination: Path | str, fmt: str
) -> None:
    cli.write_config(
        account_toml(
            "work",
            host=dovecot.host,
            port=dovecot.port,
            username=user.name,
            destination=destination,  # type: ignore[arg-type]
            fmt=fmt,
            ca_file=dovecot.ca_file,
        )
    )


def delete_state(cli: Cli) -> None:
    for suffix in (".sqlite3", ".sqlite3-wal", ".sqlite3-shm"):
        (cli.state_dir / f"work{suffix}").unlink(missing_ok=True)


def sync_line(cli: Cli) -> str:
    result = cli.run("sync")
    assert (result.code, result.stderr) == (0, ""), result.output
    return result.stdout


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_rebuild_after_lost_state_then_sync_downloads_nothing(
    tmp_path: Path, dovecot: DovecotServer, fmt: str
) -> None:
    # The demo's hard cases: a 120 000-octet line, "From " and "." lines (quoted in an mbox),
    # 8-bit bodies, and a message stored without a final newline (POP3 adds one).
    messages = [*demo_messages(), message(1, b"From the start\n>From quoted\n")]
    cli, user, destination = setup(tmp_path, dovecot, messages, fmt)
    assert sync_line(cli).startswith(f"work: {len(messages)} new messages")
    before = read_messages(destination, fmt)  # type: ignore[arg-type]
    delete_state(cli)
    user.add_messages([message(2)])  # arrived after the state was lost: not in the copy

    rebuilt = cli.run("state", "rebuild", "work")
    assert (rebuilt.code, rebuilt.stderr) == (0, ""), rebuilt.output
    shown = "~/Mail" if fmt == "maildir" else "~/mbox"
    assert rebuilt.stdout.splitlines() == [
        f"work: {len(messages) + 1} messages on the server, {len(messages)} copies in {shown}",
        f"work: recorded {len(messages)} found in {shown} (by Message-ID, Date, From and size; "
        "no body downloaded)",
        f"work: 1 not found there: the next sync fetches them (messages {len(messages) + 1})",
    ]
    # Each record names the copy where it really is: a Maildir file, or an mbox offset.
    listing = json.loads(cli.run("state", "list", "work", "--json").stdout)["messages"]
    copies = stored_copies(destination, fmt)  # type: ignore[arg-type]
    if fmt == "mbox":
        offsets = sorted(c.placement.offset for c in copies)
        assert sorted(int(m["where"].rsplit(" ", 1)[1]) for m in listing) == offsets
    else:
        names = sorted(f"{shown}/new/{c.placement.target}" for c in copies)
        assert sorted(m["where"] for m in listing) == names

    assert sync_line(cli).startswith("work: 1 new message")  # only the one that was missing
    after = read_messages(destination, fmt)  # type: ignore[arg-type]
    assert after[: len(before)] == before
    assert after[len(before) :] == [message(2)]
    assert sync_line(cli).startswith("work: no new mail")
    assert user.password.encode() not in cli.everything_written()


def test_rebuild_records_neither_of_two_alike(tmp_path: Path, dovecot: DovecotServer) -> None:
    twin = message(3)
    cli, _, destination = setup(tmp_path, dovecot, [message(1), twin, twin])
    sync_line(cli)
    delete_state(cli)
    rebuilt = cli.run("state", "rebuild", "work")
    assert rebuilt.code == 0, rebuilt.output
    assert rebuilt.stdout.splitlines()[1:] == [
        "work: recorded 1 found in ~/Mail (by Message-ID, Date, From and size; no body downloaded)",
        "work: nothing left to fetch",
        "work: 2 ambiguous (alike to another message or copy), not recorded, so fetched "
        "again: messages 2, 3",
    ]
    assert sync_line(cli).startswith("work: 2 new messages")
    assert len(read_messages(destination, "maildir")) == 5


def test_seed_then_sync_fetches_only_what_arrives_later(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    cli, user, destination = setup(tmp_path, dovecot, [message(1), message(2)])
    seeded = cli.run("state", "seed", "work")
    assert (seeded.code, seeded.stderr) == (0, ""), seeded.output
    assert seeded.stdout == (
        "work: marked 2 of the 2 messages on the server as delivered (nothing was "
        "downloaded); the next sync fetches only what arrives later\n"
    )
    assert not destination.exists()
    listing = cli.run("state", "list", "work")
    assert [line.split("  ")[-1] for line in listing.stdout.splitlines()] == ["seeded (seeded)"] * 2
    user.add_messages([message(3)])
    # Seeded rows name no copy: another destination than any is no change of destination.
    configure(cli, dovecot, user, cli.home / "Elsewhere", "maildir")
    assert sync_line(cli).startswith("work: 1 new message")
    assert read_messages(cli.home / "Elsewhere", "maildir") == [message(3)]
    again = cli.run("state", "seed", "work")
    assert again.stdout.startswith("work: marked 0 of the 3 messages")


def test_forget_then_sync_fetches_again(tmp_path: Path, dovecot: DovecotServer) -> None:
    messages = [message(1), message(2), message(3)]
    cli, _, destination = setup(tmp_path, dovecot, messages)
    sync_line(cli)
    uidls = [
        m["uidl"] for m in json.loads(cli.run("state", "list", "work", "--json").stdout)["messages"]
    ]
    # A mail reader moved one to cur/ with flags: the listing says where it is now.
    [seen] = sorted((destination / "new").iterdir())[:1]
    seen.rename(destination / "cur" / f"{seen.name}:2,S")
    wheres = [line.split("  ")[-1] for line in cli.run("state", "list", "work").stdout.splitlines()]
    assert f"~/Mail/cur/{seen.name}:2,S" in wheres
    one = cli.run("state", "forget", "work", uidls[0], "no-such-uidl")
    assert one.code == 1
    assert one.stdout == (
        "work: forgot 1 message; the next sync fetches them again if on the server\n"
    )
    assert one.stderr == "work: not in the state, so not forgotten: no-such-uidl\n"
    assert sync_line(cli).startswith("work: 1 new message")
    everything = cli.run("state", "forget", "work", "--all")
    assert (everything.code, everything.stdout) == (
        0,
        "work: forgot 3 messages; the next sync fetches them again if on the server\n",
    )
    assert sync_line(cli).startswith("work: 3 new messages")
    assert len(read_messages(destination, "maildir")) == 7
    usage = cli.run("state", "forget", "work")
    assert usage.code == 64


def test_a_changed_destination_is_refused_before_anything_is_fetched(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    cli, user, destination = setup(tmp_path, dovecot, [message(1), message(2)])
    sync_line(cli)
    user.add_messages([message(3)])
    backup = cli.home / "backup-2026-12-02"
    configure(cli, dovecot, user, backup, "maildir")
    refused = cli.run("sync")
    assert (refused.code, refused.stdout) == (78, "")
    assert refused.stderr == (
        "error: work: 2 messages were delivered to ~/Mail, not to ~/backup-2026-12-02 (to copy "
        "the mailbox there: pop3s-fetch backup work --to ~/backup-2026-12-02; to fetch "
        "everything into it again: pop3s-fetch state forget work --all; or set the "
        "destination back to ~/Mail; nothing was downloaded or deleted)\n"
    )
    # What would be done is refused the same way: it would otherwise say "nothing new".
    for args in (("sync", "--dry-run"), ("check",), ("state", "rebuild", "work")):
        again = cli.run(*args)
        assert (again.code, again.stderr) == (78, refused.stderr), args
    assert not backup.exists()

    # The same place spelt otherwise is no change: ~, a trailing slash, a symbolic link.
    for spelling in ("~/Mail", "~/Mail/", str(cli.home / "link")):
        (cli.home / "link").unlink(missing_ok=True)
        (cli.home / "link").symlink_to(destination)
        configure(cli, dovecot, user, spelling, "maildir")
        assert sync_line(cli).startswith("work: ")
    assert len(read_messages(destination, "maildir")) == 3

    # As mbox at the same path is another destination too.
    configure(cli, dovecot, user, destination, "mbox")
    assert cli.run("sync").code == 78


def test_a_state_from_an_older_version_is_judged_by_looking(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    cli, user, _ = setup(tmp_path, dovecot, [message(1)])
    sync_line(cli)

    def forget_destination() -> None:
        with sqlite3.connect(cli.state_dir / "work.sqlite3") as db:
            db.execute("DELETE FROM server WHERE key = 'destination'")

    forget_destination()
    assert sync_line(cli).startswith("work: no new mail")  # its copy is there: the same place
    forget_destination()
    configure(cli, dovecot, user, cli.home / "New", "maildir")
    refused = cli.run("sync")
    assert refused.code == 78
    assert refused.stderr.startswith(
        "error: work: 1 message was delivered to another destination (none of the latest "
        "this state names is there), not to ~/New ("
    )
    assert "then pop3s-fetch state rebuild work;" in refused.stderr
    assert not (cli.home / "New").exists()


def test_state_commands_refuse_while_a_sync_holds_the_lock(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    cli, _, _ = setup(tmp_path, dovecot, [message(1)])
    sync_line(cli)
    lock = cli.state_dir / "work.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from pop3s_fetch.state import AccountLock;"
            f"lock = AccountLock(Path({str(lock)!r}), 'work'); lock.acquire();"
            "print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        for args in (
            ("list", "work"),
            ("forget", "work", "--all"),
            ("seed", "work"),
            ("rebuild", "work"),
        ):
            refused = cli.run("state", *args)
            assert (refused.code, refused.stdout) == (75, ""), args
            assert refused.stderr == (
                f'error: account "work" is being synced by another pop3s-fetch (pid '
                f"{holder.pid}) (run it again once that sync has finished)\n"
            )
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert len(json.loads(cli.run("state", "list", "work", "--json").stdout)["messages"]) == 1
    assert os.path.exists(lock)
