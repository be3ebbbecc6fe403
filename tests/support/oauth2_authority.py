"""A local OAuth 2.0 authorization server for tests, run in a thread of the test process.

Owns three endpoints on 127.0.0.1 (plain HTTP: the client allows it only to loopback):

- ``/device`` the device authorization endpoint (RFC 8628 section 3.1);
- ``/token`` the token endpoint, for the device code grant (with a scriptable sequence of
  ``authorization_pending``/``slow_down`` answers) and the refresh token grant (rotating the
  refresh token when ``rotate_refresh`` is set);
- ``/introspect`` token introspection as Dovecot's oauth2 passdb asks for it: the token comes
  as the ``token`` form field (``introspection_mode = post``), the ``token`` query parameter
  (``get``, with ``?token=`` at the end of ``introspection_url``) or an ``Authorization:
  Bearer`` header (``auth``). The answer is RFC 7662's: ``{"active": true, "username": ...}``
  for a live access token, ``{"active": false}`` for any other.

The test plays the user: :meth:`OAuth2Authority.approve` or :meth:`~OAuth2Authority.deny`
decides a pending device code, usually from inside the ``wait`` function the test hands to
the client, so nothing sleeps and no second thread drives the client.

Knows nothing about pop3s-fetch; it is the world the program talks to.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HOST = "127.0.0.1"
CLIENT_ID = "pop3s-fetch-test-client"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "pop3 offline_access"


@dataclass
class DeviceCode:
    """One device authorization: pending until the test approves, denies or expires it."""

    device_code: str
    user_code: str
    scope: str
    state: str = "pending"  # "pending" | "approved" | "denied" | "expired" | "used"
    username: str | None = None


@dataclass(frozen=True)
class Grant:
    """A refresh token and the user it was issued for."""

    username: str
    scope: str


@dataclass(frozen=True)
class TokenRequest:
    """A request the token endpoint received, for tests to assert what the client sent."""

    grant_type: str
    fields: dict[str, str]


class OAuth2Authority:
    """The authorization server's state, and the HTTP server exposing it."""

    def __init__(
        self,
        *,
        client_id: str = CLIENT_ID,
        client_secret: str | None = None,
        interval: int = 5,
        expires_in: int = 600,
        access_lifetime: int = 3600,
        rotate_refresh: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.interval = interval
        self.expires_in = expires_in
        self.access_lifetime = access_lifetime
        self.rotate_refresh = rotate_refresh
        self.verification_uri = "https://authority.invalid/device"
        # Google names the field verification_url; RFC 8628 and Microsoft verification_uri.
        self.verification_field = "verification_uri"
        self.fail_with_status: int | None = None  # answer every request with this (e.g. 503)
        # A username: every new device code counts as approved by that user at once, for
        # tests that run ``pop3s-fetch oauth2 login`` as a subprocess and cannot play the user.
        self.auto_approve_as: str | None = None
        self.token_requests: list[TokenRequest] = []
        self.user_codes: list[str] = []  # every user code handed out, in order
        self.issued_tokens: list[str] = []  # every access and refresh token, to grep output for
        self.introspections: list[str] = []  # the tokens Dovecot asked about, in order
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceCode] = {}  # by device_code
        self._access: dict[str, str] = {}  # live access token -> username
        self._refresh: dict[str, Grant] = {}  # live refresh token -> grant
        self._next_poll_errors: deque[str] = deque()
        self._server = ThreadingHTTPServer((HOST, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"OAuth2Authority(url={self.url!r})"

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    @property
    def device_endpoint(self) -> str:
        return f"{self.url}/device"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def start(self) -> None:
        # serve_forever checks for shutdown() between polls; its 0.5 s default slows teardown.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="oauth2-authority",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    # --- the test plays the user --------------------------------------------------------------

    def script_polls(self, *errors: str) -> None:
        """Answer the next device-code polls with these errors (e.g. ``slow_down``), in order."""
        with self._lock:
            self._next_poll_errors.extend(errors)

    def approve(self, user_code: str, username: str) -> None:
        """The user signs in as ``username`` and enters ``user_code``."""
        self._decide(user_code, "approved", username)

    def deny(self, user_code: str) -> None:
        self._decide(user_code, "denied", None)

    def expire(self, user_code: str) -> None:
        self._decide(user_code, "expired", None)

    def issue(self, username: str, scope: str = SCOPE) -> tuple[str, str]:
        """Grant ``username`` an access and a refresh token directly, as a finished login."""
        with self._lock:
            return self._issue(username, scope)

    def revoke(self, token: str) -> None:
        """Revoke an access or refresh token: introspection and refresh then refuse it."""
        with self._lock:
            self._access.pop(token, None)
            self._refresh.pop(token, None)

    def is_live_refresh_token(self, token: str) -> bool:
        with self._lock:
            return token in self._refresh

    def username_for(self, access_token: str) -> str | None:
        with self._lock:
            return self._access.get(access_token)

    # --- endpoint logic (called from the server threads) --------------------------------------

    def device_authorization(self, fields: dict[str, str]) -> tuple[int, dict[str, object]]:
        if fields.get("client_id") != self.client_id:
            return 401, {"error": "invalid_client"}
        device = DeviceCode(
            device_code=secrets.token_urlsafe(24),
            user_code=f"{secrets.randbelow(10**8):08d}",
            scope=fields.get("scope", ""),
        )
        if self.auto_approve_as is not None:
            device.state, device.username = "approved", self.auto_approve_as
        with self._lock:
            self._devices[device.device_code] = device
            self.user_codes.append(device.user_code)
        return 200, {
            "device_code": device.device_code,
            "user_code": device.user_code,
            self.verification_field: self.verification_uri,
            "expires_in": self.expires_in,
            "interval": self.interval,
        }

    def token(self, fields: dict[str, str]) -> tuple[int, dict[str, object]]:
        grant_type = fields.get("grant_type", "")
        with self._lock:
            self.token_requests.append(TokenRequest(grant_type, dict(fields)))
            if not self._client_ok(fields):
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            if grant_type == DEVICE_CODE_GRANT:
                return self._device_code_grant(fields.get("device_code", ""))
            if grant_type == "refresh_token":
                return self._refresh_grant(fields.get("refresh_token", ""))
        return 400, {"error": "unsupported_grant_type"}

    def introspect(self, token: str) -> dict[str, object]:
        with self._lock:
            self.introspections.append(token)
            username = self._access.get(token)
        if username is None:
            return {"active": False}
        return {"active": True, "username": username, "client_id": self.client_id}

    def _device_code_grant(self, device_code: str) -> tuple[int, dict[str, object]]:
        device = self._devices.get(device_code)
        if device is None or device.state == "used":
            return 400, {"error": "invalid_grant", "error_description": "unknown device code"}
        if self._next_poll_errors:
            return 400, {"error": self._next_poll_errors.popleft()}
        if device.state == "pending":
            return 400, {"error": "authorization_pending"}
        if device.state == "denied":
            return 400, {"error": "access_denied", "error_description": "the user said no"}
        if device.state == "expired":
            return 400, {"error": "expired_token"}
        assert device.username is not None
        device.state = "used"
        access, refresh = self._issue(device.username, device.scope)
        return 200, self._token_body(access, refresh, device.scope)

    def _refresh_grant(self, refresh_token: str) -> tuple[int, dict[str, object]]:
        grant = self._refresh.get(refresh_token)
        if grant is None:
            return 400, {
                "error": "invalid_grant",
                "error_description": f"refresh token {refresh_token} is revoked",  # echo on purpose
            }
        access = secrets.token_urlsafe(24)
        self._access[access] = grant.username
        self.issued_tokens.append(access)
        if not self.rotate_refresh:
            return 200, self._token_body(access, None, grant.scope)
        del self._refresh[refresh_token]
        rotated = secrets.token_urlsafe(24)
        self._refresh[rotated] = grant
        self.issued_tokens.append(rotated)
        return 200, self._token_body(access, rotated, grant.scope)

    def _issue(self, username: str, scope: str) -> tuple[str, str]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.issued_tokens.extend([access, refresh])
        self._access[access] = username
        self._refresh[refresh] = Grant(username, scope)
        return access, refresh

    def _token_body(self, access: str, refresh: str | None, scope: str) -> dict[str, object]:
        body: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_lifetime,
            "scope": scope,
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    def _client_ok(self, fields: dict[str, str]) -> bool:
        if fields.get("client_id") != self.client_id:
            return False
        return self.client_secret is None or fields.get("client_secret") == self.client_secret

    def _decide(self, user_code: str, state: str, username: str | None) -> None:
        with self._lock:
            for device in self._devices.values():
                if device.user_code == user_code:
                    device.state = state
                    device.username = username
                    return
        raise KeyError(f"no device authorization with user code {user_code!r}")


def _handler_for(authority: OAuth2Authority) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # Dovecot's HTTP client keeps connections open

        def do_POST(self) -> None:
            fields = self._form()
            if authority.fail_with_status is not None:
                self._reply(authority.fail_with_status, {"error": "server_error"})
                return
            path = urllib.parse.urlsplit(self.path).path
            if path == "/device":
                self._reply(*authority.device_authorization(fields))
            elif path == "/token":
                self._reply(*authority.token(fields))
            elif path == "/introspect":
                self._reply(200, authority.introspect(fields.get("token") or self._bearer()))
            else:
                self._reply(404, {"error": "not_found"})

        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            if parts.path != "/introspect":
                self._reply(404, {"error": "not_found"})
                return
            query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
            self._reply(200, authority.introspect(query.get("token") or self._bearer()))

        def log_message(self, format: str, *args: object) -> None:
            """Silent: pytest would show tokens from request lines in its captured output."""

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("ascii", errors="replace")
            return dict(urllib.parse.parse_qsl(body, keep_blank_values=True))

        def _bearer(self) -> str:
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""

        def _reply(self, status: int, body: dict[str, object]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def oauth2_authority() -> Iterator[OAuth2Authority]:
    """A fresh authorization server for one test."""
    authority = OAuth2Authority()
    authority.start()
    try:
        yield authority
    finally:
        authority.stop()
