"""The after-sync hook (``on_new_mail``): tell a program, such as ``notmuch new``, that mail came.

A hook runs after a sync that delivered at least one message, once the mail is durable and the
account's lock is released, so nothing it does can change what was delivered; its failure comes
back as a one-line warning, never as an exception. What it is told is in its environment
(``POP3S_FETCH_ACCOUNT``, ``POP3S_FETCH_NEW``, ``POP3S_FETCH_BYTES``,
``POP3S_FETCH_DESTINATION``); it gets no secret: not in argv, not on stdin (``/dev/null``), and
``$CREDENTIALS_DIRECTORY`` (where systemd puts ``password_credential`` files) is removed from
its environment. It runs without a shell, in a session of its own so that a timeout stops its
children too. Hooks run one at a time, even when accounts sync in parallel: the usual hook is
the same indexer for every account, and two ``notmuch new`` at once fight over its database.

Must not know: POP3, how mail is delivered, the state store, or the UI (the caller reports).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from pop3s_fetch.config import Account
from pop3s_fetch.printable import printable
from pop3s_fetch.programs import exit_status, stop_group

#: Variables the hook finds in its environment.
ENV_ACCOUNT = "POP3S_FETCH_ACCOUNT"
ENV_NEW = "POP3S_FETCH_NEW"
ENV_BYTES = "POP3S_FETCH_BYTES"
ENV_DESTINATION = "POP3S_FETCH_DESTINATION"
#: Removed from the hook's environment: it names the directory of systemd credentials.
WITHHELD = ("CREDENTIALS_DIRECTORY",)

#: How much of the hook's stderr is kept (the rest is read and dropped, so it never blocks).
_STDERR_CAP = 4096
#: How often the hook is looked at while it keeps stderr open (a detached child may hold it).
_POLL = 0.1

_one_at_a_time = threading.Lock()


def hook_environment(
    account: Account, messages: int, octets: int, environ: Mapping[str, str]
) -> dict[str, str]:
    """``environ`` without what leads to secrets, plus what the hook is told."""
    env = {k: v for k, v in environ.items() if k not in WITHHELD}
    env[ENV_ACCOUNT] = account.name
    env[ENV_NEW] = str(messages)
    env[ENV_BYTES] = str(octets)
    env[ENV_DESTINATION] = str(account.destination or "")  # none with format "mda"
    return env


def run_on_new_mail(
    account: Account, messages: int, octets: int, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """Run ``account.on_new_mail`` if set and ``messages`` arrived; a warning if it failed.

    The warning names the program, the exit status (or the signal, or the timeout) and the
    first line of its stderr, escaped; its stdout is discarded, since it would otherwise mix
    with ours (and break ``--json``).
    """
    argv = account.on_new_mail
    if not argv or messages <= 0:
        return None
    env = hook_environment(account, messages, octets, os.environ if environ is None else environ)
    what = f"on_new_mail ({printable(Path(argv[0]).name)})"
    timeout = account.on_new_mail_timeout
    with _one_at_a_time:
        try:
            returncode, stderr = _run(argv, env, timeout)
        except FileNotFoundError:
            return f"{what}: command not found; the mail was delivered"
        except PermissionError:
            return f"{what} could not be run: permission denied; the mail was delivered"
        except subprocess.TimeoutExpired:
            return (
                f"{what} did not finish within {timeout:g} seconds and was stopped "
                "(raise on_new_mail_timeout if it needs longer); the mail was delivered"
            )
        except OSError as err:
            reason = err.strerror or type(err).__name__
            return f"{what} could not be run: {reason}; the mail was delivered"
    if returncode == 0:
        return None
    text = f"{what} failed ({exit_status(returncode)})"
    first = first_line(stderr)
    if first:
        text += f": {first}"
    return text + "; the mail was delivered"


def first_line(stderr: bytes, limit: int = 200) -> str:
    """The first non-empty line, decoded, escaped (it may hold anything) and shortened."""
    for raw in stderr.splitlines():
        line = raw.decode("utf-8", "replace").strip()
        if line:
            shown = printable(line)
            return shown if len(shown) <= limit else shown[: limit - 3] + "..."
    return ""


def _run(argv: tuple[str, ...], env: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """Run ``argv``; return its exit status and the start of its stderr; stop its group at the
    timeout (raising TimeoutExpired)."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert process.stderr is not None
    kept = bytearray()
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stderr, selectors.EVENT_READ)
            # Until stderr closes, or the hook itself has ended (a child it left behind may
            # keep stderr open, and is its own business then).
            while process.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stop_group(process)
                    raise subprocess.TimeoutExpired(argv, timeout)
                if selector.select(min(remaining, _POLL)) and not _read_into(process, kept):
                    break
            while selector.select(0) and _read_into(process, kept):
                pass  # what the hook wrote just before it ended
        try:
            returncode = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_group(process)
            raise
    finally:
        process.stderr.close()
    return returncode, bytes(kept)


def _read_into(process: subprocess.Popen[bytes], kept: bytearray) -> bool:
    """Read what stderr has; False at its end."""
    assert process.stderr is not None
    chunk = os.read(process.stderr.fileno(), 65536)
    kept += chunk[: max(0, _STDERR_CAP - len(kept))]
    return bool(chunk)
