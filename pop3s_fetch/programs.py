"""What running the user's programs needs everywhere: a status in words, and a clean kill.

``password_command``, ``on_new_mail`` and an MDA each run a program of the user's in a session
of its own, so that a timeout can stop it together with whatever it started (a gpg-agent, a
pinentry, a filter). Each caller keeps its own way of feeding and reading the program; these
two pieces were written three times before.

Must not know: which program it is, what it prints, or anything else of the program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def exit_status(returncode: int) -> str:
    """``exit status 3`` or ``killed by SIGTERM``, as a user reads it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the program and every process it started in its session, then reap it."""
    # It may have ended on its own meanwhile, or (setuid) be beyond our reach.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
