"""Text from a server, a certificate or a helper program made safe to print on a terminal.

A greeting, an ``-ERR`` text, a CAPA line, a UIDL or a self-signed certificate's subject is
written by whoever runs the server, or by anyone on the path before TLS. Printed raw, an ESC
sequence in it can clear the screen, retitle the window (OSC 0), plant a link (OSC 8), or a CR
can overwrite a line of ours with a forged one. Every line the program prints passes through
:func:`printable` at the output boundary (``ui``, the CLI's echo, the log formatter), so no
module that handles remote text has to remember to.

Must not know: where the text came from, or how it is printed.
"""

from __future__ import annotations

# Right-to-left and isolate controls reorder what follows them on screen (the "Trojan Source"
# trick): shown escaped, they can no longer make one name look like another.
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _escapes() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in range(0x20)}  # C0, with ESC, CR, BEL, LF, TAB
    table[0x7F] = "\\x7f"
    table.update({code: f"\\u{code:04x}" for code in range(0x80, 0xA0)})  # C1, with CSI (0x9b)
    table.update({ord(char): f"\\u{ord(char):04x}" for char in _BIDI_CONTROLS})
    return table


_ONE_LINE = _escapes()
_MANY_LINES = {code: escape for code, escape in _ONE_LINE.items() if chr(code) not in "\n\t"}


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``).

    With ``newlines`` line feeds and tabs are kept (a traceback, a unit file); a CR never is.
    """
    return text.translate(_MANY_LINES if newlines else _ONE_LINE)
