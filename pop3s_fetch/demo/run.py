"""``pop3s-fetch demo``: the whole job, end to end, with nothing set up.

It starts the built-in POP3S server on 127.0.0.1 with a throwaway CA and sample messages
chosen to break careless clients, then runs the real sync code (verified TLS included: the
client trusts only the throwaway CA, as ``ca_file`` would) into a Maildir and an mbox, runs it
again to show that nothing is fetched twice, and checks the bytes that landed. The password is
random and handed over in memory: the demo never touches the user's keyring.

Must not know: click or rich (it reports through the callables it is given), the keyring,
or POP3 (the server and the sync code speak it).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pop3s_fetch.config import Account
from pop3s_fetch.demo import ca as throwaway_ca
from pop3s_fetch.demo import samples
from pop3s_fetch.demo.server import MailStore, Pop3Server
from pop3s_fetch.destinations import read_messages
from pop3s_fetch.errors import DeliveryError
from pop3s_fetch.sync import AccountResult, Reporter, SyncOptions, sync_account


@dataclass
class DemoReport:
    """Lines to show the user, and whether every check passed."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True


#: Marks a directory as the demo's own, so a later demo may clear what it wrote there.
MARKER = ".pop3s-fetch-demo"
_OWN_ENTRIES = ("Maildir", "mbox", "state", MARKER)


def run(
    directory: Path,
    reporter: Reporter,
    say: Callable[[str], None],
    show: Callable[[Sequence[AccountResult]], None],
) -> DemoReport:
    """Serve the sample messages, sync them twice into ``directory``, verify, report.

    Raises:
        DeliveryError: ``directory`` holds something that is not a previous demo's output.
    """
    _prepare(directory)
    messages = samples.demo_messages()
    password = secrets.token_urlsafe(24)
    report = DemoReport()
    with tempfile.TemporaryDirectory(prefix="pop3s-fetch-demo-ca-") as ca_dir:
        ca = throwaway_ca.create(Path(ca_dir))
        store = MailStore(messages)
        server = Pop3Server(throwaway_ca.server_context(ca), {"demo": (password, store)})
        with server:
            say(
                f"demo: a POP3S server on 127.0.0.1:{server.port} (throwaway CA, verified TLS) "
                f"serves {len(messages)} sample messages: long lines, 8-bit text, lines "
                'starting with "From " and ".", an attachment, no final newline'
            )
            accounts = _accounts(directory, server.port, ca.ca_file)
            options = SyncOptions(state_dir=directory / "state")
            say(f"demo: first sync, into {directory}:")
            first = [sync_account(a, lambda: password, options, reporter) for a in accounts]
            show(first)
            say("demo: second sync (nothing should be fetched again):")
            second = [sync_account(a, lambda: password, options, reporter) for a in accounts]
            show(second)
    for account, result, again in zip(accounts, first, second, strict=True):
        _check(report, account, result, again, messages)
    if report.ok:
        report.lines.append(
            "demo: every message landed byte for byte, and the second sync fetched nothing. "
            "Next: pop3s-fetch init sets up your first account (or start from the annotated "
            "example: mkdir -p ~/.config/pop3s-fetch && "
            "pop3s-fetch config example > ~/.config/pop3s-fetch/config.toml, then "
            "pop3s-fetch password set ACCOUNT), then run pop3s-fetch sync"
        )
    return report


def _prepare(directory: Path) -> None:
    """Start from an empty directory, clearing only what an earlier demo wrote there."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise DeliveryError(
                f"{directory} already exists and was not made by pop3s-fetch demo",
                hint="pass --directory with a new or empty directory",
            )
        for name in _OWN_ENTRIES:
            path = directory / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("written by pop3s-fetch demo; safe to delete\n")


def _accounts(directory: Path, port: int, ca_file: Path) -> list[Account]:
    return [
        Account(
            name=f"demo-{fmt}",
            host="127.0.0.1",
            port=port,
            username="demo",
            destination=directory / ("Maildir" if fmt == "maildir" else "mbox"),
            format=fmt,
            ca_file=ca_file,
            timeout=30.0,
        )
        for fmt in ("maildir", "mbox")
    ]


def _check(
    report: DemoReport,
    account: Account,
    first: AccountResult,
    second: AccountResult,
    originals: Sequence[bytes],
) -> None:
    if first.error or second.error:
        report.ok = False
        report.lines.append(f"demo: {account.name} failed: {first.error or second.error}")
        return
    assert account.destination is not None  # the demo's accounts deliver to files
    landed = read_messages(account.destination, account.format)
    same = sorted(landed) == sorted(_as_stored(m) for m in originals)
    report.ok = report.ok and same and second.fetched == 0
    verdict = "byte-identical to the server's copies" if same else "NOT identical (a bug!)"
    report.lines.append(
        f"demo: {account.destination} ({account.format}): {len(landed)} messages, {verdict}"
    )


def _as_stored(message: bytes) -> bytes:
    # POP3 ends every message with a line end (RFC 1939 section 3), so one stored without a
    # final newline can only arrive with one.
    return message if message.endswith(b"\n") else message + b"\n"
