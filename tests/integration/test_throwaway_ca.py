"""The demo's throwaway CA: what openssl makes must pass Python's (strict) verification."""

from __future__ import annotations

import datetime
import poplib
import shutil
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509  # a trustme dependency, so present wherever the tests run
from cryptography.x509.oid import ExtendedKeyUsageOID

from pop3s_fetch.demo import ca as throwaway_ca
from pop3s_fetch.demo.server import MailStore, Pop3Server
from pop3s_fetch.errors import Pop3sFetchError

needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command is not installed"
)


@pytest.fixture(scope="module")
def demo_ca(tmp_path_factory: pytest.TempPathFactory) -> throwaway_ca.ThrowawayCA:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    return throwaway_ca.create(tmp_path_factory.mktemp("demo-ca") / "nested")


def greeting(port: int, host: str, context: ssl.SSLContext) -> bytes:
    client = poplib.POP3_SSL(host, port, context=context, timeout=10)
    welcome = client.getwelcome()
    client.quit()
    return welcome


@needs_openssl
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("strict", [False, True], ids=["default", "x509-strict"])
def test_a_client_trusting_the_ca_verifies_the_server(
    demo_ca: throwaway_ca.ThrowawayCA, host: str, strict: bool
) -> None:
    context = ssl.create_default_context(cafile=str(demo_ca.ca_file))
    if strict:  # Python 3.13 turns this on by default
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    store = MailStore()
    with Pop3Server(throwaway_ca.server_context(demo_ca), {"demo": ("pw", store)}) as server:
        assert greeting(server.port, host, context) == b"+OK pop3s-fetch test server ready"


@needs_openssl
def test_a_client_trusting_another_ca_refuses_the_server(
    demo_ca: throwaway_ca.ThrowawayCA, other_ca_file: Path
) -> None:
    context = ssl.create_default_context(cafile=str(other_ca_file))
    with (
        Pop3Server(throwaway_ca.server_context(demo_ca), {}) as server,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        greeting(server.port, "127.0.0.1", context)


@needs_openssl
def test_the_certificates_are_backdated_and_say_what_they_are_for(
    demo_ca: throwaway_ca.ThrowawayCA,
) -> None:
    ca = x509.load_pem_x509_certificate(demo_ca.ca_file.read_bytes())
    leaf = x509.load_pem_x509_certificate(demo_ca.cert_file.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    for certificate in (ca, leaf):
        assert certificate.not_valid_before_utc < now - datetime.timedelta(minutes=30)
        assert certificate.not_valid_after_utc > now + datetime.timedelta(days=1)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert leaf.issuer == ca.subject
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


@needs_openssl
def test_private_keys_are_readable_by_the_owner_only(
    demo_ca: throwaway_ca.ThrowawayCA,
) -> None:
    for key in (demo_ca.key_file, demo_ca.key_file.with_name("ca-key.pem")):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_missing_openssl_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(Pop3sFetchError) as missing:
        throwaway_ca.create(tmp_path / "ca")
    assert str(missing.value) == "the openssl command was not found"
    assert missing.value.hint is not None
    assert "install the openssl command-line tool" in missing.value.hint


def test_a_failing_openssl_step_is_reported_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "openssl"
    fake.write_text("#!/bin/sh\necho 'noise' >&2\necho 'unsupported algorithm' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(Pop3sFetchError) as failed:
        throwaway_ca.create(tmp_path / "ca")
    assert str(failed.value) == "openssl failed to create the demo's CA key: unsupported algorithm"


def test_a_key_file_is_private_before_the_key_is_written(tmp_path: Path) -> None:
    existing = tmp_path / "existing-key.pem"
    existing.write_bytes(b"")
    existing.chmod(0o644)
    for path in (tmp_path / "new-key.pem", existing):
        throwaway_ca.create_private(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")  # as openssl or trustme would
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
