"""The header filter (``filter``): a program of the user's decides from a message's header
whether it is downloaded at all.

It gets the header block (``TOP n 0``: the header lines and the empty line after them, LF line
ends) on stdin, runs without a shell, with ``{sender}``, ``{recipient}``, ``{account}`` and
``{uidl}`` replaced in its arguments as for an MDA, and ``POP3S_FETCH_ACCOUNT`` and
``POP3S_FETCH_UIDL`` in its environment (``$CREDENTIALS_DIRECTORY`` removed: it gets no
secret). Its exit status is the verdict: 0 fetch, 1 skip (leave it on the server), 2 delete
it unread (only with ``filter_may_delete``); anything else, a signal, or running past
``filter_timeout`` (its whole group is then killed) is an error for that message, which then
stays on the server and is shown to the filter again next run.

Must not know: POP3, the state store, how mail is delivered, or the UI: it is handed bytes and
names and returns a :class:`Verdict`; the sync decides what each verdict does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pop3s_fetch.destinations.mda import expand, message_values
from pop3s_fetch.hooks import first_line
from pop3s_fetch.printable import printable
from pop3s_fetch.programs import exit_status, run_capped

FETCH, SKIP, DELETE = 0, 1, 2
ENV_ACCOUNT = "POP3S_FETCH_ACCOUNT"
ENV_UIDL = "POP3S_FETCH_UIDL"
#: Removed from the filter's environment: it names the directory of systemd credentials.
WITHHELD = ("CREDENTIALS_DIRECTORY",)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the filter said: ``problem`` (one line) is set for "error"."""

    action: Literal["fetch", "skip", "delete", "error"]
    problem: str = ""
    #: The error is the configuration's (exit 2 without filter_may_delete), not the program's.
    config: bool = False


def ask(
    argv: tuple[str, ...],
    head: bytes,
    *,
    account: str,
    uidl: str,
    recipient: str,
    timeout: float,
    may_delete: bool,
    environ: Mapping[str, str] | None = None,
) -> Verdict:
    """Run the filter on one message's header; never raises for the program's faults."""
    values = message_values(head, {"uidl": uidl, "recipient": recipient}, account)
    args = expand(argv, values)
    env = {k: v for k, v in (os.environ if environ is None else environ).items()}
    for key in WITHHELD:
        env.pop(key, None)
    env[ENV_ACCOUNT], env[ENV_UIDL] = account, uidl
    what = f"the filter {printable(Path(argv[0]).name)}"
    try:
        status, stderr = run_capped(args, env, timeout, stdin=head)
    except FileNotFoundError:
        return Verdict("error", f"{what} could not be run: no such file")
    except subprocess.TimeoutExpired:
        return Verdict(
            "error",
            f"{what} ran past filter_timeout, {timeout:g} seconds, and was killed",
        )
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        return Verdict("error", f"{what} could not be run: {reason}")
    if status == FETCH:
        return Verdict("fetch")
    if status == SKIP:
        return Verdict("skip")
    said = first_line(stderr)
    said = f"; it wrote: {said}" if said else "; it wrote nothing on stderr"
    if status == DELETE and may_delete:
        return Verdict("delete")
    if status == DELETE:
        return Verdict(
            "error",
            f"{what} asked to delete it unread (exit status 2), but filter_may_delete is not "
            f"true for this account{said}",
            config=True,
        )
    return Verdict("error", f"{what} failed ({exit_status(status)}){said}")
