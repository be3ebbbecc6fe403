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
import threading
from collections.abc import Mapping
from pathlib import Path

from pop3s_fetch.config import Account
from pop3s_fetch.printable import printable
from pop3s_fetch.programs import exit_status, run_capped

#: Variables the hook finds in its environment.
ENV_ACCOUNT = "POP3S_FETCH_ACCOUNT"
ENV_NEW = "POP3S_FETCH_NEW"
ENV_BYTES = "POP3S_FETCH_BYTES"
ENV_DESTINATION = "POP3S_FETCH_DESTINATION"
#: Removed from the hook's environment: it names the directory of systemd credentials.
WITHHELD = ("CREDENTIALS_DIRECTORY",)

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
    import subprocess  # only a run with a hook to call pays for it

    env = hook_environment(account, messages, octets, os.environ if environ is None else environ)
    what = f"on_new_mail ({printable(Path(argv[0]).name)})"
    timeout = account.on_new_mail_timeout
    with _one_at_a_time:
        try:
            returncode, stderr = run_capped(argv, env, timeout)
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
