"""tls_trust against real Dovecot servers whose TLS is right, wrong, old or missing.

The servers come from ``tests/support/dovecot_variants.py``; each refusal is checked for the
exact facts a user needs (host, failed check, subject, issuer, expiry, fingerprint, fix).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from pop3s_fetch import tls as tls_trust
from pop3s_fetch.config import TlsSettings
from pop3s_fetch.errors import TLSError
from tests.support.dovecot import DovecotServer
from tests.support.dovecot_variants import (
    SELF_SIGNED_COMMON_NAME,
    WRONG_HOST_NAME,
    VariantDovecot,
    legacy_client_context,
)

pytestmark = pytest.mark.dovecot

# The variant servers, by fixture name (also right once tests/conftest.py loads the plugin).

TIMEOUT = 10.0
LOG_DEADLINE = 10.0
#: How Dovecot logs a connection that ended without USER, PASS or AUTH.
NO_AUTH_ATTEMPTS = "Connection closed (no auth attempts"


def settings(**changes: object) -> TlsSettings:
    return replace(TlsSettings(), **changes)  # type: ignore[arg-type]


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, "the server closed the connection"
        line += chunk
    return line


def read_multiline(sock: socket.socket) -> list[bytes]:
    lines = []
    while (line := read_line(sock)) != b".\r\n":
        lines.append(line.rstrip(b"\r\n"))
    return lines


def implicit_tls(
    server: DovecotServer, context: ssl.SSLContext, hostname: str | None = None
) -> tuple[ssl.SSLSocket, bytes]:
    """A TLS connection to ``server.port`` and the greeting line."""
    raw = socket.create_connection((server.host, server.port), TIMEOUT)
    try:
        tls = context.wrap_socket(raw, server_hostname=hostname or server.host)
    except BaseException:
        raw.close()
        raise
    return tls, read_line(tls)


def refused(server: DovecotServer, trust: TlsSettings) -> TLSError:
    """Connect as pop3s-fetch will; on refusal, explain it as pop3s-fetch will."""
    with pytest.raises(ssl.SSLError) as failed:
        implicit_tls(server, tls_trust.client_context(trust))
    return tls_trust.explain_refusal(
        server.host, server.port, failed.value, trust, timeout=TIMEOUT, starttls=False
    )


def facts(server: VariantDovecot) -> str:
    """The certificate part of a refusal, from the fixture's independent view of the leaf."""
    summary = tls_trust.describe(
        tls_trust.fetch_peer_certificate(server.host, server.port, TIMEOUT, starttls=False)
    )
    assert summary.sha256 == server.fingerprint
    assert summary.not_after == server.not_after
    return (
        f"subject {summary.subject}; issuer {summary.issuer}; "
        f"expires {server.not_after:%Y-%m-%d %H:%M} UTC; {server.fingerprint}"
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll an external process's output (Dovecot's log) until ``condition``, with a deadline."""
    deadline = time.monotonic() + LOG_DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- trust modes ------------------------------------------------------------------------------


def test_a_ca_signed_server_is_accepted_with_its_ca_file(
    dovecot: DovecotServer, ca_file: Path
) -> None:
    tls, greeting = implicit_tls(dovecot, tls_trust.client_context(settings(ca=str(ca_file))))
    with tls:
        assert greeting.startswith(b"+OK Dovecot")
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_ca_directory_of_plain_pem_files_is_trusted(
    dovecot: DovecotServer, ca_file: Path, other_ca_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "other.pem").write_bytes(other_ca_file.read_bytes())
    (tmp_path / "test.crt").write_bytes(ca_file.read_bytes())
    tls, greeting = implicit_tls(dovecot, tls_trust.client_context(settings(ca=str(tmp_path))))
    with tls:
        assert greeting.startswith(b"+OK")


@pytest.mark.parametrize(
    ("ca", "store"), [("certifi", "certifi's CA bundle"), ("system", "the system trust store")]
)
def test_public_trust_stores_refuse_the_private_test_ca(
    dovecot: DovecotServer, ca: str, store: str
) -> None:
    error = refused(dovecot, settings(ca=ca))
    assert str(error).startswith(
        f"refused the TLS connection to {dovecot.host}:{dovecot.port} (unknown issuer): subject "
    )
    assert error.hint is not None
    assert error.hint.startswith(f'its issuer is not in {store}: set ca = "/path/to/issuer-ca.pem"')


# -- self-signed and pins ---------------------------------------------------------------------


def test_a_self_signed_certificate_is_refused_with_everything_to_pin_it(
    dovecot_self_signed: VariantDovecot, ca_file: Path
) -> None:
    server = dovecot_self_signed
    error = refused(server, settings(ca=str(ca_file)))
    assert str(error) == (
        f"refused the TLS connection to {server.host}:{server.port} (self-signed): {facts(server)}"
    )
    assert f"CN={SELF_SIGNED_COMMON_NAME}; issuer CN={SELF_SIGNED_COMMON_NAME};" in str(error)
    assert error.hint is not None
    assert f'pin it with fingerprint = "{server.fingerprint}"' in error.hint


def test_a_pinned_self_signed_certificate_is_accepted_and_login_works(
    dovecot_self_signed: VariantDovecot,
) -> None:
    server = dovecot_self_signed
    user = server.add_user()
    trust = settings(fingerprint=server.fingerprint)
    tls, greeting = implicit_tls(server, tls_trust.client_context(trust))
    with tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls_trust.check_pin(der, server.fingerprint, host=server.host, port=server.port)
        assert greeting.startswith(b"+OK")
        tls.sendall(f"USER {user.name}\r\n".encode())
        assert read_line(tls).startswith(b"+OK")
        tls.sendall(f"PASS {user.password}\r\n".encode())
        assert read_line(tls).startswith(b"+OK Logged in")


def test_a_wrong_pin_is_refused(dovecot_self_signed: VariantDovecot) -> None:
    server = dovecot_self_signed
    wrong = "sha256:" + "12" * 32
    tls, _ = implicit_tls(server, tls_trust.client_context(settings(fingerprint=wrong)))
    with tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    with pytest.raises(TLSError) as mismatch:
        tls_trust.check_pin(der, wrong, host=server.host, port=server.port)
    assert str(mismatch.value) == (
        f"refused the TLS certificate of {server.host}:{server.port} "
        f"(pin mismatch: expected {wrong}): {facts(server)}"
    )


def test_a_pin_also_refuses_a_ca_signed_certificate_that_does_not_match(
    dovecot: DovecotServer,
) -> None:
    wrong = "sha256:" + "ab" * 32
    tls, _ = implicit_tls(dovecot, tls_trust.client_context(settings(fingerprint=wrong)))
    with tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    with pytest.raises(TLSError, match=r"\(pin mismatch: "):
        tls_trust.check_pin(der, wrong, host=dovecot.host, port=dovecot.port)


def test_describe_summarises_the_served_certificate(dovecot_self_signed: VariantDovecot) -> None:
    server = dovecot_self_signed
    der = tls_trust.fetch_peer_certificate(server.host, server.port, TIMEOUT, starttls=False)
    summary = tls_trust.describe(der)
    assert summary.subject == f"CN={SELF_SIGNED_COMMON_NAME}"
    assert summary.issuer == summary.subject
    assert summary.self_signed is True
    assert summary.san == server.names == ("localhost", "127.0.0.1", "::1")
    assert summary.sha256 == server.fingerprint
    assert summary.not_after == server.not_after
    assert summary.not_before < summary.not_after


# -- expired, wrong name, old protocol --------------------------------------------------------


def test_an_expired_certificate_is_refused_naming_the_date(
    dovecot_expired: VariantDovecot, ca_file: Path
) -> None:
    server = dovecot_expired
    error = refused(server, settings(ca=str(ca_file)))
    assert str(error) == (
        f"refused the TLS connection to {server.host}:{server.port} (expired): {facts(server)}"
    )
    assert error.hint == (
        f"the certificate expired on {server.not_after:%Y-%m-%d %H:%M} UTC: "
        "the server's administrator must renew it"
    )


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])  # IP and DNS name checks
def test_a_certificate_for_another_host_is_refused_naming_its_names(
    dovecot_wrong_host: VariantDovecot, ca_file: Path, hostname: str
) -> None:
    server = dovecot_wrong_host
    trust = settings(ca=str(ca_file))
    with pytest.raises(ssl.SSLCertVerificationError) as failed:
        implicit_tls(server, tls_trust.client_context(trust), hostname=hostname)
    error = tls_trust.explain_refusal(
        hostname, server.port, failed.value, trust, timeout=TIMEOUT, starttls=False
    )
    assert str(error) == (
        f"refused the TLS connection to {hostname}:{server.port} (host name mismatch): "
        f"{facts(server)}"
    )
    assert error.hint == (
        f"the certificate is for {WRONG_HOST_NAME}, not {hostname}: set host to one of them"
    )


def test_the_old_tls_server_really_speaks_tls_1_1(
    dovecot_old_tls: VariantDovecot, ca_file: Path
) -> None:
    """The control for the refusal below: the server is up and its certificate is fine."""
    tls, greeting = implicit_tls(dovecot_old_tls, legacy_client_context(ca_file))
    with tls:
        assert greeting.startswith(b"+OK")
        assert tls.version() == "TLSv1.1"


def test_a_tls_1_1_server_is_refused(dovecot_old_tls: VariantDovecot, ca_file: Path) -> None:
    server = dovecot_old_tls
    error = refused(server, settings(ca=str(ca_file)))
    assert str(error) == (
        f"refused the TLS connection to {server.host}:{server.port} "
        f"(protocol version too old): {facts(server)}"
    )
    assert error.hint == "the server only offers TLS 1.0/1.1; pop3s-fetch requires 1.2 or newer"


# -- STARTTLS ---------------------------------------------------------------------------------


def test_stls_upgrades_the_plaintext_listener_to_verified_tls(
    dovecot_starttls: VariantDovecot, ca_file: Path
) -> None:
    server = dovecot_starttls
    context = tls_trust.client_context(settings(ca=str(ca_file)))
    with socket.create_connection((server.host, server.plain_port), TIMEOUT) as raw:
        assert read_line(raw).startswith(b"+OK")
        raw.sendall(b"CAPA\r\n")
        assert read_line(raw).startswith(b"+OK")
        assert b"STLS" in read_multiline(raw)
        raw.sendall(b"STLS\r\n")
        assert read_line(raw).startswith(b"+OK")
        with context.wrap_socket(raw, server_hostname=server.host) as tls:
            tls.sendall(b"CAPA\r\n")
            assert read_line(tls).startswith(b"+OK")
            capabilities = read_multiline(tls)
    assert b"STLS" not in capabilities  # RFC 2595: not offered again once TLS is up
    assert b"USER" in capabilities


def test_fetch_peer_over_stls_sees_the_same_certificate(
    dovecot_starttls: VariantDovecot,
) -> None:
    server = dovecot_starttls
    peer = tls_trust.fetch_peer(server.host, server.plain_port, TIMEOUT, starttls=True)
    assert tls_trust.fingerprint(peer.der) == server.fingerprint
    assert peer.version in ("TLSv1.2", "TLSv1.3")


def test_a_server_without_stls_is_left_before_any_credential(
    dovecot_no_stls: VariantDovecot,
) -> None:
    server = dovecot_no_stls
    silent_before = server.log_text().count(NO_AUTH_ATTEMPTS)
    logins_before = server.log_text().count("Login: ")

    with pytest.raises(TLSError, match=r"does not offer STLS: -ERR"):
        tls_trust.fetch_peer(server.host, server.port, TIMEOUT, starttls=True)

    wait_for(
        lambda: server.log_text().count(NO_AUTH_ATTEMPTS) > silent_before,
        "Dovecot to log the connection's end",
    )
    assert server.log_text().count("Login: ") == logins_before


def test_the_no_stls_server_would_accept_plaintext_credentials(
    dovecot_no_stls: VariantDovecot,
) -> None:
    """The control for the test above: sending USER/PASS there would have logged in."""
    server = dovecot_no_stls
    user = server.add_user()
    with socket.create_connection((server.host, server.port), TIMEOUT) as raw:
        assert read_line(raw).startswith(b"+OK")
        raw.sendall(f"USER {user.name}\r\nPASS {user.password}\r\n".encode())
        assert read_line(raw).startswith(b"+OK")
        assert read_line(raw).startswith(b"+OK Logged in")
    wait_for(lambda: f"Login: user=<{user.name}>" in server.log_text(), "the login line")
