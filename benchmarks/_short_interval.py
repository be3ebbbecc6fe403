"""pop3s-fetch's CLI with ``--every`` taking fractions of a second, for ``benchmarks.run``.

``python -m benchmarks._short_interval sync --every 0.05s ...``: the benchmark's memory check
over 1,000 daemon polls (``--interval``) would take 17 minutes at the 1 s that the CLI accepts
at least. Only the parsing of ``--every`` is replaced; the loop, and everything a poll does,
is the program's. A measuring tool, never imported by the program.
"""

from __future__ import annotations

from pop3s_fetch import cli, daemon


def _seconds(text: str) -> float:
    """``"0.05s"`` or ``"0.05"`` -> 0.05: any non-negative number of seconds."""
    seconds = float(text.strip().lower().removesuffix("s"))
    if seconds < 0:
        raise ValueError(f"a negative interval: {text!r}")
    return seconds


daemon.parse_interval = _seconds  # the CLI looks it up when --every is parsed

if __name__ == "__main__":
    cli.main()
