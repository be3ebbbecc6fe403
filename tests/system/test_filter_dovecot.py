"""The header filter and trace headers end to end: the installed command, a real Dovecot, and
a real filter script (sh and grep, as a user would write one) (issue 12, items 4 and 5)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from pop3s_fetch import __version__
from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import as_stored
from tests.support.rig import keyring_env

pytestmark = pytest.mark.dovecot

HAM = b"From: friend@example.org\nSubject: lunch?\n\nat noon\n"
LATER = b"From: list@example.org\nSubject: digest\nList-Id: <big.example.org>\n\nlater\n"
SPAM = b"From: x@example.biz\nSubject: [SPAM] win\n\nbuy\n"
MAILBOX = [HAM, LATER, SPAM]

# The kind of filter a user writes: grep the header, answer by exit status, log what it saw.
FILTER = """#!/bin/sh
head=$(cat)
echo seen >> "{log}"
printf '%s\\n' "$head" | grep -qi '^Subject: \\[SPAM\\]' && exit 2
printf '%s\\n' "$head" | grep -qi '^List-Id:' && exit 1
exit 0
"""
BROKEN = """#!/bin/sh
cat >/dev/null
echo "rules.cf: line 3: unknown test" >&2
exit 5
"""


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
    cli.write_config(text.rstrip("\n") + "\n" + extra)
    return cli, user, destination


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text.format(log=tmp_path / "filter.log"))
    path.chmod(0o755)
    return path


def test_a_grep_filter_skips_and_deletes_and_dry_run_does_not_run_it(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    spamcheck = script(tmp_path, "spamcheck", FILTER)
    cli, user, destination = setup(
        dovecot, tmp_path, f'filter = ["{spamcheck}"]\nfilter_may_delete = true\n'
    )
    log = tmp_path / "filter.log"

    dry = cli.run("sync", "--dry-run")
    assert dry.code == 0, dry.output
    assert "the filter was not run: a sync shows each of these to it first" in dry.stdout
    assert not log.exists()

    result = cli.run("sync", "--json")
    assert result.code == 0, result.output
    (account,) = json.loads(result.stdout)["accounts"]
    assert (account["fetched"], account["deleted"]) == (1, 0)
    assert [(f["action"], f["size"]) for f in account["filtered"]] == [
        ("skip", len(LATER) + LATER.count(b"\n")),
        ("delete", len(SPAM) + SPAM.count(b"\n")),
    ]
    assert sorted(read_messages(destination, "maildir")) == [as_stored(HAM, "maildir")]
    assert sorted(user.messages_on_server()) == sorted([HAM, LATER])  # the spam went unread
    assert log.read_text() == "seen\n" * 3

    again = cli.run("sync")
    assert again.code == 0, again.output
    assert again.stdout == "work: no new mail, 2 on server\n"  # counted once, when decided
    assert log.read_text() == "seen\n" * 3  # the skipped one is not shown again
    (listed,) = json.loads(cli.run("sync", "--json").stdout)["accounts"]
    assert [(f["action"], f["new"]) for f in listed["filtered"]] == [("skip", False)]

    check = cli.run("check")
    assert (check.code, check.stdout) == (1, "work: no new mail, 2 on server\n")


def test_the_summary_line_counts_what_the_filter_did(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    spamcheck = script(tmp_path, "spamcheck", FILTER)
    cli, _, _ = setup(dovecot, tmp_path, f'filter = ["{spamcheck}"]\nfilter_may_delete = true\n')
    result = cli.run("sync")
    assert result.code == 0, result.output
    assert re.fullmatch(
        r"work: 1 new message \(\d+ bytes\), 3 on server, 1 skipped by the filter, "
        r"1 deleted by the filter\n",
        result.stdout,
    ), result.stdout


def test_a_broken_filter_fails_the_run_and_keeps_the_mail(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    broken = script(tmp_path, "spamcheck", BROKEN)
    cli, user, destination = setup(dovecot, tmp_path, f'filter = ["{broken}"]\nkeep = false\n')
    cli.config_path.write_text(cli.config_path.read_text().replace("keep = true\n", ""))
    result = cli.run("sync")
    assert result.code == 74, result.output
    assert re.search(
        r"^error: work: message 1 \(UIDL \S+\) not fetched: the filter spamcheck failed "
        r"\(exit status 5\); it wrote: rules\.cf: line 3: unknown test \(and 2 more for the "
        r"same reason\) \(left on the server; fix the filter, and the next run shows them to the "
        r"filter again\)$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    assert sorted(user.messages_on_server()) == sorted(MAILBOX)
    assert read_messages(destination, "maildir") == []


def test_add_headers_against_dovecot(dovecot: DovecotServer, tmp_path: Path) -> None:
    cli, user, destination = setup(
        dovecot, tmp_path, 'add_headers = ["received", "delivered-to", "x-original-to"]\n'
    )
    result = cli.run("sync")
    assert result.code == 0, result.output
    assert "another size" not in result.output  # LIST is compared with the server's bytes
    trace = re.compile(
        rf"Received: from {re.escape(dovecot.host)}\n\tby {re.escape(socket.gethostname())} "
        rf"with POP3S \(pop3s-fetch {re.escape(__version__)}; TLSv1\.[23]\);\n"
        r"\t(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (\w{3}) \d{4} \d\d:\d\d:\d\d [+-]\d{4}\n"
        rf"Delivered-To: {re.escape(user.name)}\nX-Original-To: {re.escape(user.name)}\n"
    )
    copies = read_messages(destination, "maildir")
    assert len(copies) == len(MAILBOX)
    for copy in copies:
        match = trace.match(copy.decode())
        assert match is not None, copy
        assert copy[match.end() :] in MAILBOX  # the server's bytes, untouched, after ours
