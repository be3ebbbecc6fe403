"""``sync --every`` as a process, stopped and reloaded with real signals.

The built-in server runs in this process; a held RETR (``Faults.hold_retr``) pauses the
download at a known message, and the test waits on the lines the daemon prints or on the
server reaching the hold, never on the clock.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults, MailStore, Pop3Server
from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.dovecot import DovecotServer
from tests.support.mail import as_stored, corpus

PASSWORD = "daemon-test-password"
MESSAGES = [f"Subject: {n}\n\nbody {n}\n".encode() for n in range(1, 6)]
WAIT = 60.0  # generous: the suite shares two cores; nothing here waits this long when it works


class Gate(threading.Event):
    """A hold_retr gate that also tells when the server reached it (the RETR has arrived)."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.reached.set()
        return super().wait(timeout)


class Running:
    """A daemon process whose stdout and stderr lines are read as they come."""

    def __init__(self, cli: Cli, *args: str, journal: bool = False) -> None:
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        self._cursor: dict[str, int] = {}
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        env = dict(cli.env)
        if journal:  # as systemd says that stderr is the journal's stream
            info = os.fstat(err_write)
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pop3s_fetch", "sync", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
        )
        os.close(out_write)
        os.close(err_write)
        self._readers = [
            threading.Thread(target=self._read, args=(name, fd), daemon=True)
            for name, fd in (("out", out_read), ("err", err_read))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, fd: int) -> None:
        with open(fd, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                self.lines.put((name, line.rstrip("\n")))

    def expect(self, pattern: str, stream: str) -> str:
        """The next line of ``stream`` ("out" or "err") matching ``pattern`` (a regex searched
        in the line). The streams are read apart, so each has its own place in :attr:`seen`:
        waiting on one never skips a line of the other."""
        deadline = time.monotonic() + WAIT  # lines that keep coming must not wait forever
        index = self._cursor.get(stream, 0)
        while True:
            while index < len(self.seen):
                name, line = self.seen[index]
                index += 1
                if name == stream and re.search(pattern, line):
                    self._cursor[stream] = index
                    return line
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line matched {pattern!r}; seen: {self.seen}") from None

    def skip(self, stream: str) -> None:
        """Let the next :meth:`expect` on ``stream`` see only lines not read yet."""
        self._cursor[stream] = len(self.seen)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self) -> int:
        code = self.process.wait(timeout=WAIT)
        for reader in self._readers:
            reader.join(WAIT)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

    def stdout_matching(self, pattern: str) -> list[str]:
        return [line for name, line in self.seen if name == "out" and re.search(pattern, line)]

    def stderr_lines(self) -> list[str]:
        return [line for name, line in self.seen if name == "err"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)


@pytest.fixture
def stores() -> dict[str, MailStore]:
    return {"alice": MailStore(MESSAGES), "bob": MailStore(MESSAGES[:2])}


@pytest.fixture
def server(
    server_ssl_context: ssl.SSLContext, stores: dict[str, MailStore]
) -> Iterator[Pop3Server]:
    users = {name: (PASSWORD, store) for name, store in stores.items()}
    with Pop3Server(server_ssl_context, users) as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Cli:
    return make_cli(
        tmp_path,
        {
            "PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring",
            "TEST_KEYRING_PASSWORD": PASSWORD,
        },
    )


def _account(
    server: Pop3Server, ca_file: Path, name: str, user: str, destination: Path, keep: bool = True
) -> str:
    return account_toml(
        name,
        host=server.host,
        port=server.port,
        username=user,
        destination=destination,
        keep=keep,
        ca_file=ca_file,
    )


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Daemons a test started, killed if the test failed before stopping them."""
    started: list[Running] = []
    yield started
    for daemon in started:
        daemon.stop()


def test_sigterm_mid_download_publishes_what_arrived_and_quits_cleanly(
    tmp_path: Path,
    home: Cli,
    server: Pop3Server,
    stores: dict[str, MailStore],
    ca_file: Path,
    running: list[Running],
) -> None:
    """Without pipelining nothing else is in flight: messages 1-2 land, are deleted, QUIT."""
    gate = Gate()
    server.faults = Faults(no_pipelining=True, hold_retr={2: gate})
    maildir = tmp_path / "Maildir"
    home.write_config(_account(server, ca_file, "work", "alice", maildir, keep=False))
    daemon = Running(home, "--every", "1s", "work")
    running.append(daemon)
    try:
        assert gate.reached.wait(WAIT), "the daemon never asked for message 2"
        daemon.signal(signal.SIGTERM)
        daemon.expect(r"^SIGTERM: stopping after the current message", "err")
    finally:
        gate.set()
    assert daemon.finish() == 0, daemon.seen
    assert sorted(read_messages(maildir, "maildir")) == MESSAGES[:2]
    assert [m for _, m in stores["alice"].messages()] == MESSAGES[2:]
    session = server.transcript[-1]
    assert session[-3:] == ["DELE 1", "DELE 2", "QUIT"]
    assert daemon.stdout_matching(r"^work: ") == [
        daemon.stdout_matching(r"^work: 2 new messages \(\d+ bytes\), 5 on server, 2 deleted$")[0]
    ]
    assert daemon.stderr_lines()[-1] == "stopped by SIGTERM"

    server.faults = Faults()
    again = home.run("sync")  # one run picks up where the stop left off, nothing twice
    assert again.code == 0, again.output
    assert sorted(read_messages(maildir, "maildir")) == MESSAGES
    assert stores["alice"].messages() == []


def test_sigterm_with_retrs_in_flight_ends_without_quit_and_loses_nothing(
    tmp_path: Path,
    home: Cli,
    server: Pop3Server,
    stores: dict[str, MailStore],
    ca_file: Path,
    running: list[Running],
) -> None:
    """Pipelined RETRs 2-5 are unanswered when message 1 is done: no QUIT, so this session's
    DELE is not committed; the next run deletes message 1 without downloading it again."""
    gate = Gate()
    server.faults = Faults(hold_retr={1: gate})
    maildir = tmp_path / "Maildir"
    home.write_config(_account(server, ca_file, "work", "alice", maildir, keep=False))
    daemon = Running(home, "--every", "1s")
    running.append(daemon)
    try:
        assert gate.reached.wait(WAIT), "the daemon never asked for message 1"
        daemon.signal(signal.SIGTERM)
        daemon.expect(r"^SIGTERM: stopping", "err")
    finally:
        gate.set()
    assert daemon.finish() == 0, daemon.seen
    assert read_messages(maildir, "maildir") == MESSAGES[:1]
    assert [m for _, m in stores["alice"].messages()] == MESSAGES  # nothing committed
    assert "QUIT" not in server.transcript[-1]
    assert daemon.stdout_matching(r"^work: ") == [
        daemon.stdout_matching(r"^work: 1 new message \(\d+ bytes\), 5 on server$")[0]
    ]

    server.faults = Faults()
    again = home.run("sync")
    assert again.code == 0, again.output
    assert sorted(read_messages(maildir, "maildir")) == MESSAGES
    assert stores["alice"].messages() == []
    assert "RETR 1" not in server.transcript[-1]
    assert "DELE 1" in server.transcript[-1]


def test_a_second_sigterm_stops_at_once_with_130(
    tmp_path: Path,
    home: Cli,
    server: Pop3Server,
    stores: dict[str, MailStore],
    ca_file: Path,
    running: list[Running],
) -> None:
    gate = Gate()
    server.faults = Faults(hold_retr={1: gate})
    maildir = tmp_path / "Maildir"
    home.write_config(_account(server, ca_file, "work", "alice", maildir, keep=False))
    daemon = Running(home, "--every", "1s")
    running.append(daemon)
    try:
        assert gate.reached.wait(WAIT)
        daemon.signal(signal.SIGTERM)
        daemon.expect(r"^SIGTERM: stopping", "err")
        daemon.signal(signal.SIGTERM)
        assert daemon.finish() == 130, daemon.seen
    finally:
        gate.set()
    assert daemon.stderr_lines()[-2:] == [  # what Ctrl-C prints without --every
        "interrupted: work: 0 of 5 messages saved, nothing deleted",
        "run sync again to continue",
    ]
    assert len(stores["alice"].messages()) == 5
    server.faults = Faults()
    assert home.run("sync").code == 0
    assert sorted(read_messages(maildir, "maildir")) == MESSAGES


def test_sighup_rereads_the_config_and_keeps_the_old_one_when_broken(
    tmp_path: Path, home: Cli, server: Pop3Server, ca_file: Path, running: list[Running]
) -> None:
    work = _account(server, ca_file, "work", "alice", tmp_path / "work")
    home.write_config(work)
    daemon = Running(home, "--every", "1s")
    running.append(daemon)
    assert daemon.expect("warning", "err") == (
        "warning: syncing every 1s: servers may refuse logins this frequent "
        "(most expect a few minutes between them)"
    )
    daemon.expect(r"^work: 5 new messages", "out")

    home.write_config(work + _account(server, ca_file, "home", "bob", tmp_path / "home"))
    daemon.signal(signal.SIGHUP)
    daemon.expect(r"^configuration re-read; accounts: work, home$", "err")
    daemon.expect(r"^home: 2 new messages", "out")
    assert len(read_messages(tmp_path / "home", "maildir")) == 2

    home.write_config(work + "[accounts.home]\nhots = 1\nport = 0\n")
    daemon.signal(signal.SIGHUP)
    error = daemon.expect(r"^error: ", "err")
    assert error == (
        f"error: {home.config_path}: 5 problems in the configuration (still using the "
        "configuration read before; pop3s-fetch config check lists every problem)"
    )
    # The old configuration goes on: both accounts are synced again, nothing twice. (Twice
    # each, since a line of the round before the error may be read after it.)
    daemon.skip("out")
    for _ in range(2):
        daemon.expect(r"^home: no new mail, 2 on server$", "out")
        daemon.expect(r"^work: no new mail, 5 on server$", "out")

    daemon.signal(signal.SIGINT)
    assert daemon.finish() == 0, daemon.seen
    assert daemon.stderr_lines()[-1] == "stopped by SIGINT"
    errors = [line for line in daemon.stderr_lines() if line.startswith(("error", " "))]
    assert errors == [error]  # one line, not the problem list
    assert len(read_messages(tmp_path / "work", "maildir")) == 5


def test_a_signal_while_sleeping_exits_at_once(
    tmp_path: Path, home: Cli, server: Pop3Server, ca_file: Path, running: list[Running]
) -> None:
    home.write_config(_account(server, ca_file, "work", "alice", tmp_path / "work"))
    daemon = Running(home, "--every", "1h")
    running.append(daemon)
    daemon.expect(r"^work: 5 new messages", "out")
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0  # within WAIT, not an hour
    assert daemon.stderr_lines()[-2:] == [
        "SIGTERM: stopping after the current message (send it again to stop at once)",
        "stopped by SIGTERM",
    ]
    assert not any(line.startswith("warning") for line in daemon.stderr_lines())


def test_a_failing_account_backs_off_and_the_others_go_on(
    tmp_path: Path, home: Cli, server: Pop3Server, ca_file: Path, running: list[Running]
) -> None:
    """The journal dialect too: $JOURNAL_STREAM names stderr, so lines carry priorities."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the Maildir should be\n")
    home.write_config(
        _account(server, ca_file, "good", "alice", tmp_path / "good")
        + _account(server, ca_file, "bad", "bob", blocked)
    )
    daemon = Running(home, "--every", "1s", journal=True)
    running.append(daemon)
    daemon.expect(r"^<3>error: bad: ", "err")
    daemon.expect(r"^<6>bad: next try in 1s \(1 failure in a row\)$", "err")
    daemon.expect(r"^<6>bad: next try in 2s \(2 failures in a row\)$", "err")
    blocked.unlink()
    daemon.expect(r"^<6>bad: working again after 2 failures$", "err")
    daemon.expect(r"^<6>bad: 2 new messages", "out")
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0
    # The good account kept its rounds (one a second) while the bad one waited 1s, then 2s.
    assert len(daemon.stdout_matching(r"^<6>good: ")) >= 4
    assert len(read_messages(tmp_path / "good", "maildir")) == 5
    assert len(read_messages(blocked, "maildir")) == 2


def test_a_poll_after_a_clean_one_connects_before_it_opens_the_state(
    tmp_path: Path, home: Cli, server: Pop3Server, ca_file: Path, running: list[Running]
) -> None:
    """Seen from the server: a poll that fails opening its destination has already connected
    (the kept hints let it start before the state and the destination are opened); it
    drops that session without a login, and the next poll, careful again, delivers."""
    work = tmp_path / "work"
    home.write_config(_account(server, ca_file, "work", "alice", work))
    daemon = Running(home, "--every", "1s")
    running.append(daemon)
    daemon.expect(r"^work: 5 new messages", "out")
    daemon.expect(r"^work: no new mail, 5 on server$", "out")
    work.rename(tmp_path / "moved")
    work.write_text("a file where the Maildir should be\n")
    daemon.expect(r"^error: work: ", "err")
    work.unlink()
    (tmp_path / "moved").rename(work)
    daemon.expect(r"^work: working again after 1 failure$", "err")
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0
    not_logged_in = [s for s in server.transcript if not any(c.startswith("USER") for c in s)]
    assert len(not_logged_in) == 1, server.transcript  # the failing poll's, dropped unused
    assert len(read_messages(work, "maildir")) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "0"], "Error: Invalid value for '--every': the interval must be at least 1s"),
        (
            ["--every", "5 minutes"],
            "Error: Invalid value for '--every': expected a whole number of seconds or a "
            "duration such as 30s, 5m, 1h; got '5 minutes'",
        ),
        (["--every", "1m", "--json"], "Error: --json cannot be combined with --every"),
        (["--every", "1m", "--dry-run"], "Error: --dry-run cannot be combined with --every"),
    ],
)
def test_a_bad_interval_is_a_usage_error(home: Cli, args: list[str], message: str) -> None:
    result = home.run("sync", *args)
    assert result.code == 64
    assert message in result.stderr.splitlines()[-1]


@pytest.mark.dovecot
def test_rounds_against_dovecot_deliver_new_mail_once_and_delete_it(
    tmp_path: Path, dovecot: DovecotServer, running: list[Running]
) -> None:
    """Mail that arrives between rounds is picked up by the next one, each message once."""
    first, later = corpus()[:3], corpus()[3:6]
    user = dovecot.add_user(first)
    cli = make_cli(
        tmp_path,
        {
            "PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring",
            "TEST_KEYRING_PASSWORD": user.password,
        },
    )
    maildir = tmp_path / "Maildir"
    cli.write_config(
        account_toml(
            "work",
            host=dovecot.host,
            port=dovecot.port,
            username=user.name,
            destination=maildir,
            keep=False,
            ca_file=dovecot.ca_file,
        )
    )
    daemon = Running(cli, "--every", "1s")
    running.append(daemon)
    daemon.expect(r"^work: 3 new messages \(.*\), 3 on server, 3 deleted$", "out")
    user.add_messages(later)
    delivered = 3
    while delivered < 6:  # a round may list the new mail while it is still being added
        delivered += int(daemon.expect(r"^work: \d+ new messages? ", "out").split()[1])
    assert delivered == 6
    daemon.expect(r"^work: no new mail, 0 on server$", "out")
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0, daemon.seen
    assert sorted(read_messages(maildir, "maildir")) == sorted(
        as_stored(m, "maildir") for m in first + later
    )
    assert user.messages_on_server() == []
