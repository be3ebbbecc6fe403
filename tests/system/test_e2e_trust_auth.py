"""End to end against real Dovecot servers: TLS modes, trust, pins, every login method, secrets.

The password comes from ``password_command`` (a file read by ``cat``) or a systemd credential,
so these tests need no keyring; every test checks that it never shows up in what was printed
or written.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pop3s_fetch.destinations import read_messages
from tests.support.cli import Cli, make_cli
from tests.support.dovecot import DovecotServer
from tests.support.dovecot_variants import VariantDovecot
from tests.support.mail import as_stored

pytestmark = pytest.mark.dovecot

MESSAGES = [b"Subject: one\n\nfirst\n", b"Subject: two\n\n.dot\nFrom x\n"]


def setup(
    tmp_path: Path,
    server: DovecotServer,
    *,
    port: int | None = None,
    extra: str = "",
    secret: str = "command",
    messages: list[bytes] | None = None,
) -> tuple[Cli, str, Path]:
    """A CLI home with one account "work" on ``server``; returns (cli, password, Maildir)."""
    user = server.add_user(MESSAGES if messages is None else messages)
    cli = make_cli(tmp_path, {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    destination = cli.home / "Maildir"
    secrets_dir = tmp_path / "secrets"  # outside the home the leak check searches
    secrets_dir.mkdir()
    password_file = secrets_dir / "password"
    password_file.write_text(user.password + "\n")
    password_file.chmod(0o600)
    if secret == "command":
        source = f'password_command = ["cat", "{password_file}"]'
    else:
        credentials = secrets_dir / "credentials"
        credentials.mkdir()
        (credentials / "mailpw").write_text(user.password + "\n")
        cli.env["CREDENTIALS_DIRECTORY"] = str(credentials)
        source = 'password_credential = "mailpw"'
    cli.write_config(
        f"""[accounts.work]
host = "{server.host}"
port = {port or server.port}
username = "{user.name}"
destination = "{destination}"
timeout = 20
{source}
{extra}
"""
    )
    return cli, user.password, destination


def no_leak(cli: Cli, password: str) -> None:
    assert password.encode() not in cli.everything_written()


@pytest.mark.parametrize(
    "auth", ["auto", "scram-sha-256", "scram-sha-1", "plain", "user", "cram-md5", "apop"]
)
def test_every_login_method_dovecot_offers(
    tmp_path: Path, dovecot: DovecotServer, auth: str
) -> None:
    cli, password, destination = setup(
        tmp_path, dovecot, extra=f'ca = "{dovecot.ca_file}"\nauth = "{auth}"'
    )
    result = cli.run("-v", "sync")
    assert result.code == 0, result.output
    assert sorted(read_messages(destination, "maildir")) == sorted(
        as_stored(m, "maildir") for m in MESSAGES
    )
    expected = {"auto": "SCRAM-SHA-256", "user": "USER", "apop": "APOP"}.get(auth, auth.upper())
    assert f"work: logged in with {expected}" in result.stderr
    no_leak(cli, password)


def test_wrong_password_over_scram_is_77(tmp_path: Path, dovecot: DovecotServer) -> None:
    cli, password, _ = setup(tmp_path, dovecot, extra=f'ca = "{dovecot.ca_file}"')
    (tmp_path / "secrets" / "password").write_text("wrong-" + password + "\n")
    result = cli.run("sync")
    assert result.code == 77
    assert result.stderr.startswith(f"error: work: {dovecot.host} refused the login: [AUTH]")
    assert "password_command of work prints the right password" in result.stderr
    no_leak(cli, password)


def test_systemd_credential_source(tmp_path: Path, dovecot: DovecotServer) -> None:
    cli, password, destination = setup(
        tmp_path, dovecot, extra=f'ca = "{dovecot.ca_file}"', secret="credential"
    )
    result = cli.run("sync")
    assert result.code == 0, result.output
    assert len(sorted(read_messages(destination, "maildir"))) == len(MESSAGES)
    no_leak(cli, password)


def test_starttls_on_the_plaintext_port(tmp_path: Path, dovecot_starttls: VariantDovecot) -> None:
    cli, password, destination = setup(
        tmp_path,
        dovecot_starttls,
        port=dovecot_starttls.plain_port,
        extra=f'tls = "starttls"\nca = "{dovecot_starttls.ca_file}"',
    )
    result = cli.run("sync")
    assert result.code == 0, result.output
    assert len(sorted(read_messages(destination, "maildir"))) == len(MESSAGES)
    no_leak(cli, password)


def test_no_stls_means_no_credentials_sent(
    tmp_path: Path, dovecot_no_stls: VariantDovecot, ca_file: Path
) -> None:
    before = dovecot_no_stls.log_text()
    cli, password, _ = setup(tmp_path, dovecot_no_stls, extra=f'tls = "starttls"\nca = "{ca_file}"')
    result = cli.run("sync")
    assert result.code == 69, result.output
    assert result.stderr == (
        f"error: work: {dovecot_no_stls.host}:{dovecot_no_stls.port} does not offer STLS, "
        "so the session was ended before any credential was sent (use the POP3S port with "
        'tls = "implicit", or ask the server\'s administrator to enable STARTTLS)\n'
    )
    new_log = dovecot_no_stls.log_text()[len(before) :]
    assert "no auth attempts" in new_log
    assert "Login:" not in new_log
    no_leak(cli, password)


def test_self_signed_is_refused_then_pinned(
    tmp_path: Path, dovecot_self_signed: VariantDovecot
) -> None:
    server = dovecot_self_signed
    cli, password, destination = setup(tmp_path, server)
    refused = cli.run("sync")
    assert refused.code == 69
    [line] = refused.stderr.splitlines()
    assert f"refused the TLS connection to {server.host}:{server.port} (self-signed)" in line
    assert server.fingerprint in line
    assert f'fingerprint = "{server.fingerprint}"' in line

    info = cli.run("serverinfo", "work")  # a refused certificate is still described
    assert info.code == 69
    assert server.fingerprint in info.stderr

    config = cli.config_path.read_text()
    cli.write_config(config + f'fingerprint = "{server.fingerprint}"\n')
    pinned = cli.run("sync")
    assert pinned.code == 0, pinned.output
    assert len(sorted(read_messages(destination, "maildir"))) == len(MESSAGES)
    described = cli.run("serverinfo", "work")
    assert described.code == 0, described.output
    assert f"fingerprint:  {server.fingerprint}" in described.stdout
    assert "(pinned fingerprint matches)" in described.stdout
    no_leak(cli, password)


def test_wrong_pin_is_refused(tmp_path: Path, dovecot: DovecotServer) -> None:
    wrong = "sha256:" + "ab" * 32
    cli, password, _ = setup(tmp_path, dovecot, extra=f'fingerprint = "{wrong}"')
    result = cli.run("sync")
    assert result.code == 69
    [line] = result.stderr.splitlines()
    assert "pin" in line
    assert wrong in line
    no_leak(cli, password)


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("dovecot_expired", ["(expired)", "expired on"]),
        ("dovecot_wrong_host", ["mail.example.net", "set host to one of them"]),
        ("dovecot_old_tls", ["TLS 1.0/1.1", "1.2 or newer"]),
    ],
)
def test_tls_refusals_explain_themselves(
    tmp_path: Path, request: pytest.FixtureRequest, fixture: str, words: list[str]
) -> None:
    server: VariantDovecot = request.getfixturevalue(fixture)
    cli, password, _ = setup(tmp_path, server, extra=f'ca = "{server.ca_file}"')
    result = cli.run("sync")
    assert result.code == 69, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: work: refused the TLS connection to {server.host}")
    for word in words:
        assert word in line
    no_leak(cli, password)


def test_serverinfo_before_and_after_login(tmp_path: Path, dovecot: DovecotServer) -> None:
    cli, password, _ = setup(tmp_path, dovecot, extra=f'ca = "{dovecot.ca_file}"')
    before = cli.run("serverinfo", "work")
    assert before.code == 0, before.output
    lines = before.stdout.splitlines()
    assert lines[0].startswith(f"server:       {dovecot.host}:{dovecot.port} (implicit TLS)")
    assert lines[1].startswith("TLS:          TLSv1.")
    assert any(line.startswith("fingerprint:  sha256:") for line in lines)
    assert "SASL:         PLAIN LOGIN SCRAM-SHA-1 SCRAM-SHA-256 CRAM-MD5" in lines
    assert "PIPELINING:   yes" in lines
    assert "login:        SCRAM-SHA-256" in lines
    after = cli.run("serverinfo", "work", "--login")
    assert after.code == 0, after.output
    assert "login:        SCRAM-SHA-256 (logged in)" in after.stdout.splitlines()
    no_leak(cli, password)


@pytest.mark.secret_service
def test_oauth2_login_then_sync(
    tmp_path: Path, dovecot_oauth2: DovecotServer, secret_service: object
) -> None:
    authority = dovecot_oauth2.authority  # type: ignore[attr-defined]
    user = dovecot_oauth2.add_user(MESSAGES)
    cli = make_cli(tmp_path, dict(secret_service.env))  # type: ignore[attr-defined]
    destination = cli.home / "Maildir"
    cli.write_config(
        f"""[accounts.o365]
host = "{dovecot_oauth2.host}"
port = {dovecot_oauth2.port}
username = "{user.name}"
destination = "{destination}"
ca = "{dovecot_oauth2.ca_file}"

[accounts.o365.oauth2]
provider = "custom"
token_endpoint = "{authority.token_endpoint}"
device_endpoint = "{authority.device_endpoint}"
client_id = "{authority.client_id}"
scopes = ["pop3", "offline_access"]
"""
    )
    authority.auto_approve_as = user.name
    authority.rotate_refresh = True
    try:
        login = cli.run("oauth2", "login", "o365")
        assert login.code == 0, login.output
        assert authority.user_codes[-1] in login.stderr
        result = cli.run("-v", "sync", "--json")
        assert result.code == 0, result.output
        assert json.loads(result.stdout)["accounts"][0]["fetched"] == len(MESSAGES)
        assert "o365: logged in with OAUTHBEARER" in result.stderr
        assert authority.token_requests[-1].grant_type == "refresh_token"
        assert len(sorted(read_messages(destination, "maildir"))) == len(MESSAGES)
        again = cli.run("sync")  # with the rotated refresh token from the keyring
        assert again.code == 0, again.output
    finally:
        authority.auto_approve_as = None
        authority.rotate_refresh = False
    written = cli.everything_written()
    for token in authority.issued_tokens:
        assert token.encode() not in written


@pytest.mark.parametrize("auth", ["user", "plain", "scram-sha-256", "cram-md5", "apop"])
def test_debug_shows_the_dialogue_with_secrets_masked(
    tmp_path: Path, dovecot: DovecotServer, auth: str
) -> None:
    cli, password, _ = setup(tmp_path, dovecot, extra=f'ca = "{dovecot.ca_file}"\nauth = "{auth}"')
    result = cli.run("--debug", "sync")
    assert result.code == 0, result.output
    dialogue = [line for line in result.stderr.splitlines() if " C: " in line or " S: " in line]
    assert any(line.endswith("C: UIDL") for line in dialogue)
    assert any(" S: +OK" in line for line in dialogue)
    secret_lines = {
        "user": "C: PASS ****",
        "plain": "C: AUTH PLAIN ****",
        "scram-sha-256": "C: AUTH SCRAM-SHA-256 ****",
        "cram-md5": "C: AUTH CRAM-MD5 ****",
        "apop": "C: APOP ",
    }
    assert any(secret_lines[auth] in line for line in dialogue), dialogue
    for form in (password, base64.b64encode(password.encode()).decode()):
        assert form not in result.output
    no_leak(cli, password)
