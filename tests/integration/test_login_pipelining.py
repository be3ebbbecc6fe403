"""What goes out with the login: the listing rides behind a one-shot AUTH or SCRAM's last word.

A scripted server on a socket pair replies to each step only once every line it names has
arrived, so a client that waited for a reply it should not wait for fails the test (the
server times out) instead of passing slowly. The SCRAM side is scramp's own server.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from scramp import ScramMechanism  # type: ignore[import-untyped]

from pop3s_fetch import sasl
from pop3s_fetch.errors import AuthError
from pop3s_fetch.pop3 import Pop3Client
from pop3s_fetch.pop3.client import Capa, EarlyAuth
from pop3s_fetch.pop3.transport import Transport

PASSWORD = "pipelined-Pa55word"
STEP_TIMEOUT = 10.0
ONE_UIDL = "+OK\r\n1 uid-a\r\n.\r\n"


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


@dataclass
class ScriptedServer:
    """Plays ``steps``: for each, wait for ``count`` lines, then send ``reply(lines)``."""

    sock: socket.socket
    received: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def play(self, steps: Sequence[tuple[int, object]]) -> threading.Thread:
        def run() -> None:
            buffer = b""
            try:
                for count, reply in steps:
                    lines: list[str] = []
                    while len(lines) < count:
                        while b"\r\n" not in buffer:
                            data = self.sock.recv(65536)
                            if not data:
                                raise ConnectionError("the client closed the connection")
                            buffer += data
                        line, buffer = buffer.split(b"\r\n", 1)
                        lines.append(line.decode())
                    self.received.extend(lines)
                    text = reply(lines) if callable(reply) else reply
                    assert isinstance(text, str)
                    self.sock.sendall(text.encode())
            except BaseException as err:  # reported by the test, not lost in the thread
                self.error = err

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


GREETING = b"+OK scripted server ready"


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, ScriptedServer]]:
    """The client's end of a socket pair (no TLS here), and a scripted server on the other."""
    client, server = socket.socketpair()
    server.settimeout(STEP_TIMEOUT)
    client.settimeout(STEP_TIMEOUT)
    yield client, ScriptedServer(server)
    client.close()
    server.close()


@pytest.fixture
def pair(
    sockets: tuple[socket.socket, ScriptedServer],
) -> tuple[Pop3Client, ScriptedServer]:
    client, server = sockets
    session = Pop3Client(Transport(client, GREETING), "mail.example")
    session.capabilities = {"PIPELINING": [], "UIDL": [], "SASL": ["SCRAM-SHA-256", "PLAIN"]}
    return session, server


class Scram:
    """scramp's server side of SCRAM-SHA-256 for one login."""

    def __init__(self, password: str) -> None:
        mechanism = ScramMechanism("SCRAM-SHA-256")
        info = mechanism.make_auth_info(password, iteration_count=4096)
        self.server = mechanism.make_server(lambda username: info)

    def first(self, lines: list[str]) -> str:
        auth, name, initial = lines[0].split(" ")
        assert (auth, name) == ("AUTH", "SCRAM-SHA-256")
        self.server.set_client_first(unb64(initial))
        return f"+ {b64(self.server.get_server_first())}\r\n"

    def final(self, lines: list[str]) -> str:
        self.server.set_client_final(unb64(lines[0]))
        return b64(self.server.get_server_final())


def finish(thread: threading.Thread, server: ScriptedServer) -> None:
    thread.join(STEP_TIMEOUT * 2)
    assert server.error is None, f"scripted server: {server.error!r}"


def test_scram_sends_its_empty_answer_and_uidl_with_client_final(
    pair: tuple[Pop3Client, ScriptedServer],
) -> None:
    session, server = pair
    scram = Scram(PASSWORD)
    thread = server.play(
        [
            (1, scram.first),
            # client-final, the empty answer owed to server-final, and UIDL: one flight.
            (3, lambda lines: f"+ {scram.final(lines)}\r\n+OK Logged in.\r\n{ONE_UIDL}"),
        ]
    )

    session.authenticate("SCRAM-SHA-256", "alice", PASSWORD, then_list=True)
    assert session.unique_ids() == {1: "uid-a"}

    finish(thread, server)
    assert server.received[2:] == ["", "UIDL"]


def test_scram_final_data_with_ok_turns_the_answer_sent_ahead_into_a_refused_command(
    pair: tuple[Pop3Client, ScriptedServer],
) -> None:
    session, server = pair
    scram = Scram(PASSWORD)
    thread = server.play(
        [
            (1, scram.first),
            (
                3,
                lambda lines: (
                    f"+OK {scram.final(lines)}\r\n-ERR unknown command\r\n"
                    "+OK\r\n1 uid-a\r\n2 uid-b\r\n.\r\n"
                ),
            ),
        ]
    )

    session.authenticate("SCRAM-SHA-256", "alice", PASSWORD, then_list=True)
    assert session.unique_ids() == {1: "uid-a", 2: "uid-b"}

    finish(thread, server)


def test_a_refused_scram_login_is_refused_whatever_was_sent_ahead(
    pair: tuple[Pop3Client, ScriptedServer],
) -> None:
    session, server = pair
    scram = Scram("not-the-password")
    thread = server.play(
        [
            (1, scram.first),
            (3, "-ERR [AUTH] Authentication failed.\r\n"),
        ]
    )

    with pytest.raises(AuthError, match=r"refused the login: \[AUTH\] Authentication failed"):
        session.authenticate("SCRAM-SHA-256", "alice", PASSWORD, then_list=True)

    finish(thread, server)
    assert server.received[2:] == ["", "UIDL"]
    assert all(PASSWORD not in line for line in server.received)


def test_plain_sends_uidl_with_the_auth_command(
    pair: tuple[Pop3Client, ScriptedServer],
) -> None:
    session, server = pair
    expected = b64(f"\0alice\0{PASSWORD}")
    thread = server.play([(2, "+OK Logged in.\r\n+OK\r\n1 uid-a\r\n.\r\n")])

    session.authenticate("PLAIN", "alice", PASSWORD, then_list=True)
    assert session.unique_ids() == {1: "uid-a"}

    finish(thread, server)
    assert server.received == [f"AUTH PLAIN {expected}", "UIDL"]


def test_without_pipelining_scram_waits_for_each_reply(
    pair: tuple[Pop3Client, ScriptedServer],
) -> None:
    session, server = pair
    del session.capabilities["PIPELINING"]
    scram = Scram(PASSWORD)
    thread = server.play(
        [
            (1, scram.first),
            (1, lambda lines: f"+ {scram.final(lines)}\r\n"),
            (1, "+OK Logged in.\r\n"),
            (1, "+OK\r\n1 uid-a\r\n.\r\n"),
        ]
    )

    session.authenticate("SCRAM-SHA-256", "alice", PASSWORD, then_list=True)
    assert session.unique_ids() == {1: "uid-a"}

    finish(thread, server)
    assert server.received[2:] == ["", "UIDL"]


def sent_with_the_handshake(
    client: socket.socket, exchange: sasl.Exchange
) -> tuple[Pop3Client, str]:
    """Do what Pop3Client.connect does when it sends CAPA and a prepared AUTH with the handshake
    (its transport is TLS; here the pair's client end stands in for it)."""
    command = exchange.command()
    client.sendall(f"CAPA\r\n{command}\r\n".encode())
    session = Pop3Client(
        Transport(client, GREETING), "mail.example", in_flight=[Capa(), EarlyAuth(exchange)]
    )
    return session, command


CAPABILITIES = "+OK\r\nPIPELINING\r\nUIDL\r\nSASL {}\r\n.\r\n"


def test_an_auth_sent_with_the_handshake_is_continued_not_sent_again(
    sockets: tuple[socket.socket, ScriptedServer],
) -> None:
    client, server = sockets
    scram = Scram(PASSWORD)
    thread = server.play(
        [
            (2, lambda lines: CAPABILITIES.format("SCRAM-SHA-256 PLAIN") + scram.first(lines[1:])),
            (3, lambda lines: f"+ {scram.final(lines)}\r\n+OK Logged in.\r\n{ONE_UIDL}"),
        ]
    )
    exchange = sasl.Exchange(sasl.mechanism("SCRAM-SHA-256", username="alice", secret=PASSWORD))
    session, auth = sent_with_the_handshake(client, exchange)

    session.capa()
    session.authenticate("SCRAM-SHA-256", "alice", PASSWORD, then_list=True)
    assert session.unique_ids() == {1: "uid-a"}

    finish(thread, server)
    assert server.received[:2] == ["CAPA", auth]
    assert server.received[3:] == ["", "UIDL"]  # and no second AUTH


def test_an_early_auth_that_capa_does_not_confirm_is_ended_before_the_login(
    sockets: tuple[socket.socket, ScriptedServer],
) -> None:
    client, server = sockets
    thread = server.play(
        [
            (2, CAPABILITIES.format("PLAIN") + "-ERR Unsupported authentication mechanism.\r\n"),
            (2, f"+OK Logged in.\r\n{ONE_UIDL}"),
        ]
    )
    exchange = sasl.Exchange(sasl.mechanism("SCRAM-SHA-256", username="alice", secret=PASSWORD))
    session, _ = sent_with_the_handshake(client, exchange)

    session.capa()
    session.authenticate("PLAIN", "alice", PASSWORD, then_list=True)
    assert session.unique_ids() == {1: "uid-a"}

    finish(thread, server)
    assert server.received[2:] == [
        f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + PASSWORD)}",
        "UIDL",
    ]


def test_an_early_auth_is_ended_before_a_user_pass_login_too(
    sockets: tuple[socket.socket, ScriptedServer],
) -> None:
    client, server = sockets
    thread = server.play(
        [
            (2, "+OK\r\nUSER\r\nUIDL\r\n.\r\n-ERR Unsupported authentication mechanism.\r\n"),
            (1, "+OK send PASS\r\n"),
            (1, "+OK Logged in.\r\n"),
        ]
    )
    exchange = sasl.Exchange(sasl.mechanism("SCRAM-SHA-256", username="alice", secret=PASSWORD))
    session, _ = sent_with_the_handshake(client, exchange)

    session.capa()
    session.authenticate("USER", "alice", PASSWORD, then_list=True)

    finish(thread, server)
    assert server.received[2:] == ["USER alice", f"PASS {PASSWORD}"]
