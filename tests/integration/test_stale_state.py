"""State of accounts no longer configured (issue 14, item 16): doctor lists it, prune removes it."""

from __future__ import annotations

from pathlib import Path

from pop3s_fetch import doctor
from pop3s_fetch.state import open_store
from tests.support.cli import Cli, account_toml


def leave_state(cli: Cli, *accounts: str) -> None:
    for account in accounts:
        open_store(cli.state_dir / f"{account}.sqlite3").close()


def configure(cli: Cli) -> None:
    cli.write_config(
        account_toml(
            "work", host="127.0.0.1", port=995, username="u", destination=cli.home / "Mail"
        )
    )


def test_doctor_lists_the_state_of_accounts_no_longer_configured(cli: Cli) -> None:
    configure(cli)
    leave_state(cli, "work", "bench", "x2")
    checks = doctor.run_checks(cli.config_path, cli.env, ["work"], timeout=0.1)
    stale = next(check for check in checks if check.name == doctor.STALE_STATE)
    assert (stale.status, stale.detail) == (
        "warn",
        "state of 2 account(s) no longer in the configuration: bench, x2",
    )
    assert stale.fix is not None
    assert stale.fix.startswith("pop3s-fetch state prune")


def test_state_prune_removes_only_what_no_account_uses(cli: Cli) -> None:
    configure(cli)
    leave_state(cli, "work", "bench", "x2")
    dry = cli.run("state", "prune", "--dry-run")
    assert (dry.code, dry.stdout) == (
        0,
        "would remove the state of bench\nwould remove the state of x2\n",
    )
    assert sorted(p.name for p in cli.state_dir.glob("*.sqlite3")) == [
        "bench.sqlite3",
        "work.sqlite3",
        "x2.sqlite3",
    ]
    done = cli.run("state", "prune")
    assert (done.code, done.stdout) == (0, "removed the state of bench\nremoved the state of x2\n")
    assert sorted(p.name for p in cli.state_dir.iterdir()) == ["work.sqlite3"]
    again = cli.run("state", "prune")
    assert (again.code, again.stdout, again.stderr) == (
        0,
        "",
        "no state of unconfigured accounts\n",
    )


def test_a_removed_state_leaves_no_wal_or_lock(tmp_path: Path) -> None:
    from pop3s_fetch.state import AccountLock, remove_account_state

    directory = tmp_path / "state"
    with open_store(directory / "old.sqlite3") as store:
        store.mark_delivered(["x"])
    with AccountLock(directory / "old.lock", "old") as lock:  # leaves old.lock behind
        lock.acquire()
    remove_account_state(directory, "old")
    assert list(directory.iterdir()) == []
