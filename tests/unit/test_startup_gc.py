"""The cyclic collector is paused while a sync starts up, then what start-up made is frozen.

Start-up allocates tens of thousands of objects and frees almost none; a collection pass
over them finds nothing. These tests count passes with ``gc.callbacks``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from pop3s_fetch import cli


@pytest.fixture
def passes() -> Iterator[list[int]]:
    """The generation of every collection pass that starts while the test runs."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)


def _allocate() -> list[list[object]]:
    """Many container objects that stay alive, as imports make them (well over gc's 700)."""
    return [[object()] for _ in range(20_000)]


def test_no_pass_runs_while_paused_and_the_survivors_are_frozen(passes: list[int]) -> None:
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    with cli._collector_paused():
        kept = _allocate()
        assert not gc.isenabled()
    assert passes == []
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(kept)
    gc.unfreeze()


def test_without_the_pause_the_same_work_runs_passes(passes: list[int]) -> None:
    # What the test above shows is the pause's doing, not a quiet collector.
    kept = _allocate()
    assert len(kept) == 20_000
    assert passes != []


def test_an_error_inside_leaves_the_collector_as_it_was() -> None:
    with pytest.raises(RuntimeError), cli._collector_paused():
        raise RuntimeError("a configuration error on the way, say")
    assert gc.isenabled()
    gc.disable()
    try:
        with cli._collector_paused():
            pass
        assert not gc.isenabled()  # not switched on behind the back of whoever turned it off
    finally:
        gc.enable()
        gc.unfreeze()


def test_sync_starts_up_with_the_collector_paused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    entered: list[bool] = []
    paused = cli._collector_paused

    def spy() -> AbstractContextManager[None]:
        entered.append(True)
        return paused()

    monkeypatch.setattr(cli, "_collector_paused", spy)
    empty = tmp_path / "config.toml"
    empty.write_text("")
    monkeypatch.setenv("POP3S_FETCH_CONFIG", str(empty))
    monkeypatch.setattr("sys.argv", ["pop3s-fetch", "sync"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 78  # no accounts: raised inside the paused start-up
    assert entered == [True]
    assert gc.isenabled()
    gc.unfreeze()
