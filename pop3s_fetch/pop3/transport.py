"""A POP3 connection's byte stream: connect (implicit TLS, or plaintext for STLS; directly or
through a SOCKS5 proxy, see ``socks``, between TCP and TLS), the TLS upgrade, sending command
lines, and reading reply lines and bodies from a receive buffer.

The one module of pop3s_fetch that imports ``poplib`` or touches its internals
(``_create_socket``, ``_getline``, ``.sock``, ``.file``), so a Python upgrade is one file to audit.
poplib opens the connection, does the TLS handshake and reads the greeting; after that we read
the socket ourselves, because poplib falls short in ways that matter for mail:

* ``poplib`` refuses lines over 2,048 bytes (``_MAXLINE``); real mail has lines of 64 KiB and more.
* ``retr()`` holds a whole message in memory as a list of lines; we stream it to a sink.
* ``poplib`` waits a round trip per command; with PIPELINING (RFC 2449) ``client`` keeps many
  in flight, so sending and reading are separate calls here.

Must not know: what commands mean or which reply answers which (``client``), how bytes are
decoded (``codec``), accounts, storage or state.
"""

from __future__ import annotations

import contextlib
import poplib
import socket
import ssl
import time
from collections.abc import Callable, Iterable

from pop3s_fetch import socks
from pop3s_fetch.errors import ConnectError, ProtocolError, RemoteError, TLSError
from pop3s_fetch.pop3 import codec

#: Bytes asked of the socket per read; TLS hands back at most one record (16 KiB) per call anyway.
RECV_SIZE = 64 * 1024
#: After ``timeout`` seconds, a reply must have come at least this fast on average (bytes per
#: second): a server that sends one byte just before each timeout would otherwise hold the
#: connection, and the account's lock, for as long as it likes.
MIN_REPLY_RATE = 512


def _no_reply() -> ConnectError:
    return ConnectError(
        "no reply from the server before the timeout",
        hint="the server or the network is slow or stuck; retry later or raise timeout",
    )


class ConnectionClosed(ConnectError):
    """The server closed the connection (or it dropped) before a reply was complete."""


class Reader:
    """A receive buffer over a socket, with line and multi-line-body readers."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        # recv(n) allocates n bytes per call even when TLS hands back one 16 KiB record;
        # reading into one reused buffer avoids that allocation on every record.
        self._chunk = memoryview(bytearray(RECV_SIZE))
        self._timeout = sock.gettimeout()
        self._waiting = self._timeout  # the socket's timeout now: changed only when it must be
        self._reply_started = time.monotonic()
        self._reply_octets = 0

    def _start_reply(self) -> None:
        """A reply is due from now: it gets ``timeout`` to start, then MIN_REPLY_RATE."""
        self._reply_started = time.monotonic()
        self._reply_octets = 0

    def _fill(self) -> None:
        waiting = self._timeout
        if waiting is not None:
            allowed = (
                self._reply_started
                + waiting
                + self._reply_octets / MIN_REPLY_RATE
                - time.monotonic()
            )
            if allowed <= 0:
                raise self._too_slow() if self._reply_octets else _no_reply()
            waiting = min(waiting, allowed)
            if waiting != self._waiting:  # settimeout costs a system call: only when it changes
                self._sock.settimeout(waiting)
                self._waiting = waiting
        try:
            received = self._sock.recv_into(self._chunk)
        except TimeoutError as err:
            raise (self._too_slow() if self._reply_octets else _no_reply()) from err
        except ssl.SSLError as err:
            raise ConnectionClosed(f"TLS error while reading: {err.reason or err}") from err
        except OSError as err:
            raise ConnectionClosed(f"connection lost: {err.strerror or err}") from err
        if not received:
            raise ConnectionClosed("the server closed the connection")
        self._reply_octets += received
        self._buf += self._chunk[:received]

    def _too_slow(self) -> ConnectError:
        elapsed = time.monotonic() - self._reply_started
        return ConnectError(
            f"the server sent a reply too slowly ({self._reply_octets} bytes in "
            f"{elapsed:.0f} seconds), so the connection was given up",
            hint=f"after the timeout a reply must keep coming at {MIN_REPLY_RATE} bytes per "
            "second or more; retry later, or raise timeout for a very slow link",
        )

    def buffered(self) -> int:
        """Bytes received but not read yet."""
        return len(self._buf)

    def read_line(self) -> bytes:
        """Return the next line without its line end (see :func:`codec.take_line`)."""
        start = 0
        self._start_reply()
        while (line := codec.take_line(self._buf, start)) is None:
            start = len(self._buf)
            self._fill()
        return line

    def read_body(self, sink: codec.Sink, *, limit: int | None = None) -> codec.BodyDecoder:
        """Stream a dot-terminated body to ``sink``, un-stuffed and with LF line ends.

        Returns the finished decoder: ``written`` bytes passed to the sink, ``octets`` as LIST
        counts them. Raises ConnectionClosed when the connection ends before the terminating
        dot (a message without it is incomplete and must never be delivered), and
        :class:`codec.BodyTooLong` past ``limit`` octets (the rest is left unread).
        """
        decoder = codec.BodyDecoder(sink, limit=limit)
        self._start_reply()
        while not decoder.feed(self._buf):
            self._fill()
        return decoder


class _ReaderLines:
    """poplib reads the greeting through ``_getline``: route it through our reader."""

    reader: Reader | None
    sock: socket.socket
    host: str
    port: int
    _proxy: socks.Proxy | None

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._tcp(timeout)

    def _tcp(self, timeout: float | None) -> socket.socket:
        """The TCP connection, direct or through the SOCKS5 proxy (which resolves the name)."""
        if self._proxy is not None:
            assert timeout is not None  # Transport always passes the account's timeout
            sock = socks.open_connection(self._proxy, self.host, self.port, timeout)
        else:
            sock = socket.create_connection((self.host, self.port), timeout)
        # Commands are batched by hand; Nagle would hold a batch sent while an earlier one is
        # unacknowledged for up to a round trip.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _close_after_failed_greeting(self) -> None:
        """poplib leaves its socket open when reading the greeting fails: close it here."""
        for name in ("file", "sock"):
            resource = self.__dict__.get(name)
            if resource is not None:
                with contextlib.suppress(OSError):
                    resource.close()

    def _getline(self) -> tuple[bytes, int]:
        if self.reader is None:
            self.reader = Reader(self.sock)
        line = self.reader.read_line()
        return line, len(line) + 2


class _ImplicitTLS(_ReaderLines, poplib.POP3_SSL):
    """poplib's implicit-TLS connection, with its 2,048-byte line reader replaced by ours.

    ``early()`` is asked for bytes to send as soon as the handshake is done, before the
    greeting is read: asked then, so that it can offer what is ready at that moment.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        timeout: float,
        early: Callable[[], bytes] | None = None,
        proxy: socks.Proxy | None = None,
    ) -> None:
        self.reader = None
        self._proxy = proxy
        self._early = early
        self._tls_context = context
        self._handshaking = False
        try:
            super().__init__(host, port, timeout=timeout, context=context)
        except BaseException as err:
            self._close_after_failed_greeting()
            if isinstance(err, TimeoutError) and self._handshaking:
                # TCP was accepted: "timed out connecting" would send the user after the wrong
                # thing. A port that takes connections but never speaks TLS looks like this.
                raise ConnectError(
                    f"timed out in the TLS handshake with {host}:{port} (the TCP connection "
                    "was accepted)",
                    hint="check port and tls: implicit TLS is usually port 995; port 110 needs "
                    'tls = "starttls"',
                ) from err
            raise

    def _create_socket(self, timeout: float | None) -> socket.socket:
        # poplib.POP3_SSL's two steps, apart, so that a timeout can say which one it hit; a
        # proxy comes between them, and the certificate is still checked against self.host.
        tcp = self._tcp(timeout)
        self._handshaking = True
        try:
            sock = self._tls_context.wrap_socket(tcp, server_hostname=self.host)
        except BaseException:
            tcp.close()
            raise
        self._handshaking = False
        if self._early is not None:
            data = self._early()
            if data:
                sock.sendall(data)
        return sock


class _Plaintext(_ReaderLines, poplib.POP3):
    """A plaintext connection that exists only to say STLS (RFC 2595) before anything else."""

    def __init__(
        self, host: str, port: int, *, timeout: float, proxy: socks.Proxy | None = None
    ) -> None:
        self.reader = None
        self._proxy = proxy
        try:
            super().__init__(host, port, timeout=timeout)
        except BaseException:
            self._close_after_failed_greeting()
            raise


class Transport:
    """One connection, greeted: send command lines, read reply lines and bodies.

    Made by :meth:`open_tls` or :meth:`open_plaintext`; or over a socket already connected and
    greeted (a test's socket pair), which :meth:`close` simply closes.
    """

    def __init__(
        self, sock: socket.socket, greeting: bytes, *, reader: Reader | None = None
    ) -> None:
        self._sock = sock
        self._reader = reader if reader is not None else Reader(sock)
        #: The server's greeting line, without +OK's line end.
        self.greeting = greeting.decode("utf-8", "replace")
        self._poplib: poplib.POP3 | None = None  # set when poplib made the connection

    @classmethod
    def _adopt(cls, connection: _ImplicitTLS | _Plaintext) -> Transport:
        assert connection.reader is not None  # poplib has read the greeting through it
        transport = cls(connection.sock, connection.welcome, reader=connection.reader)
        transport._poplib = connection
        return transport

    @classmethod
    def open_tls(
        cls,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        timeout: float,
        early: Callable[[], bytes] | None = None,
        proxy: socks.Proxy | None = None,
    ) -> Transport:
        """Connect (through ``proxy`` if given), complete the TLS handshake, send ``early()``
        if given, read the greeting.

        Raises what socket, ssl and poplib raise; :func:`connect_error` translates it.
        """
        return cls._adopt(
            _ImplicitTLS(host, port, context=context, timeout=timeout, early=early, proxy=proxy)
        )

    @classmethod
    def open_plaintext(
        cls, host: str, port: int, *, timeout: float, proxy: socks.Proxy | None = None
    ) -> Transport:
        """Connect without TLS and read the greeting: only for saying STLS next."""
        return cls._adopt(_Plaintext(host, port, timeout=timeout, proxy=proxy))

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The TLS handshake over the plaintext connection (after ``+OK`` to STLS)."""
        sock = context.wrap_socket(self._sock, server_hostname=server_hostname)
        self._sock = sock
        if self._poplib is not None:  # so that poplib's close() closes what is open now
            self._poplib.sock = sock
            self._poplib.file = sock.makefile("rb")
        self._reader = Reader(sock)

    def send(self, lines: Iterable[str]) -> None:
        """Send command lines in one write (one TLS record, one segment)."""
        try:
            self._sock.sendall(codec.encode_commands(lines))
        except TimeoutError as err:
            raise ConnectError("timed out sending to the server") from err
        except OSError as err:
            raise ConnectionClosed(f"connection lost: {err.strerror or err}") from err

    def read_line(self) -> bytes:
        """The next reply line, without its line end."""
        return self._reader.read_line()

    def read_body(self, sink: codec.Sink, *, limit: int | None = None) -> codec.BodyDecoder:
        """Stream the next dot-terminated body into ``sink``; see :meth:`Reader.read_body`."""
        return self._reader.read_body(sink, limit=limit)

    def buffered(self) -> int:
        """Bytes received but not read yet."""
        return self._reader.buffered()

    @property
    def tls_version(self) -> str:
        if not isinstance(self._sock, ssl.SSLSocket):
            return "none"
        return self._sock.version() or "unknown"

    @property
    def cipher(self) -> str:
        cipher = self._sock.cipher() if isinstance(self._sock, ssl.SSLSocket) else None
        return cipher[0] if cipher else "none"

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER); None without TLS."""
        if not isinstance(self._sock, ssl.SSLSocket):
            return None
        return self._sock.getpeercert(binary_form=True)

    def close(self) -> None:
        """Close the connection (errors closing it are no news: it is being dropped)."""
        with contextlib.suppress(OSError):
            if self._poplib is not None:
                self._poplib.close()
            else:
                self._sock.close()


def connect_error(err: BaseException, host: str, where: str) -> BaseException:
    """Translate what connecting raised into our errors (ours and interrupts pass through)."""
    if isinstance(err, RemoteError | KeyboardInterrupt | SystemExit):
        return err
    if isinstance(err, ssl.SSLCertVerificationError):
        return TLSError(
            f"certificate of {where} refused: {err.verify_message}",
            hint='if the server uses a private CA, set ca = "/path/to/ca.pem"',
        )
    if isinstance(err, ssl.SSLError):
        return TLSError(
            f"TLS handshake with {where} failed: {err.reason or err}",
            hint="the server must offer TLS 1.2 or newer on this port",
        )
    if isinstance(err, socket.gaierror):
        return ConnectError(
            f"cannot resolve host name {host}: {err.strerror}",
            hint="check host in the configuration and your DNS/network",
        )
    if isinstance(err, TimeoutError):
        return ConnectError(
            f"timed out connecting to {where}",
            hint="check host and port, the network, or raise timeout",
        )
    if isinstance(err, poplib.error_proto):
        return ProtocolError(f"{where} did not greet with +OK: {_text(err)}")
    if isinstance(err, OSError):
        return ConnectError(
            f"cannot connect to {where}: {err.strerror or err}",
            hint="check host and port, and that the server is up",
        )
    return err


def _text(err: BaseException) -> str:
    arg = err.args[0] if err.args else err
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    return str(arg)
