"""The built-in POP3S server: protocol, wire form, locking, shutdown and every scripted fault.

High-level behaviour is checked through the stdlib ``poplib`` client (an independent
implementation), the exact bytes through :class:`RawClient`, which shows what poplib hides.
"""

from __future__ import annotations

import poplib
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.samples import demo_messages
from pop3s_fetch.demo.server import (
    LONG_STATUS_OCTETS,
    Faults,
    MailStore,
    Pop3Server,
    top_excerpt,
    wire_form,
    wire_size,
)

USER = "alice"
PASSWORD = "correct horse battery"
TIMEOUT = 10.0


class RawClient:
    """A POP3S client that sends and returns exact bytes."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.tls = context.wrap_socket(sock, server_hostname="127.0.0.1")
        self.file = self.tls.makefile("rb")
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.tls.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def command(self, command: str) -> bytes:
        self.send(command.encode() + b"\r\n")
        return self.line()

    def body(self) -> bytes:
        """The data of a multi-line reply, as sent, up to but not including ``.\\r\\n``."""
        lines = []
        while (line := self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line reply"
            lines.append(line)
        return b"".join(lines)

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        return self.file.read()

    def login(self, user: str = USER, password: str = PASSWORD) -> None:
        self.command(f"USER {user}")
        reply = self.command(f"PASS {password}")
        assert reply.startswith(b"+OK "), reply

    def close(self) -> None:
        self.file.close()
        self.tls.close()


OpenRaw = Callable[[], RawClient]
Faulty = Callable[[Faults], RawClient]


@pytest.fixture
def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture
def store() -> MailStore:
    return MailStore(demo_messages())


@pytest.fixture
def server(server_ssl_context: ssl.SSLContext, store: MailStore) -> Iterator[Pop3Server]:
    with Pop3Server(server_ssl_context, {USER: (PASSWORD, store)}) as running:
        yield running


@pytest.fixture
def open_raw(server: Pop3Server, client_context: ssl.SSLContext) -> Iterator[OpenRaw]:
    """Connects raw clients to :func:`server` and closes them all at the end of the test."""
    clients: list[RawClient] = []

    def open_client() -> RawClient:
        clients.append(RawClient(server.port, client_context))
        return clients[-1]

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def raw(open_raw: OpenRaw) -> RawClient:
    return open_raw()


@pytest.fixture
def faulty(server: Pop3Server, open_raw: OpenRaw) -> Faulty:
    """Sets the server's faults, then opens a raw client logged in to a new session."""

    def open_faulty(faults: Faults) -> RawClient:
        server.faults = faults
        client = open_raw()
        client.login()
        return client

    return open_faulty


def connect(server: Pop3Server, context: ssl.SSLContext) -> poplib.POP3_SSL:
    return poplib.POP3_SSL("127.0.0.1", server.port, context=context, timeout=TIMEOUT)


def login(server: Pop3Server, context: ssl.SSLContext) -> poplib.POP3_SSL:
    client = connect(server, context)
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def uidls(store: MailStore) -> list[str]:
    return [uidl for uidl, _ in store.messages()]


# Wire form


def test_wire_form_converts_line_ends_and_stuffs_dots() -> None:
    message = b".first\nplain\n..two\n.\nFrom x\nlast"
    assert wire_form(message) == b"..first\r\nplain\r\n...two\r\n..\r\nFrom x\r\nlast\r\n"


def test_wire_form_keeps_a_final_newline_single_and_empty_messages_empty() -> None:
    assert wire_form(b"a\n") == b"a\r\n"
    assert wire_form(b"") == b""


def test_wire_size_counts_crlf_but_not_stuffing() -> None:
    assert wire_size(b".a\n.\n") == len(b".a\r\n.\r\n")


def test_top_excerpt_is_header_blank_line_and_body_lines() -> None:
    message = b"Subject: x\n\none\ntwo\nthree\n"
    assert top_excerpt(message, 0) == b"Subject: x\n\n"
    assert top_excerpt(message, 2) == b"Subject: x\n\none\ntwo\n"
    assert top_excerpt(message, 9) == message
    assert top_excerpt(b"Subject: no body\n", 3) == b"Subject: no body\n"


def test_the_demo_samples_hold_the_hard_cases() -> None:
    messages = demo_messages()
    lines = [line for message in messages for line in message.split(b"\n")]
    assert len(messages) == 8
    assert any(len(line) == 64 * 1024 for line in lines)
    assert any(len(line) > 100_000 for line in lines)
    assert {b".", b"..", b"From ", b">From an already quoted line."} <= set(lines)
    assert any(not message.endswith(b"\n") for message in messages)
    assert any(message.startswith(b"Return-Path: <") for message in messages)
    assert any(b"charset=iso-8859-1" in message and b"\xfc" in message for message in messages)
    assert any(len(message) > 300_000 and b"base64" in message for message in messages)
    assert all(b"\r" not in message for message in messages)
    assert demo_messages() == messages


# Mail store


def test_mail_store_ids_are_unique_and_never_reused() -> None:
    store = MailStore([b"a\n", b"b\n"])
    first, second = uidls(store)
    store.delete([second])
    third = store.add(b"c\n")
    assert len({first, second, third}) == 3
    assert store.messages() == [(first, b"a\n"), (third, b"c\n")]


def test_mail_store_claim_is_exclusive_until_released() -> None:
    store = MailStore()
    assert store.claim()
    assert not store.claim()
    store.release()
    assert store.claim()


# AUTHORIZATION state


def test_greeting(raw: RawClient) -> None:
    assert raw.greeting == b"+OK pop3s-fetch test server ready\r\n"


def test_capa_lists_the_advertised_capabilities(
    server: Pop3Server, client_context: ssl.SSLContext
) -> None:
    client = connect(server, client_context)
    assert client.capa() == {
        "TOP": [],
        "UIDL": [],
        "USER": [],
        "PIPELINING": [],
        "RESP-CODES": [],
        "AUTH-RESP-CODE": [],
        "IMPLEMENTATION": ["pop3s-fetch-test-server"],
    }
    client.quit()


def test_login_reports_the_maildrop(server: Pop3Server, client_context: ssl.SSLContext) -> None:
    client = connect(server, client_context)
    client.user(USER)
    total = sum(wire_size(message) for message in demo_messages())
    assert client.pass_(PASSWORD) == f"+OK maildrop has 8 {total}".encode()
    client.quit()


@pytest.mark.parametrize(("user", "password"), [(USER, "wrong"), ("mallory", PASSWORD)])
def test_bad_credentials_get_the_auth_response_code(
    server: Pop3Server, client_context: ssl.SSLContext, user: str, password: str
) -> None:
    client = connect(server, client_context)
    client.user(user)
    with pytest.raises(poplib.error_proto) as refused:
        client.pass_(password)
    assert refused.value.args[0] == b"-ERR [AUTH] invalid user name or password"
    client.user(USER)
    assert client.pass_(PASSWORD).startswith(b"+OK ")  # back in AUTHORIZATION, may retry
    client.quit()


def test_pass_before_user_is_refused(raw: RawClient) -> None:
    assert raw.command(f"PASS {PASSWORD}") == b"-ERR send USER first\r\n"


def test_transaction_commands_need_a_login(raw: RawClient) -> None:
    assert raw.command("STAT") == b"-ERR STAT is not valid in this state\r\n"


def test_transcript_records_commands_and_hides_the_password(
    server: Pop3Server, client_context: ssl.SSLContext
) -> None:
    client = login(server, client_context)
    client.stat()
    client.quit()
    assert server.transcript == [["USER alice", "PASS ***", "STAT", "QUIT"]]
    assert PASSWORD not in repr(server.transcript)


def test_a_locked_maildrop_gets_in_use(server: Pop3Server, client_context: ssl.SSLContext) -> None:
    first = login(server, client_context)
    second = connect(server, client_context)
    second.user(USER)
    with pytest.raises(poplib.error_proto) as refused:
        second.pass_(PASSWORD)
    assert refused.value.args[0] == b"-ERR [IN-USE] maildrop already locked by another session"
    first.quit()
    second.user(USER)
    assert second.pass_(PASSWORD).startswith(b"+OK ")
    second.quit()


def test_pass_waits_briefly_for_a_session_that_is_ending(open_raw: OpenRaw) -> None:
    first, second = open_raw(), open_raw()
    first.login()
    assert second.command(f"USER {USER}") == b"+OK send PASS\r\n"
    second.send(f"PASS {PASSWORD}\r\n".encode())
    assert first.command("QUIT").startswith(b"+OK bye")  # well within LOCK_WAIT
    assert second.line().startswith(b"+OK maildrop has 8 ")


# TRANSACTION state


def test_stat_list_and_uidl_report_wire_sizes_and_unique_ids(
    server: Pop3Server, client_context: ssl.SSLContext, store: MailStore
) -> None:
    sizes = [wire_size(message) for _, message in store.messages()]
    client = login(server, client_context)
    assert client.stat() == (8, sum(sizes))
    assert client.list()[1] == [f"{n} {size}".encode() for n, size in enumerate(sizes, 1)]
    single = f"+OK 3 {sizes[2]}".encode()
    assert client.list(3) == single  # type: ignore[comparison-overlap]  # typeshed: a tuple
    assert client.uidl()[1] == [f"{n} {uidl}".encode() for n, uidl in enumerate(uidls(store), 1)]
    assert client.uidl(8) == f"+OK 8 {uidls(store)[7]}".encode()
    client.quit()


def test_retr_returns_every_sample_exactly(
    server: Pop3Server,
    client_context: ssl.SSLContext,
    store: MailStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 20)  # the samples hold lines past 2048 octets
    client = login(server, client_context)
    for number, (_, message) in enumerate(store.messages(), 1):
        _, lines, _ = client.retr(number)
        received = b"".join(line + b"\n" for line in lines)
        expected = message if message.endswith(b"\n") else message + b"\n"
        assert received == expected, f"message {number}"
    client.quit()


def test_retr_sends_the_wire_form_and_the_terminator(raw: RawClient, store: MailStore) -> None:
    raw.login()
    message = store.messages()[4][1]  # the dots and "From " lines
    assert raw.command("RETR 5") == f"+OK {wire_size(message)} octets\r\n".encode()
    assert raw.body() == wire_form(message)
    assert raw.command("NOOP") == b"+OK\r\n"


def test_retr_of_a_large_message(
    server_ssl_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    message = b"".join(b"%07d %s\n" % (n, b"." * 90) for n in range(200_000))  # ~20 MB
    with Pop3Server(server_ssl_context, {USER: (PASSWORD, MailStore([message]))}) as big:
        client = RawClient(big.port, client_context)
        client.login()
        assert client.command("RETR 1") == f"+OK {wire_size(message)} octets\r\n".encode()
        assert client.body() == wire_form(message)
        client.close()


def test_top_returns_header_and_first_lines(
    server: Pop3Server, client_context: ssl.SSLContext, store: MailStore
) -> None:
    message = store.messages()[0][1]
    client = login(server, client_context)
    _, lines, _ = client.top(1, 2)
    assert b"".join(line + b"\n" for line in lines) == top_excerpt(message, 2)
    assert lines[-2:] == [b"Hello,", b""]
    client.quit()


def test_bad_message_numbers_are_refused(raw: RawClient) -> None:
    raw.login()
    assert raw.command("RETR 9") == b"-ERR no such message, only 8 in maildrop\r\n"
    assert raw.command("RETR 0") == b"-ERR no such message, only 8 in maildrop\r\n"
    assert raw.command("LIST x") == b"-ERR invalid message number 'x'\r\n"
    assert raw.command("RETR") == b"-ERR wrong number of arguments\r\n"
    assert raw.command("TOP 1 -1") == b"-ERR invalid line count '-1'\r\n"


def test_unknown_commands_are_refused(raw: RawClient) -> None:
    assert raw.command("XYZZY") == b"-ERR unknown command\r\n"
    raw.login()
    assert raw.command("APOP alice abc") == b"-ERR unknown command\r\n"
    assert raw.command("noop") == b"+OK\r\n"  # verbs are case-insensitive


def test_pipelined_commands_are_answered_in_order(raw: RawClient, store: MailStore) -> None:
    raw.login()
    ids = uidls(store)
    messages = [message for _, message in store.messages()]
    raw.send(b"STAT\r\nUIDL 2\r\nRETR 1\r\nDELE 1\r\nLIST 1\r\nRETR 8\r\nNOOP\r\nQUIT\r\n")
    total = sum(wire_size(message) for message in messages)
    assert raw.line() == f"+OK 8 {total}\r\n".encode()
    assert raw.line() == f"+OK 2 {ids[1]}\r\n".encode()
    assert raw.line().startswith(b"+OK ")
    assert raw.body() == wire_form(messages[0])
    assert raw.line() == b"+OK message 1 deleted\r\n"
    assert raw.line() == b"-ERR message 1 already deleted\r\n"
    assert raw.line().startswith(b"+OK ")
    assert raw.body() == wire_form(messages[7])
    assert raw.line() == b"+OK\r\n"
    assert raw.line() == b"+OK bye, 1 messages deleted\r\n"
    assert raw.rest() == b""


def test_dele_then_quit_deletes(
    server: Pop3Server, client_context: ssl.SSLContext, store: MailStore
) -> None:
    before = uidls(store)
    client = login(server, client_context)
    client.dele(1)
    client.dele(3)
    assert client.stat()[0] == 6
    assert client.quit() == b"+OK bye, 2 messages deleted"
    assert uidls(store) == [before[1], *before[3:]]


def test_dele_without_quit_deletes_nothing(
    server: Pop3Server, raw: RawClient, store: MailStore
) -> None:
    before = store.messages()
    raw.login()
    assert raw.command("DELE 1") == b"+OK message 1 deleted\r\n"
    raw.close()
    server.wait_idle()
    assert store.messages() == before


def test_rset_unmarks_deleted_messages(
    server: Pop3Server, client_context: ssl.SSLContext, store: MailStore
) -> None:
    before = store.messages()
    client = login(server, client_context)
    client.dele(2)
    assert client.rset().startswith(b"+OK maildrop has 8 ")
    client.quit()
    assert store.messages() == before


def test_messages_added_during_a_session_appear_in_the_next(
    server: Pop3Server, client_context: ssl.SSLContext, store: MailStore
) -> None:
    client = login(server, client_context)
    store.add(b"Subject: new\n\nnew\n")
    assert client.stat()[0] == 8
    client.quit()
    client = login(server, client_context)
    assert client.stat()[0] == 9
    client.quit()


# Line limits


def test_a_command_of_255_octets_is_accepted_and_256_refused(raw: RawClient) -> None:
    raw.login()
    assert raw.command("NOOP" + " " * 249) == b"+OK\r\n"  # 253 + CRLF
    assert raw.command("NOOP" + " " * 250) == b"-ERR line too long\r\n"


def test_a_huge_command_line_gets_one_error_and_the_session_goes_on(
    server: Pop3Server, raw: RawClient
) -> None:
    raw.login()
    raw.send(b"X" * 1_000_000 + b"\r\nNOOP\r\n")
    assert raw.line() == b"-ERR line too long\r\n"
    assert raw.line() == b"+OK\r\n"
    assert server.transcript[0][-2:] == ["<1000002 octets: line too long>", "NOOP"]


# Clients that go away, and stopping


def test_clients_that_go_away_leave_nothing_on_stderr(
    server: Pop3Server,
    open_raw: OpenRaw,
    other_ca_file: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT).close()
    distrusting = ssl.create_default_context(cafile=str(other_ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server, distrusting)
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    plain.sendall(b"USER alice\r\n")  # not TLS at all
    plain.close()
    client = open_raw()
    client.login()
    client.send(b"RETR 6\r\n")
    client.close()  # mid-reply
    server.wait_idle()
    assert capfd.readouterr() == ("", "")


def test_stop_closes_active_sessions_and_releases_the_maildrop(
    server: Pop3Server, raw: RawClient, store: MailStore
) -> None:
    raw.login()
    server.stop()
    assert raw.rest() == b""
    assert store.claim()


def test_faults_are_read_when_a_session_starts(server: Pop3Server, open_raw: OpenRaw) -> None:
    earlier = open_raw()
    server.faults = Faults(no_capa=True)
    later = open_raw()
    assert earlier.command("CAPA").startswith(b"+OK ")
    assert later.command("CAPA") == b"-ERR unknown command\r\n"
    earlier.close()
    later.close()


# Scripted faults


def test_faults_reject_unknown_verbs() -> None:
    with pytest.raises(ValueError, match=r"Faults.drop_on: unknown POP3 verbs \['RETRR'\]"):
        Faults(drop_on={"RETRR"})


def test_drop_mid_retr_sends_the_first_octets_then_closes(
    server: Pop3Server, faulty: Faulty, store: MailStore
) -> None:
    client = faulty(Faults(drop_mid_retr={6: 1000}))
    assert client.command("RETR 6").startswith(b"+OK ")
    assert client.rest() == wire_form(store.messages()[5][1])[:1000]


def test_no_terminator_retr_sends_the_whole_message_then_closes(
    server: Pop3Server, faulty: Faulty, store: MailStore
) -> None:
    client = faulty(Faults(no_terminator_retr={2}))
    assert client.command("RETR 1").startswith(b"+OK ")
    assert client.body() == wire_form(store.messages()[0][1])
    assert client.command("RETR 2").startswith(b"+OK ")
    assert client.rest() == wire_form(store.messages()[1][1])


@pytest.mark.parametrize(
    "command",
    ["STAT", "LIST", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "RSET", "NOOP", "CAPA", "QUIT"],
)
def test_drop_on_closes_instead_of_replying(faulty: Faulty, store: MailStore, command: str) -> None:
    verb = command.split()[0]
    earlier, earlier_reply = ("NOOP", "+OK") if verb != "NOOP" else ("LIST 2", "+OK 2 ")
    if verb == "NOOP":
        earlier_reply += str(wire_size(store.messages()[1][1]))
    client = faulty(Faults(drop_on={verb.lower()}))
    client.send(f"{earlier}\r\n{command}\r\n".encode())
    # The reply to the earlier command still arrives, then the connection closes.
    assert client.rest() == f"{earlier_reply}\r\n".encode()


@pytest.mark.parametrize("verb", ["USER", "PASS"])
def test_drop_on_works_before_login(server: Pop3Server, open_raw: OpenRaw, verb: str) -> None:
    server.faults = Faults(drop_on={verb})
    client = open_raw()
    client.send(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
    expected = b"" if verb == "USER" else b"+OK send PASS\r\n"
    assert client.rest() == expected


def test_drop_on_quit_commits_no_deletions(
    server: Pop3Server, faulty: Faulty, store: MailStore
) -> None:
    before = store.messages()
    client = faulty(Faults(drop_on={"QUIT"}))
    assert client.command("DELE 1") == b"+OK message 1 deleted\r\n"
    client.send(b"QUIT\r\n")
    assert client.rest() == b""
    server.wait_idle()
    assert store.messages() == before


def test_err_on_retr_and_dele(server: Pop3Server, faulty: Faulty, store: MailStore) -> None:
    before = store.messages()
    client = faulty(Faults(err_on_retr={2}, err_on_dele={1}))
    assert client.command("RETR 2") == b"-ERR cannot read message 2 (scripted fault)\r\n"
    assert client.command("DELE 1") == b"-ERR cannot delete message 1 (scripted fault)\r\n"
    assert client.command("RETR 1").startswith(b"+OK ")
    assert client.body() == wire_form(before[0][1])
    assert client.command("QUIT") == b"+OK bye, 0 messages deleted\r\n"
    assert store.messages() == before


def test_hang_on_never_replies_and_ends_when_the_client_leaves(
    server: Pop3Server, faulty: Faulty, store: MailStore
) -> None:
    client = faulty(Faults(hang_on={"UIDL"}))
    client.send(b"NOOP\r\nUIDL\r\n")
    assert client.line() == b"+OK\r\n"
    client.close()  # the client gives up
    server.wait_idle()
    assert store.claim()


def test_hang_on_does_not_block_stop(server: Pop3Server, faulty: Faulty, store: MailStore) -> None:
    client = faulty(Faults(hang_on={"STAT"}))
    client.send(b"NOOP\r\nSTAT\r\nNOOP\r\n")
    assert client.line() == b"+OK\r\n"
    server.stop()
    assert client.rest() == b""
    assert store.claim()


def test_long_line_on_pads_the_status_line(
    server: Pop3Server, faulty: Faulty, store: MailStore
) -> None:
    client = faulty(Faults(long_line_on={"LIST"}))
    status = client.command("LIST")
    assert status.startswith(b"+OK 8 messages ")
    assert len(status) > LONG_STATUS_OCTETS > 100 * 1024
    sizes = [wire_size(message) for _, message in store.messages()]
    assert client.body() == b"".join(b"%d %d\r\n" % pair for pair in enumerate(sizes, 1))
    assert client.command("NOOP") == b"+OK\r\n"


def test_list_size_delta_changes_list_and_stat(
    server: Pop3Server, faulty: Faulty, store: MailStore
) -> None:
    sizes = [wire_size(message) for _, message in store.messages()]
    client = faulty(Faults(list_size_delta={2: -10}))
    assert client.command("LIST 2") == f"+OK 2 {sizes[1] - 10}\r\n".encode()
    assert client.command("STAT") == f"+OK 8 {sum(sizes) - 10}\r\n".encode()


def test_duplicate_uidls(server: Pop3Server, faulty: Faulty, store: MailStore) -> None:
    ids = uidls(store)
    client = faulty(Faults(duplicate_uidls=True))
    assert client.command("UIDL").startswith(b"+OK ")
    listing = client.body().splitlines()
    assert listing[:3] == [f"1 {ids[0]}".encode(), f"2 {ids[0]}".encode(), f"3 {ids[2]}".encode()]
    assert client.command("UIDL 2") == f"+OK 2 {ids[0]}\r\n".encode()


def test_no_uidl(server: Pop3Server, faulty: Faulty) -> None:
    client = faulty(Faults(no_uidl=True))
    assert client.command("CAPA").startswith(b"+OK ")
    assert b"UIDL\r\n" not in client.body()
    assert client.command("UIDL") == b"-ERR unknown command\r\n"
    assert client.command("UIDL 1") == b"-ERR unknown command\r\n"


def test_no_pipelining(server: Pop3Server, faulty: Faulty) -> None:
    client = faulty(Faults(no_pipelining=True))
    assert client.command("CAPA").startswith(b"+OK ")
    capabilities = client.body()
    assert b"PIPELINING" not in capabilities
    assert b"UIDL\r\n" in capabilities


def test_no_capa(server: Pop3Server, open_raw: OpenRaw) -> None:
    server.faults = Faults(no_capa=True)
    client = open_raw()
    assert client.command("CAPA") == b"-ERR unknown command\r\n"
    client.login()
    assert client.command("CAPA") == b"-ERR unknown command\r\n"
