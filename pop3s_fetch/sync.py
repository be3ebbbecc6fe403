"""The order of operations for one account; the only module that knows it.

The invariant everything here serves: **a message is deleted from the server only after it is
durable in the destination and recorded as delivered.** The order for each batch of messages:

1. RETR streams each message into a staged file (fsynced off the reading thread);
2. the destination calls back to journal each message's exact target (state commit #1);
3. the destination makes the batch visible and fsyncs it (link into new/ or append to mbox);
4. the journal entries are marked delivered (state commit #2);
5. only then may DELE be sent for them, and only a clean QUIT commits those DELEs.

A destination that delivers through a program (an MDA) takes one message per batch, so steps
2-4 are journal, run the program, commit: a program cannot be asked afterwards whether it
delivered, and a crash from the hand-over (the program runs on in its own session) until
commit #2 hands that one message over again.
A program's refusal of one message (:class:`MessageRefused`) forgets its journal entry, leaves
it on the server and goes on with the others; the account then fails with that refusal.

A server's own policy (RFC 2449, see ``serverpolicy``) is heeded here: within its LOGIN-DELAY
an account is skipped before anything is opened (a note, not an error), a ``[LOGIN-DELAY]``
refusal is a note too, EXPIRE is warned about once, and a server without UIDL is used only
with ``keep = false`` (see :meth:`_AccountSync.without_uidl` for the one window in which a
crash can deliver a message twice).

A crash between 2 and 4 leaves ``pending`` rows; the next run reconciles them against the
destination *before any command that depends on the state is sent* (the connection is opened
meanwhile, in a thread: it carries the TLS handshake, CAPA and at most the first line of a
login): a message that made it is marked delivered (so it is never fetched again), one that
did not is forgotten (and fetched again). Batching steps 2-4 (group commit) keeps the number
of fsyncs per batch constant rather than per message.

Must not know: how a connection is opened (TLS, pins, early CAPA or login, threads: that is
``connect``), the wire protocol (``pop3``), how a destination lays mail out, or click, rich,
keyring and TOML: callers pass an Account, a password getter and a Reporter.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pop3s_fetch import __version__, destcheck, hooks, policy, serverpolicy
from pop3s_fetch.config import Account
from pop3s_fetch.connect import Connecting, KeptHints, ServerHints, log_in, open_in_background
from pop3s_fetch.destinations import (
    Command,
    Destination,
    MessageRefused,
    MessageWriter,
    Placement,
    StagedMessage,
    open_destination,
)
from pop3s_fetch.errors import ConnectError, ExitCode, Pop3sFetchError, ProtocolError
from pop3s_fetch.logcontext import speaking_for
from pop3s_fetch.pop3 import (
    MessageTooLarge,
    NoUidl,
    Pop3Client,
    RemoteMessage,
    Retrieved,
    UidlReply,
)
from pop3s_fetch.sasl import LoginDelayed
from pop3s_fetch.state import AccountLock, Intent, QuietListing, StateStore, open_store

if TYPE_CHECKING:
    from pop3s_fetch import header_filter

logger = logging.getLogger(__name__)

#: Group commit: publish (journal + link + fsync + mark) after this many messages or bytes.
BATCH_MESSAGES = 128
BATCH_BYTES = 16 * 1024 * 1024

#: A mailbox that held at most this many messages last run gets its whole LIST with UIDL, in
#: the login's flight: a LIST reply this short costs less than the round trip it saves before
#: the first RETR (300 ms on a slow link). Bigger ones ask sizes only for what is new.
PREFETCH_LIST_UP_TO = 1000

#: UIDLs are 1-70 characters in 0x21-0x7E (RFC 1939 section 7).
_UIDL_BYTES = bytes(range(0x21, 0x7F))

#: State keys of messages from a server without UIDL: this prefix, a token new in each
#: session, and the message number, which is unique within a session (RFC 1939 section 5).
NO_UIDL_PREFIX = "no-uidl-"


class Reporter(Protocol):
    """What the UI hears about a sync; calls may come from several threads at once."""

    def started(self, account: str, phase: str) -> None:
        """A phase began: "connecting", "listing", ..."""

    def listed(self, account: str, messages: int, octets: int) -> None:
        """This many new messages (of this total LIST size) are to be fetched."""

    def fetched(self, account: str, message_octets: int) -> None:
        """One more message has arrived whole (it becomes durable with its batch)."""

    def warned(self, account: str, text: str, *, loud: bool = False) -> None:
        """Something the user should know that did not stop the sync; ``loud``: shown even
        with --quiet, since no exit code will tell (a failing on_new_mail hook)."""

    def finished(self, result: AccountResult) -> None:
        """The account is done, successfully or not."""


@dataclass
class AccountResult:
    """What one account's sync did; ``error`` is set when it failed."""

    account: str
    fetched: int = 0
    #: The fetched messages' size as the server counts it (CRLF line ends, what LIST says):
    #: the one meaning of "bytes" on the screen, in --json and in the hook's environment.
    octets: int = 0
    deleted: int = 0
    on_server: int | None = None  # None: the mailbox was never listed (no connection, say)
    skipped: int = 0  # on the server, delivered by an earlier run
    recovered: int = 0
    warnings: list[str] = field(default_factory=list)
    error: Pop3sFetchError | None = None
    duration: float = 0.0
    remaining: int = 0  # new, but left for the next run by max_messages or max_bytes
    interrupted: bool = False  # Ctrl-C (or SIGINT) ended it
    oversize: list[Oversize] = field(default_factory=list)
    #: The server's LOGIN-DELAY held this run back (no login, or a refused one): a note.
    login_delay: serverpolicy.LoginDelay | None = None
    filtered: list[Filtered] = field(default_factory=list)  # the header filter's verdicts

    @property
    def exit_code(self) -> ExitCode:
        return self.error.exit_code if self.error else ExitCode.OK


@dataclass(frozen=True, slots=True)
class Oversize:
    """A message over max_message_size: left on the server ("skip") or deleted unread."""

    uidl: str
    size: int  # as LIST gave it
    action: Literal["skip", "delete"]
    new: bool  # first reported in this run (a skipped one is warned about only then)


@dataclass(frozen=True, slots=True)
class Filtered:
    """A message the header filter said this run not to download: left there, or deleted."""

    uidl: str
    size: int  # as LIST gave it
    action: Literal["skip", "delete"]
    new: bool = True  # decided in this run (a skipped one is counted on the screen only then)


class FilterFailed(Pop3sFetchError):
    """The header filter failed for some messages: they stay on the server, asked again next
    run. Exit 78 when the failure is the configuration's (exit 2 without filter_may_delete)."""

    def __init__(self, message: str, *, config: bool, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = ExitCode.CONFIG if config else ExitCode.IOERR


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Run-wide settings that are not per account."""

    state_dir: Path
    wait: float = 0.0
    context_factory: Callable[[Account], ssl.SSLContext] | None = None
    clock: Callable[[], float] = time.time  # "now" for keep = "30d"; tests move it on
    #: Graceful stop (daemon mode's SIGTERM): once true, no account starts, and a running one
    #: stops after the message it is reading, publishes what it has, and QUITs if it can.
    stop_requested: Callable[[], bool] = lambda: False
    #: Log in even within the LOGIN-DELAY remembered from the server (sync --ignore-login-delay).
    ignore_login_delay: bool = False
    #: A process that syncs again (sync --every): each account's server hints from its last
    #: clean run, so that the next one connects before the state is opened.
    server_hints: KeptHints | None = None


def sync_accounts(
    accounts: Sequence[tuple[Account, Callable[[], str]]],
    options: SyncOptions,
    reporter: Reporter,
    jobs: int = 1,
) -> list[AccountResult]:
    """Sync each (account, password getter) pair, ``jobs`` at a time; one failing stops no other.

    Accounts not begun when a stop is requested are left out of the results.
    """

    def one(account: Account, password: Callable[[], str]) -> AccountResult | None:
        if options.stop_requested():
            return None
        return sync_account(account, password, options, reporter)

    if jobs <= 1 or len(accounts) <= 1:
        results = [one(a, pw) for a, pw in accounts]
    else:
        import concurrent.futures  # only here: it costs start-up time one account need not pay

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, a, pw) for a, pw in accounts]
            results = [f.result() for f in futures]
    return [r for r in results if r is not None]


def sync_account(
    account: Account,
    password: Callable[[], str],
    options: SyncOptions,
    reporter: Reporter,
) -> AccountResult:
    """Fetch every new message of one account; errors are returned in the result, not raised."""
    result = AccountResult(account.name)
    started = time.monotonic()
    try:
        with (
            speaking_for(account.name),
            AccountLock(options.state_dir / f"{account.name}.lock", account.name) as lock,
        ):
            lock.acquire(options.wait)
            # A daemon's poll after a clean one: the connection opens meanwhile the state and
            # the destination are (nothing is sent that depends on them: see _AccountSync.run).
            early = _connect_early(account, options)
            try:
                with open_store(options.state_dir / f"{account.name}.sqlite3") as store:
                    destcheck.check(account, store)  # before the destination is even created
                    result.login_delay = _held_back(store, options)
                    if result.login_delay is not None:
                        raise _Skipped  # before logging in: the server would refuse
                    destination = _open_destination(account, options)
                    completed = False
                    run = _AccountSync(
                        account, store, destination, options, reporter, result, early
                    )
                    early = None  # run() takes it or discards it
                    try:
                        run.run(password)
                        completed = True
                        _keep_hints(account, store, options)
                    except KeyboardInterrupt:
                        # Ctrl-C: what is complete was published on the way out; until QUIT
                        # no DELE counts. Say so, then let the interrupt end the program.
                        result.interrupted = True
                        if not run.quit_sent:
                            result.deleted = 0
                        result.duration = time.monotonic() - started
                        reporter.finished(result)
                        raise
                    finally:
                        destination.close()
                        if (not completed or result.login_delay) and result.fetched == 0:
                            destination.remove_if_unused()  # no empty ~/Mail/wrongpw left
            finally:
                if early is not None:  # failed before the run began: nothing was sent
                    early.discard()
    except _Skipped:
        pass
    except Pop3sFetchError as err:
        result.error = err
    result.duration = time.monotonic() - started
    # Outside the lock, once the mail is durable: the hook cannot change what was delivered.
    hook_failed = hooks.run_on_new_mail(account, result.fetched, result.octets)
    if hook_failed is not None:
        result.warnings.append(hook_failed)
        reporter.warned(account.name, hook_failed, loud=True)
    reporter.finished(result)
    return result


class _Skipped(Exception):
    """The account is not synced in this run (LOGIN-DELAY): leave its lock and store."""


def _connect_early(account: Account, options: SyncOptions) -> Connecting | None:
    """Start connecting now if this process's last clean run of the account left its hints."""
    kept = options.server_hints
    hints = kept.take(account) if kept is not None else None  # kept again after a clean run
    if hints is None:
        return None
    return open_in_background(account, hints, context_factory=options.context_factory)


def _keep_hints(account: Account, store: StateStore, options: SyncOptions) -> None:
    """After a clean run: what the next run in this process may connect with at once."""
    kept = options.server_hints
    if kept is None:
        return
    delay, _, refused_at = store.login_delay()
    if delay is not None or refused_at is not None:
        return  # a LOGIN-DELAY: the next run reads the state before it opens anything
    kept.remember(account, ServerHints(store.server_pipelines(), store.last_login_method()))


def _held_back(store: StateStore, options: SyncOptions) -> serverpolicy.LoginDelay | None:
    """The LOGIN-DELAY that makes this run skip the account, or None to go ahead."""
    if options.ignore_login_delay:
        return None
    delay, last_login, refused_at = store.login_delay()
    due = serverpolicy.next_login(delay, last_login, refused_at)
    return serverpolicy.LoginDelay(delay, due) if due > options.clock() else None


def _open_destination(account: Account, options: SyncOptions) -> Destination:
    if account.format != "mda":
        assert account.destination is not None  # config requires one for files
        return open_destination(account.destination, account.format, owner=account.name)
    assert account.mda is not None  # config requires it with format "mda"
    # Messages wait for the program in the state directory: private, and checked as ours.
    return open_destination(
        options.state_dir,
        "mda",
        owner=account.name,
        command=Command(account.mda, account.mda_timeout),
    )


class _AccountSync:
    """One run of one account: reconcile, connect, list, fetch in batches, delete, quit."""

    def __init__(
        self,
        account: Account,
        store: StateStore,
        destination: Destination,
        options: SyncOptions,
        reporter: Reporter,
        result: AccountResult,
        connecting: Connecting | None = None,
    ) -> None:
        self.account = account
        self._connecting = connecting  # opened before the state, with remembered hints
        self.store = store
        self.destination = destination
        self.options = options
        self.reporter = reporter
        self.result = result
        self.session: Pop3Client | None = None
        self.staged: list[tuple[RemoteMessage, StagedMessage]] = []
        self.staged_bytes = 0
        self.writer: MessageWriter | None = None
        self.held: set[str] = set()  # UIDLs never to DELE: their size disagreed with LIST
        self.deleting: set[str] = set()  # UIDLs sent DELE in this session
        self.size_mismatches: list[Retrieved] = []
        self.server_octets: dict[str, int] = {}  # UIDL -> octets received, as LIST counts
        self.quit_sent = False  # QUIT makes this session's DELEs final
        self.refused: list[tuple[RemoteMessage, MessageRefused]] = []  # by an MDA: stay there
        self.filter_deleting: list[RemoteMessage] = []  # DELE sent on the filter's word
        self.filter_failed: list[tuple[RemoteMessage, header_filter.Verdict]] = []
        self.quiet: QuietListing | None = None  # the listing the last complete run settled

    def run(self, password: Callable[[], str]) -> None:
        # Opened meanwhile (unless already opening), with what the last session learnt; its
        # round trips overlap the local work (the password, which may be a keyring round trip
        # of its own, and reconcile), and nothing that depends on the state is sent before
        # that is done: the handshake, CAPA, and a login's first line once the secret is in.
        connecting = self._connecting
        try:
            self.reporter.started(self.account.name, "connecting")
            if connecting is None:
                connecting = open_in_background(
                    self.account,
                    ServerHints(self.store.server_pipelines(), self.store.last_login_method()),
                    context_factory=self.options.context_factory,
                )
            secret = password()
            connecting.offer_secret(secret)
            self.result.recovered = self.reconcile()
            # Read while the connection opens, unless the last listing settled everything:
            # then it is likely to match again, and the set (~10 MiB at 100,000) is not needed.
            self.quiet = self.store.quiet_listing()
            delivered = self.store.delivered() if self.quiet is None else None
        except BaseException:
            if connecting is not None:
                connecting.discard()
            raise
        try:
            session = connecting.result()
        except (ConnectError, ProtocolError):
            if connecting.early_capa:
                self.store.remember_pipelining(False)  # be careful again next time
            raise
        self.session = session
        try:
            self._run_session(session, secret, delivered)
        finally:
            session.close()

    def reconcile(self) -> int:
        """Settle deliveries a killed run left in flight, before any command that needs it."""
        intents = self.store.pending()
        if not intents:
            self.destination.remove_stale_staging()
            return 0
        outcomes = self.destination.reconcile([_placement(i) for i in intents])
        made_it = [i.uidl for i, ok in zip(intents, outcomes, strict=True) if ok]
        lost = [i.uidl for i, ok in zip(intents, outcomes, strict=True) if not ok]
        self.store.mark_delivered(made_it)
        self.store.forget(lost)
        if lost and not self.destination.verifiable:
            self._warn(
                f"a run was stopped while the MDA had {len(lost)} message(s) in hand; it cannot "
                "tell whether it delivered them, so they are handed over again (a duplicate "
                "is possible, a loss is not)"
            )
        # After reconcile, so a journalled target's leftover is judged before it goes.
        self.destination.remove_stale_staging()
        logger.info(
            "%s: reconciled %d delivered, %d to fetch again",
            self.account.name,
            len(made_it),
            len(lost),
        )
        return len(made_it)

    def _run_session(self, session: Pop3Client, secret: str, delivered: set[str] | None) -> None:
        self.store.remember_pipelining(session.pipelining)
        known = len(delivered) if delivered is not None else self._quiet_count()
        session.prefetch_sizes = known <= PREFETCH_LIST_UP_TO
        try:
            method = log_in(session, self.account, secret, then_list=True)
        except LoginDelayed as too_soon:
            self._login_refused(session, too_soon)
            return
        logged_in_at = self.options.clock()
        # At once, with what CAPA said before login: should the run fail later, the next one
        # must still know not to come back too soon.
        self.store.remember_login(logged_in_at, serverpolicy.login_delay(session.capabilities))
        logger.info("%s: logged in with %s", self.account.name, method)
        self.store.remember_login_method(method)
        self.reporter.started(self.account.name, "listing")
        listed: dict[int, RemoteMessage] | None = None  # set when the server has no UIDL
        fingerprint: str | None = None
        uidls: Mapping[int, str]
        try:
            reply = session.uidl_reply()
        except NoUidl as err:
            delivered = self.store.delivered() if delivered is None else delivered
            listed = self.without_uidl(session, err, delivered)
            uidls = {number: message.uidl for number, message in listed.items()}
        else:
            fingerprint = self._fingerprint(reply)
            if self.quiet is not None and fingerprint == self.quiet.fingerprint:
                self._quiet_run(session, reply.count(), logged_in_at)
                return
            uidls = reply.pairs()
            del reply  # the bytes, ~2.5 MiB at 100,000 messages: parsed now
        delivered = self.store.delivered() if delivered is None else delivered
        check_uidls(uidls)
        self.result.on_server = len(uidls)
        # The filter's verdicts hold only while there is a filter: without one, nothing is
        # left aside (a "delete" one, still listed, is left too when deleting is not allowed).
        verdicts = self.store.filtered() if self.account.filter else {}
        # Sizes only for what will be fetched: on a big mailbox with nothing new, a whole
        # LIST is the server's costliest reply of the run. (No object per message listed:
        # an idle run lists tens of thousands.)
        if listed is not None:  # every message is new: its key was drawn for this session
            new = [listed[n] for n in sorted(listed)]
        else:
            fresh = [
                n for n, uidl in uidls.items() if uidl not in delivered and uidl not in verdicts
            ]
            new = session.with_sizes(uidls, fresh)
        set_aside = {n: uidl for n, uidl in uidls.items() if uidl in verdicts}
        self.result.skipped = len(uidls) - len(new) - len(set_aside)
        self._capa_after_login(session, logged_in_at)
        logger.info(
            "%s: %d messages on the server, %d new", self.account.name, len(uidls), len(new)
        )
        plan = self._plan(new)
        fetch = plan.fetch
        if self.account.filter:
            fetch = self._screen(session, plan.fetch, set_aside, verdicts)
        self.reporter.listed(self.account.name, len(fetch), sum(m.size for m in fetch))
        if not self.account.keep or self.account.delete_after is not None:
            self.held = self.store.held()  # a size that disagreed: never deleted by us
            expired = set[str]()
            if self.account.keep and self.account.delete_after is not None:
                cutoff = self.options.clock() - self.account.delete_after
                expired = self.store.delivered_before(cutoff)
            already = policy.deletable(
                uidls, delivered, self.held, keep=self.account.keep, expired=expired
            )
            self._delete(session, [RemoteMessage(n, uidl, 0) for n, uidl in already])
        unread = plan.oversize if self.account.oversize == "delete" else []
        self._delete(session, unread)  # the user's wish: deleted without being downloaded
        retr_errors = self._fetch(session, fetch)
        if session.awaiting_retr:
            # A graceful stop with RETRs sent ahead: QUIT would first need their replies, so
            # the session ends without it. What was fetched is durable and recorded; this
            # session's DELEs are not committed and are sent again (without a download) next run.
            self.result.deleted = 0
            return
        delete_errors = session.drain()
        session.quit()
        self.quit_sent = True
        if unread:
            self._warn_deleted_unread(unread, session.refused_deletes)
        self.result.filtered += [
            Filtered(m.uidl, m.size, "delete")
            for m in self.filter_deleting
            if m not in session.refused_deletes
        ]
        if self.account.filter:
            self.store.keep_skipped(set(uidls.values()))
            sizes = self.store.filtered_sizes()
            self.result.filtered += [
                Filtered(uidl, sizes.get(uidl, 0), "skip", new=False)
                for uidl in set_aside.values()
                if verdicts[uidl] == "skip"
            ]
        # QUIT made the deletions final: forget them now (a later listing cannot be trusted to
        # show they are gone, see forget_absent). Only now is the listing known complete.
        refused = {message.uidl for message in session.refused_deletes}
        deleted = self.deleting - refused
        self.store.forget(deleted)
        if deleted:
            self.store.forget_absent(set(uidls.values()) - deleted, delivered - deleted)
        else:  # no copy of the listing or of the delivered set (4 MiB each at 100,000)
            self.store.forget_absent(uidls.values(), delivered)
        if self.size_mismatches:
            self._warn_size_mismatches()
        if delete_errors:
            self.result.deleted -= len(delete_errors)
            raise ProtocolError(
                f"the server refused to delete {len(delete_errors)} message(s): {delete_errors[0]}",
                hint="they were downloaded and will be deleted on a later run",
            )
        if self.refused:
            raise self._refusal()
        if self.filter_failed:
            raise self._filter_failure()
        if retr_errors:
            raise ProtocolError(
                f"the server refused to send {len(retr_errors)} message(s): {retr_errors[0]}",
                hint="the others were downloaded; the next run tries these again",
            )
        if fingerprint is not None and not set_aside and self.result.fetched == len(new):
            # Every listed message is delivered now (by an earlier run or this one) and none
            # was deleted: the state checks it holds exactly those and nothing else of note.
            self.store.remember_quiet_listing(fingerprint, len(uidls))

    def _quiet_count(self) -> int:
        """The delivered count when only the settled listing was read (it is that count)."""
        assert self.quiet is not None
        return self.quiet.messages

    def _capa_after_login(self, session: Pop3Client, logged_in_at: float) -> None:
        """CAPA again after login when the server said its values may change then."""
        if serverpolicy.announced(session.capabilities):
            before = session.capabilities
            if not session.capa():  # RFC 2449: once logged in, the values for this user
                session.capabilities = before  # refused now: what was said before still holds
            self.store.remember_login(logged_in_at, serverpolicy.login_delay(session.capabilities))
            self._warn_about_expire(session.capabilities)

    def _fingerprint(self, reply: UidlReply) -> str | None:
        """What makes a run over this listing a quiet one, if it was last time: the listing's
        bytes and every setting that could decide otherwise. None where time alone changes
        the outcome (keep = "30d") or mail is deleted (keep = false): never a shortcut then.
        """
        account = self.account
        if not account.keep or account.delete_after is not None:
            return None
        settings = (
            __version__,
            account.host,
            account.port,
            account.username,
            str(account.destination),
            account.format,
            account.keep,
            account.delete_after,
            account.max_message_size,
            account.oversize,
            account.max_messages,
            account.max_bytes,
            account.filter,
            account.filter_may_delete,
        )
        digest = hashlib.sha256(repr(settings).encode())
        digest.update(b"\0")
        digest.update(reply.body)
        return digest.hexdigest()

    def _quiet_run(self, session: Pop3Client, count: int, logged_in_at: float) -> None:
        """The listing is byte for byte the one the last complete run settled, and the state
        has not changed since (any write to it drops the fingerprint): every listed message
        is delivered, none is held, oversize, absent or filtered, and keep = true. A full run
        would fetch, delete and record nothing, so nothing is parsed or read per message."""
        session.with_sizes({}, [])  # a LIST sent ahead with UIDL is read, and not needed
        self.result.on_server = self.result.skipped = count
        self._capa_after_login(session, logged_in_at)
        logger.info(
            "%s: %d messages on the server, 0 new (the listing the last run settled)",
            self.account.name,
            count,
        )
        self.reporter.listed(self.account.name, 0, 0)
        self._fetch(session, [])
        session.quit()
        self.quit_sent = True

    def _login_refused(self, session: Pop3Client, refused: LoginDelayed) -> None:
        """``-ERR [LOGIN-DELAY]``: remembered, so the next run waits, and a note, not an error.

        The delay is what CAPA announced, else what an earlier session learnt; unknown, the
        next run simply tries again.
        """
        now = self.options.clock()
        announced = serverpolicy.login_delay(session.capabilities)
        self.store.remember_login_refused(now, announced)
        delay = announced if announced is not None else self.store.login_delay()[0]
        self.result.login_delay = serverpolicy.LoginDelay(
            delay, now + delay if delay else None, refused=refused.reply
        )
        logger.info("%s: %s", self.account.name, refused)

    def _warn_about_expire(self, capabilities: Mapping[str, Sequence[str]]) -> None:
        """EXPIRE: the server deletes mail on its own; said once per account and value."""
        text = serverpolicy.expire_warning(
            serverpolicy.expire(capabilities),
            keep=self.account.keep,
            delete_after=self.account.delete_after,
        )
        if text is not None and self.store.warned_about("expire") != text:
            self._warn(text)
        self.store.remember_warned("expire", text)  # None: forgotten, so a return is said

    def without_uidl(
        self, session: Pop3Client, err: NoUidl, delivered: set[str]
    ) -> dict[int, RemoteMessage]:
        """The maildrop of a server without UIDL, keyed for this session only; ``keep = false``.

        Without UIDL nothing tells one session's message 1 from the next session's, so a
        message can be recorded only for the session that fetches it: its state key is
        :data:`NO_UIDL_PREFIX`, a token drawn for this session and its message number (which
        cannot collide within a session), and it is deleted in that same session, once it is
        durable and journalled, as always. Rows an earlier such session left (it was stopped
        before QUIT) can never match again and are dropped here.

        The one window without exactly-once: RFC 1939 makes DELE take effect only at QUIT, so
        a crash (or a lost connection) after a message was delivered and before the server
        answered QUIT leaves it on the server, and the next run, unable to recognise it,
        delivers it again: a duplicate is possible, a loss is not. The window is as small as
        the protocol allows: each batch's DELEs are sent as soon as it is recorded, and QUIT
        follows the last reply at once (``max_messages`` bounds how much one run can repeat).
        With ``keep = true`` or a duration the clear error stays: that would fetch the same
        messages again on every run.
        """
        if self.account.keep:
            raise refused_without_uidl(self.account, err) from None
        sizes = session.sizes()
        stale = {uidl for uidl in delivered if uidl.startswith(NO_UIDL_PREFIX)}
        if stale:
            self.store.forget(stale)
            delivered.difference_update(stale)
        if self.store.warned_about("no-uidl") is None:
            self._warn(
                "the server does not support UIDL, so with keep = false each message is "
                "deleted in the session that fetched it; a run stopped after saving messages "
                "but before the server confirmed its QUIT delivers them again next time (the "
                "one case where a duplicate is possible; this is said once)"
            )
            self.store.remember_warned("no-uidl", "yes")
        import secrets  # only servers without UIDL: it costs an idle run ~10 ms (random)

        token = secrets.token_hex(6)
        return {
            number: RemoteMessage(number, f"{NO_UIDL_PREFIX}{token}-{number}", size)
            for number, size in sizes.items()
        }

    def _plan(self, new: Sequence[RemoteMessage]) -> policy.FetchPlan[RemoteMessage]:
        """Apply the account's limits to the new messages; note and report what is skipped."""
        account = self.account
        limits = policy.Limits(account.max_message_size, account.max_messages, account.max_bytes)
        known = self.store.oversize()
        plan = policy.plan_fetch(new, limits, {uidl for uidl, o in known.items() if o})
        left = plan.overran + (plan.oversize if account.oversize == "skip" else [])
        fresh = {m.uidl: m.size for m in left if m.uidl not in known}
        if fresh:
            self.store.remember_oversize(fresh)
        if known.keys() - {m.uidl for m in left}:  # gone, fetched, or under a raised limit
            self.store.keep_oversize({m.uidl for m in left})
        self.result.oversize = [Oversize(m.uidl, m.size, "skip", m.uidl in fresh) for m in left]
        self.result.remaining = len(plan.deferred)
        if fresh:
            first = next(m for m in left if m.uidl in fresh)
            count = len(fresh)
            self._warn(
                f"left {count} {'message' if count == 1 else 'messages'} over max_message_size "
                f"({account.max_message_size:,} bytes) on the server without downloading "
                f"(first: message {first.number}, {first.size:,} bytes); this is said once, "
                "--json lists them on every run"
            )
        if plan.deferred:
            logger.info(
                "%s: %d new messages left for the next run by max_messages/max_bytes",
                account.name,
                len(plan.deferred),
            )
        return plan

    def _screen(
        self,
        session: Pop3Client,
        candidates: Sequence[RemoteMessage],
        set_aside: Mapping[int, str],
        verdicts: Mapping[str, str],
    ) -> list[RemoteMessage]:
        """Show each candidate's header (TOP n 0, pipelined) to the filter; return those to
        fetch. Verdicts are recorded in one commit, and only then is DELE sent for the
        "delete" ones (and again for those a run before recorded, if still listed)."""
        from pop3s_fetch import header_filter  # only with a filter: not on every run's path

        account = self.account
        assert account.filter is not None
        if candidates:
            self.reporter.started(account.name, "filtering")
        heads: dict[str, bytearray] = {}

        def open_sink(message: RemoteMessage) -> Callable[[bytes], None]:
            heads[message.uidl] = bytearray()
            return heads[message.uidl].extend

        fetch: list[RemoteMessage] = []
        decided: dict[str, tuple[int, str]] = {}
        doomed: list[RemoteMessage] = []
        for item in session.headers(candidates, open_sink):
            message = item.message
            head = bytes(heads.pop(message.uidl, b""))
            if item.error is not None:
                problem = f"the server refused TOP, so the filter could not see it: {item.error}"
                self.filter_failed.append((message, header_filter.Verdict("error", problem)))
                continue
            verdict = header_filter.ask(
                account.filter,
                head,
                account=account.name,
                uidl=message.uidl,
                recipient=account.username,
                timeout=account.filter_timeout,
                may_delete=account.filter_may_delete,
            )
            if verdict.action == "fetch":
                fetch.append(message)
            elif verdict.action == "error":
                self.filter_failed.append((message, verdict))
                if verdict.problem != self.filter_failed[0][1].problem:
                    self._warn(self._filter_line(message, verdict))
            else:
                decided[message.uidl] = (message.size, verdict.action)
                if verdict.action == "delete":
                    doomed.append(message)
                else:
                    self.result.filtered.append(Filtered(message.uidl, message.size, "skip"))
        if decided:
            self.store.remember_filtered(decided)  # durable before any DELE it leads to
        if account.filter_may_delete and "delete" in verdicts.values():
            sizes = self.store.filtered_sizes()
            doomed += [
                RemoteMessage(n, uidl, sizes.get(uidl, 0))
                for n, uidl in set_aside.items()
                if verdicts[uidl] == "delete"
            ]
        session.queue_delete(doomed)
        self.filter_deleting += doomed
        return fetch

    @staticmethod
    def _filter_line(message: RemoteMessage, verdict: header_filter.Verdict) -> str:
        return f"message {message.number} (UIDL {message.uidl}) not fetched: {verdict.problem}"

    def _filter_failure(self) -> FilterFailed:
        """One error for every message the filter could not judge: the first named, the rest
        counted (those failing for another cause were warnings already)."""
        config = any(verdict.config for _, verdict in self.filter_failed)
        first = next((m, v) for m, v in self.filter_failed if v.config == config)
        if first is not self.filter_failed[0]:  # the one never shown as a warning
            self._warn(self._filter_line(*self.filter_failed[0]))
        more = _more_note([v.problem for _, v in self.filter_failed], first[1].problem)
        fix = (
            "set filter_may_delete = true to let it delete, or make it exit 1 to skip"
            if config
            else "fix the filter"
        )
        return FilterFailed(
            self._filter_line(*first) + more,
            config=config,
            hint=f"left on the server; {fix}, and the next run shows "
            f"{'them' if more else 'it'} to the filter again",
        )

    def _warn_deleted_unread(
        self, unread: Sequence[RemoteMessage], refused: Sequence[RemoteMessage]
    ) -> None:
        """After QUIT: oversize messages deleted without a copy must never go unmentioned."""
        gone = [m for m in unread if m not in refused]
        self.result.oversize += [Oversize(m.uidl, m.size, "delete", True) for m in gone]
        if gone:
            count = len(gone)
            self._warn(
                f"deleted {count} {'message' if count == 1 else 'messages'} over "
                f"max_message_size ({self.account.max_message_size:,} bytes) from the server "
                f'WITHOUT downloading (oversize = "delete"; first: message {gone[0].number}, '
                f"{gone[0].size:,} bytes)"
            )

    def _fetch(self, session: Pop3Client, new: Sequence[RemoteMessage]) -> list[str]:
        """Stream every new message in, publishing in batches; return RETR refusals."""
        errors: list[str] = []
        if self.options.stop_requested():
            return errors
        self.reporter.started(self.account.name, "downloading")
        cap = self.account.max_message_size
        try:
            for item in session.retrieve(new, self._open_sink, cap):
                writer, self.writer = self.writer, None
                if item.error is not None:
                    if writer is not None:
                        writer.abort()
                    errors.append(f"message {item.message.number}: {item.error}")
                    continue
                assert writer is not None
                staged = writer.finish()
                if item.size_disagrees:
                    # Maybe another message's body (a broken or hostile server): saved, since
                    # it is complete and may be all there is, but never deleted by us.
                    self.store.hold(item.message.uidl, item.message.size, item.received)
                    self.held.add(item.message.uidl)
                    self.size_mismatches.append(item)
                self.staged.append((item.message, staged))
                self.server_octets[item.message.uidl] = item.received
                self.staged_bytes += item.octets
                self.reporter.fetched(self.account.name, item.received)
                if (
                    len(self.staged) >= (self.destination.max_batch or BATCH_MESSAGES)
                    or self.staged_bytes >= BATCH_BYTES
                ):
                    self._publish()
                if self.options.stop_requested():
                    break  # the batch so far is published below: a stop leaves no half batch
        except BaseException as err:
            # The message being read is incomplete: discard it. Those already complete are
            # whole (they had their terminating dot), so keep them rather than fetch again.
            if self.writer is not None:
                self.writer.abort()
                self.writer = None
            self._publish_quietly()
            if isinstance(err, MessageTooLarge):
                # Left on the server and skipped from now on, as LIST sizes cannot be trusted
                # for it; never deleted unread, since what arrived may not be that message.
                self.store.remember_oversize({err.remote.uidl: err.remote.size}, overran=True)
                raise ProtocolError(
                    f"{err.message}; it is over max_message_size ({err.cap:,} bytes)",
                    hint="it stays on the server and later runs skip it (--json lists it); "
                    "the messages before it were saved",
                ) from None
            raise
        self._publish()
        return errors

    def _open_sink(self, message: RemoteMessage) -> Callable[[bytes], None]:
        labels = {"uidl": message.uidl, "recipient": self.account.username}
        self.writer = self.destination.open_message(labels)
        if self.account.add_headers:
            from pop3s_fetch import trace  # only when asked for: email.utils costs start-up

            # Ours, above the server's bytes: the destination records (length, digest) what
            # it wrote, lines included; the size checked against LIST is still the server's.
            assert self.session is not None
            self.writer.write(
                trace.trace_lines(
                    self.account.add_headers,
                    server=self.account.host,
                    user=self.account.username,
                    program=f"pop3s-fetch {__version__}",
                    tls=self.session.tls_version,
                    when=self.options.clock(),
                )
            )
        return self.writer.write

    def _publish(self) -> None:
        if not self.staged:
            return
        batch, self.staged, self.staged_bytes = self.staged, [], 0

        def record(placements: list[Placement]) -> None:
            self.store.record_intents(
                [
                    _intent(message.uidl, message.size, placement)
                    for (message, _), placement in zip(batch, placements, strict=True)
                ],
                now=self.options.clock(),
            )

        try:
            self.destination.publish([staged for _, staged in batch], record)
        except MessageRefused as refusal:
            # Not delivered, and the destination says so: no doubt to settle later.
            self.store.forget(message.uidl for message, _ in batch)
            self.refused.extend((message, refusal) for message, _ in batch)
            if str(refusal) != str(self.refused[0][1]):  # the same cause again is only counted
                self._warn(self._refusal_line(*self.refused[-1]))
            return
        self.store.mark_delivered(message.uidl for message, _ in batch)
        for message, _ in batch:
            self.result.fetched += 1
            self.result.octets += self.server_octets.pop(message.uidl, message.size)
        if not self.account.keep and self.session is not None:
            self._delete(
                self.session, [message for message, _ in batch if message.uidl not in self.held]
            )

    def _delete(self, session: Pop3Client, messages: Sequence[RemoteMessage]) -> None:
        """DELE messages recorded as delivered; QUIT makes it final, or nothing happens."""
        session.queue_delete(messages)
        self.deleting.update(message.uidl for message in messages)
        self.result.deleted += len(messages)

    @staticmethod
    def _refusal_line(message: RemoteMessage, refusal: MessageRefused) -> str:
        return f"message {message.number} (UIDL {message.uidl}) not delivered: {refusal}"

    def _refusal(self) -> MessageRefused:
        """One error for every message the MDA refused: the first named, the rest counted.

        Temporary (exit 75) only if every refusal was; those refused for another cause than
        the first were warnings already.
        """
        temporary = all(refusal.temporary for _, refusal in self.refused)
        first_message, first = next(
            ((m, r) for m, r in self.refused if r.temporary == temporary), self.refused[0]
        )
        if first is not self.refused[0][1]:  # the one never shown as a warning
            self._warn(self._refusal_line(*self.refused[0]))
        more = _more_note([str(r) for _, r in self.refused], str(first))
        fix = "" if temporary else "fix the MDA or its rules, and "
        return MessageRefused(
            self._refusal_line(first_message, first) + more,
            temporary=temporary,
            hint=f"left on the server; {fix}the next run hands {'them' if more else 'it'} "
            "over again",
        )

    def _warn(self, text: str) -> None:
        """Tell the user something that did not stop the sync (screen, log, --json)."""
        self.result.warnings.append(text)
        self.reporter.warned(self.account.name, text)

    def _warn_size_mismatches(self) -> None:
        first = self.size_mismatches[0]
        count = len(self.size_mismatches)
        noun = "message" if count == 1 else "messages"
        kept = " and left on the server" if not self.account.keep else ""
        self._warn(
            f"{count} {noun} arrived with another size than the server listed (first: message "
            f"{first.message.number}, listed {first.message.size} bytes, {first.received} "
            f"arrived); saved{kept}, as it may be another message's body"
        )

    def _publish_quietly(self) -> None:
        """Publish what is complete while another error is already on its way up."""
        try:
            self._publish()
        except Pop3sFetchError as err:
            logger.debug("%s: could not publish after an error: %s", self.account.name, err)


def check_uidls(uidls: Mapping[int, str]) -> None:
    """Refuse UIDLs that are not 1-70 printable characters, or not unique (RFC 1939 section 7).

    ``uidls`` maps message numbers to UIDLs. Here rather than in ``pop3``: the state store
    keys every delivery on its UIDL, so a listing that cannot be trusted must stop the sync
    before anything is fetched or deleted (the hint says so), while ``doctor`` and
    ``serverinfo`` list the same replies without refusing them. Checked in bulk (one
    translate over all of them), as idle runs list tens of thousands.
    """
    values = list(uidls.values())
    joined = "".join(values).encode("utf-8", "replace")
    if joined.translate(None, _UIDL_BYTES) or (
        values and (min(map(len, values)) < 1 or max(map(len, values)) > 70)
    ):
        for number, uidl in sorted(uidls.items()):
            raw = uidl.encode("utf-8", "replace")
            if not 1 <= len(uidl) <= 70 or raw.translate(None, _UIDL_BYTES):
                raise ProtocolError(
                    f"the server sent an invalid UIDL for message {number}: {uidl[:80]!r}",
                    hint="this is a server fault; nothing was downloaded or deleted",
                )
    if len(set(values)) == len(values):
        return
    seen: dict[str, int] = {}
    for number, uidl in sorted(uidls.items()):
        if uidl in seen:
            raise ProtocolError(
                f"the server gave messages {seen[uidl]} and {number} the same UIDL {uidl!r}",
                hint="with duplicate UIDLs messages cannot be told apart; nothing was "
                "downloaded or deleted. Report this to the server's administrator",
            )
        seen[uidl] = number


def _placement(intent: Intent) -> Placement:
    return Placement(intent.target, intent.offset, intent.length, intent.digest)


def _intent(uidl: str, size: int, placement: Placement) -> Intent:
    return Intent(
        uidl, size, placement.target, placement.offset, placement.length, placement.digest
    )


def refused_without_uidl(account: Account, err: NoUidl) -> NoUidl:
    """The error for a server without UIDL when the account keeps mail, naming the way out."""
    wish = "keep = true" if account.delete_after is None else "keep with a duration"
    return NoUidl(
        err.message,
        hint=f"without UIDL, messages cannot be told apart between runs, so {wish} "
        "cannot work; nothing was downloaded or deleted. To fetch from this server "
        "anyway set keep = false: each message is then deleted in the session that "
        "fetched it",
    )


def _more_note(causes: Sequence[str], shown: str) -> str:
    """How an error naming one failed message counts the others (each cause in ``causes``).

    Those that failed for the cause shown are only counted (seven identical lines tell the
    user nothing more); the others were warnings as they happened.
    """
    rest = len(causes) - 1
    same = causes.count(shown) - 1
    if rest <= 0:
        return ""
    if same == rest:
        return f" (and {rest} more for the same reason)"
    if same == 0:
        return f" (and {rest} more, see the warnings)"
    return f" (and {rest} more: {same} for the same reason, the others in the warnings)"
