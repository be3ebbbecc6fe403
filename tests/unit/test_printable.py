"""Remote text reaches the terminal with its control characters escaped (issue 11, item 12).

These check the function and each output boundary it guards; the end-to-end cases (a hostile
greeting, ``-ERR`` text, CAPA line or certificate subject) are in the hostile-server tests.
"""

from __future__ import annotations

import logging
import sys

import pytest

from pop3s_fetch.errors import ProtocolError
from pop3s_fetch.printable import printable
from pop3s_fetch.ui import Output, PrintableLogFormatter, error_line, write_traceback

HOSTILE = "ok\x1b[2J\x1b]0;owned\x07\r+OK forged\u202eevil\x9b31m\x7f"
ESCAPED = "ok\\x1b[2J\\x1b]0;owned\\x07\\x0d+OK forged\\u202eevil\\u009b31m\\x7f"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (HOSTILE, ESCAPED),
        ("a\nb\tc", "a\\x0ab\\x09c"),
        ("plain ASCII, ünïcode and 漢字 stay", "plain ASCII, ünïcode and 漢字 stay"),
        ("\u2066isolate\u2069 \u200fmark", "\\u2066isolate\\u2069 \\u200fmark"),
        ("OSC 8 \x1b]8;;https://evil/\x1b\\link", "OSC 8 \\x1b]8;;https://evil/\\x1b\\link"),
    ],
)
def test_control_characters_are_shown_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_newlines_and_tabs_may_be_kept_but_never_a_carriage_return() -> None:
    assert printable("one\n\ttwo\r\x1b", newlines=True) == "one\n\ttwo\\x0d\\x1b"


def test_an_error_line_escapes_what_the_server_said() -> None:
    err = ProtocolError(f"the server refused RETR 1: {HOSTILE}", hint="report it")
    line = error_line("work", err)
    assert "\x1b" not in line
    assert "\r" not in line
    # An error is one line: its whitespace (the CR too) is folded to spaces first.
    folded = ESCAPED.replace("\\x0d", " ")
    assert line == f"error: work: the server refused RETR 1: {folded} (report it)"


def test_plain_output_lines_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    output = Output(progress=False, environ={})
    output.warning("work", HOSTILE)
    output.info(f"note {HOSTILE}")
    captured = capsys.readouterr()
    assert captured.err == f"warning: work: {ESCAPED}\n"
    assert captured.out == f"note {ESCAPED}\n"


def test_debug_log_lines_are_escaped() -> None:
    formatter = PrintableLogFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        "pop3s_fetch.pop3", logging.DEBUG, __file__, 1, "S: %s", (HOSTILE,), None
    )
    assert formatter.format(record) == f"DEBUG pop3s_fetch.pop3: S: {ESCAPED}"


def test_a_traceback_keeps_its_lines_and_escapes_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        raise ProtocolError(HOSTILE)
    except ProtocolError as err:
        write_traceback(err, sys.stderr)
    shown = capsys.readouterr().err
    assert shown.startswith("Traceback (most recent call last):\n")
    assert shown.endswith(f"ProtocolError: {ESCAPED}\n")
    assert "\x1b" not in shown
