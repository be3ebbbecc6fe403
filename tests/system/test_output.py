"""What cron, pipes, the journal and scripts get from ``sync``: exit codes, JSON, plain lines."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import MailStore, Pop3Server, wire_size
from tests.support.cli import Cli, account_toml, make_cli

PASSWORD = "pw-for-output-tests"
ESC = "\x1b"


@pytest.fixture
def server(server_ssl_context: ssl.SSLContext) -> Iterator[Pop3Server]:
    users = {
        "alice": (PASSWORD, MailStore([b"Subject: one\n\nhello\n", b"Subject: two\n\nworld\n"])),
        "bob": ("another password", MailStore([b"Subject: three\n\n!\n"])),
    }
    with Pop3Server(server_ssl_context, users) as running:
        yield running


@pytest.fixture
def two_accounts(tmp_path: Path, server: Pop3Server, ca_file: Path) -> Cli:
    """ "good" logs in; "bad" is refused (the test keyring gives every account one password)."""
    cli = make_cli(
        tmp_path,
        {
            "PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring",
            "TEST_KEYRING_PASSWORD": PASSWORD,
        },
    )
    del cli.env["NO_COLOR"]  # escape codes must stay out of pipes on their own merit
    common = {"host": "127.0.0.1", "port": server.port, "ca_file": ca_file}
    cli.write_config(
        account_toml("good", username="alice", destination=tmp_path / "good", **common)  # type: ignore[arg-type]
        + account_toml("bad", username="bob", destination=tmp_path / "bad", **common)  # type: ignore[arg-type]
    )
    return cli


def test_partial_failure_is_1_and_json_tells_which(two_accounts: Cli) -> None:
    result = two_accounts.run("sync", "--json")
    assert result.code == 1, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "pop3s-fetch.sync/1"
    assert document["exit_code"] == 1
    good, bad = document["accounts"]
    assert (good["name"], good["status"], good["fetched"], good["errors"]) == ("good", "ok", 2, [])
    # As the server counts them (CRLF line ends), as LIST and the progress bar do.
    assert good["bytes"] == wire_size(b"Subject: one\n\nhello\n") + wire_size(
        b"Subject: two\n\nworld\n"
    )
    assert bad["on_server"] is None  # never listed: it did not get past the login
    assert bad["status"] == "failed"
    assert bad["errors"][0]["code"] == 77
    assert bad["errors"][0]["type"] == "AuthError"
    assert bad["errors"][0]["message"].startswith("127.0.0.1 refused the login: [AUTH]")
    assert result.stderr.startswith("error: bad: 127.0.0.1 refused the login")
    assert PASSWORD not in result.output


def test_json_second_run_counts_skipped(two_accounts: Cli) -> None:
    two_accounts.run("sync", "good")
    result = two_accounts.run("sync", "good", "--json")
    assert result.code == 0
    [good] = json.loads(result.stdout)["accounts"]
    assert (good["fetched"], good["skipped"], good["on_server"]) == (0, 2, 2)


def test_total_failure_keeps_the_cause(two_accounts: Cli) -> None:
    result = two_accounts.run("sync", "bad")
    assert result.code == 77


def test_pipes_get_plain_lines_and_no_escape_codes(two_accounts: Cli) -> None:
    result = two_accounts.run("sync")
    assert ESC not in result.stdout
    assert ESC not in result.stderr
    assert result.stdout == "good: 2 new messages (46 bytes), 2 on server\n"
    assert len(result.stderr.splitlines()) == 1


def test_quiet_prints_only_errors(two_accounts: Cli) -> None:
    ok = two_accounts.run("sync", "--quiet", "good")
    assert (ok.code, ok.stdout, ok.stderr) == (0, "", "")
    failed = two_accounts.run("sync", "--quiet")
    assert failed.stdout == ""
    assert failed.stderr.startswith("error: bad: ")


def test_journal_gets_syslog_priorities(two_accounts: Cli) -> None:
    read_end, write_end = os.pipe()
    info = os.fstat(write_end)
    env = {**two_accounts.env, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    with subprocess.Popen(
        [sys.executable, "-m", "pop3s_fetch", "sync"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=write_end,
    ) as process:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            output = reader.read().decode()
        assert process.wait(timeout=60) == 1
    lines = output.splitlines()
    assert "<6>good: 2 new messages (46 bytes), 2 on server" in lines
    assert any(line.startswith("<3>error: bad: ") for line in lines)
    assert all(line[:3] in ("<3>", "<6>") for line in lines), lines


def test_global_options_work_after_the_command_and_json_before_it(two_accounts: Cli) -> None:
    verbose = two_accounts.run("sync", "good", "-v")
    assert verbose.code == 0, verbose.output
    assert "INFO pop3s_fetch.sync: good: logged in with" in verbose.stderr
    as_json = two_accounts.run("--json", "sync", "good")
    assert as_json.code == 0, as_json.output
    assert json.loads(as_json.stdout)["accounts"][0]["name"] == "good"
    elsewhere = two_accounts.run("accounts", "--config", str(two_accounts.config_path))
    assert elsewhere.code == 0
    assert elsewhere.stdout.startswith("good: alice@127.0.0.1:")


def test_debug_lines_name_their_account(two_accounts: Cli) -> None:
    """Two accounts at once: every dialogue line says whose it is (issue 14, item 3)."""
    result = two_accounts.run("--debug", "sync")
    dialogue = [line for line in result.stderr.splitlines() if ": C: " in line or ": S: " in line]
    assert dialogue
    owners = {line.split(": ", 2)[1] for line in dialogue}
    assert owners == {"good", "bad"}, dialogue
    assert all(
        line.startswith(
            ("DEBUG pop3s_fetch.pop3.client: good: ", "DEBUG pop3s_fetch.pop3.client: bad: ")
        )
        for line in dialogue
    ), dialogue


def test_debug_leaves_out_keyrings_own_chatter(tmp_path: Path) -> None:
    """keyring logs "Loading KWallet" and friends while it picks a backend: not ours to show."""
    cli = make_cli(tmp_path)  # no PYTHON_KEYRING_BACKEND: keyring looks at every backend
    cli.write_config(
        account_toml("work", host="127.0.0.1", port=1, username="u", destination=tmp_path / "M")
    )
    result = cli.run("--debug", "doctor", "--timeout", "0.1")
    assert "keyring: " in result.stdout  # doctor made keyring look at its backends
    assert not [line for line in result.output.splitlines() if line.startswith("DEBUG keyring")]
