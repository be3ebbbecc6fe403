"""Throwaway certificate authorities and a server certificate for TLS tests.

Owns the trustme CAs and the PEM files written from them, so that no certificate is checked
in and every test verifies TLS for real: :func:`write_server_cert` is the one way a leaf's
files are written (the benchmarks use it too), its key created private by the demo CA's rule.
Knows nothing about POP3 or the servers using them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from pop3s_fetch.demo.ca import create_private

SERVER_IDENTITIES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class ServerCert:
    """A leaf certificate for the loopback names, with its PEM files on disk."""

    leaf: trustme.LeafCert
    cert_chain_file: Path  # the leaf and any intermediates, never the root: what a server sends
    key_file: Path


def write_server_cert(leaf: trustme.LeafCert, directory: Path) -> ServerCert:
    """Write the leaf's chain and key as the PEM files a server reads; the key stays private."""
    chain_file = directory / "server-chain.pem"
    key_file = directory / "server-key.pem"
    chain_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    create_private(key_file)
    leaf.private_key_pem.write_to_path(str(key_file))
    return ServerCert(leaf=leaf, cert_chain_file=chain_file, key_file=key_file)


@pytest.fixture(scope="session")
def test_ca() -> trustme.CA:
    """The CA that signs every test server's certificate."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(test_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PEM of :func:`test_ca`, for clients that verify the test servers."""
    path = tmp_path_factory.mktemp("ca") / "test-ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def other_ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PEM of a second CA that signed nothing the servers present: trusting it must fail."""
    path = tmp_path_factory.mktemp("other-ca") / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_cert(test_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> ServerCert:
    """A leaf for localhost, 127.0.0.1 and ::1 signed by :func:`test_ca`."""
    leaf = test_ca.issue_cert(*SERVER_IDENTITIES, common_name="localhost")
    return write_server_cert(leaf, tmp_path_factory.mktemp("server-cert"))


@pytest.fixture(scope="session")
def server_ssl_context(server_cert: ServerCert) -> ssl.SSLContext:
    """Server-side context presenting :func:`server_cert`, for in-process fake servers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server_cert.cert_chain_file, server_cert.key_file)
    return context
