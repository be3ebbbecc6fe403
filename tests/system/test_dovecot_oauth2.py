"""Dovecot's oauth2 passdb against the local authority: real tokens, real POP3 logins over TLS.

The SASL strings are built here by hand from the specifications (XOAUTH2 as Google and
Microsoft document it, OAUTHBEARER per RFC 7628) so that this file tests the fixtures, not
pop3s-fetch's SASL module.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pop3s_fetch import oauth2

if TYPE_CHECKING:  # both are imported by pytest as plugins
    from tests.support.dovecot import DovecotUser
    from tests.support.dovecot_oauth2 import DovecotOAuth2Server

pytestmark = pytest.mark.dovecot

# Until tests/conftest.py lists them.

MESSAGE = b"From: a@example.com\nTo: b@example.com\nSubject: oauth\n\nhello\n"
MESSAGE_OCTETS = len(MESSAGE) + MESSAGE.count(b"\n")  # as POP3 counts it, with CRLF


class Pop3:
    """A bare POP3 client over implicit TLS: one command line out, one reply line in."""

    def __init__(self, server: DovecotOAuth2Server) -> None:
        context = ssl.create_default_context(cafile=str(server.ca_file))
        raw = socket.create_connection((server.host, server.port), timeout=10)
        self._sock = context.wrap_socket(raw, server_hostname=server.host)
        self._lines = self._sock.makefile("rb")
        self.greeting = self.read()

    def close(self) -> None:
        self._lines.close()
        self._sock.close()

    def read(self) -> str:
        line = self._lines.readline()
        assert line.endswith(b"\r\n"), line
        return line[:-2].decode()

    def command(self, line: str) -> str:
        self._sock.sendall(line.encode() + b"\r\n")
        return self.read()

    def multiline(self, line: str) -> list[str]:
        first = self.command(line)
        assert first.startswith("+OK"), first
        lines = []
        while (text := self.read()) != ".":
            lines.append(text)
        return lines


@pytest.fixture
def pop3(dovecot_oauth2: DovecotOAuth2Server) -> Iterator[Pop3]:
    client = Pop3(dovecot_oauth2)
    try:
        yield client
    finally:
        client.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def xoauth2(user: str, token: str) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


def oauthbearer(user: str, token: str) -> str:
    return b64(f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode())


XOAUTH2_ERROR = {"status": "401", "schemes": "bearer", "scope": "mail"}
OAUTHBEARER_ERROR = {"status": "invalid_token"}
REFUSED = "-ERR [AUTH] Authentication failed."


def refusal(pop3: Pop3, reply: str, abort: str) -> tuple[object, str]:
    """Finish a refused AUTH: Dovecot sends an error challenge (base64 JSON) first, which
    the client must answer (``abort``) before the -ERR comes; return both."""
    assert reply.startswith("+ "), reply
    return json.loads(base64.b64decode(reply[2:])), pop3.command(abort)


def test_capa_offers_both_oauth_mechanisms(pop3: Pop3) -> None:
    capabilities = pop3.multiline("CAPA")

    sasl = next(line for line in capabilities if line.startswith("SASL "))
    assert set(sasl.split()[1:]) == {"PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"}


@pytest.mark.parametrize(
    ("mechanism", "encode"), [("XOAUTH2", xoauth2), ("OAUTHBEARER", oauthbearer)]
)
def test_a_live_access_token_logs_in(
    dovecot_oauth2: DovecotOAuth2Server,
    pop3: Pop3,
    mechanism: str,
    encode: Callable[[str, str], str],
) -> None:
    user = dovecot_oauth2.add_user([MESSAGE])
    access, _ = dovecot_oauth2.authority.issue(user.name)

    reply = pop3.command(f"AUTH {mechanism} {encode(user.name, access)}")

    assert reply.startswith("+OK"), reply
    assert pop3.command("STAT") == f"+OK 1 {MESSAGE_OCTETS}"
    assert access in dovecot_oauth2.authority.introspections  # Dovecot asked the authority
    assert pop3.command("QUIT").startswith("+OK")


def test_a_revoked_token_is_refused_with_xoauth2(
    dovecot_oauth2: DovecotOAuth2Server, pop3: Pop3
) -> None:
    user = dovecot_oauth2.add_user()
    access, _ = dovecot_oauth2.authority.issue(user.name)
    dovecot_oauth2.authority.revoke(access)

    reply = pop3.command(f"AUTH XOAUTH2 {xoauth2(user.name, access)}")
    # The two-step refusal Google and Microsoft also use: the client answers with an empty line.
    challenge, final = refusal(pop3, reply, "")

    assert (challenge, final) == (XOAUTH2_ERROR, REFUSED)
    assert access in dovecot_oauth2.authority.introspections


def test_a_revoked_token_is_refused_with_oauthbearer(
    dovecot_oauth2: DovecotOAuth2Server, pop3: Pop3
) -> None:
    user = dovecot_oauth2.add_user()
    access, _ = dovecot_oauth2.authority.issue(user.name)
    dovecot_oauth2.authority.revoke(access)

    reply = pop3.command(f"AUTH OAUTHBEARER {oauthbearer(user.name, access)}")
    # RFC 7628 section 3.2.3: the client answers the error challenge with a single %x01.
    challenge, final = refusal(pop3, reply, b64(b"\x01"))

    assert (challenge, final) == (OAUTHBEARER_ERROR, REFUSED)


def test_another_users_token_is_refused(dovecot_oauth2: DovecotOAuth2Server, pop3: Pop3) -> None:
    owner = dovecot_oauth2.add_user()
    victim = dovecot_oauth2.add_user()
    access, _ = dovecot_oauth2.authority.issue(owner.name)

    reply = pop3.command(f"AUTH XOAUTH2 {xoauth2(victim.name, access)}")

    assert refusal(pop3, reply, "") == (XOAUTH2_ERROR, REFUSED)


def test_passwords_still_work_beside_tokens(
    dovecot_oauth2: DovecotOAuth2Server, pop3: Pop3
) -> None:
    user: DovecotUser = dovecot_oauth2.add_user()

    assert pop3.command(f"USER {user.name}").startswith("+OK")
    assert pop3.command(f"PASS {user.password}").startswith("+OK")


def test_a_device_login_token_logs_in_and_a_refreshed_one_too(
    dovecot_oauth2: DovecotOAuth2Server, tmp_path: Path
) -> None:
    """The whole path: pop3s_fetch.oauth2 gets the tokens that Dovecot then accepts."""
    authority = dovecot_oauth2.authority
    user = dovecot_oauth2.add_user([MESSAGE])
    settings = _Settings(authority.token_endpoint, authority.device_endpoint)
    codes: list[str] = []

    tokens = oauth2.device_login(
        settings,
        lambda _uri, code, _expires: codes.append(code),
        wait=lambda _seconds: authority.approve(codes[0], user.name),
    )
    assert tokens.refresh_token is not None
    refreshed = oauth2.refresh(settings, tokens.refresh_token)

    for access in (tokens.access_token, refreshed.access_token):
        client = Pop3(dovecot_oauth2)
        try:
            reply = client.command(f"AUTH XOAUTH2 {xoauth2(user.name, access)}")
            assert reply.startswith("+OK"), reply
        finally:
            client.close()


class _Settings:
    provider = "custom"
    client_id = "pop3s-fetch-test-client"
    client_secret = None
    scopes = ("pop3", "offline_access")

    def __init__(self, token_endpoint: str, device_endpoint: str) -> None:
        self.token_endpoint = token_endpoint
        self.device_endpoint = device_endpoint
