"""A SOCKS5 client (RFC 1928, CONNECT, no authentication) for reaching a POP3 server by a proxy.

:func:`open_connection` makes the TCP connection to the proxy and asks it to connect on to the
server; the socket it returns is then used exactly as a direct one (TLS, with the certificate
checked against the POP3 server's name, not the proxy's). The server's host name is sent to the
proxy as a name (ATYP 3) and resolved there, never here: behind Tor a local DNS lookup would
tell the local resolver where the mail is fetched from.

Proxy authentication (RFC 1929) is not offered: its password would have to sit in the config
file. Every field of every reply is checked, the whole exchange has one deadline, and each
failure becomes a :class:`ProxyError` naming the proxy, the cause and the fix.

It sits below ``pop3`` and ``tls`` (both connect through it) and knows nothing of POP3, TLS,
accounts or the configuration file; it imports only ``errors``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pop3s_fetch.errors import ConnectError

VERSION = 5
NO_AUTHENTICATION = 0x00
NO_ACCEPTABLE_METHOD = 0xFF
CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
_ADDRESS_LENGTHS = {ATYP_IPV4: 4, ATYP_IPV6: 16}

#: RFC 1928 section 6: what each failure reply means, and what the user can do about it.
#: ``{server}`` is the POP3 server's host:port.
REPLIES: dict[int, tuple[str, str]] = {
    0x01: (
        "general SOCKS server failure",
        "check host in the configuration (some proxies answer this to a name they cannot "
        "resolve), and the proxy's log (for Tor: is it connected?); retry later",
    ),
    0x02: (
        "connection not allowed by its rules",
        "allow connections to {server} in the proxy's configuration",
    ),
    0x03: (
        "network unreachable from the proxy",
        "check the proxy's own network connection; retry later",
    ),
    0x04: (
        "host unreachable from the proxy (or a name it cannot resolve)",
        "check host in the configuration, and the proxy's connection; retry later",
    ),
    0x05: (
        "connection refused by the server",
        "check host and port in the configuration (POP3S is usually port 995)",
    ),
    0x06: ("TTL expired on the way to the server", "retry later"),
    0x07: (
        "command not supported (it does not do CONNECT)",
        "use a SOCKS5 proxy that allows CONNECT, such as Tor, danted or microsocks",
    ),
    0x08: (
        "address type not supported (it will not resolve host names for us)",
        "use a proxy that resolves names itself (Tor, danted, microsocks); pop3s-fetch never "
        "resolves the server's name locally when a proxy is set",
    ),
}


@dataclass(frozen=True, slots=True)
class Proxy:
    """A SOCKS5 proxy's address; ``str()`` is its URL, as the configuration spells it."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"socks5://{host}:{self.port}"


class ProxyError(ConnectError):
    """The proxy could not be reached, refused, or answered something that is not SOCKS5."""


def open_connection(proxy: Proxy, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``host:port`` through ``proxy``, ready for the TLS handshake.

    ``timeout`` bounds the whole of it: reaching the proxy and its connecting on (Tor can be
    slow to build a circuit, so it is the account's timeout). The socket is returned with
    ``timeout`` as its timeout, as ``socket.create_connection`` would leave it.

    Raises:
        ProxyError: the proxy is down or too slow, refused, or broke the protocol.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((proxy.host, proxy.port), timeout)
    except OSError as err:
        raise _unreachable(proxy, err) from err
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # two small writes
        handshake(sock, proxy, host, port, deadline=deadline)
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def handshake(sock: socket.socket, proxy: Proxy, host: str, port: int, *, deadline: float) -> None:
    """Say hello (no authentication), ask for CONNECT to ``host:port``, check every reply field.

    Reads exactly the reply's bytes, never more: what follows belongs to the server.
    """
    exchange = _Exchange(sock, proxy, f"{host}:{port}", deadline)
    exchange.send(bytes([VERSION, 1, NO_AUTHENTICATION]))
    version, method = exchange.read(2, "its choice of authentication method")
    exchange.check_version(version)
    if method == NO_ACCEPTABLE_METHOD:
        raise exchange.error(
            "it requires authentication, which pop3s-fetch does not support (a proxy password "
            "would have to be written in the config file)",
            "allow connections without authentication from this machine in the proxy's "
            "configuration (on the loopback interface, say)",
        )
    if method != NO_AUTHENTICATION:
        raise exchange.broken(f"it chose authentication method 0x{method:02x}, not offered")
    exchange.send(connect_request(host, port))
    version, reply = exchange.read(2, "its reply to CONNECT")
    exchange.check_version(version)
    if reply != 0:
        cause, fix = REPLIES.get(reply, (f"unassigned reply code 0x{reply:02x}", ""))
        if not fix:
            raise exchange.broken(cause)
        where = exchange.server
        raise exchange.error(
            f"{cause.format(server=where)} (SOCKS reply 0x{reply:02x})", fix.format(server=where)
        )
    reserved, address_type = exchange.read(2, "its reply to CONNECT")
    if reserved != 0:
        raise exchange.broken(f"its reply's reserved byte is 0x{reserved:02x}, not 0")
    if address_type == ATYP_DOMAIN:
        (length,) = exchange.read(1, "its reply to CONNECT")
        if length == 0:
            raise exchange.broken("its reply holds an empty domain name")
    elif address_type in _ADDRESS_LENGTHS:
        length = _ADDRESS_LENGTHS[address_type]
    else:
        raise exchange.broken(f"its reply has address type 0x{address_type:02x}")
    exchange.read(length + 2, "its reply to CONNECT")  # the bound address and port: unused


def connect_request(host: str, port: int) -> bytes:
    """CONNECT ``host:port``: an address literal as such, a name as a name for the proxy."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            name = host.encode("ascii")
        except UnicodeEncodeError:
            name = host.encode("idna")
        if not 0 < len(name) <= 255:
            raise ProxyError(f"the host name {host!r} is too long for SOCKS5") from None
        destination = bytes([ATYP_DOMAIN, len(name)]) + name
    else:
        kind = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
        destination = bytes([kind]) + address.packed
    return bytes([VERSION, CONNECT, 0]) + destination + port.to_bytes(2, "big")


class _Exchange:
    """One handshake's socket, deadline and wording."""

    def __init__(self, sock: socket.socket, proxy: Proxy, server: str, deadline: float) -> None:
        self._sock = sock
        self._proxy = proxy
        self.server = server
        self._deadline = deadline

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        return left

    def _too_slow(self) -> ProxyError:
        return self.error(
            "it did not complete the SOCKS5 handshake before the timeout",
            "check that proxy names a SOCKS5 proxy (Tor's is usually port 9050) and that it "
            "is connected; retry later, or raise timeout",
        )

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """One send or receive, within what is left of the deadline; socket errors named."""
        self._sock.settimeout(self._remaining())
        try:
            yield
        except TimeoutError as err:
            raise self._too_slow() from err
        except OSError as err:
            raise self.error(
                f"the connection to it was lost: {err.strerror or err}", "retry later"
            ) from err

    def send(self, data: bytes) -> None:
        with self._talking():
            self._sock.sendall(data)

    def read(self, count: int, what: str) -> bytes:
        """Exactly ``count`` bytes (one recv may return fewer), within the deadline."""
        data = bytearray()
        while len(data) < count:
            with self._talking():
                chunk = self._sock.recv(count - len(data))
            if not chunk:
                raise self.broken(f"it closed the connection before {what} was complete")
            data += chunk
        return bytes(data)

    def check_version(self, version: int) -> None:
        if version != VERSION:
            raise self.error(
                f"it is not a SOCKS5 proxy (it answered with version byte 0x{version:02x})",
                "proxy must name a SOCKS5 proxy, not an HTTP or SOCKS4 one (Tor's SOCKS port "
                "is usually 9050)",
            )

    def broken(self, cause: str) -> ProxyError:
        return self.error(
            f"it broke the SOCKS5 protocol: {cause}",
            "check that proxy names a SOCKS5 proxy; report this to its maintainers",
        )

    def error(self, cause: str, fix: str) -> ProxyError:
        return ProxyError(
            f"the proxy {self._proxy} could not connect to {self.server}: {cause}", hint=fix
        )


def _unreachable(proxy: Proxy, err: OSError) -> ProxyError:
    if isinstance(err, TimeoutError):
        cause = "no answer before the timeout"
    elif isinstance(err, socket.gaierror):
        cause = f"cannot resolve its name: {err.strerror}"
    else:
        cause = err.strerror or str(err)
    return ProxyError(
        f"cannot reach the proxy {proxy}: {cause}",
        hint="start the proxy (for Tor: systemctl start tor), or fix proxy in the "
        "configuration (remove it to connect directly)",
    )
