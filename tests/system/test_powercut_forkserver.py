"""The fork server runs ``python -m MODULE`` as its own process, minus the start-up and imports.

The power-cut suite starts every sync it cuts, and every recovery sync, through
:mod:`tests.powercut.forkserver`; these tests check that such a run is still what ``python -m``
would run: its own process and pid, its argv, streams and exit code, killable, and that the
package's modules were indeed imported before it started (the point of it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.powercut.forkserver import ForkServer

PROBE = "import sys; print('preloaded' if 'pop3s_fetch.sync' in sys.modules else 'cold')"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    with ForkServer("pop3s_fetch", dict(os.environ), tmp_path / "forkserver.log") as started:
        yield started


def test_a_run_is_python_dash_m_with_its_argv_streams_and_exit_code(
    server: ForkServer, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    assert server.run("pop3s_fetch", ["--version"], output, 30) == 0
    assert "pop3s-fetch" in output.read_text()
    errors = tmp_path / "errors"
    assert server.run("pop3s_fetch", ["--no-such-option"], errors, 30) == 64  # EX_USAGE
    assert "no-such-option" in errors.read_text()


def test_a_run_has_the_packages_modules_imported_before_it_starts(
    server: ForkServer, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    assert server.run("timeit", ["-n", "1", "-s", PROBE, "pass"], output, 30) == 0
    assert output.read_text().startswith("preloaded\n")
    # the same probe in a fresh interpreter, to show it can tell
    fresh = subprocess.run(
        [sys.executable, "-m", "timeit", "-n", "1", "-s", PROBE, "pass"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.startswith("cold\n")


def test_a_run_is_a_process_of_its_own_that_can_be_killed(
    server: ForkServer, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    pid = server.start("timeit", ["-n", "1000000000", "pass"], output, output)
    assert pid not in (os.getpid(), os.getppid())
    with pytest.raises(TimeoutError):
        server.wait(0.2)  # still running: a run is waited for, not timed
    os.kill(pid, signal.SIGKILL)
    assert server.wait(30) == -signal.SIGKILL
    assert server.run("pop3s_fetch", ["--version"], output, 30) == 0  # and the server goes on
