"""The real-server fixtures work: Dovecot serves what they put in, gnome-keyring stores secrets.

These tests check the test infrastructure, not pop3s-fetch: if they fail, every integration
test built on the fixtures is meaningless.
"""

from __future__ import annotations

import json
import poplib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REQUIRE_SERVERS_VARIABLE, server_unavailable
from tests.support.certs import ServerCert
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.secret_service import SecretService

FIRST = b"From: a@example.org\nSubject: first\n\nline one\n.starts with a dot\n"
SECOND = b"From: b@example.org\nSubject: second\n\n\nafter an empty line\n"

KEYRING_ROUND_TRIP = """\
import json, sys
import keyring
backend = keyring.get_keyring()
service, user = sys.argv[1], sys.argv[2]
keyring.set_password(service, user, sys.stdin.read())
print(json.dumps({
    "backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
    "password": keyring.get_password(service, user),
}))
"""


def connect(server: DovecotServer, cafile: Path) -> poplib.POP3_SSL:
    context = ssl.create_default_context(cafile=str(cafile))
    return poplib.POP3_SSL(server.host, server.port, context=context, timeout=10)


def login(server: DovecotServer, user: DovecotUser) -> poplib.POP3_SSL:
    session = connect(server, server.ca_file)
    session.user(user.name)
    session.pass_(user.password)
    return session


def retrieve_all(session: poplib.POP3_SSL) -> list[bytes]:
    """Every message, with the CRLF of the wire turned back into the LF on disk."""
    count, _size = session.stat()
    return [b"".join(line + b"\n" for line in session.retr(n)[1]) for n in range(1, count + 1)]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> str:
    """Run a TLS handshake in memory; return the version agreed, or raise the client's error."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):
        finished = 0
        for end in (client_end, server_end):
            try:
                end.do_handshake()
                finished += 1
            except ssl.SSLWantReadError:
                pass
        if finished == 2:
            return str(client_end.version())
    raise AssertionError("the in-memory TLS handshake did not finish")


def uidls(session: poplib.POP3_SSL) -> list[bytes]:
    return [entry.split()[1] for entry in session.uidl()[1]]


@pytest.mark.dovecot
def test_dovecot_serves_a_new_users_messages_byte_for_byte(dovecot: DovecotServer) -> None:
    user = dovecot.add_user([FIRST, SECOND])

    session = login(dovecot, user)
    try:
        listed = uidls(session)
        assert retrieve_all(session) == [FIRST, SECOND]
    finally:
        session.quit()

    assert len(listed) == 2
    assert len(set(listed)) == 2
    assert all(len(uid) == 16 for uid in listed)  # pop3_uidl_format = %08Xu%08Xv
    assert user.messages_on_server() == [FIRST, SECOND]


@pytest.mark.dovecot
def test_dovecot_uidls_are_stable_and_new_mail_arrives_between_sessions(
    dovecot: DovecotServer,
) -> None:
    user = dovecot.add_user([FIRST])
    session = login(dovecot, user)
    before = uidls(session)
    session.quit()

    user.add_messages([SECOND])
    session = login(dovecot, user)
    try:
        after = uidls(session)
        assert retrieve_all(session) == [FIRST, SECOND]
    finally:
        session.quit()

    assert after[0] == before[0]
    assert after[1] != before[0]


@pytest.mark.dovecot
def test_dovecot_accepts_users_added_while_it_runs(dovecot: DovecotServer) -> None:
    # Back to back, within one second: a shared passwd-file would not be re-read in time.
    for index in range(3):
        user = dovecot.add_user([SECOND + str(index).encode() + b"\n"])
        session = login(dovecot, user)
        try:
            assert retrieve_all(session) == [SECOND + str(index).encode() + b"\n"]
        finally:
            session.quit()


@pytest.mark.dovecot
@pytest.mark.parametrize(
    ("name", "password"),
    [("user-that-was-never-added", "right-password"), (None, "wrong-password")],
)
def test_dovecot_refuses_a_wrong_login(
    dovecot: DovecotServer, name: str | None, password: str
) -> None:
    user = dovecot.add_user(password="right-password")
    session = connect(dovecot, dovecot.ca_file)
    try:
        session.user(name or user.name)
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\] Authentication failed"):
            session.pass_(password)
    finally:
        session.close()


@pytest.mark.dovecot
def test_dovecot_accepts_a_chosen_password(dovecot: DovecotServer) -> None:
    user = dovecot.add_user([FIRST], password="chosen password")

    assert user.password == "chosen password"
    session = login(dovecot, user)
    session.quit()


@pytest.mark.dovecot
def test_dovecot_deletes_only_on_quit(dovecot: DovecotServer) -> None:
    user = dovecot.add_user([FIRST, SECOND])
    session = login(dovecot, user)
    session.dele(1)
    assert user.messages_on_server() == [FIRST, SECOND]
    session.quit()

    assert user.messages_on_server() == [SECOND]


@pytest.mark.dovecot
def test_dovecot_certificate_fails_against_another_ca(
    dovecot: DovecotServer, other_ca_file: Path
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        connect(dovecot, other_ca_file)


@pytest.mark.dovecot
def test_dovecot_runs_from_its_own_config_only(dovecot: DovecotServer) -> None:
    config = dovecot.config_path.read_text()

    assert "!include" not in config
    assert "/etc/dovecot" not in config
    assert f"port = {dovecot.port}" in config
    startup = [line for line in dovecot.log_text().splitlines() if " master: " in line]
    assert "starting up for pop3" in startup[0]
    assert not [line for line in startup if "Warning" in line or "Error" in line or "Fatal" in line]


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
def test_server_ssl_context_is_trusted_through_ca_file(
    server_ssl_context: ssl.SSLContext, ca_file: Path, hostname: str
) -> None:
    client = ssl.create_default_context(cafile=str(ca_file))

    assert handshake(server_ssl_context, client, hostname) in {"TLSv1.2", "TLSv1.3"}


def test_server_ssl_context_is_refused_through_other_ca_file(
    server_ssl_context: ssl.SSLContext, other_ca_file: Path
) -> None:
    client = ssl.create_default_context(cafile=str(other_ca_file))

    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server_ssl_context, client, "localhost")


def test_server_cert_files_hold_the_chain_and_a_private_key(server_cert: ServerCert) -> None:
    # trustme's CA is a root, so the chain is the leaf alone: clients bring the root.
    assert server_cert.cert_chain_file.read_bytes().count(b"BEGIN CERTIFICATE") == 1
    assert b"PRIVATE KEY" in server_cert.key_file.read_bytes()
    assert server_cert.key_file.stat().st_mode & 0o077 == 0


def test_a_missing_server_skips_unless_ci_requires_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_SERVERS_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^no dovecot$"):
        server_unavailable("no dovecot")

    monkeypatch.setenv(REQUIRE_SERVERS_VARIABLE, "1")
    with pytest.raises(
        pytest.fail.Exception, match=r"^no dovecot \(POP3S_FETCH_REQUIRE_SERVERS=1 "
    ):
        server_unavailable("no dovecot")


@pytest.mark.secret_service
def test_keyring_in_a_subprocess_round_trips_through_gnome_keyring(
    secret_service: SecretService,
) -> None:
    password = "pä$$ wörd with spaces"
    result = subprocess.run(
        [sys.executable, "-c", KEYRING_ROUND_TRIP, "pop3s-fetch-test", "someone@example.org"],
        input=password,
        env=secret_service.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply == {"backend": "keyring.backends.SecretService.Keyring", "password": password}
    keyrings = secret_service.home / ".local" / "share" / "keyrings"
    assert any(keyrings.iterdir()), "gnome-keyring stored nothing under the private HOME"
