"""Extra private Dovecot instances whose TLS is wrong (or missing) in one precise way.

Each fixture starts one more Dovecot, for the whole test session, from the configuration that
``tests/support/dovecot.py`` writes, edited in a few named places (the edit fails loudly if that
configuration changes shape). Certificates are minted here, never checked in:

=========================  =====================================================================
fixture                    what the server presents on ``host:port``
=========================  =====================================================================
``dovecot_self_signed``    a self-signed leaf for localhost/127.0.0.1/::1 (no CA anywhere)
``dovecot_expired``        a leaf for the loopback names from ``test_ca``, expired yesterday
``dovecot_wrong_host``     a leaf from ``test_ca`` for ``mail.example.net`` only
``dovecot_old_tls``        the usual ``test_ca`` leaf, but only TLS 1.0 and 1.1 are offered
``dovecot_starttls``       the usual ``test_ca`` leaf on ``port`` (POP3S) *and* a plaintext
                           listener on ``plain_port`` that offers STLS
``dovecot_no_stls``        plaintext only on ``port`` (``ssl = no``): no STLS, no TLS at all,
                           and plaintext logins *allowed*, so a client that sent credentials
                           anyway would be seen logging in
=========================  =====================================================================

Every server carries what a test needs: ``host``, ``port``, ``ca_file`` (the CA that signed the
leaf; for the self-signed one, the leaf itself), ``fingerprint`` (``sha256:<hex>`` of the leaf,
computed here independently of pop3s_fetch), ``names`` (the leaf's subjectAltNames),
``not_after`` and ``add_user()`` as on the plain ``dovecot`` fixture.

Like the rest of ``tests/support`` this imports no client module of ``pop3s_fetch``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.certs import SERVER_IDENTITIES, ServerCert, write_server_cert
from tests.support.dovecot import (
    HOST,
    DovecotServer,
    free_port,
    require_dovecot,
)

WRONG_HOST_NAME = "mail.example.net"
SELF_SIGNED_COMMON_NAME = "pop3s-fetch self-signed test server"
OLD_TLS_MAX_PROTOCOL = "TLSv1.1"

#: Edits a generated ``dovecot.conf`` text for one variant; gets the server for its ports/paths.
ConfigEdit = Callable[[str, "VariantDovecot"], str]


@dataclass(frozen=True, slots=True)
class LeafFacts:
    """What the tests assert against, computed from the leaf's PEM without pop3s_fetch."""

    fingerprint: str  # "sha256:<64 lowercase hex>"
    names: tuple[str, ...]  # subjectAltName DNS names and IP addresses, in certificate order
    not_after: dt.datetime  # timezone-aware UTC


class VariantDovecot(DovecotServer):
    """A :class:`DovecotServer` whose configuration is edited before it starts."""

    def __init__(
        self,
        executable: str,
        cert: ServerCert,
        ca_file: Path,
        root: Path,
        *,
        edits: tuple[ConfigEdit, ...],
    ) -> None:
        super().__init__(executable, cert, ca_file, root)
        self._edits = edits
        self.plain_port = 0  # the STLS listener's port, for variants that have one
        facts = leaf_facts(cert.cert_chain_file)
        self.fingerprint = facts.fingerprint
        self.names = facts.names
        self.not_after = facts.not_after
        self.openssl_config = root / "openssl.cnf"

    def _prepare_files(self) -> None:
        super()._prepare_files()
        self.plain_port = free_port()
        text = self.config_path.read_text()
        for edit in self._edits:
            text = edit(text, self)
        self.config_path.write_text(text)


def leaf_facts(chain_file: Path) -> LeafFacts:
    """Fingerprint, names and expiry of the first certificate in ``chain_file``."""
    pem = chain_file.read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names: tuple[str, ...] = ()
    else:
        names = tuple(
            str(name.value)
            for name in san
            if isinstance(name, x509.DNSName | x509.IPAddress)  # the kinds TLS clients match
        )
    return LeafFacts(
        fingerprint="sha256:" + hashlib.sha256(der).hexdigest(),
        names=names,
        not_after=certificate.not_valid_after_utc,
    )


# -- configuration edits ----------------------------------------------------------------------


def replace_once(text: str, old: str, new: str) -> str:
    """Replace ``old`` (which must occur exactly once) so a changed base config cannot slip by."""
    if text.count(old) != 1:
        raise RuntimeError(
            f"tests/support/dovecot.py's configuration no longer holds {old!r} exactly once; "
            "update tests/support/dovecot_variants.py to match"
        )
    return text.replace(old, new)


_PLAIN_LISTENER_OFF = "  inet_listener pop3 {\n    port = 0\n  }\n"


def open_stls_listener(text: str, server: VariantDovecot) -> str:
    """Also listen in plaintext on ``plain_port``; ``ssl = required`` makes it offer STLS."""
    listener = (
        f"  inet_listener pop3 {{\n    address = {HOST}\n    port = {server.plain_port}\n  }}\n"
    )
    return replace_once(text, _PLAIN_LISTENER_OFF, listener)


def plaintext_only(text: str, server: VariantDovecot) -> str:
    """No TLS at all: ``port`` speaks plaintext POP3, offers no STLS and accepts USER/PASS."""
    text = replace_once(text, "ssl = required\n", "ssl = no\n")
    text = replace_once(text, "disable_plaintext_auth = yes\n", "disable_plaintext_auth = no\n")
    text = replace_once(
        text,
        f"  inet_listener pop3s {{\n    address = {HOST}\n    port = {server.port}\n"
        "    ssl = yes\n  }\n",
        "  inet_listener pop3s {\n    port = 0\n  }\n",
    )
    return replace_once(
        text,
        _PLAIN_LISTENER_OFF,
        f"  inet_listener pop3 {{\n    address = {HOST}\n    port = {server.port}\n  }}\n",
    )


def old_tls_only(text: str, server: VariantDovecot) -> str:
    """Offer TLS 1.0 and 1.1 only.

    Dovecot 2.3 has ``ssl_min_protocol`` but no maximum, so the maximum comes from an OpenSSL
    configuration file (``MaxProtocol``) handed to Dovecot's processes through
    ``import_environment``. OpenSSL 3 refuses TLS < 1.2 at security level 1 and above (their
    handshakes sign with SHA-1/MD5), hence ``@SECLEVEL=0`` in both cipher lists.
    """
    server.openssl_config.write_text(
        "openssl_conf = pop3s_fetch_test\n"
        "[pop3s_fetch_test]\n"
        "ssl_conf = ssl_section\n"
        "[ssl_section]\n"
        "system_default = old_tls\n"
        "[old_tls]\n"
        f"MaxProtocol = {OLD_TLS_MAX_PROTOCOL}\n"
        "CipherString = ALL:@SECLEVEL=0\n"
    )
    server.openssl_config.chmod(0o644)
    return replace_once(
        text,
        "ssl_min_protocol = TLSv1.2\n",
        "ssl_min_protocol = TLSv1\n"
        "ssl_cipher_list = ALL:@SECLEVEL=0\n"
        f"import_environment = TZ OPENSSL_CONF={server.openssl_config}\n",
    )


# -- certificates -----------------------------------------------------------------------------


def self_signed_leaf(now: dt.datetime) -> trustme.LeafCert:
    """A leaf signed by its own key, as ``openssl req -x509`` makes for a home server."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SELF_SIGNED_COMMON_NAME)])
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return trustme.LeafCert(key_pem, certificate.public_bytes(serialization.Encoding.PEM), [])


# -- fixtures ---------------------------------------------------------------------------------


def _start_variant(
    cert_for: Callable[[Path], ServerCert],
    ca_file_for: Callable[[ServerCert], Path],
    edits: tuple[ConfigEdit, ...],
) -> Iterator[VariantDovecot]:
    executable = require_dovecot()
    # Not tmp_path: Dovecot's unprivileged processes must reach the files (see dovecot.py).
    root = Path(tempfile.mkdtemp(prefix="pop3s-fetch-dovecot-variant-"))
    root.chmod(0o755)
    cert_dir = root / "cert"
    cert_dir.mkdir()
    cert = cert_for(cert_dir)
    server = VariantDovecot(executable, cert, ca_file_for(cert), root, edits=edits)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="session")
def dovecot_self_signed() -> Iterator[VariantDovecot]:
    """POP3S with a self-signed certificate; ``ca_file`` is that certificate itself."""
    yield from _start_variant(
        lambda d: write_server_cert(self_signed_leaf(_utc_now()), d),
        lambda cert: cert.cert_chain_file,
        (),
    )


@pytest.fixture(scope="session")
def dovecot_expired(test_ca: trustme.CA, ca_file: Path) -> Iterator[VariantDovecot]:
    """POP3S with a ``test_ca`` certificate for the loopback names that expired a day ago."""
    now = _utc_now()
    yield from _start_variant(
        lambda d: write_server_cert(
            test_ca.issue_cert(
                *SERVER_IDENTITIES,
                not_before=now - dt.timedelta(days=30),
                not_after=now - dt.timedelta(days=1),
            ),
            d,
        ),
        lambda _cert: ca_file,
        (),
    )


@pytest.fixture(scope="session")
def dovecot_wrong_host(test_ca: trustme.CA, ca_file: Path) -> Iterator[VariantDovecot]:
    """POP3S with a valid ``test_ca`` certificate for :data:`WRONG_HOST_NAME` only."""
    yield from _start_variant(
        lambda d: write_server_cert(test_ca.issue_cert(WRONG_HOST_NAME), d),
        lambda _cert: ca_file,
        (),
    )


@pytest.fixture(scope="session")
def dovecot_old_tls(server_cert: ServerCert, ca_file: Path) -> Iterator[VariantDovecot]:
    """POP3S with a valid certificate, but TLS 1.0/1.1 only."""
    yield from _start_variant(lambda _d: server_cert, lambda _cert: ca_file, (old_tls_only,))


@pytest.fixture(scope="session")
def dovecot_starttls(server_cert: ServerCert, ca_file: Path) -> Iterator[VariantDovecot]:
    """POP3S on ``port`` plus plaintext POP3 offering STLS on ``plain_port``."""
    yield from _start_variant(lambda _d: server_cert, lambda _cert: ca_file, (open_stls_listener,))


@pytest.fixture(scope="session")
def dovecot_no_stls(server_cert: ServerCert, ca_file: Path) -> Iterator[VariantDovecot]:
    """Plaintext POP3 on ``port`` with no STLS; plaintext USER/PASS would be accepted."""
    yield from _start_variant(lambda _d: server_cert, lambda _cert: ca_file, (plaintext_only,))


def legacy_client_context(ca_file: Path) -> ssl.SSLContext:
    """A verifying client context that *can* speak TLS 1.0/1.1: proof the old-TLS server works."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context
