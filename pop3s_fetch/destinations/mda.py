"""Delivery through a program (an MDA: procmail, maildrop, dovecot-lda), one message at a time.

Each message is staged in an unnamed temporary file (it vanishes with the process, so a
killed run leaves nothing to clean up), then handed to the program byte for byte on its
standard input. Its argv comes from the configuration and is run without a shell; ``{sender}``,
``{recipient}``, ``{account}`` and ``{uidl}`` in an argument are replaced by the message's
values, never splitting the argument. The program's exit status is the verdict: 0 delivered,
75 (EX_TEMPFAIL) not delivered but try again later, anything else (another status, a signal,
running past the timeout) not delivered; the last two raise :class:`MessageRefused` for that
message alone, naming the status and the first lines of the program's stderr.

Order of durability: the staged file needs none (the server keeps the message until it is
recorded as delivered); the caller journals the message (state commit), the program runs,
and the caller marks it delivered as soon as publish() returns (state commit), one message
per publish() (``max_batch = 1``), so a crash can leave at most one message in doubt.

A program cannot be asked afterwards whether it delivered, so :meth:`Mda.reconcile` cannot
look: a message journalled by a run that died while (or just after) its program ran is
answered "not delivered" and fetched and handed over again. Mail is never lost that way; it
may be delivered twice, in that window only (README, Guarantees).

It must not know about other backends, POP3, UIDLs, the state store or the configuration file:
the values it substitutes are the caller's labels and what the message's own header says.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pop3s_fetch.destinations.base import (
    Command,
    Destination,
    MessageRefused,
    MessageWriter,
    Placement,
    RecordIntents,
    StagedMessage,
    StagingDestination,
    StoredCopy,
)
from pop3s_fetch.destinations.files import DIRECTORY_MODE, delivery_error
from pop3s_fetch.destinations.headers import (
    HEADER_SNIFF_LIMIT,
    envelope_recipient,
    envelope_sender,
)
from pop3s_fetch.errors import DeliveryError
from pop3s_fetch.programs import exit_status, stop_group

#: The names an argument may hold as ``{name}``; the configuration refuses any other.
PLACEHOLDERS = ("sender", "recipient", "account", "uidl")
#: sysexits.h: "temporary failure; the user is invited to retry".
EX_TEMPFAIL = 75
#: What is kept of the program's stderr, and how many of its lines an error shows.
STDERR_LIMIT = 4096
STDERR_LINES = 3
STDERR_LINE_LENGTH = 200
#: What every journalled placement of this backend names as its target.
TARGET = "mda"
#: Removed from the program's environment: it names the directory of systemd credentials.
WITHHELD = ("CREDENTIALS_DIRECTORY",)

_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def expand(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """``argv`` with each ``{name}`` replaced by its value; one argument stays one argument."""
    return [_PLACEHOLDER.sub(lambda match: values.get(match[1], ""), arg) for arg in argv]


def message_values(head: bytes, labels: Mapping[str, str], owner: str) -> dict[str, str]:
    """The placeholder values of one message.

    ``sender``: the Return-Path (else MAILER-DAEMON); ``recipient``: Delivered-To, else
    X-Original-To, else the caller's ``recipient`` label; ``account``: the owner; ``uidl``: the
    caller's label. An address read from the message never starts with "-", so a hostile
    message cannot turn an argument into an option.
    """
    sender = envelope_sender(head)
    recipient = envelope_recipient(head)
    return {
        "sender": "MAILER-DAEMON" if sender.startswith("-") else sender,
        "recipient": (
            recipient
            if recipient is not None and not recipient.startswith("-")
            else labels.get("recipient", "")
        ),
        "account": owner,
        "uidl": labels.get("uidl", ""),
    }


def find_program(argv0: str) -> str | None:
    """The executable the argv names, as exec would find it, or None."""
    if os.sep in argv0:
        return argv0 if os.path.isfile(argv0) and os.access(argv0, os.X_OK) else None
    return shutil.which(argv0)


@dataclass(eq=False, slots=True)
class _StagedMdaMessage(StagedMessage):
    file: IO[bytes]
    values: dict[str, str]


class Mda(StagingDestination[_StagedMdaMessage]):
    """Runs ``command`` for each message; ``scratch`` is a private directory for staging."""

    max_batch = 1
    verifiable = False

    def __init__(self, scratch: Path, *, owner: str, command: Command) -> None:
        super().__init__(_StagedMdaMessage)
        if not command.argv:
            raise ValueError("an MDA needs an argv")
        self._scratch = scratch
        self._owner = owner
        self._command = command
        if find_program(command.argv[0]) is None:
            raise DeliveryError(
                f"cannot run the MDA {command.argv[0]}: no such executable",
                hint="install it, or give its full path as the first word of mda",
            )
        try:
            scratch.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        except OSError as err:
            raise delivery_error(err, "create the directory", scratch) from err

    # --- writing ------------------------------------------------------------------------

    def open_message(self, labels: Mapping[str, str] | None = None) -> MessageWriter:
        try:
            # Unnamed where the system can (O_TMPFILE), else unlinked at once: never seen.
            file = tempfile.TemporaryFile(dir=self._scratch)  # noqa: SIM115  # the writer closes it
        except OSError as err:
            raise delivery_error(err, "create a temporary file in", self._scratch) from err
        return self._track(_MdaWriter(self, file, dict(labels or {})))

    # --- publishing ---------------------------------------------------------------------

    def publish(
        self, staged: Sequence[StagedMessage], record_intents: RecordIntents
    ) -> list[Placement]:
        batch = self._take(staged)
        try:
            if len(batch) != 1:
                raise ValueError("an MDA destination delivers one message per publish()")
            (message,) = batch
            placement = Placement(TARGET, 0, message.size, "")
            record_intents([placement])
            self._deliver(message)
            return [placement]
        finally:
            for message in batch:
                self._discard(message)

    def _deliver(self, message: _StagedMdaMessage) -> None:
        argv = expand(self._command.argv, message.values)
        status, stderr = self._run(argv, message.file)
        if status == 0:
            return
        program = argv[0]
        said = _excerpt(stderr)
        said = f"; it wrote: {said}" if said else "; it wrote nothing on stderr"
        if status == EX_TEMPFAIL:
            raise MessageRefused(
                f"the MDA {program} asked to try again later (exit status 75){said}",
                temporary=True,
                hint="left on the server; the next run hands it over again",
            )
        raise MessageRefused(
            f"the MDA {program} failed ({_describe(status, self._command.timeout)}){said}",
            temporary=False,
            hint="left on the server; fix the MDA or its rules, and the next run "
            "hands it over again",
        )

    def _run(self, argv: list[str], stdin: IO[bytes]) -> tuple[int | None, bytes]:
        """Run the program on the staged file; None for a timeout (its group was killed)."""
        stdin.seek(0)
        with tempfile.TemporaryFile(dir=self._scratch) as errors:
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    env={k: v for k, v in os.environ.items() if k not in WITHHELD},
                    # Its own process group: a timeout stops what it started too, and a
                    # Ctrl-C meant for us does not cut it off half-way through a delivery.
                    start_new_session=True,
                )
            except OSError as err:
                raise DeliveryError(
                    f"cannot run the MDA {argv[0]}: {(err.strerror or str(err)).lower()}",
                    hint="check the first word of mda; the message stays on the server",
                ) from err
            status: int | None
            try:
                status = process.wait(self._command.timeout)
            except subprocess.TimeoutExpired:
                stop_group(process)
                status = None
            except BaseException:
                stop_group(process)
                raise
            errors.seek(0)
            return status, errors.read(STDERR_LIMIT)

    # --- recovery -----------------------------------------------------------------------

    def reconcile(self, placements: Sequence[Placement]) -> list[bool]:
        """Nothing to look at: every journalled message is handed over again (at least once)."""
        return [False] * len(placements)

    def remove_stale_staging(self) -> int:
        return 0  # staged files have no name: a killed run's vanished with it

    def _discard(self, message: _StagedMdaMessage) -> None:
        with contextlib.suppress(OSError):
            message.file.close()


def _describe(status: int | None, timeout: float) -> str:
    if status is None:
        return f"it ran past mda_timeout, {timeout:g} seconds, and was killed"
    return exit_status(status)


def _excerpt(stderr: bytes) -> str:
    """The first few non-blank lines, each trimmed, joined by " | " (the UI escapes them)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    kept = [line[:STDERR_LINE_LENGTH] for line in lines if line][:STDERR_LINES]
    return " | ".join(kept)


class _MdaWriter:
    """Streams one message into its unnamed file, keeping the head for the placeholders."""

    def __init__(self, mda: Mda, file: IO[bytes], labels: dict[str, str]) -> None:
        self._mda = mda
        self._file: IO[bytes] | None = file
        self._labels = labels
        self._head = bytearray()
        self._size = 0

    def write(self, chunk: bytes) -> None:
        file = self._require_open()
        if len(self._head) < HEADER_SNIFF_LIMIT:
            self._head += chunk[: HEADER_SNIFF_LIMIT - len(self._head)]
        try:
            file.write(chunk)
        except OSError as err:
            self.abort()
            raise delivery_error(err, "write a temporary file in", self._mda._scratch) from err
        self._size += len(chunk)

    def finish(self) -> StagedMessage:
        file = self._require_open()
        try:
            file.flush()
        except OSError as err:
            self.abort()
            raise delivery_error(err, "write a temporary file in", self._mda._scratch) from err
        self._file = None
        values = message_values(bytes(self._head), self._labels, self._mda._owner)
        return self._mda._stage(self, _StagedMdaMessage(self._size, file, values))

    def abort(self) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        with contextlib.suppress(OSError):
            file.close()
        self._mda._forget(self)

    def _require_open(self) -> IO[bytes]:
        if self._file is None:
            raise ValueError("this message was already finished or aborted")
        return self._file


def open_destination(
    path: Path, *, owner: str, lock_timeout: float, command: Command | None
) -> Destination:
    """Hand each message to ``command``, staging it in the private directory ``path``."""
    del lock_timeout  # nothing is locked: the program does its own locking
    if command is None:
        raise ValueError("an mda destination needs a command")
    return Mda(path, owner=owner, command=command)


def read_messages(path: Path) -> list[bytes]:
    """Nothing: the program keeps the mail wherever it delivers it."""
    del path
    return []


def stored_copies(path: Path) -> list[StoredCopy]:
    """None: what the program delivered is out of sight."""
    del path
    return []


def holds(path: Path, placements: Sequence[Placement]) -> list[bool]:
    """All False: the program keeps nothing pop3s-fetch can look at."""
    del path
    return [False] * len(placements)
