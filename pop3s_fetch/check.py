"""``pop3s-fetch check`` and ``sync --dry-run``: what a sync would do, found without doing it.

Both log in, list (UIDL, then LIST sizes of the new messages only) and QUIT: no RETR, no DELE,
so the maildrop is left as it was. The listing is compared with the account's state file, which
is read and never written: not created when missing (then every message is new), no journal
settled, no server fact (PIPELINING, login method) remembered, and the account's lock is not
taken, so a status bar polling ``check`` never makes a running sync wait or fail, nor the
reverse. The destination is not opened (only looked into to judge a state from an older version,
which names none: see ``destcheck``); one other than the state's is refused as sync refuses it.
A delivery a killed run left in flight counts as new: only the next sync, which looks in the
destination, can tell whether it landed.
Neither runs a header ``filter`` (a program with a say over deletions has no place in a look
that must change nothing, and a status bar polling ``check`` should not run it every minute):
messages it skipped before are not new, and the rest count as new until a sync shows them to it.

The account's limits and retention are applied as a sync applies them (``policy``): "new" is
mail a sync will download, in this run or, past ``max_messages``/``max_bytes``, a later one.
A message over ``max_message_size`` is never new (no sync will fetch it under that limit,
reported or not); it is counted apart, and a dry run lists it as skipped, or as deleted unread
with ``oversize = "delete"``. With ``keep = "30d"`` the dry run lists what has expired.

Must not know: click or rich (the CLI prints what :func:`check_lines` and :func:`plan_lines`
give), keyring (the caller passes a password getter), how mail is delivered.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pop3s_fetch import __version__, destcheck, policy
from pop3s_fetch.config import Account, format_duration
from pop3s_fetch.connect import log_in, open_session
from pop3s_fetch.errors import ExitCode, Pop3sFetchError
from pop3s_fetch.pop3 import NoUidl, RemoteMessage
from pop3s_fetch.report import PARTIAL_FAILURE, error_record
from pop3s_fetch.state import open_store
from pop3s_fetch.sync import NO_UIDL_PREFIX, check_uidls, refused_without_uidl
from pop3s_fetch.ui import human_bytes

if TYPE_CHECKING:
    import datetime

SCHEMA = "pop3s-fetch.check/1"

#: check's exit status when every account answered and none has new mail (as grep's "no match").
NO_NEW_MAIL = 1

#: Why a message would be deleted by a sync with keep = false.
DELIVERED_EARLIER = "delivered earlier"
ONCE_SAVED = "once it is saved"
#: ...or by one whose filter said so before (the DELE did not become final then).
FILTER_SAID = "the filter said delete"
OVERSIZE_UNREAD = 'over max_message_size, WITHOUT downloading (oversize = "delete")'
#: Why a new message is not fetched by this run.
DEFERRED = "max_messages/max_bytes: a later run"
TOO_BIG = "over max_message_size, left on the server"
OVERRAN = "ran past max_message_size in an earlier run, left on the server"


def expired_reason(seconds: float) -> str:
    """Why keep = "30d" deletes a message."""
    return f'delivered over {format_duration(seconds)} ago (keep = "{format_duration(seconds)}")'


@dataclass(frozen=True, slots=True)
class Known:
    """What the state file says of an account's messages (all empty when it has none)."""

    delivered: frozenset[str] = frozenset()
    held: frozenset[str] = frozenset()  # delivered, but never to be deleted by us
    pending: frozenset[str] = frozenset()  # in flight when a run was killed
    expired: frozenset[str] = frozenset()  # delivered before keep's duration: to be deleted
    oversize: frozenset[str] = frozenset()  # left for their size, and reported already
    overran: frozenset[str] = frozenset()  # RETR ran past max_message_size: never fetched
    filtered: Mapping[str, str] = field(default_factory=dict)  # the filter's verdicts


@dataclass(frozen=True, slots=True)
class Deletion:
    """A message a sync would delete from the server, and why."""

    number: int
    uidl: str
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    """A new message a sync leaves on the server for its size."""

    number: int
    uidl: str
    size: int
    reason: str
    reported: bool  # a sync has warned about it already (it does so once)


@dataclass
class Survey:
    """One account's answer: what is new on the server and what a sync would delete."""

    account: str
    on_server: int | None = None  # None: never listed (the account failed before)
    fetch: list[RemoteMessage] = field(default_factory=list)  # by the next run
    deferred: list[RemoteMessage] = field(default_factory=list)  # new, for a later run
    skipped: list[Skip] = field(default_factory=list)  # over max_message_size: never new
    delete: list[Deletion] = field(default_factory=list)
    interrupted: frozenset[str] = frozenset()  # UIDLs of ``fetch`` a killed run left in flight
    filtered: bool = False  # the account has a header filter, which a sync would run first
    error: Pop3sFetchError | None = None
    duration: float = 0.0

    @property
    def new(self) -> int:
        """Mail a sync will download: in the next run, or a later one by the per-run limits."""
        return len(self.fetch) + len(self.deferred)

    @property
    def octets(self) -> int:
        return sum(message.size for message in [*self.fetch, *self.deferred])


def read_known(
    path: Path, account: Account | None = None, *, expire_before: float | None = None
) -> Known:
    """The account's records, read without creating or changing anything.

    With ``account``, refused as a sync would refuse it when its destination is not the one
    the state's copies are in (a sync would report nothing new, wrongly).
    ``expire_before``: keep = "30d"'s cutoff; what was delivered by then is ``expired``.

    Raises:
        StateError: the file cannot be read, or cannot be trusted (as for a sync).
        DestinationChanged: see :func:`pop3s_fetch.destcheck.check`.
    """
    if not os.path.lexists(path):
        return Known()  # never synced: everything is new, and nothing is created to say so
    with open_store(path) as store:
        if account is not None:
            destcheck.check(account, store, record=False)
        oversize = store.oversize()
        return Known(
            frozenset(store.delivered()),
            frozenset(store.held()),
            frozenset(intent.uidl for intent in store.pending()),
            frozenset(store.delivered_before(expire_before) if expire_before is not None else ()),
            frozenset(oversize),
            frozenset(uidl for uidl, overran in oversize.items() if overran),
            store.filtered(),
        )


def plan(
    uidls: Mapping[int, str],
    known: Known,
    *,
    keep: bool,
    delete_after: float | None = None,
    filter_deletes: bool | None = None,
) -> tuple[list[int], list[Deletion]]:
    """The numbers of the new messages, and the earlier deliveries a sync would delete first.

    With ``keep = false`` that is every delivered message still on the server, with
    ``keep = "30d"`` (``delete_after``) the ``expired`` ones; never one held for a size that
    disagreed (``policy.deletable``, as a sync decides). With a header filter
    (``filter_deletes`` not None: whether it may delete), what it skipped before is not new,
    and what it said to delete is deleted if it still may.
    """
    verdicts = known.filtered if filter_deletes is not None else {}
    new = [
        n
        for n, uidl in sorted(uidls.items())
        if uidl not in known.delivered and uidl not in verdicts
    ]
    filtered = [
        Deletion(n, uidl, FILTER_SAID)
        for n, uidl in sorted(uidls.items())
        if filter_deletes and verdicts.get(uidl) == "delete"
    ]
    retention = keep and delete_after is not None
    reason = expired_reason(delete_after) if retention and delete_after else DELIVERED_EARLIER
    earlier = policy.deletable(
        uidls, known.delivered, known.held, keep=keep, expired=known.expired if retention else set()
    )
    return new, filtered + [Deletion(n, uidl, reason) for n, uidl in earlier]


def limit(
    new: Sequence[RemoteMessage], known: Known, account: Account
) -> tuple[policy.FetchPlan[RemoteMessage], list[Skip], list[Deletion]]:
    """The account's limits over the new messages, as a sync applies them: the plan, what is
    skipped for its size, and what is deleted after the earlier deliveries, in a sync's order
    (oversize unread with ``oversize = "delete"``, then with ``keep = false`` each fetched one).
    """
    limits = policy.Limits(account.max_message_size, account.max_messages, account.max_bytes)
    fetch_plan = policy.plan_fetch(new, limits, known.overran)
    left = [(m, OVERRAN) for m in fetch_plan.overran]
    if account.oversize == "skip":
        left += [(m, TOO_BIG) for m in fetch_plan.oversize]
    skipped = [
        Skip(m.number, m.uidl, m.size, reason, m.uidl in known.oversize)
        for m, reason in sorted(left, key=lambda pair: pair[0].number)
    ]
    deletions = []
    if account.oversize == "delete":
        deletions += [Deletion(m.number, m.uidl, OVERSIZE_UNREAD) for m in fetch_plan.oversize]
    if not account.keep:
        deletions += [Deletion(m.number, m.uidl, ONCE_SAVED) for m in fetch_plan.fetch]
    return fetch_plan, skipped, deletions


def survey_account(
    account: Account,
    password: Callable[[], str],
    state_dir: Path,
    *,
    context_factory: Callable[[Account], ssl.SSLContext] | None = None,
    clock: Callable[[], float] = time.time,
) -> Survey:
    """Log in, list, QUIT; errors are returned in the survey, not raised."""
    survey = Survey(account.name)
    started = time.monotonic()
    try:
        cutoff = None
        if account.keep and account.delete_after is not None:
            cutoff = clock() - account.delete_after
        known = read_known(state_dir / f"{account.name}.sqlite3", account, expire_before=cutoff)
        secret = password()
        context = context_factory(account) if context_factory else None
        with open_session(account, context=context) as session:
            session.prefetch_sizes = not known.delivered  # every message is new: one LIST
            log_in(session, account, secret, then_list=True)
            sizes: Mapping[int, int] | None = None
            try:
                uidls = session.unique_ids()
            except NoUidl as err:
                if account.keep:
                    raise refused_without_uidl(account, err) from None
                # keep = false: a sync fetches and deletes each message in one session, so
                # every message is new; keyed by number, for this look only.
                sizes = session.sizes()
                uidls = {number: f"{NO_UIDL_PREFIX}{number}" for number in sizes}
            check_uidls(uidls)
            filter_deletes = account.filter_may_delete if account.filter else None
            new, survey.delete = plan(
                uidls,
                known,
                keep=account.keep,
                delete_after=account.delete_after,
                filter_deletes=filter_deletes,
            )
            survey.filtered = account.filter is not None
            survey.on_server = len(uidls)
            listed = (
                session.with_sizes(uidls, new)
                if sizes is None
                else [RemoteMessage(n, uidls[n], sizes[n]) for n in new]
            )
            fetch_plan, survey.skipped, later = limit(listed, known, account)
            survey.fetch, survey.deferred = fetch_plan.fetch, fetch_plan.deferred
            survey.delete += later
            survey.interrupted = known.pending & {uidls[n] for n in new}
            session.quit()  # no DELE was sent: nothing to commit
    except Pop3sFetchError as err:
        survey.error = err
    survey.duration = time.monotonic() - started
    return survey


def survey_accounts(
    accounts: Sequence[tuple[Account, Callable[[], str]]],
    state_dir: Path,
    *,
    jobs: int = 1,
    context_factory: Callable[[Account], ssl.SSLContext] | None = None,
) -> list[Survey]:
    """Survey each (account, password getter) pair, ``jobs`` at a time, in the order given."""

    def one(pair: tuple[Account, Callable[[], str]]) -> Survey:
        return survey_account(*pair, state_dir, context_factory=context_factory)

    if jobs <= 1 or len(accounts) <= 1:
        return [one(pair) for pair in accounts]
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, accounts))


def check_exit_code(surveys: Sequence[Survey]) -> int:
    """0 when some account has new mail; 1 when every account answered and none has; else
    (none found, some could not tell) the first failure's code, like ``grep -q``."""
    if any(s.error is None and s.new for s in surveys):
        return int(ExitCode.OK)
    failed = [s.error for s in surveys if s.error is not None]
    return int(failed[0].exit_code) if failed else NO_NEW_MAIL


def dry_run_exit_code(surveys: Sequence[Survey]) -> int:
    """As a sync's: 0 when all answered, the first failure's code if all failed, else 1."""
    failed = [s.error for s in surveys if s.error is not None]
    if not failed:
        return int(ExitCode.OK)
    return PARTIAL_FAILURE if len(failed) < len(surveys) else int(failed[0].exit_code)


def check_lines(surveys: Sequence[Survey]) -> list[str]:
    """One line per account that answered (failures are reported as errors)."""
    lines = []
    for s in surveys:
        if s.error is not None:
            continue
        if s.new:
            noun = "message" if s.new == 1 else "messages"
            found = f"{s.new} new {noun} ({human_bytes(s.octets)})"
        else:
            found = "no new mail"
        too_big = f", {len(s.skipped)} over max_message_size" if s.skipped else ""
        lines.append(f"{s.account}: {found}, {s.on_server} on server{too_big}")
    return lines


def plan_lines(survey: Survey, *, terminal: bool) -> list[str]:
    """What a sync would do: an aligned list for people, or one fact per line for programs.

    Plain lines start with the account's name, so ``grep`` and ``awk`` can split them.
    """
    name = survey.account
    what = _plan_summary(survey)
    if not terminal:
        lines = [
            f"{name}: fetch message {m.number} ({m.size} bytes, UIDL {m.uidl}"
            + (", interrupted earlier)" if m.uidl in survey.interrupted else ")")
            for m in survey.fetch
        ]
        lines += [
            f"{name}: defer message {m.number} ({m.size} bytes, UIDL {m.uidl}, {DEFERRED})"
            for m in survey.deferred
        ]
        lines += [
            f"{name}: skip message {k.number} ({k.size} bytes, UIDL {k.uidl}, {_skip_note(k)})"
            for k in survey.skipped
        ]
        lines += [
            f"{name}: delete message {d.number} (UIDL {d.uidl}, {d.reason})" for d in survey.delete
        ]
        return [*lines, f"{name}: {what}"]
    rows = [
        ("fetch", str(m.number), human_bytes(m.size), m.uidl, _fetch_note(survey, m))
        for m in survey.fetch
    ]
    rows += [
        ("defer", str(m.number), human_bytes(m.size), m.uidl, DEFERRED) for m in survey.deferred
    ]
    rows += [
        ("skip", str(k.number), human_bytes(k.size), k.uidl, _skip_note(k)) for k in survey.skipped
    ]
    rows += [("delete", str(d.number), "", d.uidl, d.reason) for d in survey.delete]
    lines = [f"{name}: {what}"]
    if rows:
        header = ("", "message", "size", "UIDL", "")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [
                row[0].ljust(widths[0]),
                row[1].rjust(widths[1]),
                row[2].rjust(widths[2]),
                row[3].ljust(widths[3]),
                row[4],
            ]
            lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def _fetch_note(survey: Survey, message: RemoteMessage) -> str:
    if message.uidl in survey.interrupted:
        return "interrupted earlier: fetched only if not found in the destination"
    return ""


def _skip_note(skip: Skip) -> str:
    return skip.reason + (" (reported earlier)" if skip.reported else "")


def _plan_summary(survey: Survey) -> str:
    count = len(survey.fetch)
    noun = "message" if count == 1 else "messages"
    octets = sum(m.size for m in survey.fetch)
    parts = [f"fetch {count} {noun} ({human_bytes(octets)})" if count else "fetch nothing"]
    if survey.deferred:
        parts.append(f"leave {len(survey.deferred)} new for a later run (max_messages/max_bytes)")
    if survey.skipped:
        parts.append(f"skip {len(survey.skipped)} over max_message_size")
    deleted = f"delete {len(survey.delete)} from the server" if survey.delete else "delete nothing"
    screened = (
        "; the filter was not run: a sync shows each of these to it first"
        if survey.filtered and survey.new
        else ""
    )
    return (
        f"would {', '.join(parts)} and {deleted}, of {survey.on_server} on the server "
        f"(dry run: nothing was written or deleted{screened})"
    )


def json_document(
    surveys: Sequence[Survey],
    started: datetime.datetime,
    duration: float,
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The whole run as one JSON-ready dict (schema ``pop3s-fetch.check/1``, in pop3s-fetch(1)).

    ``sync --dry-run --json`` gives the same document with each account's ``fetch`` and
    ``delete`` lists, and its exit code is a sync's.
    """
    accounts = []
    for s in surveys:
        record: dict[str, Any] = {
            "name": s.account,
            "status": "failed" if s.error else ("new" if s.new else "none"),
            "new": s.new,
            "bytes": s.octets,
            "on_server": s.on_server,
            "oversize": len(s.skipped),
            "duration": round(s.duration, 3),
            "errors": [error_record(s.error)] if s.error else [],
        }
        if dry_run:
            record["fetch"] = [
                {"number": m.number, "uidl": m.uidl, "size": m.size} for m in s.fetch
            ]
            record["defer"] = [
                {"number": m.number, "uidl": m.uidl, "size": m.size} for m in s.deferred
            ]
            record["skip"] = [
                {"number": k.number, "uidl": k.uidl, "size": k.size, "reported": k.reported}
                for k in s.skipped
            ]
            record["delete"] = [
                {"number": d.number, "uidl": d.uidl, "reason": d.reason} for d in s.delete
            ]
            record["filter_not_run"] = s.filtered
        accounts.append(record)
    return {
        "schema": SCHEMA,
        "version": __version__,
        "started": started.isoformat(timespec="seconds"),
        "duration": round(duration, 3),
        "dry_run": dry_run,
        "exit_code": dry_run_exit_code(surveys) if dry_run else check_exit_code(surveys),
        "new": sum(s.new for s in surveys if s.error is None),
        "bytes": sum(s.octets for s in surveys if s.error is None),
        "accounts": accounts,
    }
