"""The daemon loop's schedule, back-off, stop and reload, on a fake clock: no time passes."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from pop3s_fetch.config import Account
from pop3s_fetch.daemon import (
    BACKOFF_CAP,
    Daemon,
    Job,
    Level,
    Wakeup,
    backoff_delay,
    describe,
    parse_interval,
    signals_handled,
)
from pop3s_fetch.errors import ConfigError, DeliveryError, Pop3sFetchError
from pop3s_fetch.serverpolicy import LoginDelay
from pop3s_fetch.sync import AccountResult


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("1", 1), ("30s", 30), ("5m", 300), ("5min", 300), ("1h", 3600), ("2d", 172800)],
)
def test_interval_syntax(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "the interval must be at least 1s; got '0'"),
        ("0s", "the interval must be at least 1s; got '0s'"),
        ("", "expected a whole number of seconds or a duration such as 30s, 5m, 1h; got ''"),
        ("1.5m", "expected a whole number"),
        ("-5", "expected a whole number"),
        ("5 m", "expected a whole number"),
        ("1h30m", "expected a whole number"),
        ("5x", "expected a whole number"),
    ],
)
def test_bad_intervals_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parse_interval(text)
    assert str(caught.value).startswith(message)


def test_describe_is_as_short_as_the_value_allows() -> None:
    assert [describe(s) for s in (1, 59, 60, 90, 600, 3600, 5400, 86400)] == [
        "1s", "59s", "1m", "90s", "10m", "1h", "90m", "1d"
    ]  # fmt: skip


def test_backoff_doubles_from_the_interval_up_to_an_hour() -> None:
    assert [backoff_delay(300, n) for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]
    assert backoff_delay(1, 1000) == BACKOFF_CAP  # no overflow after many failures
    assert backoff_delay(7200, 5) == 7200  # never more often than the interval


def _job(name: str) -> Job:
    account = Account(
        name=name, host="pop.example.com", username="u", destination=Path(f"/tmp/{name}")
    )
    return (account, lambda: "secret")


class World:
    """A fake clock and the sleep that advances it; records every round and every line."""

    def __init__(self, interval: float = 60, failing: Callable[[str, int], bool] | None = None):
        self.now = 1000.0
        self.rounds: list[tuple[float, list[str]]] = []
        self.lines: list[tuple[Level, str]] = []
        self.errors: list[Pop3sFetchError] = []
        self.failing = failing or (lambda name, round_number: False)
        self.on_round: Callable[[int], None] = lambda number: None
        self.on_sleep: Callable[[float], None] = lambda seconds: None
        self.sleeps: list[float] = []
        world = self

        class FakeWakeup(Wakeup):
            def sleep(self, seconds: float) -> None:
                world.sleeps.append(seconds)
                world.on_sleep(seconds)
                if not (self.stop_requested() or self.reload):
                    world.now += seconds

        self.wakeup = FakeWakeup()
        self.loaded: Sequence[Job] | Exception = ()
        self.daemon = Daemon(
            interval=interval,
            load=self.load,
            run_round=self.run_round,
            say=lambda level, text: self.lines.append((level, text)),
            report_error=self.errors.append,
            wakeup=self.wakeup,
            clock=lambda: self.now,
        )

    def load(self) -> Sequence[Job]:
        if isinstance(self.loaded, Exception):
            raise self.loaded
        return self.loaded

    def run_round(self, due: Sequence[Job]) -> list[AccountResult]:
        number = len(self.rounds)
        names = [job[0].name for job in due]
        self.rounds.append((self.now - 1000.0, names))
        results = []
        for name in names:
            result = AccountResult(name)
            if self.failing(name, number):
                result.error = DeliveryError("cannot write")
            results.append(result)
        self.on_round(number)
        return results

    def stop_after_rounds(self, count: int) -> None:
        def maybe(number: int) -> None:
            if number + 1 >= count:
                self.wakeup.request_stop(signal.SIGTERM)

        self.on_round = maybe

    def texts(self) -> list[str]:
        return [text for _, text in self.lines]


def test_a_failing_account_backs_off_while_the_others_keep_their_rounds() -> None:
    world = World(interval=60, failing=lambda name, _: name == "bad")
    world.stop_after_rounds(70)
    assert world.daemon.run([_job("good"), _job("bad")]) == 0
    assert all("good" in names for _, names in world.rounds)
    assert [t for t, _ in world.rounds] == [60.0 * n for n in range(70)]
    tried = [t for t, names in world.rounds if "bad" in names]
    assert tried == [0, 60, 180, 420, 900, 1860, 3780]  # +1m, 2m, 4m, ... then capped at 1h
    notes = [text for text in world.texts() if text.startswith("bad:")]
    assert notes == [
        "bad: next try in 1m (1 failure in a row)",
        "bad: next try in 2m (2 failures in a row)",
        "bad: next try in 4m (3 failures in a row)",
        "bad: next try in 8m (4 failures in a row)",
        "bad: next try in 16m (5 failures in a row)",
        "bad: next try in 32m (6 failures in a row)",
        "bad: next try in 1h (7 failures in a row)",
    ]
    assert world.texts()[-1] == "stopped by SIGTERM"


def test_a_success_resets_the_backoff() -> None:
    world = World(interval=10, failing=lambda name, number: number < 2)
    world.stop_after_rounds(6)
    world.daemon.run([_job("work")])
    assert [t for t, _ in world.rounds] == [0, 10, 30, 40, 50, 60]
    assert "work: working again after 2 failures" in world.texts()


def test_a_stop_during_a_round_ends_the_loop_after_it_without_sleeping() -> None:
    world = World()
    world.stop_after_rounds(1)
    assert world.daemon.run([_job("work")]) == 0
    assert len(world.rounds) == 1
    assert world.sleeps == []


def test_a_stop_while_sleeping_ends_the_loop_at_once() -> None:
    world = World()
    world.on_sleep = lambda seconds: world.wakeup.request_stop(signal.SIGINT)
    assert world.daemon.run([_job("work")]) == 0
    assert len(world.rounds) == 1
    assert world.now == 1000.0  # the sleep was cut short
    assert world.texts()[-1] == "stopped by SIGINT"


def test_a_reload_takes_effect_at_the_next_round_which_keeps_its_time() -> None:
    world = World(interval=60)
    world.loaded = [_job("work"), _job("home")]
    reloads = iter([True])

    def hup(seconds: float) -> None:
        if next(reloads, False):
            world.now += 20  # the signal comes a third of the way into the sleep
            world.wakeup.request_reload()

    world.on_sleep = hup
    world.stop_after_rounds(2)
    world.daemon.run([_job("work")])
    assert world.rounds == [(0, ["work"]), (60, ["work", "home"])]
    assert "configuration re-read; accounts: work, home" in world.texts()


def test_a_broken_config_on_reload_keeps_the_old_one_in_one_line() -> None:
    world = World(interval=60)
    world.loaded = ConfigError("config.toml: 2 problems in the configuration", problems=["a", "b"])
    hups = iter([True])
    world.on_sleep = lambda seconds: world.wakeup.request_reload() if next(hups, False) else None
    world.stop_after_rounds(2)
    world.daemon.run([_job("work")])
    assert world.rounds == [(0, ["work"]), (60, ["work"])]
    (error,) = world.errors
    assert isinstance(error, ConfigError)
    assert (error.message, error.problems) == ("config.toml: 2 problems in the configuration", [])
    assert error.hint == (
        "still using the configuration read before; pop3s-fetch config check lists every problem"
    )


@pytest.mark.parametrize(("interval", "warned"), [(1, True), (59, True), (60, False)])
def test_intervals_under_a_minute_are_warned_about(interval: float, warned: bool) -> None:
    world = World(interval=interval)
    world.stop_after_rounds(1)
    world.daemon.run([_job("work")])
    warnings = [text for level, text in world.lines if level == "warning"]
    assert bool(warnings) == warned
    if warned:
        assert warnings[0].startswith(f"warning: syncing every {interval}s: servers may refuse")


def test_real_signals_set_the_flags_and_cut_the_sleep_short() -> None:
    wakeup = Wakeup()
    announced: list[str] = []
    try:
        with signals_handled(wakeup, announced.append):
            os.kill(os.getpid(), signal.SIGHUP)
            assert wakeup.reload
            assert not wakeup.stop_requested()
            wakeup.reload = False
            # From another thread, as a signal comes while the main thread waits.
            threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM)).start()
            wakeup.sleep(3600)
            assert wakeup.stop_signal == signal.SIGTERM
            assert announced == [
                "SIGTERM: stopping after the current message (send it again to stop at once)"
            ]
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # asked twice: at once
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        wakeup.close()


def test_an_account_held_back_by_login_delay_is_no_failure_and_keeps_its_rounds() -> None:
    """sync reports a LOGIN-DELAY skip as a note (no error): the loop must not back off."""
    world = World(interval=60)
    held = LoginDelay(900, 1900.0)

    def run_round(due: Sequence[Job]) -> list[AccountResult]:
        world.rounds.append((world.now - 1000.0, [job[0].name for job in due]))
        world.on_round(len(world.rounds) - 1)
        return [AccountResult(job[0].name, login_delay=held) for job in due]

    world.daemon.run_round = run_round
    world.stop_after_rounds(4)
    assert world.daemon.run([_job("work")]) == 0
    assert [t for t, _ in world.rounds] == [0, 60, 120, 180]
    assert not [text for text in world.texts() if "next try" in text or "failure" in text]
