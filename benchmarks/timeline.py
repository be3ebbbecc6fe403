"""Where one sync spends its time: ``python -m benchmarks.timeline [--rtt MS] [--idle]``.

Starts the benchmark's private Dovecot with the 500-message corpus (``--idle``: 20,000 small
messages, fetched once untimed first; ``--known N``: 100 small ones fetched once untimed, then
N new ones before each timed run), optionally behind the latency proxy, runs pop3s-fetch
once through ``benchmarks._probe``, and prints when each step happened, in milliseconds since
the process was started: interpreter ready, imports, TCP, TLS, greeting, CAPA, AUTH, the first
RETR, the first message read, the last publish, exit. The wall time of a benchmark run is the
last line; the lines before it say what it is made of.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import corpus
from benchmarks.clients import REPO_ROOT, AccountSpec, Pop3sFetch
from benchmarks.environment import running_environment
from benchmarks.run import DEFAULT_SEED, reachable, warm_up


def _probe_run(command_env: dict[str, str], cwd: Path, marks_file: Path) -> list[list[object]]:
    env = dict(command_env)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["POP3S_FETCH_PROBE_OUT"] = str(marks_file)
    argv = [sys.executable, "-m", "benchmarks._probe", "sync", "--quiet", "--no-progress"]
    env["POP3S_FETCH_PROBE_T0"] = repr(time.time())
    finished = subprocess.run(argv, env=env, cwd=cwd, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"timeline: pop3s-fetch exited {finished.returncode}")
    marks: list[list[object]] = json.loads(marks_file.read_text())
    return marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline", description=__doc__)
    parser.add_argument("--rtt", type=float, default=0.0, help="round trip in ms (default 0)")
    parser.add_argument("--idle", action="store_true", help="20,000 messages, nothing new")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument(
        "--known",
        type=int,
        default=0,
        metavar="N",
        help="a server seen before: one untimed run fills the state, then N new messages "
        "arrive before each timed run (state knows it pipelines and how it logs in)",
    )
    args = parser.parse_args(argv)
    args.idle = args.idle or bool(args.known)

    if args.known:
        messages = corpus.small_corpus(DEFAULT_SEED, 100)
    elif args.idle:
        messages = corpus.small_corpus(DEFAULT_SEED, 20_000)
    else:
        messages = corpus.mixed_corpus(DEFAULT_SEED, 500)
    with running_environment() as env:
        user = env.add_user(messages)
        warm_up(env.endpoint, user.name)
        with reachable(env.endpoint, args.rtt / 2000) as endpoint:
            run_dir = env.fresh_directory("timeline")
            for run in range(args.runs + (1 if args.idle else 0)):
                if not args.idle:
                    run_dir = env.fresh_directory("timeline")
                account = AccountSpec("a1", user.name, run_dir / "mail" / "a1")
                command = Pop3sFetch().command(run_dir, endpoint, [account], "maildir", True)
                if args.known and run > 0:
                    user.add_messages(corpus.small_corpus(DEFAULT_SEED + run, args.known))
                os.sync()  # as the benchmark does: no earlier writeback in this run
                marks = _probe_run(dict(command.env), run_dir, run_dir / f"marks-{run}.json")
                if args.idle and run == 0:
                    continue  # the filling run
                print(f"run {run + (0 if args.idle else 1)}:")
                previous = 0.0
                for label, at in marks:
                    assert isinstance(at, float)
                    print(f"  {at:8.1f} ms  (+{at - previous:6.1f})  {label}")
                    previous = at
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
