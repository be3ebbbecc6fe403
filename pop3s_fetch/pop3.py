"""A POP3-over-TLS client: verified connect, login, listing, pipelined streaming RETR, DELE, QUIT.

Built on ``poplib.POP3_SSL`` for the connection and the TLS handshake, but it reads the socket
itself, because poplib falls short in three ways that matter for mail:

* ``poplib`` refuses lines over 2,048 bytes (``_MAXLINE``); real mail has lines of 64 KiB and more.
* ``retr()`` holds a whole message in memory as a list of lines; we stream it to a sink.
* ``poplib`` waits a round trip per command; with PIPELINING (RFC 2449) we keep many in flight.

Multi-line bodies are decoded with bulk ``bytes`` operations on whole buffers (find the
terminator, un-stuff leading dots, CRLF -> LF), never per line in Python, and nothing else is done
to them: what reaches the sink is byte for byte what the server holds.

This module knows nothing of accounts, storage or state: callers hand it sinks (``write(bytes)``)
and message numbers.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import poplib
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pop3s_fetch import sasl
from pop3s_fetch.errors import ConnectError, ProtocolError, RemoteError, TLSError

logger = logging.getLogger(__name__)

Sink = Callable[[bytes], None]

#: Bytes asked of the socket per read; TLS hands back at most one record (16 KiB) per call anyway.
RECV_SIZE = 64 * 1024
#: Status lines are at most 512 octets (RFC 2449 section 4); we allow slack for chatty servers.
MAX_STATUS_LINE = 8 * 1024
#: Received body data is decoded and handed to the sink in pieces of about this size.
EMIT_SIZE = 256 * 1024
#: A body line longer than this is passed to the sink in pieces rather than buffered whole.
MAX_BUFFERED_LINE = 1024 * 1024
#: Pipelined RETRs may have at most this many message bytes (LIST sizes) outstanding. It must
#: exceed bandwidth x delay or the link idles; the data waits in kernel buffers, not in ours.
WINDOW_BYTES = 32 * 1024 * 1024
#: ...and at most this many commands, so the command bytes never fill the server's socket buffer.
WINDOW_COMMANDS = 256

_TERMINATOR = b"\r\n.\r\n"


class ConnectionClosed(ConnectError):
    """The server closed the connection (or it dropped) before a reply was complete."""


@dataclass(frozen=True, slots=True)
class RemoteMessage:
    """One message in the maildrop: its number in this session, its UIDL and its LIST size."""

    number: int
    uidl: str
    size: int


@dataclass(frozen=True, slots=True)
class Retrieved:
    """The outcome of one RETR: ``error`` holds the server's ``-ERR`` text when it refused."""

    message: RemoteMessage
    octets: int
    error: str | None = None


class _Reader:
    """A receive buffer over the TLS socket with line and multi-line-body readers."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        # recv(n) allocates n bytes per call even when TLS hands back one 16 KiB record;
        # reading into one reused buffer avoids that allocation on every record.
        self._chunk = memoryview(bytearray(RECV_SIZE))

    def _fill(self) -> None:
        try:
            received = self._sock.recv_into(self._chunk)
        except TimeoutError as err:
            raise ConnectError(
                "no reply from the server before the timeout",
                hint="the server or the network is slow or stuck; retry later or raise timeout",
            ) from err
        except ssl.SSLError as err:
            raise ConnectionClosed(f"TLS error while reading: {err.reason or err}") from err
        except OSError as err:
            raise ConnectionClosed(f"connection lost: {err.strerror or err}") from err
        if not received:
            raise ConnectionClosed("the server closed the connection")
        self._buf += self._chunk[:received]

    def buffered(self) -> int:
        """Bytes received but not read yet."""
        return len(self._buf)

    def read_line(self) -> bytes:
        """Return the next line without its line end (CRLF, or a lone LF from a lax server)."""
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                break
            if len(self._buf) > MAX_STATUS_LINE:
                raise ProtocolError(
                    f"the server sent a reply line longer than {MAX_STATUS_LINE} bytes",
                    hint="this is a server fault; report it to the server's administrator",
                )
            start = len(self._buf)
            self._fill()
        if end > MAX_STATUS_LINE:
            raise ProtocolError(
                f"the server sent a reply line longer than {MAX_STATUS_LINE} bytes",
                hint="this is a server fault; report it to the server's administrator",
            )
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def read_body(self, sink: Sink) -> int:
        """Stream a dot-terminated body to ``sink``, un-stuffed and with LF line ends.

        Returns the number of bytes passed to the sink. Raises ConnectionClosed when the
        connection ends before the terminating dot: a message without it is incomplete and
        must never be delivered. Work is done per EMIT_SIZE of data, not per TLS record, and
        new bytes are scanned once, for CRLF + ".": each hit is either a stuffing dot or the
        terminator, so un-stuffing costs no pass of its own and the cost per byte stays in C.
        """
        buf = self._buf
        at_line_start = True  # does buf begin at the start of a line?
        head_checked = False  # has that line's first byte been looked at?
        dots: list[int] = []  # offsets in buf of stuffing dots to drop, ascending
        scan_from = 0  # every CRLF + "." starting before this offset is decided
        written = 0
        while True:
            if at_line_start and not head_checked:
                if len(buf) < 3 and b".\r\n".startswith(buf):
                    self._fill()  # too little to tell the terminator from a line starting "."
                    continue
                if buf.startswith(b".\r\n"):
                    del buf[:3]
                    return written
                if buf.startswith(b"."):
                    dots.append(0)
                head_checked = True
            hit = buf.find(b"\r\n.", scan_from)
            while hit >= 0 and hit + 5 <= len(buf):
                if buf.startswith(b"\r\n", hit + 3):  # CRLF . CRLF: the terminator
                    written += _emit(sink, buf, hit + 2, dots)
                    del buf[: hit + 5]
                    return written
                dots.append(hit + 2)
                hit = buf.find(b"\r\n.", hit + 3)
            # No hit, or one too near the end to decide: look there again after the next read.
            scan_from = hit if hit >= 0 else max(0, len(buf) - 2)
            if len(buf) >= EMIT_SIZE:
                cut = buf.rfind(b"\r\n")
                if cut >= 0:
                    # Keep what follows the last line end: it may be the start of the terminator.
                    size = cut + 2
                    at_line_start, head_checked = True, False
                elif len(buf) > MAX_BUFFERED_LINE:
                    # One huge line: pass its head on, keeping a trailing CR to pair with its LF.
                    size = len(buf) - (1 if buf.endswith(b"\r") else 0)
                    at_line_start, head_checked = False, True
                else:
                    size = 0
                if size:
                    written += _emit(sink, buf, size, dots)
                    del buf[:size]
                    # A dot at the new start is found again by the line-start check.
                    dots = [d - size for d in dots if d > size]
                    scan_from = max(0, scan_from - size)
            self._fill()


def _emit(sink: Sink, buf: bytearray, size: int, dots: list[int]) -> int:
    """Pass buf[:size] on without the stuffing dots at ``dots`` (those below size), CRLF as LF.

    buf[:size] ends on a line end, or inside a huge line.
    """
    with memoryview(buf) as view:
        if dots and dots[0] < size:
            pieces = []
            start = 0
            for dot in dots:
                if dot >= size:
                    break
                pieces.append(view[start:dot])
                start = dot + 1
            pieces.append(view[start:size])
            data = b"".join(pieces)
            for piece in pieces:  # let buf be resized again
                piece.release()
        else:
            data = bytes(view[:size])
    # split + join beats replace(b"\r\n", b"\n") about 2:1 (one scan instead of a count
    # and a copy); a lone CR, which is message data, stays inside its piece.
    data = b"\n".join(data.split(b"\r\n"))
    if data:
        sink(data)
    return len(data)


class _ReaderLines:
    """poplib reads the greeting through ``_getline``: route it through our reader."""

    reader: _Reader | None
    sock: socket.socket

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)  # type: ignore[misc]
        # Commands are batched by hand; Nagle would hold a batch sent while an earlier one is
        # unacknowledged for up to a round trip.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _getline(self) -> tuple[bytes, int]:
        if self.reader is None:
            self.reader = _Reader(self.sock)
        line = self.reader.read_line()
        return line, len(line) + 2


class _Transport(_ReaderLines, poplib.POP3_SSL):
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
    ) -> None:
        self.reader = None
        self._early = early
        super().__init__(host, port, timeout=timeout, context=context)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = super()._create_socket(timeout)
        if self._early is not None:
            data = self._early()
            if data:
                sock.sendall(data)
        return sock


class _PlainTransport(_ReaderLines, poplib.POP3):
    """A plaintext connection that exists only to say STLS (RFC 2595) before anything else."""

    def __init__(self, host: str, port: int, *, timeout: float) -> None:
        self.reader = None
        super().__init__(host, port, timeout=timeout)


@dataclass
class _Pending:
    """A command sent but whose reply has not been read yet."""

    verb: str
    message: RemoteMessage | None = None


class Session:
    """One authenticated-or-not POP3 session; not thread-safe."""

    def __init__(self, transport: _Transport | _PlainTransport, host: str) -> None:
        self._transport = transport
        assert transport.reader is not None
        self._reader = transport.reader
        self._host = host
        self.greeting = transport.welcome.decode("utf-8", "replace")
        self.capabilities: dict[str, list[str]] = {}
        self._pending: collections.deque[_Pending] = collections.deque()
        self._delete_errors: list[str] = []
        self._listing_sent = False
        self._sizes_sent = False
        self._prefetched: tuple[bool, str, list[str]] | None = None
        #: Set when every message is expected to be new (a first run): LIST then rides with
        #: UIDL instead of costing a round trip of its own.
        self.prefetch_sizes = False
        self._deletes_sent = False
        self._capa_sent = False  # CAPA went out with the handshake: only its reply is due
        self._early_exchange: sasl.Exchange | None = None  # AUTH sent with it, reply due

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        timeout: float,
        starttls: bool = False,
        early_capa: bool = False,
        early_login: Callable[[], sasl.Exchange | None] | None = None,
    ) -> Session:
        """Open a verified TLS connection (implicit, or by STLS) and read the greeting.

        With ``starttls`` the plaintext part carries only CAPA and STLS: a server that does not
        offer STLS ends the session before any credential could be sent.

        With ``early_capa`` (implicit TLS; for a server known to pipeline) CAPA goes out with
        the end of the handshake, so its reply comes with the greeting, a round trip sooner;
        :meth:`capa` then only reads it. ``early_login``, asked at the end of the handshake,
        may hand over a prepared login (a SCRAM exchange, whose first line holds no secret) to
        go with CAPA; :meth:`authenticate` continues it when CAPA confirms the mechanism.

        Raises:
            TLSError: the certificate or handshake was refused, or STLS is not offered (nothing
                secret was sent). The ssl error, if any, is chained as ``__cause__``.
            ConnectError: DNS, TCP or timeout failures.
            ProtocolError: the greeting is not ``+OK``.
        """
        where = f"{host}:{port}"
        transport: _Transport | _PlainTransport | None = None
        try:
            if starttls:
                transport = _PlainTransport(host, port, timeout=timeout)
                session = cls(transport, host)
                session._start_tls(context, where)
            else:
                sent_early: list[sasl.Exchange] = []

                def early() -> bytes:
                    lines = ["CAPA"]
                    exchange = early_login() if early_login is not None else None
                    if exchange is not None:
                        lines.append(exchange.command())
                        sent_early.append(exchange)
                    return "".join(line + "\r\n" for line in lines).encode()

                transport = _Transport(
                    host,
                    port,
                    context=context,
                    timeout=timeout,
                    early=early if early_capa else None,
                )
                session = cls(transport, host)
                session._capa_sent = early_capa
                session._early_exchange = sent_early[0] if sent_early else None
        except BaseException as err:
            if transport is not None:
                with contextlib.suppress(OSError):
                    transport.close()
            translated = _connect_error(err, host, where)
            if translated is err:
                raise
            raise translated from err
        logger.debug("S: %s", session.greeting)
        return session

    def _start_tls(self, context: ssl.SSLContext, where: str) -> None:
        if "STLS" not in self.capa():
            raise TLSError(
                f"{where} does not offer STLS, so the session was ended before any credential "
                "was sent",
                hint='use the POP3S port with tls = "implicit", or ask the server\'s '
                "administrator to enable STARTTLS",
            )
        self._send("STLS")
        ok, text = self._status()
        if not ok:
            raise TLSError(f"{where} refused STLS: {text}", hint='try tls = "implicit"')
        if self._reader.buffered():
            # Bytes after the STLS reply, before the handshake, could only be an injection
            # (RFC 2595 section 3.1 and the STARTTLS command injection attacks): refuse.
            raise ProtocolError(f"{where} sent data between STLS and the TLS handshake")
        sock = context.wrap_socket(self._transport.sock, server_hostname=self._host)
        self._transport.sock = sock
        self._transport.file = sock.makefile("rb")
        self._reader = self._transport.reader = _Reader(sock)
        self.capa()  # RFC 2595: forget what was said in plaintext, ask again

    @property
    def tls_version(self) -> str:
        sock = self._transport.sock
        if not isinstance(sock, ssl.SSLSocket):
            return "none"
        return sock.version() or "unknown"

    @property
    def cipher(self) -> str:
        sock = self._transport.sock
        cipher = sock.cipher() if isinstance(sock, ssl.SSLSocket) else None
        return cipher[0] if cipher else "none"

    def peer_certificate(self) -> bytes:
        """The server's certificate (DER), for pinning and for ``serverinfo``."""
        sock = self._transport.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        if not der:
            raise TLSError(f"{self._host} presented no certificate")
        return der

    def close(self) -> None:
        """Drop the connection without QUIT, so the server commits no deletion."""
        with contextlib.suppress(OSError):
            self._transport.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.capabilities

    def _send(self, *commands: str, secret: bool = False, then: Sequence[str] = ()) -> None:
        """Send commands, and ``then`` after them, in one write (one TLS record, one segment).

        ``secret`` commands are logged masked (so are PASS lines); ``then`` ones are not.
        """
        for command in commands:
            logger.debug("C: %s", _masked(command) if secret else _masked_pass(command))
        for command in then:
            logger.debug("C: %s", _masked_pass(command))
        lines = [*commands, *then]
        try:
            self._transport.sock.sendall("".join(c + "\r\n" for c in lines).encode())
        except TimeoutError as err:
            raise ConnectError("timed out sending to the server") from err
        except OSError as err:
            raise ConnectionClosed(f"connection lost: {err.strerror or err}") from err

    def _status(self) -> tuple[bool, str]:
        """Read one status line; return (ok, text after +OK/-ERR)."""
        line = self._reader.read_line().decode("utf-8", "replace")
        logger.debug("S: %s", line)
        if line.startswith("+OK"):
            return True, line[3:].strip()
        if line.startswith("-ERR"):
            return False, line[4:].strip()
        raise ProtocolError(f"unexpected reply from the server: {line[:200]!r}")

    def _command(self, command: str) -> str:
        self._send(command)
        ok, text = self._status()
        if not ok:
            verb = command.split(" ", 1)[0]
            raise ProtocolError(f"the server refused {verb}: {text}")
        return text

    def _lines(self) -> list[str]:
        collected: list[bytes] = []
        self._reader.read_body(collected.append)
        return b"".join(collected).decode("utf-8", "replace").splitlines()

    def capa(self) -> dict[str, list[str]]:
        """Ask for capabilities (RFC 2449); an RFC 1939-only server gets an empty set."""
        if self._capa_sent:
            self._capa_sent = False
            logger.debug("C: CAPA (sent with the handshake)")
        else:
            self._send("CAPA")
        ok, _ = self._status()
        self.capabilities = {}
        if ok:
            for line in self._lines():
                name, *args = line.split()
                self.capabilities[name.upper()] = args
        return self.capabilities

    def login(self, username: str, password: str, *, then_list: bool = False) -> None:
        """USER/PASS; TLS is already up, so the password never crosses the wire in clear.

        With ``then_list`` and PIPELINING, UIDL goes out in the same flight, saving a round
        trip; :meth:`unique_ids` then only reads its reply.

        Raises:
            AuthError: the server refused the credentials (exit 77).
            RemoteError: a temporary refusal ([IN-USE], [LOGIN-DELAY], [SYS/TEMP]) (exit 75).
        """
        if self.pipelining:
            listing = self._listing_commands() if then_list else ()
            self._send(f"USER {username}", f"PASS {password}", *listing)
            self._listing_sent = bool(listing)
            replies = [self._status(), self._status()]
        else:
            self._send(f"USER {username}")
            replies = [self._status()]
            if replies[0][0]:
                self._send(f"PASS {password}")
                replies.append(self._status())
        for ok, text in replies:
            if not ok:
                raise sasl.login_refused(self._host, text)

    def authenticate(
        self, method: str, username: str, secret: str, *, then_list: bool = False
    ) -> None:
        """Log in with ``method`` as :func:`sasl.choose` names it: USER, APOP or a SASL name.

        SASL follows RFC 5034: ``AUTH <mech> [initial response]``, then ``+ <challenge>``
        lines answered one at a time (never pipelined), until ``+OK`` or ``-ERR``.

        Raises:
            AuthError / RemoteError / LoginUnavailable: the server refused (77 / 75 / 69).
            SaslError: the server broke the mechanism (e.g. a forged SCRAM signature).
        """
        early, self._early_exchange = self._early_exchange, None
        if early is not None and early.mechanism.name != method:
            self._drop_early_login(early)  # CAPA chose otherwise: end that attempt first
            early = None
        if method == "USER":
            self.login(username, secret, then_list=then_list)
            return
        if method == "APOP":
            timestamp = sasl.apop_timestamp(self.greeting)
            if timestamp is None:
                raise ProtocolError(
                    f"{self._host} did not put an APOP timestamp in its greeting",
                    hint='APOP cannot be used with this server; set auth = "auto"',
                )
            self._send(f"APOP {username} {sasl.apop_digest(timestamp, secret)}", secret=True)
            ok, text = self._status()
            if not ok:
                raise sasl.login_refused(self._host, text)
            return
        if early is not None:
            exchange = early
        else:
            exchange = sasl.Exchange(sasl.mechanism(method, username=username, secret=secret))
        # With PIPELINING, what follows a login goes out as soon as the client's last word in
        # it is known: behind a one-shot AUTH (PLAIN), or behind the empty answer SCRAM owes
        # the server's final message, sent together with client-final. That saves a round
        # trip, or two. Nothing is sent before the server's verdict that a failed login could
        # misuse: the listing commands are harmless, and are simply refused then.
        listing = self._listing_commands() if then_list and self.pipelining else ()
        if early is not None:
            logger.debug("C: AUTH %s **** (sent with the handshake)", method)
        else:
            command = exchange.command()
            ahead = listing if exchange.one_shot() else ()
            self._send(command, secret=True, then=ahead)
            self._listing_sent = bool(ahead)
        answered_ahead = False  # the next challenge's answer is already on its way
        while True:
            line = self._reader.read_line().decode("utf-8", "replace")
            logger.debug("S: %s", line if not line.startswith("+ ") else "+ ****")
            if line.startswith("+OK"):
                exchange.succeeded(line[3:].strip())
                if answered_ahead:
                    # The server needed no last challenge: it read our answer as a command.
                    logger.debug("S: %s (the answer sent ahead, read as a command)", self._status())
                return
            if line.startswith("-ERR"):
                raise exchange.failed(self._host, line[4:].strip())
            if line.startswith("+"):
                response = exchange.answer(line[1:])
                if answered_ahead:
                    answered_ahead = False  # sent already; a cancelling "*" fails succeeded()
                    continue
                foreseen = exchange.foreseen() if listing and not self._listing_sent else None
                if foreseen is None:
                    self._send(response, secret=True)
                    continue
                self._send(response, foreseen, secret=True, then=listing)
                self._listing_sent = answered_ahead = True
                continue
            raise ProtocolError(f"unexpected reply during AUTH: {line[:200]!r}")

    def _drop_early_login(self, exchange: sasl.Exchange) -> None:
        """Read the reply to an AUTH sent with the handshake that CAPA did not confirm.

        Normally ``-ERR`` (the mechanism is no longer offered); a challenge is cancelled.
        """
        line = self._reader.read_line().decode("utf-8", "replace")
        logger.debug("S: %s (to the AUTH %s sent early)", line[:200], exchange.mechanism.name)
        if line.startswith("+") and not line.startswith("+OK"):
            self._send("*")
            logger.debug("S: %s", self._reader.read_line().decode("utf-8", "replace")[:200])

    def listing(self) -> list[RemoteMessage]:
        """UIDL and LIST (every message), joined by message number.

        Raises:
            ProtocolError: no UIDL support, or malformed replies.
        """
        uidls = self.unique_ids()
        return self.with_sizes(uidls, list(uidls))

    def unique_ids(self) -> dict[int, str]:
        """UIDL: message number -> unique-id. LIST is left for :meth:`with_sizes`, because on
        a large mailbox with nothing new it is the server's costliest reply (sizes with CRLF).

        Raises:
            ProtocolError: no UIDL support, or malformed replies.
        """
        if self._listing_sent:
            self._listing_sent = False
        else:
            self._send(*self._listing_commands())
        ok, text = self._status()
        lines = self._lines() if ok else []
        if self._sizes_sent:
            self._sizes_sent = False
            list_ok, list_text = self._status()
            self._prefetched = (list_ok, list_text, self._lines() if list_ok else [])
        if not ok:
            raise ProtocolError(
                f"the server does not support UIDL ({text})",
                hint="without UIDL, messages cannot be told apart between runs; "
                "pop3s-fetch refuses to guess, and deleted nothing",
            )
        return _parse_pairs(lines, "UIDL")

    def _listing_commands(self) -> tuple[str, ...]:
        self._sizes_sent = self.prefetch_sizes and self.pipelining
        return ("UIDL", "LIST") if self._sizes_sent else ("UIDL",)

    def with_sizes(self, uidls: dict[int, str], numbers: Sequence[int]) -> list[RemoteMessage]:
        """The LIST sizes of ``numbers``: one ``LIST n`` each, pipelined, when they are a few
        of many; one whole LIST otherwise.

        Raises:
            ProtocolError: LIST refused or malformed, or naming other messages than UIDL did.
        """
        prefetched, self._prefetched = self._prefetched, None
        if not numbers:
            return []
        wanted = sorted(numbers)
        if prefetched is not None:
            ok, text, lines = prefetched
            if not ok:
                raise ProtocolError(f"the server refused LIST: {text}")
            sizes = {n: int(size) for n, size in _parse_pairs(lines, "LIST").items()}
        elif self.pipelining and len(wanted) * 4 < len(uidls):
            self._send(*(f"LIST {n}" for n in wanted))
            replies = [self._status() for _ in wanted]
            refused = [text for ok, text in replies if not ok]
            if refused:
                raise ProtocolError(f"the server refused LIST: {refused[0]}")
            sizes = {
                number: int(size)
                for number, size in _parse_pairs([t for _, t in replies], "LIST").items()
            }
        else:
            self._send("LIST")
            ok, text = self._status()
            if not ok:
                raise ProtocolError(f"the server refused LIST: {text}")
            sizes = {n: int(size) for n, size in _parse_pairs(self._lines(), "LIST").items()}
        if not set(wanted) <= sizes.keys() or not sizes.keys() <= uidls.keys():
            raise ProtocolError("the server's UIDL and LIST replies name different messages")
        return [RemoteMessage(n, uidls[n], sizes[n]) for n in wanted]

    def retrieve(
        self, messages: Sequence[RemoteMessage], open_sink: Callable[[RemoteMessage], Sink]
    ) -> Iterator[Retrieved]:
        """RETR each message, streaming its body into ``open_sink(message)``, in order.

        With PIPELINING, RETRs are sent ahead within a window bounded by bytes and by count.
        Between items the caller may call :meth:`queue_delete`; replies stay matched to
        commands by order. A ``-ERR`` to one RETR is reported in its item, not raised.

        Raises:
            ConnectionClosed / ConnectError: the connection failed; the item being read was
            incomplete and its sink must be discarded by the caller.
        """
        queue = collections.deque(messages)
        in_flight_bytes = 0
        while queue or self._pending:
            batch: list[str] = []
            # Refill only once the window is half empty: a few big writes instead of one
            # small one per message, for us and for the server.
            while queue and self._room(in_flight_bytes, refill=not batch):
                message = queue.popleft()
                batch.append(f"RETR {message.number}")
                self._pending.append(_Pending("RETR", message))
                in_flight_bytes += message.size
            if batch:
                self._send(*batch)
            pending = self._pending.popleft()
            if pending.verb == "DELE":
                self._finish_delete()
                continue
            assert pending.message is not None
            message = pending.message
            in_flight_bytes -= message.size
            ok, text = self._status()
            if not ok:
                yield Retrieved(message, 0, error=text or "RETR refused")
                continue
            octets = self._reader.read_body(open_sink(message))
            yield Retrieved(message, octets)

    def _room(self, in_flight_bytes: int, *, refill: bool = False) -> bool:
        """Whether one more RETR may be sent; with ``refill``, whether to start a batch."""
        outstanding = len(self._pending)
        if outstanding == 0:
            return True
        if not self.pipelining:
            return False
        if refill:
            return outstanding <= WINDOW_COMMANDS // 2 and in_flight_bytes <= WINDOW_BYTES // 2
        return outstanding < WINDOW_COMMANDS and in_flight_bytes < WINDOW_BYTES

    def queue_delete(self, messages: Sequence[RemoteMessage]) -> None:
        """Send DELE for these messages; replies are read in order with the rest.

        Without PIPELINING the replies are read at once, before anything else is sent.
        """
        if not messages:
            return
        self._deletes_sent = True
        if not self.pipelining:
            for message in messages:
                if self._pending:  # pragma: no cover - retrieve() never yields mid-flight here
                    raise AssertionError("command sent with another in flight")
                self._send(f"DELE {message.number}")
                self._finish_delete()
            return
        self._send(*(f"DELE {m.number}" for m in messages))
        self._pending.extend(_Pending("DELE", m) for m in messages)

    def _finish_delete(self) -> None:
        ok, text = self._status()
        if not ok:
            self._delete_errors.append(text)

    def drain(self) -> list[str]:
        """Read every outstanding reply; return the ``-ERR`` texts DELE got in this session."""
        while self._pending:
            pending = self._pending.popleft()
            if pending.verb != "DELE":  # pragma: no cover - only DELE can remain queued
                raise AssertionError(f"unexpected outstanding {pending.verb}")
            self._finish_delete()
        return list(self._delete_errors)

    def quit(self) -> None:
        """QUIT, which commits DELE marks; sent only after every other reply has arrived.

        (Dovecot 2.3 was seen to cut the tail of the last RETR when QUIT was pipelined behind it.)
        When no DELE was sent there is nothing to commit, so the reply is not waited for: that
        saves a round trip on every run that keeps its mail on the server.
        """
        self.drain()
        if self._deletes_sent:
            self._command("QUIT")
        else:
            self._send("QUIT")
        self.close()


def _parse_pairs(lines: list[str], verb: str) -> dict[int, str]:
    """``<number> <value>`` lines to a dict; in bulk, as idle runs list tens of thousands."""
    if not lines:
        return {}
    tokens = " ".join(lines).split()
    numbers, values = tokens[0::2], tokens[1::2]
    digits = "".join(numbers)
    if len(tokens) == 2 * len(lines) and digits.isascii() and digits.isdigit():
        return dict(zip(map(int, numbers), values, strict=True))
    for line in lines:  # something is malformed: find the line to name it
        parts = line.split()
        if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()):
            raise ProtocolError(f"malformed {verb} line from the server: {line[:200]!r}")
    raise AssertionError("unreachable: the bulk parse failed on well-formed lines")


def _connect_error(err: BaseException, host: str, where: str) -> BaseException:
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


def _masked_pass(command: str) -> str:
    return "PASS ****" if command.upper().startswith("PASS ") else command


def _masked(command: str) -> str:
    """Keep the verb (and for AUTH the mechanism) of a line carrying a secret."""
    words = command.split(" ")
    keep = 2 if words[0].upper() in ("AUTH", "APOP") else 0
    return " ".join([*words[:keep], "****"])


def _text(err: BaseException) -> str:
    arg = err.args[0] if err.args else err
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    return str(arg)
