"""The command line as a new user meets it: help, typos, no keyring, a server that is down."""

from __future__ import annotations

import os
import pty
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from pop3s_fetch import __version__, tls
from tests.support.certs import ServerCert
from tests.support.cli import Cli, Result, account_toml
from tests.support.rig import serve


def write_account(cli: Cli, port: int = 995, **overrides: object) -> None:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "alice",
        "destination": cli.home / "Maildir",
    }
    settings.update(overrides)
    cli.write_config(account_toml("work", **settings))  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_version_and_help(cli: Cli) -> None:
    version = cli.run("--version")
    assert (version.code, version.stdout) == (0, f"pop3s-fetch, version {__version__}\n")
    top = cli.run("--help")
    assert top.code == 0
    for command in ("sync", "accounts", "password", "demo"):
        assert f"  {command}" in top.stdout
    for args in (["sync"], ["accounts"], ["password"], ["password", "set"], ["demo"]):
        assert cli.run(*args, "-h").code == 0, args


def test_usage_error_is_64(cli: Cli) -> None:
    result = cli.run("sync", "--jobs", "zero")
    assert result.code == 64
    assert "Invalid value for '-j' / '--jobs'" in result.stderr


def test_no_config_file_says_where_it_looked(cli: Cli) -> None:
    result = cli.run("sync")
    assert result.code == 78
    assert result.stderr.startswith(f"error: no configuration file at {cli.config_path}")
    assert f"pop3s-fetch config example > {cli.config_path}" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_config_mistakes_are_all_reported(cli: Cli) -> None:
    cli.write_config(
        '[accounts.work]\nhost = "pop.example.com"\nport = "x"\nusernme = "alice"\n'
        'destination = "~/Mail"\npassword = "hunter2"\n'
    )
    result = cli.run("sync")
    assert result.code == 78
    path = cli.config_path
    assert result.stderr.splitlines() == [
        f"error: {path}: 4 problems in the configuration",
        f'  {path}: accounts.work.port: expected an integer 1-65535, got "x"',
        f'  {path}: accounts.work.usernme: unknown key (did you mean "username"?)',
        f"  {path}: accounts.work.password: passwords are not read from the config file; "
        "store it in the OS keyring with: pop3s-fetch password set work",
        f"  {path}: accounts.work.username: missing required key (set it here or in [defaults])",
    ]
    assert "hunter2" not in result.output


def test_a_quoted_count_gets_the_number_to_write(cli: Cli) -> None:
    write_account(cli)
    cli.write_config(cli.config_path.read_text() + 'max_messages = "500"\n')
    result = cli.run("sync")
    assert result.code == 78
    path = cli.config_path
    assert result.stderr.splitlines() == [
        f"error: {path}: 1 problem in the configuration",
        f"  {path}: accounts.work.max_messages: expected a whole number of at least 1, "
        'got "500" (did you mean 500, without quotes?)',
    ]


def test_unknown_account_names_the_known_ones(cli: Cli) -> None:
    write_account(cli)
    result = cli.run("sync", "wrok")
    assert result.code == 78
    assert result.stderr == f'error: unknown account "wrok"; {cli.config_path} defines: work\n'


def test_no_keyring_under_cron_is_77_and_one_line(cli: Cli) -> None:
    write_account(cli)
    result = cli.run("sync")
    assert result.code == 77
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith('error: work: no usable OS keyring for account "work"')
    assert "Traceback" not in result.output


def test_password_set_without_input_does_not_prompt(cli: Cli) -> None:
    write_account(cli)
    keyring = {"PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring"}
    result = cli.run("password", "set", "work", extra_env=keyring)  # stdin is /dev/null
    assert result.code == 77
    assert result.stderr == (
        'error: no password given for account "work" on standard input '
        "(pipe it in, e.g.: pass show mail | pop3s-fetch password set work)\n"
    )


def test_accounts_lists_the_configuration(cli: Cli) -> None:
    write_account(cli, port=1995, fmt="mbox", keep=False)
    result = cli.run("accounts")
    assert result.code == 0
    assert result.stdout == (
        f"work: alice@127.0.0.1:1995 -> {cli.home / 'Maildir'} (mbox, delete after download)\n"
    )


def test_server_down_is_temporary_75(cli: Cli, tmp_path: Path) -> None:
    port = closed_port()
    write_account(cli, port=port)
    result = cli.run(
        "sync",
        extra_env={
            "PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring",
            "TEST_KEYRING_PASSWORD": "s3cret-for-test",
        },
    )
    assert result.code == 75, result.output
    assert result.stderr == (
        f"error: work: cannot connect to 127.0.0.1:{port}: Connection refused "
        "(check host and port, and that the server is up)\n"
    )
    assert "s3cret-for-test" not in result.output


def test_config_path_and_check(cli: Cli) -> None:
    missing = cli.run("config", "path")
    assert missing.code == 0
    assert missing.stdout == f"{cli.config_path}\n"
    assert "does not exist yet" in missing.stderr
    write_account(cli)
    check = cli.run("config", "check")
    assert (check.code, check.stdout) == (0, f"{cli.config_path}: valid; accounts: work\n")
    cli.write_config("[accounts.work]\nhost = 1\n")
    broken = cli.run("config", "check")
    assert broken.code == 78
    assert (
        f'{cli.config_path}: accounts.work.host: expected a host name such as "pop.example.com", '
        "got 1\n" in broken.stderr
    )


def test_second_run_while_one_holds_the_account_exits_75(cli: Cli) -> None:
    import fcntl
    import os

    write_account(cli)
    cli.state_dir.mkdir(parents=True)
    lock_path = cli.state_dir / "work.lock"
    with open(lock_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"{os.getpid()}\n")
        held.flush()
        result = cli.run("sync", "--wait", "0.2")
    assert result.code == 75
    assert result.stderr == (
        f'error: work: account "work" is being synced by another pop3s-fetch (pid {os.getpid()}) '
        "(it did not finish within --wait 0.2; wait longer, or let it end)\n"
    )


def test_doctor_reports_a_broken_setup_and_its_first_failure(cli: Cli) -> None:
    write_account(cli, host="pop.example.invalid")
    result = cli.run("doctor")
    assert result.code == 77  # no keyring comes before DNS
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ok    config: {cli.config_path}: 1 account (work)")
    assert any(line.startswith("FAIL  keyring: ") for line in lines)
    assert any(
        line.startswith("FAIL  work: DNS: cannot resolve host name pop.example.invalid")
        for line in lines
    )
    assert lines[-1].endswith("fix the first one first: keyring (exit 77)")


def test_systemd_prints_a_service_and_a_timer(cli: Cli) -> None:
    write_account(cli)
    result = cli.run("systemd", "work", "--interval", "30min")
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "# pop3s-fetch.service"
    assert "# pop3s-fetch.timer" in lines
    [exec_start] = [line for line in lines if line.startswith("ExecStart=")]
    assert exec_start.endswith(f"--config {cli.config_path} sync --quiet --wait 300 work")
    assert "OnUnitActiveSec=30min" in lines
    bad = cli.run("systemd", "--interval", "5s")
    assert bad.code == 64


def test_systemd_install_writes_the_units_once(cli: Cli) -> None:
    write_account(cli)
    first = cli.run("systemd", "--install")
    assert first.code == 0, first.output
    units = cli.home / ".config" / "systemd" / "user"
    assert sorted(p.name for p in units.iterdir()) == ["pop3s-fetch.service", "pop3s-fetch.timer"]
    assert "systemctl --user daemon-reload && systemctl --user enable --now pop3s-fetch.timer" in (
        first.stdout
    )
    (units / "pop3s-fetch.timer").write_text("# edited by hand\n")
    refused = cli.run("systemd", "--install")
    assert refused.code == 74
    assert (units / "pop3s-fetch.timer").read_text() == "# edited by hand\n"
    forced = cli.run("systemd", "--install", "--force")
    assert forced.code == 0
    assert "OnUnitActiveSec=" in (units / "pop3s-fetch.timer").read_text()


def test_config_example_prints_the_shipped_example(cli: Cli) -> None:
    """pip and pipx users have no checkout: the command prints the file the repository holds."""
    result = cli.run("config", "example")
    assert result.code == 0
    assert (
        result.stdout == (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()
    )


def test_password_set_without_a_keyring_says_so_before_asking(cli: Cli) -> None:
    """On a terminal it asked twice for the password, and only then found no keyring."""
    write_account(cli)
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "pop3s_fetch", "password", "set", "work"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=cli.env,
    ) as process:
        os.close(secondary)
        seen = b""
        while chunk := _read_pty(primary):  # until the command exits and the pty closes
            seen += chunk
            if b"Password for" in seen:  # it asks: the bug; it would wait for input forever
                process.kill()
                break
        assert process.wait() == 77, seen.decode(errors="replace")
    os.close(primary)
    text = seen.decode()
    assert "Password for" not in text
    assert text.startswith('error: no usable OS keyring for account "work"')


#: python -m pop3s_fetch with credentials.RUN_USER moved to the first argument.
_MOVED_RUN_USER = (
    "import sys; from pathlib import Path; from pop3s_fetch import credentials, cli; "
    "credentials.RUN_USER = Path(sys.argv.pop(1)); cli.main()"
)


def _at_terminal_with_a_bus(cli: Cli, tmp_path: Path, args: list[str], typed: list[str]) -> str:
    """Run pop3s-fetch on a pty, lines typed ahead, with no session variables set and a
    listening bus socket in a /run/user of the test's own; the exit status must be 77."""
    run_user = tmp_path / "run-user"
    (run_user / str(os.getuid())).mkdir(parents=True)
    env = {k: v for k, v in cli.env.items() if k != "XDG_RUNTIME_DIR"}
    primary, secondary = pty.openpty()
    with (
        socket.socket(socket.AF_UNIX) as listener,
        subprocess.Popen(
            [sys.executable, "-c", _MOVED_RUN_USER, str(run_user), *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env=env,
        ) as process,
    ):
        listener.bind(str(run_user / str(os.getuid()) / "bus"))
        os.close(secondary)
        os.write(primary, "".join(f"{line}\n" for line in typed).encode())
        seen = b""
        while chunk := _read_pty(primary):  # until the command exits and the pty closes
            seen += chunk
        assert process.wait() == 77, seen.decode(errors="replace")
    os.close(primary)
    return seen.decode().replace("\r\n", "\n")


def _export_advice(tmp_path: Path) -> str:
    bus = tmp_path / "run-user" / str(os.getuid()) / "bus"
    return (
        'error: no usable OS keyring for account "work" (keyring found no backend; is a Secret '
        "Service such as gnome-keyring running in this D-Bus session?) (this shell has no D-Bus "
        f"session set, while yours is at {bus}: run `export DBUS_SESSION_BUS_ADDRESS=unix:path="
        f"{bus}` in this shell, then pop3s-fetch password set work (the keyring is usable while "
        "it is unlocked, that is while you are logged in); or else: cron jobs and systemd "
        "services run outside the desktop session, so they cannot reach its keyring; run "
        "pop3s-fetch where the keyring is unlocked, choose a backend with the "
        "PYTHON_KEYRING_BACKEND environment variable (`keyring --list-backends` shows them), or "
        'set password_command = ["pass", "show", "mail/work"] or password_credential = "NAME" '
        "(a systemd LoadCredentialEncrypted= credential) in the account instead)\n"
    )


def test_init_without_a_keyring_says_to_export_the_bus_in_this_shell(
    cli: Cli, tmp_path: Path
) -> None:
    """At a terminal whose shell lacks the session bus, init's fix is an export, not cron's."""
    typed = ["work", "127.0.0.1", str(closed_port()), "alice", str(cli.home / "Mail"), "", "", ""]
    text = _at_terminal_with_a_bus(cli, tmp_path, ["init"], typed)
    assert f"wrote {cli.config_path}\n" in text
    prompt = "Store the password in the OS keyring now? [Y/n]: "
    assert text.split(prompt)[-1] == _export_advice(tmp_path)


def test_password_set_at_a_terminal_says_to_export_the_bus_in_this_shell(
    cli: Cli, tmp_path: Path
) -> None:
    write_account(cli)
    text = _at_terminal_with_a_bus(cli, tmp_path, ["password", "set", "work"], [])
    assert text == _export_advice(tmp_path)


def test_password_set_from_a_pipe_keeps_the_crontab_line(cli: Cli, tmp_path: Path) -> None:
    """A pipe may well be a cron job's: there the crontab line is the fix."""
    write_account(cli)
    run_user = tmp_path / "run-user"
    (run_user / str(os.getuid())).mkdir(parents=True)
    bus = run_user / str(os.getuid()) / "bus"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(bus))
        done = subprocess.run(
            [sys.executable, "-c", _MOVED_RUN_USER, str(run_user), "password", "set", "work"],
            input="secret\n",
            capture_output=True,
            text=True,
            env={k: v for k, v in cli.env.items() if k != "XDG_RUNTIME_DIR"},
            timeout=120,
            check=False,
        )
    assert done.returncode == 77
    assert (
        f"put DBUS_SESSION_BUS_ADDRESS=unix:path={bus} in the crontab (the keyring" in done.stderr
    )


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other side is closed
        return b""


def write_ca_account(cli: Cli, ca_file: Path) -> None:
    """An account that gets past the password (a command) and stops at its ``ca_file``."""
    settings = {"host": "127.0.0.1", "port": closed_port(), "username": "alice"}
    toml = account_toml("work", **settings, destination=cli.home / "Maildir", ca_file=ca_file)
    cli.write_config(toml + 'password_command = ["echo", "not-the-password"]\n')


def test_a_ca_file_in_der_form_says_how_to_convert_it(cli: Cli, tmp_path: Path) -> None:
    der = tmp_path / "home-ca.crt"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(trustme.CA().cert_pem.bytes().decode()))
    write_ca_account(cli, der)
    result = cli.run("sync")
    assert (result.code, result.stderr) == (
        69,
        f"error: work: cannot load CA certificates from {der}: it holds a DER (binary) "
        f"certificate, not PEM (convert it: openssl x509 -inform der -in {der} -out {der}.pem, "
        f'then set ca = "{der}.pem")\n',
    )


def test_a_key_or_other_text_as_ca_file_is_named_as_such(cli: Cli, tmp_path: Path) -> None:
    key = tmp_path / "server-key.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(key))
    write_ca_account(cli, key)
    result = cli.run("check")
    assert (result.code, result.stderr) == (
        69,
        f"error: work: cannot load CA certificates from {key}: it holds a private key, not a "
        "certificate (set ca to the CA's certificate (-----BEGIN CERTIFICATE-----), never a "
        "key)\n",
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("my CA is at https://ca.example.org\n")
    write_ca_account(cli, notes)
    result = cli.run("sync")
    assert (result.code, result.stderr) == (
        69,
        f"error: work: cannot load CA certificates from {notes}: it holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----) (ca must name a readable PEM file (or directory of "
        "them) holding CA certificates)\n",
    )


def test_the_example_command_in_hints_works_on_a_fresh_home(cli: Cli, tmp_path: Path) -> None:
    """The hint is pasted into a shell where ~/.config/pop3s-fetch does not exist yet: a bare
    ``> path`` redirection failed there before pop3s-fetch ran, so the hint says mkdir -p."""
    fresh = cli.home / ".config" / "pop3s fetch" / "config.toml"  # a space, to be quoted
    environment = {"POP3S_FETCH_CONFIG": str(fresh)}
    command = f"mkdir -p '{fresh.parent}' && pop3s-fetch config example > '{fresh}'"
    shown = cli.run("config", "path", extra_env=environment)
    assert (shown.code, shown.stdout, shown.stderr) == (
        0,
        f"{fresh}\n",
        f"(it does not exist yet: run pop3s-fetch init, or: {command})\n",
    )
    missing = cli.run("sync", extra_env=environment)
    assert missing.code == 78
    assert missing.stderr.endswith(f"start from the annotated example: {command})\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "pop3s-fetch"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pop3s_fetch "$@"\n')
    shim.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{cli.env['PATH']}"
    subprocess.run(["sh", "-c", command], env={**cli.env, "PATH": path}, check=True)
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    assert fresh.read_bytes() == example.read_bytes()
    assert cli.run("config", "path", extra_env=environment).stderr == ""


def test_top_level_help_walks_through_init(cli: Cli) -> None:
    """Without init there is no account to set a password for: help named init nowhere."""
    text = cli.run("--help").stdout
    assert (
        "  Start with:   pop3s-fetch demo\n"
        "  Then:         pop3s-fetch init   (asks for the server, login and password)\n"
        "  And fetch:    pop3s-fetch sync\n"
    ) in text


def test_serverinfo_names_the_account_in_its_error_as_sync_does(cli: Cli) -> None:
    port = closed_port()
    write_account(cli, port=port)
    for args in (["serverinfo", "work"], ["serverinfo", "--login", "work"]):
        result = cli.run(*args)
        assert (result.code, result.stdout, result.stderr) == (
            75,
            "",
            f"error: work: cannot connect to 127.0.0.1:{port}: Connection refused "
            "(check host and port, and that the server is up)\n",
        ), args


def test_a_backup_by_host_names_its_options_in_the_tls_fix(
    cli: Cli, server_ssl_context: ssl.SSLContext, server_cert: ServerCert
) -> None:
    """No configuration holds a server named on the command line: 'set ca = ...' would send
    the user looking for a file to edit; the fix names --ca and --fingerprint."""
    pin = tls.fingerprint(
        ssl.PEM_cert_to_DER_cert(server_cert.leaf.cert_chain_pems[0].bytes().decode())
    )
    with serve(server_ssl_context, [b"Subject: x\n\nhi\n"], user="alice", password="pw") as drop:
        port = drop.server.port
        args = ["127.0.0.1", "--port", str(port), "--user", "alice"]
        result = cli.run(
            "backup", *args, "--to", str(cli.home / "copy"), "--password-command", "echo pw"
        )
    assert result.code == 69, result.output
    assert result.stderr.endswith(
        f"(its issuer is not in certifi's CA bundle: give --ca /path/to/issuer-ca.pem or pin it "
        f"with --fingerprint {pin} (check the fingerprint with the server's administrator "
        "first))\n"
    )
    assert result.stderr.startswith(
        f"error: alice@127.0.0.1: refused the TLS connection to 127.0.0.1:{port} (unknown issuer)"
    )
    assert len(result.stderr.splitlines()) == 1


def test_a_backup_of_a_host_without_user_asks_for_user_not_for_a_configuration(
    cli: Cli,
) -> None:
    """The one-off backup needs no configuration; forgetting --user made it say 'no
    configuration file ... run: pop3s-fetch init', the wrong way out."""
    result = cli.run("backup", "pop.example.com", "--to", "my copy")
    assert (result.code, result.stdout, result.stderr) == (
        64,
        "",
        "error: pop.example.com is not a configured account: there is no configuration file "
        f"at {cli.config_path} (to back up a server by its host name, give the login name: "
        "pop3s-fetch backup pop.example.com --user NAME --to 'my copy')\n",
    )
    write_account(cli)
    result = cli.run("backup", "pop.example.com", "--to", "copy")
    assert (result.code, result.stderr) == (
        64,
        f"error: pop.example.com is not a configured account: {cli.config_path} defines: work "
        "(to back up a server by its host name, give the login name: "
        "pop3s-fetch backup pop.example.com --user NAME --to copy)\n",
    )
    assert not (cli.home / "copy").exists()


def _backup_to(cli: Cli, target: Path, fmt: str) -> Result:
    """A backup that stops at its destination: nothing listens on port 1, never reached."""
    return cli.run(
        "backup", "127.0.0.1", "--user", "a", "--password-command", "echo x", "--port", "1",
        "--to", str(target), "--format", fmt,
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_backup_into_proc_says_its_file_system_refused_not_that_a_directory_is_missing(
    cli: Cli, fmt: str
) -> None:
    """/proc exists: "check that the directories leading to it exist" sent the user astray."""
    result = _backup_to(cli, Path("/proc/pop3s-fetch-backup"), fmt)
    what = "the Maildir" if fmt == "maildir" else "the mbox"
    assert (result.code, result.stderr) == (
        74,
        f"error: a@127.0.0.1: cannot create {what} /proc/pop3s-fetch-backup: no such file or "
        "directory (/proc exists, but its file system refused to create pop3s-fetch-backup "
        "there, as virtual ones such as /proc do; choose a place on an ordinary disk)\n",
    )


@pytest.mark.parametrize(("fmt", "below"), [("maildir", "x"), ("mbox", "x"), ("maildir", "x/y")])
def test_backup_below_a_file_names_the_file(cli: Cli, tmp_path: Path, fmt: str, below: str) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    result = _backup_to(cli, a_file / below, fmt)
    what = "the Maildir" if fmt == "maildir" else "the mbox"
    assert (result.code, result.stderr) == (
        74,
        f"error: a@127.0.0.1: cannot create {what} {a_file / below}: not a directory "
        f"({a_file} is a file, not a directory: choose another path)\n",
    )
