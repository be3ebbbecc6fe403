"""A/B one first download across versions of pop3s-fetch: ``python -m benchmarks.ab A B ...``.

Each argument is a git revision of this repository (exported to a scratch directory) or a
directory holding a ``pop3s_fetch`` package (an edited copy, to try a constant). The same
mailbox is downloaded into a fresh Maildir by each version in turn, round after round, so that
a change in the machine's load falls on every version alike; ``--mpop`` adds mpop to each
round as the peer. Prints the medians of wall, user and system seconds. Runs use the installed
dependencies and the benchmark's private Dovecot; only ``pop3s_fetch`` comes from the version
(``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import tempfile
from pathlib import Path

from benchmarks import corpus
from benchmarks.clients import REPO_ROOT, AccountSpec, Mpop, Pop3sFetch, prepare_destination
from benchmarks.environment import running_environment
from benchmarks.measure import Command, Measurement, run_measured
from benchmarks.run import DEFAULT_SEED, warm_up

MPOP = "mpop"


def _tree(version: str, scratch: Path) -> Path:
    """A directory whose ``pop3s_fetch`` is ``version`` (a directory, or a revision exported)."""
    given = Path(version)
    if (given / "pop3s_fetch").is_dir():
        tree = given.resolve()
    else:
        tree = scratch / version.replace("/", "_")
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", version, "pop3s_fetch"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    # The benchmark's environment writes no bytecode: compile now, so no run pays for it.
    compileall.compile_dir(tree / "pop3s_fetch", quiet=1)
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("versions", nargs="+", help="git revisions or directories")
    parser.add_argument("--mpop", action="store_true", help="run mpop in each round too")
    parser.add_argument("--count", type=int, default=500, help="messages (default 500)")
    parser.add_argument(
        "--small", action="store_true", help="0.5-3 KB messages (default: the mixed corpus)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs of each (default 5)")
    args = parser.parse_args(argv)

    if args.small:
        messages = corpus.small_corpus(DEFAULT_SEED, args.count)
    else:
        messages = corpus.mixed_corpus(DEFAULT_SEED, args.count)
    runs: dict[str, list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="pop3s-fetch-ab-") as scratch:
        trees = {version: _tree(version, Path(scratch)) for version in args.versions}
        names = [*trees, *([MPOP] if args.mpop else [])]
        runs = {name: [] for name in names}
        with running_environment() as env:
            user = env.add_user(messages)
            warm_up(env.endpoint, user.name)
            for _ in range(args.rounds):
                for name in names:
                    run_dir = env.fresh_directory("ab")
                    account = AccountSpec("a1", user.name, run_dir / "mail" / "a1")
                    client = Mpop() if name == MPOP else Pop3sFetch()
                    command = client.command(run_dir, env.endpoint, [account], "maildir", True)
                    prepare_destination(account.destination, "maildir")
                    environment = dict(command.env)
                    if name != MPOP:
                        environment["PYTHONPATH"] = str(trees[name])
                    measured = run_measured(
                        Command(command.argv, environment, command.cwd), run_dir / "log"
                    )
                    if measured.returncode != 0:
                        raise SystemExit(f"ab: {name} exited {measured.returncode}")
                    runs[name].append(measured)
    what = f"{args.count} {'small' if args.small else 'mixed'} messages, first download"
    print(f"{what}, medians of {args.rounds} (wall, cpu seconds):")
    for name, measurements in runs.items():
        wall = statistics.median(m.wall for m in measurements)
        cpu = statistics.median(m.cpu for m in measurements)
        walls = " ".join(f"{m.wall:.2f}" for m in measurements)
        print(f"  {name:24} wall {wall:7.3f}  cpu {cpu:7.3f}   walls: {walls}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
