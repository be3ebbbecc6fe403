"""What a long-running process (``sync --every``) keeps between polls: one SSL context per
server (connect.KeptContexts), against the built-in server."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch import tls
from pop3s_fetch.config import Account
from pop3s_fetch.connect import KeptContexts, open_session
from pop3s_fetch.demo.server import MailStore, Pop3Server
from pop3s_fetch.errors import TLSError

PASSWORD = "reuse-Pa55word"


@pytest.fixture
def server(server_ssl_context: ssl.SSLContext) -> Iterator[Pop3Server]:
    with Pop3Server(
        server_ssl_context, {"alice": (PASSWORD, MailStore([b"Subject: a\n\na\n"]))}
    ) as s:
        yield s


@pytest.fixture
def account(server: Pop3Server, ca_file: Path, tmp_path: Path) -> Account:
    return Account(
        name="test",
        host="localhost",
        port=server.port,
        username="alice",
        destination=tmp_path / "Maildir",
        ca_file=ca_file,
        timeout=5.0,
    )


def greeted(account: Account, context: ssl.SSLContext) -> str:
    session = open_session(account, context=context)
    try:
        session.quit()
        return session.greeting
    finally:
        session.close()


def test_one_context_per_server_serves_every_poll(account: Account) -> None:
    contexts = KeptContexts()
    context = contexts(account)
    for _ in range(3):
        assert contexts(account) is context  # the trust store is not loaded at each poll
        assert greeted(account, contexts(account)).startswith("+OK")


def test_another_host_port_or_trust_gets_a_context_of_its_own(
    account: Account, other_ca_file: Path
) -> None:
    contexts = KeptContexts()
    kept = contexts(account)
    by_address = dataclasses.replace(account, host="127.0.0.1")
    elsewhere = dataclasses.replace(account, port=account.port + 1)
    other_trust = dataclasses.replace(
        account,
        ca_file=other_ca_file,
        tls=dataclasses.replace(account.tls, ca=str(other_ca_file)),
    )
    made = [contexts(a) for a in (by_address, elsewhere, other_trust)]
    assert len({id(c) for c in [kept, *made]}) == 4
    # A kept context still verifies each handshake: the other CA does not trust the server.
    with pytest.raises(TLSError, match=r"unknown issuer|self-signed"):
        greeted(other_trust, contexts(other_trust))
    with pytest.raises(TLSError, match=r"unknown issuer|self-signed"):
        greeted(other_trust, contexts(other_trust))


def test_a_reread_configuration_gets_new_contexts(account: Account) -> None:
    contexts = KeptContexts()
    before = contexts(account)
    contexts.clear()
    assert contexts(account) is not before


def test_a_pinned_account_is_checked_against_its_pin_at_every_connection(
    account: Account,
) -> None:
    der = tls.fetch_peer_certificate(account.host, account.port, 5.0, starttls=False)
    pinned = dataclasses.replace(
        account, tls=dataclasses.replace(account.tls, fingerprint=tls.fingerprint(der))
    )
    wrong = dataclasses.replace(
        account, tls=dataclasses.replace(account.tls, fingerprint="sha256:" + "0" * 64)
    )
    contexts = KeptContexts()
    assert greeted(pinned, contexts(pinned)).startswith("+OK")
    for _ in range(2):
        with pytest.raises(TLSError, match="pin mismatch"):
            greeted(wrong, contexts(wrong))
