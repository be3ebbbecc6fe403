"""Opening a connection in the background: what the hints allow early, and what is waited for.

``sync`` drives this through the state store (see test_sync_faults and test_sync_connecting);
here connect.py is used alone, with plain hints, as its docstring promises.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.config import Account
from pop3s_fetch.connect import ServerHints, log_in, open_in_background
from pop3s_fetch.demo.server import MailStore, Pop3Server

PASSWORD = "background-Pa55word"


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
        host="127.0.0.1",
        port=server.port,
        username="alice",
        destination=tmp_path / "Maildir",
        ca_file=ca_file,
        timeout=5.0,
    )


@pytest.mark.parametrize("pipelines", [False, True], ids=["careful", "early-capa"])
def test_the_session_comes_greeted_with_its_capabilities_read(
    server: Pop3Server, account: Account, pipelines: bool
) -> None:
    connecting = open_in_background(account, ServerHints(pipelines=pipelines))
    assert connecting.early_capa is pipelines
    connecting.offer_secret(PASSWORD)  # no SCRAM last time: nothing goes early
    session = connecting.result()
    try:
        assert "UIDL" in session.capabilities
        assert log_in(session, account, PASSWORD) == "USER"
        session.quit()
    finally:
        session.close()
    server.wait_idle()
    assert server.transcript == [["CAPA", "USER alice", "PASS ***", "QUIT"]]


def test_a_discarded_connection_is_closed_by_its_thread(
    server: Pop3Server, account: Account
) -> None:
    connecting = open_in_background(account, ServerHints())
    connecting.discard()  # at once: the handshake is still under way, and is not waited for
    deadline = time.monotonic() + 10
    while not server.transcript:  # the thread goes on: the handshake is done...
        assert time.monotonic() < deadline, "the connection was never made"
        time.sleep(0.01)
    server.wait_idle()  # ...and then it closes what it opened
    assert server.transcript[0] in ([], ["CAPA"])  # no login, no QUIT
