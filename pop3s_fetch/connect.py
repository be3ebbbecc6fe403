"""Opening an account's POP3 session: its TLS settings, its pin, its login method.

Shared by ``sync``, ``serverinfo`` and ``doctor`` so that all three connect exactly alike. It
joins the configuration (``Account``) to the protocol (``pop3.Pop3Client``) and to trust
(``tls``); it knows nothing of mailboxes or state.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from pop3s_fetch import sasl, tls
from pop3s_fetch.config import Account
from pop3s_fetch.errors import AuthError, TLSError
from pop3s_fetch.pop3 import Pop3Client


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
    try:
        session = Pop3Client.connect(
            account.host,
            account.port,
            context=context or tls.client_context(settings),
            timeout=wait,
            starttls=starttls,
            # Not before a pin is checked: nothing goes to a server not yet verified.
            early_capa=early_capa and not starttls and settings.fingerprint is None,
            early_login=early_login,
        )
    except TLSError as err:
        cause = err.__cause__
        if isinstance(cause, ssl.SSLError):
            raise tls.explain_refusal(
                account.host, account.port, cause, settings, timeout=wait, starttls=starttls
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
