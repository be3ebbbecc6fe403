"""How to configure and start each POP3 client for a run: pop3s-fetch, mpop, getmail6, fetchmail.

Owns each client's configuration file, state location and delivery set-up, written into the
run's own directory (nothing in the user's home is read or written). Every client verifies TLS
against the benchmark CA, keeps or deletes as asked, and delivers natively to a Maildir or
mbox per account. Passwords reach the clients through the environment
(``BENCH_POP3_PASSWORD``) except for fetchmail, which has no such hook and reads it from its
0600 rc file in the throwaway run directory; when the endpoint has a session bus, pop3s-fetch
and mpop instead find it in that bus's Secret Service, where ``store_in_keyring`` put it the
way a user would. Knows nothing about measuring or verifying.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from benchmarks.environment import PASSWORD_VARIABLE, Endpoint, environ_without
from benchmarks.measure import Command

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A dedicated unprivileged user for clients that refuse to deliver as root (getmail6).
UNPRIVILEGED_USER = "pop3s-fetch-bench"
_SCRUBBED = (
    "POP3S_FETCH_CONFIG",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_DATA_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "PYTHON_KEYRING_BACKEND",
    "MAILDIR",
    "MAIL",
    "FETCHMAILHOME",
    "FETCHMAILUSER",
)


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """One mailbox to fetch: its login and where its mail goes."""

    name: str
    username: str
    destination: Path  # a Maildir directory, or an mbox file


class Client(Protocol):
    name: str
    #: True when the client may legitimately change bytes (adds headers): counted, not failed.
    may_alter: bool

    def available(self) -> bool: ...

    def command(
        self,
        run_dir: Path,
        endpoint: Endpoint,
        accounts: Sequence[AccountSpec],
        fmt: str,
        keep: bool,
    ) -> Command: ...

    def store_in_keyring(self, command: Command, endpoint: Endpoint) -> None: ...


def base_env(run_dir: Path, endpoint: Endpoint) -> dict[str, str]:
    env = environ_without(_SCRUBBED)
    home = run_dir / "home"
    home.mkdir(exist_ok=True)
    env.update({"HOME": str(home), "TMPDIR": str(home), "NO_COLOR": "1"})
    if endpoint.session_bus is None:
        env[PASSWORD_VARIABLE] = endpoint.password
    else:  # the password is in that bus's keyring, and nowhere in the environment
        env["DBUS_SESSION_BUS_ADDRESS"] = endpoint.session_bus
    return env


def _store(argv: Sequence[str], secret: str, command: Command) -> None:
    """Run a password-storing command with the secret on its stdin (never in argv)."""
    result = subprocess.run(
        argv,
        input=secret.encode(),
        env=dict(command.env),
        cwd=command.cwd,
        capture_output=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]}: exit {result.returncode}: {result.stderr!r}")


def prepare_destination(destination: Path, fmt: str) -> None:
    """Create what every client expects to exist (mpop creates no Maildir)."""
    if fmt == "maildir":
        for sub in ("cur", "new", "tmp"):
            (destination / sub).mkdir(parents=True, exist_ok=True)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)


class Pop3sFetch:
    name = "pop3s-fetch"
    may_alter = False

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = jobs

    def available(self) -> bool:
        return True

    @staticmethod
    def executable() -> list[str]:
        """The installed console script next to this interpreter, as a user runs it."""
        script = Path(sys.executable).parent / "pop3s-fetch"
        return [str(script)] if script.exists() else [sys.executable, "-m", "pop3s_fetch"]

    def command(
        self,
        run_dir: Path,
        endpoint: Endpoint,
        accounts: Sequence[AccountSpec],
        fmt: str,
        keep: bool,
    ) -> Command:
        config = run_dir / "pop3s-fetch.toml"
        blocks = []
        for account in accounts:
            prepare_destination(account.destination, fmt)
            blocks.append(
                f"[accounts.{account.name}]\n"
                f'host = "{endpoint.host}"\nport = {endpoint.port}\n'
                f'username = "{account.username}"\ndestination = "{account.destination}"\n'
                f'format = "{fmt}"\nkeep = {"true" if keep else "false"}\n'
                f'ca_file = "{endpoint.ca_file}"\ntimeout = 60\n'
            )
            if endpoint.session_bus is None:
                # The password as a headless user supplies it: no keyring in the process.
                blocks[-1] += f'password_command = ["printenv", "{PASSWORD_VARIABLE}"]\n'
        config.write_text("\n".join(blocks))
        env = base_env(run_dir, endpoint)
        env.update(
            {
                "POP3S_FETCH_CONFIG": str(config),
                "XDG_STATE_HOME": str(run_dir / "state"),
            }
        )
        argv = [*self.executable(), "sync", "--quiet", "--no-progress"]
        if self.jobs is not None:
            argv += ["--jobs", str(self.jobs)]
        return Command(argv, env, run_dir)

    def store_in_keyring(self, command: Command, endpoint: Endpoint) -> None:
        """``pop3s-fetch password set`` for each account of the command's configuration."""
        config = Path(command.env["POP3S_FETCH_CONFIG"]).read_text()
        for line in config.splitlines():
            if line.startswith("[accounts."):
                name = line.removeprefix("[accounts.").removesuffix("]")
                argv = [*self.executable(), "password", "set", name]
                _store(argv, endpoint.password + "\n", command)


class Mpop:
    name = "mpop"
    may_alter = True

    def available(self) -> bool:
        return shutil.which("mpop") is not None

    def command(
        self,
        run_dir: Path,
        endpoint: Endpoint,
        accounts: Sequence[AccountSpec],
        fmt: str,
        keep: bool,
    ) -> Command:
        lines = [
            "defaults",
            f"host {endpoint.host}",
            f"port {endpoint.port}",
            "tls on",
            "tls_starttls off",
            f"tls_trust_file {endpoint.ca_file}",
            # Without a password line, mpop asks libsecret (host, service "pop3", user).
            *(
                [f"passwordeval printenv {PASSWORD_VARIABLE}"]
                if endpoint.session_bus is None
                else []
            ),
            f"keep {'on' if keep else 'off'}",
            "received_header off",
            f"uidls_file {run_dir / 'mpop-uidls' / '%U_at_%H'}",
            "",
        ]
        for account in accounts:
            prepare_destination(account.destination, fmt)
            lines += [
                f"account {account.name}",
                f"user {account.username}",
                f"delivery {fmt} {account.destination}",
                "",
            ]
        config = run_dir / "mpoprc"
        config.write_text("\n".join(lines))
        config.chmod(0o600)
        argv = ["mpop", "-C", str(config), "--quiet", *(a.name for a in accounts)]
        return Command(argv, base_env(run_dir, endpoint), run_dir)

    def store_in_keyring(self, command: Command, endpoint: Endpoint) -> None:
        """``secret-tool store`` under the attributes mpop's manual gives, per account."""
        config = (command.cwd / "mpoprc").read_text()
        for line in config.splitlines():
            if line.startswith("user "):
                user = line.removeprefix("user ")
                argv = ["secret-tool", "store", "--label=mpop", "host", endpoint.host]
                _store([*argv, "service", "pop3", "user", user], endpoint.password, command)


class Getmail:
    name = "getmail6"
    may_alter = True

    def available(self) -> bool:
        return shutil.which("getmail") is not None

    def command(
        self,
        run_dir: Path,
        endpoint: Endpoint,
        accounts: Sequence[AccountSpec],
        fmt: str,
        keep: bool,
    ) -> Command:
        getmail_dir = run_dir / "getmail"
        getmail_dir.mkdir(exist_ok=True)
        argv = ["getmail", "--getmaildir", str(getmail_dir), "--quiet"]
        for account in accounts:
            prepare_destination(account.destination, fmt)
            if fmt == "maildir":
                destination = f"type = Maildir\npath = {account.destination}/\n"
            else:
                destination = f"type = Mboxrd\npath = {account.destination}\n"
            rc = getmail_dir / f"{account.name}.rc"
            rc.write_text(
                "[retriever]\ntype = SimplePOP3SSLRetriever\n"
                f"server = {endpoint.host}\nport = {endpoint.port}\n"
                f"username = {account.username}\n"
                f'password_command = ("/usr/bin/printenv", "{PASSWORD_VARIABLE}")\n'
                f"ca_certs = {endpoint.ca_file}\n\n"
                f"[destination]\n{destination}\n"
                "[options]\nverbose = 0\nread_all = false\n"
                f"delete = {'false' if keep else 'true'}\n"
                "delivered_to = false\nreceived = false\n"
            )
            argv += ["--rcfile", str(rc)]
            if fmt == "mbox":
                account.destination.touch()  # getmail appends to an existing mbox only
        uid, gid = _unprivileged_ids()
        if uid is not None:
            _chown_tree(run_dir, uid, gid)
        return Command(argv, base_env(run_dir, endpoint), run_dir, user=uid, group=gid)

    def store_in_keyring(self, command: Command, endpoint: Endpoint) -> None:
        _no_keyring(self)


class Fetchmail:
    name = "fetchmail"
    may_alter = True

    def available(self) -> bool:
        return shutil.which("fetchmail") is not None

    def command(
        self,
        run_dir: Path,
        endpoint: Endpoint,
        accounts: Sequence[AccountSpec],
        fmt: str,
        keep: bool,
    ) -> Command:
        if fmt != "maildir":
            raise ValueError("fetchmail is benchmarked with Maildir delivery only")
        lines = ["set no syslog", "set invisible", ""]
        for account in accounts:
            prepare_destination(account.destination, fmt)
            # fetchmail has no Maildir delivery: a minimal MDA writes one file per message
            # (under a name mktemp makes unique in new/). No '%' (fetchmail expands it) and no
            # quotes (its rc strings do not nest them): the scratch paths hold no spaces.
            mda = f"cat > $(mktemp {account.destination}/new/fm.XXXXXXXXXX)"
            lines += [
                # fetchmail matches the certificate by DNS name, not by IP address.
                f"poll localhost with proto POP3 port {endpoint.port} uidl",
                f'  user "{account.username}" there with password "{endpoint.password}"',
                f'  options ssl sslcertck sslcertfile "{endpoint.ca_file}"',
                f"  {'keep' if keep else 'nokeep'} no rewrite",
                f'  mda "{mda}"',
                "",
            ]
        rc = run_dir / "fetchmailrc"
        rc.write_text("\n".join(lines))
        rc.chmod(0o600)
        argv = [
            "fetchmail",
            "--fetchmailrc",
            str(rc),
            "--idfile",
            str(run_dir / "fetchids"),
            "--pidfile",
            str(run_dir / "fetchmail.pid"),
            "--silent",
            "--nodetach",
        ]
        # Exit 1 means "no mail": a success for an idle run.
        return Command(argv, base_env(run_dir, endpoint), run_dir, ok_codes=(0, 1))

    def store_in_keyring(self, command: Command, endpoint: Endpoint) -> None:
        _no_keyring(self)


def _no_keyring(client: Client) -> None:
    raise NotImplementedError(f"{client.name} is benchmarked with the password from its config")


def _unprivileged_ids() -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    from tests.support.dovecot import ensure_system_user

    user = ensure_system_user(UNPRIVILEGED_USER)
    return user.pw_uid, user.pw_gid


def _chown_tree(root: Path, uid: int, gid: int | None) -> None:
    assert gid is not None
    os.chown(root, uid, gid)
    for path in root.rglob("*"):
        os.chown(path, uid, gid, follow_symlinks=False)


ALL_CLIENTS: dict[str, type[Pop3sFetch] | type[Mpop] | type[Getmail] | type[Fetchmail]] = {
    "pop3s-fetch": Pop3sFetch,
    "mpop": Mpop,
    "getmail6": Getmail,
    "fetchmail": Fetchmail,
}
