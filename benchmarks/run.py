"""The benchmark suite: ``python -m benchmarks.run [--scenario NAME ...] [--quick]``.

Owns the scenarios (corpus, accounts, round trip), the order of runs, the table and the
targets. Every client runs against its own Dovecot users holding the same corpus, into a fresh
directory per run (kept until the suite ends: creating files right after deleting many is slow
on some file systems), and every delivered copy is checked against the source.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import itertools
import poplib
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks import corpus
from benchmarks.clients import ALL_CLIENTS, REPO_ROOT, AccountSpec, Client, Pop3sFetch
from benchmarks.environment import (
    Endpoint,
    Environment,
    running_environment,
    running_secret_service,
)
from benchmarks.latency_proxy import latency_proxy
from benchmarks.measure import Command, Measurement, run_measured
from benchmarks.verify import Verification, verify_destination

DEFAULT_SEED = 20250106
#: The clients that can take their password from a Secret Service here.
KEYRING_CLIENTS = ("pop3s-fetch", "mpop")
#: A client stuck longer than this is killed and reported as failed (getmail6 was once seen
#: hanging forever behind the 50 ms proxy, with an unreaped delivery child).
RUN_TIMEOUT = 900.0
MIB = 1024


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the server holds for each client, and how far away it is."""

    name: str
    summary: str
    mailboxes: Callable[[int], list[list[bytes]]]  # seed -> one corpus per account
    one_way_delay: float = 0.0
    idle: bool = False  # fill the state untimed first, then time a run with nothing new
    baseline: bool = False  # also run pop3s-fetch on small messages for an RSS baseline
    keyring: bool = False  # passwords from a real gnome-keyring (pop3s-fetch and mpop only)
    repeat: int | None = None  # runs per client when --repeat is not given (default 3)
    clients: tuple[str, ...] | None = None  # only these (the others would take many minutes)
    #: For an idle scenario: also report the (one, untimed-for-idle) filling run per client
    #: as a first download, under this name.
    fill_report: str | None = None
    #: Known state: before each timed run, this many new messages reach the (shared) mailbox.
    new_mail: int = 0
    #: Daemon: pop3s-fetch ``sync --every 1s`` stays up for this many idle polls; mpop's cold
    #: idle runs are the yardstick.
    polls: int = 0
    #: Daemon: seconds between polls (``--interval``; under 1 s only for the memory check).
    interval: float = 1.0


def _scenarios() -> dict[str, Scenario]:
    return {
        "rtt0": Scenario(
            "rtt0",
            "500 mixed messages, no added latency",
            lambda s: [corpus.mixed_corpus(s, 500)],
        ),
        "rtt50": Scenario(
            "rtt50",
            "500 mixed messages, 50 ms round trip",
            lambda s: [corpus.mixed_corpus(s, 500)],
            one_way_delay=0.025,
        ),
        "big": Scenario(
            "big",
            "one 50 MB message, no added latency",
            lambda s: [corpus.big_message(s, 50 * 1024 * 1024)],
            baseline=True,
        ),
        "accounts20": Scenario(
            "accounts20",
            "20 accounts x 25 mixed messages, 50 ms round trip",
            lambda s: [corpus.mixed_corpus(s + i, 25) for i in range(20)],
            one_way_delay=0.025,
        ),
        "idle20k": Scenario(
            "idle20k",
            "20,000 messages already fetched, nothing new, no added latency",
            lambda s: [corpus.small_corpus(s, 20_000)],
            idle=True,
        ),
        "keyidle": Scenario(
            "keyidle",
            "50 small messages already fetched, nothing new, password from gnome-keyring",
            lambda s: [corpus.small_corpus(s, 50)],
            idle=True,
            keyring=True,
            repeat=9,
        ),
        "big100k": Scenario(
            "big100k",
            "100,000 small messages: first download once, then idle runs (nothing new)",
            lambda s: [corpus.small_corpus(s, 100_000)],
            idle=True,
            clients=KEYRING_CLIENTS,
            fill_report="first100k",
        ),
        "daemon": Scenario(
            "daemon",
            "sync --every 1s, idle polls of one warm process vs mpop's cold idle runs "
            "(50 small messages, password from gnome-keyring)",
            lambda s: [corpus.small_corpus(s, 50)],
            idle=True,
            keyring=True,
            repeat=9,
            polls=200,
        ),
        "rtt300": Scenario(
            "rtt300",
            "100 mixed messages, 300 ms round trip, first contact",
            lambda s: [corpus.mixed_corpus(s, 100)],
            one_way_delay=0.150,
            clients=KEYRING_CLIENTS,
        ),
        "known300": Scenario(
            "known300",
            "server seen before (100 messages fetched), 10 new ones each run, 300 ms round trip",
            lambda s: [corpus.small_corpus(s, 100)],
            one_way_delay=0.150,
            idle=True,
            clients=KEYRING_CLIENTS,
            new_mail=10,
        ),
    }


def _quick_scenarios() -> dict[str, Scenario]:
    return {
        "quick-rtt0": Scenario(
            "quick-rtt0",
            "30 mixed messages, no added latency",
            lambda s: [corpus.mixed_corpus(s, 30)],
        ),
        "quick-rtt10": Scenario(
            "quick-rtt10",
            "30 mixed messages, 10 ms round trip",
            lambda s: [corpus.mixed_corpus(s, 30)],
            one_way_delay=0.005,
        ),
        "quick-daemon": Scenario(
            "quick-daemon",
            "sync --every 1s, 3 idle polls vs mpop's cold idle runs (30 small messages)",
            lambda s: [corpus.small_corpus(s, 30)],
            idle=True,
            polls=3,
        ),
    }


@dataclass
class ClientResult:
    """Every measured run of one client in one scenario, and what it delivered."""

    client: str
    may_alter: bool
    runs: list[Measurement] = field(default_factory=list)
    verification: Verification | None = None
    failures: list[str] = field(default_factory=list)
    rss_trace: list[int] = field(default_factory=list)  # KiB after each daemon poll

    def median(self, key: Callable[[Measurement], float]) -> float:
        return statistics.median(key(run) for run in self.runs) if self.runs else float("nan")

    @property
    def ok(self) -> bool:
        if self.failures or self.verification is None:
            return False
        if self.may_alter:
            return self.verification.complete
        return self.verification.perfect


# ---------------------------------------------------------------------------------------------
# Running


def warm_up(endpoint: Endpoint, username: str) -> None:
    """Log in and list once, so that Dovecot's first-time indexing is not timed."""
    context = ssl.create_default_context(cafile=str(endpoint.ca_file))
    session = poplib.POP3_SSL(endpoint.host, endpoint.port, context=context, timeout=600)
    try:
        session.user(username)
        session.pass_(endpoint.password)
        session.uidl()
    finally:
        session.quit()


@contextlib.contextmanager
def reachable(endpoint: Endpoint, one_way_delay: float) -> Iterator[Endpoint]:
    """The endpoint itself, or a latency proxy in front of it."""
    if one_way_delay <= 0:
        yield endpoint
        return
    with latency_proxy(endpoint.host, endpoint.port, one_way_delay) as proxy:
        yield replace(endpoint, host=proxy.host, port=proxy.port)


def _accounts(run_dir: Path, usernames: Sequence[str], fmt: str) -> list[AccountSpec]:
    def place(i: int) -> Path:
        base = run_dir / "mail" / f"a{i + 1}"
        return base / "mbox" if fmt == "mbox" else base

    return [AccountSpec(f"a{i + 1}", name, place(i)) for i, name in enumerate(usernames)]


def _run_once(
    client: Client, command: Command, run_dir: Path, result: ClientResult, label: str
) -> Measurement:
    measurement = run_measured(command, run_dir / "client.log", timeout=RUN_TIMEOUT)
    if measurement.returncode not in command.ok_codes:
        tail = (run_dir / "client.log").read_text(errors="replace")[-600:]
        result.failures.append(f"{label}: exit {measurement.returncode}: {tail.strip()}")
    return measurement


def _verify(
    mailboxes: Sequence[Sequence[bytes]], accounts: Sequence[AccountSpec], fmt: str
) -> Verification:
    total = Verification(expected=0)
    for messages, account in zip(mailboxes, accounts, strict=True):
        total = total + verify_destination(messages, account.destination, fmt)
    return total


def run_client(
    env: Environment,
    client: Client,
    usernames: Sequence[str],
    mailboxes: Sequence[Sequence[bytes]],
    scenario: Scenario,
    repeat: int,
    result: ClientResult,
    fmt: str = "maildir",
) -> None:
    """Time ``repeat`` runs, each into a fresh directory."""
    with reachable(env.endpoint, scenario.one_way_delay) as endpoint:
        for _ in range(repeat):
            run_dir = env.fresh_directory(f"{scenario.name}-{client.name}")
            accounts = _accounts(run_dir, usernames, fmt)
            command = _command(client, run_dir, endpoint, accounts, fmt)
            result.runs.append(_run_once(client, command, run_dir, result, "run"))
            verification = _verify(mailboxes, accounts, fmt)
            # Report the worst repetition: one bad copy in any run must show.
            if (
                result.verification is None
                or not verification.complete
                or (verification.exact < result.verification.exact)
            ):
                result.verification = verification


def run_scenario(
    env: Environment, scenario: Scenario, clients: Sequence[Client], repeat: int, seed: int
) -> list[tuple[str, list[ClientResult]]]:
    """Run one scenario; its tables: (name, results), usually one."""
    if not scenario.keyring:
        return _run_scenario(env, scenario, clients, repeat, seed)
    # Each client finds its password the way its users would: pop3s-fetch through keyring's
    # default backend choice, mpop through libsecret; both end in the same gnome-keyring.
    clients = [c for c in clients if c.name in KEYRING_CLIENTS]
    with running_secret_service(env.scratch) as bus:
        env.session_bus = bus
        try:
            return _run_scenario(env, scenario, clients, repeat, seed)
        finally:
            env.session_bus = None


def _run_scenario(
    env: Environment, scenario: Scenario, clients: Sequence[Client], repeat: int, seed: int
) -> list[tuple[str, list[ClientResult]]]:
    print(f"== {scenario.name}: {scenario.summary}", flush=True)
    if scenario.clients is not None:
        clients = [c for c in clients if c.name in scenario.clients]
    mailboxes = scenario.mailboxes(seed)
    results = [ClientResult(c.name, c.may_alter) for c in clients]
    if not scenario.idle:
        users = {c.name: [env.add_user(m).name for m in mailboxes] for c in clients}
        for names in {tuple(v) for v in users.values()}:
            for name in names:
                warm_up(env.endpoint, name)
        # Interleave the repetitions, so slow drift of the machine hits every client alike.
        for _ in range(repeat):
            for client, result in zip(clients, results, strict=True):
                run_client(env, client, users[client.name], mailboxes, scenario, 1, result)
        for result in results:
            _progress(result)
        reports = [(scenario.name, results)]
        if scenario.baseline:
            results.append(_small_baseline(env, repeat, seed))
        return reports
    # Keep mode: the clients only read, so one mailbox serves them all.
    shared = [env.add_user(m) for m in mailboxes]
    for user in shared:
        warm_up(env.endpoint, user.name)
    fills = [ClientResult(c.name, c.may_alter) for c in clients]
    with reachable(env.endpoint, scenario.one_way_delay) as endpoint:
        # Every client fills its state first; then the timed idle runs are interleaved, like
        # the others: Dovecot answers UIDL faster after a few sessions (its indexes settle),
        # which would otherwise favour whichever client comes later.
        filled = [
            _fill_for_idle(env, endpoint, client, [u.name for u in shared], scenario, fill)
            for client, fill in zip(clients, fills, strict=True)
        ]
        timed = [
            (f, r) for f, r in zip(filled, results, strict=True) if not _daemon(scenario, f[0])
        ]
        for rep in range(repeat):
            if scenario.new_mail:
                # Known state, new mail: every client finds the same new messages.
                news = corpus.small_corpus(seed + 1 + rep, scenario.new_mail)
                shared[0].add_messages(news)
                mailboxes[0] = [*mailboxes[0], *news]
            for (client, command, run_dir, _), result in timed:
                result.runs.append(_run_once(client, command, run_dir, result, "idle run"))
        for (client, command, _, _), result in zip(filled, results, strict=True):
            if _daemon(scenario, client):
                _daemon_polls(command, scenario.polls, result, scenario.interval)
    for (_, _, _, accounts), result in zip(filled, results, strict=True):
        result.verification = _verify(mailboxes, accounts, "maildir")
        _progress(result)
    reports = [(scenario.name, results)]
    if scenario.fill_report:
        for fill in fills:
            fill.verification = next(r.verification for r in results if r.client == fill.client)
        reports.insert(0, (scenario.fill_report, fills))
    return reports


def _daemon(scenario: Scenario, client: Client) -> bool:
    return scenario.polls > 0 and isinstance(client, Pop3sFetch)


#: The daemon scenario's interval: the shortest ``--every`` accepts (``--interval`` changes it).
POLL_INTERVAL = 1.0


def _daemon_polls(
    command: Command, polls: int, result: ClientResult, interval: float = POLL_INTERVAL
) -> None:
    """Run ``sync --every INTERVAL`` for ``polls`` + 1 rounds; record each poll after the first.

    The loop sleeps ``interval`` after a round ends, so a poll's wall time is the gap between
    two summary lines less the interval. CPU is read from /proc (10 ms ticks: each poll is
    given the average over all of them); RSS after each poll is kept in ``result.rss_trace``.
    An interval under the CLI's 1 s minimum (for a memory check over many polls) runs the CLI
    through ``benchmarks._short_interval``, which only lets ``--every`` take it.
    """
    import os
    import signal
    import subprocess

    argv = [a for a in command.argv if a != "--quiet"] + ["--every", f"{interval:g}s"]
    env = dict(command.env)
    if interval < POLL_INTERVAL:
        argv = [sys.executable, "-m", "benchmarks._short_interval", *argv[1:]]
        env["PYTHONPATH"] = str(REPO_ROOT)
    tick = os.sysconf("SC_CLK_TCK")
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=command.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    marks: list[tuple[float, float, int]] = []  # (monotonic, cpu s, RSS KiB) at a round's end
    output: list[bytes] = []
    try:
        for line in process.stdout:
            output.append(line)
            if b": no new mail" not in line:
                continue
            now = time.monotonic()
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss = int(status.split("VmRSS:")[1].split()[0])
            marks.append((now, cpu, rss))
            if len(marks) > polls:
                break
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    if len(marks) <= polls:
        tail = b"".join(output[-5:]).decode(errors="replace")
        result.failures.append(f"daemon: exit {process.returncode} after {len(marks)}: {tail}")
        return
    cpu_each = (marks[-1][1] - marks[0][1]) / polls
    for (t0, _, _), (t1, _, rss) in itertools.pairwise(marks):
        result.runs.append(Measurement(t1 - t0 - interval, cpu_each, rss, 0))
    result.rss_trace = [rss for _, _, rss in marks]


def _command(
    client: Client, run_dir: Path, endpoint: Endpoint, accounts: Sequence[AccountSpec], fmt: str
) -> Command:
    """The client's command for a run in keep mode; its password stored first if it needs."""
    command = client.command(run_dir, endpoint, accounts, fmt, keep=True)
    if endpoint.session_bus is not None:
        client.store_in_keyring(command, endpoint)
    return command


def _fill_for_idle(
    env: Environment,
    endpoint: Endpoint,
    client: Client,
    usernames: Sequence[str],
    scenario: Scenario,
    fill: ClientResult,
) -> tuple[Client, Command, Path, list[AccountSpec]]:
    """One run that fetches everything (measured into ``fill``: a first download), so that
    the timed runs find nothing new."""
    run_dir = env.fresh_directory(f"{scenario.name}-{client.name}")
    accounts = _accounts(run_dir, usernames, "maildir")
    command = _command(client, run_dir, endpoint, accounts, "maildir")
    fill.runs.append(_run_once(client, command, run_dir, fill, "filling run"))
    return client, command, run_dir, accounts


def _small_baseline(env: Environment, repeat: int, seed: int) -> ClientResult:
    """pop3s-fetch on 500 small messages: the RSS the big-message run is compared with."""
    scenario = Scenario("small-baseline", "", lambda s: [corpus.small_corpus(s, 500)])
    mailboxes = scenario.mailboxes(seed)
    user = env.add_user(mailboxes[0]).name
    warm_up(env.endpoint, user)
    result = ClientResult("pop3s-fetch (500 small)", may_alter=False)
    run_client(env, Pop3sFetch(), [user], mailboxes, scenario, repeat, result)
    _progress(result)
    return result


def _progress(result: ClientResult) -> None:
    state = "ok" if result.ok else "PROBLEM"
    verified = result.verification.summary() if result.verification else "not verified"
    print(
        f"   {result.client}: {state}, wall {result.median(lambda m: m.wall):.3f} s, {verified}",
        flush=True,
    )
    for failure in result.failures[:3]:
        print(f"     {failure}", flush=True)


def time_startup(runs: int) -> list[tuple[str, float]]:
    """Median wall time of ``pop3s-fetch --version`` and ``--help``."""
    import os
    import tempfile

    timings = []
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ)
        for flag in ("--version", "--help"):
            command = Command([*Pop3sFetch.executable(), flag], env, Path(scratch))
            walls = [run_measured(command, Path(scratch) / "log").wall for _ in range(runs)]
            timings.append((flag, statistics.median(walls)))
    return timings


# ---------------------------------------------------------------------------------------------
# Reporting


@dataclass(frozen=True, slots=True)
class Target:
    description: str
    passed: bool | None  # None: not measurable (a peer missing or failed)
    detail: str


def _wall(results: Sequence[ClientResult], name: str) -> float | None:
    for r in results:
        if r.client == name and r.runs and not r.failures:
            return r.median(lambda m: m.wall)
    return None


def _rss_mib(results: Sequence[ClientResult], name: str) -> float | None:
    for r in results:
        if r.client == name and r.runs and not r.failures:
            return r.median(lambda m: m.max_rss_kib) / MIB
    return None


def _cpu(results: Sequence[ClientResult], name: str) -> float | None:
    for r in results:
        if r.client == name and r.runs and not r.failures:
            return r.median(lambda m: m.cpu)
    return None


def _ratio_target(
    results: Sequence[ClientResult],
    peer: str,
    limit: float,
    text: str,
    measure: Callable[[Sequence[ClientResult], str], float | None] = _wall,
) -> Target:
    ours, theirs = measure(results, "pop3s-fetch"), measure(results, peer)
    if ours is None or theirs is None:
        return Target(text, None, f"{peer} not measured")
    ratio = ours / theirs
    return Target(text, ratio <= limit, f"{ratio:.3f}x")


def targets_for(scenario: str, results: Sequence[ClientResult]) -> list[Target]:
    if scenario == "rtt50":
        return [
            _ratio_target(results, "mpop", 0.6, "wall <= 0.6x mpop"),
            _ratio_target(results, "getmail6", 1 / 30, "wall <= 1/30 getmail6 (30x faster)"),
            _ratio_target(results, "fetchmail", 1 / 30, "wall <= 1/30 fetchmail (30x faster)"),
        ]
    if scenario == "rtt0":
        return [_ratio_target(results, "mpop", 0.85, "wall <= 0.85x mpop")]
    if scenario == "accounts20":
        return [_ratio_target(results, "mpop", 0.2, "wall <= 0.2x mpop")]
    if scenario == "idle20k":
        return [_ratio_target(results, "mpop", 1.2, "wall <= 1.2x mpop")]
    if scenario == "keyidle":  # issue 15, target 1
        return [
            _ratio_target(results, "mpop", 3, "wall <= 3x mpop"),
            _ratio_target(results, "mpop", 5, "cpu <= 5x mpop", _cpu),
        ]
    if scenario in ("big100k", "first100k"):  # issue 15, target 2
        limit = 1.5 if scenario == "big100k" else 0.8
        targets = [_ratio_target(results, "mpop", limit, f"wall <= {limit}x mpop")]
        rss = _rss_mib(results, "pop3s-fetch")
        if rss is not None:
            targets.append(Target("peak RSS <= 80 MB", rss * MIB * 1024 <= 80e6, f"{rss:.1f} MiB"))
        return targets
    if scenario in ("daemon", "quick-daemon"):  # issue 15, target 3
        targets = [_ratio_target(results, "mpop", 0.5, "poll wall <= 0.5x mpop's cold idle run")]
        trace = next((r.rss_trace for r in results if r.client == "pop3s-fetch"), [])
        if len(trace) > 2:
            growth = (trace[-1] - trace[1]) / MIB
            targets.append(
                Target(
                    f"RSS flat over {len(trace) - 1} polls (after the 2nd to the last: +<= 1 MiB)",
                    growth <= 1,
                    f"{trace[1] / MIB:.1f} -> {trace[-1] / MIB:.1f} MiB (+{growth:.2f})",
                )
            )
        return targets
    if scenario == "rtt300":  # issue 15, target 4
        return [_ratio_target(results, "mpop", 0.5, "wall <= 0.5x mpop")]
    if scenario == "big":
        rss = _rss_mib(results, "pop3s-fetch")
        base = _rss_mib(results, "pop3s-fetch (500 small)")
        targets = [_ratio_target(results, "mpop", 1.15, "wall <= 1.15x mpop")]
        if rss is None:
            return targets
        targets.append(Target("peak RSS <= 40 MiB", rss <= 40, f"{rss:.1f} MiB"))
        if base is not None:
            targets.append(
                Target(
                    "peak RSS <= small-message baseline + 2 MiB",
                    rss <= base + 2,
                    f"{rss:.1f} vs {base:.1f} MiB (+{rss - base:.1f})",
                )
            )
        return targets
    return []


def format_table(scenario: str, results: Sequence[ClientResult], repeat: int) -> str:
    ours, ours_cpu = _wall(results, "pop3s-fetch"), _cpu(results, "pop3s-fetch")
    header = (
        f"{'client':<24} {'wall s':>8} {'cpu s':>8} {'RSS MiB':>8} {'pf/peer':>8} {'cpu pf/':>8}  "
        f"copies (worst of {repeat} run{'s' if repeat > 1 else ''})"
    )
    lines = [f"### {scenario} (median of {repeat})", header, "-" * len(header)]
    for r in results:
        if not r.runs:
            lines.append(f"{r.client:<24} not run: {'; '.join(r.failures)[:200]}")
            continue
        wall = r.median(lambda m: m.wall)
        cpu = r.median(lambda m: m.cpu)
        ratio = cpu_ratio = ""
        if ours is not None and ours_cpu is not None and not r.client.startswith("pop3s-fetch"):
            ratio = f"{ours / wall:.3f}x"
            cpu_ratio = f"{ours_cpu / cpu:.2f}x" if cpu > 0 else "-"
        copies = r.verification.summary() if r.verification else "not verified"
        if r.failures:
            copies += f"; FAILED: {r.failures[0][:120]}"
        lines.append(
            f"{r.client:<24} {wall:>8.3f} {cpu:>8.3f} "
            f"{r.median(lambda m: m.max_rss_kib) / MIB:>8.1f} {ratio:>8} {cpu_ratio:>8}  {copies}"
        )
    return "\n".join(lines)


def format_targets(targets: Sequence[Target]) -> str:
    marks = {True: "PASS", False: "MISS", None: "n/a "}
    return "\n".join(f"  [{marks[t.passed]}] {t.description}: {t.detail}" for t in targets)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark pop3s-fetch against mpop, getmail6 and fetchmail on a private "
        "Dovecot POP3S server.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*_scenarios(), *_quick_scenarios()],
        help="run only this scenario (repeatable; default: all, or the quick ones)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny corpus, about a minute")
    parser.add_argument("--repeat", type=int, default=None, help="runs per client (default 3)")
    parser.add_argument(
        "--client",
        action="append",
        choices=list(ALL_CLIENTS),
        help="measure only this client (repeatable; pop3s-fetch is always included)",
    )
    parser.add_argument(
        "--polls",
        type=int,
        default=None,
        help="idle polls of the daemon scenarios (default: daemon 200, quick-daemon 3)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between the daemon scenarios' polls (default 1, the CLI's minimum; less "
        "runs the CLI through benchmarks._short_interval, e.g. --polls 1000 --interval 0.05 "
        "for the memory check)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--keep-scratch", action="store_true", help="keep the run directories")
    return parser.parse_args(argv)


def select_clients(args: argparse.Namespace) -> tuple[list[Client], list[str]]:
    names = ["pop3s-fetch", "mpop"] if args.quick else list(ALL_CLIENTS)
    if args.client:
        names = ["pop3s-fetch", *[n for n in args.client if n != "pop3s-fetch"]]
    clients: list[Client] = []
    skipped = []
    for name in names:
        client = ALL_CLIENTS[name]()
        if client.available():
            clients.append(client)
        else:
            skipped.append(f"{name} (not installed)")
    return clients, skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # tables as they come
    repeat = args.repeat or (1 if args.quick else 3)
    catalogue = {**_scenarios(), **_quick_scenarios()}
    names = args.scenario or list(_quick_scenarios() if args.quick else _scenarios())
    clients, skipped = select_clients(args)
    print(f"command: python -m benchmarks.run {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(
        f"clients: {', '.join(c.name for c in clients)}"
        + (f"; skipped: {', '.join(skipped)}" if skipped else "")
    )
    # An installed package has its bytecode compiled by pip; a checkout under
    # PYTHONDONTWRITEBYTECODE would otherwise recompile every module on every run.
    compileall.compile_dir(str(REPO_ROOT / "pop3s_fetch"), quiet=1)
    started = time.monotonic()
    reports = []
    healthy = True
    with running_environment(keep_scratch=args.keep_scratch) as env:
        for name in names:
            scenario = catalogue[name]
            if scenario.polls and args.polls:
                scenario = replace(scenario, polls=args.polls)
            if scenario.polls and args.interval is not None:
                scenario = replace(scenario, interval=args.interval)
            runs = (
                scenario.repeat if scenario.repeat and not (args.repeat or args.quick) else repeat
            )
            for table, results in run_scenario(env, scenario, clients, runs, args.seed):
                healthy &= all(r.ok for r in results if r.client.startswith("pop3s-fetch"))
                reports.append((table, results, 1 if table == scenario.fill_report else runs))
    print()
    for name, results, runs in reports:
        print(format_table(name, results, runs))
        targets = targets_for(name, results)
        if targets:
            print(format_targets(targets))
        print()
    startup_runs = 5 if args.quick else 20
    limit = 0.100
    print(f"### start-up (median of {startup_runs})")
    for flag, wall in time_startup(startup_runs):
        mark = "PASS" if wall < limit else "MISS"
        print(f"  [{mark}] pop3s-fetch {flag}: {wall * 1000:.0f} ms (target < 100 ms)")
    print(f"\ntotal time: {time.monotonic() - started:.0f} s")
    if not healthy:
        print("pop3s-fetch FAILED or delivered copies that differ from the source")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
