"""Which server certificates we trust, and how a refusal is explained to the user.

Owns the client ``SSLContext`` (trust store, pin mode, minimum TLS version, strict X.509,
client certificate), a small DER reader that summarises a certificate without third-party
libraries, the certificate pin check, and the one-line :class:`TLSError` that names what failed
and what to configure. It must not know about POP3 sessions, accounts or the configuration file:
callers hand it ``config.TlsSettings`` and raw certificate bytes.

``fetch_peer_certificate`` is the one place that handshakes without verifying. It exists only to
describe a certificate that verification has already refused, and sends no data at all (with
STARTTLS: only the ``STLS`` command).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pop3s_fetch import socks
from pop3s_fetch.errors import ConnectError, TLSError

if TYPE_CHECKING:
    from pop3s_fetch.config import TlsSettings

FINGERPRINT_PREFIX = "sha256:"
#: File names in a ``ca`` directory that are loaded one by one (a plain directory of PEM files
#: has no ``c_rehash`` links, so OpenSSL's lazy capath lookup alone would find nothing in it).
CA_FILE_SUFFIXES = (".pem", ".crt")
_HASHED_LINK = re.compile(r"^[0-9a-f]{8}\.\d+$")
_MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_MAX_GREETING = 4096
#: Versions (as ``SSLSocket.version()`` names them) below each ``tls_min_version``.
_OLD_VERSIONS = {
    "1.2": frozenset({"SSLv3", "TLSv1", "TLSv1.1"}),
    "1.3": frozenset({"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2"}),
}

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that decide which check failed.
_NOT_YET_VALID = 9
_EXPIRED = 10
_SELF_SIGNED = frozenset({18, 19})
_UNKNOWN_ISSUER = frozenset({2, 20, 21, 27})
_NAME_MISMATCH = frozenset({62, 64})
#: 79-94 are the checks that VERIFY_X509_STRICT adds (OpenSSL 3.0).
_STRICT_ONLY = frozenset(range(79, 95))
# Handshake failure reasons meaning "no TLS version in common" or "not TLS at all".
_OLD_PROTOCOL_REASONS = frozenset(
    {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"}
)
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"})


# -- contexts ---------------------------------------------------------------------------------


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """Return the context for connecting to a server under ``settings``.

    Without a pin the chain and host name are verified against ``settings.ca``. With a pin
    nothing is verified by OpenSSL: the caller must call :func:`check_pin` on the peer's
    certificate right after the handshake and before sending anything.

    Raises:
        TLSError: the CA file/directory or the client certificate cannot be loaded.
    """
    if settings.fingerprint is not None:
        context = _pinned_context()
    else:
        context = _verifying_context(settings.ca)
    context.minimum_version = _MIN_VERSIONS[settings.min_version]
    _apply_strictness(context, strict=settings.x509_strict)
    _load_client_certificate(context, settings.client_cert, settings.client_key)
    return context


def _pinned_context() -> ssl.SSLContext:
    """A context that completes any handshake: the pin, checked afterwards, is the trust."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _verifying_context(ca: str) -> ssl.SSLContext:
    if ca == "certifi":
        import certifi  # imported here: only commands that connect pay for it

        return _context_from_file(Path(certifi.where()), "certifi")
    if ca == "system":
        return _system_context()
    path = Path(ca)
    if path.is_dir():
        return _context_from_directory(path)
    if not path.exists():
        raise TLSError(
            f"ca = {ca}: no such file or directory",
            hint='set ca to a PEM file or directory of CA certificates, "certifi" or "system"',
        )
    return _context_from_file(path, ca)


def _context_from_file(path: Path, label: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as err:
        raise _unloadable_ca(label, path, err) from err


def _system_context() -> ssl.SSLContext:
    """OpenSSL's default paths (the OS trust store), which certifi's bundle does not include."""
    context = ssl.create_default_context()
    if context.cert_store_stats()["x509_ca"] == 0 and not _has_hashed_links(
        ssl.get_default_verify_paths().capath
    ):
        paths = ssl.get_default_verify_paths()
        raise TLSError(
            f"ca = system, but the system trust store is empty "
            f"(OpenSSL looks in {paths.cafile} and {paths.capath})",
            hint='install the ca-certificates package, or set ca = "certifi"',
        )
    return context


def _context_from_directory(directory: Path) -> ssl.SSLContext:
    """Trust every certificate file in ``directory``, plus any ``c_rehash`` links in it."""
    context = ssl.create_default_context(capath=str(directory))
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in CA_FILE_SUFFIXES)
    for path in files:
        try:
            context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as err:
            raise _unloadable_ca(str(path), path, err) from err
    if not files and not _has_hashed_links(str(directory)):
        raise TLSError(
            f"ca = {directory}: the directory holds no *.pem or *.crt file",
            hint="put the CA certificates there as PEM files, or point ca at one PEM file",
        )
    return context


def _has_hashed_links(capath: str | None) -> bool:
    if not capath or not Path(capath).is_dir():
        return False
    return any(_HASHED_LINK.match(entry.name) for entry in Path(capath).iterdir())


def _unloadable_ca(label: str, path: Path, err: OSError | ssl.SSLError) -> TLSError:
    """Name the file and what is wrong with it, in words, not in OpenSSL's error string.

    The common mistakes are a certificate saved in DER (binary) form, as browsers and
    Windows export it, and the wrong PEM file (a key, or some other text): each gets its fix.
    """
    hint = "ca must name a readable PEM file (or directory of them) holding CA certificates"
    if isinstance(err, ssl.SSLError):  # first: an SSLError is an OSError too
        if err.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            detail, hint = _no_certificate_in(path, hint)
        else:
            detail = str(err)
    else:
        detail = err.strerror or str(err)
    return TLSError(f"cannot load CA certificates from {label}: {detail}", hint=hint)


def _no_certificate_in(path: Path, hint: str) -> tuple[str, str]:
    """What a CA file that OpenSSL found no certificate in holds instead, and the fix."""
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError:
        return "it holds no PEM certificate", hint
    if head.startswith(b"\x30\x82"):  # an ASN.1 SEQUENCE: a certificate in DER form
        return "it holds a DER (binary) certificate, not PEM", (
            f"convert it: openssl x509 -inform der -in {path} -out {path}.pem, "
            f'then set ca = "{path}.pem"'
        )
    if b"PRIVATE KEY-----" in head:
        return "it holds a private key, not a certificate", (
            "set ca to the CA's certificate (-----BEGIN CERTIFICATE-----), never a key"
        )
    return "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)", hint


def _apply_strictness(context: ssl.SSLContext, *, strict: bool) -> None:
    """Set or clear ``VERIFY_X509_STRICT`` so every Python version behaves alike.

    Python 3.13 turns the flag on by default. Some corporate and older private CAs fail it
    (e.g. a CA certificate whose basicConstraints is not marked critical, or a missing
    authority key identifier); ``x509_strict = false`` is the documented way to accept them.
    """
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    else:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT


def _load_client_certificate(context: ssl.SSLContext, cert: Path | None, key: Path | None) -> None:
    if cert is None:
        if key is not None:
            raise TLSError(
                f"client_key = {key} is set without client_cert",
                hint="set client_cert to the PEM file of the certificate that goes with the key",
            )
        return
    asked_passphrase = False

    def no_passphrase() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal, which cron cannot answer.
        nonlocal asked_passphrase
        asked_passphrase = True
        return b""

    files = f"{cert} and {key}" if key is not None else str(cert)
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except (OSError, ssl.SSLError) as err:
        if asked_passphrase:
            hint = "the private key is encrypted; store it unencrypted with mode 0600"
        else:
            hint = "client_cert and client_key must be readable PEM files that belong together"
        detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise TLSError(
            f"cannot load the client certificate from {files}: {detail}", hint=hint
        ) from err


# -- certificate summaries --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What a user needs to judge a certificate: names, validity and the pinnable fingerprint."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sha256: str  # "sha256:<64 lowercase hex>", pasteable as ``fingerprint = ...``
    self_signed: bool  # subject and issuer are the same name
    san: tuple[str, ...]  # DNS names and IP addresses from subjectAltName

    @property
    def names(self) -> tuple[str, ...]:
        """Names the certificate is valid for: its SANs, else (legacy) its subject CN."""
        if self.san:
            return self.san
        common_name = _common_name(self.subject)
        return (common_name,) if common_name else ()


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, in the form ``fingerprint =`` takes."""
    return FINGERPRINT_PREFIX + hashlib.sha256(der).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """``sha256:AB:CD...`` / ``abcd...`` -> ``sha256:abcd...``.

    Raises:
        ValueError: not 32 bytes of hex, optionally ``:``-separated and ``sha256:``-prefixed.
    """
    body = text.strip().lower()
    body = body.removeprefix(FINGERPRINT_PREFIX).replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", body):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
    return FINGERPRINT_PREFIX + body


def describe(der: bytes) -> CertificateSummary:
    """Summarise a DER X.509 certificate (stdlib only; ``cryptography`` is not a dependency).

    Raises:
        ValueError: ``der`` is not a well-formed X.509 certificate.
    """
    try:
        return _parse_certificate(der)
    except (IndexError, UnicodeDecodeError) as err:
        raise ValueError(f"malformed certificate: {err}") from err


def _parse_certificate(der: bytes) -> CertificateSummary:
    certificate = _only(der, 0, len(der), _SEQUENCE)
    tbs = next(_children(der, certificate))
    fields = list(_children(der, tbs))
    if fields and fields[0].tag == _VERSION_TAG:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    issuer, validity, subject = fields[2], fields[3], fields[4]
    not_before, not_after = (_time(der, t) for t in _children(der, validity))
    return CertificateSummary(
        subject=_name(der, subject),
        issuer=_name(der, issuer),
        not_before=not_before,
        not_after=not_after,
        sha256=fingerprint(der),
        self_signed=der[issuer.start : issuer.end] == der[subject.start : subject.end],
        san=_subject_alt_names(der, fields[6:]),
    )


# A minimal DER reader: enough of X.690 for the fields above, nothing more.

_SEQUENCE = 0x30
_SET = 0x31
_OID = 0x06
_OCTET_STRING = 0x04
_BOOLEAN = 0x01
_VERSION_TAG = 0xA0
_EXTENSIONS_TAG = 0xA3
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_SAN_DNS = 0x82
_SAN_IP = 0x87
_SAN_OID = "2.5.29.17"
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # TeletexString (treated as Latin-1, as most tools do)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}
_ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
}


@dataclass(frozen=True, slots=True)
class _Node:
    """One TLV: its tag and where its contents lie in the buffer (``start``..``end``)."""

    tag: int
    start: int
    end: int


def _read(der: bytes, offset: int, limit: int) -> _Node:
    tag = der[offset]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tags do not occur in certificates")
    first = der[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise ValueError("indefinite or oversized length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > limit:
        raise ValueError("length runs past the enclosing element")
    return _Node(tag, start, end)


def _only(der: bytes, offset: int, limit: int, tag: int) -> _Node:
    node = _read(der, offset, limit)
    if node.tag != tag or node.end != limit:
        raise ValueError(f"expected one element with tag {tag:#x}")
    return node


def _children(der: bytes, parent: _Node) -> Iterator[_Node]:
    offset = parent.start
    while offset < parent.end:
        node = _read(der, offset, parent.end)
        yield node
        offset = node.end


def _oid(der: bytes, node: _Node) -> str:
    if node.tag != _OID:
        raise ValueError("expected an object identifier")
    body = der[node.start : node.end]
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def _name(der: bytes, name: _Node) -> str:
    """An X.501 Name as RFC 4514 orders it (most specific first): ``CN=x, O=y, C=z``."""
    parts: list[str] = []
    for rdn in _children(der, name):
        for attribute in _children(der, rdn):
            type_node, value_node = _children(der, attribute)
            oid = _oid(der, type_node)
            parts.append(f"{_ATTRIBUTE_NAMES.get(oid, oid)}={_string(der, value_node)}")
    return ", ".join(reversed(parts))


def _string(der: bytes, node: _Node) -> str:
    codec = _STRING_CODECS.get(node.tag)
    raw = der[node.start : node.end]
    return raw.decode(codec) if codec else "#" + raw.hex()


def _time(der: bytes, node: _Node) -> datetime:
    text = der[node.start : node.end].decode("ascii")
    if node.tag == _UTC_TIME:
        # RFC 5280: two-digit years 50-99 are 19xx, 00-49 are 20xx.
        century = "19" if int(text[:2]) >= 50 else "20"
        text = century + text
    elif node.tag != _GENERALIZED_TIME:
        raise ValueError("expected a UTCTime or GeneralizedTime")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _subject_alt_names(der: bytes, trailing: list[_Node]) -> tuple[str, ...]:
    for node in trailing:
        if node.tag != _EXTENSIONS_TAG:
            continue
        extensions = _only(der, node.start, node.end, _SEQUENCE)
        for extension in _children(der, extensions):
            parts = list(_children(der, extension))
            if _oid(der, parts[0]) == _SAN_OID:
                value = parts[-1]
                general_names = _only(der, value.start, value.end, _SEQUENCE)
                return tuple(_general_names(der, general_names))
    return ()


def _general_names(der: bytes, names: _Node) -> Iterator[str]:
    for name in _children(der, names):
        raw = der[name.start : name.end]
        if name.tag == _SAN_DNS:
            yield raw.decode("ascii")
        elif name.tag == _SAN_IP:
            yield str(ipaddress.ip_address(raw))


def _common_name(subject: str) -> str | None:
    for part in subject.split(", "):
        if part.startswith("CN="):
            return part[3:]
    return None


# -- pins and refusals ------------------------------------------------------------------------


def check_pin(
    der: bytes, expected: str, *, host: str = "the server", port: int | None = None
) -> None:
    """Accept the peer's certificate only if its SHA-256 fingerprint equals ``expected``.

    A match is the whole of trust in pin mode: chain, expiry and host name are not checked,
    which is what lets a pinned self-signed certificate work.

    Raises:
        TLSError: the fingerprints differ (always a failure, never a warning).
        ValueError: ``expected`` is not a SHA-256 fingerprint (config.py validates it first).
    """
    actual = fingerprint(der)
    if hmac.compare_digest(actual, normalise_fingerprint(expected)):
        return
    summary = _safe_describe(der)
    raise TLSError(
        f"refused the TLS certificate of {_where(host, port)} (pin mismatch: "
        f"expected {normalise_fingerprint(expected)}){_facts(summary, der)}",
        hint="the certificate is not the one pinned: it was replaced, or this is not your "
        f"server. Only after its administrator confirms {actual}, set "
        f'fingerprint = "{actual}"',
    )


def refusal(
    host: str,
    port: int,
    err: ssl.SSLError,
    der: bytes | None,
    settings: TlsSettings,
    *,
    peer_version: str | None = None,
) -> TLSError:
    """The one-line error for a failed handshake: what failed, the certificate, the fix.

    ``der`` is the refused certificate when it could be fetched (see :func:`fetch_peer`),
    else None and the certificate facts are left out. ``peer_version`` is the TLS version the
    server chose in that unverified handshake: some servers (Dovecot) drop a client whose
    versions they do not share without a protocol alert, and only this tells the cause.
    """
    summary = _safe_describe(der) if der is not None else None
    check, hint = _diagnose(host, err, summary, settings, peer_version)
    return TLSError(
        f"refused the TLS connection to {host}:{port} ({check}){_facts(summary, der)}",
        hint=hint,
    )


def _diagnose(
    host: str,
    err: ssl.SSLError,
    summary: CertificateSummary | None,
    settings: TlsSettings,
    peer_version: str | None,
) -> tuple[str, str]:
    """Name the failed check and its fix."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return _diagnose_certificate(host, err, summary, settings)
    reason = err.reason or ""
    too_old = _OLD_VERSIONS[settings.min_version]
    if reason in _OLD_PROTOCOL_REASONS or peer_version in too_old:
        if settings.min_version == "1.3":
            return "protocol version too old", (
                'the server offers no TLS 1.3; set tls_min_version = "1.2" to allow TLS 1.2'
            )
        return "protocol version too old", (
            "the server only offers TLS 1.0/1.1; pop3s-fetch requires 1.2 or newer"
        )
    if reason in _NOT_TLS_REASONS:
        return "the server did not answer in TLS", (
            'this port does not speak TLS at once: for port 110 set tls = "starttls", '
            "or use the POP3S port (995)"
        )
    if reason == "UNEXPECTED_EOF_WHILE_READING" or isinstance(err, ssl.SSLEOFError):
        return "the server closed the connection during the TLS handshake", (
            "the server wants something pop3s-fetch does not offer (an old TLS version, a "
            "weak cipher or a client certificate); ask its administrator"
        )
    return f"TLS handshake failed: {reason or err}", (
        "the server and pop3s-fetch found no TLS settings in common"
    )


def _diagnose_certificate(
    host: str,
    err: ssl.SSLCertVerificationError,
    summary: CertificateSummary | None,
    settings: TlsSettings,
) -> tuple[str, str]:
    code = err.verify_code
    pin = f'fingerprint = "{summary.sha256}"' if summary else 'fingerprint = "sha256:..."'
    if code == _EXPIRED:
        date = _date(summary.not_after) if summary else "(date unknown)"
        return "expired", (
            f"the certificate expired on {date}: the server's administrator must renew it"
        )
    if code == _NOT_YET_VALID:
        date = _date(summary.not_before) if summary else "(date unknown)"
        return "not yet valid", f"the certificate is valid from {date}: check this clock"
    if code in _NAME_MISMATCH:
        names = ", ".join(summary.names) if summary and summary.names else "other names"
        return "host name mismatch", (
            f"the certificate is for {names}, not {host}: set host to one of them"
        )
    if code in _SELF_SIGNED or code in _UNKNOWN_ISSUER:
        check = "self-signed" if code in _SELF_SIGNED else "unknown issuer"
        trusted = {"certifi": "certifi's CA bundle", "system": "the system trust store"}.get(
            settings.ca, settings.ca
        )
        return check, (
            f'its issuer is not in {trusted}: set ca = "/path/to/issuer-ca.pem" or pin it '
            f"with {pin} (check the fingerprint with the server's administrator first)"
        )
    if code in _STRICT_ONLY and settings.x509_strict:
        return f"fails strict X.509 checks: {err.verify_message}", (
            "the CA's certificate breaks RFC 5280 rules that Python 3.13 enforces; "
            "if you trust this CA anyway, set x509_strict = false"
        )
    return f"certificate verification failed: {err.verify_message}", (
        f"ask the server's administrator to fix the certificate, or pin it with {pin}"
    )


def _safe_describe(der: bytes) -> CertificateSummary | None:
    """A refusal must still be reported if the refused certificate cannot be parsed."""
    try:
        return describe(der)
    except ValueError:
        return None


def _facts(summary: CertificateSummary | None, der: bytes | None) -> str:
    if summary is not None:
        return (
            f": subject {summary.subject}; issuer {summary.issuer}; "
            f"expires {_date(summary.not_after)}; {summary.sha256}"
        )
    return f": {fingerprint(der)}" if der is not None else ""


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _where(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


# -- the unverified look at a refused certificate ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """What an unverified handshake learnt: the certificate and the version the server chose."""

    der: bytes
    version: str | None  # "TLSv1.3", "TLSv1.1", ...


def fetch_peer_certificate(
    host: str, port: int, timeout: float, *, starttls: bool, proxy: socks.Proxy | None = None
) -> bytes:
    """The server's certificate (DER), from an unverified handshake: see :func:`fetch_peer`."""
    return fetch_peer(host, port, timeout, starttls=starttls, proxy=proxy).der


def fetch_peer(
    host: str, port: int, timeout: float, *, starttls: bool, proxy: socks.Proxy | None = None
) -> Peer:
    """Handshake without verification and return the server's certificate and TLS version.

    Through ``proxy`` when the account has one, as the verified connection went.

    Only for describing a connection that verification refused: the connection is closed
    right after the handshake. Any protocol version and cipher is allowed here, so that even a
    server refused for its old TLS version can be described; no data is sent over it.

    Raises:
        ConnectError: the server cannot be reached.
        TLSError: no handshake (or, with ``starttls``, no ``STLS``) was possible.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    try:
        raw = (
            socks.open_connection(proxy, host, port, timeout)
            if proxy is not None
            else socket.create_connection((host, port), timeout=timeout)
        )
        with raw:
            if starttls:
                _start_tls(raw, f"{host}:{port}")
            with context.wrap_socket(raw, server_hostname=_sni(host)) as tls:
                der = tls.getpeercert(binary_form=True)
                version = tls.version()
    except ssl.SSLError as err:
        raise TLSError(f"no TLS handshake with {host}:{port}: {err.reason or err}") from err
    except OSError as err:
        raise ConnectError(f"cannot connect to {host}:{port}: {err.strerror or err}") from err
    if not der:
        raise TLSError(f"{host}:{port} presented no certificate")
    return Peer(der, version)


def explain_refusal(
    host: str,
    port: int,
    err: ssl.SSLError,
    settings: TlsSettings,
    *,
    timeout: float,
    starttls: bool,
    proxy: socks.Proxy | None = None,
) -> TLSError:
    """:func:`refusal`, with the certificate fetched by a second, unverified handshake.

    For the caller's ``except ssl.SSLError`` around the verified handshake. If the second look
    fails too, the error is still built, without the certificate's facts.
    """
    try:
        peer = fetch_peer(host, port, timeout, starttls=starttls, proxy=proxy)
    except (TLSError, ConnectError):
        return refusal(host, port, err, None, settings)
    return refusal(host, port, err, peer.der, settings, peer_version=peer.version)


def _sni(host: str) -> str | None:
    """SNI carries host names only (RFC 6066); an address literal is not sent."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def _start_tls(sock: socket.socket, where: str) -> None:
    """Read the greeting, send ``STLS`` (nothing else) and require ``+OK``."""
    greeting = _read_line(sock)
    if not greeting.startswith(b"+OK"):
        raise TLSError(f"{where} did not greet with +OK: {greeting[:200]!r}")
    sock.sendall(b"STLS\r\n")
    answer = _read_line(sock)
    if not answer.startswith(b"+OK"):
        raise TLSError(
            f"{where} does not offer STLS: {answer.decode('utf-8', 'replace')[:200]}",
            hint='use tls = "implicit" with the POP3S port (995) if the server has one',
        )


def _read_line(sock: socket.socket) -> bytes:
    """One line, read a byte at a time so that no TLS handshake byte is consumed with it."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectError("the server closed the connection")
        line += byte
        if len(line) > _MAX_GREETING:
            raise TLSError("the server sent an overlong line before TLS")
    return bytes(line).rstrip(b"\r\n")
