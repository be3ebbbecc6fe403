"""``sync`` in a real terminal (tmux): live rows per account while downloading, then a table.

The built-in server holds RETR of message 2 until the test has read the screen, so the
progress display is caught mid-download without any sleep.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pop3s_fetch import tls
from pop3s_fetch.demo.server import Faults, MailStore, Pop3Server
from tests.support.certs import ServerCert
from tests.support.cli import Cli, account_toml, make_cli

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

PASSWORD = "terminal-test-password"


class Tmux:
    """A private tmux server (its own socket) running one command in a 150x40 pane."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "test")

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}:\n{screen}")
            time.sleep(0.05)  # polling an external process's screen, not synchronising threads


def terminal_cli(tmp_path: Path) -> Cli:
    """A CLI home whose test keyring gives every account PASSWORD, on a colour terminal."""
    return make_cli(
        tmp_path,
        {
            "PYTHON_KEYRING_BACKEND": "tests.support.env_keyring.EnvironmentKeyring",
            "TEST_KEYRING_PASSWORD": PASSWORD,
            "TERM": "xterm-256color",
        },
    )


def start(tmux: Tmux, env: dict[str, str], args: str, cwd: Path, *, width: int = 150) -> None:
    """Run ``pop3s-fetch ARGS`` in the pane, then print its exit status and keep the pane."""
    script = cwd / "run.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    script.write_text(
        # A Ctrl-C meant for the command must not end the script (and with it the pane).
        f"{exports}trap true INT\ncd {shlex.quote(str(cwd))}\n"
        f"{shlex.quote(sys.executable)} -m pop3s_fetch {args}\n"
        'echo "[exit $?]"\nexec sleep 600\n'
    )
    tmux("new-session", "-d", "-s", "test", "-x", str(width), "-y", "50", f"sh {script}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    terminal = Tmux(tmp_path / "tmux.sock")
    yield terminal
    subprocess.run(["tmux", "-S", str(terminal.socket), "kill-server"], check=False)


def test_progress_rows_then_summary_table(
    tmp_path: Path, tmux: Tmux, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    release = threading.Event()
    messages = [f"Subject: {n}\n\n{'x' * 3000 * n}\n".encode() for n in range(1, 4)]
    users = {"alice": (PASSWORD, MailStore(messages)), "bob": (PASSWORD, MailStore(messages))}
    faults = Faults(hold_retr={2: release})
    with Pop3Server(server_ssl_context, users, faults=faults) as server:
        cli = terminal_cli(tmp_path)
        common = {"host": "127.0.0.1", "port": server.port, "ca_file": ca_file}
        cli.write_config(
            account_toml("work", username="alice", destination=tmp_path / "w", **common)  # type: ignore[arg-type]
            + account_toml("home", username="bob", destination=tmp_path / "h", **common)  # type: ignore[arg-type]
        )
        start(tmux, cli.env, "sync", tmp_path)

        live = tmux.wait_for(
            lambda s: "downloading 1/3" in s and s.count("downloading") >= 2, "two live rows"
        )
        rows = [line for line in live.splitlines() if "downloading" in line]
        assert {row.split()[0] for row in rows} == {"work", "home"}
        assert all("downloading 1/3" in row for row in rows)
        assert all(" kB" in row or "bytes" in row for row in rows), rows

        release.set()
        final = tmux.wait_for(lambda s: "[exit " in s, "the end of the run")
    assert "[exit 0]" in final
    assert "downloading" not in final  # the live rows made way for the table
    lines = [line.split() for line in final.splitlines() if line.strip()]
    assert ["account", "status", "new", "size", "deleted", "on", "server", "time"] in lines
    table_rows = {line[0]: line for line in lines if line[0] in ("work", "home")}
    assert set(table_rows) == {"work", "home"}
    for row in table_rows.values():
        assert row[1:4] == ["ok", "3", "18.0"]


def test_init_writes_a_config_that_loads(tmp_path: Path, tmux: Tmux) -> None:
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    start(tmux, cli.env, "init", tmp_path)
    answers = [
        ("Account name", "work"),
        ("POP3S server", "pop.example.com"),
        ("Port", ""),
        ("User name", "alice@example.com"),
        ("Deliver to", "~/Mail/work"),
        ("Format", "mbox"),
        ("Keep messages", "n"),
        ("Store the password", "n"),
    ]
    for prompt, answer in answers:
        tmux.wait_for(lambda s, p=prompt: s.rstrip().rsplit("\n", 1)[-1].startswith(p), prompt)
        tmux("send-keys", "-t", "test", answer, "Enter")
    final = tmux.wait_for(lambda s: "[exit " in s, "the end of init")
    assert "[exit 0]" in final
    assert f"wrote {cli.config_path}" in final
    check = cli.run("accounts")
    assert check.stdout == (
        f"work: alice@example.com@pop.example.com -> {cli.home}/Mail/work "
        "(mbox, delete after download)\n"
    )
    assert (cli.config_path.stat().st_mode & 0o777) == 0o600
    again = cli.run("init")  # no terminal: refuses rather than prompting
    assert again.code == 78
    assert again.stderr.startswith("error: init asks questions and needs a terminal")


def test_verbose_log_lines_go_above_the_live_rows(
    tmp_path: Path, tmux: Tmux, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    """-v wrote its lines into the live row, which then stayed half-drawn (issue 14, item 1)."""
    release = threading.Event()
    messages = [f"Subject: {n}\n\n{'x' * 3000 * n}\n".encode() for n in range(1, 4)]
    faults = Faults(hold_retr={2: release})
    users = {"alice": (PASSWORD, MailStore(messages))}
    with Pop3Server(server_ssl_context, users, faults=faults) as server:
        cli = terminal_cli(tmp_path)
        cli.write_config(
            account_toml(
                "work",
                host="127.0.0.1",
                port=server.port,
                ca_file=ca_file,
                username="alice",
                destination=tmp_path / "w",
            )
        )
        start(tmux, cli.env, "sync -v", tmp_path)
        live = tmux.wait_for(
            lambda s: "downloading 1/3" in s and "logged in with" in s, "a log line and a live row"
        )
        release.set()
        final = tmux.wait_for(lambda s: "[exit " in s, "the end of the run")
    for screen in (live, final):
        mixed = [line for line in screen.splitlines() if "INFO" in line and "━" in line]
        assert mixed == [], screen
    lines = live.splitlines()
    logged = next(i for i, line in enumerate(lines) if "logged in with" in line)
    row = next(i for i, line in enumerate(lines) if "downloading 1/3" in line)
    assert logged < row  # the log line is above the live row
    assert lines[logged].startswith("INFO pop3s_fetch.sync: work: logged in with")
    assert "[exit 0]" in final


def run_init(tmux: Tmux, cli_env: dict[str, str], cwd: Path, answers: list[tuple[str, str]]) -> str:
    start(tmux, cli_env, "init", cwd, width=200)
    for prompt, answer in answers:
        tmux.wait_for(lambda s, p=prompt: s.rstrip().rsplit("\n", 1)[-1].startswith(p), prompt)
        tmux("send-keys", "-t", "test", answer, "Enter")
    return tmux.wait_for(lambda s: "[exit " in s, "the end of init")


def test_init_tries_the_server_and_offers_to_pin_a_refused_certificate(
    tmp_path: Path, tmux: Tmux, server_ssl_context: ssl.SSLContext
) -> None:
    """init wrote a config whose first sync failed with exit 69 (issue 14, item 13)."""
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    here = tmp_path / "here"
    here.mkdir()
    with Pop3Server(server_ssl_context, {"alice": (PASSWORD, MailStore([]))}) as server:
        final = run_init(
            tmux,
            cli.env,
            here,
            [
                ("Account name", "x2"),
                ("POP3S server", "127.0.0.1"),
                ("Port", str(server.port)),
                ("User name", "alice"),
                ("Deliver to", "Mail/x2"),
                ("Format", ""),
                ("Keep messages", "y"),
                ("Trust it by a CA file", "p"),
                ("Store the password", "n"),
            ],
        )
        assert "[exit 0]" in final, final
        assert "the TLS check failed: refused the TLS connection" in final
        assert "TLS: TLSv1.3, certificate" in final
        assert "(pinned)" in final
        assert "next: pop3s-fetch password set x2, then pop3s-fetch sync x2" in final
        info = cli.run("serverinfo", "x2")  # the written pin works as sync would use it
        assert info.code == 0, info.output
    text = cli.config_path.read_text()
    assert f'destination = "{here / "Mail" / "x2"}"' in text  # from where the user stood
    assert 'fingerprint = "sha256:' in text
    assert "ca_file" not in text


def test_init_shows_the_certificate_once_and_why_a_ca_file_did_not_load(
    tmp_path: Path,
    tmux: Tmux,
    server_ssl_context: ssl.SSLContext,
    server_cert: ServerCert,
    ca_file: Path,
) -> None:
    """The refusal already describes the certificate (an 'its certificate:' line right after
    repeated it); a CA file in DER form says so and how to convert it, then init asks again."""
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    der = tmp_path / "ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(ca_file.read_text()))
    leaf = server_cert.leaf.cert_chain_pems[0].bytes().decode()
    pin = tls.fingerprint(ssl.PEM_cert_to_DER_cert(leaf))
    with Pop3Server(server_ssl_context, {"alice": (PASSWORD, MailStore([]))}) as server:
        final = run_init(
            tmux,
            cli.env,
            tmp_path,
            [
                ("Account name", "x3"),
                ("POP3S server", "127.0.0.1"),
                ("Port", str(server.port)),
                ("User name", "alice"),
                ("Deliver to", "Mail/x3"),
                ("Format", ""),
                ("Keep messages", "y"),
                ("Trust it by a CA file", "c"),
                ("CA file", str(der)),
                ("Trust it by a CA file", "c"),
                ("CA file", str(ca_file)),
                ("Store the password", "n"),
            ],
        )
    assert "[exit 0]" in final, final
    joined = "".join(final.splitlines())  # the pane wraps long lines
    # Described once after the refusal (in it) and once after the CA file failed (which
    # says nothing of the server): never twice in a row.
    assert joined.count(pin) == 2
    assert joined.count("its certificate:") == 1
    assert joined.index("cannot load CA certificates") < joined.index("its certificate:")
    assert (
        f"the TLS check failed: cannot load CA certificates from {der}: it holds a DER (binary) "
        f"certificate, not PEM (convert it: openssl x509 -inform der -in {der} -out {der}.pem, "
        f'then set ca = "{der}.pem")'
    ) in joined
    assert "(verified)" in joined
    assert f'ca = "{ca_file}"' in cli.config_path.read_text()


def test_init_adds_an_account_to_an_existing_file_and_keeps_the_rest(
    tmp_path: Path, tmux: Tmux
) -> None:
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    before = (
        "# my mail, by hand\n[accounts.old]  # the first one\n"
        'host = "pop.example.com"\nusername = "me"\ndestination = "~/Mail/old"\n'
    )
    cli.write_config(before)
    final = run_init(
        tmux,
        cli.env,
        tmp_path,
        [
            ("Account name", "old"),
            ("old is taken", "new"),
            ("POP3S server", "pop.example.net"),
            ("Port", ""),
            ("User name", "me"),
            ("Deliver to", "~/Mail/new"),
            ("Format", "mbox"),
            ("Keep messages", "y"),
            ("Store the password", "n"),
        ],
    )
    assert "[exit 0]" in final, final
    assert f"added account new to {cli.config_path}" in final
    after = cli.config_path.read_text()
    assert after.startswith(before)
    assert cli.run("accounts").stdout.splitlines() == [
        f"old: me@pop.example.com -> {cli.home}/Mail/old (maildir, keep)",
        f"new: me@pop.example.net -> {cli.home}/Mail/new (mbox, keep)",
    ]


def test_sizes_agree_and_accounts_without_news_or_a_listing_say_so(
    tmp_path: Path, tmux: Tmux, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    """The progress total and the summary agree (issue 14, item 5); an account with nothing
    new says "no new mail" and one never listed shows a dash, not 0 (item 6)."""
    release = threading.Event()
    messages = [f"Subject: {n}\n\n{'x' * 3000 * n}\n".encode() for n in range(1, 4)]
    users = {"alice": (PASSWORD, MailStore(messages)), "bob": (PASSWORD, MailStore(messages[:1]))}
    with Pop3Server(server_ssl_context, users, faults=Faults(hold_retr={2: release})) as server:
        cli = terminal_cli(tmp_path)
        common = {"host": "127.0.0.1", "port": server.port, "ca_file": ca_file}
        cli.write_config(
            account_toml("busy", username="alice", destination=tmp_path / "b", **common)  # type: ignore[arg-type]
            + account_toml("idle", username="bob", destination=tmp_path / "i", **common)  # type: ignore[arg-type]
            + account_toml(
                "down",
                host="127.0.0.1",
                port=closed_port(),
                username="x",
                destination=tmp_path / "d",
                ca_file=ca_file,
            )
        )
        assert cli.run("sync", "idle").code == 0  # idle's one message is delivered already
        start(tmux, cli.env, "sync", tmp_path)
        live = tmux.wait_for(
            lambda s: "downloading 1/3" in s and "no new mail" in s, "a busy and an idle row"
        )
        release.set()
        final = tmux.wait_for(lambda s: "[exit " in s, "the end of the run")
    idle_row = next(line for line in live.splitlines() if line.startswith("idle"))
    assert "no new mail" in idle_row
    busy_row = next(line for line in live.splitlines() if line.startswith("busy"))
    total = sum(len(m) + m.count(b"\n") for m in messages)  # as LIST counts: CRLF line ends
    assert f"/{total / 1000:.1f} kB" in busy_row, busy_row
    rows = {line.split()[0]: line.split() for line in final.splitlines() if line.strip()}
    assert rows["busy"][1:5] == ["ok", "3", f"{total / 1000:.1f}", "kB"]
    assert rows["down"][1] == "failed"
    assert rows["down"][-3] == "-"  # on server: never listed
    assert rows["idle"][1:3] == ["ok", "0"]
    assert rows["idle"][-3] == "1"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ctrl_c_says_what_is_safe(
    tmp_path: Path, tmux: Tmux, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    """Ctrl-C printed only "aborted" (issue 14, item 4)."""
    held = threading.Event()  # never set: RETR 2 waits until the server stops
    messages = [f"Subject: {n}\n\nbody {n}\n".encode() for n in range(1, 4)]
    users = {"alice": (PASSWORD, MailStore(messages))}
    with Pop3Server(server_ssl_context, users, faults=Faults(hold_retr={2: held})) as server:
        cli = terminal_cli(tmp_path)
        cli.write_config(
            account_toml(
                "work",
                host="127.0.0.1",
                port=server.port,
                ca_file=ca_file,
                username="alice",
                destination=tmp_path / "w",
                keep=False,
            )
        )
        start(tmux, cli.env, "sync", tmp_path)
        tmux.wait_for(lambda s: "downloading 1/3" in s, "the first message in")
        tmux("send-keys", "-t", "test", "C-c")
        final = tmux.wait_for(lambda s: "[exit " in s, "the end of the run")
        on_server = sorted(m for _, m in users["alice"][1].messages())
    assert "interrupted: work: 1 of 3 messages saved, nothing deleted" in final, final
    assert "run sync again to continue" in final
    assert "[exit 130]" in final
    assert on_server == sorted(messages)  # no QUIT: nothing deleted, as it says
    assert len(list((tmp_path / "w" / "new").iterdir())) == 1  # and the one saved is there
