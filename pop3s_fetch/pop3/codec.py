"""POP3's byte-level rules, as pure functions over buffers: no sockets, no poplib, no TLS.

Multi-line bodies are decoded with bulk ``bytes`` operations on whole buffers (find the
terminator, un-stuff leading dots, CRLF -> LF), never per line in Python, and nothing else is done
to them: what reaches the sink is byte for byte what the server holds. Kept apart from the
socket so that hypothesis can drive it with any cut of the input.

Must not know: sockets, TLS or poplib (``transport``), which command a reply answers or in what
order replies come (``client``), accounts or storage.
"""

from __future__ import annotations

import array
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, Sequence, ValuesView
from typing import TypeVar

from pop3s_fetch.errors import ProtocolError

_T = TypeVar("_T")

#: Where decoded body data goes: a file's ``write``, a list's ``append``...
Sink = Callable[[bytes], None]

#: Status lines are at most 512 octets (RFC 2449 section 4); we allow slack for chatty servers.
MAX_STATUS_LINE = 8 * 1024
#: Received body data is decoded and handed to the sink in pieces of about this size.
EMIT_SIZE = 256 * 1024
#: A body line longer than this is passed to the sink in pieces rather than buffered whole.
MAX_BUFFERED_LINE = 1024 * 1024
#: The most messages a listing may name. Beyond it a server is broken or hostile: a UIDL
#: listing is held in memory, and 5,000,000 entries took 2.3 GiB before this limit.
MAX_MESSAGES = 500_000
#: The largest message size a LIST line may state (1 TiB): anything larger is garbage, and
#: would overflow the state store's integers.
MAX_MESSAGE_OCTETS = 1 << 40
#: The longest CAPA reply read (RFC 2449 capabilities are a few lines): before TLS anyone on
#: the path writes it, so it must not grow without bound.
MAX_CAPA_OCTETS = 64 * 1024
#: Per listed message, the most bytes its UIDL or LIST line may take (a 70-character UIDL,
#: a 7-digit number, a space, a CRLF): MAX_MESSAGES of them bound a listing's reply.
MAX_LISTING_LINE = 82


def take_line(buf: bytearray, start: int = 0) -> bytes | None:
    """Remove the first line from ``buf`` and return it without its line end (CRLF, or a lone
    LF from a lax server); None while ``buf`` holds no whole line.

    ``start``: where to look for the LF (the bytes before it were looked at already), so a
    line arriving in many pieces is scanned once.

    Raises:
        ProtocolError: the line is (or has grown) longer than MAX_STATUS_LINE.
    """
    end = buf.find(b"\n", start)
    if end < 0:
        if len(buf) > MAX_STATUS_LINE:
            raise _line_too_long()
        return None
    if end > MAX_STATUS_LINE:
        raise _line_too_long()
    line = bytes(buf[:end])
    del buf[: end + 1]
    return line[:-1] if line.endswith(b"\r") else line


def _line_too_long() -> ProtocolError:
    return ProtocolError(
        f"the server sent a reply line longer than {MAX_STATUS_LINE} bytes",
        hint="this is a server fault; report it to the server's administrator",
    )


class BodyDecoder:
    """Decodes one dot-terminated body, fed from a receive buffer as bytes arrive.

    Work is done per ``emit_size`` of data, not per TLS record, and new bytes are scanned
    once, for CRLF + ".": each hit is either a stuffing dot or the terminator, so un-stuffing
    costs no pass of its own and the cost per byte stays in C.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        emit_size: int = EMIT_SIZE,
        max_line: int = MAX_BUFFERED_LINE,
        limit: int | None = None,
    ) -> None:
        self._sink = sink
        self._emit_size = emit_size
        self._max_line = max_line
        #: More message octets than this end the read with :class:`BodyTooLong`.
        self._limit = limit
        self._at_line_start = True  # does the buffer begin at the start of a line?
        self._head_checked = False  # has that line's first byte been looked at?
        self._dots: list[int] = []  # offsets in the buffer of stuffing dots to drop, ascending
        self._scan_from = 0  # every CRLF + "." starting before this offset is decided
        #: Bytes passed to the sink so far.
        self.written = 0
        #: The message's octets as RFC 1939's LIST counts them: CRLF line ends, no stuffing.
        self.octets = 0

    def feed(self, buf: bytearray) -> bool:
        """Consume what can be decided of ``buf``; True once the terminator was consumed.

        Whatever follows the terminator (the next reply) is left in ``buf``. On False, append
        more received bytes to ``buf`` (unchanged otherwise) and call again.
        """
        if self._at_line_start and not self._head_checked:
            if len(buf) < 3 and b".\r\n".startswith(buf):
                return False  # too little to tell the terminator from a line starting "."
            if buf.startswith(b".\r\n"):
                del buf[:3]
                return True
            if buf.startswith(b"."):
                self._dots.append(0)
            self._head_checked = True
        dots = self._dots
        hit = buf.find(b"\r\n.", self._scan_from)
        while hit >= 0 and hit + 5 <= len(buf):
            if buf.startswith(b"\r\n", hit + 3):  # CRLF . CRLF: the terminator
                self._pass_on(buf, hit + 2, dots)
                del buf[: hit + 5]
                return True
            dots.append(hit + 2)
            hit = buf.find(b"\r\n.", hit + 3)
        # No hit, or one too near the end to decide: look there again after the next read.
        scan_from = hit if hit >= 0 else max(0, len(buf) - 2)
        if len(buf) >= self._emit_size:
            cut = buf.rfind(b"\r\n")
            if cut >= 0:
                # Keep what follows the last line end: it may be the start of the terminator.
                size = cut + 2
                self._at_line_start, self._head_checked = True, False
            elif len(buf) > self._max_line:
                # One huge line: pass its head on, keeping a trailing CR to pair with its LF.
                size = len(buf) - (1 if buf.endswith(b"\r") else 0)
                self._at_line_start, self._head_checked = False, True
            else:
                size = 0
            if size:
                self._pass_on(buf, size, dots)
                del buf[:size]
                # A dot at the new start is found again by the line-start check.
                self._dots = [d - size for d in dots if d > size]
                scan_from = max(0, scan_from - size)
        self._scan_from = scan_from
        return False

    def _pass_on(self, buf: bytearray, size: int, dots: list[int]) -> None:
        octets = size - sum(1 for dot in dots if dot < size)
        if self._limit is not None and self.octets + octets > self._limit:
            raise BodyTooLong(self._limit)
        self.octets += octets
        self.written += _emit(self._sink, buf, size, dots)


class BodyTooLong(ProtocolError):
    """A multi-line reply ran past the most octets it may have; the read was stopped."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the server sent a reply longer than {limit} bytes")
        self.limit = limit


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


def text_lines(body: Iterable[bytes]) -> list[str]:
    """A decoded text body (CAPA, UIDL, LIST) as lines; bad UTF-8 is replaced, not fatal.

    Split at LF only (the decoder turned each CRLF into one): ``str.splitlines`` would also cut
    at a bare CR, a form feed or U+2028 inside a line, letting a server forge extra lines.
    """
    text = b"".join(body).decode("utf-8", "replace")
    if not text:
        return []
    return text.removesuffix("\n").split("\n")


def parse_status(line: str) -> tuple[bool, str]:
    """A status line as (ok, the text after +OK/-ERR).

    Raises:
        ProtocolError: neither +OK nor -ERR.
    """
    if line.startswith("+OK"):
        return True, line[3:].strip()
    if line.startswith("-ERR"):
        return False, line[4:].strip()
    raise ProtocolError(f"unexpected reply from the server: {line[:200]!r}")


def parse_capabilities(lines: Iterable[str]) -> dict[str, list[str]]:
    """CAPA's lines (RFC 2449) as name (upper case) -> arguments; blank lines are skipped."""
    capabilities: dict[str, list[str]] = {}
    for line in lines:
        if line.strip():
            name, *args = line.split()
            capabilities[name.upper()] = args
    return capabilities


def parse_pairs(lines: list[str], verb: str) -> dict[int, str]:
    """``<number> <value>`` lines to a dict; in bulk, as idle runs list tens of thousands.

    Message numbers must be 1 to :data:`MAX_MESSAGES`, each named once: were a number
    repeated, one message would be recorded under another's UIDL.

    Raises:
        ProtocolError: a malformed line or a repeated number, named (``verb`` says which
            reply it came in).
    """
    if not lines:
        return {}
    if len(lines) > MAX_MESSAGES:
        raise _too_many(verb)
    tokens = " ".join(lines).split()
    numbers, values = tokens[0::2], tokens[1::2]
    digits = "".join(numbers)
    if len(tokens) == 2 * len(lines) and digits.isascii() and digits.isdigit():
        pairs = dict(zip(map(int, numbers), values, strict=True))
        if len(pairs) == len(lines) and 0 not in pairs and max(pairs) <= MAX_MESSAGES:
            return pairs
    seen: set[int] = set()
    for line in lines:  # something is wrong: find the line to name it
        parts = line.split()
        if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()):
            raise ProtocolError(f"malformed {verb} line from the server: {line[:200]!r}")
        number = int(parts[0])
        if not 1 <= number <= MAX_MESSAGES:
            raise ProtocolError(f"{verb} from the server names message {parts[0][:20]}")
        if number in seen:
            raise ProtocolError(
                f"the server's {verb} reply names message {number} twice",
                hint="this is a server fault; nothing was downloaded or deleted",
            )
        seen.add(number)
    raise AssertionError("unreachable: the bulk parse failed on well-formed lines")


def parse_sizes(lines: list[str], verb: str = "LIST") -> dict[int, int]:
    """LIST's ``<number> <octets>`` lines to a dict, each size a whole number in range.

    Raises:
        ProtocolError: as :func:`parse_pairs`, or a size that is not a number or too large.
    """
    pairs = parse_pairs(lines, verb)
    if not pairs:
        return {}
    joined = "".join(pairs.values())
    if joined.isascii() and joined.isdigit():
        sizes = {number: int(size) for number, size in pairs.items()}
        if max(sizes.values()) <= MAX_MESSAGE_OCTETS:
            return sizes
    for number, size in pairs.items():
        if not (size.isascii() and size.isdigit()) or int(size) > MAX_MESSAGE_OCTETS:
            raise ProtocolError(
                f"malformed {verb} line from the server: {f'{number} {size}'[:200]!r}"
            )
    raise AssertionError("unreachable: the bulk parse failed on well-formed sizes")


class Numbered(Mapping[int, _T]):
    """Message number -> value for a listing numbered 1 to N in order, as servers list a
    maildrop before any DELE: one reference (or, for sizes, 8 bytes) per message, where a
    dict with an int object per key took ~8 MiB more at 100,000 messages.

    ``items()``, ``values()`` and iteration run in C, as a dict's would.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Sequence[_T]) -> None:
        self._values = values

    def __getitem__(self, number: int) -> _T:
        if type(number) is not int or not 1 <= number <= len(self._values):
            raise KeyError(number)
        return self._values[number - 1]

    def __contains__(self, number: object) -> bool:
        return type(number) is int and 1 <= number <= len(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[int]:
        return iter(range(1, len(self._values) + 1))

    def items(self) -> ItemsView[int, _T]:
        return _NumberedItems(self)

    def values(self) -> ValuesView[_T]:
        return _NumberedValues(self)

    def pick(self, numbers: Sequence[int]) -> list[_T]:
        """The values of ``numbers``, each of which must be listed (see :meth:`covers`)."""
        return list(map(self._values.__getitem__, map((-1).__add__, numbers)))

    def covers(self, numbers: Sequence[int]) -> bool:
        """Whether every one of ``numbers`` (ascending) is listed."""
        return not numbers or (numbers[0] >= 1 and numbers[-1] <= len(self._values))


class _NumberedItems(ItemsView[int, _T]):
    _mapping: Numbered[_T]

    def __iter__(self) -> Iterator[tuple[int, _T]]:
        values = self._mapping._values
        return zip(range(1, len(values) + 1), values, strict=True)


class _NumberedValues(ValuesView[_T]):
    _mapping: Numbered[_T]

    def __iter__(self) -> Iterator[_T]:
        return iter(self._mapping._values)


def parse_listing(body: bytes, verb: str) -> Mapping[int, str]:
    """A whole UIDL (or LIST) reply's decoded bytes as :func:`parse_pairs` parses its lines.

    The usual reply (numbers 1 to N in order) becomes a :class:`Numbered` with no object
    per line but its value, and no dict; anything else is left to :func:`parse_pairs`, so
    what is accepted and refused, and every message, stays the same.
    """
    values = _numbered_values(body)
    if values is None:
        return parse_pairs(text_lines([body]), verb)
    return Numbered(values)


def parse_listing_sizes(body: bytes, verb: str = "LIST") -> Mapping[int, int]:
    """A whole LIST reply's decoded bytes as :func:`parse_sizes` parses its lines; sizes of
    a listing numbered 1 to N are kept as machine integers (8 bytes each)."""
    values = _numbered_values(body)
    if values is not None:
        joined = "".join(values)
        if joined.isascii() and joined.isdigit() and max(map(len, values)) <= _OCTET_DIGITS:
            sizes = array.array("q", map(int, values))
            if max(sizes) <= MAX_MESSAGE_OCTETS:
                return Numbered(sizes)
    return parse_sizes(text_lines([body]), verb)


#: The most digits a size within MAX_MESSAGE_OCTETS has (so it fits a machine integer).
_OCTET_DIGITS = len(str(MAX_MESSAGE_OCTETS))
#: Message numbers are compared against 1..N this many at a time (a bounded temporary).
_NUMBER_CHUNK = 4096


def _numbered_values(body: bytes) -> list[str] | None:
    """The second words of ``body``'s lines if it is ``1 x`` ... ``N y`` with N in range, every
    line two words; None for anything else (an empty body included)."""
    text = body.decode("utf-8", "replace")
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if not text or lines > MAX_MESSAGES:
        return None
    words = text.split()
    del text
    if len(words) != 2 * lines:
        return None
    for start in range(0, lines, _NUMBER_CHUNK):
        end = min(start + _NUMBER_CHUNK, lines)
        if words[2 * start : 2 * end : 2] != list(map(str, range(start + 1, end + 1))):
            return None
    return words[1::2]


def _too_many(verb: str) -> ProtocolError:
    return ProtocolError(
        f"the server's {verb} reply names more than {MAX_MESSAGES:,} messages",
        hint="pop3s-fetch reads at most that many; nothing was downloaded or deleted",
    )


def encode_commands(commands: Iterable[str]) -> bytes:
    """Command lines as one write: each ends in CRLF."""
    return "".join(command + "\r\n" for command in commands).encode()


def mask_password(command: str) -> str:
    """A command as it may be logged: a PASS line's argument hidden, anything else as is."""
    return "PASS ****" if command.upper().startswith("PASS ") else command


def mask_secret(command: str) -> str:
    """A line carrying a secret as it may be logged: only the verb (and for AUTH or APOP the
    next word) kept. SASL answers carry no verb, so they are all ``****``."""
    words = command.split(" ")
    keep = 2 if words[0].upper() in ("AUTH", "APOP") else 0
    return " ".join([*words[:keep], "****"])
