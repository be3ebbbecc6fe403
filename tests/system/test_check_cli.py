"""``check``, ``sync --dry-run`` and ``on_new_mail`` through the installed command, against Dovecot.

Nothing is mocked: a private Dovecot holds the mail, the command runs as a process, and the
hook is a real program. check and the dry run must leave the maildrop, the state directory
and the destination exactly as they were; the hook must never see the password.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import corpus
from tests.support.rig import keyring_env

pytestmark = pytest.mark.dovecot


def configure(
    cli: Cli, dovecot: DovecotServer, *users: tuple[str, DovecotUser], keep: bool
) -> None:
    cli.write_config(
        "".join(
            account_toml(
                name,
                host=dovecot.host,
                port=dovecot.port,
                username=user.name,
                destination=cli.home / f"Mail-{name}",
                keep=keep,
                ca_file=dovecot.ca_file,
            )
            for name, user in users
        )
    )


def wire_size(message: bytes) -> int:
    """What Dovecot's LIST counts: the stored bytes with CRLF line ends."""
    return len(message) + message.count(b"\n")


def in_terminal(cli: Cli, *args: str) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; what the screen shows."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pop3s_fetch", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**cli.env, "COLUMNS": "200"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n")


def test_check_and_dry_run_change_nothing_then_sync_does_what_they_said(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    messages = corpus()
    user = dovecot.add_user(messages)
    cli = make_cli(tmp_path, keyring_env(user.password))
    configure(cli, dovecot, ("work", user), keep=False)
    on_server = user.messages_on_server()
    total = sum(wire_size(m) for m in messages)

    check = cli.run("check")
    assert (check.code, check.stderr) == (0, "")
    assert check.stdout.startswith(f"work: {len(messages)} new messages (")
    assert check.stdout.endswith(f"), {len(messages)} on server\n")

    quiet = cli.run("check", "--quiet")
    assert (quiet.code, quiet.output) == (0, "")

    as_json = cli.run("check", "--json")
    assert as_json.code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["schema"] == "pop3s-fetch.check/1"
    assert (document["exit_code"], document["new"], document["bytes"]) == (0, len(messages), total)
    assert document["accounts"][0]["status"] == "new"

    dry = cli.run("sync", "--dry-run")
    assert (dry.code, dry.stderr) == (0, "")
    lines = dry.stdout.splitlines()
    assert len([line for line in lines if line.startswith("work: fetch message ")]) == len(messages)
    assert len([line for line in lines if line.startswith("work: delete message ")]) == len(
        messages
    )
    assert lines[0].startswith("work: fetch message 1 (")
    assert lines[-1].startswith(f"work: would fetch {len(messages)} messages (")

    # Nothing was written anywhere, nothing left the server.
    assert not (cli.home / "state").exists()
    assert not (cli.home / "Mail-work").exists()
    assert user.messages_on_server() == on_server

    synced = cli.run("sync")
    assert synced.code == 0, synced.output
    assert len(read_messages(cli.home / "Mail-work", "maildir")) == len(messages)
    assert user.messages_on_server() == []

    none = cli.run("check")
    assert (none.code, none.stdout, none.stderr) == (1, "work: no new mail, 0 on server\n", "")
    assert json.loads(cli.run("check", "--json").stdout)["accounts"][0]["status"] == "none"
    idle = cli.run("sync", "--dry-run")
    assert idle.code == 0
    assert idle.stdout == (
        "work: would fetch nothing and delete nothing, of 0 on the server "
        "(dry run: nothing was written or deleted)\n"
    )


def test_check_with_several_accounts_and_mixed_results(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    """New mail anywhere answers 0; no new mail and a failure gives the failure's code."""
    with_mail = dovecot.add_user([b"Subject: hi\n\nhello\n"])
    empty = dovecot.add_user([], password=with_mail.password)
    refused = dovecot.add_user([b"Subject: x\n\nx\n"])  # another password than the keyring's
    cli = make_cli(tmp_path, keyring_env(with_mail.password))
    configure(cli, dovecot, ("a", with_mail), ("b", empty), ("c", refused), keep=True)

    everything = cli.run("check")
    assert everything.code == 0
    assert everything.stdout == (
        "a: 1 new message (22 bytes), 1 on server\nb: no new mail, 0 on server\n"
    )
    assert everything.stderr.startswith("error: c: ")

    without_mail = cli.run("check", "b", "c")
    assert without_mail.code == 77  # cannot say "none" for c: its login was refused
    assert without_mail.stdout == "b: no new mail, 0 on server\n"

    assert cli.run("check", "b").code == 1
    dry = cli.run("sync", "--dry-run", "b", "c")
    assert dry.code == 1  # as a sync's: some failed, some did not


def test_dry_run_on_a_terminal_is_an_aligned_list(tmp_path: Path, dovecot: DovecotServer) -> None:
    messages = [b"Subject: one\n\n" + b"x" * 1500 + b"\n", b"Subject: two\n\nshort\n"]
    user = dovecot.add_user(messages)
    cli = make_cli(tmp_path, keyring_env(user.password))
    configure(cli, dovecot, ("work", user), keep=True)
    code, screen = in_terminal(cli, "sync", "--dry-run")
    assert code == 0, screen
    lines = screen.splitlines()
    assert lines[0] == (
        "work: would fetch 2 messages (1.5 kB) and delete nothing, of 2 on the server "
        "(dry run: nothing was written or deleted)"
    )
    assert lines[1].split() == ["message", "size", "UIDL"]
    assert lines[2].split()[:4] == ["fetch", "1", "1.5", "kB"]
    assert lines[3].split()[:4] == ["fetch", "2", "23", "bytes"]
    assert len(lines) == 4
    assert not (cli.home / "state").exists()


HOOK = """
import json, os, sys
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"argv": sys.argv, "env": dict(os.environ)}) + "\\n")
sys.stderr.write(os.environ.get("HOOK_ERROR", ""))
sys.exit(int(os.environ.get("HOOK_EXIT", "0")))
"""


@pytest.mark.secret_service
def test_on_new_mail_runs_once_per_sync_with_mail_and_never_sees_the_password(
    tmp_path: Path, dovecot: DovecotServer, secret_service: object
) -> None:
    env = dict(secret_service.env)  # type: ignore[attr-defined]
    cli = make_cli(tmp_path, env)
    user = dovecot.add_user(corpus())
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    seen = tmp_path / "hook.jsonl"
    configure(cli, dovecot, ("work", user), keep=True)
    cli.write_config(
        cli.config_path.read_text().replace(
            "[accounts.work]",
            f'[defaults]\non_new_mail = ["{sys.executable}", "{script}", "{seen}"]\n\n'
            "[accounts.work]",
        )
    )
    stored = cli.run("password", "set", "work", input=user.password + "\n")
    assert stored.code == 0, stored.output

    first = cli.run("sync", "--quiet", extra_env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert (first.code, first.output) == (0, "")
    (record,) = [json.loads(line) for line in seen.read_text().splitlines()]
    assert record["argv"][1:] == [str(seen)]
    assert record["env"]["POP3S_FETCH_ACCOUNT"] == "work"
    assert record["env"]["POP3S_FETCH_NEW"] == str(len(corpus()))
    assert record["env"]["POP3S_FETCH_DESTINATION"] == str(cli.home / "Mail-work")
    assert "CREDENTIALS_DIRECTORY" not in record["env"]

    assert cli.run("sync").code == 0  # nothing new: the hook does not run
    assert len(seen.read_text().splitlines()) == 1

    user.add_messages([b"Subject: late\n\nlate\n"])
    failing = cli.run(
        "sync",
        "--quiet",
        extra_env={"HOOK_EXIT": "2", "HOOK_ERROR": "notmuch: \x1b]0;pwned\x07 index locked\n"},
    )
    assert failing.code == 0  # the mail is delivered; the hook's failure is a warning
    assert failing.stdout == ""
    assert failing.stderr == (
        f"warning: work: on_new_mail ({Path(sys.executable).name}) failed (exit status 2): "
        "notmuch: \\x1b]0;pwned\\x07 index locked; the mail was delivered\n"
    )
    assert len(read_messages(cli.home / "Mail-work", "maildir")) == len(corpus()) + 1
    assert user.password.encode() not in seen.read_bytes()
    assert user.password.encode() not in cli.everything_written()
