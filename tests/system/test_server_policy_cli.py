"""The server's own policy as the installed command shows it (issue 12, item 9).

LOGIN-DELAY's note and ``--json`` come from the built-in server, which announces and enforces
one (Dovecot 2.3 has no setting for LOGIN-DELAY or EXPIRE, nor one to turn UIDL off). Against
the real Dovecot: a server without a policy costs nothing and leaves nothing in the state, and
a LOGIN-DELAY remembered from before holds the account back without a connection until
``--ignore-login-delay``, after which what Dovecot announces (no delay) is what counts.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults, wire_size
from pop3s_fetch.destinations import read_messages
from pop3s_fetch.serverpolicy import clock_time
from pop3s_fetch.state import open_store
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer
from tests.support.mail import as_stored
from tests.support.rig import BuiltinMaildrop, keyring_env, serve

PASSWORD = "policy-cli-password"
MAILBOX = [b"Subject: one\n\nhello\n", b"Subject: two\n\nworld\n"]
UTC = {"TZ": "UTC"}  # "next at 14:32" is local time: the test reads it in the same zone


@pytest.fixture
def maildrop(server_ssl_context: ssl.SSLContext) -> Iterator[BuiltinMaildrop]:
    with serve(server_ssl_context, MAILBOX, user="alice", password=PASSWORD) as running:
        yield running


def configured(tmp_path: Path, host: str, port: int, user: str, password: str, ca: Path) -> Cli:
    cli = make_cli(tmp_path, {**keyring_env(password), **UTC})
    cli.write_config(
        account_toml(
            "work",
            host=host,
            port=port,
            username=user,
            destination=cli.home / "Maildir",
            ca_file=ca,
        )
    )
    return cli


def facts(cli: Cli) -> tuple[int | None, float | None, float | None]:
    with open_store(cli.state_dir / "work.sqlite3") as store:
        return store.login_delay()


def test_login_delay_note_exit_0_and_json(
    tmp_path: Path, maildrop: BuiltinMaildrop, ca_file: Path
) -> None:
    maildrop.server.faults = Faults(login_delay=900)
    cli = configured(tmp_path, "127.0.0.1", maildrop.server.port, "alice", PASSWORD, ca_file)
    first = cli.run("sync")
    assert first.code == 0, first.output
    size = sum(wire_size(m) for m in MAILBOX)
    assert first.stdout == f"work: 2 new messages ({size} bytes), 2 on server\n"
    delay, last_login, _ = facts(cli)
    assert delay == 900
    assert last_login is not None
    sessions = len(maildrop.sessions())

    skipped = cli.run("sync")
    assert skipped.code == 0
    assert skipped.stderr == ""
    next_at = time.strftime("%H:%M", time.gmtime(last_login + 900))
    if time.gmtime(last_login + 900)[:3] != time.gmtime()[:3]:  # the run crossed midnight
        next_at = time.strftime("%Y-%m-%d %H:%M", time.gmtime(last_login + 900))
    assert skipped.stdout == (
        f"work: skipped, the server allows one login every 15 min; next at {next_at}\n"
    )

    as_json = cli.run("sync", "--json")
    assert as_json.code == 0
    document = json.loads(as_json.stdout)
    assert document["exit_code"] == 0
    [account] = document["accounts"]
    assert (account["status"], account["errors"], account["on_server"]) == ("skipped", [], None)
    assert account["login_delay"] == {
        "delay": 900,
        "next_login": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(last_login + 900)),
        "refused": None,
        "note": skipped.stdout.rstrip("\n"),
    }
    assert len(maildrop.sessions()) == sessions  # neither run connected

    forced = cli.run("sync", "--ignore-login-delay")  # the server still counts its 900 s
    assert forced.code == 0, forced.output
    _, _, refused_at = facts(cli)
    assert refused_at is not None
    assert forced.stdout == (
        "work: skipped, the server refused the login for now ([LOGIN-DELAY] one login every "
        f"900 seconds, try later); next at {clock_time(refused_at + 900)}\n"
    )
    assert len(maildrop.sessions()) == sessions + 1
    assert sorted(read_messages(cli.home / "Maildir", "maildir")) == sorted(
        as_stored(m, "maildir") for m in MAILBOX
    )


def test_expire_0_with_keep_true_warns_once_on_stderr(
    tmp_path: Path, maildrop: BuiltinMaildrop, ca_file: Path
) -> None:
    maildrop.server.faults = Faults(expire="0")
    cli = configured(tmp_path, "127.0.0.1", maildrop.server.port, "alice", PASSWORD, ca_file)
    first = cli.run("sync")
    assert first.code == 0, first.output
    assert first.stderr == (
        "warning: work: the server deletes every message once it has been downloaded "
        "(EXPIRE 0), so keep = true cannot hold: no copy stays on the server\n"
    )
    maildrop.store.add(b"Subject: three\n\n!\n")
    second = cli.run("sync")
    assert second.code == 0
    assert second.stderr == ""


# --- the real Dovecot ------------------------------------------------------------------------


@pytest.mark.dovecot
def test_dovecot_without_a_policy_leaves_no_trace_and_no_warning(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    user = dovecot.add_user(MAILBOX)
    cli = configured(
        tmp_path, dovecot.host, dovecot.port, user.name, user.password, dovecot.ca_file
    )
    result = cli.run("sync")
    assert result.code == 0, result.output
    assert result.stderr == ""
    assert facts(cli) == (None, None, None)
    with open_store(cli.state_dir / "work.sqlite3") as store:
        assert store.warned_about("expire") is None


@pytest.mark.dovecot
def test_a_remembered_login_delay_holds_dovecot_back_until_overridden(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    user = dovecot.add_user(MAILBOX)
    cli = configured(
        tmp_path, dovecot.host, dovecot.port, user.name, user.password, dovecot.ca_file
    )
    cli.state_dir.mkdir(parents=True, mode=0o700)
    cli.state_dir.parent.chmod(0o700)
    now = time.time()
    with open_store(cli.state_dir / "work.sqlite3") as store:
        store.remember_login(now, 3600)  # what a session with a server with a delay left
    logins = dovecot.log_text().count(f"user=<{user.name}>")

    held = cli.run("sync")
    assert held.code == 0, held.output
    assert held.stdout.startswith("work: skipped, the server allows one login every 1 h; next at")
    assert dovecot.log_text().count(f"user=<{user.name}>") == logins  # no connection at all
    assert not (cli.home / "Maildir").exists()
    assert sorted(user.messages_on_server()) == sorted(MAILBOX)

    forced = cli.run("sync", "--ignore-login-delay")
    assert forced.code == 0, forced.output
    assert forced.stdout.startswith("work: 2 new messages")
    assert dovecot.log_text().count(f"user=<{user.name}>") > logins  # the count does count
    assert sorted(read_messages(cli.home / "Maildir", "maildir")) == sorted(
        as_stored(m, "maildir") for m in MAILBOX
    )
    assert facts(cli) == (None, None, None)  # Dovecot announces no LOGIN-DELAY: forgotten
    assert cli.run("sync").stdout == "work: no new mail, 2 on server\n"
