"""RFC 2449 LOGIN-DELAY and EXPIRE as ``serverpolicy`` reads them: parsing, times, words."""

from __future__ import annotations

import time

import pytest

from pop3s_fetch import serverpolicy
from pop3s_fetch.serverpolicy import LoginDelay


@pytest.mark.parametrize(
    ("capabilities", "delay", "expire"),
    [
        ({}, None, None),
        ({"LOGIN-DELAY": ["900"], "EXPIRE": ["30"]}, 900, "30"),
        ({"LOGIN-DELAY": ["300", "USER"], "EXPIRE": ["NEVER"]}, 300, "NEVER"),
        ({"EXPIRE": ["never", "USER"]}, None, "NEVER"),
        ({"EXPIRE": ["007"]}, None, "7"),
        ({"LOGIN-DELAY": [], "EXPIRE": []}, None, None),
        ({"LOGIN-DELAY": ["soon"], "EXPIRE": ["-1"]}, None, None),  # never fatal
    ],
)
def test_capa_values(
    capabilities: dict[str, list[str]], delay: int | None, expire: str | None
) -> None:
    assert serverpolicy.login_delay(capabilities) == delay
    assert serverpolicy.expire(capabilities) == expire
    assert serverpolicy.announced(capabilities) is bool(capabilities)


@pytest.mark.parametrize(
    ("delay", "last", "refused", "due"),
    [
        (None, 100.0, None, 0.0),
        (0, 100.0, None, 0.0),
        (900, 100.0, None, 1000.0),
        (900, 100.0, 500.0, 1400.0),  # a later refusal counts from itself
        (900, 500.0, 100.0, 1400.0),
        (900, None, 200.0, 1100.0),
        (900, None, None, 0.0),
    ],
)
def test_next_login(
    delay: int | None, last: float | None, refused: float | None, due: float
) -> None:
    assert serverpolicy.next_login(delay, last, refused) == due


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (45, "45 s"),
        (90, "90 s"),
        (150, "2 min 30 s"),
        (900, "15 min"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
    ],
)
def test_describe(seconds: int, text: str) -> None:
    assert serverpolicy.describe(seconds) == text


def test_clock_time_names_the_day_only_when_it_is_another() -> None:
    now = time.mktime((2026, 12, 6, 12, 0, 0, 0, 0, -1))
    assert serverpolicy.clock_time(now + 3600, now) == "13:00"
    assert serverpolicy.clock_time(now + 86400, now) == "2026-12-07 12:00"


def test_a_note_without_a_known_delay_says_try_again() -> None:
    note = LoginDelay(None, None, refused="[LOGIN-DELAY] wait").note("work")
    assert note == (
        "work: skipped, the server refused the login for now ([LOGIN-DELAY] wait); try again later"
    )


@pytest.mark.parametrize("keep", [True, False])
def test_expire_never_or_absent_warns_nothing(keep: bool) -> None:
    for value in (None, "NEVER"):
        assert serverpolicy.expire_warning(value, keep=keep, delete_after=None) is None


def test_expire_1_day_is_singular_and_12h_fits_within_it() -> None:
    text = serverpolicy.expire_warning("1", keep=True, delete_after=12 * 3600.0)
    assert text == (
        "the server deletes messages on its own 1 day after they were downloaded (EXPIRE 1); "
        'keep = "12h" deletes them before that'
    )


def test_the_summary_table_shows_a_skip_and_a_servers_brackets_as_text() -> None:
    from rich.console import Console

    from pop3s_fetch.sync import AccountResult
    from pop3s_fetch.ui import summary_table

    console = Console(width=200, record=True, color_system=None)
    held = LoginDelay(900, time.time() + 600, refused="[LOGIN-DELAY] [bold]wait")
    console.print(summary_table([AccountResult("work", login_delay=held)]))
    assert "skipped: the server refused the login for now ([LOGIN-DELAY] [bold]wait)" in (
        console.export_text()
    )
