"""A small, honest POP3S server with scripted faults, for ``pop3s-fetch demo`` and the tests.

It speaks RFC 1939 (USER/PASS, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT), RFC 2449
(CAPA, the 255-octet command limit, and when scripted the LOGIN-DELAY and EXPIRE policies with
their ``[LOGIN-DELAY]`` code) and RFC 3206 (``[AUTH]`` and ``[IN-USE]`` response codes)
over implicit TLS, one thread per connection. It owns the wire form of a message (CRLF line
ends, dot-stuffing), the per-session state machine, the maildrop lock and the fault script
(:class:`Faults`) that lets the test suite break a session at an exact point.

It must not know anything about the client side: configuration, credentials storage, the UID
state store or delivery. Standard library only, so that the demo needs no test dependencies.
Nothing is logged above DEBUG and no traceback reaches stderr when a client goes away.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType

__all__ = [
    "FAULTABLE_VERBS",
    "LOCK_WAIT",
    "LONG_STATUS_OCTETS",
    "MAX_COMMAND_OCTETS",
    "Faults",
    "MailStore",
    "Pop3Server",
    "top_excerpt",
    "wire_form",
    "wire_size",
]

_log = logging.getLogger(__name__)

MAX_COMMAND_OCTETS = 255
"""RFC 2449 section 4: a command line may hold 255 octets, its CRLF included."""

LONG_STATUS_OCTETS = 128 * 1024
"""Length of the status line sent for a verb in :attr:`Faults.long_line_on`: past 100 KB."""

FAULTABLE_VERBS = frozenset(
    {"USER", "PASS", "CAPA", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "QUIT"}
)
"""Every verb the server knows; the verb-keyed faults accept exactly these."""

GREETING = b"+OK pop3s-fetch test server ready\r\n"
IMPLEMENTATION = "pop3s-fetch-test-server"

LOCK_WAIT = 0.5
"""Seconds PASS waits for a maildrop held by another session before answering ``[IN-USE]``.

Like a real server waiting on its maildrop lock, this gives a session whose client has just
disconnected time to notice and let go, so a client that reconnects at once is not refused.
"""

_RECEIVE_SIZE = 64 * 1024
_SEND_THRESHOLD = 64 * 1024  # replies are coalesced up to this size, then sent in one piece
_STOP_TIMEOUT = 10.0  # seconds stop() waits for session threads before calling it a bug


def wire_form(message: bytes) -> bytes:
    """Return ``message`` as a RETR reply carries it, without the terminating ``.\\r\\n``.

    LF becomes CRLF, a line starting with "." gets one more, and a message that does not end
    in a newline gets a CRLF so that the terminator stands on its own line. Bulk ``replace``
    keeps this fast for the tens of megabytes the tests and the demo push through.
    """
    crlf = message.replace(b"\n", b"\r\n")
    if crlf and not crlf.endswith(b"\r\n"):
        crlf += b"\r\n"
    stuffed = crlf.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def wire_size(message: bytes) -> int:
    """Return the size LIST and STAT report: octets with CRLF line ends (RFC 1939 section 11).

    Neither dot-stuffing nor the CRLF added to a message lacking a final newline is counted,
    as real servers report the size of the message, not of its transfer.
    """
    return len(message) + message.count(b"\n")


def top_excerpt(message: bytes, body_lines: int) -> bytes:
    """Return the header, the blank line and the first ``body_lines`` body lines (RFC 1939 TOP)."""
    if message.startswith(b"\n"):
        end = 1
    else:
        blank_line = message.find(b"\n\n")
        if blank_line < 0:
            return message
        end = blank_line + 2
    for _ in range(body_lines):
        newline = message.find(b"\n", end)
        if newline < 0:
            return message
        end = newline + 1
    return message[:end]


def _frozen_verbs(verbs: Iterable[str], fault: str) -> frozenset[str]:
    upper = frozenset(verb.upper() for verb in verbs)
    unknown = sorted(upper - FAULTABLE_VERBS)
    if unknown:
        raise ValueError(f"Faults.{fault}: unknown POP3 verbs {unknown}")
    return upper


@dataclass(frozen=True)
class Faults:
    """What the server does wrong, read once by each session as it starts.

    Message numbers are the session's (1-based). Verbs are case-insensitive and must be in
    :data:`FAULTABLE_VERBS`, so that a typo cannot turn a fault test into one that passes
    without the fault. A verb fault applies in every state, AUTHORIZATION included.

    - ``drop_mid_retr``: message number -> send the ``+OK`` line and this many octets of the
      reply data (wire form), then close the connection. A count at or past the end of the
      data behaves like ``no_terminator_retr``.
    - ``drop_on``: close the connection instead of replying. Replies to commands before it are
      sent first. For QUIT the drop comes *before* the deletions are committed, like a server
      that crashes on QUIT: nothing marked with DELE is deleted.
    - ``err_on_retr``, ``err_on_dele``: ``-ERR`` to RETR or DELE of these messages.
    - ``hang_on``: never reply again; the session ends when the client disconnects (freeing
      the maildrop) or the server stops.
    - ``long_line_on``: the status line of the reply to these verbs is padded past 100 KB;
      the rest of the reply is unchanged, so a client that copes gets correct data.
    - ``no_terminator_retr``: send the whole message, then close without the final ``.``.
    - ``list_size_delta``: LIST and STAT report the real size plus this delta.
    - ``duplicate_uidls``: UIDL reports message 1's unique-id for message 2 as well.
    - ``no_uidl``: UIDL is not in CAPA and answers ``-ERR``.
    - ``no_pipelining``: PIPELINING is not in CAPA (commands are still answered in order).
    - ``no_capa``: ``-ERR`` to CAPA, like an RFC 1939-only server.
    - ``login_delay``: seconds (RFC 2449 LOGIN-DELAY): announced in CAPA, and enforced: a PASS
      sooner than this after the maildrop's last successful login is refused with
      ``-ERR [LOGIN-DELAY]`` (:meth:`MailStore.forget_logins` stands for the time passing).
    - ``expire``: ``"NEVER"`` or days (RFC 2449 EXPIRE), announced in CAPA; with ``"0"`` each
      message read with RETR is deleted at QUIT as if DELEd, which section 6.7 allows.
    - ``announced_before_login``: CAPA in the AUTHORIZATION state shows these LOGIN-DELAY and
      EXPIRE arguments instead (``{"LOGIN-DELAY": "60 USER"}``): a value that varies per user,
      the real one given once logged in.
    - ``hold_retr``: message number -> an Event; the reply to RETR of that message waits until
      the event is set (or the server stops), with everything before it already sent. Lets a
      test look at a client mid-download without sleeping.

    Hostile replies, for what a broken or malicious server sends (none of these is valid):

    - ``greeting``: these bytes (a whole line, CRLF included) instead of the greeting.
    - ``raw_replies``: verb -> these bytes (status line, body and terminator as they should go
      on the wire) instead of the reply to every command with that verb.
    - ``retr_body_of``: message number n -> m; RETR n is answered with message m's body.
    - ``endless_reply_to``: the reply to these verbs is ``+OK`` and a body that never ends
      (numbered lines), until the client goes away or the server stops.
    - ``trickle_greeting``, ``trickle_retr`` (message number -> seconds): send the greeting, or
      the reply to RETR of that message, one byte per this many seconds (a slow-loris server).
    """

    drop_mid_retr: Mapping[int, int] = field(default_factory=dict)
    drop_on: AbstractSet[str] = frozenset()
    err_on_retr: AbstractSet[int] = frozenset()
    err_on_dele: AbstractSet[int] = frozenset()
    hang_on: AbstractSet[str] = frozenset()
    long_line_on: AbstractSet[str] = frozenset()
    no_terminator_retr: AbstractSet[int] = frozenset()
    list_size_delta: Mapping[int, int] = field(default_factory=dict)
    duplicate_uidls: bool = False
    no_uidl: bool = False
    no_pipelining: bool = False
    no_capa: bool = False
    hold_retr: Mapping[int, threading.Event] = field(default_factory=dict)
    login_delay: int | None = None
    expire: str | None = None
    announced_before_login: Mapping[str, str] = field(default_factory=dict)
    greeting: bytes | None = None
    raw_replies: Mapping[str, bytes] = field(default_factory=dict)
    retr_body_of: Mapping[int, int] = field(default_factory=dict)
    endless_reply_to: AbstractSet[str] = frozenset()
    trickle_greeting: float = 0.0
    trickle_retr: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen copies: a test that keeps mutating its own set or dict must not change the
        # script of a session that is already running.
        for name in ("drop_on", "hang_on", "long_line_on", "endless_reply_to"):
            object.__setattr__(self, name, _frozen_verbs(getattr(self, name), name))
        for name in ("err_on_retr", "err_on_dele", "no_terminator_retr"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        for name in (
            "drop_mid_retr",
            "list_size_delta",
            "hold_retr",
            "retr_body_of",
            "announced_before_login",
            "trickle_retr",
        ):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        verbs = _frozen_verbs(self.raw_replies, "raw_replies")
        raw = {verb.upper(): data for verb, data in self.raw_replies.items()}
        object.__setattr__(self, "raw_replies", MappingProxyType({v: raw[v] for v in verbs}))


class MailStore:
    """One maildrop: the messages a user has on the server, shared by that user's sessions.

    Messages are stored as given, with LF line ends like a Maildir file. Unique-ids come from a
    counter, so they are stable and never reused, even after a deletion. Thread-safe.
    """

    def __init__(self, messages: Sequence[bytes] = ()) -> None:
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._messages: dict[str, bytes] = {}
        self._serial = itertools.count(1)
        self._claimed = False
        self._last_login: float | None = None  # time.monotonic() of the last successful PASS
        for message in messages:
            self.add(message)

    def add(self, message: bytes) -> str:
        """Store ``message`` and return its unique-id (UIDL)."""
        with self._lock:
            uidl = f"m{next(self._serial):06d}"
            self._messages[uidl] = bytes(message)
        return uidl

    def messages(self) -> list[tuple[str, bytes]]:
        """Return ``(uidl, message)`` for every message still on the server, oldest first."""
        with self._lock:
            return list(self._messages.items())

    def delete(self, uidls: Iterable[str]) -> None:
        """Remove these messages; unknown unique-ids are ignored, as after a concurrent delete."""
        with self._lock:
            for uidl in uidls:
                self._messages.pop(uidl, None)

    def claim(self, timeout: float = 0.0) -> bool:
        """Take the maildrop for one session (RFC 1939 section 8: exclusive access).

        Returns False if another session still holds it after ``timeout`` seconds.
        """
        with self._released:
            if not self._released.wait_for(lambda: not self._claimed, timeout):
                return False
            self._claimed = True
            return True

    def log_in(self, delay: int | None) -> bool:
        """Count a successful login, unless one came less than ``delay`` seconds ago."""
        with self._lock:
            now = time.monotonic()
            if delay and self._last_login is not None and now - self._last_login < delay:
                return False
            self._last_login = now
            return True

    def forget_logins(self) -> None:
        """As if the last login were long ago: LOGIN-DELAY lets the next one in."""
        with self._lock:
            self._last_login = None

    def release(self) -> None:
        """Give the maildrop back, whether or not the session ended with QUIT."""
        with self._released:
            self._claimed = False
            self._released.notify()


class _CommandTooLong(Exception):
    """A command line over :data:`MAX_COMMAND_OCTETS` was read and thrown away."""

    def __init__(self, octets: int) -> None:
        super().__init__(f"{octets} octets")
        self.octets = octets


class _CommandError(Exception):
    """The command is answered with ``-ERR`` and this text."""


class _Connection:
    """A client's TLS socket, which :meth:`Pop3Server.stop` can interrupt from its own thread.

    Shutting down a duplicate of the descriptor wakes a session thread blocked in recv or send
    without touching the SSL object that thread is using.
    """

    def __init__(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        self._lock = threading.Lock()
        self._closed = False
        # Replies are already coalesced; Nagle would only add delayed-ACK stalls to them.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._interrupter = raw.dup()
        try:
            self.tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except BaseException:
            self._interrupter.close()
            raise

    def interrupt(self) -> None:
        """Make any blocked or later I/O on this connection fail promptly."""
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    self._interrupter.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close abruptly (no TLS close_notify), as a crashing server would; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self._interrupter.shutdown(socket.SHUT_RDWR)
            self._interrupter.close()
            self.tls.close()


class _Output:
    """Coalesces small replies (pipelined answers share a TLS record) and sends big ones whole."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        if len(data) >= _SEND_THRESHOLD:
            self.flush()
            self._sock.sendall(data)
            return
        self._pending += data
        if len(self._pending) >= _SEND_THRESHOLD:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._sock.sendall(self._pending)
            self._pending.clear()


class _CommandReader:
    """Splits the client's byte stream into command lines, however they were packed into records.

    ``before_blocking`` runs whenever no complete line is buffered, just before waiting for the
    client, so that replies to pipelined commands go out together and never wait on the client.
    """

    def __init__(self, sock: socket.socket, before_blocking: Callable[[], None]) -> None:
        self._sock = sock
        self._before_blocking = before_blocking
        self._buffer = bytearray()
        self._discarded = 0  # octets of an over-long line thrown away so far

    def read_line(self) -> bytes | None:
        """Return the next line without its line end, or None at end of stream.

        Raises:
            _CommandTooLong: the line exceeded :data:`MAX_COMMAND_OCTETS`; it was consumed.
        """
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                return self._take_line(newline)
            if len(self._buffer) > MAX_COMMAND_OCTETS:
                # Keep memory bounded however long the line: count it, drop it.
                self._discarded += len(self._buffer)
                self._buffer.clear()
            self._before_blocking()
            chunk = self._sock.recv(_RECEIVE_SIZE)
            if not chunk:
                return None
            self._buffer += chunk

    def _take_line(self, newline: int) -> bytes:
        line = bytes(self._buffer[:newline]).removesuffix(b"\r")
        del self._buffer[: newline + 1]
        octets = self._discarded + len(line) + len(b"\r\n")
        self._discarded = 0
        if octets > MAX_COMMAND_OCTETS:
            raise _CommandTooLong(octets)
        return line


@dataclass(frozen=True)
class _Reply:
    status: str  # the whole status line without CRLF: "+OK ..." or "-ERR ..."
    data: bytes | None = None  # a multi-line body in wire form, without the terminator
    cut_after: int | None = None  # send only this many octets of data, then drop
    ends_session: bool = False
    trickle: float = 0.0  # send it a byte per this many seconds


def _ok(text: str = "", data: bytes | None = None) -> _Reply:
    return _Reply(f"+OK {text}" if text else "+OK", data)


def _lines(lines: Iterable[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("ascii")


@dataclass(frozen=True)
class _ConversationContext:
    """What every conversation shares with the server that accepted it."""

    users: Mapping[str, tuple[str, MailStore]]
    faults: Faults
    open_transcript: Callable[[], list[str]]
    stopping: threading.Event


class _Conversation:
    """One client, from the TLS handshake to QUIT or a dropped connection.

    Not called a session: the client's ``pop3.Session`` already has that name, and a reader
    of a test should never wonder which side a name belongs to.
    """

    def __init__(self, connection: _Connection, context: _ConversationContext) -> None:
        self._connection = connection
        self._context = context
        self._faults = context.faults
        self._out = _Output(connection.tls)
        self._reader = _CommandReader(connection.tls, self._out.flush)
        self._transcript: list[str] = []
        self._user: str | None = None
        self._store: MailStore | None = None
        self._messages: list[tuple[str, bytes]] = []
        self._deleted: set[int] = set()
        self._retrieved: set[int] = set()  # deleted at QUIT too under EXPIRE 0

    def run(self) -> None:
        """Serve the client until it quits or goes away; the maildrop is released either way."""
        try:
            self._connection.tls.do_handshake()
            self._transcript = self._context.open_transcript()
            greeting = GREETING if self._faults.greeting is None else self._faults.greeting
            if self._faults.trickle_greeting:
                self._trickle(greeting, self._faults.trickle_greeting)
            else:
                self._out.write(greeting)
            while self._serve_one():
                pass
            self._out.flush()
        except OSError as err:  # includes ssl.SSLError: the client left or stop() interrupted
            _log.debug("session ended: %s", err)
        finally:
            if self._store is not None:
                self._store.release()
            self._connection.close()

    def _serve_one(self) -> bool:
        """Read and answer one command; False when the session must end."""
        try:
            line = self._reader.read_line()
        except _CommandTooLong as too_long:
            self._transcript.append(f"<{too_long.octets} octets: line too long>")
            self._send("", _Reply("-ERR line too long"))
            return True
        if line is None:
            return False
        text = line.decode("latin-1")  # commands are ASCII; latin-1 keeps any byte intact
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        self._record(text, verb)
        if verb in self._faults.hang_on:
            self._hang()
            return False
        if verb in self._faults.drop_on:
            return False
        if verb in self._faults.raw_replies:
            self._out.write(self._faults.raw_replies[verb])
            return verb != "QUIT"
        if verb in self._faults.endless_reply_to:
            self._endless_reply()
            return False
        reply = self._dispatch(verb, argument)
        self._send(verb, reply)
        return not reply.ends_session

    def _hang(self) -> None:
        """Answer nothing more, until the client gives up or stop() interrupts.

        Input is still read and thrown away, so that a client that times out and disconnects
        ends the session and frees the maildrop for its next attempt.
        """
        self._out.flush()
        while self._connection.tls.recv(_RECEIVE_SIZE):
            pass

    def _trickle(self, data: bytes, interval: float) -> None:
        """Send ``data`` a byte at a time, ``interval`` seconds apart (pacing, not waiting)."""
        self._out.flush()
        for index in range(len(data)):
            if self._context.stopping.wait(interval):
                return
            self._connection.tls.sendall(data[index : index + 1])

    def _endless_reply(self) -> None:
        """``+OK`` and body lines until the client gives up (a write fails) or stop()."""
        self._out.write(b"+OK here it comes\r\n")
        number = 0
        while not self._context.stopping.is_set():
            chunk = b"".join(b"%d x%s\r\n" % (number + i, b"x" * 60) for i in range(1000))
            number += 1000
            self._out.write(chunk)
            self._out.flush()

    def _record(self, text: str, verb: str) -> None:
        if verb == "PASS":
            text = text.partition(" ")[0] + " ***"
        self._transcript.append(text)

    def _dispatch(self, verb: str, argument: str) -> _Reply:
        handlers = (
            self._transaction_handlers()
            if self._store is not None
            else self._authorization_handlers()
        )
        handler = handlers.get(verb)
        if handler is None:
            if verb in FAULTABLE_VERBS:
                return _Reply(f"-ERR {verb} is not valid in this state")
            return _Reply("-ERR unknown command")
        try:
            return handler(argument)
        except _CommandError as err:
            return _Reply(f"-ERR {err}")

    def _send(self, verb: str, reply: _Reply) -> None:
        if reply.trickle:
            self._trickle(
                reply.status.encode("ascii") + b"\r\n" + (reply.data or b""), reply.trickle
            )
            return
        status = reply.status
        if verb in self._faults.long_line_on:
            status += " " + "x" * LONG_STATUS_OCTETS
        status_line = status.encode("ascii", "backslashreplace") + b"\r\n"
        if reply.data is None:
            self._out.write(status_line)
        elif reply.cut_after is None:
            self._out.write(b"".join((status_line, reply.data, b".\r\n")))
        else:
            self._out.write(status_line + reply.data[: reply.cut_after])

    # AUTHORIZATION state

    def _authorization_handlers(self) -> dict[str, Callable[[str], _Reply]]:
        return {
            "USER": self._user_command,
            "PASS": self._pass,
            "CAPA": self._capa,
            "QUIT": self._quit,
        }

    def _user_command(self, argument: str) -> _Reply:
        (self._user,) = _arguments(argument, 1, 1)
        return _ok("send PASS")

    def _pass(self, argument: str) -> _Reply:
        if self._user is None:
            raise _CommandError("send USER first")
        user, self._user = self._user, None
        account = self._context.users.get(user)
        password = argument.encode("latin-1")  # the octets the client sent
        if account is None or not hmac.compare_digest(password, account[0].encode()):
            raise _CommandError("[AUTH] invalid user name or password")
        store = account[1]
        if not store.claim(timeout=LOCK_WAIT):
            raise _CommandError("[IN-USE] maildrop already locked by another session")
        if not store.log_in(self._faults.login_delay):
            store.release()
            raise _CommandError(
                f"[LOGIN-DELAY] one login every {self._faults.login_delay} seconds, try later"
            )
        self._store = store
        self._messages = store.messages()
        return _ok(f"maildrop has {self._stat()}")

    def _capa(self, argument: str) -> _Reply:
        _arguments(argument, 0, 0)
        if self._faults.no_capa:
            raise _CommandError("unknown command")
        capabilities = ["TOP", "USER", "RESP-CODES", "AUTH-RESP-CODE"]
        if not self._faults.no_uidl:
            capabilities.append("UIDL")
        if not self._faults.no_pipelining:
            capabilities.append("PIPELINING")
        policies = {"LOGIN-DELAY": self._faults.login_delay, "EXPIRE": self._faults.expire}
        for name, value in policies.items():
            if self._store is None and name in self._faults.announced_before_login:
                capabilities.append(f"{name} {self._faults.announced_before_login[name]}")
            elif value is not None:
                capabilities.append(f"{name} {value}")
        capabilities.append(f"IMPLEMENTATION {IMPLEMENTATION}")
        return _ok("capability list follows", _lines(capabilities))

    def _quit(self, argument: str) -> _Reply:
        _arguments(argument, 0, 0)
        deleted = len(self._deleted)
        if self._store is not None:
            if self._faults.expire == "0":  # RFC 2449 6.7: an implicit DELE for each RETR
                self._deleted |= self._retrieved
                deleted = len(self._deleted)
            # Commit before replying: a client that saw +OK may rely on the deletions.
            self._store.delete(self._messages[number - 1][0] for number in self._deleted)
            self._deleted.clear()
        return _Reply(f"+OK bye, {deleted} messages deleted", ends_session=True)

    # TRANSACTION state

    def _transaction_handlers(self) -> dict[str, Callable[[str], _Reply]]:
        return {
            "CAPA": self._capa,
            "STAT": self._stat_command,
            "LIST": self._list,
            "UIDL": self._uidl_command,
            "RETR": self._retr,
            "TOP": self._top,
            "DELE": self._dele,
            "RSET": self._rset,
            "NOOP": self._noop,
            "QUIT": self._quit,
        }

    def _live_numbers(self) -> list[int]:
        return [n for n in range(1, len(self._messages) + 1) if n not in self._deleted]

    def _message_number(self, token: str) -> int:
        if not (token.isascii() and token.isdigit()):
            raise _CommandError(f"invalid message number {token!r}")
        number = int(token)
        if not 1 <= number <= len(self._messages):
            raise _CommandError(f"no such message, only {len(self._messages)} in maildrop")
        if number in self._deleted:
            raise _CommandError(f"message {number} already deleted")
        return number

    def _listed_size(self, number: int) -> int:
        message = self._messages[number - 1][1]
        return wire_size(message) + self._faults.list_size_delta.get(number, 0)

    def _uidl(self, number: int) -> str:
        if self._faults.duplicate_uidls and number == 2:
            number = 1
        return self._messages[number - 1][0]

    def _stat(self) -> str:
        numbers = self._live_numbers()
        return f"{len(numbers)} {sum(self._listed_size(n) for n in numbers)}"

    def _stat_command(self, argument: str) -> _Reply:
        _arguments(argument, 0, 0)
        return _ok(self._stat())

    def _list(self, argument: str) -> _Reply:
        tokens = _arguments(argument, 0, 1)
        if tokens:
            number = self._message_number(tokens[0])
            return _ok(f"{number} {self._listed_size(number)}")
        numbers = self._live_numbers()
        body = _lines(f"{n} {self._listed_size(n)}" for n in numbers)
        return _ok(f"{len(numbers)} messages", body)

    def _uidl_command(self, argument: str) -> _Reply:
        if self._faults.no_uidl:
            raise _CommandError("unknown command")
        tokens = _arguments(argument, 0, 1)
        if tokens:
            number = self._message_number(tokens[0])
            return _ok(f"{number} {self._uidl(number)}")
        body = _lines(f"{n} {self._uidl(n)}" for n in self._live_numbers())
        return _ok("unique-id listing follows", body)

    def _retr(self, argument: str) -> _Reply:
        (token,) = _arguments(argument, 1, 1)
        number = self._message_number(token)
        if number in self._faults.err_on_retr:
            raise _CommandError(f"cannot read message {number} (scripted fault)")
        gate = self._faults.hold_retr.get(number)
        if gate is not None:
            self._out.flush()
            while not gate.wait(0.05) and not self._context.stopping.is_set():
                pass
        sent = self._faults.retr_body_of.get(number, number)
        self._retrieved.add(number)
        data = wire_form(self._messages[sent - 1][1])
        status = f"+OK {self._listed_size(sent)} octets"
        if number in self._faults.drop_mid_retr:
            cut = min(self._faults.drop_mid_retr[number], len(data))
            return _Reply(status, data, cut_after=cut, ends_session=True)
        if number in self._faults.no_terminator_retr:
            return _Reply(status, data, cut_after=len(data), ends_session=True)
        if number in self._faults.trickle_retr:
            return _Reply(status, data + b".\r\n", trickle=self._faults.trickle_retr[number])
        return _Reply(status, data)

    def _top(self, argument: str) -> _Reply:
        token, lines_token = _arguments(argument, 2, 2)
        number = self._message_number(token)
        if not (lines_token.isascii() and lines_token.isdigit()):
            raise _CommandError(f"invalid line count {lines_token!r}")
        excerpt = top_excerpt(self._messages[number - 1][1], int(lines_token))
        return _ok("top of message follows", wire_form(excerpt))

    def _dele(self, argument: str) -> _Reply:
        (token,) = _arguments(argument, 1, 1)
        number = self._message_number(token)
        if number in self._faults.err_on_dele:
            raise _CommandError(f"cannot delete message {number} (scripted fault)")
        self._deleted.add(number)
        return _ok(f"message {number} deleted")

    def _rset(self, argument: str) -> _Reply:
        _arguments(argument, 0, 0)
        self._deleted.clear()
        return _ok(f"maildrop has {self._stat()}")

    def _noop(self, argument: str) -> _Reply:
        _arguments(argument, 0, 0)
        return _ok()


def _arguments(argument: str, least: int, most: int) -> list[str]:
    tokens = argument.split()
    if not least <= len(tokens) <= most:
        raise _CommandError("wrong number of arguments")
    return tokens


class Pop3Server:
    """A POP3S server on a background thread; use as a context manager or start()/stop().

    ``users`` maps a user name to ``(password, maildrop)``. Assign :attr:`faults` between
    sessions to script the next ones. :attr:`transcript` holds, per session that completed the
    TLS handshake, the command lines received, with the PASS argument replaced by ``***``.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        users: Mapping[str, tuple[str, MailStore]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self.host = host
        self.faults = faults if faults is not None else Faults()
        self.transcript: list[list[str]] = []
        self._requested_port = port
        self._ssl_context = ssl_context
        self._users = dict(users)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._accept_thread: threading.Thread | None = None
        self._sessions: dict[threading.Thread, _Connection] = {}
        self._sessions_changed = threading.Condition()

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        port: int = self._listener.getsockname()[1]
        return port

    def start(self) -> None:
        """Bind, listen and accept on a background thread; returns once connections are accepted."""
        if self._listener is not None or self._stopping.is_set():
            raise RuntimeError("a Pop3Server can be started only once")
        self._listener = socket.create_server((self.host, self._requested_port))
        self._wakeup = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(self._listener, self._wakeup[0]),
            name=f"pop3-accept-{self.port}",
            daemon=True,
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Close the listener and every connection, and join all threads; idempotent.

        Raises:
            RuntimeError: a session thread did not end in time (a bug in this module).
        """
        self._stopping.set()
        if self._accept_thread is not None and self._accept_thread.is_alive():
            assert self._wakeup is not None
            self._wakeup[1].send(b"\0")
            self._accept_thread.join(_STOP_TIMEOUT)
        for sock in (self._listener, *(self._wakeup or ())):
            if sock is not None:
                sock.close()
        with self._sessions_changed:
            for connection in self._sessions.values():
                connection.interrupt()
            threads = list(self._sessions)
        for thread in threads:
            thread.join(_STOP_TIMEOUT)
        if any(thread.is_alive() for thread in threads):
            raise RuntimeError("POP3 session threads did not stop")

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no session is running, e.g. after a client closed its end.

        Raises:
            TimeoutError: a session is still running after ``timeout`` seconds.
        """
        with self._sessions_changed:
            if not self._sessions_changed.wait_for(lambda: not self._sessions, timeout):
                raise TimeoutError(f"{len(self._sessions)} POP3 sessions still running")

    def __enter__(self) -> Pop3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept_loop(self, listener: socket.socket, wakeup: socket.socket) -> None:
        # Waiting on the listener and a wake-up socket lets stop() end this loop at once,
        # where a blocked accept() would not notice the listener being closed.
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wakeup, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is listener and not self._stopping.is_set():
                        self._accept(listener)

    def _accept(self, listener: socket.socket) -> None:
        try:
            raw, _ = listener.accept()
        except OSError:  # the client gave up between connect and accept
            return
        try:
            connection = _Connection(raw, self._ssl_context)
        except OSError:  # reset before we looked at it
            raw.close()
            return
        thread = threading.Thread(target=self._run_session, args=(connection,), daemon=True)
        with self._sessions_changed:
            self._sessions[thread] = connection
        thread.start()

    def _run_session(self, connection: _Connection) -> None:
        context = _ConversationContext(
            self._users, self.faults, self._open_transcript, self._stopping
        )
        try:
            _Conversation(connection, context).run()
        finally:
            with self._sessions_changed:
                del self._sessions[threading.current_thread()]
                self._sessions_changed.notify_all()

    def _open_transcript(self) -> list[str]:
        lines: list[str] = []
        with self._sessions_changed:
            self.transcript.append(lines)
        return lines
