"""Crash trials: SIGKILL a client mid-sync, run it again, and check nothing was lost or doubled.

``python -m benchmarks.crash_trials --client pop3s-fetch|mpop|getmail6 --format maildir|mbox
--mode keep|delete --trials N [--seed S]``; pop3s-fetch also ``--format mda`` (procmail
delivering into the Maildir) and ``--mode retention`` (``keep = "30d"``).

Owns the trial loop: for each trial a fresh Dovecot user holding a deterministic corpus (each
message marked, so copies are identified even when a peer adds headers), the client started as
a subprocess in its own session and killed (the whole process group, as a crash would) at a
uniformly random instant within its measured full-sync time, then run again until it succeeds
(at most ``--max-reruns`` times). Then every original must exist exactly once and byte for
byte, with no temporary leftover or partial mbox tail, and in delete mode the server must be
empty. The first run's duration, measured once, sets the kill window.

With ``--format mda`` README allows one duplicate per kill: the message journalled and in the
MDA's hands (pending in the state) when the kill came. Such duplicates are counted apart
(``dup-window``); any other is a failure. With ``--mode retention`` the first half of the
mail is synced before the trial and made 31 days old in the state, then the rest arrives:
the killed run deletes the old half while it fetches the new, and after the reruns the server
must hold exactly the new half.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import corpus
from benchmarks.clients import AccountSpec, Client, Getmail, Mpop, Pop3sFetch
from benchmarks.environment import Endpoint, Environment, running_environment
from benchmarks.measure import Command
from benchmarks.run import reachable
from benchmarks.verify import Verification, verify_destination
from tests.support.dovecot import DovecotUser

CLIENTS: dict[str, type[Pop3sFetch] | type[Mpop] | type[Getmail]] = {
    "pop3s-fetch": Pop3sFetch,
    "mpop": Mpop,
    "getmail6": Getmail,
}
RUN_TIMEOUT = 300.0
FAILURES_DIR = Path("/tmp/pop3s-fetch-crash-failures")


@dataclass
class Tally:
    """The row printed at the end."""

    trials: int = 0
    kills: int = 0
    lost: int = 0
    duplicated: int = 0
    duplicated_in_window: int = 0  # --format mda: of the message in the MDA's hands
    corrupted: int = 0
    altered: int = 0
    leftovers: int = 0
    server_not_empty: int = 0
    rerun_failures: int = 0
    bad_trials: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    killed: bool
    verification: Verification
    left_on_server: int
    reruns_failed: bool
    in_doubt: int = 0  # deliveries pending in the state right after the kill
    server_wrong: bool = False  # the server does not hold what the mode leaves there


def trial_corpus(seed: int, count: int) -> list[bytes]:
    """Mixed sizes (2-50 KB, a few long-line ones) plus two larger attachments."""
    rng = random.Random(seed)
    messages = corpus.mixed_corpus(seed, count - 2, large=False)
    messages.append(corpus.attachment_message(seed, count - 2, rng, 400_000))
    messages.append(corpus.attachment_message(seed, count - 1, rng, 1_200_000))
    return messages


def start(command: Command) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(command.argv),
        env=dict(command.env),
        cwd=command.cwd,
        stdin=subprocess.DEVNULL,
        stdout=(command.cwd / "client.log").open("ab"),
        stderr=subprocess.STDOUT,
        user=command.user,
        group=command.group,
        extra_groups=[] if command.user is not None else None,
        start_new_session=True,  # killpg reaches the client and anything it started
    )


def run_to_end(command: Command) -> int:
    process = start(command)
    try:
        return process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return -9


def kill_after(command: Command, delay: float) -> bool:
    """Start the client and SIGKILL it after ``delay`` s; True if it was still running."""
    process = start(command)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


class Trials:
    """Everything one invocation needs: the server, the client, the corpus, the options."""

    def __init__(
        self, env: Environment, endpoint: Endpoint, client: Client, args: argparse.Namespace
    ) -> None:
        self.env = env
        self.endpoint = endpoint
        self.client = client
        self.fmt: str = args.format
        self.keep = args.mode in ("keep", "retention")
        self.retention = args.mode == "retention"
        self.seed: int = args.seed
        self.max_reruns: int = args.max_reruns
        self.messages = trial_corpus(args.seed, args.messages)

    @property
    def aged(self) -> list[bytes]:
        """--mode retention: the mail delivered 31 days before the trial."""
        return self.messages[: len(self.messages) // 2] if self.retention else []

    def _setup(self, label: str) -> tuple[Command, AccountSpec, Path, DovecotUser]:
        user = self.env.add_user(self.aged or self.messages)
        run_dir = self.env.fresh_directory(label)
        leaf = run_dir / "mail" / ("mbox" if self.fmt == "mbox" else "Maildir")
        account = AccountSpec("crash", user.name, leaf)
        fmt = "maildir" if self.fmt == "mda" else self.fmt
        command = self.client.command(run_dir, self.endpoint, [account], fmt, self.keep)
        config = Path(command.env.get("POP3S_FETCH_CONFIG", run_dir / "none"))
        if self.fmt == "mda":
            rc = run_dir / "procmailrc"
            rc.write_text(f"DEFAULT={leaf}/\n")
            mda = [shutil.which("procmail") or "procmail", "-m", "-f", "{sender}", str(rc)]
            text = config.read_text().replace(
                f'destination = "{leaf}"\nformat = "maildir"',
                f'format = "mda"\nmda = {json.dumps(mda)}',
            )
            config.write_text(text)
        if self.retention:
            config.write_text(config.read_text().replace("keep = true", 'keep = "30d"'))
            if run_to_end(command) not in command.ok_codes:
                raise SystemExit(f"the first sync of a retention trial failed: {run_dir}")
            for state in (run_dir / "state").rglob("*.sqlite3"):
                with contextlib.closing(sqlite3.connect(state)) as db, db:
                    db.execute("UPDATE messages SET recorded_at = recorded_at - 31 * 86400")
            user.add_messages(self.messages[len(self.aged) :])
        return command, account, run_dir, user

    def measure_full_sync(self) -> float:
        """Seconds one complete sync of a fresh mailbox takes (the kill window)."""
        command, _, run_dir, user = self._setup("calibrate")
        started = time.monotonic()
        code = run_to_end(command)
        elapsed = time.monotonic() - started
        if code not in command.ok_codes:
            log = (run_dir / "client.log").read_text(errors="replace")
            raise SystemExit(f"calibration run failed with exit {code}:\n{log[-2000:]}")
        self._clean(run_dir, user)
        return elapsed

    def trial(self, number: int, window: float) -> TrialOutcome:
        rng = random.Random(f"{self.seed}-{number}")
        kill_at = rng.uniform(0, window)
        command, account, run_dir, user = self._setup(f"trial{number}")
        killed = kill_after(command, kill_at)
        in_doubt = pending_deliveries(run_dir)
        reruns_failed = True
        for _ in range(self.max_reruns):
            if run_to_end(command) in command.ok_codes:
                reruns_failed = False
                break
        verification = verify_destination(
            self.messages, account.destination, "maildir" if self.fmt == "mda" else self.fmt
        )
        on_server = user.messages_on_server()
        if self.retention:
            wrong = sorted(on_server) != sorted(self.messages[len(self.aged) :])
        else:
            wrong = not self.keep and bool(on_server)
        outcome = TrialOutcome(killed, verification, len(on_server), reruns_failed, in_doubt, wrong)
        if self._is_bad(outcome):
            self._preserve(number, kill_at, run_dir, user, outcome)
        self._clean(run_dir, user)
        return outcome

    def _is_bad(self, outcome: TrialOutcome) -> bool:
        v = outcome.verification
        corrupted = v.unknown + (0 if self.client.may_alter else v.altered)
        return bool(
            v.missing
            or unexplained_duplicates(outcome, self.fmt == "mda")
            or corrupted
            or v.leftovers
            or outcome.reruns_failed
            or outcome.server_wrong
        )

    def _preserve(
        self, number: int, kill_at: float, run_dir: Path, user: DovecotUser, outcome: TrialOutcome
    ) -> None:
        target = FAILURES_DIR / f"{self.client.name}-{self.fmt}-{self.seed}-{number}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run_dir, target / "client", symlinks=True)
        shutil.copytree(user.maildir, target / "server", symlinks=True)
        print(
            f"BAD TRIAL: client={self.client.name} format={self.fmt} "
            f"mode={'keep' if self.keep else 'delete'} seed={self.seed} trial={number} "
            f"kill_at={kill_at:.4f}s killed={outcome.killed} "
            f"{outcome.verification.summary()} left_on_server={outcome.left_on_server} "
            f"reruns_failed={outcome.reruns_failed}; copies kept in {target}",
            flush=True,
        )

    def _clean(self, run_dir: Path, user: DovecotUser) -> None:
        """Each trial writes a few MB; remove them so 1000+ trials fit on the disk."""
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(user.maildir, ignore_errors=True)


def pending_deliveries(run_dir: Path) -> int:
    """pop3s-fetch's deliveries journalled but not recorded as done (0 for other clients)."""
    count = 0
    for state in (run_dir / "state").rglob("*.sqlite3"):
        uri = f"{state.as_uri()}?mode=ro"
        with (
            contextlib.closing(sqlite3.connect(uri, uri=True)) as db,
            contextlib.suppress(sqlite3.OperationalError),  # no table yet
        ):
            (found,) = db.execute(
                "SELECT count(*) FROM messages WHERE status = 'pending'"
            ).fetchone()
            count += int(found)
    return count


def unexplained_duplicates(outcome: TrialOutcome, mda: bool = False) -> int:
    """Extra copies beyond what README allows: with an MDA, one of each delivery in doubt."""
    allowed = outcome.in_doubt if mda else 0
    return max(0, outcome.verification.duplicated - allowed)


def tally(
    outcomes: Sequence[TrialOutcome], may_alter: bool, keep: bool, mda: bool = False
) -> Tally:
    del keep  # each outcome knows whether the server holds what it should
    row = Tally()
    for number, outcome in enumerate(outcomes, start=1):
        v = outcome.verification
        unexplained = unexplained_duplicates(outcome, mda)
        row.trials += 1
        row.kills += outcome.killed
        row.lost += v.missing
        row.duplicated += unexplained
        row.duplicated_in_window += v.duplicated - unexplained
        row.corrupted += v.unknown + (0 if may_alter else v.altered)
        row.altered += v.altered if may_alter else 0
        row.leftovers += v.leftovers
        row.server_not_empty += int(outcome.server_wrong)
        row.rerun_failures += outcome.reruns_failed
        if (
            v.missing
            or unexplained
            or v.unknown
            or v.leftovers
            or outcome.reruns_failed
            or outcome.server_wrong
        ):
            row.bad_trials.append(number)
    return row


def format_row(args: argparse.Namespace, row: Tally) -> str:
    return (
        f"{args.client:<12} {args.format:<8} {args.mode:<9} {row.trials:>6} {row.kills:>6} "
        f"{row.lost:>5} {row.duplicated:>5} {row.duplicated_in_window:>10} {row.corrupted:>7} "
        f"{row.altered:>7} "
        f"{row.leftovers:>8} {row.server_not_empty:>8} {row.rerun_failures:>10}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crash_trials")
    parser.add_argument("--client", choices=list(CLIENTS), required=True)
    parser.add_argument("--format", choices=["maildir", "mbox", "mda"], default="maildir")
    parser.add_argument("--mode", choices=["keep", "delete", "retention"], default="keep")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--max-reruns", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added round trip")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    client = CLIENTS[args.client]()
    if not client.available():
        raise SystemExit(f"{args.client} is not installed")
    if (args.format == "mda" or args.mode == "retention") and args.client != "pop3s-fetch":
        raise SystemExit("--format mda and --mode retention are pop3s-fetch's settings")
    if args.format == "mda" and shutil.which("procmail") is None:
        raise SystemExit("--format mda needs procmail (apt-get install procmail)")
    mda = args.format == "mda"
    begun = time.monotonic()
    command_line = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: python -m benchmarks.crash_trials {command_line}", flush=True)
    with (
        running_environment() as env,
        reachable(env.endpoint, args.delay_ms / 1000 / 2) as endpoint,
    ):
        trials = Trials(env, endpoint, client, args)
        window = trials.measure_full_sync()
        print(f"full sync takes {window:.3f} s: kill instants uniform in [0, {window:.3f}]")
        outcomes = []
        for number in range(1, args.trials + 1):
            outcomes.append(trials.trial(number, window))
            if number % 25 == 0:  # a running row, so an interrupted series still reports
                row = tally(outcomes, client.may_alter, args.mode == "keep", mda)
                print(f"  after {number} trials: {format_row(args, row)}", flush=True)
    row = tally(outcomes, client.may_alter, args.mode == "keep", mda)
    print(
        f"{'client':<12} {'format':<8} {'mode':<9} {'trials':>6} {'kills':>6} {'lost':>5} "
        f"{'dup':>5} {'dup-window':>10} {'corrupt':>7} {'altered':>7} {'leftover':>8} "
        f"{'srv-left':>8} "
        f"{'rerun-fail':>10}"
    )
    print(format_row(args, row))
    print(f"runtime {time.monotonic() - begun:.1f} s")
    if row.bad_trials:
        print(f"bad trials: {row.bad_trials[:50]}")
    clean = not (
        row.lost
        or row.duplicated
        or row.corrupted
        or row.leftovers
        or row.server_not_empty
        or row.rerun_failures
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
