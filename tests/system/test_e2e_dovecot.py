"""End to end: the installed command against a real Dovecot POP3S server and a real keyring.

The password goes through ``pop3s-fetch password set`` into gnome-keyring's Secret Service,
and every test checks that it never shows up in anything the program printed or wrote.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import as_stored, corpus

pytestmark = [pytest.mark.dovecot, pytest.mark.secret_service]


@pytest.fixture
def keyring_cli(tmp_path: Path, secret_service: object) -> Cli:
    env = dict(secret_service.env)  # type: ignore[attr-defined]
    env.pop("HOME", None)  # the Cli's own HOME; the bus address is what finds the keyring
    cli = make_cli(tmp_path, env)
    cli.env["HOME"] = secret_service.env["HOME"]  # type: ignore[attr-defined]
    return cli


def configure(
    cli: Cli,
    dovecot: DovecotServer,
    user: DovecotUser,
    *,
    fmt: str = "maildir",
    keep: bool = True,
    ca_file: Path | None = None,
    name: str = "work",
) -> Path:
    destination = cli.home / ("Maildir" if fmt == "maildir" else "mbox")
    cli.write_config(
        account_toml(
            name,
            host=dovecot.host,
            port=dovecot.port,
            username=user.name,
            destination=destination,
            fmt=fmt,
            keep=keep,
            ca_file=ca_file or dovecot.ca_file,
        )
    )
    return destination


def store_password(cli: Cli, password: str, name: str = "work") -> None:
    result = cli.run("password", "set", name, input=password + "\n")
    assert result.code == 0, result.output
    assert result.stderr == f'password for account "{name}" stored in the keyring\n'


def assert_no_leak(cli: Cli, password: str) -> None:
    assert password.encode() not in cli.everything_written()


def test_maildir_byte_exact_and_second_run_fetches_nothing(
    keyring_cli: Cli, dovecot: DovecotServer
) -> None:
    messages = corpus()
    user = dovecot.add_user(messages)
    destination = configure(keyring_cli, dovecot, user)
    store_password(keyring_cli, user.password)

    first = keyring_cli.run("sync")
    assert first.code == 0, first.output
    assert first.stdout.startswith(f"work: {len(messages)} new messages (")
    assert sorted(read_messages(destination, "maildir")) == sorted(
        as_stored(m, "maildir") for m in messages
    )
    on_server = user.messages_on_server()
    assert sorted(read_messages(destination, "maildir")) == sorted(
        as_stored(m, "maildir") for m in on_server
    )
    for file in (destination / "new").iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600

    second = keyring_cli.run("--debug", "sync")
    assert second.code == 0, second.output
    assert second.stdout == f"work: no new mail, {len(messages)} on server\n"
    assert len(sorted(read_messages(destination, "maildir"))) == len(messages)
    # The first run learnt that Dovecot pipelines: CAPA now goes with the TLS handshake, and
    # UIDL with SCRAM's last words, before the server's verdict.
    dialogue = [  # "DEBUG pop3s_fetch.pop3.client: work: S: ...": the dialogue after the account
        line.split(": ", 2)[2]
        for line in second.stderr.splitlines()
        if " C: " in line or " S: " in line
    ]
    assert dialogue[0].startswith("S: +OK Dovecot")
    assert dialogue[1] == "C: CAPA (sent with the handshake)"
    assert dialogue.index("C: UIDL") < dialogue.index("S: +OK Logged in.")
    assert_no_leak(keyring_cli, user.password)


def test_mbox_keep_false_deletes_what_was_delivered(
    keyring_cli: Cli, dovecot: DovecotServer
) -> None:
    messages = corpus()
    user = dovecot.add_user(messages)
    destination = configure(keyring_cli, dovecot, user, fmt="mbox", keep=False)
    store_password(keyring_cli, user.password)

    result = keyring_cli.run("sync")
    assert result.code == 0, result.output
    assert sorted(read_messages(destination, "mbox")) == sorted(
        as_stored(m, "mbox") for m in messages
    )
    assert user.messages_on_server() == []
    assert f"{len(messages)} deleted" in result.stdout

    later = [b"Subject: later\n\nFrom the future\n"]
    user.add_messages(later)
    again = keyring_cli.run("sync")
    assert again.code == 0, again.output
    assert sorted(read_messages(destination, "mbox")) == sorted(
        as_stored(m, "mbox") for m in [*messages, *later]
    )
    assert user.messages_on_server() == []
    assert_no_leak(keyring_cli, user.password)


def test_wrong_password_exits_77_with_one_line(keyring_cli: Cli, dovecot: DovecotServer) -> None:
    user = dovecot.add_user([b"Subject: x\n\nx\n"])
    destination = configure(keyring_cli, dovecot, user)
    store_password(keyring_cli, "not-" + user.password)

    result = keyring_cli.run("sync")
    assert result.code == 77
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: work: {dovecot.host} refused the login: [AUTH]")
    assert lines[0].endswith("store the right password with: pop3s-fetch password set work)")
    assert not (destination / "new").exists() or sorted(read_messages(destination, "maildir")) == []
    assert_no_leak(keyring_cli, user.password)
    assert_no_leak(keyring_cli, "not-" + user.password)


def test_wrong_ca_exits_69_and_sends_no_credentials(
    keyring_cli: Cli, dovecot: DovecotServer, other_ca_file: Path
) -> None:
    user = dovecot.add_user([b"Subject: x\n\nx\n"])
    configure(keyring_cli, dovecot, user, ca_file=other_ca_file)
    store_password(keyring_cli, user.password)

    result = keyring_cli.run("sync")
    assert result.code == 69, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"error: work: refused the TLS connection to {dovecot.host}:{dovecot.port} "
        "(unknown issuer): subject "
    )
    for fact in ("; issuer ", "; expires 3000-01-01 00:00 UTC; sha256:", f"not in {other_ca_file}"):
        assert fact in line
    assert f"user=<{user.name}>" not in dovecot.log_text()
    assert_no_leak(keyring_cli, user.password)


def test_password_commands_against_the_real_keyring(
    keyring_cli: Cli, dovecot: DovecotServer
) -> None:
    name = f"fresh-{secrets.token_hex(4)}"  # the keyring outlives a test; start clean
    user = dovecot.add_user([])
    configure(keyring_cli, dovecot, user, name=name)

    missing = keyring_cli.run("password", "check", name)
    assert missing.code == 77
    assert missing.stderr == (
        f'error: no password stored for account "{name}" '
        f"(store one with: pop3s-fetch password set {name})\n"
    )

    store_password(keyring_cli, user.password, name)
    check = keyring_cli.run("password", "check", name)
    assert check.code == 0, check.output
    assert check.stdout.startswith(f'a password for account "{name}" is stored (')
    assert "SecretService" in check.stdout

    delete = keyring_cli.run("password", "delete", name)
    assert delete.code == 0, delete.output
    assert keyring_cli.run("password", "check", name).code == 77
    assert_no_leak(keyring_cli, user.password)
