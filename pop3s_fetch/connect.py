"""Opening an account's connection, fast and safely: TLS, its pin, CAPA, the login method.

Shared by ``sync``, ``serverinfo`` and ``doctor`` so that all three connect exactly alike. It
joins the configuration (``Account``) to the protocol (``pop3.Pop3Client``) and to trust
(``tls``). For ``sync`` it also saves round trips: the connection is opened in a thread while
the caller does its local work, and a server known to pipeline gets CAPA (and, when SCRAM
worked last time, the login's first line) with the handshake. What the last session learnt
comes in as plain :class:`ServerHints`; what this one learns the caller reads off the session.

Must not know: storage (mailboxes, delivery), the state store (``sync`` reads and records the
hints), or the ui (no Reporter, no output).
"""

from __future__ import annotations

import contextvars
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pop3s_fetch import sasl, tls
from pop3s_fetch.config import Account
from pop3s_fetch.errors import AuthError, TLSError
from pop3s_fetch.pop3 import Pop3Client


@dataclass(frozen=True, slots=True)
class ServerHints:
    """What the last session learnt about the server: it pipelined, and which login worked."""

    pipelines: bool = False
    login_method: str | None = None


def open_session(
    account: Account,
    *,
    timeout: float | None = None,
    context: ssl.SSLContext | None = None,
    early_capa: bool = False,
    early_login: Callable[[], sasl.Exchange | None] | None = None,
) -> Pop3Client:
    """Connect, verify (or check the pin), and read the greeting; nothing secret is sent.

    ``early_capa``: the server pipelined last time, so CAPA may go with the handshake (implicit
    TLS only), and with it the first line of a login ``early_login`` has ready (see
    :meth:`Pop3Client.connect`).

    Raises:
        TLSError: refused, with the certificate's subject, issuer, expiry and fingerprint and
            what to configure (a second, unverified look fetches them for the message).
        ConnectError, ProtocolError: as :meth:`pop3.Pop3Client.connect`.
    """
    settings = account.tls
    starttls = settings.mode == "starttls"
    wait = account.timeout if timeout is None else timeout
    # Made before the try: a CA file that cannot be loaded is not a refused handshake.
    context = context or tls.client_context(settings)
    try:
        session = Pop3Client.connect(
            account.host,
            account.port,
            context=context,
            timeout=wait,
            starttls=starttls,
            # Not before a pin is checked: nothing goes to a server not yet verified.
            early_capa=early_capa and not starttls and settings.fingerprint is None,
            early_login=early_login,
            proxy=account.proxy,
        )
    except TLSError as err:
        cause = err.__cause__
        if isinstance(cause, ssl.SSLError):
            raise tls.explain_refusal(
                account.host,
                account.port,
                cause,
                settings,
                timeout=wait,
                starttls=starttls,
                proxy=account.proxy,
            ) from cause
        raise
    if settings.fingerprint is not None:
        try:
            tls.check_pin(
                session.peer_certificate(),
                settings.fingerprint,
                host=account.host,
                port=account.port,
            )
        except BaseException:
            session.close()
            raise
    return session


def login_method(session: Pop3Client, account: Account) -> str:
    """The method :func:`log_in` will use: ``USER``, ``APOP`` or a SASL mechanism name."""
    return sasl.choose(
        account.auth,
        sasl.offered_methods(session.capabilities),
        oauth=account.oauth2 is not None,
        apop_possible=sasl.apop_timestamp(session.greeting) is not None,
    )


def log_in(session: Pop3Client, account: Account, secret: str, *, then_list: bool = False) -> str:
    """Authenticate with the strongest method both sides allow; return the method used.

    Raises:
        AuthError: refused; the hint names this account's way to fix its secret.
        RemoteError: refused for now ([IN-USE], [LOGIN-DELAY], [SYS/TEMP]).
    """
    method = login_method(session, account)
    try:
        session.authenticate(method, account.username, secret, then_list=then_list)
    except AuthError as err:
        err.hint = _fix_for_refused_secret(account)
        raise
    return method


def open_in_background(
    account: Account,
    hints: ServerHints,
    *,
    context_factory: Callable[[Account], ssl.SSLContext] | None = None,
) -> Connecting:
    """Start opening ``account``'s session in a thread, with what ``hints`` allow early.

    The round trips of the handshake, the greeting and CAPA then overlap the caller's local
    work; nothing that depends on it is sent before the caller takes the session. The SSL
    context is made (by ``context_factory``, when given) in that thread too.
    """
    return Connecting(account, hints, context_factory)


class Connecting:
    """A session being opened in a thread: offer it the secret, then take it or discard it."""

    def __init__(
        self,
        account: Account,
        hints: ServerHints,
        context_factory: Callable[[Account], ssl.SSLContext] | None,
    ) -> None:
        self._account = account
        self._last_method = hints.login_method
        # scramp is imported meanwhile, instead of between CAPA and AUTH.
        sasl.preload_in_background(account.auth, oauth=account.oauth2 is not None)
        # A server that pipelined last time gets CAPA with the handshake, and, when it took
        # SCRAM last time and the secret is ready by then, the AUTH too.
        self._early_capa = hints.pipelines
        early_login = (
            _EarlyLogin()
            if hints.pipelines and sasl.may_start_early(account.auth, hints.login_method)
            else None
        )
        self._early_login = early_login
        self._opening = _InBackground(
            lambda: _open_and_ask_capa(account, context_factory, hints.pipelines, early_login)
        )

    @property
    def early_capa(self) -> bool:
        """CAPA was asked to go with the handshake (the hints said the server pipelines).

        If opening then failed, maybe this is no longer a server that takes CAPA before its
        greeting (one that drops early input would fail every run): the caller should record
        that it does not pipeline, so that the next run is careful again.
        """
        return self._early_capa

    def offer_secret(self, secret: str) -> None:
        """The secret is ready: the login's first line may go early if the handshake is not
        done yet (and the hints allow it); otherwise this does nothing."""
        if self._early_login is not None and self._last_method is not None:
            self._early_login.offer(
                sasl.Exchange(
                    sasl.mechanism(
                        self._last_method, username=self._account.username, secret=secret
                    )
                )
            )

    def result(self) -> Pop3Client:
        """Wait for the session: verified, greeted, its capabilities read.

        Raises:
            TLSError, ConnectError, ProtocolError: as :func:`open_session` and CAPA raise them.
        """
        return self._opening.result()

    def discard(self) -> None:
        """The caller failed first: drop the session without a word, and without waiting.

        Its error (a missing password, say) must not wait for a slow server's timeout: a
        session still being opened is closed by its thread when it is done.
        """
        self._opening.discard()


def _open_and_ask_capa(
    account: Account,
    context_factory: Callable[[Account], ssl.SSLContext] | None,
    early_capa: bool,
    early_login: _EarlyLogin | None,
) -> Pop3Client:
    """In a thread of its own: it touches nothing the caller uses meanwhile."""
    context = context_factory(account) if context_factory is not None else None
    session = open_session(
        account,
        context=context,
        early_capa=early_capa,
        early_login=early_login.take if early_login is not None else None,
    )
    try:
        if not session.capabilities:  # STLS sessions asked already, after the handshake
            session.capa()
    except BaseException:
        session.close()
        raise
    return session


class _EarlyLogin:
    """A login the caller prepares while the connecting thread may already send it.

    Whichever comes first wins: :meth:`take` (the handshake is done) closes the offer, so a
    login offered later is simply not sent early, and is made the usual way after CAPA.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchange: sasl.Exchange | None = None
        self._taken = False

    def offer(self, exchange: sasl.Exchange) -> None:
        with self._lock:
            if not self._taken:
                self._exchange = exchange

    def take(self) -> sasl.Exchange | None:
        with self._lock:
            self._taken = True
            return self._exchange


class _InBackground:
    """Open a session in a thread; :meth:`result` waits and raises what opening raised."""

    def __init__(self, connect: Callable[[], Pop3Client]) -> None:
        self._session: Pop3Client | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._lock = threading.Lock()
        # In this context, so that its log lines name the account too (logcontext).
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run, connect), daemon=True)
        self._thread.start()

    def _run(self, connect: Callable[[], Pop3Client]) -> None:
        try:
            session = connect()
        except BaseException as err:  # handed to the caller by result()
            self._error = err
            return
        with self._lock:
            abandoned = self._abandoned
            self._session = session
        if abandoned:
            session.close()

    def result(self) -> Pop3Client:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._session is not None
        return self._session

    def discard(self) -> None:
        """See :meth:`Connecting.discard`."""
        with self._lock:
            self._abandoned = True
            session = self._session
        if session is not None:
            session.close()


class KeptContexts:
    """SSL contexts for a process that connects to the same servers again (``sync --every``).

    A ``context_factory``: one context per server (host, port, proxy and TLS settings), made
    once, so that the trust store is not loaded again at each poll (24-31 ms of CPU for
    certifi's bundle or the system's). The same context verifies every handshake as a new one
    would. :meth:`clear` forgets them all, for a re-read configuration (CA files and client
    certificates may have changed on disk).

    TLS sessions are not resumed: in Python 3.11 each read of ``SSLSocket.session`` leaks the
    session (CPython gh-116810), ~7 KB a poll; and Dovecot's default login processes (one per
    connection, each with its own ticket keys) resume none.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # sync --jobs opens accounts from several threads
        self._contexts: dict[object, ssl.SSLContext] = {}

    def __call__(self, account: Account) -> ssl.SSLContext:
        key = (account.host, account.port, account.proxy, account.tls)
        with self._lock:
            context = self._contexts.get(key)
        if context is None:
            context = tls.client_context(account.tls)
            with self._lock:
                context = self._contexts.setdefault(key, context)
        return context

    def clear(self) -> None:
        with self._lock:
            self._contexts.clear()


class KeptHints:
    """What each account's last run in this process learnt of its server (``sync --every``).

    With them a daemon's poll starts connecting as soon as the account is locked, so that the
    TCP and TLS handshakes overlap opening the state and the destination, instead of waiting
    for the hints to be read from the state. The caller keeps only what a clean run left (and
    nothing for a server with a LOGIN-DELAY: that poll reads the state before it opens
    anything). Keyed by the account's name and every setting that picks the server or the
    login, so an edited configuration starts afresh; :meth:`clear` forgets all (SIGHUP).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # sync --jobs runs accounts in several threads
        self._hints: dict[object, ServerHints] = {}

    @staticmethod
    def _key(account: Account) -> object:
        return (
            account.name,
            account.host,
            account.port,
            account.proxy,
            account.tls,
            account.auth,
            account.username,
            account.oauth2 is not None,
        )

    def take(self, account: Account) -> ServerHints | None:
        """The hints for ``account``, forgotten until :meth:`remember` puts them back."""
        with self._lock:
            return self._hints.pop(self._key(account), None)

    def remember(self, account: Account, hints: ServerHints) -> None:
        with self._lock:
            self._hints[self._key(account)] = hints

    def clear(self) -> None:
        with self._lock:
            self._hints.clear()


def _fix_for_refused_secret(account: Account) -> str:
    source = account.secret_source
    if source == "oauth2":
        return f"the access token was refused; run: pop3s-fetch oauth2 login {account.name}"
    if source == "password_command":
        return (
            f"check username, and that password_command of {account.name} prints the right password"
        )
    if source == "password_credential":
        return (
            f"check username, and the systemd credential {account.password_credential} "
            f"of {account.name}"
        )
    return (
        f"check username, then store the right password with: "
        f"pop3s-fetch password set {account.name}"
    )
