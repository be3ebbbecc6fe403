"""``pop3s-fetch demo``: the newcomer's first command must work with nothing set up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pop3s_fetch.demo.samples import demo_messages
from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli
from tests.support.mail import as_stored

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def test_demo_syncs_twice_and_verifies(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "demo"
    result = cli.run("demo", "--directory", str(target))
    assert result.code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[1] == f"demo: first sync, into {target}:"
    assert lines[2:4] == [
        "demo-maildir: 8 new messages (504.4 kB), 8 on server",
        "demo-mbox: 8 new messages (504.4 kB), 8 on server",
    ]
    assert lines[5:7] == [
        "demo-maildir: no new mail, 8 on server",
        "demo-mbox: no new mail, 8 on server",
    ]
    assert lines[-1].startswith("demo: every message landed byte for byte")
    expected = sorted(as_stored(m, "maildir") for m in demo_messages())
    assert sorted(read_messages(target / "Maildir", "maildir")) == expected
    assert sorted(read_messages(target / "mbox", "mbox")) == expected

    again = cli.run("demo", "--directory", str(target))  # its own output is cleared first
    assert again.code == 0, again.output
    assert sorted(read_messages(target / "Maildir", "maildir")) == expected


def test_demo_refuses_a_directory_it_did_not_make(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = cli.run("demo", "--directory", str(tmp_path))
    assert result.code == 74
    assert result.stderr == (
        f"error: {tmp_path} already exists and was not made by pop3s-fetch demo "
        "(pass --directory with a new or empty directory)\n"
    )
    assert (tmp_path / "precious.txt").read_text() == "keep me"
