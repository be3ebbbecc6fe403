"""Run ``pop3s-fetch`` as a user would: a subprocess with its own config, state and keyring."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.dovecot import DovecotServer

_REPO_ROOT = Path(__file__).resolve().parents[2]

#: Variables that could leak the developer's own setup into a test run.
_SCRUBBED = (
    "POP3S_FETCH_CONFIG",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_DATA_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "PYTHON_KEYRING_BACKEND",
)


@dataclass
class Result:
    """What one run printed and returned."""

    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Cli:
    """A private home for one test: config file, state directory, environment, transcript."""

    home: Path
    env: dict[str, str]
    runs: list[Result] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    @property
    def state_dir(self) -> Path:
        return self.home / "state" / "pop3s-fetch"

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)

    def run(
        self, *args: str, input: str | None = None, extra_env: Mapping[str, str] | None = None
    ) -> Result:
        env = {**self.env, **(extra_env or {})}
        done = subprocess.run(
            [sys.executable, "-m", "pop3s_fetch", *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        result = Result(list(args), done.returncode, done.stdout, done.stderr)
        self.runs.append(result)
        return result

    def everything_written(self) -> bytes:
        """Every byte the program printed or left in its home: for secret-leak checks."""
        chunks = [r.output.encode() for r in self.runs]
        chunks += [" ".join(r.args).encode() for r in self.runs]
        for path in self.home.rglob("*"):
            if path.is_file() and "keyrings" not in path.parts:
                chunks.append(path.read_bytes())
        return b"\n".join(chunks)


def make_cli(tmp_path: Path, base_env: Mapping[str, str] | None = None) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(
        {
            "HOME": str(home),
            "POP3S_FETCH_CONFIG": str(home / "config.toml"),
            "XDG_STATE_HOME": str(home / "state"),
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
            # so PYTHON_KEYRING_BACKEND can name tests.support.env_keyring in the child
            "PYTHONPATH": str(_REPO_ROOT),
        }
    )
    env.update(base_env or {})
    return Cli(home, env)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A CLI home with no keyring at all (as under cron on a headless box)."""
    return make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})


def account_toml(
    name: str,
    *,
    host: str,
    port: int,
    username: str,
    destination: Path,
    fmt: str = "maildir",
    keep: bool = True,
    ca_file: Path | None = None,
    timeout: float = 20,
) -> str:
    lines = [
        f"[accounts.{name}]",
        f'host = "{host}"',
        f"port = {port}",
        f'username = "{username}"',
        f'destination = "{destination}"',
        f'format = "{fmt}"',
        f"keep = {'true' if keep else 'false'}",
        f"timeout = {timeout}",
    ]
    if ca_file is not None:
        lines.append(f'ca_file = "{ca_file}"')
    return "\n".join(lines) + "\n\n"


def dovecot_account(cli: Cli, dovecot: DovecotServer, username: str, prefix: str) -> str:
    """Write a config with one Maildir account on ``dovecot``; returns its name, unique
    (``prefix`` + random): a Secret Service's items outlive a test."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    cli.write_config(
        account_toml(
            name,
            host=dovecot.host,
            port=dovecot.port,
            username=username,
            destination=cli.home / "Maildir",
            ca_file=dovecot.ca_file,
        )
    )
    return name
