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
import itertools
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
from typing import TypeVar

import pytest

from pop3s_fetch.demo.server import Faults
from tests.support.cli import Result
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.mail import corpus
from tests.support.rig import BuiltinMaildrop, CliRig, Login, Maildrop, builtin_login, serve

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


# --- running the command ----------------------------------------------------------------

M = TypeVar("M", bound=Maildrop)


class CrashRig(CliRig[M]):
    """A :class:`CliRig` whose runs can be started in the background, watched and killed."""

    def landed_so_far(self) -> list[bytes]:
        """:meth:`landed`, also when a kill left the Maildir created only in part."""
        subdirectories = (self.destination / name for name in ("new", "cur"))
        if self.fmt == "maildir" and not all(path.is_dir() for path in subdirectories):
            return []
        return self.landed()

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


class DovecotRigs:
    """Fresh Dovecot users and CLI homes for one format x keep, on the session's Dovecot."""

    def __init__(self, dovecot: DovecotServer, root: Path, fmt: str, keep: bool) -> None:
        self.dovecot = dovecot
        self.root = root
        self.fmt = fmt
        self.keep = keep
        self._homes = 0

    def setup(self) -> CrashRig[DovecotUser]:
        """A Dovecot user holding the crash corpus, and a CLI home configured for it."""
        user = self.dovecot.add_user(CRASH_CORPUS)
        self._homes += 1
        login = Login(
            self.dovecot.host, self.dovecot.port, user.name, user.password, self.dovecot.ca_file
        )
        return CrashRig.configure(
            self.root / f"run{self._homes}",
            user,
            CRASH_CORPUS,
            login,
            name=ACCOUNT,
            fmt=self.fmt,
            keep=self.keep,
        )

    def measure_full_sync(self) -> float:
        """Seconds a whole sync of the corpus takes, start to exit (an uncounted run)."""
        rig = self.setup()
        started = time.monotonic()
        code = rig.start_sync().wait(timeout=120)
        duration = time.monotonic() - started
        assert code == 0, rig.background_stderr()
        assert digests(rig.landed()) == digests(rig.expected())
        return duration

    def kill_at(self, trial: Trial, rig: CrashRig[DovecotUser]) -> None:
        started = time.monotonic()
        process = rig.start_sync()
        try:
            remaining = max(0.0, started + trial.delay - time.monotonic())
            trial.exit_code = process.wait(timeout=remaining)
            trial.ran_for = time.monotonic() - started
        except subprocess.TimeoutExpired:
            trial.killed = sigkill(process)
            trial.exit_code = process.returncode
        if trial.killed:
            trial.moment = self._moment(rig)

    def _moment(self, rig: CrashRig[DovecotUser]) -> str:
        """Roughly where the kill landed, judged from what it left in the destination."""
        if digests(rig.landed_so_far()) == digests(rig.expected()):
            return "after delivery"
        if rig.temporary_files() or rig.journal_rows():
            return "while downloading"
        return "before downloading"


def check_recovery(tally: Tally, trial: Trial, rig: CrashRig[DovecotUser]) -> None:
    """The run after the kill completes the sync: all mail exactly once, nothing left over."""
    context = tally.context(trial)
    finished = rig.recover(context)
    assert finished.code == 0, f"{context}: the run after the kill failed: {finished.output}"
    expected = digests(rig.expected())
    assert digests(rig.landed()) == expected, f"{context}: a message is damaged, missing or twice"
    on_server = digests(rig.on_server())
    assert on_server == digests(rig.expected_on_server()), (
        f"{context}: {len(on_server)} of {len(CRASH_CORPUS)} messages on the server"
    )
    left = [path.name for path in rig.temporary_files()]
    assert left == [], f"{context}: temporary files or locks left behind"


@pytest.mark.dovecot
@pytest.mark.slow
def test_sigkill_at_random_instants_then_sync_to_completion(
    dovecot: DovecotServer, tmp_path: Path, crash_seed: int, fmt: str, keep: bool
) -> None:
    rng = random.Random(f"{crash_seed}:{fmt}:{keep}")
    rigs = DovecotRigs(dovecot, tmp_path, fmt, keep)
    tally = Tally(crash_seed, fmt, keep, rigs.measure_full_sync())
    window = tally.full_sync
    for number in range(TRIALS):
        trial = Trial(number, rng.uniform(0.0, window), window)
        tally.trials.append(trial)
        rig = rigs.setup()
        rigs.kill_at(trial, rig)
        assert trial.killed or trial.exit_code == 0, (
            f"{tally.context(trial)}: the sync failed on its own: {rig.background_stderr()}"
        )
        if not trial.killed:
            # A whole sync done faster than measured (the measurement ran on a busy machine):
            # narrow the window so that the later kills still land inside syncs.
            window = min(window, trial.ran_for)
        check_recovery(tally, trial, rig)
    print(tally.summary())
    assert any(trial.killed for trial in tally.trials), (
        f"no kill landed while the sync ran: {tally.summary()}"
    )


# --- kills at exact points, against the built-in server ---------------------------------------

LOCAL_USER = "alice"


Local = CrashRig[BuiltinMaildrop]
LocalFactory = Callable[[list[bytes], str, bool], Local]


@pytest.fixture
def local(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> Iterator[LocalFactory]:
    """Call with (messages, fmt, keep) to get a running built-in server and a home for it."""
    homes = itertools.count(1)
    with contextlib.ExitStack() as servers:

        def start(messages: list[bytes], fmt: str, keep: bool) -> Local:
            maildrop = servers.enter_context(
                serve(server_ssl_context, messages, user=LOCAL_USER, password=PASSWORD)
            )
            return CrashRig.configure(
                tmp_path / f"local{next(homes)}",
                maildrop,
                messages,
                builtin_login(maildrop, ca_file),
                name=ACCOUNT,
                fmt=fmt,
                keep=keep,
            )

        yield start


def check_complete(rig: Local) -> None:
    """Every message once in the destination, and the server as ``keep`` leaves it."""
    assert digests(rig.landed()) == digests(rig.expected())
    assert digests(rig.on_server()) == digests(rig.expected_on_server())


def freeze_mid_download(local: LocalFactory, fmt: str) -> tuple[Local, subprocess.Popen[bytes]]:
    """Start a sync and SIGSTOP it while it has temporary files of which nothing is journalled.

    Publishing journals the whole batch, so "a temporary file exists and the state store is
    empty", checked while the child is stopped, proves every temporary file unjournalled.
    A child caught just too late is killed, and another tried with a fresh server and home.
    """
    for _ in range(FREEZE_ATTEMPTS):
        rig = local(CRASH_CORPUS, fmt, False)
        process = rig.start_sync()
        wait_until(rig.temporary_files, "a temporary file", process)
        process.send_signal(signal.SIGSTOP)
        if rig.temporary_files() and rig.journal_rows() == 0:
            return rig, process
        sigkill(process)
    pytest.fail(f"no run was caught mid-download in {FREEZE_ATTEMPTS} attempts")


def test_killed_mid_download_leaves_no_temporary_file(local: LocalFactory, fmt: str) -> None:
    rig, process = freeze_mid_download(local, fmt)
    assert sigkill(process)
    rig.maildrop.server.wait_idle()
    assert digests(rig.on_server()) == digests(CRASH_CORPUS), "a DELE was committed without QUIT"

    recovered = rig.recover()
    assert recovered.code == 0, recovered.output
    check_complete(rig)
    assert rig.temporary_files() == []


def test_killed_holding_the_mbox_dotlock_does_not_block_the_next_run(
    local: LocalFactory,
) -> None:
    rig = local(corpus(), "mbox", True)
    mbox = rig.destination
    mbox.parent.mkdir(parents=True)
    dotlock = rig.dotlock
    # Holding the mbox's flock makes the run stop between taking the dotlock and the flock.
    with mbox.open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        process = rig.start_sync()
        holds_dotlock = f"{process.pid}\n".encode()
        wait_until(lambda: read_if_present(dotlock) == holds_dotlock, "the dotlock", process)
        assert sigkill(process)
    rig.maildrop.server.wait_idle()

    recovered = rig.recover("killed holding the dotlock")
    assert recovered.code == 0, recovered.output
    check_complete(rig)
    assert rig.temporary_files() == []


def test_killed_before_its_dotlock_was_linked_leaves_nothing_behind(
    local: LocalFactory,
) -> None:
    # The dotlock is written in full under a scratch name and linked into place, so a kill
    # can leave that scratch file (named like our spools) but never an empty dotlock. This
    # sets up the scratch file of a dead run, as no outside signal can hit that window.
    rig = local(corpus(), "mbox", True)
    mbox = rig.destination
    mbox.parent.mkdir(parents=True)
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        assert gone.wait(timeout=10) == 0
    scratch = mbox.with_name(f".{mbox.name}.pop3s-fetch.{ACCOUNT}.{gone.pid}.lock-in-progress")
    scratch.write_text(f"{gone.pid}\n")

    recovered = rig.recover("a scratch dotlock", timeout=LOCK_LEFTOVER_TIMEOUT)
    assert recovered.code == 0, recovered.output
    check_complete(rig)
    assert rig.temporary_files() == []
    assert not scratch.exists()
    assert not rig.dotlock.exists()


def test_killed_in_quit_after_delivery_deletes_without_downloading_again(
    local: LocalFactory, fmt: str
) -> None:
    messages = corpus()
    rig = local(messages, fmt, False)
    rig.maildrop.server.faults = Faults(hang_on=frozenset({"QUIT"}))
    process = rig.start_sync()
    # QUIT goes out only after every message is journalled, durable and marked delivered.
    wait_until(lambda: any("QUIT" in s for s in rig.maildrop.server.transcript), "QUIT", process)
    assert sigkill(process), "the sync ended before it was killed"
    rig.maildrop.server.wait_idle()
    killed_session = rig.maildrop.server.transcript[-1]
    numbers = range(1, len(messages) + 1)
    assert [c for c in killed_session if c.startswith("RETR")] == [f"RETR {n}" for n in numbers]
    assert digests(rig.on_server()) == digests(messages), (
        "deletions were committed without a QUIT reply"
    )
    assert digests(rig.landed()) == digests(rig.expected())

    rig.maildrop.server.faults = Faults()
    recovered = rig.recover()
    assert recovered.code == 0, recovered.output
    assert recovered.stdout == (
        f"{ACCOUNT}: no new mail, {len(messages)} on server, {len(messages)} deleted\n"
    )
    session = rig.maildrop.server.transcript[-1]
    assert [c for c in session if c.startswith("RETR")] == []
    assert sorted(c for c in session if c.startswith("DELE")) == sorted(
        f"DELE {n}" for n in numbers
    )
    assert session[-1] == "QUIT"
    check_complete(rig)
    assert rig.temporary_files() == []
