"""The SOCKS5 handshake (RFC 1928) against scripted and hostile proxies, over socket pairs.

The proxy's side is written into one end of a socket pair before the handshake starts (the
kernel buffers it), and what the client sent is read back afterwards: no thread, no sleep.
A proxy that says nothing shows the deadline holds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pop3s_fetch import socks
from pop3s_fetch.errors import ConnectError, ExitCode
from pop3s_fetch.socks import Proxy, ProxyError

PROXY = Proxy("127.0.0.1", 9050)
HELLO = b"\x05\x01\x00"  # version 5, one method: no authentication
CHOSEN = b"\x05\x00"
SUCCESS = b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00"  # bound to 0.0.0.0:0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, proxy = socket.socketpair()
    yield client, proxy
    client.close()
    proxy.close()


def run(
    pair: tuple[socket.socket, socket.socket],
    answer: bytes,
    *,
    host: str = "pop.example.com",
    close: bool = True,
    timeout: float = 10,
) -> bytes:
    """Handshake against a proxy that answers ``answer`` (then hangs up); what the client sent."""
    client, proxy = pair
    proxy.sendall(answer)
    if close:
        proxy.shutdown(socket.SHUT_WR)
    try:
        socks.handshake(client, PROXY, host, 995, deadline=time.monotonic() + timeout)
    finally:
        client.shutdown(socket.SHUT_WR)
    sent = b""
    while chunk := proxy.recv(4096):
        sent += chunk
    return sent


def refusal(pair: tuple[socket.socket, socket.socket], answer: bytes) -> ProxyError:
    with pytest.raises(ProxyError) as excinfo:
        run(pair, answer)
    return excinfo.value


def test_the_host_name_goes_to_the_proxy_as_a_name(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sent = run(pair, CHOSEN + SUCCESS)
    name = b"pop.example.com"
    # CONNECT, ATYP 3 (domain name), its length, the name's bytes, port 995 big-endian.
    assert sent == HELLO + b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x03\xe3"


@pytest.mark.parametrize(
    ("host", "destination"),
    [
        ("192.0.2.7", b"\x01\xc0\x00\x02\x07"),
        ("2001:db8::1", b"\x04" + bytes.fromhex("20010db8000000000000000000000001")),
        ("bücher.example", b"\x03\x15xn--bcher-kva.example"),
    ],
)
def test_addresses_are_sent_as_such_and_names_in_idna(
    pair: tuple[socket.socket, socket.socket], host: str, destination: bytes
) -> None:
    assert (
        run(pair, CHOSEN + SUCCESS, host=host)
        == HELLO + b"\x05\x01\x00" + destination + b"\x03\xe3"
    )


@pytest.mark.parametrize(
    "bound",
    [
        b"\x01" + bytes(4),
        b"\x04" + bytes(16),
        b"\x03\x09localhost",
    ],
)
def test_every_bound_address_type_is_read_exactly(
    pair: tuple[socket.socket, socket.socket], bound: bytes
) -> None:
    """Bytes after the reply are the server's (the TLS handshake): none is consumed."""
    client, proxy = pair
    proxy.sendall(CHOSEN + b"\x05\x00\x00" + bound + b"\x04\x38" + b"SERVER")
    socks.handshake(client, PROXY, "pop.example.com", 995, deadline=time.monotonic() + 10)
    assert client.recv(100) == b"SERVER"


MESSAGES = {
    0x01: "general SOCKS server failure (SOCKS reply 0x01)",
    0x02: "connection not allowed by its rules (SOCKS reply 0x02)",
    0x03: "network unreachable from the proxy (SOCKS reply 0x03)",
    0x04: "host unreachable from the proxy (or a name it cannot resolve) (SOCKS reply 0x04)",
    0x05: "connection refused by the server (SOCKS reply 0x05)",
    0x06: "TTL expired on the way to the server (SOCKS reply 0x06)",
    0x07: "command not supported (it does not do CONNECT) (SOCKS reply 0x07)",
    0x08: "address type not supported (it will not resolve host names for us) (SOCKS reply 0x08)",
}


@pytest.mark.parametrize("code", sorted(MESSAGES))
def test_each_error_reply_is_one_line_naming_proxy_cause_and_fix(
    pair: tuple[socket.socket, socket.socket], code: int
) -> None:
    err = refusal(pair, CHOSEN + bytes([5, code, 0, 1]) + bytes(6))
    assert str(err) == (
        "the proxy socks5://127.0.0.1:9050 could not connect to pop.example.com:995: "
        + MESSAGES[code]
    )
    assert err.hint
    assert "\n" not in str(err) + err.hint
    assert isinstance(err, ConnectError)
    assert err.exit_code == ExitCode.TEMPFAIL


def test_an_error_reply_cut_short_still_names_its_cause(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Some proxies send VER and REP and hang up: the cause is known by then."""
    err = refusal(pair, CHOSEN + b"\x05\x02")
    assert "not allowed by its rules" in str(err)
    assert "allow connections to pop.example.com:995" in (err.hint or "")


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (b"", "it closed the connection before its choice of authentication method was complete"),
        (b"\x05", "it closed the connection before its choice of authentication method"),
        (CHOSEN + b"\x05\x00\x00", "it closed the connection before its reply to CONNECT"),
        (CHOSEN + b"\x05\x00\x00\x01\x7f\x00", "it closed the connection before its reply"),
        (CHOSEN + b"\x05\x00\x00\x03\x09local", "it closed the connection before its reply"),
        (CHOSEN + b"\x05\x00\x00\x05" + bytes(6), "its reply has address type 0x05"),
        (CHOSEN + b"\x05\x00\x00\x00" + bytes(6), "its reply has address type 0x00"),
        (CHOSEN + b"\x05\x00\x01\x01" + bytes(6), "its reply's reserved byte is 0x01, not 0"),
        (CHOSEN + b"\x05\x00\x00\x03\x00\x00\x00", "its reply holds an empty domain name"),
        (CHOSEN + b"\x05\x09\x00\x01" + bytes(6), "unassigned reply code 0x09"),
        (CHOSEN + b"\x05\xff\x00\x01" + bytes(6), "unassigned reply code 0xff"),
        (b"\x05\x02", "it chose authentication method 0x02, not offered"),
    ],
)
def test_hostile_replies_are_refused(
    pair: tuple[socket.socket, socket.socket], answer: bytes, cause: str
) -> None:
    err = refusal(pair, answer)
    assert str(err).startswith(
        "the proxy socks5://127.0.0.1:9050 could not connect to pop.example.com:995: "
    )
    assert cause in str(err)


@pytest.mark.parametrize(
    "answer",
    [
        b"\x04\x00",  # a SOCKS4 proxy's version
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # an HTTP proxy
        CHOSEN + b"\x04\x00\x00\x01" + bytes(6),  # the right version first, then not
    ],
)
def test_a_proxy_that_is_not_socks5_is_named_so(
    pair: tuple[socket.socket, socket.socket], answer: bytes
) -> None:
    err = refusal(pair, answer)
    assert "it is not a SOCKS5 proxy (it answered with version byte 0x" in str(err)
    assert "not an HTTP or SOCKS4 one" in (err.hint or "")


def test_a_proxy_that_wants_a_password_is_told_we_have_none(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    err = refusal(pair, b"\x05\xff")
    assert "it requires authentication, which pop3s-fetch does not support" in str(err)


def test_a_silent_proxy_meets_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    started = time.monotonic()
    with pytest.raises(ProxyError) as excinfo:
        run(pair, b"", close=False, timeout=0.3)
    assert "it did not complete the SOCKS5 handshake before the timeout" in str(excinfo.value)
    assert time.monotonic() - started < 10


def test_a_trickling_proxy_meets_the_same_deadline() -> None:
    """One byte at a time just inside each read's timeout: the deadline is for the whole."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(3)
            for byte in CHOSEN + SUCCESS:
                if stop.wait(0.1):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle)
    thread.start()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(ProxyError, match="before the timeout"):
            socks.open_connection(Proxy("127.0.0.1", port), "pop.example.com", 995, 0.35)
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_proxy_that_is_down_is_named_with_the_fix() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(ProxyError) as excinfo:
        socks.open_connection(Proxy("127.0.0.1", port), "pop.example.com", 995, 5)
    assert str(excinfo.value) == (
        f"cannot reach the proxy socks5://127.0.0.1:{port}: Connection refused"
    )
    assert "start the proxy" in (excinfo.value.hint or "")


def test_a_name_too_long_for_socks5_is_refused_before_sending() -> None:
    with pytest.raises(ProxyError, match="too long"):
        socks.connect_request("a" * 256, 995)


def test_an_ipv6_proxy_is_written_as_a_url() -> None:
    assert str(Proxy("::1", 1080)) == "socks5://[::1]:1080"
