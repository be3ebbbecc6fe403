"""A hostile OAuth2 token endpoint (issue 11, item 13): it echoes tokens, or never stops.

A tiny HTTP server in this process answers every POST with a scripted reply.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pop3s_fetch import oauth2
from pop3s_fetch.errors import CredentialError, ProtocolError

REFRESH_TOKEN = "1//refresh-token-that-must-never-be-shown"


@dataclass(frozen=True, slots=True)
class Settings:
    token_endpoint: str
    device_endpoint: str = "https://login.example.com/device"
    client_id: str = "client"
    client_secret: str | None = None
    scopes: tuple[str, ...] = ("pop3",)
    provider: str = "custom"


class Scripted(http.server.BaseHTTPRequestHandler):
    status = 400
    body = b"{}"
    endless = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            if self.endless:
                self.wfile.write(b'{"error": "')
                while True:  # until the client hangs up
                    self.wfile.write(b"x" * 65536)
            self.wfile.write(self.body)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[type[Scripted], str]]:
    handler = type("Handler", (Scripted,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_error_code_that_echoes_the_refresh_token_is_not_shown(
    endpoint: tuple[type[Scripted], str],
) -> None:
    handler, url = endpoint
    handler.body = (
        b'{"error": "invalid_grant for '
        + REFRESH_TOKEN.encode()
        + b'", "error_description": "'
        + REFRESH_TOKEN.encode()
        + b' is revoked"}'
    )
    with pytest.raises(CredentialError) as caught:
        oauth2.refresh(Settings(url), REFRESH_TOKEN)
    assert REFRESH_TOKEN not in str(caught.value)
    assert REFRESH_TOKEN not in repr(caught.value.args)
    assert str(caught.value) == (
        "the OAuth2 server 127.0.0.1 refused the refresh token "
        "(invalid_grant for [hidden]: [hidden] is revoked)"
    )


def test_an_error_code_that_is_not_one_is_not_quoted(
    endpoint: tuple[type[Scripted], str],
) -> None:
    handler, url = endpoint
    handler.body = b'{"error": "token=\\"' + REFRESH_TOKEN[:10].encode() + b'\\" \\u001b[2J"}'
    with pytest.raises(CredentialError) as caught:
        oauth2.refresh(Settings(url), REFRESH_TOKEN)
    assert str(caught.value) == (
        "the OAuth2 server 127.0.0.1 refused the refresh token (an error code that is not one)"
    )


def test_an_endless_reply_is_cut_off(endpoint: tuple[type[Scripted], str]) -> None:
    """800 MB took the client to 2 GiB: now the read stops at the cap."""
    handler, url = endpoint
    handler.endless = True
    with pytest.raises(ProtocolError) as caught:
        oauth2.refresh(Settings(url), REFRESH_TOKEN)
    assert str(caught.value) == (
        f"the OAuth2 endpoint {url} sent a reply longer than {oauth2.MAX_RESPONSE_BYTES} bytes"
    )
