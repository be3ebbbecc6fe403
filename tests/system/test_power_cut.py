"""Exactly-once through a power cut: ``pop3s-fetch sync`` cut at every file-system operation.

A SIGKILL cannot show an fsync-ordering fault, since the kernel keeps every write of a killed
process; a power cut keeps only what was fsynced, and a new name only once its directory was
fsynced. Here the destination and ``$XDG_STATE_HOME`` live on the power-cut file system
(:mod:`tests.powercut`). An uncut sync counts the N operations that change something and
is itself cut once it has exited (what is durable once it is done); then syncs are cut just
before their k-th such operation (frozen there, then killed) for every k where the outcome
can differ: just before and just after each fsync (see :func:`cut_points`; every k in 1..N
with ``POP3S_FETCH_POWER_CUT_EVERY=1``). After each cut the durable image is restored. It
must hold every message deleted on the server, and a plain sync run on it must leave every
message in the destination exactly once, byte for byte.

Configurations: Maildir and mbox, keep and delete, a first run (no state directory yet) and
a later run (an earlier sync already delivered the first messages). The mail is four small
messages, so that even every cut point takes minutes. Select with ``-m power_cut``.

A trial is cheap because what it repeats is only the part under test: each sync (the cut one
and the recovery) is ``python -m pop3s_fetch sync`` as a process of its own, forked by
:mod:`tests.powercut.forkserver` from one that imported pop3s-fetch once (the imports are two
thirds of a fresh sync's CPU time and touch nothing on the mount); one file-system process
mounts a fresh power-cut file system for each trial; the harness waits for the sync's exit or
for the file system to say the cut came, never polling; and two rigs (each its own mount,
home and server) share a configuration's cuts, side by side.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from pop3s_fetch.demo.server import MailStore, Pop3Server
from pop3s_fetch.destinations import read_messages
from tests.powercut.control import PowerCut, unavailable_reason
from tests.powercut.forkserver import ForkServer
from tests.support import server_unavailable
from tests.support.cli import Cli, account_toml, make_cli
from tests.support.mail import as_stored

pytestmark = pytest.mark.power_cut

ACCOUNT = "cut"
USER = "alice"
PASSWORD = "power-cut-password"
#: How many of MESSAGES an earlier sync delivered, in the "later run" configurations.
EARLIER = 2
MESSAGES = [
    b"From: a@example.org\nSubject: one\n\nFirst.\n",
    b"From: b@example.org\nSubject: two\n\nFrom the start\n.\n..\nend\n",
    b"From: c@example.org\nSubject: three\n\n" + b"line of text\n" * 300,
    b"From: d@example.org\nSubject: four\n\n>From quoted\nlast line without a newline",
]
#: Cut before every counted operation, not only where the outcome can differ: "1" for every
#: configuration, or a comma-separated list of configuration ids ("maildir-keep-first-run").
EVERY_VARIABLE = "POP3S_FETCH_POWER_CUT_EVERY"
#: The operations after which a cut can leave a different durable image.
SYNCS = frozenset({"fsync", "fdatasync", "fsyncdir"})
#: A sync, or a frozen one reaching its cut, that takes longer than this is taken as stuck.
RUN_TIMEOUT = 60.0
#: Rigs that run one configuration's trials side by side: CI has two cores, and a trial also
#: spends part of its time waiting on other processes and the file system.
WORKERS = 2


@pytest.fixture(scope="module")
def fuse_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        server_unavailable(f"power-cut tests need FUSE: {reason}")


# --- one configuration ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one cut left: counted against the messages, by how they were hurt."""

    k: int
    trace_tail: str
    lost: int = 0
    duplicated: int = 0
    partial: int = 0
    deleted_not_durable: int = 0
    recovery_failed: str = ""

    def bad(self) -> bool:
        return bool(
            self.lost
            or self.duplicated
            or self.partial
            or self.deleted_not_durable
            or self.recovery_failed
        )

    def __str__(self) -> str:
        failed = f", {self.recovery_failed}" if self.recovery_failed else ""
        return (
            f"cut before op {self.k} (after {self.trace_tail or 'nothing'}): lost {self.lost}, "
            f"duplicated {self.duplicated}, partial {self.partial}, deleted but not durable "
            f"{self.deleted_not_durable}{failed}"
        )


@dataclass
class Table:
    """All cuts of one configuration, for the failure message and the report."""

    name: str
    operations: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def row(self) -> str:
        bad = [o for o in self.outcomes if o.bad()]
        sums = {
            what: sum(getattr(o, what) for o in self.outcomes)
            for what in ("lost", "duplicated", "partial", "deleted_not_durable")
        }
        failed = sum(1 for o in self.outcomes if o.recovery_failed)
        return (
            f"{self.name}: {len(self.outcomes)} cuts (N={self.operations}), {len(bad)} bad; "
            f"lost {sums['lost']}, duplicated {sums['duplicated']}, partial {sums['partial']}, "
            f"deleted-not-durable {sums['deleted_not_durable']}, recovery failed {failed}; "
            f"{self.seconds:.0f} s"
        )

    def report(self) -> str:
        return "\n".join([self.row(), *(f"  {o}" for o in self.outcomes if o.bad())])


class Rig:
    """A home whose destination and state directory are on the power-cut mount."""

    def __init__(
        self, root: Path, fmt: str, keep: bool, later: bool, context: ssl.SSLContext, ca: Path
    ) -> None:
        self.root = root
        self.fmt = fmt
        self.keep = keep
        self.later = later
        self.context = context
        self.ca = ca
        self.mount = root / "mnt"
        self.mount.mkdir()
        self.template = root / "template"
        self.template.mkdir()
        self.cli: Cli = make_cli(
            root,
            {
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
                "XDG_STATE_HOME": str(self.mount / "state"),
            },
        )
        self.destination = self.mount / ("Maildir" if fmt == "maildir" else "mail/inbox")
        self.trials = 0
        #: Starts each trial's syncs as ``python -m pop3s_fetch sync`` from pre-imported code.
        self.runner = ForkServer("pop3s_fetch", self.cli.env, root / "forkserver.log")
        #: One file-system process for every trial's mount (each mount a fresh file system).
        self.power = PowerCut(self.mount, root / "powercut.log")

    def close(self) -> None:
        try:
            self.power.close()
        finally:
            self.runner.close()

    # --- the server -------------------------------------------------------------------

    def server(self, messages: list[bytes], gone: int = 0) -> tuple[Pop3Server, MailStore]:
        """A running server with ``messages``, the first ``gone`` of them deleted before.

        Unique-ids count from 1 in every store, so an earlier sync's state matches.
        """
        store = MailStore(messages)
        store.delete([uidl for uidl, _ in store.messages()[:gone]])
        server = Pop3Server(self.context, {USER: (PASSWORD, store)})
        server.start()
        return server, store

    def configure(self, server: Pop3Server) -> None:
        self.cli.write_config(
            account_toml(
                ACCOUNT,
                host=server.host,
                port=server.port,
                username=USER,
                destination=self.destination,
                fmt=self.fmt,
                keep=self.keep,
                ca_file=self.ca,
            )
            + f'password_command = ["echo", "{PASSWORD}"]\n'
        )

    def trial_server(self) -> tuple[Pop3Server, MailStore]:
        gone = EARLIER if self.later and not self.keep else 0
        server, store = self.server(MESSAGES, gone)
        self.configure(server)
        return server, store

    # --- the disk ---------------------------------------------------------------------

    def prepare_template(self) -> None:
        """The disk a trial starts from: empty, or after an earlier sync of the first mail."""
        if not self.later:
            return
        server, _ = self.server(MESSAGES[:EARLIER])
        try:
            self.configure(server)
            result = self.cli.run("sync")  # on the plain directory, nothing mounted yet
            assert result.code == 0, result.output
        finally:
            server.stop()
        assert len(read_messages(self.destination, self.fmt)) == EARLIER
        for entry in self.mount.iterdir():
            shutil.move(entry, self.template / entry.name)

    @contextlib.contextmanager
    def mounted(self) -> Iterator[PowerCut]:
        """A fresh power-cut file system over a copy of the template, at the mount."""
        self.trials += 1
        backing = self.root / "backing"
        shutil.rmtree(backing, ignore_errors=True)
        shutil.copytree(self.template, backing, symlinks=True)
        try:
            self.power.mount_over(backing)
        except RuntimeError as err:
            log = (self.root / "powercut.log").read_text(errors="replace")
            server_unavailable(f"cannot mount the power-cut file system: {err}: {log[-500:]}")
        try:
            yield self.power
        finally:
            self.power.unmount()

    # --- one trial --------------------------------------------------------------------

    def trial(self, k: int | None) -> tuple[Outcome, list[str]]:
        """Sync, cut before op ``k`` (None: after the sync exited), restore, recover, judge.

        Returns the outcome and the operations counted before the cut.
        """
        server, store = self.trial_server()
        try:
            with self.mounted() as power:
                if k is not None:
                    power.arm(k)
                trace = self._run_until_cut(power, k)
                staging = self.root / "restored"
                shutil.rmtree(staging, ignore_errors=True)
                power.restore(staging)
            self.mount.rmdir()
            staging.rename(self.mount)
            server.wait_idle()
            outcome = Outcome(k if k is not None else len(trace) + 1, trace[-1] if trace else "")
            self._judge_restored(outcome, store)
            output = self.root / "recovery.output"
            output.unlink(missing_ok=True)
            code = self.runner.run("pop3s_fetch", ["sync"], output, RUN_TIMEOUT)
            if code != 0:
                outcome.recovery_failed = f"the sync after the cut failed: {output.read_text()}"
            self._judge_recovered(outcome)
        finally:
            server.stop()
            shutil.rmtree(self.mount)
            self.mount.mkdir()
        return outcome, trace

    def _run_until_cut(self, power: PowerCut, k: int | None) -> list[str]:
        """Run a sync on the mount until it exits, or is frozen at armed cut ``k`` and killed."""
        stderr = self.root / "sync.stderr"
        pid = self.runner.start("pop3s_fetch", ["sync"], Path(os.devnull), stderr)
        try:
            code = self.runner.wait(RUN_TIMEOUT, unless=None if k is None else power.cut_signal)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            power.release()
            self.runner.wait(RUN_TIMEOUT)
            pytest.fail(f"the sync neither exited nor reached cut {k} in time")
        if code is None:  # frozen in the file system at the cut: dies once released
            os.kill(pid, signal.SIGKILL)
        power.release()
        if code is None:
            code = self.runner.wait(RUN_TIMEOUT)
        if not power.is_cut():
            assert code == 0, stderr.read_text()
            power.cut()
        return power.trace()

    def _judge_restored(self, outcome: Outcome, store: MailStore) -> None:
        """No message deleted on the server may be missing from what survived the cut."""
        on_server = {message for _, message in store.messages()}
        durable = collections.Counter(self._landed())
        outcome.deleted_not_durable = sum(
            1
            for message in MESSAGES
            if message not in on_server and as_stored(message, self.fmt) not in durable
        )

    def _judge_recovered(self, outcome: Outcome) -> None:
        landed = collections.Counter(self._landed())
        expected = [as_stored(message, self.fmt) for message in MESSAGES]
        outcome.lost = sum(1 for message in expected if landed[message] == 0)
        outcome.duplicated = sum(landed[message] - 1 for message in expected if landed[message])
        outcome.partial = sum(count for message, count in landed.items() if message not in expected)

    def _landed(self) -> list[bytes]:
        if self.fmt == "maildir" and not all(
            (self.destination / sub).is_dir() for sub in ("new", "cur")
        ):
            return []  # a Maildir whose creation was cut short holds no mail
        return read_messages(self.destination, self.fmt)


def cuts_every_operation(configuration: str) -> bool:
    """Whether :data:`EVERY_VARIABLE` asks for every k in this configuration."""
    value = os.environ.get(EVERY_VARIABLE, "")
    return value == "1" or configuration in value.split(",")


def cut_points(trace: list[str], *, every: bool = False) -> list[int]:
    """The k worth cutting before, given the operations of an uncut sync.

    What survives a cut before op k is fixed by the fsyncs before k, so it changes only just
    after an fsync; the server changes only at QUIT, once, in one direction. Between two
    fsyncs, the first and the last cut therefore leave every (durable image, server) pair that
    any cut between them can leave. Those are tried, and 1; every k with ``every``.
    """
    if every:
        return list(range(1, len(trace) + 1))
    points = {1}
    for k, operation in enumerate(trace, start=1):
        if operation.split(" ", 1)[0] in SYNCS:
            points.update((k, k + 1))
    return sorted(k for k in points if k <= len(trace))


def run_every_cut(rigs: list[Rig], name: str, *, every: bool = False) -> Table:
    """The uncut sync (and the cut after it), then a cut before each operation worth it.

    The cuts are shared out among the rigs, which run side by side: each has its own mount,
    home and server, so that no trial can see another.
    """
    started = time.monotonic()
    table = Table(name)
    for rig in rigs:
        rig.prepare_template()
    last, trace = rigs[0].trial(None)
    table.operations = len(trace)
    points = cut_points(trace, every=every)

    def share(rig: Rig, ks: list[int]) -> list[Outcome]:
        return [rig.trial(k)[0] for k in ks]

    with concurrent.futures.ThreadPoolExecutor(len(rigs)) as pool:
        shares = [pool.submit(share, rig, points[i :: len(rigs)]) for i, rig in enumerate(rigs)]
        outcomes = [outcome for done in shares for outcome in done.result()]
    table.outcomes = [*sorted(outcomes, key=lambda outcome: outcome.k), last]
    table.seconds = time.monotonic() - started
    return table


# --- the configurations -------------------------------------------------------------------------

CONFIGURATIONS = [
    pytest.param(fmt, keep, later, id=f"{fmt}-{'keep' if keep else 'delete'}-{run}")
    for fmt in ("maildir", "mbox")
    for keep in (True, False)
    for later, run in ((False, "first-run"), (True, "later-run"))
]


@pytest.mark.usefixtures("fuse_available")
@pytest.mark.parametrize(("fmt", "keep", "later"), CONFIGURATIONS)
def test_every_cut_point_then_a_plain_sync_delivers_each_message_once(
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    ca_file: Path,
    fmt: str,
    keep: bool,
    later: bool,
) -> None:
    name = f"{fmt} keep={keep} {'later' if later else 'first'} run"
    configuration = f"{fmt}-{'keep' if keep else 'delete'}-{'later' if later else 'first'}-run"
    rigs: list[Rig] = []
    try:
        for worker in range(WORKERS):
            root = tmp_path / f"worker{worker}"
            root.mkdir()
            rigs.append(Rig(root, fmt, keep, later, server_ssl_context, ca_file))
        table = run_every_cut(rigs, name, every=cuts_every_operation(configuration))
    finally:
        for rig in rigs:
            rig.close()
    print(table.report())
    assert not any(o.bad() for o in table.outcomes), table.report()


class _CountingRig:
    """Stands in for a :class:`Rig`: records which cuts it was given, and when."""

    def __init__(self, trace: list[str], both_busy: threading.Barrier) -> None:
        self.trace = trace
        self.both_busy = both_busy
        self.cuts: list[int] = []

    def prepare_template(self) -> None:
        pass

    def trial(self, k: int | None) -> tuple[Outcome, list[str]]:
        if k is not None:
            if not self.cuts:
                self.both_busy.wait(timeout=10)  # passes only if the rigs run side by side
            self.cuts.append(k)
        return Outcome(k if k is not None else len(self.trace) + 1, ""), self.trace


def test_the_rigs_share_the_cuts_side_by_side_each_cut_once() -> None:
    trace = ["mkdir /state", "fsync /state/x", "write /m", "fsyncdir /", "rename /m"]
    both_busy = threading.Barrier(2)
    rigs = [_CountingRig(trace, both_busy), _CountingRig(trace, both_busy)]
    table = run_every_cut(cast(list[Rig], rigs), "fake", every=True)
    assert rigs[0].cuts
    assert rigs[1].cuts
    assert sorted(rigs[0].cuts + rigs[1].cuts) == [1, 2, 3, 4, 5]
    assert [outcome.k for outcome in table.outcomes] == [1, 2, 3, 4, 5, 6]
