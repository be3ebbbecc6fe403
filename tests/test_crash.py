"""Crash safety: ``pop3s-fetch sync`` SIGKILLed at any instant loses and duplicates nothing.

The random trials run the real command against the real Dovecot and kill it at an instant
drawn uniformly from [0, T], where T is how long a whole sync of the same mail took just
before; a plain run then finishes the job, and every message must be in the destination
exactly once, byte for byte, with no temporary file, spool or lock left behind (and, with
keep = false, nothing left on the server). The seed is printed with every failure; set
``POP3S_FETCH_CRASH_SEED`` to draw the same instants again (timing still varies a little).

The deterministic tests kill, against the built-in server, at exact points the random ones
hit only by luck: mid-download, holding the mbox dotlock, and stuck in QUIT after every
delivery. They find those points by watching the file system, the state store and the
server's transcript, never by sleeping. One window no outside signal can hit at will (between
creating the mbox dotlock and writing the pid into it) is set up by writing what it leaves.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import secrets
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults, MailStore, Pop3Server
from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli, Result, account_toml, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import as_stored, corpus, leftovers

SEED_VARIABLE = "POP3S_FETCH_CRASH_SEED"
TRIALS = 6  # per format x keep: 24 in all
ACCOUNT = "crash"
PASSWORD = "crash-test-password"
#: How long a test waits for the subprocess to reach a state it is expected to reach soon.
REACH_TIMEOUT = 20.0
#: A run after a crash that has not finished in this time is taken to be stuck.
RECOVERY_TIMEOUT = 15.0
#: Attempts at freezing a run inside the download window before the test gives up.
FREEZE_ATTEMPTS = 5
POLL_INTERVAL = 0.005
#: A healthy run needs well under a second here; a lock it waits out would cost 30 s.
LOCK_LEFTOVER_TIMEOUT = 6.0

# --- the mail ---------------------------------------------------------------------------


def crash_corpus() -> list[bytes]:
    """About 40 distinct messages, 3 of them 1-3 MB, so a sync lasts long enough to be hit.

    Fixed (seed 0): only the kill instants vary from run to run, never the mail.
    """
    rng = random.Random(0)
    messages = corpus()
    for number in range(26):
        lines = [_text_line(rng, rng.randrange(20, 200)) for _ in range(rng.randrange(5, 400))]
        messages.append(_message(f"small {number}", lines))
    for number, megabytes in enumerate((1, 2, 3)):
        lines = [_text_line(rng, 76) for _ in range(megabytes * 1_000_000 // 77)]
        messages.append(_message(f"large {number}", lines))
    return messages


_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789 .,-From"
#: Maps every byte value onto the alphabet, so random bytes become text in one call.
_TO_TEXT = bytes(_ALPHABET[value % len(_ALPHABET)] for value in range(256))


def _text_line(rng: random.Random, length: int) -> bytes:
    return rng.randbytes(length).translate(_TO_TEXT)


def _message(subject: str, lines: list[bytes]) -> bytes:
    header = f"From: crash@example.org\nSubject: {subject}\n\n".encode("ascii")
    # Start some lines with "From " and "." so that quoting and dot-stuffing are crossed too.
    body = b"".join(
        (b"From " if index % 50 == 7 else b"." if index % 50 == 9 else b"") + line + b"\n"
        for index, line in enumerate(lines)
    )
    return header + body


CRASH_CORPUS = crash_corpus()


def digests(messages: Iterable[bytes]) -> list[str]:
    """Sorted "size:sha256" of each message: compares like the bytes, but fails legibly."""
    return sorted(f"{len(m)}:{hashlib.sha256(m).hexdigest()[:16]}" for m in messages)


def expected_in(fmt: str, messages: Iterable[bytes]) -> list[str]:
    return digests(as_stored(message, fmt) for message in messages)


def temporary_files(destination: Path, fmt: str) -> list[Path]:
    """:func:`leftovers`, also before the destination's directory exists."""
    directory = destination if fmt == "maildir" else destination.parent
    return leftovers(destination, fmt) if directory.exists() else []


# --- running the command ----------------------------------------------------------------


def keyring_env() -> dict[str, str]:
    """The password reaches the child through the test keyring backend, never argv."""
    return {
        "PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring",
        "TEST_KEYRING_PASSWORD": PASSWORD,
    }


@dataclass
class Home:
    """One CLI home configured for one account, and where that account's mail lands."""

    cli: Cli
    destination: Path
    fmt: str

    @property
    def state_file(self) -> Path:
        return self.cli.state_dir / f"{ACCOUNT}.sqlite3"

    def landed(self) -> list[str]:
        return digests(sorted(read_messages(self.destination, self.fmt)))

    def landed_so_far(self) -> list[str]:
        """:meth:`landed`, also when a kill left the Maildir created only in part."""
        subdirectories = (self.destination / name for name in ("new", "cur"))
        if self.fmt == "maildir" and not all(path.is_dir() for path in subdirectories):
            return []
        return self.landed()

    def temporary_files(self) -> list[Path]:
        return temporary_files(self.destination, self.fmt)

    @property
    def dotlock(self) -> Path:
        return self.destination.with_name(self.destination.name + ".lock")

    def journal_rows(self) -> int:
        """Rows in the state store (pending or delivered); 0 before the first is written."""
        if not self.state_file.exists():
            return 0
        uri = f"{self.state_file.as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=REACH_TIMEOUT)) as db:
            try:
                (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
            except sqlite3.OperationalError:  # the table is not created yet
                return 0
        return int(count)

    def start_sync(self) -> subprocess.Popen[bytes]:
        """``pop3s-fetch sync`` in the background; stderr goes to a file for failure texts."""
        with (self.cli.home / "background.stderr").open("ab") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "pop3s_fetch", "sync"],
                env=self.cli.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def background_stderr(self) -> str:
        path = self.cli.home / "background.stderr"
        return path.read_text() if path.exists() else ""

    def recover(self, context: str = "", timeout: float = RECOVERY_TIMEOUT) -> Result:
        """The plain run after a crash; one still running after ``timeout`` fails the test.

        A stuck run is sent SIGABRT, so that faulthandler shows in the failure where it was.
        """
        process = subprocess.Popen(
            [sys.executable, "-m", "pop3s_fetch", "sync"],
            env={**self.cli.env, "PYTHONFAULTHANDLER": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"{context}: the run after the crash was still running after {timeout:g} s"
                f" (mbox dotlock: {read_if_present(self.dotlock)!r}); its stdout: {stdout!r};"
                f" its stderr and threads:\n{stderr[-6000:]}"
            )
        return Result(["sync"], process.returncode, stdout, stderr)


def read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def make_home(
    directory: Path, *, host: str, port: int, username: str, fmt: str, keep: bool, ca_file: Path
) -> Home:
    directory.mkdir()
    cli = make_cli(directory, keyring_env())
    destination = cli.home / ("Maildir" if fmt == "maildir" else "mail/inbox")
    cli.write_config(
        account_toml(
            ACCOUNT,
            host=host,
            port=port,
            username=username,
            destination=destination,
            fmt=fmt,
            keep=keep,
            ca_file=ca_file,
        )
    )
    return Home(cli, destination, fmt)


def sigkill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the child if it is still running; True if the signal is what ended it.

    ``poll()`` first because a signal sent to an exited child is silently dropped; the exit
    status then tells whether the child exited on its own between that poll and the kill.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait() == -signal.SIGKILL


def wait_until(
    condition: Callable[[], object], what: str, process: subprocess.Popen[bytes]
) -> None:
    """Poll ``condition`` until truthy; fail if the child exits first or the deadline passes."""
    deadline = time.monotonic() + REACH_TIMEOUT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the sync exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            sigkill(process)
            pytest.fail(f"the sync did not get to {what} within {REACH_TIMEOUT:g} s")
        time.sleep(POLL_INTERVAL)  # polling another process's progress, with a deadline


@pytest.fixture(params=["maildir", "mbox"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[True, False], ids=["keep", "delete"])
def keep(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# --- random kills against Dovecot -----------------------------------------------------------


@dataclass
class Trial:
    """One kill and what it left behind, for the failure message and the tally."""

    number: int
    delay: float  # seconds after the start, drawn from [0, window]
    window: float
    killed: bool = False
    exit_code: int | None = None
    ran_for: float = 0.0  # when it exited before the kill: how long it took
    moment: str = ""

    def __str__(self) -> str:
        ended = f"killed {self.moment}" if self.killed else f"it had exited {self.exit_code}"
        return f"trial {self.number}: kill at {self.delay:.3f} of {self.window:.3f} s, {ended}"


@dataclass
class Tally:
    """Every trial of one format x keep."""

    seed: int
    fmt: str
    keep: bool
    full_sync: float
    trials: list[Trial] = field(default_factory=list)

    def header(self) -> str:
        return (
            f"{SEED_VARIABLE}={self.seed} ({self.fmt}, keep={self.keep}, "
            f"full sync {self.full_sync:.3f} s)"
        )

    def context(self, trial: Trial) -> str:
        return f"{self.header()}, {trial}"

    def summary(self) -> str:
        return f"{self.header()}: " + "; ".join(str(trial) for trial in self.trials)


@pytest.fixture(scope="module")
def crash_seed() -> int:
    """The run's seed: from the environment to reproduce a failure, else a fresh one."""
    text = os.environ.get(SEED_VARIABLE, "")
    return int(text) if text else secrets.randbits(32)


class DovecotRig:
    """Fresh Dovecot users and CLI homes for one format x keep, on the session's Dovecot."""

    def __init__(self, dovecot: DovecotServer, root: Path, fmt: str, keep: bool) -> None:
        self.dovecot = dovecot
        self.root = root
        self.fmt = fmt
        self.keep = keep
        self._homes = 0

    def setup(self) -> tuple[Home, DovecotUser]:
        """A Dovecot user holding the crash corpus, and a CLI home configured for it."""
        user = self.dovecot.add_user(CRASH_CORPUS)
        self._homes += 1
        home = make_home(
            self.root / f"run{self._homes}",
            host=self.dovecot.host,
            port=self.dovecot.port,
            username=user.name,
            fmt=self.fmt,
            keep=self.keep,
            ca_file=self.dovecot.ca_file,
        )
        home.cli.env["TEST_KEYRING_PASSWORD"] = user.password
        return home, user

    def measure_full_sync(self) -> float:
        """Seconds a whole sync of the corpus takes, start to exit (an uncounted run)."""
        home, _ = self.setup()
        started = time.monotonic()
        code = home.start_sync().wait(timeout=120)
        duration = time.monotonic() - started
        assert code == 0, home.background_stderr()
        assert home.landed() == expected_in(self.fmt, CRASH_CORPUS)
        return duration

    def kill_at(self, trial: Trial, home: Home) -> None:
        started = time.monotonic()
        process = home.start_sync()
        try:
            remaining = max(0.0, started + trial.delay - time.monotonic())
            trial.exit_code = process.wait(timeout=remaining)
            trial.ran_for = time.monotonic() - started
        except subprocess.TimeoutExpired:
            trial.killed = sigkill(process)
            trial.exit_code = process.returncode
        if trial.killed:
            trial.moment = self._moment(home)

    def _moment(self, home: Home) -> str:
        """Roughly where the kill landed, judged from what it left in the destination."""
        if home.landed_so_far() == expected_in(self.fmt, CRASH_CORPUS):
            return "after delivery"
        if home.temporary_files() or home.journal_rows():
            return "while downloading"
        return "before downloading"


def check_recovery(tally: Tally, trial: Trial, home: Home, user: DovecotUser) -> None:
    """The run after the kill completes the sync: all mail exactly once, nothing left over."""
    context = tally.context(trial)
    finished = home.recover(context)
    assert finished.code == 0, f"{context}: the run after the kill failed: {finished.output}"
    expected = expected_in(tally.fmt, CRASH_CORPUS)
    assert home.landed() == expected, f"{context}: a message is damaged, missing or twice"
    on_server = digests(user.messages_on_server())
    assert on_server == ([] if not tally.keep else digests(CRASH_CORPUS)), (
        f"{context}: {len(on_server)} of {len(CRASH_CORPUS)} messages on the server"
    )
    left = [path.name for path in home.temporary_files()]
    assert left == [], f"{context}: temporary files or locks left behind"


@pytest.mark.dovecot
@pytest.mark.slow
def test_sigkill_at_random_instants_then_sync_to_completion(
    dovecot: DovecotServer, tmp_path: Path, crash_seed: int, fmt: str, keep: bool
) -> None:
    rng = random.Random(f"{crash_seed}:{fmt}:{keep}")
    rig = DovecotRig(dovecot, tmp_path, fmt, keep)
    tally = Tally(crash_seed, fmt, keep, rig.measure_full_sync())
    window = tally.full_sync
    for number in range(TRIALS):
        trial = Trial(number, rng.uniform(0.0, window), window)
        tally.trials.append(trial)
        home, user = rig.setup()
        rig.kill_at(trial, home)
        assert trial.killed or trial.exit_code == 0, (
            f"{tally.context(trial)}: the sync failed on its own: {home.background_stderr()}"
        )
        if not trial.killed:
            # A whole sync done faster than measured (the measurement ran on a busy machine):
            # narrow the window so that the later kills still land inside syncs.
            window = min(window, trial.ran_for)
        check_recovery(tally, trial, home, user)
    print(tally.summary())
    assert any(trial.killed for trial in tally.trials), (
        f"no kill landed while the sync ran: {tally.summary()}"
    )


# --- kills at exact points, against the built-in server ---------------------------------------

LOCAL_USER = "alice"


@dataclass
class Local:
    """The built-in server in this process, with one maildrop, and a home configured for it."""

    server: Pop3Server
    store: MailStore
    home: Home
    originals: list[bytes]

    def on_server(self) -> list[str]:
        return digests(message for _, message in self.store.messages())

    def expected(self) -> list[str]:
        return expected_in(self.home.fmt, self.originals)


LocalFactory = Callable[[list[bytes], str, bool], Local]


@pytest.fixture
def local(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> Iterator[LocalFactory]:
    """Call with (messages, fmt, keep) to get a running built-in server and a home for it."""
    servers: list[Pop3Server] = []

    def start(messages: list[bytes], fmt: str, keep: bool) -> Local:
        store = MailStore(messages)
        server = Pop3Server(server_ssl_context, {LOCAL_USER: (PASSWORD, store)})
        server.start()
        servers.append(server)
        home = make_home(
            tmp_path / f"local{len(servers)}",
            host=server.host,
            port=server.port,
            username=LOCAL_USER,
            fmt=fmt,
            keep=keep,
            ca_file=ca_file,
        )
        return Local(server, store, home, list(messages))

    yield start
    for server in servers:
        server.stop()


def check_complete(local: Local, *, keep: bool) -> None:
    """Every message once in the destination, and the server as ``keep`` leaves it."""
    assert local.home.landed() == local.expected()
    assert local.on_server() == ([] if not keep else digests(local.originals))


def freeze_mid_download(local: LocalFactory, fmt: str) -> tuple[Local, subprocess.Popen[bytes]]:
    """Start a sync and SIGSTOP it while it has temporary files of which nothing is journalled.

    Publishing journals the whole batch, so "a temporary file exists and the state store is
    empty", checked while the child is stopped, proves every temporary file unjournalled.
    A child caught just too late is killed, and another tried with a fresh server and home.
    """
    for _ in range(FREEZE_ATTEMPTS):
        rig = local(CRASH_CORPUS, fmt, False)
        home = rig.home
        process = home.start_sync()
        wait_until(home.temporary_files, "a temporary file", process)
        process.send_signal(signal.SIGSTOP)
        if home.temporary_files() and home.journal_rows() == 0:
            return rig, process
        sigkill(process)
    pytest.fail(f"no run was caught mid-download in {FREEZE_ATTEMPTS} attempts")


def test_killed_mid_download_leaves_no_temporary_file(local: LocalFactory, fmt: str) -> None:
    rig, process = freeze_mid_download(local, fmt)
    assert sigkill(process)
    rig.server.wait_idle()
    assert rig.on_server() == digests(CRASH_CORPUS), "a DELE was committed without QUIT"

    recovered = rig.home.recover()
    assert recovered.code == 0, recovered.output
    check_complete(rig, keep=False)
    assert rig.home.temporary_files() == []


def test_killed_holding_the_mbox_dotlock_does_not_block_the_next_run(
    local: LocalFactory,
) -> None:
    rig = local(corpus(), "mbox", True)
    mbox = rig.home.destination
    mbox.parent.mkdir(parents=True)
    dotlock = rig.home.dotlock
    # Holding the mbox's flock makes the run stop between taking the dotlock and the flock.
    with mbox.open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        process = rig.home.start_sync()
        holds_dotlock = f"{process.pid}\n".encode()
        wait_until(lambda: read_if_present(dotlock) == holds_dotlock, "the dotlock", process)
        assert sigkill(process)
    rig.server.wait_idle()

    recovered = rig.home.recover("killed holding the dotlock")
    assert recovered.code == 0, recovered.output
    check_complete(rig, keep=True)
    assert rig.home.temporary_files() == []


def test_killed_before_its_dotlock_was_linked_leaves_nothing_behind(
    local: LocalFactory,
) -> None:
    # The dotlock is written in full under a scratch name and linked into place, so a kill
    # can leave that scratch file (named like our spools) but never an empty dotlock. This
    # sets up the scratch file of a dead run, as no outside signal can hit that window.
    rig = local(corpus(), "mbox", True)
    mbox = rig.home.destination
    mbox.parent.mkdir(parents=True)
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        assert gone.wait(timeout=10) == 0
    scratch = mbox.with_name(f".{mbox.name}.pop3s-fetch.{ACCOUNT}.{gone.pid}.lock-in-progress")
    scratch.write_text(f"{gone.pid}\n")

    recovered = rig.home.recover("a scratch dotlock", timeout=LOCK_LEFTOVER_TIMEOUT)
    assert recovered.code == 0, recovered.output
    check_complete(rig, keep=True)
    assert rig.home.temporary_files() == []
    assert not scratch.exists()
    assert not rig.home.dotlock.exists()


def test_killed_in_quit_after_delivery_deletes_without_downloading_again(
    local: LocalFactory, fmt: str
) -> None:
    messages = corpus()
    rig = local(messages, fmt, False)
    rig.server.faults = Faults(hang_on=frozenset({"QUIT"}))
    process = rig.home.start_sync()
    # QUIT goes out only after every message is journalled, durable and marked delivered.
    wait_until(lambda: any("QUIT" in s for s in rig.server.transcript), "QUIT", process)
    assert sigkill(process), "the sync ended before it was killed"
    rig.server.wait_idle()
    killed_session = rig.server.transcript[-1]
    numbers = range(1, len(messages) + 1)
    assert [c for c in killed_session if c.startswith("RETR")] == [f"RETR {n}" for n in numbers]
    assert rig.on_server() == digests(messages), "deletions were committed without a QUIT reply"
    assert rig.home.landed() == rig.expected()

    rig.server.faults = Faults()
    recovered = rig.home.recover()
    assert recovered.code == 0, recovered.output
    assert recovered.stdout == (
        f"{ACCOUNT}: no new mail, {len(messages)} on server, {len(messages)} deleted\n"
    )
    session = rig.server.transcript[-1]
    assert [c for c in session if c.startswith("RETR")] == []
    assert sorted(c for c in session if c.startswith("DELE")) == sorted(
        f"DELE {n}" for n in numbers
    )
    assert session[-1] == "QUIT"
    check_complete(rig, keep=False)
    assert rig.home.temporary_files() == []
