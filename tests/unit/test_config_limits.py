"""Retention and limits in the configuration (issue 12): keep durations, sizes, counts.

Each accepted spelling maps to the documented number, and each near miss gets one line naming
the key with a "did you mean" where the intent is clear.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pop3s_fetch import config
from pop3s_fetch.errors import ConfigError

BASE = '[accounts.work]\nhost = "pop.example.com"\nusername = "me"\ndestination = "/m"\n'


def account(extra: str) -> config.Account:
    return config.parse(BASE + extra, Path("/c/config.toml")).accounts["work"]


def problem(extra: str) -> str:
    with pytest.raises(ConfigError) as excinfo:
        config.parse(BASE + extra, Path("/c/config.toml"))
    (line,) = excinfo.value.problems
    return line.removeprefix("/c/config.toml: ")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [('"45s"', 45), ('"90m"', 5400), ('"12h"', 43200), ('"30d"', 2592000), ('"2w"', 1209600)],
)
def test_keep_duration_keeps_then_deletes_after(value: str, seconds: int) -> None:
    parsed = account(f"keep = {value}\n")
    assert (parsed.keep, parsed.delete_after) == (True, float(seconds))


def test_keep_booleans_have_no_duration() -> None:
    assert (account("keep = false\n").keep, account("keep = false\n").delete_after) == (False, None)
    assert (account("").keep, account("").delete_after) == (True, None)


def test_keep_duration_is_inherited_from_defaults() -> None:
    text = '[defaults]\nkeep = "2w"\n' + BASE
    parsed = config.parse(text, Path("/c/config.toml")).accounts["work"]
    assert parsed.delete_after == 14 * 86400.0


EXPECTED_KEEP = 'expected true, false or a duration such as "30d", "12h" or "2w"'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'keep = "30 days"',
            'expected a duration such as "30d", got "30 days" (did you mean "30d", 30 days?)',
        ),
        (
            'keep = "30D"',
            'expected a duration such as "30d", got "30D" (did you mean "30d", 30 days?)',
        ),
        (
            'keep = "30M"',
            'expected a duration such as "30d", got "30M" (did you mean "30m", 30 minutes?)',
        ),
        ('keep = "1month"', 'months and years are not units here (did you mean "30d"?)'),
        ('keep = "1y"', 'months and years are not units here (did you mean "365d"?)'),
        ("keep = 30", f'{EXPECTED_KEEP}, got 30 (did you mean "30d"?)'),
        ('keep = "no"', f'{EXPECTED_KEEP}, got "no" (did you mean false?)'),
        ('keep = "1.5d"', f'{EXPECTED_KEEP} (a whole number and s, m, h, d or w), got "1.5d"'),
        ('keep = "soon"', f'{EXPECTED_KEEP}, got "soon"'),
        ('keep = "0d"', "a duration of 0 would delete at once (did you mean keep = false?)"),
        ('keep = "6000w"', 'a duration over 100 years is surely a mistake, got "6000w"'),
    ],
)
def test_keep_mistakes(line: str, message: str) -> None:
    assert problem(line + "\n") == f"accounts.work.keep: {message}"


@pytest.mark.parametrize(
    ("value", "octets"),
    [
        ("1000", 1000),
        ('"512"', 512),
        ('"512B"', 512),
        ('"25MB"', 25_000_000),
        ('"25 mb"', 25_000_000),
        ('"1.5GB"', 1_500_000_000),
        ('"64kB"', 64_000),
        ('"64KiB"', 65_536),
        ('"20MiB"', 20 * 1024 * 1024),
        ('"1gib"', 1024**3),
    ],
)
def test_sizes(value: str, octets: int) -> None:
    parsed = account(f"max_message_size = {value}\nmax_bytes = {value}\n")
    assert (parsed.max_message_size, parsed.max_bytes) == (octets, octets)


EXPECTED_SIZE = 'expected a size such as "25MB" (25,000,000 bytes), "20MiB" or a number of bytes'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"25M"', f'{EXPECTED_SIZE}, got "25M" (did you mean "25MB"?)'),
        ('"25Mi"', f'{EXPECTED_SIZE}, got "25Mi" (did you mean "25MiB"?)'),
        ('"25mbs"', f'{EXPECTED_SIZE}, got "25mbs" (did you mean "25MB"?)'),
        ('"25 megs"', f'{EXPECTED_SIZE}, got "25 megs"'),
        ("0", f"{EXPECTED_SIZE}, got 0"),
        ("-5", f"{EXPECTED_SIZE}, got -5"),
        ("true", f"{EXPECTED_SIZE}, got true"),
        ('"0.0001B"', 'expected a size of at least 1 byte, got "0.0001B"'),
    ],
)
def test_size_mistakes(value: str, message: str) -> None:
    assert problem(f"max_message_size = {value}\n") == f"accounts.work.max_message_size: {message}"


def test_oversize_and_counts() -> None:
    parsed = account('max_message_size = "1MB"\noversize = "delete"\nmax_messages = 3\n')
    assert (parsed.oversize, parsed.max_messages) == ("delete", 3)
    assert account("").oversize == "skip"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('oversize = "drop"', 'oversize: expected "skip" or "delete", got "drop"'),
        ("max_messages = 0", "max_messages: expected a whole number of at least 1, got 0"),
        (
            'max_messages = "10"',
            'max_messages: expected a whole number of at least 1, got "10" '
            "(did you mean 10, without quotes?)",
        ),
        ('max_messages = "0"', 'max_messages: expected a whole number of at least 1, got "0"'),
        ('max_messages = "-3"', 'max_messages: expected a whole number of at least 1, got "-3"'),
        ("max_messages = 2.5", "max_messages: expected a whole number of at least 1, got 2.5"),
        ("max_size = 5", 'max_size: unknown key (did you mean "max_message_size"?)'),
        ("limit = 5", "limit: unknown key (did you mean max_message_size?)"),
        ("delete_after = 30", 'delete_after: unknown key (did you mean keep = "30d"?)'),
        (
            "max_messages_per_session = 9",
            "max_messages_per_session: unknown key (did you mean max_messages?)",
        ),
    ],
)
def test_limit_mistakes(line: str, message: str) -> None:
    assert problem(f'max_message_size = "1MB"\n{line}\n') == f"accounts.work.{message}"


def test_oversize_needs_a_size() -> None:
    assert problem('oversize = "delete"\n') == (
        "accounts.work.oversize: has no effect without max_message_size "
        '(such as max_message_size = "25MB")'
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(2592000.0, "30d"), (1209600.0, "2w"), (5400.0, "90m"), (45.0, "45s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert config.format_duration(seconds) == text
