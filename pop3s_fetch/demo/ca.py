"""A throwaway certificate authority and a loopback server certificate, for ``pop3s-fetch demo``.

The demo must show verified TLS without shipping a key or depending on test libraries, so it
mints a fresh CA and a leaf for ``localhost``/``127.0.0.1`` at run time with the ``openssl``
command (argv lists, no shell). The leaf carries what strict X.509 checking (Python 3.13's
default ``VERIFY_X509_STRICT``) wants: key identifiers, key usage, extended key usage and a
subjectAltName. Both are valid from an hour ago, so a clock a little behind is no problem.

This module owns the openssl invocations, the PEM files and how a key file is created. It
must not know POP3 or the client's TLS settings; :func:`server_context` is for the built-in
server only.
"""

from __future__ import annotations

import datetime
import functools
import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pop3s_fetch.errors import Pop3sFetchError

__all__ = ["ThrowawayCA", "create", "create_private", "server_context"]

VALIDITY = datetime.timedelta(days=7)
BACKDATE = datetime.timedelta(hours=1)
_OPENSSL_HINT = "install the openssl command-line tool (Debian: apt install openssl)"
_OPENSSL_TIMEOUT = 60.0

# openssl's CA database lives beside the PEM files; paths are relative to the directory
# openssl runs in, so no path ever has to be quoted inside this file.
_CONFIG = """\
[ ca ]
default_ca = throwaway_ca

[ throwaway_ca ]
database = index.txt
serial = serial
new_certs_dir = issued
default_md = sha256
policy = any_name
unique_subject = no
email_in_dn = no
copy_extensions = none

[ any_name ]
commonName = supplied

[ req ]
distinguished_name = request_name
prompt = no

[ request_name ]
commonName = unused

[ ca_extensions ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ server_extensions ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class ThrowawayCA:
    """PEM files: the CA certificate to trust, and the leaf and key the server presents."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def create(directory: Path) -> ThrowawayCA:
    """Mint a new CA and a leaf for localhost/127.0.0.1 in ``directory`` (created if missing).

    Raises:
        Pop3sFetchError: openssl is not installed, or one of its steps failed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise Pop3sFetchError("the openssl command was not found", hint=_OPENSSL_HINT)
    _prepare(directory)
    not_before = datetime.datetime.now(datetime.UTC) - BACKDATE
    dates = ["-startdate", _openssl_time(not_before)]
    dates += ["-enddate", _openssl_time(not_before + VALIDITY)]
    openssl_in_directory = functools.partial(_run_openssl, openssl, directory)
    _issue(
        openssl_in_directory,
        "CA",
        key="ca-key.pem",
        subject="/CN=pop3s-fetch throwaway demo CA",
        signing=["-selfsign"],
        extensions="ca_extensions",
        dates=dates,
        out="ca.pem",
    )
    _issue(
        openssl_in_directory,
        "server",
        key="server-key.pem",
        subject="/CN=localhost",
        signing=["-cert", "ca.pem"],
        extensions="server_extensions",
        dates=dates,
        out="server.pem",
    )
    return ThrowawayCA(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )


def _prepare(directory: Path) -> None:
    """Write openssl's configuration and CA database, and create the key files private."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "issued").mkdir(exist_ok=True)
    (directory / "openssl.cnf").write_text(_CONFIG, encoding="ascii")
    (directory / "index.txt").write_text("", encoding="ascii")
    (directory / "serial").write_text("01\n", encoding="ascii")
    for key in ("ca-key.pem", "server-key.pem"):
        create_private(directory / key)


def create_private(path: Path) -> None:
    """Create ``path`` (if missing) readable and writable by its owner only, for a key.

    Writers that truncate an existing file (openssl, ``open(path, "wb")``) keep its mode, so
    a key written afterwards is never readable by anyone else, not even for a moment. The
    tests write their own keys through this too: one rule for every key file we make.
    """
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch's mode passes through the umask, and is ignored if path exists


def _issue(
    run: Callable[[str, list[str]], None],
    role: str,
    *,
    key: str,
    subject: str,
    signing: list[str],
    extensions: str,
    dates: list[str],
    out: str,
) -> None:
    """Make a P-256 key and a certificate for it, signed by the CA key (``ca-key.pem``)."""
    config = ["-config", "openssl.cnf"]
    request = f"{out}.csr"
    run(f"{role} key", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", key])  # fmt: skip
    run(f"{role} request", ["req", "-new", *config, "-key", key, "-subj", subject,
        "-out", request])  # fmt: skip
    run(f"{role} certificate", ["ca", "-batch", "-notext", *config, *signing,
        "-keyfile", "ca-key.pem", "-in", request, "-extensions", extensions, *dates,
        "-out", out])  # fmt: skip


def server_context(ca: ThrowawayCA) -> ssl.SSLContext:
    """Return a TLS 1.2+ server context presenting the throwaway leaf certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(ca.cert_file, ca.key_file)
    return context


def _openssl_time(moment: datetime.datetime) -> str:
    """GeneralizedTime in UTC, the form ``openssl ca -startdate/-enddate`` accepts."""
    return moment.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%SZ")


def _run_openssl(openssl: str, directory: Path, step: str, arguments: list[str]) -> None:
    try:
        subprocess.run(
            [openssl, *arguments],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
            timeout=_OPENSSL_TIMEOUT,
        )
    except subprocess.CalledProcessError as err:
        lines = (err.stderr or "").strip().splitlines()
        detail = lines[-1] if lines else f"exit status {err.returncode}"
        raise Pop3sFetchError(
            f"openssl failed to create the demo's {step}: {detail}", hint=_OPENSSL_HINT
        ) from err
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Pop3sFetchError(
            f"could not run openssl to create the demo's {step}: {err}", hint=_OPENSSL_HINT
        ) from err
