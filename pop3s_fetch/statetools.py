"""``state list``, ``state forget``, ``state seed`` and ``state rebuild``: the state, by hand.

Each takes the account's lock first (without waiting: a sync that holds it gets its way,
and the command fails as a locked sync does, exit 75), so it never changes a state under a
running sync. ``list`` and ``forget`` never talk to the server; ``seed`` and ``rebuild``
log in, list, and QUIT without a DELE: they download no body and delete nothing.

``rebuild`` trusts what it finds only one-to-one (see :mod:`pop3s_fetch.matching`) and
records each match with the placement the copy really has (the Maildir file's name, the
mbox From line's offset, length and digest), so reconciliation and retention treat it as
they treat a message a sync delivered. Its time of first delivery is the rebuild's own:
``delete_after`` counts from it, never from earlier than the user could know.

Must not know: click or rich (the CLI prints what these return), the keyring (the caller
passes a password getter), the wire protocol beyond the client's methods.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pop3s_fetch import destcheck, matching
from pop3s_fetch.config import Account
from pop3s_fetch.connect import log_in, open_session
from pop3s_fetch.destinations import StoredCopy, stored_copies
from pop3s_fetch.errors import ConfigError, LockedError
from pop3s_fetch.pop3 import Pop3Client, RemoteMessage
from pop3s_fetch.state import SEEDED_PREFIX, AccountLock, Intent, Row, StateStore, open_store
from pop3s_fetch.sync import check_uidls

#: ``origin`` of the rows ``state seed`` writes (target "seeded:seeded").
SEED_ORIGIN = "seeded"


@dataclass(frozen=True, slots=True)
class Listed:
    """One row of ``state list``: where is what the CLI shows."""

    uidl: str
    size: int
    delivered_at: float
    where: str
    pending: bool

    def as_json(self) -> dict[str, object]:
        return {
            "uidl": self.uidl,
            "size": self.size,
            "first_delivered": self.delivered_at,
            "where": self.where,
            "pending": self.pending,
        }


@dataclass
class Rebuilt:
    """What ``state rebuild`` found: recorded, left to fetch, too alike to tell."""

    on_server: int = 0
    known: int = 0  # already in the state: left as they were
    copies: int = 0  # messages found in the destination
    matched: int = 0
    to_fetch: list[matching.Listed] = field(default_factory=list)
    ambiguous: list[matching.Listed] = field(default_factory=list)
    no_headers: int = 0  # TOP refused: cannot be matched, so fetched


def state_path(state_dir: Path, account: str) -> Path:
    return state_dir / f"{account}.sqlite3"


@contextmanager
def locked_store(state_dir: Path, account: str) -> Iterator[StateStore]:
    """The account's state under its lock, taken without waiting (LockedError: exit 75)."""
    with AccountLock(state_dir / f"{account}.lock", account) as lock:
        try:
            lock.acquire(0.0)
        except LockedError as err:
            err.hint = "run it again once that sync has finished"
            raise
        with open_store(state_path(state_dir, account)) as store:
            yield store


def list_state(account: Account, state_dir: Path) -> list[Listed] | None:
    """Every recorded message, oldest first; None when the account has no state at all."""
    if not os.path.lexists(state_path(state_dir, account.name)):
        return None
    with locked_store(state_dir, account.name) as store:
        rows = store.rows()
    in_cur: dict[str, str] = {}
    if account.format == "maildir" and account.destination is not None:
        # Once, not per row: a mail reader moves what it has shown to cur/, with flags.
        with contextlib.suppress(OSError):
            in_cur = {e.split(":", 1)[0]: e for e in os.listdir(account.destination / "cur")}
    shown = destcheck.where(account).shown
    return [_listed(account, row, shown, in_cur) for row in rows]


def _listed(account: Account, row: Row, shown: str, in_cur: dict[str, str]) -> Listed:
    if row.target.startswith(SEEDED_PREFIX):
        where = f"seeded ({row.target.removeprefix(SEEDED_PREFIX)})"
    elif account.format == "mbox":
        where = f"{shown} at offset {row.offset}"
    elif account.format == "maildir":
        name = in_cur.get(row.target)
        where = f"{shown}/cur/{name}" if name else f"{shown}/new/{row.target}"
    else:
        where = "handed to the MDA"
    return Listed(row.uidl, row.size, row.recorded_at, where, row.status == "pending")


def forget(state_dir: Path, account: str, uidls: Sequence[str] | None) -> tuple[int, list[str]]:
    """Forget these UIDLs (all with None): how many rows went, and the UIDLs not recorded."""
    if not os.path.lexists(state_path(state_dir, account)):
        return 0, list(uidls or ())
    with locked_store(state_dir, account) as store:
        missing = sorted(set(uidls) - store.known()) if uidls is not None else []
        return store.forget_everywhere(uidls), missing


def seed(account: Account, password: Callable[[], str], state_dir: Path) -> tuple[int, int]:
    """Mark every message now on the server delivered, downloading nothing.

    Returns (added, on the server); messages already recorded are left as they were.
    """
    with locked_store(state_dir, account.name) as store:
        with _session(account, password) as session:
            uidls = session.unique_ids()
            check_uidls(uidls)
            listed = session.with_sizes(uidls, list(uidls))
            session.quit()
        added = store.seed({m.uidl: m.size for m in listed}, origin=SEED_ORIGIN, when={})
        return added, len(listed)


def rebuild(account: Account, password: Callable[[], str], state_dir: Path) -> Rebuilt:
    """Record the messages on the server that are already in the destination, by headers.

    Refused when the state's copies are elsewhere (as sync refuses), and with format = "mda"
    (the program keeps nothing to compare with).
    """
    if account.format == "mda" or account.destination is None:
        raise ConfigError(
            f'account "{account.name}" delivers to an MDA, which keeps no copy to match',
            hint="rebuild works with a Maildir or mbox destination; "
            f"to start from now: pop3s-fetch state seed {account.name}",
        )
    report = Rebuilt()
    with locked_store(state_dir, account.name) as store:
        destcheck.check(account, store)
        known = store.known()
        copies = stored_copies(account.destination, account.format)
        report.copies = len(copies)
        with _session(account, password) as session:
            uidls = session.unique_ids()
            check_uidls(uidls)
            report.on_server = len(uidls)
            wanted = [n for n, uidl in sorted(uidls.items()) if uidl not in known]
            report.known = len(uidls) - len(wanted)
            chunks: dict[int, list[bytes]] = {}

            def sink(message: RemoteMessage) -> Callable[[bytes], None]:
                return chunks.setdefault(message.number, []).append

            listed = []
            for item in session.headers(session.with_sizes(uidls, wanted), sink):
                message = item.message
                head = b"".join(chunks.pop(message.number, []))
                if item.error is not None:
                    report.no_headers += 1
                    head = b""  # no key: left to fetch
                listed.append(matching.Listed(message.number, message.uidl, message.size, head))
            session.quit()
        found = matching.match(listed, copies)
        store.record_found([_intent(m, c) for m, c in found.matched], when=time.time())
        report.matched = len(found.matched)
        report.to_fetch = found.unmatched
        report.ambiguous = found.ambiguous
    return report


def _intent(message: matching.Listed, copy: StoredCopy) -> Intent:
    p = copy.placement
    return Intent(message.uidl, message.size, p.target, p.offset, p.length, p.digest)


@contextmanager
def _session(account: Account, password: Callable[[], str]) -> Iterator[Pop3Client]:
    secret = password()
    with open_session(account) as session:
        session.prefetch_sizes = True  # every size is wanted: one LIST behind UIDL
        log_in(session, account, secret, then_list=True)
        yield session
