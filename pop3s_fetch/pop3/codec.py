"""POP3's byte-level rules, as pure functions over buffers: no sockets, no poplib, no TLS.

Multi-line bodies are decoded with bulk ``bytes`` operations on whole buffers (find the
terminator, un-stuff leading dots, CRLF -> LF), never per line in Python, and nothing else is done
to them: what reaches the sink is byte for byte what the server holds. Kept apart from the
socket so that hypothesis can drive it with any cut of the input.

Must not know: sockets, TLS or poplib (``transport``), which command a reply answers or in what
order replies come (``client``), accounts or storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pop3s_fetch.errors import ProtocolError

#: Where decoded body data goes: a file's ``write``, a list's ``append``...
Sink = Callable[[bytes], None]

#: Status lines are at most 512 octets (RFC 2449 section 4); we allow slack for chatty servers.
MAX_STATUS_LINE = 8 * 1024
#: Received body data is decoded and handed to the sink in pieces of about this size.
EMIT_SIZE = 256 * 1024
#: A body line longer than this is passed to the sink in pieces rather than buffered whole.
MAX_BUFFERED_LINE = 1024 * 1024


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
        self, sink: Sink, *, emit_size: int = EMIT_SIZE, max_line: int = MAX_BUFFERED_LINE
    ) -> None:
        self._sink = sink
        self._emit_size = emit_size
        self._max_line = max_line
        self._at_line_start = True  # does the buffer begin at the start of a line?
        self._head_checked = False  # has that line's first byte been looked at?
        self._dots: list[int] = []  # offsets in the buffer of stuffing dots to drop, ascending
        self._scan_from = 0  # every CRLF + "." starting before this offset is decided
        #: Bytes passed to the sink so far.
        self.written = 0

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
                self.written += _emit(self._sink, buf, hit + 2, dots)
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
                self.written += _emit(self._sink, buf, size, dots)
                del buf[:size]
                # A dot at the new start is found again by the line-start check.
                self._dots = [d - size for d in dots if d > size]
                scan_from = max(0, scan_from - size)
        self._scan_from = scan_from
        return False


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
    """A decoded text body (CAPA, UIDL, LIST) as lines; bad UTF-8 is replaced, not fatal."""
    return b"".join(body).decode("utf-8", "replace").splitlines()


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
    """CAPA's lines (RFC 2449) as name (upper case) -> arguments."""
    capabilities: dict[str, list[str]] = {}
    for line in lines:
        name, *args = line.split()
        capabilities[name.upper()] = args
    return capabilities


def parse_pairs(lines: list[str], verb: str) -> dict[int, str]:
    """``<number> <value>`` lines to a dict; in bulk, as idle runs list tens of thousands.

    Raises:
        ProtocolError: a malformed line, named (``verb`` says which reply it came in).
    """
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
