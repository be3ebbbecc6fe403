"""OAuth 2.0 tokens for POP3 logins: the device authorization login and token refresh.

Owns the HTTP exchanges with an authorization server: the device authorization grant
(RFC 8628) that ``pop3s-fetch oauth2 login`` runs, and the refresh token grant (RFC 6749
section 6) that every sync runs to get a fresh access token. The device flow suits this
program because it needs no browser and no listening port on the machine that runs it: the
user approves on any other device, which works over ssh and on headless servers.

Tokens are secrets. None appears in an exception, a log line or a ``repr``; text an
authorization server sends back is scrubbed of every secret we sent before it is quoted.

The providers' endpoints and scopes (the presets) are configuration: ``config.OAUTH2_PRESETS``
fills them in, and this module only uses what it is handed.

HTTPS is verified with the :class:`ssl.SSLContext` the caller passes (``tls.client_context``);
plain ``http://`` is refused except to this machine (``loopback``), where the tests listen.

Must not know: the keyring, click, rich, the configuration file format, POP3 or SASL.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pop3s_fetch.errors import ConfigError, ConnectError, CredentialError, ProtocolError
from pop3s_fetch.loopback import is_loopback

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_TOKEN_GRANT: Final = "refresh_token"  # noqa: S105 (a grant type, not a secret)
DEFAULT_INTERVAL: Final = 5.0  # seconds; RFC 8628 section 3.2 when the server names none
SLOW_DOWN_STEP: Final = 5.0  # seconds added on each slow_down (RFC 8628 section 3.5)
DEFAULT_TIMEOUT: Final = 30.0
# An access token is refreshed this long before the server says it expires, so that one
# handed out is still valid when the POP3 server checks it.
EXPIRY_MARGIN: Final = 60.0

# Errors after which the user must log in again; any other 4xx is a configuration fault.
_LOGIN_AGAIN_ERRORS: Final = frozenset(
    {"invalid_grant", "expired_token", "access_denied", "authorization_declined"}
)
#: The longest token-endpoint reply read: real ones are a few KiB (tokens are JSON strings).
MAX_RESPONSE_BYTES: Final = 64 * 1024
_CONFIG_ERRORS: Final = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type"}
)


class OAuth2Settings(Protocol):
    """What this module reads of an account's ``[oauth2]`` table (``config.OAuth2Settings``)."""

    @property
    def provider(self) -> str: ...
    @property
    def token_endpoint(self) -> str: ...
    @property
    def device_endpoint(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def client_secret(self) -> str | None: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a token endpoint granted; ``expires_at`` is in ``time.time()`` seconds."""

    access_token: str
    expires_at: float
    refresh_token: str | None

    def __repr__(self) -> str:  # tokens must not reach logs or assertion messages
        refresh = "None" if self.refresh_token is None else "'[hidden]'"
        return (
            f"Tokens(access_token='[hidden]', expires_at={self.expires_at!r}, "
            f"refresh_token={refresh})"
        )


@dataclass(frozen=True, slots=True)
class _DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    expires_in: float
    interval: float


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: dict[str, object]


def device_login(
    settings: OAuth2Settings,
    show: Callable[[str, str, int], None],
    *,
    account_name: str | None = None,
    wait: Callable[[float], None] = time.sleep,
    context: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Tokens:
    """Run the device authorization grant and return the tokens once the user approved.

    ``show(verification_uri, user_code, expires_in)`` tells the user where to go; ``wait``
    sleeps between polls (tests pass a function that records and returns at once).

    Raises:
        CredentialError: the user denied the request, or the code expired unapproved.
        ConfigError: the server refused the client id, secret or scopes.
        ConnectError: the server could not be reached or failed (5xx).
        ProtocolError: the server answered something that is not an OAuth 2.0 reply.
    """
    _require_safe_url(settings.device_endpoint, "device_endpoint")
    _require_safe_url(settings.token_endpoint, "token_endpoint")
    fields = {"client_id": settings.client_id, "scope": " ".join(settings.scopes)}
    answer = _post(settings.device_endpoint, fields, context, timeout, secrets=_client(settings))
    if answer.status != 200:
        raise _refusal(
            answer,
            settings.device_endpoint,
            account_name,
            "device authorization",
            _client(settings),
        )
    authorization = _parse_device_authorization(answer.body, settings.device_endpoint)
    show(authorization.verification_uri, authorization.user_code, int(authorization.expires_in))
    return _poll(settings, authorization, account_name, wait, context, timeout)


def refresh(
    settings: OAuth2Settings,
    refresh_token: str,
    *,
    account_name: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Tokens:
    """Trade ``refresh_token`` for a new access token.

    The returned ``refresh_token`` is the rotated one when the server sent one, else the one
    given: servers that do not rotate omit it (RFC 6749 section 6).

    Raises:
        CredentialError: the refresh token was revoked or expired; the hint says to log in.
        ConfigError, ConnectError, ProtocolError: as for :func:`device_login`.
    """
    _require_safe_url(settings.token_endpoint, "token_endpoint")
    fields = {
        "grant_type": REFRESH_TOKEN_GRANT,
        "refresh_token": refresh_token,
        "client_id": settings.client_id,
        # Microsoft requires the scopes again; RFC 6749 allows them (a subset of the grant).
        "scope": " ".join(settings.scopes),
    }
    secrets = (refresh_token, *_client(settings))
    answer = _post(
        settings.token_endpoint, _with_secret(fields, settings), context, timeout, secrets
    )
    if answer.status != 200:
        raise _refusal(answer, settings.token_endpoint, account_name, "refresh", secrets)
    tokens = _parse_tokens(answer.body, settings.token_endpoint)
    if tokens.refresh_token is None:
        return Tokens(tokens.access_token, tokens.expires_at, refresh_token)
    return tokens


def access_token(
    settings: OAuth2Settings,
    account_name: str,
    load_refresh: Callable[[], str],
    store_refresh: Callable[[str], None],
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Return a fresh access token for ``account_name``, storing a rotated refresh token.

    The rotated token is stored before the access token is handed out: a server that rotates
    invalidates the old one, so losing the new one would force the user to log in again.
    """
    old = load_refresh()
    tokens = refresh(settings, old, account_name=account_name, context=context, timeout=timeout)
    if tokens.refresh_token is not None and tokens.refresh_token != old:
        store_refresh(tokens.refresh_token)
    return tokens.access_token


# --- the device flow ------------------------------------------------------------------------


def _poll(
    settings: OAuth2Settings,
    authorization: _DeviceAuthorization,
    account_name: str | None,
    wait: Callable[[float], None],
    context: ssl.SSLContext | None,
    timeout: float,
) -> Tokens:
    """Poll the token endpoint at the server's pace until approval, refusal or expiry.

    Time is counted from the waits, not the clock, so that tests need not sleep; the server's
    own ``expired_token`` answer remains the authority.
    """
    fields = {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": authorization.device_code,
        "client_id": settings.client_id,
    }
    secrets = (authorization.device_code, *_client(settings))
    interval = authorization.interval
    waited = 0.0
    while True:
        if waited >= authorization.expires_in:
            raise _expired(account_name)
        wait(interval)
        waited += interval
        answer = _post(
            settings.token_endpoint, _with_secret(fields, settings), context, timeout, secrets
        )
        if answer.status == 200:
            return _parse_tokens(answer.body, settings.token_endpoint)
        error = answer.body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
            continue
        if error == "expired_token":
            raise _expired(account_name)
        raise _refusal(answer, settings.token_endpoint, account_name, "device login", secrets)


def _parse_device_authorization(body: Mapping[str, object], url: str) -> _DeviceAuthorization:
    # Google spells it verification_url; RFC 8628 and Microsoft verification_uri.
    uri = body.get("verification_uri", body.get("verification_url"))
    device_code = body.get("device_code")
    user_code = body.get("user_code")
    expires_in = _number(body.get("expires_in"))
    interval = _number(body.get("interval", DEFAULT_INTERVAL))
    if not (
        isinstance(uri, str)
        and isinstance(device_code, str)
        and isinstance(user_code, str)
        and expires_in is not None
        and interval is not None
    ):
        raise _malformed(url, "a device authorization without the fields RFC 8628 requires")
    return _DeviceAuthorization(device_code, user_code, uri, expires_in, max(interval, 1.0))


def _parse_tokens(body: Mapping[str, object], url: str) -> Tokens:
    access = body.get("access_token")
    token_type = body.get("token_type", "Bearer")
    expires_in = _number(body.get("expires_in", 3600))
    refresh_token = body.get("refresh_token")
    if not isinstance(access, str) or not access:
        raise _malformed(url, "a token response without an access_token")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _malformed(url, f"a token of type {token_type!r}, not Bearer")
    if expires_in is None:
        raise _malformed(url, "a token response whose expires_in is not a number")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise _malformed(url, "a token response whose refresh_token is not a string")
    expires_at = time.time() + max(expires_in - EXPIRY_MARGIN, 0.0)
    return Tokens(access, expires_at, refresh_token or None)


def _number(value: object) -> float | None:
    """``value`` as seconds, accepting the numeric strings some servers send; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


# --- HTTP -----------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A token endpoint has no reason to redirect; following one could leave HTTPS."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _require_safe_url(url: str, key: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ConfigError(
        f"oauth2 {key} must be an https:// URL (plain http:// only to a loopback address), "
        f"not {_redact_url(url)}",
        hint=f"set {key} in the account's [oauth2] table to the provider's https:// endpoint",
    )


def _post(
    url: str,
    fields: Mapping[str, str],
    context: ssl.SSLContext | None,
    timeout: float,
    secrets: Sequence[str],
) -> _Answer:
    """POST ``fields`` form-encoded; return the status and JSON body of any HTTP answer."""
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.HTTPSHandler(context=context),
        _NoRedirect(),
    ]
    if is_loopback(host):  # an http_proxy from the environment must not see test traffic
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    # The scheme was checked by _require_safe_url: only https, or http to loopback.
    request = urllib.request.Request(  # noqa: S310
        url,
        data=urllib.parse.urlencode(fields).encode("ascii"),
        headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return _Answer(response.status, _json_body(response, url))
    except urllib.error.HTTPError as err:
        with err:
            status = err.code
            if status >= 500:
                raise ConnectError(
                    f"the OAuth2 server {host} failed (HTTP {status})",
                    hint="try again later",
                ) from None
            if 300 <= status < 400:
                raise _malformed(url, f"a redirect (HTTP {status})") from None
            return _Answer(status, _json_body(err, url))
    except (OSError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
        reason = getattr(err, "reason", err)
        raise ConnectError(
            f"cannot reach the OAuth2 server {host}: {_scrub(str(reason), secrets)}",
            hint="check the network connection and the endpoint URL, then try again",
        ) from None


def _json_body(
    response: http.client.HTTPResponse | urllib.error.HTTPError, url: str
) -> dict[str, object]:
    raw = response.read(MAX_RESPONSE_BYTES + 1)  # an endless body must not fill memory
    if len(raw) > MAX_RESPONSE_BYTES:
        raise _malformed(url, f"a reply longer than {MAX_RESPONSE_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise _malformed(url, "a reply that is not a JSON object")
    return body


# --- errors ---------------------------------------------------------------------------------


def _refusal(
    answer: _Answer,
    url: str,
    account_name: str | None,
    action: str,
    secrets: Sequence[str],
) -> Exception:
    """The error for an OAuth 2.0 error reply (RFC 6749 section 5.2)."""
    error = answer.body.get("error")
    if not isinstance(error, str):
        return _malformed(url, f"HTTP {answer.status} without an error code")
    if not _is_error_code(error):
        # A code is a short ASCII word (RFC 6749 section 5.2); anything else may echo what we
        # sent, a refresh token among it, so it is not shown at all.
        error = "an error code that is not one"
    error = _scrub(error, secrets)
    description = answer.body.get("error_description")
    detail = error
    if isinstance(description, str) and description.strip():
        detail = f"{error}: {_scrub(' '.join(description.split()), secrets)}"
    host = urllib.parse.urlsplit(url).hostname or "the OAuth2 server"
    if error in _CONFIG_ERRORS:
        return ConfigError(
            f"the OAuth2 server {host} refused the {action} ({detail})",
            hint="check client_id, client_secret and scopes in the account's [oauth2] table",
        )
    if error in _LOGIN_AGAIN_ERRORS or answer.status in (400, 401, 403):
        what = "refresh token" if action == "refresh" else "login"
        return CredentialError(
            f"the OAuth2 server {host} refused the {what} ({detail})",
            hint=_login_hint(account_name),
        )
    return _malformed(url, f"HTTP {answer.status} ({detail})")


def _is_error_code(text: str) -> bool:
    """RFC 6749's error codes: printable ASCII without quote or backslash, and short."""
    return 0 < len(text) <= 64 and all(" " <= char <= "~" and char not in '"\\' for char in text)


def _expired(account_name: str | None) -> CredentialError:
    return CredentialError(
        "the device login code expired before it was approved",
        hint=_login_hint(account_name),
    )


def _login_hint(account_name: str | None) -> str:
    return f"run: pop3s-fetch oauth2 login {account_name or 'ACCOUNT'}"


def _malformed(url: str, what: str) -> ProtocolError:
    return ProtocolError(
        f"the OAuth2 endpoint {_redact_url(url)} sent {what}",
        hint="check the endpoint URLs in the account's [oauth2] table",
    )


def _client(settings: OAuth2Settings) -> tuple[str, ...]:
    return (settings.client_secret,) if settings.client_secret else ()


def _with_secret(fields: Mapping[str, str], settings: OAuth2Settings) -> dict[str, str]:
    """Add the client secret, which Google requires even of its "installed app" clients."""
    if settings.client_secret:
        return {**fields, "client_secret": settings.client_secret}
    return dict(fields)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[hidden]")
    return text


def _redact_url(url: str) -> str:
    """The URL without user info, query or fragment: a misconfigured one may carry secrets."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
