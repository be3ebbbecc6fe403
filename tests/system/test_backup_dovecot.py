"""``pop3s-fetch backup`` against a real Dovecot, run as a user would (issue 13, item 1).

No configuration file is written: the server, user and target come from the command line, the
password from a ``--password-command`` whose script lives outside the CLI home (so a search of
everything the program printed or left there for the password means something). The test
keyring is the "fail" backend, as on a headless box. Kills are made on observed progress (bytes
in the target), never after a sleep.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from pop3s_fetch.destinations import read_messages
from pop3s_fetch.ui import human_bytes
from tests.support.cli import Cli, Result, account_toml, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import as_stored, corpus
from tests.support.rig import keyring_env
from tests.support.secret_service import SecretService
from tests.system.test_terminal import Tmux
from tests.system.test_terminal import start as start_in_terminal

pytestmark = pytest.mark.dovecot

PASSWORD = "backup-test-" + secrets.token_hex(8)
REACH_TIMEOUT = 30.0
POLL_INTERVAL = 0.005
SEED_VARIABLE = "POP3S_FETCH_CRASH_SEED"
TRIALS = 5  # per format


def many_messages(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct messages, a few of them large, so a backup has several batches."""
    rng = random.Random(seed)
    messages = []
    for number in range(count):
        lines = rng.randrange(3, 60) if number % 50 != 25 else 12_000  # ~1 MB each 50th
        body = b"".join(
            (b"From " if i % 17 == 3 else b"." if i % 19 == 5 else b"")
            + rng.randbytes(30).hex().encode()
            + b"\n"
            for i in range(lines)
        )
        messages.append(f"Subject: message {number}\n\n".encode() + body)
    return messages


def setup(
    dovecot: DovecotServer, tmp_path: Path, messages: list[bytes]
) -> tuple[Cli, DovecotUser, list[str]]:
    """A Dovecot user with ``messages``, a CLI home without keyring, and the base argv."""
    user = dovecot.add_user(messages, password=PASSWORD)
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    secret_dir = tmp_path / "outside-home"
    secret_dir.mkdir()
    (secret_dir / "pw").write_text(PASSWORD + "\n")
    script = secret_dir / "pw.sh"
    script.write_text(f"#!/bin/sh\nexec cat {secret_dir / 'pw'}\n")
    script.chmod(0o700)
    argv = [
        "backup",
        dovecot.host,
        "--user",
        user.name,
        "--port",
        str(dovecot.port),
        "--ca",
        str(dovecot.ca_file),
        "--password-command",
        str(script),
    ]
    return cli, user, argv


def expected(messages: list[bytes], fmt: str) -> list[str]:
    return digests(as_stored(m, fmt) for m in messages)


def digests(messages: Iterable[bytes]) -> list[str]:
    """Sorted "size:sha256" of each message: compares like the bytes, but fails legibly."""
    return sorted(f"{len(m)}:{hashlib.sha256(m).hexdigest()[:16]}" for m in messages)


def listed_octets(messages: list[bytes]) -> int:
    return sum(len(m) + m.count(b"\n") for m in messages)


def verdict(count: int, octets: int, shown: str) -> str:
    return (
        f"backup verified: {count} messages, {human_bytes(octets)}, all on the server are in "
        f"{shown} exactly once"
    )


def dovecot_deletions(dovecot: DovecotServer, user: DovecotUser) -> list[str]:
    """The del=N/M figures Dovecot logged for the user's sessions (N: messages deleted)."""
    return [
        line.split("del=", 1)[1].split(",", 1)[0]
        for line in dovecot.log_text().splitlines()
        if f"({user.name})" in line and "del=" in line
    ]


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_backup_copies_every_message_byte_for_byte_and_verifies(
    dovecot: DovecotServer, tmp_path: Path, fmt: str
) -> None:
    messages = corpus()
    cli, user, argv = setup(dovecot, tmp_path, messages)
    on_server_before = user.messages_on_server()
    target = "alice-2026-12" if fmt == "maildir" else "alice-2026-12.mbox"
    done = subprocess.run(
        [sys.executable, "-m", "pop3s_fetch", *argv, "--to", f"./{target}", "--format", fmt],
        env=cli.env,
        cwd=cli.home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = Result([*argv, "--to", target], done.returncode, done.stdout, done.stderr)
    cli.runs.append(result)
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == verdict(len(messages), listed_octets(messages), f"./{target}")
    assert digests(read_messages(cli.home / target, fmt)) == expected(messages, fmt)
    if fmt == "maildir":  # the server's bytes (LF line ends), file for file
        files = sorted((cli.home / target / "new").iterdir())
        assert digests(f.read_bytes() for f in files) == expected(messages, fmt)
    # Nothing deleted: the server's files are all there, and Dovecot counted no DELE.
    assert digests(user.messages_on_server()) == digests(on_server_before)
    figures = dovecot_deletions(dovecot, user)
    assert figures, dovecot.log_text()[-2000:]
    assert all(f.startswith("0/") for f in figures), figures
    # No configured account's state was made: the backup's lives apart.
    assert not list(cli.state_dir.glob("*.sqlite3"))
    assert len(list((cli.state_dir / "backups").iterdir())) == 1

    again = cli.run(*argv, "--to", str(cli.home / target), "--format", fmt)
    assert again.code == 0, again.output
    assert "no new mail" in again.stdout
    assert PASSWORD.encode() not in cli.everything_written()


def test_without_terminal_or_password_source_it_says_so_in_one_line(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    cli, user, argv = setup(dovecot, tmp_path, corpus()[:2])
    no_command = argv[: argv.index("--password-command")]
    result = cli.run(*no_command, "--to", str(cli.home / "copy"))
    assert result.code == 77, result.output
    assert result.stdout == ""
    assert result.stderr == (
        f"error: no password for {user.name} at {dovecot.host}: none in the keyring (as "
        f'"{user.name}@{dovecot.host}") and no terminal to ask on (run the backup once on a '
        "terminal, which keeps the password in the keyring, or give --password-command)\n"
    )
    assert not (cli.home / "copy").exists()


def test_a_killed_backup_resumes_where_it_stopped(dovecot: DovecotServer, tmp_path: Path) -> None:
    messages = many_messages(300)
    cli, _user, argv = setup(dovecot, tmp_path, messages)
    for attempt in range(3):  # a fast machine may finish before the kill lands: try anew
        target = cli.home / f"copy{attempt}"
        process = start(cli, [*argv, "--to", str(target)])
        # The first batch (128 messages) is published: kill before the rest is.
        if kill_when(functools.partial(at_least, target / "new", 128), process):
            break
    else:
        pytest.fail("the backup ended three times before it could be killed")
    saved = count_files(target / "new")
    assert 128 <= saved < 300
    resumed = cli.run(*argv, "--to", str(target))
    assert resumed.code == 0, resumed.output
    fetched = 300 - saved
    assert resumed.stdout.splitlines()[0].startswith(
        f"{argv[3]}@{dovecot.host}: {fetched} new messages ("
    ), resumed.stdout
    assert resumed.stdout.splitlines()[-1] == verdict(300, listed_octets(messages), str(target))
    assert digests(read_messages(target, "maildir")) == expected(messages, "maildir")


def test_verify_only_finds_a_missing_and_a_duplicated_message(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    messages = corpus()
    cli, _user, argv = setup(dovecot, tmp_path, messages)
    target = cli.home / "copy"
    assert cli.run(*argv, "--to", str(target)).code == 0
    files = sorted((target / "new").iterdir())
    files[0].unlink()
    shutil.copy(files[1], target / "cur" / "1234.M1P1.elsewhere:2,S")

    checked = cli.run(*argv, "--to", str(target), "--verify-only")
    assert checked.code == 74, checked.output
    assert checked.stdout == ""
    first, *details = checked.stderr.splitlines()
    assert first.startswith(
        f"error: {argv[3]}@{dovecot.host}: backup NOT verified: of {len(messages)} messages on "
        f"the server ({human_bytes(listed_octets(messages))}), 1 missing from {target}, 1 there "
        "more than once, 0 with another size (run the backup again"
    ), first
    assert len(details) == 2, details
    assert details[0].startswith("  missing: message ")
    assert f"was saved as {files[0].name}, which is gone" in details[0]
    assert details[1].startswith("  duplicated: UIDL ")
    assert details[1].endswith("is in the copy 2 times (also as 1234.M1P1.elsewhere)")

    # A backup run fetches the missing one again; the duplicate is still reported.
    repaired = cli.run(*argv, "--to", str(target))
    assert repaired.code == 74, repaired.output
    assert "1 new message" in repaired.stdout
    assert "0 missing from" in repaired.stderr
    assert "1 there more than once" in repaired.stderr
    (target / "cur" / "1234.M1P1.elsewhere:2,S").unlink()
    final = cli.run(*argv, "--to", str(target), "--verify-only")
    assert final.code == 0, final.output
    assert final.stdout == verdict(len(messages), listed_octets(messages), str(target)) + "\n"
    assert PASSWORD.encode() not in cli.everything_written()


# --- killed at random instants ----------------------------------------------------------


def start(cli: Cli, args: list[str]) -> subprocess.Popen[bytes]:
    with (cli.home / "background.stderr").open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "pop3s_fetch", *args],
            env=cli.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def at_least(directory: Path, count: int) -> bool:
    return count_files(directory) >= count


def count_files(directory: Path) -> int:
    try:
        return len(os.listdir(directory))
    except FileNotFoundError:
        return 0


def bytes_written(target: Path, fmt: str) -> int:
    """Bytes on disk for the backup so far: Maildir tmp/ and new/, or the mbox and its spools."""
    places = [target / "tmp", target / "new"] if fmt == "maildir" else [target.parent]
    total = 0
    for place in places:
        try:
            with os.scandir(place) as entries:
                for entry in entries:
                    if fmt == "maildir" or entry.name.lstrip(".").startswith(target.name):
                        try:
                            total += entry.stat().st_size
                        except FileNotFoundError:
                            continue
        except FileNotFoundError:
            continue
    return total


def kill_when(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> bool:
    """Poll until ``condition()`` holds, then SIGKILL at once; True if the kill ended it."""
    deadline = time.monotonic() + REACH_TIMEOUT
    while not condition():
        if process.poll() is not None:
            return False  # it finished first
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the backup made no progress to observe")
        time.sleep(POLL_INTERVAL)  # polling another process's progress, with a deadline
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait() == -signal.SIGKILL


def reached(target: Path, fmt: str, threshold: int) -> bool:
    return bytes_written(target, fmt) >= threshold


@pytest.fixture(scope="module")
def crash_seed() -> int:
    text = os.environ.get(SEED_VARIABLE, "")
    return int(text) if text else secrets.randbits(32)


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_a_backup_killed_at_random_instants_resumes_and_verifies(
    dovecot: DovecotServer, tmp_path: Path, fmt: str, crash_seed: int
) -> None:
    """Each trial kills a backup once a random share of the mailbox's bytes is on disk (in
    staging or published), runs it again to the end, and checks: verified by the command,
    and every message in the copy exactly once, byte for byte (0 lost, 0 duplicated)."""
    rng = random.Random(f"{crash_seed}-{fmt}")
    messages = many_messages(180, seed=1)
    total = sum(len(m) for m in messages)
    cli, user, argv = setup(dovecot, tmp_path, messages)
    tally = []
    for trial in range(TRIALS):
        target = cli.home / (f"copy{trial}" if fmt == "maildir" else f"copy{trial}.mbox")
        args = [*argv, "--to", str(target), "--format", fmt]
        threshold = rng.randrange(total)
        process = start(cli, args)
        killed = kill_when(functools.partial(reached, target, fmt, threshold), process)
        tally.append(f"{threshold}:{'killed' if killed else 'finished'}")
        context = f"{SEED_VARIABLE}={crash_seed} {fmt} trial {trial} ({tally})"
        resumed = cli.run(*args)
        assert resumed.code == 0, f"{context}: {resumed.output}"
        assert resumed.stdout.splitlines()[-1] == verdict(
            len(messages), listed_octets(messages), str(target)
        ), context
        landed = read_messages(target, fmt)
        assert len(landed) == len(messages), context
        assert digests(landed) == expected(messages, fmt), context
    assert any("killed" in entry for entry in tally), tally
    print(f"{SEED_VARIABLE}={crash_seed} {fmt}: {tally}")  # shown with -s, for the record
    assert all(f.startswith("0/") for f in dovecot_deletions(dovecot, user))
    assert digests(user.messages_on_server()) == digests(messages)
    assert PASSWORD.encode() not in cli.everything_written()


# --- a configured account, and a password typed on a terminal --------------------------------


def test_backing_up_a_configured_account_never_uses_its_keep_or_its_state(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    messages = corpus()
    user = dovecot.add_user(messages, password=PASSWORD)
    cli = make_cli(tmp_path, keyring_env(PASSWORD))
    cli.write_config(
        account_toml(
            "work",
            host=dovecot.host,
            port=dovecot.port,
            username=user.name,
            destination=cli.home / "Maildir",
            keep=False,  # the account deletes after download; a backup never does
            ca_file=dovecot.ca_file,
        )
    )
    target = cli.home / "work-backup.mbox"
    result = cli.run("backup", "work", "--to", str(target), "--format", "mbox")
    assert result.code == 0, result.output
    assert result.stdout.splitlines() == [
        f"work: {len(messages)} new messages ({human_bytes(listed_octets(messages))}), "
        f"{len(messages)} on server",
        verdict(len(messages), listed_octets(messages), str(target)),
    ]
    assert digests(read_messages(target, "mbox")) == expected(messages, "mbox")
    assert digests(user.messages_on_server()) == digests(messages)
    assert all(f.startswith("0/") for f in dovecot_deletions(dovecot, user))
    assert not (cli.state_dir / "work.sqlite3").exists()
    assert not (cli.home / "Maildir").exists()
    # The account's own sync still finds everything new: the backup's state is its own.
    synced = cli.run("sync", "work")
    assert synced.code == 0, synced.output
    assert len(read_messages(cli.home / "Maildir", "maildir")) == len(messages)

    refused = cli.run("backup", "work", "--to", str(target), "--port", "995")
    assert refused.code == 64
    assert "--port is for a server named on the command line (with --user)" in refused.stderr


@pytest.mark.secret_service
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_a_password_typed_on_a_terminal_is_kept_for_the_next_run(
    dovecot: DovecotServer, tmp_path: Path, secret_service: SecretService
) -> None:
    messages = many_messages(40)
    user = dovecot.add_user(messages, password=PASSWORD)
    env = dict(secret_service.env)
    env.pop("HOME", None)
    cli = make_cli(tmp_path, {**env, "TERM": "xterm-256color"})
    cli.env["HOME"] = secret_service.env["HOME"]
    argv = [
        "backup",
        dovecot.host,
        "--user",
        user.name,
        "--port",
        str(dovecot.port),
        "--ca",
        str(dovecot.ca_file),
        "--to",
        "./alice-2026-12/",
    ]
    tmux = Tmux(tmp_path / "tmux.sock")
    try:
        start_in_terminal(tmux, cli.env, shlex.join(argv), cli.home)
        prompt = f"Password for {user.name} at {dovecot.host}: "
        tmux.wait_for(lambda s: s.rstrip().endswith(prompt.rstrip()), "the password prompt")
        tmux("send-keys", "-t", "test", PASSWORD, "Enter")
        screen = tmux.wait_for(lambda s: "[exit " in s, "the end of the backup")
    finally:
        subprocess.run(["tmux", "-S", str(tmux.socket), "kill-server"], check=False)
    assert "[exit 0]" in screen, screen
    assert PASSWORD not in screen  # no echo
    name = f"{user.name}@{dovecot.host}"
    assert f'the password is kept in the keyring as "{name}"' in " ".join(screen.split())
    shown = verdict(len(messages), listed_octets(messages), "./alice-2026-12/")
    assert shown in " ".join(screen.split()), screen
    print(screen)  # for the record, with -s
    # No terminal now: the keyring has it.
    again = cli.run(*argv[:-1], str(cli.home / "alice-2026-12"), "--verify-only")
    assert again.code == 0, again.output
    assert PASSWORD.encode() not in cli.everything_written()
