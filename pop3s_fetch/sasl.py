"""Client-side login mechanisms: SASL state machines, APOP, the choice among them, refusals.

This module owns what the client says during a POP3 login and how it reads the server's
verdict: the SASL mechanisms (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, LOGIN, CRAM-MD5, XOAUTH2,
OAUTHBEARER) as byte-level state machines, the RFC 5034 framing of one ``AUTH`` exchange
(:class:`Exchange`), the choice of a mechanism from ``auth`` and the server's capabilities
(:func:`choose`), and the mapping of RFC 3206 response codes to exit codes.

It does no I/O and must not know sockets, configuration files, keyrings or token endpoints:
the caller hands in a username and a secret (password or OAuth access token) and moves lines.
SCRAM is delegated to ``scramp`` so that no hand-rolled SCRAM crypto lives here.

Secrets (passwords, tokens) never appear in exception text or in ``repr()``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pop3s_fetch.errors import (
    AuthError,
    ConfigError,
    CredentialError,
    ExitCode,
    ProtocolError,
    RemoteError,
)

#: RFC 2449 section 4: a command line, CRLF included, is at most 255 octets. RFC 5034 says an
#: initial response that would not fit must wait for the server's empty challenge instead.
MAX_COMMAND_LINE = 255

#: Strongest first; what ``auth = "auto"`` tries, by kind of secret.
PASSWORD_PREFERENCE = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "USER")
OAUTH_PREFERENCE = ("OAUTHBEARER", "XOAUTH2")

#: ``auth`` setting -> what the server must offer (USER and APOP are not SASL).
_NAMED = {
    "scram-sha-256": "SCRAM-SHA-256",
    "scram-sha-1": "SCRAM-SHA-1",
    "plain": "PLAIN",
    "login": "LOGIN",
    "cram-md5": "CRAM-MD5",
    "user": "USER",
    "apop": "APOP",
    "xoauth2": "XOAUTH2",
    "oauthbearer": "OAUTHBEARER",
}
_OAUTH_NAMES = frozenset(OAUTH_PREFERENCE)

_RESPONSE_CODE = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9/-]*)\]")
_APOP_TIMESTAMP = re.compile(r"<[!-~]+@[!-~]+>")
_SHOWN_CHARS = 200


class SaslError(ProtocolError):
    """The server's SASL message was malformed or failed verification (exit 76).

    Not an :class:`AuthError`: the credentials were not judged wrong, the server misbehaved
    (or is not who it claims to be, when a SCRAM server signature does not match).
    """


class LoginUnavailable(RemoteError):
    """The server refused the login for a permanent reason of its own ([SYS/PERM]) (exit 69)."""

    exit_code = ExitCode.UNAVAILABLE


class LoginDelayed(RemoteError):
    """The server refused the login because the last one was too recent ([LOGIN-DELAY],
    RFC 2449): not a fault, the next attempt after the delay succeeds (exit 75 for callers
    that do not treat it as a note, as ``sync`` does). ``reply``: the server's ``-ERR`` text."""

    def __init__(self, message: str, *, reply: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reply = reply


class Mechanism(Protocol):
    """One SASL mechanism's client side for one login attempt; raw bytes, no base64, no I/O."""

    name: str
    #: A readable reason the server gave inside the exchange (XOAUTH2/OAUTHBEARER JSON,
    #: SCRAM ``e=``); the caller adds it to the error it raises on the final ``-ERR``.
    error_detail: str | None

    def initial_response(self) -> bytes | None:
        """The RFC 4422 initial response, or None when the mechanism starts with a challenge."""
        ...

    def respond(self, challenge: bytes) -> bytes:
        """Answer one server challenge; raises SaslError on a malformed or failed message."""
        ...

    def done(self, final: bytes | None) -> None:
        """The server said +OK (``final``: data it sent with it); raises SaslError if unproven."""
        ...

    def foreseen_answer(self) -> bytes | None:
        """The answer to the next challenge when it is known before the challenge comes.

        A client may then send it, and the commands after the login, without waiting.
        """
        ...

    def one_shot(self) -> bool:
        """Whether the initial response is the whole exchange: the next line is the verdict."""
        ...


class _Base:
    """Defaults shared by the mechanisms: no initial response, no challenges expected."""

    __slots__ = ("_username", "error_detail")
    name = ""

    def __init__(self, username: str) -> None:
        self._username = username
        self.error_detail: str | None = None

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        raise SaslError(f"{self.name}: the server sent an unexpected challenge {_show(challenge)}")

    def done(self, final: bytes | None) -> None:
        return None

    def foreseen_answer(self) -> bytes | None:
        return None

    def one_shot(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} user={self._username!r}>"


class Plain(_Base):
    """RFC 4616 PLAIN, authorization identity empty: the server derives it from the username."""

    __slots__ = ("_password",)
    name = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        super().__init__(username)
        self._password = password

    def initial_response(self) -> bytes:
        return b"\0" + self._username.encode() + b"\0" + self._password.encode()

    def one_shot(self) -> bool:
        return True


class Login(_Base):
    """The LOGIN draft mechanism: a "Username:" challenge, then a "Password:" one.

    Servers word the prompts differently (or leave them empty), so a prompt naming neither
    user nor password is answered by position: the first with the username, the second with
    the password.
    """

    __slots__ = ("_password", "_step")
    name = "LOGIN"

    def __init__(self, username: str, password: str) -> None:
        super().__init__(username)
        self._password = password
        self._step = 0

    def respond(self, challenge: bytes) -> bytes:
        self._step += 1
        if self._step > 2:
            return super().respond(challenge)
        prompt = challenge.decode("latin-1").lower()
        if "pass" in prompt or (self._step == 2 and "user" not in prompt):
            return self._password.encode()
        return self._username.encode()


class CramMd5(_Base):
    """RFC 2195 CRAM-MD5: HMAC-MD5 of the server's challenge, keyed with the password."""

    __slots__ = ("_answered", "_password")
    name = "CRAM-MD5"

    def __init__(self, username: str, password: str) -> None:
        super().__init__(username)
        self._password = password
        self._answered = False

    def respond(self, challenge: bytes) -> bytes:
        if self._answered or not challenge:
            return super().respond(challenge)
        self._answered = True
        digest = hmac.new(self._password.encode(), challenge, hashlib.md5).hexdigest()
        return f"{self._username} {digest}".encode()


class Scram(_Base):
    """RFC 5802/7677 SCRAM-SHA-1 and SCRAM-SHA-256 without channel binding, through scramp.

    The server must prove it knows the password (the server signature, ``v=``), either as the
    last challenge or with the +OK; :meth:`done` refuses a success that came without that proof.
    """

    __slots__ = ("_client", "_step", "_verified", "name")

    def __init__(
        self, name: str, username: str, password: str, *, client_nonce: str | None = None
    ) -> None:
        super().__init__(username)
        self.name = name
        self._step = 0
        self._verified = False
        # Imported here: scramp pulls in asn1crypto, which costs start-up time and memory
        # that only SCRAM logins should pay.
        from scramp import ScramClient  # type: ignore[import-untyped]
        from scramp.utils import ScramException  # type: ignore[import-untyped]

        try:
            self._client = ScramClient([name], username, password, c_nonce=client_nonce)
        except ScramException as err:
            # scramp's texts name the offending character class, never the characters.
            raise CredentialError(
                f"{name} cannot carry this username or password: {err}",
                hint='choose another mechanism with auth = "plain" or change the password',
            ) from err

    def initial_response(self) -> bytes:
        return str(self._client.get_client_first()).encode()

    def respond(self, challenge: bytes) -> bytes:
        self._step += 1
        if self._step == 1:
            message = self._server_message(challenge, "first")
            self._feed(self._client.set_server_first, message, "first")
            return str(self._client.get_client_final()).encode()
        if self._step == 2:
            self._verify(challenge)
            return b""
        return super().respond(challenge)

    def foreseen_answer(self) -> bytes | None:
        # After client-final the one challenge left is server-final, answered empty (once
        # its signature is checked; a bad one cancels the login whatever was sent).
        return b"" if self._step == 1 else None

    def done(self, final: bytes | None) -> None:
        if not self._verified and final:
            self._verify(final)
        if not self._verified:
            raise SaslError(
                f"the server accepted the {self.name} login without proving it knows the "
                "password (no server signature)",
                hint="this is a server fault or an impostor; nothing was downloaded",
            )

    def _verify(self, final: bytes) -> None:
        message = self._server_message(final, "final")
        self._feed(self._client.set_server_final, message, "final")
        self._verified = True

    def _server_message(self, data: bytes, stage: str) -> str:
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SaslError(f"{self.name}: the server-{stage} message is not UTF-8") from err
        if message.startswith("e="):
            # scramp cannot report a server's e= itself; the server ends with -ERR next.
            self.error_detail = f"{self.name} server error: {_printable(message[2:])}"
            raise SaslError(f"{self.name}: the server reported {_printable(message[2:])}")
        return message

    def _feed(self, setter: Callable[[str], object], message: str, stage: str) -> None:
        from scramp.utils import ScramException

        try:
            setter(message)
        except ScramException as err:
            raise SaslError(
                f"{self.name}: the server-{stage} message was refused: {err}",
                hint="the server did not prove it knows the password; nothing was downloaded"
                if stage == "final"
                else None,
            ) from err


class XOAuth2(_Base):
    """Google's and Microsoft's XOAUTH2: ``user=U^Aauth=Bearer T^A^A``.

    A refused token comes back as a base64 JSON challenge; the client must answer it with an
    empty line, after which the server sends -ERR. The JSON is kept in ``error_detail``.
    """

    __slots__ = ("_token",)
    name = "XOAUTH2"

    def __init__(self, username: str, token: str) -> None:
        super().__init__(username)
        self._token = token

    def initial_response(self) -> bytes:
        return f"user={self._username}\x01auth=Bearer {self._token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        if self.error_detail is not None:
            return super().respond(challenge)
        self.error_detail = xoauth2_error(challenge)
        return b""


class OAuthBearer(_Base):
    """RFC 7628 OAUTHBEARER: GS2 header ``n,a=U,`` then ``^Aauth=Bearer T^A^A``.

    On a refused token the server sends a JSON challenge and expects the single byte ``^A``
    (RFC 7628 section 3.2.3) before its -ERR. The JSON is kept in ``error_detail``.
    """

    __slots__ = ("_token",)
    name = "OAUTHBEARER"

    def __init__(self, username: str, token: str) -> None:
        super().__init__(username)
        self._token = token

    def initial_response(self) -> bytes:
        authzid = self._username.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={authzid},\x01auth=Bearer {self._token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        if self.error_detail is not None:
            return super().respond(challenge)
        self.error_detail = xoauth2_error(challenge)
        return b"\x01"


def mechanism(name: str, *, username: str, secret: str) -> Mechanism:
    """Build the client side of SASL mechanism ``name`` (as offered, any case).

    ``secret`` is the password, or the OAuth access token for XOAUTH2/OAUTHBEARER.

    Raises:
        ValueError: ``name`` is not a SASL mechanism this module implements (a bug upstream:
            :func:`choose` never returns one).
        CredentialError: SCRAM cannot encode the username or password (SASLprep).
    """
    upper = name.upper()
    if upper in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        return Scram(upper, username, secret)
    simple: dict[str, type[Plain | Login | CramMd5 | XOAuth2 | OAuthBearer]] = {
        "PLAIN": Plain,
        "LOGIN": Login,
        "CRAM-MD5": CramMd5,
        "XOAUTH2": XOAuth2,
        "OAUTHBEARER": OAuthBearer,
    }
    if upper not in simple:
        raise ValueError(f"no SASL mechanism {name!r} in pop3s_fetch.sasl")
    return simple[upper](username, secret)


class Exchange:
    """The RFC 5034 framing of one ``AUTH`` attempt: server lines in, client lines out.

    Use: send :meth:`command`; while the server answers ``+ ...``, send
    :meth:`answer` of the text after the ``+``; on ``+OK`` call :meth:`succeeded`, on ``-ERR``
    raise :meth:`failed`. A mechanism error cancels with ``*`` (the server then says -ERR) and
    is raised by :meth:`succeeded`/:meth:`failed` instead of the server's verdict.
    """

    __slots__ = ("_cancelled", "_deferred", "mechanism")

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self._deferred: bytes | None = None
        self._cancelled: SaslError | None = None

    def command(self) -> str:
        """``AUTH <MECH> [<initial response>]``; a response too long for one line is deferred."""
        base = f"AUTH {self.mechanism.name}"
        response = self.mechanism.initial_response()
        if response is None:
            return base
        # RFC 5034: "=" stands for an initial response of zero length.
        encoded = _b64(response) or "="
        line = f"{base} {encoded}"
        if len(line) + 2 > MAX_COMMAND_LINE:
            # OAuth tokens rarely fit: this is the "two-step" form Microsoft 365 documents.
            self._deferred = response
            return base
        return line

    def one_shot(self) -> bool:
        """True when :meth:`command` carried the whole exchange: ``+OK`` or ``-ERR`` is next."""
        return self._deferred is None and self.mechanism.one_shot()

    def foreseen(self) -> str | None:
        """The line that will answer the next challenge, if it is known already."""
        if self._deferred is not None or self._cancelled is not None:
            return None
        response = self.mechanism.foreseen_answer()
        return None if response is None else _b64(response)

    def answer(self, challenge: str) -> str:
        """The line answering ``+ <challenge>``: base64, or ``*`` to cancel on a mechanism error."""
        try:
            data = _unb64(challenge.strip())
            if self._deferred is not None:
                response, self._deferred = self._deferred, None
                if data:
                    raise SaslError(
                        f"{self.mechanism.name}: the server sent {_show(data)} "
                        "where an empty challenge was due"
                    )
            else:
                response = self.mechanism.respond(data)
        except SaslError as err:
            self._cancelled = err
            return "*"
        return _b64(response)

    def succeeded(self, text: str) -> None:
        """The server said ``+OK <text>``; checks the mechanism's proof of the server.

        Raises:
            SaslError: the exchange was cancelled, or the server did not prove itself.
        """
        if self._cancelled is not None:
            raise self._cancelled
        self.mechanism.done(_final_data(text))

    def failed(self, host: str, text: str) -> RemoteError:
        """The error to raise for ``-ERR <text>`` (the text with its response code, if any)."""
        if self._cancelled is not None and self.mechanism.error_detail is None:
            return self._cancelled
        oauth = self.mechanism.name in _OAUTH_NAMES
        return login_refused(host, text, detail=self.mechanism.error_detail, oauth=oauth)


def xoauth2_error(challenge: bytes) -> str:
    """Turn the JSON a server sends when it refuses an OAuth token into one readable line.

    ``{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`` becomes
    ``status 401: invalid or expired token (scope https://mail.google.com/)``.
    """
    import json  # only for a refused OAuth token: not worth importing at every start

    try:
        document = json.loads(challenge.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return f"server said {_show(challenge)}"
    if not isinstance(document, dict):
        return f"server said {_show(challenge)}"
    status = str(document.get("status", "")).strip()
    meaning = _HTTP_MEANING.get(status, "refused")
    parts = [f"status {status}: {meaning}" if status else meaning]
    for key in ("error", "error_description", "message"):
        if isinstance(document.get(key), str):
            parts.append(_printable(document[key]))
    scope = document.get("scope")
    if isinstance(scope, str) and scope:
        parts.append(f"(scope {_printable(scope)})")
    return " ".join(parts)


_HTTP_MEANING = {
    "400": "invalid request",
    "401": "invalid or expired token",
    "403": "insufficient scope",
}


def apop_digest(timestamp: str, password: str) -> str:
    """RFC 1939 APOP: lowercase hex MD5 of the greeting's ``<...>`` timestamp and the password."""
    return hashlib.md5((timestamp + password).encode(), usedforsecurity=False).hexdigest()


def apop_timestamp(greeting: str) -> str | None:
    """The ``<process-ID.clock@hostname>`` in a server greeting, or None (then APOP is out)."""
    found = _APOP_TIMESTAMP.search(greeting)
    return found.group(0) if found else None


def offered_methods(capabilities: Mapping[str, Sequence[str]]) -> list[str]:
    """The login methods CAPA advertises: its SASL mechanisms, plus USER for USER/PASS.

    A server without CAPA (an empty mapping) is a plain RFC 1939 server: those all have USER.
    """
    methods = [m.upper() for m in capabilities.get("SASL", ())]
    if "USER" in capabilities or not capabilities:
        methods.append("USER")
    return methods


def may_start_early(auth: str, last_method: str | None) -> bool:
    """Whether a login may begin before CAPA confirms the mechanism: only SCRAM (its first
    line holds no secret), only the one that worked last time, and only if ``auth`` (the
    setting) still allows it."""
    if last_method not in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        return False
    return auth == "auto" or _NAMED.get(auth) == last_method


def preload_in_background(auth: str, *, oauth: bool) -> None:
    """Start importing scramp in a thread if the login may well use SCRAM.

    The import costs tens of milliseconds; started before connecting, it is done while the
    handshake's round trips are waited for, instead of between CAPA and AUTH. (Python's import
    lock makes the login's own import wait for this one, never run twice.) Once scramp is
    imported (a daemon's second poll on), no thread is started: one costs a clone and a GIL
    hand-off at each poll, for nothing.
    """
    if "scramp" in sys.modules:
        return
    if not oauth and auth in ("auto", "scram-sha-256", "scram-sha-1"):
        threading.Thread(target=_import_scramp, name="preload-scramp", daemon=True).start()


def _import_scramp() -> None:
    with contextlib.suppress(ImportError):  # reported, if ever needed, by the login itself
        import scramp  # noqa: F401


def choose(auth: str, offered: Sequence[str], *, oauth: bool, apop_possible: bool) -> str:
    """Pick the login method: a SASL mechanism name, ``"USER"`` (USER/PASS) or ``"APOP"``.

    ``offered`` is :func:`offered_methods`; ``oauth`` says the secret is an access token;
    ``apop_possible`` says the greeting carried a timestamp. APOP, CRAM-MD5 and LOGIN are
    used only when named: they are weaker than what "auto" picks.

    Raises:
        ConfigError: ``auth`` is unknown, or does not suit the kind of secret (password vs
            OAuth).
        ProtocolError: the server offers nothing the setting allows; the message lists what
            it offers and the ``auth`` values that would work.
    """
    available = {m.upper() for m in offered}
    if apop_possible:
        available.add("APOP")
    if auth == "auto":
        preference = OAUTH_PREFERENCE if oauth else PASSWORD_PREFERENCE
        for candidate in preference:
            if candidate in available:
                return candidate
        raise _mismatch(auth, " or ".join(preference), available, oauth=oauth)
    wanted = _NAMED.get(auth)
    if wanted is None:
        raise ConfigError(
            f"unknown auth setting {auth!r}",
            hint=f'use "auto" or one of: {", ".join(sorted(_NAMED))}',
        )
    if (wanted in _OAUTH_NAMES) != oauth:
        raise _secret_mismatch(auth, oauth=oauth)
    if wanted not in available:
        raise _mismatch(auth, wanted, available, oauth=oauth)
    return wanted


def _secret_mismatch(auth: str, *, oauth: bool) -> ConfigError:
    if oauth:
        return ConfigError(
            f'auth = "{auth}" sends a password, but the account has an [oauth2] table',
            hint='set auth = "auto" (or "oauthbearer"/"xoauth2"), or remove [oauth2]',
        )
    return ConfigError(
        f'auth = "{auth}" sends an OAuth2 access token, but the account has no [oauth2] table',
        hint='add [oauth2] to the account, or set auth = "auto"',
    )


def _mismatch(auth: str, wanted: str, available: set[str], *, oauth: bool) -> ProtocolError:
    offered = ", ".join(sorted(available)) or "no login method at all"
    usable = sorted(
        setting
        for setting, method in _NAMED.items()
        if method in available and (method in _OAUTH_NAMES) == oauth
    )
    hint = (
        f"set auth to one of: {', '.join(repr(s) for s in usable)}"
        if usable
        else "this server cannot log in this account with "
        + ("OAuth2; use a password instead" if oauth else "a password; use OAuth2 if it offers it")
    )
    return ProtocolError(
        f'the server does not offer {wanted} (auth = "{auth}"); it offers: {offered}', hint=hint
    )


def parse_response_code(text: str) -> str | None:
    """The RFC 2449/3206 response code at the start of an -ERR text (``"SYS/TEMP"``), or None."""
    found = _RESPONSE_CODE.match(text.lstrip())
    return found.group(1).upper() if found else None


_TEMPORARY_CODES = ("SYS/TEMP", "IN-USE", "LOGIN-DELAY")


def exit_code_for(code: str | None) -> ExitCode:
    """Exit code for a refused login, by its response code.

    * AUTH, no code, or a code we do not know: the credentials were refused -> NOPERM (77).
    * SYS/TEMP, IN-USE, LOGIN-DELAY: retrying later will work -> TEMPFAIL (75).
    * SYS/PERM: a lasting fault on the server's side that the user cannot fix with a new
      password and that retrying will not cure -> UNAVAILABLE (69, "service unavailable"),
      so that neither a password reset (77) nor an endless retry loop (75) is suggested.

    Codes are hierarchical (RFC 2449 section 8): ``SYS/TEMP/QUOTA`` counts as ``SYS/TEMP``.
    """
    if code is None:
        return ExitCode.NOPERM
    if _within(code, _TEMPORARY_CODES):
        return ExitCode.TEMPFAIL
    if _within(code, ("SYS/PERM",)):
        return ExitCode.UNAVAILABLE
    return ExitCode.NOPERM


def _within(code: str, families: Sequence[str]) -> bool:
    return any(code == family or code.startswith(family + "/") for family in families)


def login_refused(
    host: str, text: str, *, detail: str | None = None, oauth: bool = False
) -> RemoteError:
    """The error for a login the server refused with ``-ERR <text>`` (USER/PASS, APOP or AUTH).

    ``detail`` is what the server said inside the SASL exchange (:attr:`Mechanism.error_detail`).
    """
    reason = text or "no reason given"
    if detail:
        reason = f"{reason} ({detail})"
    code = parse_response_code(text)
    exit_code = exit_code_for(code)
    if code is not None and _within(code, ("LOGIN-DELAY",)):
        return LoginDelayed(
            f"{host} refused the login for now: {reason}",
            reply=reason,
            hint="the server allows only so many logins a while; retry later",
        )
    if exit_code is ExitCode.TEMPFAIL:
        return RemoteError(
            f"{host} refused the login for now: {reason}",
            hint="another client may be using the mailbox, or the server asks to wait; retry later",
        )
    if exit_code is ExitCode.UNAVAILABLE:
        return LoginUnavailable(
            f"{host} cannot serve this account: {reason}",
            hint="the server reports a lasting problem of its own, not a wrong password; "
            "contact its administrator",
        )
    hint = (
        "the access token was refused; run: pop3s-fetch oauth2 login ACCOUNT"
        if oauth
        else "check username, then store the right password with: pop3s-fetch password set"
    )
    return AuthError(f"{host} refused the login: {reason}", hint=hint)


def _final_data(text: str) -> bytes | None:
    """Base64 data a server may put after +OK to carry SASL success data, else None."""
    try:
        return _unb64(text.strip()) or None
    except SaslError:
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise SaslError(f"the server sent a challenge that is not base64: {_show(text)}") from err


def _show(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return repr(_printable(text))


def _printable(text: str) -> str:
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= _SHOWN_CHARS else cleaned[:_SHOWN_CHARS] + "..."
