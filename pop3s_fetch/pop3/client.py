"""The POP3 command session: connect, CAPA, login, listing, pipelined streaming RETR and TOP,
DELE, QUIT.

Commands go out in batches where PIPELINING (RFC 2449) allows, and every command whose reply is
read later than the call that sent it has an entry in one queue, in the order the replies are
due: CAPA and an AUTH sent with the TLS handshake, UIDL and LIST sent with the login, the RETR
window, DELEs. A method reads the replies it is owed from the head of that queue.

Must not know: poplib or sockets (``transport``), how bytes are decoded (``codec``), accounts,
configuration, credentials, storage, state or the UI: callers hand it sinks (``write(bytes)``)
and message numbers.
"""

from __future__ import annotations

import collections
import logging
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pop3s_fetch import sasl, socks
from pop3s_fetch.errors import ProtocolError, TLSError
from pop3s_fetch.pop3 import codec
from pop3s_fetch.pop3.codec import Sink
from pop3s_fetch.pop3.transport import Transport, connect_error

logger = logging.getLogger(__name__)

#: Pipelined RETRs may have at most this many message bytes (LIST sizes) outstanding. It must
#: exceed bandwidth x delay or the link idles; the data waits in kernel buffers, not in ours.
WINDOW_BYTES = 32 * 1024 * 1024
#: ...and at most this many commands, so the command bytes never fill the server's socket buffer.
WINDOW_COMMANDS = 256
#: At least this many octets more than LIST said are accepted from a RETR (see retr_limit).
RETR_MARGIN = 64 * 1024
#: The longest UIDL or LIST reply read: MAX_MESSAGES lines of the longest kind.
LISTING_LIMIT = codec.MAX_MESSAGES * codec.MAX_LISTING_LINE


@dataclass(frozen=True, slots=True)
class RemoteMessage:
    """One message in the maildrop: its number in this session, its UIDL and its LIST size."""

    number: int
    uidl: str
    size: int


@dataclass(frozen=True, slots=True)
class Retrieved:
    """The outcome of one RETR: ``error`` holds the server's ``-ERR`` text when it refused.

    ``octets`` were passed to the sink (LF line ends); ``received`` is the message's size as
    LIST counts it (CRLF line ends), to compare with ``message.size``.
    """

    message: RemoteMessage
    octets: int
    error: str | None = None
    received: int = 0

    @property
    def size_disagrees(self) -> bool:
        """What arrived is not the size LIST gave: maybe another message's body (RFC 1939).

        Two octets more are the CRLF a server must add before the terminator to a message
        lacking a final line end; servers do not count it in LIST.
        """
        listed = self.message.size
        return self.error is None and self.received not in (listed, listed + 2)


class MessageTooLarge(ProtocolError):
    """RETR ran past the caller's cap (not LIST's margin); the rest was left unread."""

    def __init__(self, message: RemoteMessage, cap: int) -> None:
        super().__init__(
            f"message {message.number} ran past {cap} bytes though the server listed it as "
            f"{message.size} bytes, so it was not saved"
        )
        self.remote = message
        self.cap = cap


class NoUidl(ProtocolError):
    """The server refused UIDL: its messages cannot be told apart from one session to the next.

    The listing commands sent behind it (a LIST) are still due; :meth:`Pop3Client.sizes`
    reads them, for a caller that can do without UIDLs.
    """


@dataclass(frozen=True, slots=True)
class UidlReply:
    """A UIDL reply's bytes as decoded (LF line ends), before any parsing.

    Parsed only on demand: an idle run over a big mailbox that matches the bytes of a listing
    it already settled against its state need not build an object per message.
    """

    body: bytes

    def count(self) -> int:
        """How many lines (messages) it holds; meaningful for a reply that parses."""
        return self.body.count(b"\n")

    def pairs(self) -> Mapping[int, str]:
        """Message number -> UIDL (a :class:`codec.Numbered` for the usual 1 to N).

        Raises:
            ProtocolError: malformed lines, a repeated number, too many messages.
        """
        return codec.parse_listing(self.body, "UIDL")


def _disagree() -> ProtocolError:
    return ProtocolError("the server's UIDL and LIST replies name different messages")


def retr_limit(listed: int) -> int:
    """The most octets RETR may send for a message LIST gave as ``listed``.

    Some servers' LIST sizes are only close (fetchmail warns "was not the expected length"),
    so there is a margin; beyond it the message is refused rather than written without end.
    """
    return listed + max(RETR_MARGIN, listed // 8)


#: What a TOP reply is taken to weigh in the window: a header, not the message.
TOP_WEIGHT = 16 * 1024


# -- commands in flight: one entry per reply still due, in the queue in the order they come ---


@dataclass(frozen=True, slots=True)
class Capa:
    """CAPA, sent with the TLS handshake: :meth:`Pop3Client.capa` only reads its reply."""

    command = "CAPA"


@dataclass(frozen=True, slots=True)
class EarlyAuth:
    """AUTH, sent with the handshake behind CAPA: :meth:`Pop3Client.authenticate` continues
    ``exchange`` when CAPA confirms its mechanism, and ends it otherwise."""

    exchange: sasl.Exchange


@dataclass(frozen=True, slots=True)
class Uidl:
    """UIDL of every message, sent with the login: :meth:`Pop3Client.unique_ids` reads it."""

    command = "UIDL"


@dataclass(frozen=True, slots=True)
class ListAll:
    """LIST of every message, sent behind UIDL: :meth:`Pop3Client.with_sizes` reads it."""

    command = "LIST"


@dataclass(frozen=True, slots=True)
class Retr:
    """RETR of ``message``, within the window :meth:`Pop3Client.retrieve` keeps."""

    message: RemoteMessage

    @property
    def command(self) -> str:
        return f"RETR {self.message.number}"


@dataclass(frozen=True, slots=True)
class Top:
    """TOP of ``message`` with no body lines (its header), within :meth:`Pop3Client.headers`'
    window."""

    message: RemoteMessage

    @property
    def command(self) -> str:
        return f"TOP {self.message.number} 0"


@dataclass(frozen=True, slots=True)
class Dele:
    """DELE of ``message``; its reply is read in order with the RETRs, or by ``drain``."""

    message: RemoteMessage

    @property
    def command(self) -> str:
        return f"DELE {self.message.number}"


def _weight(due: Retr | Top) -> int:
    """The octets a RETR or TOP in flight is expected to bring, for the window."""
    return due.message.size if isinstance(due, Retr) else min(due.message.size, TOP_WEIGHT)


InFlight = Capa | EarlyAuth | Uidl | ListAll | Retr | Top | Dele
_Due = TypeVar("_Due", Capa, EarlyAuth, Uidl, ListAll, Retr, Top, Dele)


class Pop3Client:
    """One POP3 session, authenticated or not; not thread-safe.

    ``in_flight``: commands already sent on ``transport`` whose replies are due, in order
    (what :meth:`connect` sent with the handshake).
    """

    def __init__(
        self, transport: Transport, host: str, *, in_flight: Iterable[InFlight] = ()
    ) -> None:
        self._transport = transport
        self._host = host
        self.greeting = transport.greeting
        self.capabilities: dict[str, list[str]] = {}
        self._in_flight: collections.deque[InFlight] = collections.deque(in_flight)
        self._delete_errors: list[str] = []
        #: Messages whose DELE the server refused in this session (they stay on the server).
        self.refused_deletes: list[RemoteMessage] = []
        #: Set when the whole LIST is wanted or cheap (a first run, a small mailbox): LIST then
        #: rides with UIDL instead of costing a round trip of its own.
        self.prefetch_sizes = False
        self._deletes_sent = False  # QUIT then commits them, so its reply is waited for

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
        proxy: socks.Proxy | None = None,
    ) -> Pop3Client:
        """Open a verified TLS connection (implicit, or by STLS) and read the greeting.

        With ``proxy`` the TCP connection goes through that SOCKS5 proxy, which resolves
        ``host``; TLS is then verified against ``host`` exactly as without it.

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
            ConnectError: DNS, TCP or timeout failures, or the proxy's (``socks.ProxyError``).
            ProtocolError: the greeting is not ``+OK``.
        """
        where = f"{host}:{port}"
        transport: Transport | None = None
        try:
            if starttls:
                transport = Transport.open_plaintext(host, port, timeout=timeout, proxy=proxy)
                session = cls(transport, host)
                session._start_tls(context, where)
            else:
                sent_early: list[InFlight] = []

                def early() -> bytes:
                    sent_early.append(Capa())
                    lines = [Capa.command]
                    exchange = early_login() if early_login is not None else None
                    if exchange is not None:
                        lines.append(exchange.command())
                        sent_early.append(EarlyAuth(exchange))
                    return codec.encode_commands(lines)

                transport = Transport.open_tls(
                    host,
                    port,
                    context=context,
                    timeout=timeout,
                    early=early if early_capa else None,
                    proxy=proxy,
                )
                session = cls(transport, host, in_flight=sent_early)
        except BaseException as err:
            if transport is not None:
                transport.close()
            translated = connect_error(err, host, where)
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
        if self._transport.buffered():
            # Bytes after the STLS reply, before the handshake, could only be an injection
            # (RFC 2595 section 3.1 and the STARTTLS command injection attacks): refuse.
            raise ProtocolError(f"{where} sent data between STLS and the TLS handshake")
        self._transport.start_tls(context, self._host)
        self.capa()  # RFC 2595: forget what was said in plaintext, ask again

    @property
    def tls_version(self) -> str:
        return self._transport.tls_version

    @property
    def cipher(self) -> str:
        return self._transport.cipher

    def peer_certificate(self) -> bytes:
        """The server's certificate (DER), for pinning and for ``serverinfo``."""
        der = self._transport.peer_certificate()
        if not der:
            raise TLSError(f"{self._host} presented no certificate")
        return der

    def close(self) -> None:
        """Drop the connection without QUIT, so the server commits no deletion."""
        self._transport.close()

    def __enter__(self) -> Pop3Client:
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
            logger.debug(
                "C: %s", codec.mask_secret(command) if secret else codec.mask_password(command)
            )
        for command in then:
            logger.debug("C: %s", codec.mask_password(command))
        self._transport.send([*commands, *then])

    def _due(self, kind: type[_Due]) -> _Due | None:
        """Take the head of the queue if it is a ``kind``: its reply is the next to read."""
        if self._in_flight and isinstance(self._in_flight[0], kind):
            return self._in_flight.popleft()  # type: ignore[return-value]
        return None

    def _status(self) -> tuple[bool, str]:
        """Read one status line; return (ok, text after +OK/-ERR)."""
        line = self._transport.read_line().decode("utf-8", "replace")
        logger.debug("S: %s", line)
        return codec.parse_status(line)

    def _command(self, command: str) -> str:
        self._send(command)
        ok, text = self._status()
        if not ok:
            verb = command.split(" ", 1)[0]
            raise ProtocolError(f"the server refused {verb}: {text}")
        return text

    def _lines(self, verb: str, limit: int) -> list[str]:
        """A multi-line text reply, read up to ``limit`` octets: beyond it the server is broken
        or hostile, and the connection is unusable (the rest of the reply is unread)."""
        return codec.text_lines([self._body(verb, limit)])

    def _body(self, verb: str, limit: int) -> bytes:
        """A multi-line reply's decoded bytes (LF line ends), read as :meth:`_lines` says."""
        collected: list[bytes] = []
        try:
            self._transport.read_body(collected.append, limit=limit)
        except codec.BodyTooLong:
            raise ProtocolError(
                f"the server's {verb} reply is longer than {limit:,} bytes, "
                "so it was not read to the end",
                hint="this is a server fault (or an attack before TLS); nothing was "
                "downloaded or deleted",
            ) from None
        return b"".join(collected)

    def capa(self) -> dict[str, list[str]]:
        """Ask for capabilities (RFC 2449); an RFC 1939-only server gets an empty set."""
        if self._due(Capa) is not None:
            logger.debug("C: CAPA (sent with the handshake)")
        else:
            self._send(Capa.command)
        ok, _ = self._status()
        lines = self._lines("CAPA", codec.MAX_CAPA_OCTETS) if ok else []
        self.capabilities = codec.parse_capabilities(lines)
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
            listing = self._listing() if then_list else ()
            self._send(f"USER {username}", f"PASS {password}", *(c.command for c in listing))
            self._in_flight.extend(listing)  # due after the two replies read now
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
        sent_early = self._due(EarlyAuth)
        early = sent_early.exchange if sent_early is not None else None
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
        listing = self._listing() if then_list and self.pipelining else ()
        listing_commands = [c.command for c in listing]
        listing_sent = False
        if early is not None:
            logger.debug("C: AUTH %s **** (sent with the handshake)", method)
        else:
            command = exchange.command()
            ahead = listing if exchange.one_shot() else ()
            self._send(command, secret=True, then=[c.command for c in ahead])
            self._in_flight.extend(ahead)  # due after the login's replies
            listing_sent = bool(ahead)
        answered_ahead = False  # the next challenge's answer is already on its way
        while True:
            line = self._transport.read_line().decode("utf-8", "replace")
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
                foreseen = exchange.foreseen() if listing and not listing_sent else None
                if foreseen is None:
                    self._send(response, secret=True)
                    continue
                self._send(response, foreseen, secret=True, then=listing_commands)
                self._in_flight.extend(listing)
                listing_sent = answered_ahead = True
                continue
            raise ProtocolError(f"unexpected reply during AUTH: {line[:200]!r}")

    def _drop_early_login(self, exchange: sasl.Exchange) -> None:
        """Read the reply to an AUTH sent with the handshake that CAPA did not confirm.

        Normally ``-ERR`` (the mechanism is no longer offered); a challenge is cancelled.
        """
        line = self._transport.read_line().decode("utf-8", "replace")
        logger.debug("S: %s (to the AUTH %s sent early)", line[:200], exchange.mechanism.name)
        if line.startswith("+") and not line.startswith("+OK"):
            self._send("*")
            logger.debug("S: %s", self._transport.read_line().decode("utf-8", "replace")[:200])

    def listing(self) -> list[RemoteMessage]:
        """UIDL and LIST (every message), joined by message number.

        Raises:
            ProtocolError: no UIDL support, or malformed replies.
        """
        uidls = self.unique_ids()
        return self.with_sizes(uidls, list(uidls))

    def stat(self) -> tuple[int, int]:
        """STAT: the maildrop's message count and total size (octets as LIST counts them).

        Raises:
            ProtocolError: refused, or not two whole numbers.
        """
        text = self._command("STAT")
        fields = text.split()
        if len(fields) < 2 or not all(f.isdigit() for f in fields[:2]):
            raise ProtocolError(f"the server's STAT reply is malformed: {text[:80]!r}")
        return int(fields[0]), int(fields[1])

    def unique_ids(self) -> Mapping[int, str]:
        """UIDL: message number -> unique-id. LIST is left for :meth:`with_sizes`, because on
        a large mailbox with nothing new it is the server's costliest reply (sizes with CRLF).

        Raises:
            ProtocolError: no UIDL support, or malformed replies.
        """
        return self.uidl_reply().pairs()

    def uidl_reply(self) -> UidlReply:
        """UIDL's reply as it came, not yet parsed: a caller that has seen these very bytes
        before may need nothing more of them than a fingerprint (see :class:`UidlReply`).

        Raises:
            NoUidl: the server refused UIDL.
            ProtocolError: the reply ran past :data:`LISTING_LIMIT`.
        """
        if self._due(Uidl) is None:
            listing = self._listing()
            self._send(*(c.command for c in listing))
            self._in_flight.extend(listing[1:])  # UIDL's reply is read now
        ok, text = self._status()
        if not ok:
            raise NoUidl(
                f"the server does not support UIDL ({text})",
                hint="without UIDL, messages cannot be told apart between runs; "
                "pop3s-fetch refuses to guess, and deleted nothing",
            )
        return UidlReply(self._body("UIDL", LISTING_LIMIT))

    def sizes(self) -> Mapping[int, int]:
        """LIST of every message: number -> size (the one sent ahead with UIDL, if it was).

        Raises:
            ProtocolError: LIST refused or malformed.
        """
        if self._due(ListAll) is None:
            self._send(ListAll.command)
        ok, text = self._status()
        if not ok:
            raise ProtocolError(f"the server refused LIST: {text}")
        return codec.parse_listing_sizes(self._body("LIST", LISTING_LIMIT))

    def _listing(self) -> tuple[Uidl] | tuple[Uidl, ListAll]:
        """The listing commands: UIDL, and LIST behind it when sizes are wanted ahead."""
        return (Uidl(), ListAll()) if self.prefetch_sizes and self.pipelining else (Uidl(),)

    def with_sizes(self, uidls: Mapping[int, str], numbers: Sequence[int]) -> list[RemoteMessage]:
        """The LIST sizes of ``numbers``: one ``LIST n`` each, pipelined, when they are a few
        of many; one whole LIST otherwise (or the one sent with UIDL, whose reply is due).

        Raises:
            ProtocolError: LIST refused or malformed, or naming other messages than UIDL did.
        """
        sent_ahead = self._due(ListAll)
        if sent_ahead is not None:  # read it whether or not it is needed: it is next
            list_ok, list_text = self._status()
            list_body = self._body("LIST", LISTING_LIMIT) if list_ok else b""
        if not numbers:
            return []
        wanted = sorted(numbers)
        sizes: Mapping[int, int]
        if sent_ahead is not None:
            if not list_ok:
                raise ProtocolError(f"the server refused LIST: {list_text}")
            sizes = codec.parse_listing_sizes(list_body)
            del list_body
        elif self.pipelining and len(wanted) * 4 < len(uidls):
            self._send(*(f"LIST {n}" for n in wanted))
            replies = [self._status() for _ in wanted]
            refused = [text for ok, text in replies if not ok]
            if refused:
                raise ProtocolError(f"the server refused LIST: {refused[0]}")
            sizes = codec.parse_sizes([text for _, text in replies])
        else:
            self._send("LIST")
            ok, text = self._status()
            if not ok:
                raise ProtocolError(f"the server refused LIST: {text}")
            sizes = codec.parse_listing_sizes(self._body("LIST", LISTING_LIMIT))
        if isinstance(uidls, codec.Numbered) and isinstance(sizes, codec.Numbered):
            # Both 1 to N: compared by their ends, and joined without a lookup per message.
            if not sizes.covers(wanted) or len(sizes) > len(uidls):
                raise _disagree()
            return list(map(RemoteMessage, wanted, uidls.pick(wanted), sizes.pick(wanted)))
        if not set(wanted) <= sizes.keys() or not set(sizes) <= set(uidls):
            raise _disagree()
        return [RemoteMessage(n, uidls[n], sizes[n]) for n in wanted]

    def retrieve(
        self,
        messages: Sequence[RemoteMessage],
        open_sink: Callable[[RemoteMessage], Sink],
        cap: int | None = None,
    ) -> Iterator[Retrieved]:
        """RETR each message, streaming its body into ``open_sink(message)``, in order.

        No message is read past :func:`retr_limit` of its LIST size, nor past ``cap`` octets
        (raising :class:`MessageTooLarge`): nothing beyond either reaches the sink.

        With PIPELINING, RETRs are sent ahead within a window bounded by bytes and by count.
        Between items the caller may call :meth:`queue_delete`; replies stay matched to
        commands by order. A ``-ERR`` to one RETR is reported in its item, not raised.

        Raises:
            ConnectionClosed / ConnectError: the connection failed; the item being read was
            incomplete and its sink must be discarded by the caller.
        """
        return self._stream(messages, Retr, open_sink, cap)

    def headers(
        self,
        messages: Sequence[RemoteMessage],
        open_sink: Callable[[RemoteMessage], Sink],
    ) -> Iterator[Retrieved]:
        """``TOP n 0`` of each message: its header block (and the empty line after it) streamed
        into ``open_sink(message)``, pipelined as :meth:`retrieve` is; a ``-ERR`` (no TOP, say)
        is reported in its item. ``received`` is then the header's octets, not the message's.

        Raises:
            ConnectionClosed / ConnectError / ProtocolError: as :meth:`retrieve`.
        """
        return self._stream(messages, Top, open_sink, None)

    def _stream(
        self,
        messages: Sequence[RemoteMessage],
        command: type[Retr] | type[Top],
        open_sink: Callable[[RemoteMessage], Sink],
        cap: int | None,
    ) -> Iterator[Retrieved]:
        """RETR or TOP each message within the window, yielding each as its reply is read."""
        queue = collections.deque(messages)
        in_flight_bytes = 0
        while queue or self._in_flight:
            batch: list[str] = []
            # Refill only once the window is half empty: a few big writes instead of one
            # small one per message, for us and for the server.
            while queue and self._room(in_flight_bytes, refill=not batch):
                retr = command(queue.popleft())
                batch.append(retr.command)
                self._in_flight.append(retr)
                in_flight_bytes += _weight(retr)
            if batch:
                self._send(*batch)
            due = self._in_flight.popleft()
            if isinstance(due, Dele):
                self._finish_delete(due)
                continue
            if not isinstance(due, command):  # pragma: no cover - the listing was read before
                raise AssertionError(f"unexpected outstanding {type(due).__name__}")
            message = due.message
            in_flight_bytes -= _weight(due)
            ok, text = self._status()
            if not ok:
                yield Retrieved(message, 0, error=text or f"{due.command.split()[0]} refused")
                continue
            limit = retr_limit(message.size)
            if cap is not None and cap < limit:
                limit = cap
            try:
                body = self._transport.read_body(open_sink(message), limit=limit)
            except codec.BodyTooLong:
                if limit == cap:
                    raise MessageTooLarge(message, cap) from None
                raise ProtocolError(
                    f"the server sent more than {limit} bytes for message {message.number}, "
                    f"which LIST gave as {message.size} bytes, so it was not saved",
                    hint="this is a server fault (report it to its administrator); the "
                    "message stays on the server, and what was saved before it is kept",
                ) from None
            yield Retrieved(message, body.written, received=body.octets)

    @property
    def awaiting_retr(self) -> bool:
        """Whether a RETR sent ahead awaits its reply: the caller stopped reading early."""
        return any(isinstance(due, Retr) for due in self._in_flight)

    def _room(self, in_flight_bytes: int, *, refill: bool = False) -> bool:
        """Whether one more RETR may be sent; with ``refill``, whether to start a batch."""
        outstanding = len(self._in_flight)
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
        deletes = [Dele(m) for m in messages]
        if not self.pipelining:
            for dele in deletes:
                if self._in_flight:  # pragma: no cover - retrieve() never yields mid-flight here
                    raise AssertionError("command sent with another in flight")
                self._send(dele.command)
                self._finish_delete(dele)
            return
        self._send(*(d.command for d in deletes))
        self._in_flight.extend(deletes)

    def _finish_delete(self, dele: Dele) -> None:
        ok, text = self._status()
        if not ok:
            self._delete_errors.append(text)
            self.refused_deletes.append(dele.message)

    def drain(self) -> list[str]:
        """Read every outstanding reply; return the ``-ERR`` texts DELE got in this session."""
        while self._in_flight:
            due = self._in_flight.popleft()
            if not isinstance(due, Dele):  # pragma: no cover - only DELE can remain queued
                raise AssertionError(f"unexpected outstanding {type(due).__name__}")
            self._finish_delete(due)
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
