"""``proxy = "socks5://..."`` end to end: the command, a real Dovecot, and Debian's microsocks
and Dante (danted).

The account's host is ``localhost`` and TLS is verified against it (the test CA's certificate
names it), through the proxy. The program runs with a guard on ``socket.getaddrinfo`` that
refuses (and records) every lookup of a name: a sync through the proxy that succeeds under it
has asked no local resolver for the server's name, which is the leak a Tor user must not have.
The same guard without a proxy makes the sync fail, so the guard is known to bite.

That every command goes through the proxy is shown by stopping it: with Dovecot up, each one
then fails with the proxy's line, where a connection made around it would have succeeded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.dovecot_variants import VariantDovecot
from tests.support.mail import as_stored, corpus
from tests.support.socks_proxy import Proxy, free_port

pytestmark = pytest.mark.dovecot

_REPO_ROOT = Path(__file__).resolve().parents[2]

#: Loaded by the child's interpreter at start-up (sitecustomize): numeric addresses pass, any
#: name lookup is refused and written to LOOKUPS.
GUARD = """\
import ipaddress, os, socket

_real = socket.getaddrinfo


def _guarded(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    try:
        if name is not None:
            ipaddress.ip_address(name)
    except ValueError:
        with open(os.environ["LOOKUPS"], "a") as log:
            log.write(name + "\\n")
        raise socket.gaierror(socket.EAI_NONAME, "name lookup refused by the test") from None
    return _real(host, *args, **kwargs)


socket.getaddrinfo = _guarded
"""


@pytest.fixture
def guarded_cli(tmp_path: Path) -> Cli:
    """A CLI whose process can make no name lookup (see GUARD); LOOKUPS lists its attempts."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    cli.env["PYTHONPATH"] = f"{guard}:{_REPO_ROOT}"
    cli.env["LOOKUPS"] = str(tmp_path / "lookups")
    return cli


def lookups(cli: Cli) -> list[str]:
    path = Path(cli.env["LOOKUPS"])
    return path.read_text().splitlines() if path.exists() else []


def configure(
    cli: Cli,
    dovecot: DovecotServer | VariantDovecot,
    user: DovecotUser,
    proxy: str | None,
    *,
    extra: str = "",
) -> Path:
    password_file = cli.home / "password"
    password_file.write_text(user.password + "\n")
    destination = cli.home / "Maildir"
    cli.write_config(
        ("" if proxy is None else f'[defaults]\nproxy = "{proxy}"\n\n') + "[accounts.work]\n"
        f'host = "localhost"\nport = {dovecot.port}\nusername = "{user.name}"\n'
        f'ca = "{dovecot.ca_file}"\ntimeout = 20\n'
        f'password_command = ["cat", "{password_file}"]\n'
        f'destination = "{destination}"\n{extra}'
    )
    return destination


def test_sync_goes_through_the_proxy_which_resolves_the_name(
    guarded_cli: Cli, dovecot: DovecotServer, microsocks: Proxy
) -> None:
    messages = corpus()[:3]
    user = dovecot.add_user(messages)
    destination = configure(guarded_cli, dovecot, user, microsocks.url)

    result = guarded_cli.run("sync")

    assert result.code == 0, result.output
    assert lookups(guarded_cli) == []
    stored = sorted(read_messages(destination, "maildir"))
    assert stored == sorted(as_stored(message, "maildir") for message in messages)
    assert user.messages_on_server() == messages  # keep = true by default


def test_starttls_goes_through_the_proxy_too(
    guarded_cli: Cli, dovecot_starttls: VariantDovecot, microsocks: Proxy
) -> None:
    messages = corpus()[:2]
    user = dovecot_starttls.add_user(messages)
    destination = configure(
        guarded_cli, dovecot_starttls, user, microsocks.url, extra='tls = "starttls"\n'
    )
    text = guarded_cli.config_path.read_text()
    guarded_cli.write_config(
        text.replace(f"port = {dovecot_starttls.port}", f"port = {dovecot_starttls.plain_port}")
    )

    result = guarded_cli.run("sync")

    assert result.code == 0, result.output
    assert lookups(guarded_cli) == []
    stored = sorted(read_messages(destination, "maildir"))
    assert stored == sorted(as_stored(message, "maildir") for message in messages)


def test_the_guard_bites_without_a_proxy(guarded_cli: Cli, dovecot: DovecotServer) -> None:
    """Control for the test above: a direct sync looks the name up, and the guard refuses."""
    user = dovecot.add_user(corpus()[:1])
    configure(guarded_cli, dovecot, user, proxy=None)

    result = guarded_cli.run("sync")

    assert result.code == 75, result.output
    assert "localhost" in lookups(guarded_cli)


@pytest.mark.parametrize(
    ("command", "shows"),
    [
        (["check", "--json"], '"new": 2'),
        (["serverinfo", "work"], "TLSv1."),
        (["doctor", "work"], "work: DNS: localhost is resolved by the proxy socks5://127.0.0.1:"),
    ],
)
def test_check_serverinfo_and_doctor_go_through_the_proxy(
    guarded_cli: Cli,
    dovecot: DovecotServer,
    microsocks: Proxy,
    command: list[str],
    shows: str,
) -> None:
    user = dovecot.add_user(corpus()[:2])
    configure(guarded_cli, dovecot, user, microsocks.url)

    result = guarded_cli.run(*command)

    assert result.code == 0, result.output
    assert shows in result.output
    assert lookups(guarded_cli) == []


@pytest.mark.parametrize(
    "command", [["sync"], ["sync", "--json"], ["check"], ["serverinfo", "work"], ["doctor", "work"]]
)
def test_a_proxy_that_is_down_is_one_line_and_exit_75(
    tmp_path: Path, dovecot: DovecotServer, command: list[str]
) -> None:
    """Dovecot is up: a command that went around the proxy would succeed."""
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    user = dovecot.add_user(corpus()[:1])
    port = free_port()  # nothing listens there
    configure(cli, dovecot, user, f"socks5://127.0.0.1:{port}")

    result = cli.run(*command)

    assert result.code == 75, result.output
    line = f"cannot reach the proxy socks5://127.0.0.1:{port}: Connection refused"
    assert line in result.output
    if command == ["sync"]:
        assert result.stderr == (
            f"error: work: {line} (start the proxy (for Tor: systemctl start tor), or fix proxy "
            "in the configuration (remove it to connect directly))\n"
        )
    assert "Traceback" not in result.output


def test_a_proxy_that_wants_a_password_is_refused_clearly(
    cli: Cli, dovecot: DovecotServer, start_microsocks: Callable[..., Proxy]
) -> None:
    proxy = start_microsocks("-u", "tor", "-P", "proxy-password")
    user = dovecot.add_user(corpus()[:1])
    destination = configure(cli, dovecot, user, proxy.url)

    result = cli.run("sync")

    assert result.code == 75, result.output
    assert result.stderr.startswith(
        f"error: work: the proxy {proxy.url} could not connect to localhost:{dovecot.port}: "
        "it requires authentication, which pop3s-fetch does not support"
    )
    assert not destination.exists() or not list(read_messages(destination, "maildir"))


def test_the_proxy_names_a_server_that_refuses_it(
    cli: Cli, dovecot: DovecotServer, microsocks: Proxy
) -> None:
    user = dovecot.add_user(corpus()[:1])
    configure(cli, dovecot, user, microsocks.url)
    closed = free_port()
    text = cli.config_path.read_text().replace(f"port = {dovecot.port}", f"port = {closed}")
    cli.write_config(text)

    result = cli.run("sync")

    assert result.code == 75, result.output
    assert result.stderr == (
        f"error: work: the proxy {microsocks.url} could not connect to localhost:{closed}: "
        "connection refused by the server (SOCKS reply 0x05) (check host and port in the "
        "configuration (POP3S is usually port 995))\n"
    )


def test_a_refused_certificate_is_described_through_the_proxy_too(
    guarded_cli: Cli, dovecot: DovecotServer, microsocks: Proxy
) -> None:
    """The second, unverified look that fetches the refused certificate's facts goes through
    the proxy as well: around it, the guard would refuse the lookup and the facts be missing."""
    user = dovecot.add_user(corpus()[:1])
    configure(guarded_cli, dovecot, user, microsocks.url)
    without_ca = "\n".join(
        line
        for line in guarded_cli.config_path.read_text().splitlines()
        if not line.startswith("ca ")
    )
    guarded_cli.write_config(without_ca + "\n")

    result = guarded_cli.run("sync")

    assert result.code == 69, result.output
    assert result.stderr.startswith(
        f"error: work: refused the TLS connection to localhost:{dovecot.port} (unknown issuer): "
        "subject "
    )
    assert "; sha256:" in result.stderr  # the facts the second look fetched
    assert lookups(guarded_cli) == []


def test_sync_through_dante(
    guarded_cli: Cli, dovecot: DovecotServer, start_dante: Callable[[str], Proxy]
) -> None:
    """A second real proxy; its log shows the connection it made for us."""
    proxy = start_dante("pass")
    messages = corpus()[:2]
    user = dovecot.add_user(messages)
    destination = configure(guarded_cli, dovecot, user, proxy.url)

    result = guarded_cli.run("sync")

    assert result.code == 0, result.output
    assert lookups(guarded_cli) == []
    assert re.search(
        rf"pass\(1\): tcp/connect .* -> .* 127\.0\.0\.1\.{dovecot.port}$", proxy.log_text(), re.M
    )
    stored = sorted(read_messages(destination, "maildir"))
    assert stored == sorted(as_stored(message, "maildir") for message in messages)


def test_a_proxy_rule_against_the_server_is_named_with_the_fix(
    cli: Cli, dovecot: DovecotServer, start_dante: Callable[[str], Proxy]
) -> None:
    proxy = start_dante("block")
    user = dovecot.add_user(corpus()[:1])
    configure(cli, dovecot, user, proxy.url)

    result = cli.run("sync")

    assert result.code == 75, result.output
    assert result.stderr == (
        f"error: work: the proxy {proxy.url} could not connect to localhost:{dovecot.port}: "
        "connection not allowed by its rules (SOCKS reply 0x02) (allow connections to "
        f"localhost:{dovecot.port} in the proxy's configuration)\n"
    )
    # Dante logs the destination as it was asked for: the name, which it was to resolve.
    assert f"-> 0.0.0.0.0 localhost.{dovecot.port}" in proxy.log_text()
