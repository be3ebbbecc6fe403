"""tls_trust without Dovecot: trust modes, DER summaries, pins, refusal texts, the STLS look.

Handshakes here are real, against small in-process TLS servers on loopback; certificates are
minted per test with trustme or ``cryptography`` (a test-only dependency, via trustme).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import certifi
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pop3s_fetch import tls as tls_trust
from pop3s_fetch.config import TlsSettings
from pop3s_fetch.errors import ConnectError, ExitCode, TLSError

IO_TIMEOUT = 10.0
LOOPBACK = "127.0.0.1"


# -- helpers ----------------------------------------------------------------------------------


@dataclass
class Connection:
    """What the in-process server saw on one connection."""

    before_tls: bytes = b""
    after_tls: bytes = b""
    version: str | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class TlsServer:
    """Serves one connection: optional POP3 STLS prelude, then a TLS handshake, then "+OK"."""

    def __init__(self, context: ssl.SSLContext, *, stls: bool | None = None) -> None:
        self._context = context
        self._stls = stls  # None: implicit TLS; True/False: plaintext greeting, STLS offered?
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(IO_TIMEOUT)
        self.port: int = self._listener.getsockname()[1]
        self.connection = Connection()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(IO_TIMEOUT)

    def _serve(self) -> None:
        seen = self.connection
        try:
            raw, _ = self._listener.accept()
            raw.settimeout(IO_TIMEOUT)
            with raw:
                if self._stls is not None and not self._prelude(raw, seen):
                    return
                with self._context.wrap_socket(raw, server_side=True) as tls:
                    seen.version = tls.version()
                    # A client that only looks at the certificate closes at once, without
                    # close_notify: that ends the connection, it is not an error.
                    with contextlib.suppress(
                        ssl.SSLEOFError, BrokenPipeError, ConnectionResetError
                    ):
                        tls.sendall(b"+OK ready\r\n")
                        while chunk := tls.recv(4096):
                            seen.after_tls += chunk
        except (OSError, ssl.SSLError) as err:
            seen.error = err
        finally:
            seen.done.set()

    def _prelude(self, raw: socket.socket, seen: Connection) -> bool:
        raw.sendall(b"+OK POP3 ready\r\n")
        while not seen.before_tls.endswith(b"\n"):
            chunk = raw.recv(1)
            if not chunk:
                return False
            seen.before_tls += chunk
        if not self._stls:
            raw.sendall(b"-ERR unknown command\r\n")
            while raw.recv(4096):
                pass
            return False
        raw.sendall(b"+OK begin TLS\r\n")
        return True

    def finished(self) -> Connection:
        assert self.connection.done.wait(IO_TIMEOUT), "the test server never finished"
        return self.connection


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    # No TLS 1.3 session tickets: writing them to a client that already left would fail.
    context.num_tickets = 0
    return context


def handshake(context: ssl.SSLContext, port: int, hostname: str = LOOPBACK) -> bytes:
    """Handshake with ``context``, read the greeting, return the peer's DER certificate."""
    with (
        socket.create_connection((LOOPBACK, port), IO_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        assert tls.recv(100).startswith(b"+OK")
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def settings(**changes: object) -> TlsSettings:
    return replace(TlsSettings(), **changes)  # type: ignore[arg-type]


def pem_to_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_certificate(
    subject: x509.Name,
    *,
    issuer: x509.Name | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    san: list[x509.GeneralName] | None = None,
    ca: bool = False,
    basic_constraints_critical: bool = True,
    authority: x509.Certificate | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=basic_constraints_critical
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if authority is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                authority.public_key()  # type: ignore[arg-type]
            ),
            False,
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def loopback_san() -> list[x509.GeneralName]:
    return [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]


def der_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def pem_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -- describe ---------------------------------------------------------------------------------


def test_describe_reads_a_ca_signed_leaf_like_cryptography_does() -> None:
    ca = trustme.CA(organization_name="Test Org")
    leaf = ca.issue_cert("mail.example.org", "192.0.2.7", "2001:db8::1")
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    reference = x509.load_der_x509_certificate(der)

    summary = tls_trust.describe(der)

    # RFC 4514 order; we separate with ", " for a readable one-line message.
    assert summary.subject == reference.subject.rfc4514_string().replace(",", ", ")
    assert summary.issuer == reference.issuer.rfc4514_string().replace(",", ", ")
    assert summary.not_before == reference.not_valid_before_utc
    assert summary.not_after == reference.not_valid_after_utc  # trustme: year 3000, GeneralizedTime
    assert summary.san == ("mail.example.org", "192.0.2.7", "2001:db8::1")
    assert summary.names == summary.san
    assert summary.self_signed is False
    assert summary.sha256 == "sha256:" + hashlib.sha256(der).hexdigest()


def test_describe_reads_utc_time_non_ascii_names_and_self_signed() -> None:
    start, end = now(), now() + dt.timedelta(days=90)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Müller Mail"),
            x509.NameAttribute(NameOID.COMMON_NAME, "pop.müller.example"),
        ]
    )
    certificate, _ = make_certificate(name, not_before=start, not_after=end)

    summary = tls_trust.describe(der_of(certificate))

    assert summary.subject == "CN=pop.müller.example, O=Müller Mail, C=DE"
    assert summary.issuer == summary.subject
    assert summary.self_signed is True
    assert (summary.not_before, summary.not_after) == (start, end)
    assert summary.san == ()
    assert summary.names == ("pop.müller.example",)  # no SAN: the legacy CN is all there is


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01", b"\x04\x02hi", b"not a certificate"])
def test_describe_rejects_what_is_not_a_certificate(der: bytes) -> None:
    with pytest.raises(ValueError, match=r"certificate|expected|length|tag"):
        tls_trust.describe(der)


def test_describe_rejects_a_truncated_certificate() -> None:
    der = pem_to_der(trustme.CA().cert_pem.bytes())
    with pytest.raises(ValueError, match=r"malformed|length|expected"):
        tls_trust.describe(der[:-10])


# -- fingerprints and pins --------------------------------------------------------------------


def test_fingerprint_is_the_form_the_config_key_takes() -> None:
    der = b"any bytes"
    digest = hashlib.sha256(der).hexdigest()
    assert tls_trust.fingerprint(der) == f"sha256:{digest}"
    colon_form = "SHA256:" + ":".join(digest[i : i + 2].upper() for i in range(0, 64, 2))
    assert tls_trust.normalise_fingerprint(colon_form) == f"sha256:{digest}"
    assert tls_trust.normalise_fingerprint(digest.upper()) == f"sha256:{digest}"


@pytest.mark.parametrize("text", ["", "sha256:abcd", "sha1:" + "ab" * 20, "zz" * 32])
def test_normalise_fingerprint_refuses_what_is_not_sha256(text: str) -> None:
    with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
        tls_trust.normalise_fingerprint(text)


def test_check_pin_accepts_the_matching_certificate_in_any_spelling() -> None:
    der = pem_to_der(trustme.CA().cert_pem.bytes())
    digest = hashlib.sha256(der).hexdigest()
    tls_trust.check_pin(der, f"sha256:{digest}", host="h", port=1)
    tls_trust.check_pin(der, ":".join(digest[i : i + 2].upper() for i in range(0, 64, 2)))


def test_check_pin_refuses_another_certificate_naming_both_fingerprints() -> None:
    der = pem_to_der(trustme.CA().cert_pem.bytes())
    wrong = "sha256:" + "0" * 64
    summary = tls_trust.describe(der)

    with pytest.raises(TLSError) as refused:
        tls_trust.check_pin(der, wrong, host="pop.example.org", port=995)

    assert str(refused.value) == (
        f"refused the TLS certificate of pop.example.org:995 (pin mismatch: expected {wrong}): "
        f"subject {summary.subject}; issuer {summary.issuer}; "
        f"expires {summary.not_after:%Y-%m-%d %H:%M} UTC; {summary.sha256}"
    )
    assert refused.value.hint is not None
    assert f'fingerprint = "{summary.sha256}"' in refused.value.hint
    assert refused.value.exit_code == ExitCode.UNAVAILABLE


# -- contexts ---------------------------------------------------------------------------------


def ca_count(context: ssl.SSLContext) -> int:
    return context.cert_store_stats()["x509_ca"]


def test_default_trusts_certifi_and_verifies_everything() -> None:
    context = tls_trust.client_context(settings())
    with open(certifi.where()) as bundle:
        expected = bundle.read().count("-----BEGIN CERTIFICATE-----")
    assert ca_count(context) == expected
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_flags & ssl.VERIFY_X509_STRICT


def test_system_loads_the_operating_systems_store() -> None:
    context = tls_trust.client_context(settings(ca="system"))
    assert ca_count(context) > 0
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_a_ca_file_is_the_only_trust(tmp_path: Path) -> None:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    context = tls_trust.client_context(settings(ca=str(path)))
    assert ca_count(context) == 1
    with TlsServer(server_context(ca.issue_cert(LOOPBACK))) as server:
        handshake(context, server.port)
    assert server.finished().error is None


def test_a_plain_directory_of_pem_files_is_loaded_file_by_file(tmp_path: Path) -> None:
    signing, other = trustme.CA(), trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "a-other.pem"))
    signing.cert_pem.write_to_path(str(tmp_path / "b-signing.crt"))
    (tmp_path / "README").write_text("not a certificate, and not loaded\n")

    context = tls_trust.client_context(settings(ca=str(tmp_path)))

    assert ca_count(context) == 2
    with TlsServer(server_context(signing.issue_cert(LOOPBACK))) as server:
        handshake(context, server.port)
    assert server.finished().error is None


def test_an_empty_ca_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match=r"the directory holds no \*\.pem or \*\.crt file"):
        tls_trust.client_context(settings(ca=str(tmp_path)))


def test_a_missing_ca_path_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSError, match=f"ca = {missing}: no such file or directory"):
        tls_trust.client_context(settings(ca=str(missing)))


def test_a_ca_file_without_certificates_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("hello\n")
    with pytest.raises(TLSError, match=f"cannot load CA certificates from {path}"):
        tls_trust.client_context(settings(ca=str(path)))
    with pytest.raises(TLSError, match=f"cannot load CA certificates from {path}"):
        tls_trust.client_context(settings(ca=str(tmp_path)))


def test_tls_min_version() -> None:
    assert tls_trust.client_context(settings(min_version="1.3")).minimum_version == (
        ssl.TLSVersion.TLSv1_3
    )


def test_a_pin_turns_chain_and_name_checks_off() -> None:
    context = tls_trust.client_context(settings(fingerprint="sha256:" + "a" * 64))
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


# -- strict X.509 -----------------------------------------------------------------------------


@pytest.fixture
def lax_ca_server(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA whose basicConstraints is not critical (RFC 5280 says it must be) and its leaf."""
    start, end = now() - dt.timedelta(days=1), now() + dt.timedelta(days=30)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lax Corporate CA")])
    ca_cert, ca_key = make_certificate(
        ca_name, not_before=start, not_after=end, ca=True, basic_constraints_critical=False
    )
    leaf_cert, leaf_key = make_certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
        issuer=ca_name,
        issuer_key=ca_key,
        not_before=start,
        not_after=end,
        san=loopback_san(),
        authority=ca_cert,
    )
    (tmp_path / "ca.pem").write_bytes(pem_of(ca_cert))
    (tmp_path / "leaf.pem").write_bytes(pem_of(leaf_cert) + key_pem(leaf_key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem")
    return tmp_path / "ca.pem", context


def test_strict_x509_refuses_a_lax_ca_and_names_the_switch(
    lax_ca_server: tuple[Path, ssl.SSLContext],
) -> None:
    ca_path, server = lax_ca_server
    strict = settings(ca=str(ca_path))
    with TlsServer(server) as tls_server, pytest.raises(ssl.SSLCertVerificationError) as failed:
        handshake(tls_trust.client_context(strict), tls_server.port)
    error = tls_trust.refusal(LOOPBACK, tls_server.port, failed.value, None, strict)
    assert str(error).startswith(
        f"refused the TLS connection to {LOOPBACK}:{tls_server.port} (fails strict X.509 checks: "
    )
    assert error.hint is not None
    assert "set x509_strict = false" in error.hint


def test_x509_strict_false_accepts_the_lax_ca(lax_ca_server: tuple[Path, ssl.SSLContext]) -> None:
    ca_path, server = lax_ca_server
    context = tls_trust.client_context(settings(ca=str(ca_path), x509_strict=False))
    assert not context.verify_flags & ssl.VERIFY_X509_STRICT
    with TlsServer(server) as tls_server:
        handshake(context, tls_server.port)
    assert tls_server.finished().error is None


# -- client certificates ----------------------------------------------------------------------


def test_a_client_certificate_is_presented(tmp_path: Path) -> None:
    ca = trustme.CA()
    client = ca.issue_cert("pop3s-fetch-client@example.org")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = server_context(ca.issue_cert(LOOPBACK))
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)

    context = tls_trust.client_context(settings(ca=str(ca_path), client_cert=cert, client_key=key))
    with TlsServer(server) as tls_server:
        handshake(context, tls_server.port)
    assert tls_server.finished().error is None


def test_an_unreadable_client_certificate_names_both_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "missing.pem", tmp_path / "missing.key"
    with pytest.raises(TLSError) as refused:
        tls_trust.client_context(settings(client_cert=cert, client_key=key))
    assert str(refused.value).startswith(
        f"cannot load the client certificate from {cert} and {key}: "
    )


def test_an_encrypted_client_key_is_refused_without_prompting(tmp_path: Path) -> None:
    ca = trustme.CA()
    client = ca.issue_cert("client@example.org")
    cert, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(TLSError) as refused:
        tls_trust.client_context(settings(client_cert=cert, client_key=key_path))
    assert refused.value.hint == "the private key is encrypted; store it unencrypted with mode 0600"


def test_a_client_key_without_a_certificate_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    with pytest.raises(TLSError, match=f"client_key = {key} is set without client_cert"):
        tls_trust.client_context(settings(client_key=key))


# -- refusals from real handshakes ------------------------------------------------------------


def refused_handshake(
    server: ssl.SSLContext, client_settings: TlsSettings, hostname: str = LOOPBACK
) -> TLSError:
    """Handshake (expecting failure), then explain it the way the owner's code will."""
    with TlsServer(server) as tls_server, pytest.raises(ssl.SSLError) as failed:
        handshake(tls_trust.client_context(client_settings), tls_server.port, hostname)
    # A second server instance for the unverified look, as the real server would still be up.
    with TlsServer(server) as look:
        der = tls_trust.fetch_peer_certificate(LOOPBACK, look.port, IO_TIMEOUT, starttls=False)
    return tls_trust.refusal(LOOPBACK, tls_server.port, failed.value, der, client_settings)


def test_an_unknown_issuer_is_refused_with_the_fix(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert(LOOPBACK)
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    summary = tls_trust.describe(der)

    error = refused_handshake(server_context(leaf), settings())

    assert " (unknown issuer): " in str(error)
    assert str(error).endswith(
        f"subject {summary.subject}; issuer {summary.issuer}; "
        f"expires {summary.not_after:%Y-%m-%d %H:%M} UTC; {summary.sha256}"
    )
    assert error.hint == (
        'its issuer is not in certifi\'s CA bundle: set ca = "/path/to/issuer-ca.pem" or pin it '
        f'with fingerprint = "{summary.sha256}" (check the fingerprint with the server\'s '
        "administrator first)"
    )


def test_an_old_protocol_alert_is_named(tmp_path: Path) -> None:
    server = server_context(trustme.CA().issue_cert(LOOPBACK))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is deprecated: the point
        server.maximum_version = ssl.TLSVersion.TLSv1_1
    server.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    server.set_ciphers("ALL:@SECLEVEL=0")

    error = refused_handshake(server, settings())

    assert f"{LOOPBACK}:" in str(error)
    assert " (protocol version too old): " in str(error)
    assert error.hint == "the server only offers TLS 1.0/1.1; pop3s-fetch requires 1.2 or newer"


def test_requiring_tls13_from_a_tls12_server_says_how_to_relax() -> None:
    server = server_context(trustme.CA().issue_cert(LOOPBACK))
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    with TlsServer(server) as tls_server, pytest.raises(ssl.SSLError) as failed:
        handshake(tls_trust.client_context(settings(min_version="1.3")), tls_server.port)
    error = tls_trust.refusal(
        LOOPBACK, tls_server.port, failed.value, None, settings(min_version="1.3")
    )
    assert str(error) == (
        f"refused the TLS connection to {LOOPBACK}:{tls_server.port} (protocol version too old)"
    )
    assert error.hint == (
        'the server offers no TLS 1.3; set tls_min_version = "1.2" to allow TLS 1.2'
    )


def test_a_plaintext_port_is_named() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]

        def greet() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"+OK POP3 ready, in plaintext\r\n")
                conn.recv(4096)

        thread = threading.Thread(target=greet, daemon=True)
        thread.start()
        with pytest.raises(ssl.SSLError) as failed:
            handshake(tls_trust.client_context(settings()), port)
        thread.join(IO_TIMEOUT)
    error = tls_trust.refusal(LOOPBACK, port, failed.value, None, settings())
    assert "(the server did not answer in TLS)" in str(error)
    assert error.hint is not None
    assert 'set tls = "starttls"' in error.hint


# -- the unverified look ----------------------------------------------------------------------


def test_fetch_peer_over_stls_sends_only_stls() -> None:
    leaf = trustme.CA().issue_cert(LOOPBACK)
    with TlsServer(server_context(leaf), stls=True) as server:
        peer = tls_trust.fetch_peer(LOOPBACK, server.port, IO_TIMEOUT, starttls=True)
    seen = server.finished()
    assert peer.der == pem_to_der(leaf.cert_chain_pems[0].bytes())
    assert peer.version == seen.version
    assert seen.before_tls == b"STLS\r\n"
    assert seen.after_tls == b""
    assert seen.error is None


def test_fetch_peer_without_stls_stops_before_tls() -> None:
    server = TlsServer(server_context(trustme.CA().issue_cert(LOOPBACK)), stls=False)
    with server, pytest.raises(TLSError, match=r"does not offer STLS: -ERR unknown command"):
        tls_trust.fetch_peer_certificate(LOOPBACK, server.port, IO_TIMEOUT, starttls=True)
    seen = server.finished()
    assert seen.before_tls == b"STLS\r\n"
    assert seen.version is None


def test_fetch_peer_from_a_closed_port_is_a_connect_error() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]
    with pytest.raises(ConnectError, match=f"cannot connect to {LOOPBACK}:{port}"):
        tls_trust.fetch_peer_certificate(LOOPBACK, port, IO_TIMEOUT, starttls=False)
