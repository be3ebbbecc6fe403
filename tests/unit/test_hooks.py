"""The on_new_mail hook with real programs: what it is told, what it is not, how it fails."""

from __future__ import annotations

import json
import os
import select
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pop3s_fetch.config import Account
from pop3s_fetch.hooks import hook_environment, run_on_new_mail


def script(tmp_path: Path, body: str, name: str = "hook.py") -> tuple[str, ...]:
    """A hook written in Python, run as ``python hook.py`` (argv, no shell)."""
    path = tmp_path / name
    path.write_text("import json, os, sys, time\n" + textwrap.dedent(body))
    return (sys.executable, str(path))


def account(tmp_path: Path, argv: tuple[str, ...] | None, timeout: float = 20) -> Account:
    return Account(
        name="work",
        host="pop.example.com",
        username="alice",
        destination=tmp_path / "Maildir",
        on_new_mail=argv,
        on_new_mail_timeout=timeout,
    )


RECORD = """
    with open(sys.argv[1], "w") as out:
        json.dump({"argv": sys.argv[2:], "env": dict(os.environ), "stdin": sys.stdin.read()}, out)
"""


def test_hook_gets_counts_in_its_environment_argv_as_given_and_no_stdin(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    argv = (*script(tmp_path, RECORD), str(seen), "$HOME", "a b;c", "*")
    environ = {"PATH": os.environ["PATH"], "CREDENTIALS_DIRECTORY": "/run/credentials/x"}
    assert run_on_new_mail(account(tmp_path, argv), 3, 4567, environ=environ) is None
    record = json.loads(seen.read_text())
    assert record["argv"] == ["$HOME", "a b;c", "*"]  # no shell: nothing expanded or split
    assert record["stdin"] == ""
    env = record["env"]
    assert env["POP3S_FETCH_ACCOUNT"] == "work"
    assert env["POP3S_FETCH_NEW"] == "3"
    assert env["POP3S_FETCH_BYTES"] == "4567"
    assert env["POP3S_FETCH_DESTINATION"] == str(tmp_path / "Maildir")
    assert "CREDENTIALS_DIRECTORY" not in env
    assert env["PATH"] == os.environ["PATH"]


def test_environment_withholds_the_credentials_directory(tmp_path: Path) -> None:
    env = hook_environment(account(tmp_path, None), 1, 2, {"CREDENTIALS_DIRECTORY": "/x", "A": "b"})
    assert env == {
        "A": "b",
        "POP3S_FETCH_ACCOUNT": "work",
        "POP3S_FETCH_NEW": "1",
        "POP3S_FETCH_BYTES": "2",
        "POP3S_FETCH_DESTINATION": str(tmp_path / "Maildir"),
    }


def test_no_hook_when_nothing_was_delivered(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    argv = (*script(tmp_path, RECORD), str(seen))
    assert run_on_new_mail(account(tmp_path, argv), 0, 0) is None
    assert not seen.exists()


def test_failure_names_the_status_and_the_first_stderr_line_escaped(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        """
        print("indexed nothing", flush=True)  # stdout: discarded
        sys.stderr.write("\\n  Error: database locked \\x1b[2J\\n second line\\n")
        sys.exit(3)
        """,
        name="notmuch",
    )
    warning = run_on_new_mail(account(tmp_path, argv), 1, 10)
    assert warning == (
        "on_new_mail (python3) failed (exit status 3): Error: database locked \\x1b[2J; "
        "the mail was delivered"
    ).replace("python3", Path(sys.executable).name)


def test_failure_without_stderr_and_by_signal(tmp_path: Path) -> None:
    quiet = script(tmp_path, "sys.exit(1)\n")
    assert run_on_new_mail(account(tmp_path, quiet), 1, 10) == (
        f"on_new_mail ({Path(sys.executable).name}) failed (exit status 1); the mail was delivered"
    )
    killed = script(tmp_path, "import signal; os.kill(os.getpid(), signal.SIGTERM)\n", "k.py")
    warning = run_on_new_mail(account(tmp_path, killed), 1, 10)
    assert warning is not None
    assert "failed (killed by SIGTERM)" in warning


def test_missing_program(tmp_path: Path) -> None:
    warning = run_on_new_mail(account(tmp_path, (str(tmp_path / "no-such-indexer"),)), 1, 1)
    assert warning == "on_new_mail (no-such-indexer): command not found; the mail was delivered"


def test_timeout_stops_the_hook_and_what_it_started(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    argv = script(
        tmp_path,
        f"""
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(child_pid)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """,
    )
    warning = run_on_new_mail(account(tmp_path, argv, timeout=1.5), 1, 1)
    assert warning == (
        f"on_new_mail ({Path(sys.executable).name}) did not finish within 1.5 seconds and was "
        "stopped (raise on_new_mail_timeout if it needs longer); the mail was delivered"
    )
    pid = int(child_pid.read_text())
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        ready, _, _ = select.select([handle], [], [], 10)  # readable once it has ended
        assert ready, "the hook's child outlived the timeout"
    finally:
        os.close(handle)


def test_a_hook_that_leaves_a_child_holding_stderr_does_not_block(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        """
        import subprocess
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        sys.exit(0)
        """,
    )
    # Returns at once with the hook's own status, long before the child or the timeout ends.
    assert run_on_new_mail(account(tmp_path, argv, timeout=20), 1, 1) is None


def test_hooks_run_one_at_a_time(tmp_path: Path) -> None:
    """Accounts synced in parallel never run their hooks at once (one notmuch database)."""
    busy = tmp_path / "busy"
    argv = script(
        tmp_path,
        f"""
        try:
            fd = os.open({str(busy)!r}, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            sys.stderr.write("another hook is running\\n")
            sys.exit(9)
        time.sleep(0.2)
        os.close(fd)
        os.unlink({str(busy)!r})
        """,
    )
    warnings: list[str | None] = []
    threads = [
        threading.Thread(
            target=lambda: warnings.append(run_on_new_mail(account(tmp_path, argv), 1, 1))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings == [None] * 4


@pytest.mark.parametrize("messages", [1, 250])
def test_counts_are_decimal_strings(tmp_path: Path, messages: int) -> None:
    env = hook_environment(account(tmp_path, None), messages, 10**10, {})
    assert (env["POP3S_FETCH_NEW"], env["POP3S_FETCH_BYTES"]) == (str(messages), "10000000000")


def test_config_inherits_on_new_mail_from_defaults_and_refuses_a_string(tmp_path: Path) -> None:
    from pop3s_fetch import config
    from pop3s_fetch.errors import ConfigError

    base = '[accounts.work]\nhost = "h"\nusername = "u"\ndestination = "/m"\n'
    loaded = config.parse(
        '[defaults]\non_new_mail = ["notmuch", "new"]\non_new_mail_timeout = 30\n' + base,
        tmp_path / "c.toml",
    )
    work = loaded.accounts["work"]
    assert (work.on_new_mail, work.on_new_mail_timeout) == (("notmuch", "new"), 30.0)
    assert config.parse(base, tmp_path / "c.toml").accounts["work"].on_new_mail is None
    with pytest.raises(ConfigError) as refused:
        config.parse(base + 'on_new_mail = "notmuch new"\non_new_mail_timeout = 0\n', tmp_path)
    problems = [p.split(": ", 1)[1] for p in refused.value.problems]
    assert problems == [
        'accounts.work.on_new_mail: expected an array of non-empty strings such as ["notmuch", '
        '"new"] (it is run without a shell), got "notmuch new" (did you mean ["notmuch", "new"]?)',
        "accounts.work.on_new_mail_timeout: expected a number of seconds above 0 and at most "
        "3600, got 0",
    ]
