"""Shell completion: scripts for bash, zsh and fish, and account names from the config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import Cli, account_toml

BIN = str(Path(sys.executable).parent)


def configure(cli: Cli) -> None:
    common = {"host": "h.example", "port": 995, "username": "u"}
    cli.write_config(
        account_toml("work", destination=cli.home / "w", **common)  # type: ignore[arg-type]
        + account_toml("home", destination=cli.home / "h", **common)  # type: ignore[arg-type]
        + account_toml("wiki", destination=cli.home / "k", **common)  # type: ignore[arg-type]
    )


def complete(cli: Cli, shell: str, words: str, cword: str) -> list[str]:
    env = {
        **cli.env,
        "_POP3S_FETCH_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": cword,
    }
    done = subprocess.run(
        [sys.executable, "-m", "pop3s_fetch"], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split("\n")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_script(cli: Cli, shell: str) -> None:
    env = {**cli.env, "_POP3S_FETCH_COMPLETE": f"{shell}_source"}
    done = subprocess.run(
        [sys.executable, "-m", "pop3s_fetch"], env=env, capture_output=True, text=True, check=True
    )
    assert "_pop3s_fetch_completion" in done.stdout


def test_account_names_complete_in_each_shell(cli: Cli) -> None:
    configure(cli)
    assert complete(cli, "bash", "pop3s-fetch sync w", "2") == ["plain,work", "plain,wiki", ""]
    assert complete(cli, "zsh", "pop3s-fetch password set h", "3")[:3] == ["plain", "home", "_"]
    fish = complete(cli, "fish", "pop3s-fetch doctor w", "w")
    assert [line.split("\t")[0] for line in fish if line] == ["plain,work", "plain,wiki"]


def test_a_broken_config_completes_nothing_and_prints_no_error(cli: Cli) -> None:
    cli.write_config("[accounts.work\n")
    assert [line for line in complete(cli, "bash", "pop3s-fetch sync ", "2") if line] == []


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_real_bash_completes_commands_and_accounts(cli: Cli) -> None:
    configure(cli)
    script = (
        'eval "$(_POP3S_FETCH_COMPLETE=bash_source pop3s-fetch)"\n'
        "COMP_WORDS=(pop3s-fetch sy); COMP_CWORD=1; _pop3s_fetch_completion pop3s-fetch\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
        "COMP_WORDS=(pop3s-fetch sync wo); COMP_CWORD=2; COMPREPLY=()\n"
        "_pop3s_fetch_completion pop3s-fetch\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**cli.env, "PATH": BIN + os.pathsep + cli.env.get("PATH", "")}
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["sync", "systemd", "work"]


def test_an_account_already_named_is_not_offered_again(cli: Cli) -> None:
    configure(cli)
    assert complete(cli, "bash", "pop3s-fetch sync work w", "3") == ["plain,wiki", ""]
