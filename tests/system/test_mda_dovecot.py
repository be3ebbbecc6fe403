"""format = "mda" end to end: the command, a real Dovecot, and Debian's procmail, maildrop and
dovecot-lda delivering into Maildirs of their own.

Each MDA runs behind a small wrapper that records its environment and argv (so the tests can
show the password never reaches it) and can SIGKILL pop3s-fetch right after the MDA exited,
the one window in which an MDA delivery can be duplicated. The password comes from a
``password_command`` reading a file, so it is in no environment the MDA could inherit.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Cli, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import as_stored, corpus

pytestmark = pytest.mark.dovecot

DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"
#: dovecot-lda refuses to run as root without -d (which needs an auth service): as root, the
#: tests run it as this unprivileged user, as a root-run fetch would for a user's mail.
NOBODY = 65534


def need(program: str) -> str:
    found = shutil.which(program) or (program if os.access(program, os.X_OK) else None)
    if found is None:
        if os.environ.get("POP3S_FETCH_REQUIRE_SERVERS"):
            pytest.fail(f"{program} is not installed (apt-get install procmail maildrop)")
        pytest.skip(f"{program} is not installed")
    return found


@pytest.fixture
def mail_home() -> Iterator[Path]:
    """A directory every user can reach (pytest's are 0700 for root), for the MDAs' mail."""
    path = Path(tempfile.mkdtemp(prefix="pop3s-fetch-mda-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def wrapper(directory: Path, *, kill_parent_after: int = 0) -> Path:
    """Runs its arguments (the MDA), counting calls; on call ``kill_parent_after`` it SIGKILLs
    pop3s-fetch (its parent) after the MDA exited and before pop3s-fetch can record it."""
    path = directory / "wrap"
    path.write_text(
        "#!/bin/sh\n"
        f'd="{directory}"\n'
        'n=$(( $(cat "$d/calls" 2>/dev/null || echo 0) + 1 )); echo $n > "$d/calls"\n'
        'env > "$d/env.$n"; printf "%s\\n" "$@" > "$d/argv.$n"\n'
        '"$@"; status=$?\n'
        f'[ "$n" = "{kill_parent_after}" ] && kill -KILL $PPID\n'
        "exit $status\n"
    )
    path.chmod(0o755)
    return path


def configure(
    cli: Cli, dovecot: DovecotServer, user: DovecotUser, mda: list[str], *, keep: bool
) -> None:
    password_file = cli.home / "password"
    password_file.write_text(user.password + "\n")
    argv = ", ".join(f'"{arg}"' for arg in mda)
    cli.write_config(
        "[accounts.work]\n"
        f'host = "{dovecot.host}"\nport = {dovecot.port}\nusername = "{user.name}"\n'
        f'ca = "{dovecot.ca_file}"\ntimeout = 20\n'
        f'password_command = ["cat", "{password_file}"]\n'
        f'format = "mda"\nmda = [{argv}]\nmda_timeout = 60\n'
        f"keep = {'true' if keep else 'false'}\n"
    )


def procmail(home: Path) -> tuple[list[str], Path]:
    maildir = home / "procmail"
    rc = home / "procmailrc"
    rc.write_text(f"DEFAULT={maildir}/\n")
    return [need("procmail"), "-m", "-f", "{sender}", str(rc)], maildir


def maildrop(home: Path) -> tuple[list[str], Path]:
    maildir = home / "maildrop"
    for sub in ("", "tmp", "new", "cur"):
        (maildir / sub).mkdir(mode=0o700)
    rules = home / "mailfilter"
    rules.write_text(f'to "{maildir}/"\n')
    rules.chmod(0o600)  # maildrop refuses rules others could change
    return [need("maildrop"), str(rules)], maildir


def dovecot_lda(home: Path) -> tuple[list[str], Path]:
    maildir = home / "lda" / "Maildir"
    settings = home / "lda" / "lda.conf"
    settings.parent.mkdir()
    settings.write_text(
        f"mail_location = maildir:{maildir}\npostmaster_address = postmaster@example.org\n"
        f"log_path = {home / 'lda' / 'lda.log'}\n"
    )
    argv = [need(DOVECOT_LDA), "-c", str(settings), "-f", "{sender}", "-a", "{recipient}"]
    if os.geteuid() == 0:
        os.chown(settings.parent, NOBODY, NOBODY)
        argv = [need("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    return argv, maildir


def delivered(maildir: Path) -> list[bytes]:
    return sorted(path.read_bytes() for sub in ("new", "cur") for path in (maildir / sub).iterdir())


@pytest.mark.parametrize("make", [procmail, maildrop, dovecot_lda], ids=lambda f: f.__name__)
def test_each_real_mda_gets_every_message_exactly_once(
    tmp_path: Path, dovecot: DovecotServer, mail_home: Path, make: object
) -> None:
    messages = corpus()
    user = dovecot.add_user(messages)
    mda, maildir = make(mail_home)  # type: ignore[operator]
    cli = make_cli(tmp_path)
    configure(cli, dovecot, user, [str(wrapper(tmp_path)), *mda], keep=False)

    first = cli.run("sync")

    assert first.code == 0, first.output
    assert first.stdout.startswith(f"work: {len(messages)} new messages (")
    assert user.messages_on_server() == []  # each deleted once its MDA said 0
    expected = sorted(as_stored(m, "maildir") for m in messages)
    if make is dovecot_lda:  # it writes its own Return-Path from -f; the rest is as sent
        assert len(delivered(maildir)) == len(messages)
    else:
        assert delivered(maildir) == expected
    second = cli.run("sync")
    assert second.code == 0, second.output
    assert second.stdout == "work: no new mail, 0 on server\n"
    calls = int((tmp_path / "calls").read_text())
    assert calls == len(messages)
    for n in range(1, calls + 1):  # the MDA never sees the password: not in argv, not in env
        seen = (tmp_path / f"env.{n}").read_text() + (tmp_path / f"argv.{n}").read_text()
        assert user.password not in seen
    assert user.password not in first.output + second.output


def test_exit_75_from_dovecot_lda_leaves_the_mail_for_the_next_run(
    tmp_path: Path, dovecot: DovecotServer, mail_home: Path
) -> None:
    """With -d, dovecot-lda asks an auth service for the user; there is none: EX_TEMPFAIL."""
    messages = corpus()[:3]
    user = dovecot.add_user(messages)
    mda, _ = dovecot_lda(mail_home)
    cli = make_cli(tmp_path)
    configure(cli, dovecot, user, [*mda, "-d", "nobody-here"], keep=False)

    result = cli.run("sync")

    assert result.code == 75, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1  # one error naming the first; the same cause again is only counted
    assert lines[0].startswith("error: work: message 1 (UIDL ")
    assert f"not delivered: the MDA {mda[0]} asked to try again later (exit status 75)" in lines[0]
    assert lines[0].endswith(
        "(and 2 more for the same reason) (left on the server; the next run hands them over again)"
    )
    assert sorted(user.messages_on_server()) == sorted(messages)
    again = cli.run("sync")
    assert again.code == 75  # tried again, all of them
    assert again.stderr.count("asked to try again later") == 1
    assert "(and 2 more for the same reason)" in again.stderr


def test_a_failing_procmail_is_one_line_per_message_and_exit_74(
    tmp_path: Path, dovecot: DovecotServer, mail_home: Path
) -> None:
    messages = corpus()[:2]
    user = dovecot.add_user(messages)
    rc = mail_home / "broken-rc"
    # A folder no one can create; LOCKSLEEP=0 makes procmail give up in a second, not 56.
    rc.write_text("LOCKSLEEP=0\nDEFAULT=/proc/nowhere/\n")
    cli = make_cli(tmp_path)
    program = need("procmail")
    configure(cli, dovecot, user, [program, "-m", str(rc)], keep=False)

    result = cli.run("sync")

    assert result.code == 74, result.output
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: work: message 1 (UIDL ")
    assert (
        f"not delivered: the MDA {program} failed (exit status 73); it wrote: procmail: Unable "
        'to treat as directory "/proc/nowhere" | procmail: Lock failure on '
        '"/proc/nowhere.lock" | procmail: Error while writing to "/proc/nowhere" (and 1 more for '
        "the same reason) (left on the server; fix the MDA or its rules, and the next run "
        "hands them over again)"
    ) in error
    assert sorted(user.messages_on_server()) == sorted(messages)


def test_killed_between_the_mda_and_the_commit_delivers_that_message_twice_and_loses_none(
    tmp_path: Path, dovecot: DovecotServer, mail_home: Path
) -> None:
    """The one window README's Guarantees name: the MDA delivered message 2 and exited 0,
    and pop3s-fetch was SIGKILLed before it recorded that. The next run cannot ask procmail,
    so it hands message 2 over again: one duplicate, nothing lost, the rest exactly once."""
    messages = corpus()
    user = dovecot.add_user(messages)
    mda, maildir = procmail(mail_home)
    cli = make_cli(tmp_path)
    configure(cli, dovecot, user, [str(wrapper(tmp_path, kill_parent_after=2)), *mda], keep=False)

    killed = cli.run("sync")

    assert killed.code == -signal.SIGKILL
    assert len(delivered(maildir)) == 2  # the MDA did deliver the second message
    assert sorted(user.messages_on_server()) == sorted(messages)  # no QUIT: nothing deleted

    recovered = cli.run("sync")

    assert recovered.code == 0, recovered.output
    assert recovered.stderr == (
        "warning: work: a run was stopped while the MDA had 1 message(s) in hand; it cannot "
        "tell whether it delivered them, so they are handed over again (a duplicate is "
        "possible, a loss is not)\n"
    )
    second = as_stored(messages[1], "maildir")
    expected = sorted([*(as_stored(m, "maildir") for m in messages), second])
    assert delivered(maildir) == expected  # every message, the one in doubt twice
    assert user.messages_on_server() == []
    assert int((tmp_path / "calls").read_text()) == len(messages) + 1
