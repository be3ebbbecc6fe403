"""Crash safety: ``pop3s-fetch sync`` SIGKILLed at any instant loses and duplicates nothing.

The random trials run the real command against the real Dovecot and kill it at an instant
drawn uniformly from [0, T], where T is how long a whole sync of the same mail took just
before; a plain run then finishes the job, and every message must be in the destination
exactly once, byte for byte, with no temporary file, spool or lock left behind (and, with
keep = false, nothing left on the server). The seed is printed with every failure; set
``POP3S_FETCH_CRASH_SEED`` to draw the same instants again (timing still varies a little).
The same draw also runs with ``format = "mda"`` (procmail, where README allows exactly one
duplicate: the message in the MDA's hands when the kill came) and with ``keep = "30d"``
deleting mail delivered 31 days earlier while new mail arrives; each prints its figures.

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
import json
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
TRIALS = 6  # per mode: 24 for maildir/mbox x keep/delete, 12 with an MDA, 12 with retention
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


# --- random kills with an MDA, and with retention (issue 12) ---------------------------------
#
# The same draw of instants, against Dovecot, for the two ways issue 12 changes a sync: handing
# each message to a real MDA (procmail, delivering into a Maildir of its own) and deleting by
# age (keep = "30d") while new mail is fetched. Each test prints one line of figures (kills,
# where they landed, lost, duplicated, time) for the closing note; ``pytest -s`` shows them.

#: The wrapper pop3s-fetch runs as its MDA: it keeps the message it was given and the UIDL,
#: runs procmail on it, and writes its exit status once procmail is done, all under its own pid.
#: While a FIFO named ``hold`` exists, it waits for a line on it before running procmail.
#: Named ``start.PID`` / ``end.PID`` so that an MDA orphaned by the kill and the next run's
#: MDAs never write the same file. ``end`` appears by rename, so it is never read half-written.
MDA_WRAPPER = """#!/bin/sh
d="{directory}"
u="$1"; shift
cat > "$d/msg.$$"
printf '%s\\n' "$u" > "$d/start.$$"
[ -p "$d/hold" ] && read _ < "$d/hold"
"$@" < "$d/msg.$$"; s=$?
printf '%s\\n' "$s" > "$d/end.$$.part" && mv "$d/end.$$.part" "$d/end.$$"
exit $s
"""


def need_program(name: str) -> str:
    """The program's path; skipped when missing, unless the run requires every server."""
    import shutil

    found = shutil.which(name)
    if found is None:
        if os.environ.get("POP3S_FETCH_REQUIRE_SERVERS"):
            pytest.fail(f"{name} is not installed (apt-get install {name})")
        pytest.skip(f"{name} is not installed")
    return found


@dataclass(frozen=True)
class MdaCall:
    """One run of the MDA wrapper: the message it was handed, its UIDL, its exit status."""

    pid: int
    uidl: str
    message: bytes
    status: int | None  # None: still running


class MdaRig(CrashRig[DovecotUser]):
    """Delivers through procmail (behind :data:`MDA_WRAPPER`) into a Maildir of its own."""

    witness: Path

    def calls(self) -> dict[int, MdaCall]:
        """Every MDA run begun so far, by the wrapper's pid."""
        found = {}
        for start in self.witness.glob("start.*"):
            pid = int(start.name.split(".")[1])
            end = self.witness / f"end.{pid}"
            status = int(end.read_text()) if end.exists() else None
            message = (self.witness / f"msg.{pid}").read_bytes()
            found[pid] = MdaCall(pid, start.read_text().strip(), message, status)
        return found

    def pending(self) -> set[str]:
        """UIDLs journalled but not recorded as delivered: what the next run hands over again."""
        if not self.state_file.exists():
            return set()
        uri = f"{self.state_file.as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=REACH_TIMEOUT)) as db:
            try:
                rows = db.execute("SELECT uidl FROM messages WHERE status = 'pending'")
            except sqlite3.OperationalError:  # the table is not created yet
                return set()
            return {uidl for (uidl,) in rows}

    def wait_for_orphans(self) -> None:
        """Until every MDA begun has exited: a kill does not stop one (it has its own session).

        Begun means running, not only having written its start file: a kill can land after
        the wrapper was started and before it wrote anything, and it then goes on alone.
        """
        deadline = time.monotonic() + REACH_TIMEOUT
        wrapper = str(self.witness.parent / "wrap").encode()
        while any(call.status is None for call in self.calls().values()) or _running_with_argument(
            wrapper
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"an MDA was still running {REACH_TIMEOUT:g} s after the kill")
            time.sleep(POLL_INTERVAL)  # another process's progress, with a deadline


def _running_with_argument(argument: bytes) -> bool:
    """Whether a live process has ``argument`` in its command line (/proc, Linux)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if argument in cmdline.read_bytes().split(b"\0"):
                return True
        except OSError:  # gone meanwhile
            continue
    return False


class RetentionRig(CrashRig[DovecotUser]):
    """keep = "30d": what was delivered long ago goes from the server, the new mail stays."""

    kept: list[bytes]

    def expected_on_server(self) -> list[bytes]:
        return sorted(self.kept)


@pytest.fixture
def mail_home() -> Iterator[Path]:
    """A directory every user can reach (pytest's are 0700 for root), for procmail's Maildir."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="pop3s-fetch-crash-mda-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@dataclass
class Figures:
    """What the closing note quotes for one mode: one line, printed by the test."""

    mode: str
    trials: int = 0
    kills: int = 0
    lost: int = 0
    duplicated: int = 0
    #: Duplicates of a message the MDA was still delivering when the kill came / had delivered.
    duplicated_mda_running: int = 0
    duplicated_mda_exited: int = 0
    in_window: int = 0  # kills that left an MDA delivery in doubt (journalled, not recorded)
    moments: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def line(self, tally: Tally) -> str:
        where = ", ".join(f"{count} {moment}" for moment, count in sorted(self.moments.items()))
        return (
            f"crash figures {self.mode}: {self.trials} trials, {self.kills} kills ({where}), "
            f"kill instants uniform in [0, {tally.full_sync:.3f}] s, lost {self.lost}, "
            f"duplicated {self.duplicated} (MDA still running at the kill: "
            f"{self.duplicated_mda_running}, MDA exited, not yet recorded: "
            f"{self.duplicated_mda_exited}; kills in that window: {self.in_window}), "
            f"{time.monotonic() - self.started:.1f} s; {tally.header()}"
        )


class MdaRigs(DovecotRigs):
    """Dovecot users holding the crash corpus, synced through procmail."""

    def __init__(self, dovecot: DovecotServer, root: Path, keep: bool, mail_home: Path) -> None:
        super().__init__(dovecot, root, "maildir", keep)
        self.mail_home = mail_home
        self.procmail = need_program("procmail")

    def setup(self) -> MdaRig:
        user = self.dovecot.add_user(CRASH_CORPUS)
        self._homes += 1
        home = self.mail_home / f"run{self._homes}"
        home.mkdir(mode=0o755)
        maildir = home / "Maildir"
        rc = home / "procmailrc"
        rc.write_text(f"DEFAULT={maildir}/\n")
        witness = self.root / f"run{self._homes}" / "mda"
        witness.mkdir(parents=True)
        wrapper = witness.parent / "wrap"
        wrapper.write_text(MDA_WRAPPER.format(directory=witness))
        wrapper.chmod(0o755)
        login = Login(
            self.dovecot.host, self.dovecot.port, user.name, user.password, self.dovecot.ca_file
        )
        rig = MdaRig.configure(
            witness.parent, user, CRASH_CORPUS, login, name=ACCOUNT, fmt="maildir",
            keep=self.keep, destination=maildir,
        )  # fmt: skip
        rig.witness = witness
        # JSON strings are TOML basic strings: paths with spaces or quotes stay one argument.
        mda = [str(wrapper), "{uidl}", self.procmail, "-m", "-f", "{sender}", str(rc)]
        rig.cli.write_config(
            f"[accounts.{ACCOUNT}]\n"
            f'host = "{login.host}"\nport = {login.port}\nusername = "{login.username}"\n'
            f'ca_file = "{login.ca_file}"\ntimeout = 20\n'
            f'format = "mda"\nmda = {json.dumps(mda)}\n'
            f"mda_timeout = 60\nkeep = {'true' if self.keep else 'false'}\n"
        )
        return rig

    def _moment(self, rig: CrashRig[DovecotUser]) -> str:
        assert isinstance(rig, MdaRig)
        if rig.pending():
            return "with a delivery in the MDA's hands"
        if digests(rig.landed_so_far()) == digests(rig.expected()):
            return "after delivery"
        return "while delivering" if rig.journal_rows() else "before delivering"


#: The retention trials: delivered 31 days before the killed run, then mail that is new.
AGED = CRASH_CORPUS[:20]
FRESH = CRASH_CORPUS[20:]


class RetentionRigs(DovecotRigs):
    """A first sync of :data:`AGED` made 31 days old in the state, then :data:`FRESH` arrives."""

    def setup(self) -> RetentionRig:
        user = self.dovecot.add_user(AGED)
        self._homes += 1
        login = Login(
            self.dovecot.host, self.dovecot.port, user.name, user.password, self.dovecot.ca_file
        )
        rig = RetentionRig.configure(
            self.root / f"run{self._homes}", user, CRASH_CORPUS, login, name=ACCOUNT,
            fmt=self.fmt, keep=True,
        )  # fmt: skip
        rig.kept = list(FRESH)
        text = rig.cli.config_path.read_text().replace("keep = true", 'keep = "30d"')
        rig.cli.write_config(text)
        first = rig.sync()
        assert first.code == 0, first.output
        with contextlib.closing(sqlite3.connect(rig.state_file)) as db, db:
            aged = db.execute("UPDATE messages SET recorded_at = recorded_at - 31 * 86400")
            assert aged.rowcount == len(AGED)
        user.add_messages(FRESH)
        return rig

    def _moment(self, rig: CrashRig[DovecotUser]) -> str:
        landed = rig.landed_so_far()
        if digests(landed) == digests(rig.expected()):
            return "after delivery"
        if len(landed) > len(AGED) or rig.temporary_files():
            return "while downloading"
        return "before downloading"


def random_trials(
    rigs: DovecotRigs,
    tally: Tally,
    figures: Figures,
    rng: random.Random,
    settle: Callable[[Trial, CrashRig[DovecotUser]], None],
) -> None:
    """The loop of the first random test, with ``settle`` judging each trial after its kill."""
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
            window = min(window, trial.ran_for)
        figures.trials += 1
        figures.kills += trial.killed
        moment = trial.moment if trial.killed else "not killed (it had finished)"
        figures.moments[moment] = figures.moments.get(moment, 0) + 1
        settle(trial, rig)
    print(figures.line(tally))
    assert any(trial.killed for trial in tally.trials), (
        f"no kill landed while the sync ran: {tally.summary()}"
    )


def multiset_difference(have: list[bytes], want: list[bytes]) -> list[bytes]:
    """What ``have`` holds beyond ``want``, counting copies."""
    from collections import Counter

    return sorted((Counter(have) - Counter(want)).elements())


@pytest.mark.dovecot
@pytest.mark.slow
def test_sigkill_with_an_mda_duplicates_only_what_was_in_the_mdas_hands(
    dovecot: DovecotServer, tmp_path: Path, crash_seed: int, keep: bool, mail_home: Path
) -> None:
    """README's Guarantees for format = "mda": never lost; a duplicate only of the one message
    journalled and handed to the MDA but not yet recorded as delivered when the kill came,
    and only if that MDA went on to deliver it (it is not killed with us)."""
    rng = random.Random(f"{crash_seed}:mda:{keep}")
    rigs = MdaRigs(dovecot, tmp_path, keep, mail_home)
    tally = Tally(crash_seed, "mda", keep, rigs.measure_full_sync())
    figures = Figures(f"mda (procmail), keep={keep}")

    def settle(trial: Trial, rig: CrashRig[DovecotUser]) -> None:
        assert isinstance(rig, MdaRig)
        context = tally.context(trial)
        in_doubt = rig.pending()  # read once the run is dead: the state as the kill left it
        at_kill = rig.calls()
        assert len(in_doubt) <= 1, f"{context}: more than one delivery in doubt: {in_doubt}"
        rig.wait_for_orphans()
        finished = rig.calls()  # all the killed run's: the next run has not started
        # The one duplicate the README allows: a message in doubt that its MDA then delivered
        # (its wrapper may have been started too late to show in ``at_kill``).
        allowed = [
            call.message for call in finished.values() if call.uidl in in_doubt and call.status == 0
        ]
        figures.in_window += bool(in_doubt and any(c.uidl in in_doubt for c in at_kill.values()))
        check_mda_recovery(context, rig, allowed, warned=bool(in_doubt))
        running = [
            c
            for pid, c in finished.items()
            if c.uidl in in_doubt and (pid not in at_kill or at_kill[pid].status is None)
        ]
        figures.duplicated += len(allowed)
        figures.duplicated_mda_running += len(allowed) if running else 0
        figures.duplicated_mda_exited += 0 if running else len(allowed)

    random_trials(rigs, tally, figures, rng, settle)


def check_mda_recovery(context: str, rig: MdaRig, allowed: list[bytes], *, warned: bool) -> None:
    """The run after the kill: every message, ``allowed`` twice and nothing else twice."""
    finished = rig.recover(context)
    assert finished.code == 0, f"{context}: the run after the kill failed: {finished.output}"
    warning = "so they are handed over again (a duplicate is possible, a loss is not)"
    assert (warning in finished.stderr) == warned, f"{context}: {finished.stderr!r}"
    landed = rig.landed()
    expected = rig.expected()
    missing = multiset_difference(expected, landed)
    extra = multiset_difference(landed, expected)
    assert missing == [], f"{context}: {len(missing)} message(s) lost"
    assert extra == sorted(allowed), (
        f"{context}: {len(extra)} extra cop(ies), {len(allowed)} allowed by the window"
    )
    assert digests(rig.on_server()) == digests(rig.expected_on_server()), context
    assert [p.name for p in rig.temporary_files()] == [], f"{context}: left in procmail's tmp/"


@pytest.mark.dovecot
@pytest.mark.slow
def test_sigkill_while_retention_deletes_and_new_mail_arrives(
    dovecot: DovecotServer, tmp_path: Path, crash_seed: int, fmt: str
) -> None:
    """keep = "30d" with the first 20 messages delivered 31 days ago and the rest new: after a
    kill at any instant and a plain run, the old ones are gone from the server, the new ones
    are there, and the destination holds every message exactly once."""
    rng = random.Random(f"{crash_seed}:retention:{fmt}")
    rigs = RetentionRigs(dovecot, tmp_path, fmt, True)
    tally = Tally(crash_seed, fmt, True, rigs.measure_full_sync())
    figures = Figures(f'retention keep="30d", {fmt}')

    def settle(trial: Trial, rig: CrashRig[DovecotUser]) -> None:
        context = tally.context(trial)
        finished = rig.recover(context)
        assert finished.code == 0, f"{context}: the run after the kill failed: {finished.output}"
        landed, expected = rig.landed(), rig.expected()
        figures.lost += len(multiset_difference(expected, landed))
        figures.duplicated += len(multiset_difference(landed, expected))
        assert digests(landed) == digests(expected), f"{context}: lost, damaged or twice"
        assert digests(rig.on_server()) == digests(FRESH), (
            f"{context}: the server should hold exactly the {len(FRESH)} new messages"
        )
        assert [p.name for p in rig.temporary_files()] == [], context

    random_trials(rigs, tally, figures, rng, settle)


@pytest.mark.dovecot
def test_killed_while_the_mda_runs_the_mda_finishes_and_that_message_comes_twice(
    dovecot: DovecotServer, tmp_path: Path, mail_home: Path
) -> None:
    """The start of README's window: the MDA has the message and pop3s-fetch is killed. The
    MDA, in a session of its own, is not stopped with it and delivers; the next run cannot ask
    it, so it hands that message over again: one duplicate, nothing lost."""
    rig = MdaRigs(dovecot, tmp_path, False, mail_home).setup()
    hold = rig.witness / "hold"
    os.mkfifo(hold)
    process = rig.start_sync()
    wait_until(lambda: list(rig.witness.glob("start.*")), "the first MDA", process)
    assert sigkill(process)
    (call,) = rig.calls().values()
    assert call.status is None, "the MDA should still be waiting"
    assert rig.pending() == {call.uidl}
    with hold.open("w") as release:  # the MDA, orphaned, goes on and delivers
        hold.unlink()  # the later MDAs do not wait
        release.write("go\n")
    rig.wait_for_orphans()
    assert rig.calls()[call.pid].status == 0
    assert len(rig.landed()) == 1

    check_mda_recovery("killed while the MDA ran", rig, [call.message], warned=True)
