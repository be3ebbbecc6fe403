"""What running the user's programs needs everywhere: a status in words, a clean kill, and a
runner with a deadline.

``password_command``, ``on_new_mail``, an MDA and a header ``filter`` each run a program of
the user's in a session of its own, so that a timeout can stop it together with whatever it
started (a gpg-agent, a pinentry, a filter). :func:`run_capped` is the runner the hook and the
header filter share: stdin given as bytes (or none), stdout dropped, the start of stderr kept.

Must not know: which program it is, what it prints, or anything else of the program.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

#: How much of a program's stderr run_capped keeps (the rest is read and dropped).
STDERR_CAP = 4096
#: How often a program is looked at while it keeps stderr open (a detached child may hold it).
_POLL = 0.1


def exit_status(returncode: int) -> str:
    """``exit status 3`` or ``killed by SIGTERM``, as a user reads it."""
    import signal  # here and below: an idle sync runs no program, so it does not pay for these

    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the program and every process it started in its session, then reap it."""
    import signal

    # It may have ended on its own meanwhile, or (setuid) be beyond our reach.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_capped(
    argv: tuple[str, ...] | list[str],
    env: Mapping[str, str],
    timeout: float,
    *,
    stdin: bytes | None = None,
) -> tuple[int, bytes]:
    """Run ``argv`` without a shell; return its exit status and the start of its stderr.

    ``stdin`` is written to it (a program that stops reading early is not an error), or it
    gets /dev/null. At ``timeout`` its whole group is killed and TimeoutExpired raised.

    Raises:
        OSError: it could not be started (FileNotFoundError, PermissionError, ...).
        subprocess.TimeoutExpired: it ran past ``timeout``.
    """
    import selectors
    import subprocess

    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )
    assert process.stderr is not None
    kept = bytearray()
    pending = memoryview(stdin or b"")
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stderr, selectors.EVENT_READ)
            if process.stdin is not None:
                os.set_blocking(process.stdin.fileno(), False)
                if pending:
                    selector.register(process.stdin, selectors.EVENT_WRITE)
                else:
                    process.stdin.close()
            # Until stderr closes, or the program itself has ended (a child it left behind may
            # keep stderr open, and is its own business then).
            while process.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stop_group(process)
                    raise subprocess.TimeoutExpired(argv, timeout)
                for key, _ in selector.select(min(remaining, _POLL)):
                    if key.fileobj is process.stderr:
                        if not _read_into(process, kept):
                            selector.unregister(process.stderr)
                    else:
                        pending = _write_some(process, pending)
                        if not pending:
                            selector.unregister(key.fileobj)
                if not selector.get_map():
                    break
            with contextlib.suppress(KeyError):
                selector.get_key(process.stderr)
                while selector.select(0) and _read_into(process, kept):
                    pass  # what it wrote just before it ended
        returncode = process.wait(max(0.0, deadline - time.monotonic()))
    except BaseException:
        # The deadline, or Ctrl-C while it runs: nothing of its group is left behind.
        stop_group(process)
        raise
    finally:
        process.stderr.close()
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()
    return returncode, bytes(kept[:STDERR_CAP])


def _read_into(process: subprocess.Popen[bytes], kept: bytearray) -> bool:
    """Read what stderr has; False at its end."""
    assert process.stderr is not None
    chunk = os.read(process.stderr.fileno(), 65536)
    kept += chunk[: max(0, STDERR_CAP - len(kept))]
    return bool(chunk)


def _write_some(process: subprocess.Popen[bytes], pending: memoryview) -> memoryview:
    """Write what the pipe takes; what is left (nothing once written, or once it stopped
    reading: a program may decide on the first lines)."""
    assert process.stdin is not None
    try:
        written = os.write(process.stdin.fileno(), pending)
    except BlockingIOError:
        return pending
    except OSError as err:
        if err.errno != errno.EPIPE:
            raise
        written = len(pending)
    rest = pending[written:]
    if not rest:
        process.stdin.close()
    return rest
