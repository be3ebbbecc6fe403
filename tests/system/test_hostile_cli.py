"""A hostile server seen through the command as a user runs it (issue 11, items 5 and 12).

Memory is measured on the process itself (``wait4``), so the figure is the client's alone.
Remote text (a greeting, an ``-ERR``, a CAPA line, a UIDL, a certificate's subject) must reach
the terminal with its control characters escaped, on every path: errors, ``serverinfo``,
``--debug``.
"""

from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pop3s_fetch.demo.server import Faults, MailStore, Pop3Server
from tests.support.cli import Cli, make_cli

PASSWORD = "hostile-cli-password"
ESC = "\x1b"
TITLE = "\x1b]0;owned\x07"  # OSC 0: set the window title
LINK = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"  # OSC 8: a hyperlink
FORGED = "\r+OK all is well"  # a CR that would overwrite the line with a forged one


@pytest.fixture
def server(server_ssl_context: ssl.SSLContext) -> Iterator[Pop3Server]:
    store = MailStore([b"Subject: x\n\nhello\n"])
    with Pop3Server(server_ssl_context, {"alice": (PASSWORD, store)}) as running:
        yield running


def configured(tmp_path: Path, port: int, ca: Path, *, timeout: float = 5) -> Cli:
    cli = make_cli(tmp_path)
    cli.write_config(
        "[accounts.evil]\n"
        f'host = "127.0.0.1"\nport = {port}\nusername = "alice"\n'
        f'destination = "{tmp_path / "Mail"}"\nca_file = "{ca}"\ntimeout = {timeout}\n'
        f'password_command = ["printf", "{PASSWORD}"]\n'
    )
    return cli


def assert_clean(text: str) -> None:
    assert ESC not in text
    assert "\r" not in text
    assert "\x07" not in text
    assert "\x9b" not in text


# --- bounded memory ---------------------------------------------------------------------------


GNU_TIME = Path("/usr/bin/time")


def peak_rss_mib(cli: Cli, tmp_path: Path, *args: str) -> tuple[int, float, str]:
    """Run the command; its exit status, its own peak RSS in MiB, and its stderr.

    GNU time starts it, so the figure is the program's alone: a child forked from this large
    pytest process would carry the parent's pages into its high-water mark until exec.
    """
    if not GNU_TIME.exists():
        pytest.skip("needs GNU time (Debian package time) to measure a process's peak RSS")
    report = tmp_path / "rss"
    done = subprocess.run(
        [str(GNU_TIME), "-f", "%M", "-o", str(report), sys.executable, "-m", "pop3s_fetch", *args],
        env=cli.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    kib = int(report.read_text().split()[-1])
    return done.returncode, kib / 1024, done.stderr


@pytest.mark.parametrize(
    ("verb", "limit", "ceiling"),
    [("CAPA", "65,536", 60), ("UIDL", "41,000,000", 150)],
)
def test_an_endless_reply_is_cut_off_with_memory_bounded(
    tmp_path: Path, server: Pop3Server, ca_file: Path, verb: str, limit: str, ceiling: float
) -> None:
    """An endless CAPA took the client to 1 GiB, an endless UIDL to 968 MiB."""
    server.faults = Faults(endless_reply_to=frozenset({verb}))
    cli = configured(tmp_path, server.port, ca_file)
    code, peak, stderr = peak_rss_mib(cli, tmp_path, "sync")
    assert code == 76
    assert f"the server's {verb} reply is longer than {limit} bytes" in stderr
    assert peak < ceiling, f"peak RSS {peak:.0f} MiB"


# --- clean terminals --------------------------------------------------------------------------


def test_an_err_text_is_shown_escaped(tmp_path: Path, server: Pop3Server, ca_file: Path) -> None:
    hostile = f"-ERR [AUTH] {TITLE}{LINK}{FORGED}\r\n".encode()
    server.faults = Faults(raw_replies={"PASS": hostile})
    result = configured(tmp_path, server.port, ca_file).run("sync")
    assert result.code == 77
    assert_clean(result.output)
    assert "\\x1b]0;owned\\x07" in result.stderr
    assert "\\x1b]8;;https://evil.example/" in result.stderr


def test_a_greeting_and_capa_are_shown_escaped_by_serverinfo(
    tmp_path: Path, server: Pop3Server, ca_file: Path
) -> None:
    server.faults = Faults(
        greeting=f"+OK hi {TITLE}\r\n".encode(),
        raw_replies={
            "CAPA": f"+OK\r\nUIDL\r\nUSER\r\nIMPLEMENTATION evil{FORGED}\x1b[2J\r\n.\r\n".encode()
        },
    )
    result = configured(tmp_path, server.port, ca_file).run("serverinfo", "evil")
    assert result.code == 0, result.output
    assert_clean(result.output)
    assert "greeting: +OK hi \\x1b]0;owned\\x07" in result.stdout
    lines = result.stdout.splitlines()
    assert "STLS:         no" in lines  # the CR did not forge an "STLS: yes" line
    assert "IMPLEMENTATION: evil +OK all is well\\x1b[2J" in lines


def test_a_uidl_is_shown_escaped_in_the_error(
    tmp_path: Path, server: Pop3Server, ca_file: Path
) -> None:
    server.faults = Faults(raw_replies={"UIDL": f"+OK\r\n1 ab{ESC}[31mc\r\n.\r\n".encode()})
    result = configured(tmp_path, server.port, ca_file).run("sync")
    assert result.code == 76
    assert_clean(result.output)
    assert "\\x1b[31m" in result.stderr


def test_debug_lines_are_escaped(tmp_path: Path, server: Pop3Server, ca_file: Path) -> None:
    server.faults = Faults(greeting=f"+OK {TITLE}{FORGED}\r\n".encode())
    result = configured(tmp_path, server.port, ca_file).run("--debug", "sync")
    assert result.code == 0, result.output
    assert_clean(result.output)
    assert "\\x1b]0;owned\\x07" in result.stderr
    assert PASSWORD not in result.output


def hostile_self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate whose subject is an attack on the terminal."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mail{TITLE}{FORGED}")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "evil.pem", directory / "evil.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_a_self_signed_certificates_subject_is_shown_escaped(tmp_path: Path, ca_file: Path) -> None:
    """No valid certificate is needed to reach the refusal text: its subject is printed."""
    cert_file, key_file = hostile_self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    with Pop3Server(context, {"alice": (PASSWORD, MailStore([]))}) as evil:
        result = configured(tmp_path, evil.port, ca_file).run("sync")
    assert result.code == 69
    assert_clean(result.output)
    assert "mail\\x1b]0;owned\\x07" in result.stderr
