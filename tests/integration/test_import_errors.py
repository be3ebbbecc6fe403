"""``pop3s-fetch import`` when the peer's files are not where the user or the peer says.

Each error is one line naming what was looked for and where, and the command that fixes it,
with exit 78 and nothing written. Runs the CLI as a process; needs no server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Cli

GETMAILRC = (
    "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = pop.example.org\nusername = u\n"
    "[destination]\ntype = Maildir\npath = ~/Maildir/\n"
)


def assert_one_line_78(cli: Cli, args: tuple[str, ...], line: str) -> None:
    result = cli.run("import", *args)
    assert (result.code, result.stdout, result.stderr) == (78, "", line + "\n")
    assert not cli.config_path.exists()
    assert not cli.state_dir.exists()


def test_mpop_missing_names_both_places_it_looked(cli: Cli) -> None:
    home = cli.home
    assert_one_line_78(
        cli,
        ("mpop",),
        f"error: found no mpop configuration at {home}/.config/mpop/config or {home}/.mpoprc "
        "(name the file: pop3s-fetch import mpop FILE)",
    )


def test_mpop_in_xdg_config_home_is_read(cli: Cli) -> None:
    xdg = cli.home / "xdg"
    (xdg / "mpop").mkdir(parents=True)
    (xdg / "mpop" / "config").write_text("account work\nhost pop.example.org\nuser u\n")
    result = cli.run("import", "mpop", "--dry-run", extra_env={"XDG_CONFIG_HOME": str(xdg)})
    assert result.code == 0, result.output
    assert result.stdout.startswith(f"import from mpop: {xdg}/mpop/config\n")


def test_getmail_missing_names_both_directories(cli: Cli) -> None:
    home = cli.home
    (home / ".getmail").mkdir()
    (home / ".getmail" / "oldmail-pop.example.org-995-u").write_text("")
    assert_one_line_78(
        cli,
        ("getmail",),
        "error: found no getmail rc file (one with a [retriever] section) in "
        f"{home}/.config/getmail/ or {home}/.getmail/ "
        "(name the rc files: pop3s-fetch import getmail FILE...)",
    )


def test_fetchmail_missing_names_fetchmailhome(cli: Cli) -> None:
    elsewhere = cli.home / "fm"
    result = cli.run("import", "fetchmail", extra_env={"FETCHMAILHOME": str(elsewhere)})
    assert (result.code, result.stderr) == (
        78,
        f"error: found no fetchmail configuration at {elsewhere}/fetchmailrc "
        "(name the file: pop3s-fetch import fetchmail FILE)\n",
    )


@pytest.mark.parametrize("peer", ["fetchmail", "getmail", "mpop"])
def test_a_named_file_that_is_missing_says_to_check_it(cli: Cli, peer: str) -> None:
    missing = cli.home / "old-rc"
    assert_one_line_78(
        cli,
        (peer, str(missing)),
        f"error: {missing} does not exist (check the name, or leave it out: pop3s-fetch "
        f"import {peer} reads {peer}'s own configuration where it keeps it)",
    )


def test_a_getmail_directory_stands_for_its_rc_files(cli: Cli) -> None:
    directory = cli.home / "getmail-dir"
    directory.mkdir()
    (directory / "work.rc").write_text(GETMAILRC)
    (directory / "oldmail-pop.example.org-995-u").write_text("A\x001700000000\n")
    result = cli.run("import", "getmail", "--dry-run", str(directory))
    assert result.code == 0, result.output
    oldmail = directory / "oldmail-pop.example.org-995-u"  # read too, never taken as an rc file
    assert result.stdout.startswith(f"import from getmail: {directory / 'work.rc'}, {oldmail}\n")
    empty = cli.home / "empty-dir"
    empty.mkdir()
    assert_one_line_78(
        cli,
        ("getmail", str(empty)),
        f"error: found no getmail rc file (one with a [retriever] section) in {empty} "
        "(name the rc files: pop3s-fetch import getmail FILE...)",
    )


def test_a_directory_for_mpop_or_fetchmail_is_named(cli: Cli) -> None:
    directory: Path = cli.home
    assert_one_line_78(
        cli,
        ("mpop", str(directory)),
        f"error: {directory} is a directory, not mpop's configuration file "
        "(name the file: pop3s-fetch import mpop FILE)",
    )


def test_no_uidl_file_names_where_it_looked_and_the_way_to_start_from_now(cli: Cli) -> None:
    """0 UIDLs imported means the first sync downloads everything again: say where the
    UIDLs were looked for, and that state seed avoids the duplicates."""
    (cli.home / ".mpoprc").write_text(
        "account work\nhost pop.example.org\nuser u\ntls on\ntls_starttls off\nkeep on\n"
        "account gone\nhost pop.example.org\nuser v\ntls on\ntls_starttls off\nkeep off\n"
    )
    data = cli.home / "data"
    result = cli.run("import", "mpop", "--dry-run", extra_env={"XDG_DATA_HOME": str(data)})
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    looked = (
        f"{data}/mpop/uidls/u_at_pop.example.org or {data}/mpop/uidls or "
        f"{cli.home}/.mpop_uidls/u_at_pop.example.org"
    )
    at = lines.index(f"  state: would mark 0 UIDLs delivered (no UIDL file at {looked})")
    assert lines[at + 1] == (
        "  nothing recorded as fetched: the first sync downloads every message now on the "
        "server; if the peer fetched them already, run pop3s-fetch state seed work before it "
        "(it marks them all delivered, downloading nothing)"
    )
    # keep off (mpop's default): mpop deleted what it fetched, so the server's mail is new.
    assert sum("nothing recorded as fetched" in line for line in lines) == 1
