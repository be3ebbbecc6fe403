"""What an idle sync imports: only what its path needs (issue 15, the cold idle run).

Most runs under cron find no new mail, and at that size the process is mostly its imports.
The modules only other paths use (a password_command or a hook runs a program; a mistake in
the configuration is suggested a fix; a terminal gets rich output) must not be imported
when nothing of that happens. The CLI runs as a process with ``PYTHONPROFILEIMPORTTIME``
(``-X importtime``), which lists every module imported, in any thread.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Cli, account_toml, dovecot_account, make_cli
from tests.support.dovecot import DovecotServer
from tests.support.rig import BuiltinMaildrop, builtin_login, serve
from tests.support.secret_service import SecretService

#: Never on an idle sync: subprocess and selectors' users run programs (password_command,
#: hooks, an MDA, a filter); difflib suggests fixes for config mistakes; shlex splits
#: command lines given on the command line; rich draws on a terminal (this is not one);
#: urllib.request is keyring's, through jaraco.context.
NEVER_WHEN_IDLE = ("subprocess", "difflib", "shlex", "rich", "urllib.request")

_IMPORTED = re.compile(r"^import time:\s+-?\d+ \|\s+\d+ \| +(\S+)$", re.MULTILINE)


def imported(stderr: str) -> set[str]:
    """Every module ``-X importtime`` reported, with the parts of each dotted name."""
    names = set(_IMPORTED.findall(stderr))
    return names | {name.split(".")[0] for name in names}


def idle_sync_imports(cli: Cli) -> set[str]:
    """Sync once (the mail arrives), then once more with nothing new: what that one imports."""
    first = cli.run("sync")
    assert first.code == 0, first.output
    idle = cli.run("sync", "--quiet", "--no-progress", extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert idle.code == 0, idle.output
    return imported(idle.stderr)


@pytest.mark.dovecot
@pytest.mark.secret_service
def test_the_default_path_imports_nothing_it_does_not_use(
    tmp_path: Path, dovecot: DovecotServer, secret_service: SecretService
) -> None:
    # The password from the Secret Service, as the default path reads it.
    env = dict(secret_service.env)
    env.pop("HOME", None)
    cli = make_cli(tmp_path, env)
    cli.env["HOME"] = secret_service.env["HOME"]
    user = dovecot.add_user([b"Subject: one\n\nbody\n"])
    name = dovecot_account(cli, dovecot, user.name, "idle")
    stored = cli.run("password", "set", name, input=user.password + "\n")
    assert stored.code == 0, stored.output

    modules = idle_sync_imports(cli)

    assert {"secretstorage", "scramp", "ssl", "sqlite3"} <= modules  # the list is complete
    assert "keyring" not in modules  # read from the Secret Service directly
    assert sorted(modules.intersection(NEVER_WHEN_IDLE)) == []


@pytest.fixture
def served(server_ssl_context: ssl.SSLContext) -> Iterator[BuiltinMaildrop]:
    with serve(server_ssl_context, [b"Subject: one\n\nbody\n"], user="u", password="p") as drop:
        yield drop


def test_an_idle_sync_from_the_builtin_server_imports_no_program_runner(
    tmp_path: Path, served: BuiltinMaildrop, ca_file: Path
) -> None:
    # The password from a systemd credential file: no keyring (keyring itself imports shlex,
    # subprocess and urllib.request), no program.
    login = builtin_login(served, ca_file)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pop3").write_text(login.password + "\n")
    cli = make_cli(tmp_path, {"CREDENTIALS_DIRECTORY": str(credentials)})
    toml = account_toml(
        "idle",
        host=login.host,
        port=login.port,
        username=login.username,
        destination=cli.home / "Maildir",
        ca_file=login.ca_file,
    )
    cli.write_config(toml + 'password_credential = "pop3"\n')

    modules = idle_sync_imports(cli)

    assert {"pop3s_fetch.sync", "ssl", "sqlite3"} <= modules  # the list is complete
    assert sorted(modules.intersection(NEVER_WHEN_IDLE)) == []
