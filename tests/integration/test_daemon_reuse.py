"""What a long-running process (``sync --every``) keeps between polls: SSL contexts and TLS
sessions (connect.KeptContexts, tls.resume_sessions), against the built-in server.

The built-in server keeps one SSL context for all its connections, so it can resume a
session; what is asserted is what the client's handshake did (``SSLSocket.session_reused``).
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch import tls
from pop3s_fetch.config import Account, TlsSettings
from pop3s_fetch.connect import KeptContexts, open_session
from pop3s_fetch.demo.server import MailStore, Pop3Server

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


def resumed(account: Account, context: ssl.SSLContext) -> bool:
    """Open a session (TLS, greeting), QUIT, and say whether its handshake resumed one."""
    session = open_session(account, context=context)
    try:
        reused = session.tls_resumed
        session.quit()
        return reused
    finally:
        session.close()


def test_a_kept_context_resumes_the_last_session_with_its_server(account: Account) -> None:
    contexts = KeptContexts()
    context = contexts(account)
    assert contexts(account) is context  # made once: CA files are not parsed at each poll
    assert [resumed(account, contexts(account)) for _ in range(3)] == [False, True, True]


def test_without_kept_contexts_every_handshake_is_a_full_one(account: Account) -> None:
    fresh = [resumed(account, tls.client_context(account.tls)) for _ in range(2)]
    assert fresh == [False, False]


def test_a_session_is_never_offered_to_another_host_or_port(
    account: Account, server: Pop3Server, server_ssl_context: ssl.SSLContext
) -> None:
    contexts = KeptContexts()
    assert resumed(account, contexts(account)) is False
    assert resumed(account, contexts(account)) is True
    # The same server under another name its certificate carries: a context of its own.
    by_address = dataclasses.replace(account, host="127.0.0.1")
    assert contexts(by_address) is not contexts(account)
    assert resumed(by_address, contexts(by_address)) is False
    with Pop3Server(server_ssl_context, {"alice": (PASSWORD, MailStore([]))}) as other:
        elsewhere = dataclasses.replace(account, port=other.port)
        assert contexts(elsewhere) is not contexts(account)
        assert resumed(elsewhere, contexts(elsewhere)) is False
    # Even asked to, the context offers its session to its own host only.
    context = contexts(account)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as other_name,
    ):
        other_name.recv(100)  # the greeting: the handshake is done
        assert not other_name.session_reused
    assert resumed(account, context) is True  # its own session was kept


def test_a_reread_configuration_gets_new_contexts(account: Account) -> None:
    contexts = KeptContexts()
    before = contexts(account)
    contexts.clear()
    assert contexts(account) is not before
    assert resumed(account, contexts(account)) is False


def test_pinned_accounts_neither_keep_a_context_nor_resume(
    account: Account, server: Pop3Server
) -> None:
    der = tls.fetch_peer_certificate(account.host, account.port, 5.0, starttls=False)
    pinned = dataclasses.replace(
        account, tls=dataclasses.replace(account.tls, fingerprint=tls.fingerprint(der))
    )
    contexts = KeptContexts()
    assert contexts(pinned) is not contexts(pinned)
    assert not isinstance(contexts(pinned), tls.ResumingContext)
    assert [resumed(pinned, contexts(pinned)) for _ in range(2)] == [False, False]


def test_only_a_verifying_context_may_resume(ca_file: Path) -> None:
    pinned = tls.client_context(TlsSettings(fingerprint="sha256:" + "0" * 64))
    with pytest.raises(ValueError, match="verifies"):
        tls.resume_sessions(pinned, "localhost")
    verifying = tls.client_context(TlsSettings(ca=str(ca_file)))
    assert tls.resume_sessions(verifying, "localhost").check_hostname
