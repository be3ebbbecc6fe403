"""Per-account UIDL state: which messages are delivered, and a journal of deliveries in flight.

One SQLite file per account under ``$XDG_STATE_HOME/pop3s-fetch/`` (mode 0600, directory 0700).
A row is written *before* a message becomes visible in the destination (status ``pending``,
with the exact target) and flipped to ``delivered`` once it is durable; a run that died in
between leaves ``pending`` rows that the next run reconciles against the destination before it
talks to the server. It also keeps an opaque fingerprint of the last listing that left nothing
to do (see :meth:`StateStore.quiet_listing`), dropped by any change to the per-message tables.
This store knows nothing of POP3 or of mailbox formats: targets are opaque.

SQLite runs in WAL mode with ``synchronous=FULL``, so a returned commit survives a power cut;
callers batch many messages per commit (group commit) because each commit costs an fsync.
The directory and the files are created through :mod:`pop3s_fetch.durable`, so a first run's
state cannot vanish in a power cut while the mail it describes survives (order: each new
directory level fsynced into its parent, deepest first; the new file's entry fsynced into the
state directory; then SQLite's own WAL syncs).

A record here can make ``keep = false`` delete a message from the server, so the store trusts
only what no other user could have written, as ssh does for its files: the directory must
belong to the user and be writable by nobody else, and no state or lock file is reached
through a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pop3s_fetch.durable import create_file_durably, fsync_directory, make_dirs_durably
from pop3s_fetch.errors import ExitCode, LockedError, StateError

SCHEMA_VERSION = 1
STATE_FILE_MODE = 0o600
STATE_DIR_MODE = 0o700

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    uidl TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered')),
    target TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    digest TEXT NOT NULL,
    recorded_at REAL NOT NULL
)
"""
# What the last session learnt about the server, to save round trips in the next one. A table
# of its own, created when missing: older versions of this program ignore it.
_SERVER_SCHEMA = """
CREATE TABLE IF NOT EXISTS server (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""


class UnsafeStateError(StateError):
    """A state directory or file that another user could have written: it is not trusted."""

    exit_code = ExitCode.NOPERM


# Messages delivered but never to be deleted by us: what arrived did not match the size the
# server listed (issue 11: a server answering RETR n with another message's body). A table of
# its own, created when missing: older versions ignore it (and would delete them; see README).
_HELD_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    uidl TEXT PRIMARY KEY,
    listed INTEGER NOT NULL,
    received INTEGER NOT NULL,
    recorded_at REAL NOT NULL
)
"""
# Delivered messages missing from complete listings: since when, and in how many listings.
# They are forgotten only after FORGET_AFTER_LISTINGS listings over FORGET_AFTER_SECONDS, so a
# server's hiccup (an empty or partial listing) cannot make the next run deliver them again.
_ABSENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS absent (
    uidl TEXT PRIMARY KEY,
    since REAL NOT NULL,
    listings INTEGER NOT NULL
)
"""
# Messages left on the server for their size (max_message_size, oversize = "skip"), so each
# is reported once, not on every run. ``overran``: LIST gave a size within the limit but RETR
# ran past it; such a message is skipped whatever LIST says next time, and never deleted
# unread. A table of its own, created when missing: older versions ignore it.
_OVERSIZE_SCHEMA = """
CREATE TABLE IF NOT EXISTS oversize (
    uidl TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    overran INTEGER NOT NULL,
    recorded_at REAL NOT NULL
)
"""
# The header filter's verdicts (issue 12): "skip" (left on the server, not shown to the filter
# again until forgotten) and "delete" (deleted unread; kept as the record that it was the
# user's filter, not a loss, and sent DELE again while still listed). A table of its own,
# created when missing: older versions ignore it.
_FILTERED_SCHEMA = """
CREATE TABLE IF NOT EXISTS filtered (
    uidl TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('skip', 'delete')),
    recorded_at REAL NOT NULL
)
"""
# The quiet-listing shortcut (see StateStore.quiet_listing) must never outlive a change to what
# it summarises. This program drops it in every transaction that writes a per-message table;
# these triggers drop it too for any other writer (an older pop3s-fetch, the sqlite3 shell) on
# every change that could make a listed message undelivered or alter what a run does with it.
# None fires on the bulk paths (a new row, a flip to delivered), where a trigger costs ~2 us a
# row: a row added can only make a message count as delivered, as a full run would too.
_QUIET_KEY = "quiet_listing"
_FORGET_QUIET = "DELETE FROM server WHERE key = 'quiet_listing'"  # _QUIET_KEY
_QUIET_TRIGGERS = {
    "quiet_messages_delete": f"AFTER DELETE ON messages BEGIN {_FORGET_QUIET}; END",
    "quiet_messages_update": "AFTER UPDATE ON messages WHEN NEW.status != 'delivered' "
    f"OR NEW.uidl != OLD.uidl BEGIN {_FORGET_QUIET}; END",
    **{
        f"quiet_{table}_{event.lower()}": f"AFTER {event} ON {table} BEGIN {_FORGET_QUIET}; END"
        for table in ("held", "absent", "oversize", "filtered")
        for event in ("INSERT", "UPDATE", "DELETE")
    },
}

# Every run looks for deliveries a killed run left pending; without this (partial) index that
# was a scan of every row, 8.6 ms at 100,000 messages. It holds only pending rows, so it costs
# the bulk paths little (~+0.1 s CPU per 100,000 deliveries, measured).
_PENDING_INDEX = (
    "CREATE INDEX IF NOT EXISTS pending_rows ON messages (status) WHERE status = 'pending'"
)

#: A delivered UIDL missing from this many complete listings in a row...
FORGET_AFTER_LISTINGS = 3
#: ...spread over at least this long is taken to be gone for good, and forgotten.
FORGET_AFTER_SECONDS = 24 * 3600.0
#: A listing that names fewer than this share of the delivered messages it named last time
#: is not believed: nothing is marked absent (an outage, not a mass deletion).
SHRUNK_LISTING_SHARE = 0.5


#: ``target`` of a row recorded without a copy by us (``state seed``, ``import``): such a row
#: names no file, so nothing reconciles it or compares it with the configured destination.
SEEDED_PREFIX = "seeded:"


def state_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/pop3s-fetch``, or ``~/.local/state/pop3s-fetch`` (XDG base dir spec)."""
    base = environ.get("XDG_STATE_HOME", "")
    if not base or not os.path.isabs(base):
        home = environ.get("HOME") or str(Path.home())
        base = os.path.join(home, ".local", "state")
    return Path(base) / "pop3s-fetch"


@dataclass(frozen=True, slots=True)
class Intent:
    """A delivery recorded before it became visible: what, and exactly where."""

    uidl: str
    size: int
    target: str
    offset: int
    length: int
    digest: str


@dataclass(frozen=True, slots=True)
class QuietListing:
    """A listing the last complete run settled: its fingerprint, and how many messages it
    named (all of them delivered, and no others: the state's whole delivered count)."""

    fingerprint: str
    messages: int


@dataclass(frozen=True, slots=True)
class Row:
    """One message as ``state list`` shows it."""

    uidl: str
    size: int
    status: str
    target: str
    offset: int
    recorded_at: float


class StateStore:
    """The UIDL store of one account. Use :func:`open_store`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db:
                yield self._db
        except sqlite3.Error as err:
            raise _state_error(self.path, err) from err

    @contextlib.contextmanager
    def _changing(self) -> Iterator[sqlite3.Connection]:
        """A transaction that writes per-message rows: it drops the quiet-listing shortcut."""
        with self._transaction() as db:
            db.execute(_FORGET_QUIET)
            yield db

    def delivered(self) -> set[str]:
        """UIDLs whose messages are durable in the destination.

        Read as one string (UIDLs hold no spaces, RFC 1939 section 7): row by row, an idle
        run over a big mailbox spent tens of milliseconds here, each row giving up the GIL.
        """
        with self._transaction() as db:
            (joined,) = db.execute(
                "SELECT group_concat(uidl, ' ') FROM messages WHERE status = 'delivered'"
            ).fetchone()
        return set(joined.split(" ")) if joined else set()

    def delivered_intents(self) -> list[Intent]:
        """Delivered messages with where each went: to check a copy against (``backup``)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uidl, size, target, offset, length, digest FROM messages"
                " WHERE status = 'delivered' ORDER BY offset, target"
            )
            return [Intent(*row) for row in rows]

    def pending(self) -> list[Intent]:
        """Deliveries recorded but not known to have completed (a previous run died)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uidl, size, target, offset, length, digest FROM messages"
                " WHERE status = 'pending' ORDER BY offset, target"
            )
            return [Intent(*row) for row in rows]

    def record_intents(self, intents: Sequence[Intent], *, now: float | None = None) -> None:
        """Journal deliveries about to become visible, in one durable commit (at ``now``)."""
        if not intents:
            return
        now = time.time() if now is None else now
        with self._changing() as db:
            db.executemany(
                "INSERT OR REPLACE INTO messages"
                " (uidl, size, status, target, offset, length, digest, recorded_at)"
                " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
                [(i.uidl, i.size, i.target, i.offset, i.length, i.digest, now) for i in intents],
            )

    def mark_delivered(self, uidls: Iterable[str]) -> None:
        """Flip journalled deliveries to delivered, in one durable commit."""
        rows = [(uidl,) for uidl in uidls]
        if not rows:
            return  # no commit, no fsync
        with self._changing() as db:
            db.executemany("UPDATE messages SET status = 'delivered' WHERE uidl = ?", rows)

    def seed(self, sizes: Mapping[str, int], *, origin: str, when: Mapping[str, float]) -> int:
        """Mark messages delivered with no copy made by us: "start from now", or a peer's state.

        ``origin`` names where the copy is, if anywhere (``seeded``, ``fetchmail``, ...): it
        goes in ``target`` with offset 0, so no reconciliation and no changed-destination check
        ever looks for a file there (see :data:`SEEDED_PREFIX`). ``when`` gives a UIDL's first
        delivery time where the peer recorded one (keep = "30d" counts from it); missing, now.
        Rows already present are left alone. Returns how many were added.
        """
        now = time.time()
        with self._changing() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO messages"
                " (uidl, size, status, target, offset, length, digest, recorded_at)"
                " VALUES (?, ?, 'delivered', ?, 0, 0, '', ?)",
                [
                    (uidl, size, SEEDED_PREFIX + origin, when.get(uidl, now))
                    for uidl, size in sizes.items()
                ],
            )
            return db.total_changes - before

    # --- state tools (state list, forget, rebuild) and the destination this state describes

    def rows(self) -> list[Row]:
        """Every message row, oldest delivery first: for ``state list``."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uidl, size, status, target, offset, recorded_at FROM messages"
                " ORDER BY recorded_at, offset, uidl"
            )
            return [Row(*row) for row in rows]

    def known(self) -> set[str]:
        """Every UIDL with a row, pending or delivered."""
        with self._transaction() as db:
            return {uidl for (uidl,) in db.execute("SELECT uidl FROM messages")}

    def record_found(self, found: Sequence[Intent], *, when: float) -> None:
        """Record copies found in the destination (``state rebuild``) as delivered at ``when``.

        Rows already present are left alone: the state knows better than a match by headers.
        """
        with self._changing() as db:
            db.executemany(
                "INSERT OR IGNORE INTO messages"
                " (uidl, size, status, target, offset, length, digest, recorded_at)"
                " VALUES (?, ?, 'delivered', ?, ?, ?, ?, ?)",
                [(i.uidl, i.size, i.target, i.offset, i.length, i.digest, when) for i in found],
            )

    def forget_everywhere(self, uidls: Iterable[str] | None) -> int:
        """``state forget``: drop every trace of these UIDLs (all of them for None).

        Every table with a ``uidl`` column is cleared, found by looking rather than by a
        list here, so a per-message table added later (held, absent, oversize, a filter's)
        cannot keep a forgotten message from being fetched. Returns how many message rows went.
        """
        with self._changing() as db:
            tables = [
                name
                for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if any(col[1] == "uidl" for col in db.execute(f'PRAGMA table_info("{name}")'))
            ]
            before = db.total_changes
            if uidls is None:
                db.execute("DELETE FROM messages")
                removed = db.total_changes - before
                for table in tables:
                    db.execute(f'DELETE FROM "{table}"')  # noqa: S608 - names from sqlite_master
                db.execute("DELETE FROM server WHERE key = 'listed_delivered'")
                return removed
            chosen = [(uidl,) for uidl in uidls]
            db.executemany("DELETE FROM messages WHERE uidl = ?", chosen)
            removed = db.total_changes - before
            for table in tables:
                db.executemany(f'DELETE FROM "{table}" WHERE uidl = ?', chosen)  # noqa: S608
            return removed

    def copies(self) -> int:
        """Rows that name a copy we made (pending or delivered; not seeded ones).

        A scan of the table: only for the rare case where the destination seems to differ.
        """
        with self._transaction() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM messages WHERE substr(target, 1, ?) != ?",
                (len(SEEDED_PREFIX), SEEDED_PREFIX),
            ).fetchone()
        return int(count)

    def recent_copies(self, limit: int) -> list[Intent]:
        """The latest ``limit`` rows that name a copy we made, newest first."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uidl, size, target, offset, length, digest FROM messages"
                " WHERE substr(target, 1, ?) != ? ORDER BY recorded_at DESC, offset DESC"
                " LIMIT ?",
                (len(SEEDED_PREFIX), SEEDED_PREFIX, limit),
            )
            return [Intent(*row) for row in rows]

    def destination(self) -> str | None:
        """What :meth:`remember_destination` recorded (None: a state from before it did)."""
        return self._server_fact("destination")

    def remember_destination(self, identity: str) -> None:
        """Record which destination this state's copies are in; written only when it changed."""
        self._remember_server_fact("destination", identity)

    def delivered_before(self, cutoff: float) -> set[str]:
        """UIDLs delivered (first journalled) at or before ``cutoff``, for keep = "30d".

        ``recorded_at`` is written once, when the delivery is journalled, and never updated:
        a message fetched again after a failed delivery gets the time of the one that held.
        """
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uidl FROM messages WHERE status = 'delivered' AND recorded_at <= ?",
                (cutoff,),
            )
            return {uidl for (uidl,) in rows}

    def oversize(self) -> dict[str, bool]:
        """Messages left on the server for their size, each with whether RETR overran."""
        with self._transaction() as db:
            return {uidl: bool(o) for uidl, o in db.execute("SELECT uidl, overran FROM oversize")}

    def remember_oversize(self, sizes: Mapping[str, int], *, overran: bool = False) -> None:
        """Note messages left on the server for their size (reported once, then quietly)."""
        now = time.time()
        with self._changing() as db:
            db.executemany(
                "INSERT OR REPLACE INTO oversize (uidl, size, overran, recorded_at)"
                " VALUES (?, ?, ?, ?)",
                [(uidl, size, int(overran), now) for uidl, size in sizes.items()],
            )

    def keep_oversize(self, uidls: set[str]) -> None:
        """Drop the oversize notes of all but ``uidls`` (gone from the server, or now fetched).

        Forgetting one too early costs only a second report, never a download or deletion.
        """
        gone = [(uidl,) for uidl in set(self.oversize()) - uidls]
        if gone:
            with self._changing() as db:
                db.executemany("DELETE FROM oversize WHERE uidl = ?", gone)

    def filtered(self) -> dict[str, str]:
        """The header filter's remembered verdicts: UIDL -> "skip" or "delete"."""
        with self._transaction() as db:
            return dict(db.execute("SELECT uidl, verdict FROM filtered"))

    def filtered_sizes(self) -> dict[str, int]:
        """The LIST sizes of the messages with a verdict (what --json reports for them)."""
        with self._transaction() as db:
            return dict(db.execute("SELECT uidl, size FROM filtered"))

    def remember_filtered(self, verdicts: Mapping[str, tuple[int, str]]) -> None:
        """Record the filter's verdicts (UIDL -> (LIST size, "skip" | "delete")) in one
        durable commit: a "delete" is recorded before its DELE is sent."""
        now = time.time()
        with self._changing() as db:
            db.executemany(
                "INSERT OR REPLACE INTO filtered (uidl, size, verdict, recorded_at)"
                " VALUES (?, ?, ?, ?)",
                [(uidl, size, verdict, now) for uidl, (size, verdict) in verdicts.items()],
            )

    def keep_skipped(self, present: set[str]) -> None:
        """Drop the "skip" verdicts of messages no longer on the server (a complete listing).

        Forgetting one too early only shows that message to the filter again. "delete" rows
        stay: they are the record of what the filter removed.
        """
        gone = [
            (uidl,) for uidl, v in self.filtered().items() if v == "skip" and uidl not in present
        ]
        if gone:
            with self._changing() as db:
                db.executemany("DELETE FROM filtered WHERE uidl = ?", gone)

    def server_pipelines(self) -> bool:
        """Whether the server offered PIPELINING in the last session that got so far."""
        return self._server_fact("pipelining") == "yes"

    def remember_pipelining(self, pipelining: bool) -> None:
        """Record whether the server offers PIPELINING; written only when it changed."""
        self._remember_server_fact("pipelining", "yes" if pipelining else "no")

    def last_login_method(self) -> str | None:
        """The login method (USER, APOP or a SASL name) of the last successful login."""
        return self._server_fact("login")

    def remember_login_method(self, method: str) -> None:
        """Record the login method that worked; written only when it changed."""
        self._remember_server_fact("login", method)

    # -- the server's own policy (RFC 2449 LOGIN-DELAY and EXPIRE, a server without UIDL):
    # facts in the ``server`` table, written only when they change (or, for a server with a
    # LOGIN-DELAY, once per login: its time is the fact), so a server without them costs none.

    def login_delay(self) -> tuple[int | None, float | None, float | None]:
        """The server's LOGIN-DELAY (seconds), the time of the last successful login and of
        the last ``[LOGIN-DELAY]`` refusal; None for what is not known."""
        keys = ("login_delay", "last_login", "login_refused")
        facts = self._server_facts(*keys)
        delay, last, refused = (facts.get(key) for key in keys)
        return (
            int(delay) if delay else None,
            float(last) if last else None,
            float(refused) if refused else None,
        )

    def remember_login(self, at: float, delay: int | None) -> None:
        """A login succeeded at ``at``, with this LOGIN-DELAY (None: the server has none)."""
        if delay is None:
            self._remember_server_facts(login_delay=None, last_login=None, login_refused=None)
        else:
            self._remember_server_facts(
                login_delay=str(delay), last_login=repr(at), login_refused=None
            )

    def remember_login_refused(self, at: float, delay: int | None) -> None:
        """The server refused a login at ``at`` with ``[LOGIN-DELAY]``."""
        facts: dict[str, str | None] = {"login_refused": repr(at)}
        if delay is not None:
            facts["login_delay"] = str(delay)
        self._remember_server_facts(**facts)

    def warned_about(self, topic: str) -> str | None:
        """The value a once-only warning (``"expire"``, ``"no-uidl"``) was last given for."""
        return self._server_fact(f"warned:{topic}")

    def remember_warned(self, topic: str, value: str | None) -> None:
        """Record that ``topic`` was warned about for ``value`` (None: forget, warn again)."""
        self._remember_server_facts(**{f"warned:{topic}": value})

    def _server_facts(self, *keys: str) -> dict[str, str]:
        with self._transaction() as db:
            rows = db.execute("SELECT key, value FROM server").fetchall()  # a handful
        return {str(k): str(v) for k, v in rows if k in keys}

    def _remember_server_facts(self, **facts: str | None) -> None:
        """Set (or, for None, delete) several facts in one commit, if any of them changed."""
        known = self._server_facts(*facts)
        if all(known.get(k) == v for k, v in facts.items()):
            return
        with self._transaction() as db:
            for key, value in facts.items():
                if value is None:
                    db.execute("DELETE FROM server WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO server (key, value) VALUES (?, ?)", (key, value)
                    )

    def _server_fact(self, key: str) -> str | None:
        with self._transaction() as db:
            row = db.execute("SELECT value FROM server WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _remember_server_fact(self, key: str, value: str) -> None:
        if self._server_fact(key) == value:
            return  # every run would otherwise pay a durable commit, an fsync
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO server (key, value) VALUES (?, ?)", (key, value))

    def forget(self, uidls: Iterable[str]) -> None:
        """Drop rows: failed intents, messages this run deleted, or ones long gone."""
        rows = [(uidl,) for uidl in uidls]
        if not rows:
            return  # the everyday idle run: no commit, no fsync
        with self._changing() as db:
            db.executemany("DELETE FROM messages WHERE uidl = ?", rows)
            db.executemany("DELETE FROM held WHERE uidl = ?", rows)
            db.executemany("DELETE FROM absent WHERE uidl = ?", rows)
            db.executemany("DELETE FROM filtered WHERE uidl = ?", rows)

    def hold(self, uidl: str, listed: int, received: int) -> None:
        """Never delete this delivered message from the server: its size disagreed."""
        with self._changing() as db:
            db.execute(
                "INSERT OR REPLACE INTO held (uidl, listed, received, recorded_at)"
                " VALUES (?, ?, ?, ?)",
                (uidl, listed, received, time.time()),
            )

    def held(self) -> set[str]:
        """UIDLs delivered with a size that disagreed with LIST: kept on the server."""
        with self._transaction() as db:
            return {uidl for (uidl,) in db.execute("SELECT uidl FROM held")}

    def forget_absent(
        self,
        present: Collection[str],
        delivered: set[str] | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """Forget delivered messages gone from the server for good, so the store stays small.

        Call only with a complete listing, after the messages this run deleted were forgotten.
        A delivered UIDL missing from the listing is only noted; it is forgotten once it was
        missing from FORGET_AFTER_LISTINGS listings in a row over FORGET_AFTER_SECONDS. A
        listing naming under SHRUNK_LISTING_SHARE of what it named last time notes nothing.
        ``delivered`` may pass a set already read (plus what this run added), saving a read
        of the whole table. Returns how many were forgotten.
        """
        now = time.time() if now is None else now
        known = self.delivered() if delivered is None else delivered
        # ``present`` (unique UIDLs) is only iterated, never copied into a set: at 100,000
        # messages each such set took 4 MiB. Most runs find every delivered one listed.
        listed = sum(map(known.__contains__, present))
        gone = known.difference(present) if listed < len(known) else set()
        previous = int(self._server_fact("listed_delivered") or 0)
        with self._transaction() as db:
            noted = {uidl for (uidl,) in db.execute("SELECT uidl FROM absent")}
        back = noted.intersection(present) if noted else set()
        if not gone and not back and listed == previous:
            # The everyday idle run: nothing to note, so no commit and no fsync.
            return 0
        with self._changing() as db:
            db.executemany("DELETE FROM absent WHERE uidl = ?", [(u,) for u in back])
            if listed < previous * SHRUNK_LISTING_SHARE:
                return 0  # an empty or collapsed listing is an outage until shown otherwise
            db.executemany(
                "INSERT INTO absent (uidl, since, listings) VALUES (?, ?, 1)"
                " ON CONFLICT (uidl) DO UPDATE SET listings = listings + 1",
                [(uidl, now) for uidl in gone],
            )
            expired = [
                uidl
                for (uidl,) in db.execute(
                    "SELECT uidl FROM absent WHERE listings >= ? AND since <= ?",
                    (FORGET_AFTER_LISTINGS, now - FORGET_AFTER_SECONDS),
                )
            ]
            db.execute(
                "INSERT OR REPLACE INTO server (key, value) VALUES ('listed_delivered', ?)",
                (str(listed),),
            )
        if expired:
            self.forget(expired)
        return len(expired)

    def quiet_listing(self) -> QuietListing | None:
        """What :meth:`remember_quiet_listing` recorded of the last complete listing that left
        nothing to do, or None. Any write to a per-message table drops it."""
        value = self._server_fact(_QUIET_KEY)
        if value is None:
            return None
        count, _, fingerprint = value.partition(" ")
        return QuietListing(fingerprint, int(count))

    def remember_quiet_listing(self, fingerprint: str, listed: int) -> bool:
        """Record ``fingerprint`` for a complete listing of ``listed`` unique UIDLs, each of
        them delivered, if the state holds exactly those and nothing else of note.

        The caller vouches that every listed UIDL is delivered; this checks, in the same
        transaction as the write, that there is no other row (so the delivered set *is* the
        listing), no held, absent, oversize or filter row, and that the last listing's count
        of delivered messages is this one's (so ``forget_absent`` would do nothing). A later
        run handed the same fingerprint may then skip the per-message work: it would decide
        nothing else. Returns whether it was recorded.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT (SELECT count(*) FROM messages),"
                " (SELECT count(*) FROM messages WHERE status = 'delivered'),"
                " (SELECT count(*) FROM held) + (SELECT count(*) FROM absent)"
                " + (SELECT count(*) FROM oversize) + (SELECT count(*) FROM filtered),"
                " (SELECT value FROM server WHERE key = 'listed_delivered')"
            ).fetchone()
            if tuple(row) != (listed, listed, 0, str(listed)):
                return False
            db.execute(
                "INSERT OR REPLACE INTO server (key, value) VALUES (?, ?)",
                (_QUIET_KEY, f"{listed} {fingerprint}"),
            )
        return True


def open_store(path: Path) -> StateStore:
    """Open (creating if needed) an account's state file, private to the user.

    Raises:
        StateError: unreadable, corrupt, or written by a newer pop3s-fetch.
    """
    prepare_state_dir(path.parent)
    fd = _open_private_file(path, "state file")
    try:
        os.fchmod(fd, STATE_FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):  # SQLite opens these itself, following links
        _refuse_link(Path(f"{path}{suffix}"), "state file")
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.isolation_level = "DEFERRED"  # explicit transactions via "with db:"
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA fullfsync = ON")  # macOS: F_FULLFSYNC, as durable.fsync_file does
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise StateError(
                f"the state file {path} was written by a newer pop3s-fetch "
                f"(schema {version}, this one knows {SCHEMA_VERSION})",
                hint="upgrade pop3s-fetch; nothing was downloaded or deleted",
            )
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if (
            version != SCHEMA_VERSION
            or not {"messages", "server", "held", "absent", "oversize", "filtered"} <= tables
            or not _QUIET_TRIGGERS.keys() <= tables
            or "pending_rows" not in tables
        ):
            # Only then: a write here would cost every run a durable commit, an fsync.
            with db:
                db.execute(_SCHEMA)
                db.execute(_SERVER_SCHEMA)
                db.execute(_HELD_SCHEMA)
                db.execute(_ABSENT_SCHEMA)
                db.execute(_OVERSIZE_SCHEMA)
                db.execute(_FILTERED_SCHEMA)
                db.execute(_PENDING_INDEX)
                for name, body in _QUIET_TRIGGERS.items():
                    db.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("SELECT 1 FROM messages LIMIT 1").fetchone()  # readable? (no count: a scan)
    except sqlite3.Error as err:
        raise _state_error(path, err) from err
    return StateStore(path, db)


def accounts_with_state(directory: Path) -> set[str]:
    """The account names that have a state file in ``directory`` (none if it does not exist)."""
    try:
        return {p.name.removesuffix(".sqlite3") for p in directory.glob("*.sqlite3")}
    except OSError:
        return set()


def remove_account_state(directory: Path, account: str) -> list[Path]:
    """Delete an account's state (store, its WAL files, its lock), under the account's lock.

    For accounts no longer in the configuration: their state only ever grows stale. Taking the
    lock first means a sync of that account still running elsewhere is not pulled from under.

    Raises:
        LockedError: a sync of the account is running.
        StateError: the files cannot be removed.
    """
    lock = directory / f"{account}.lock"
    removed: list[Path] = []
    with AccountLock(lock, account) as held:
        held.acquire()
        for suffix in (".sqlite3", ".sqlite3-wal", ".sqlite3-shm", ".lock"):
            path = directory / f"{account}{suffix}"
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                raise StateError(
                    f"cannot remove {path}: {err.strerror}",
                    hint=f"make {directory} writable by this user",
                ) from err
            removed.append(path)
    fsync_directory(directory)  # the removal is what the user asked for: make it stick
    return removed


def prepare_state_dir(directory: Path) -> None:
    """Create the state directory durably if needed, and refuse one another user could write.

    Raises:
        StateError: it cannot be created.
        UnsafeStateError: it belongs to another user or is group- or world-writable.
    """
    try:
        make_dirs_durably(directory, STATE_DIR_MODE)
        info = os.stat(
            directory
        )  # a link the user made to elsewhere is fine: its target is checked
    except OSError as err:
        raise StateError(
            f"cannot create the state directory {directory}: {err.strerror}",
            hint=f"make {directory.parent} writable by this user",
        ) from err
    if info.st_uid != os.geteuid():
        raise UnsafeStateError(
            f"the state directory {directory} belongs to another user (uid {info.st_uid}), "
            "so its records of delivered mail cannot be trusted",
            hint="use a state directory of your own (set XDG_STATE_HOME), "
            f"or if it is yours, chown it to uid {os.geteuid()}",
        )
    if info.st_mode & 0o022:
        raise UnsafeStateError(
            f"the state directory {directory} is writable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}), so its records of delivered mail "
            "cannot be trusted",
            hint=f"check that nobody else changed its files, then: chmod 700 {directory}",
        )


def _open_private_file(path: Path, what: str) -> int:
    """Open (creating durably if needed) a state or lock file: never through a link, ours only."""
    try:
        fd, _ = create_file_durably(path, os.O_RDWR, STATE_FILE_MODE)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _link_refused(path, what) from None
        raise StateError(
            f"cannot create the {what} {path}: {err.strerror}",
            hint=f"make {path.parent} writable by this user",
        ) from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        owner = "not a regular file" if not stat.S_ISREG(info.st_mode) else "another user's"
        raise UnsafeStateError(
            f"the {what} {path} is {owner}, so it cannot be trusted",
            hint="move it aside; pop3s-fetch creates its own",
        )
    return fd


def _refuse_link(path: Path, what: str) -> None:
    if path.is_symlink():
        raise _link_refused(path, what)


def _link_refused(path: Path, what: str) -> UnsafeStateError:
    return UnsafeStateError(
        f"the {what} {path} is a symbolic link, which pop3s-fetch never makes",
        hint="remove the link (and check who planted it); pop3s-fetch creates its own file",
    )


def _state_error(path: Path, err: sqlite3.Error) -> StateError:
    return StateError(
        f"the state file {path} cannot be used: {err}",
        hint="check the disk and the file's permissions; if it is corrupt, move it aside "
        "(messages already downloaded will then be downloaded again)",
    )


class AccountLock:
    """An exclusive lock per account, so two runs never sync the same mailbox at once."""

    def __init__(self, path: Path, account: str) -> None:
        self.path = path
        self.account = account
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds.

        Raises:
            LockedError: another process holds it; the message names its pid.
            StateError: the lock file cannot be created.
        """
        prepare_state_dir(self.path.parent)
        fd = _open_private_file(self.path, "lock file")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    os.close(fd)
                    raise LockedError(
                        f'account "{self.account}" is being synced by another pop3s-fetch '
                        f"(pid {holder or 'unknown'})",
                        hint=(
                            f"it did not finish within --wait {wait:g}; wait longer, or let it end"
                            if wait
                            else "wait for it to finish, or pass --wait SECONDS"
                        ),
                    ) from None
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        mine = f"{os.getpid()}\n".encode()
        if os.pread(fd, 32, 0) != mine:  # a daemon takes it each poll: write only on change
            os.pwrite(fd, mine, 0)
            os.ftruncate(fd, len(mine))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> AccountLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
