"""Trace header lines (add_headers) and the capped runner the hook and the filter share.

The runner is given real programs: one that reads its stdin, one that stops reading early
(the filter that decides on the first line), one that never reads a stdin larger than a pipe
holds, one past its deadline. None may hang, and none may turn into an exception of ours.
"""

from __future__ import annotations

import datetime
import email.utils
import subprocess
import sys
import time

import pytest

from pop3s_fetch.programs import STDERR_CAP, run_capped
from pop3s_fetch.trace import trace_lines

WHEN = 1_790_000_000.0


def test_trace_lines_in_order_and_rfc5322_dated() -> None:
    lines = trace_lines(
        ["received", "delivered-to", "x-original-to"],
        server="pop.example.com",
        user="alice@example.com",
        program="pop3s-fetch 1.0",
        tls="TLSv1.3",
        when=WHEN,
        local_host="laptop",
    )
    stamp = email.utils.format_datetime(datetime.datetime.fromtimestamp(WHEN).astimezone())
    assert email.utils.parsedate_to_datetime(stamp).timestamp() == WHEN
    assert lines == (
        b"Received: from pop.example.com\n\tby laptop with POP3S (pop3s-fetch 1.0; TLSv1.3)\n"
        b"\tfor <alice@example.com>;\n\t" + stamp.encode() + b"\n"
        b"Delivered-To: alice@example.com\nX-Original-To: alice@example.com\n"
    )


def test_trace_lines_leave_out_what_a_header_cannot_carry() -> None:
    lines = trace_lines(
        ["received", "delivered-to"],
        server="pop.example.com",
        user="alice",  # not an address: no "for" clause
        program="pop3s-fetch (1.0)\\",
        tls="",
        when=WHEN,
        local_host="bad host\nX-Injected: yes",
    )
    head = lines.decode()
    assert "X-Injected" not in head
    assert " by " not in head
    assert "for <" not in head
    assert "(pop3s-fetch 1.0)" in head
    assert head.endswith("Delivered-To: alice\n")
    assert trace_lines([], server="s", user="u", program="p", tls="t", when=WHEN) == b""


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_capped_feeds_stdin_and_keeps_the_start_of_stderr() -> None:
    code = (
        "import sys; d = sys.stdin.buffer.read(); sys.stderr.write('x' * 10000); "
        "sys.exit(len(d) % 256)"
    )
    status, stderr = run_capped(python(code), {}, 30, stdin=b"a" * 1000)
    assert status == 1000 % 256
    assert stderr == b"x" * STDERR_CAP


@pytest.mark.parametrize("size", [10, 4 * 1024 * 1024])
def test_a_program_that_never_reads_its_stdin_does_not_hang_us(size: int) -> None:
    status, _ = run_capped(python("import sys; sys.exit(1)"), {}, 30, stdin=b"h" * size)
    assert status == 1


def test_run_capped_kills_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_capped(["sh", "-c", "sleep 60"], {"PATH": "/usr/bin:/bin"}, 0.5, stdin=b"x\n")
    assert time.monotonic() - started < 20


def test_run_capped_without_stdin_gives_dev_null() -> None:
    code = "import sys; sys.exit(7 if sys.stdin.read() == '' else 0)"
    assert run_capped(python(code), {}, 30) == (7, b"")
