"""``doctor``: a healthy account against a real Dovecot, and each broken set-up it must name.

Doctor runs in-process; the keyring backend is installed with ``keyring.set_keyring``: the
test ``EnvironmentKeyring`` (password from ``$TEST_KEYRING_PASSWORD``) or keyring's own ``fail``
backend, which is what a headless machine has.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import keyring
import pytest
from cryptography import x509
from keyring.backends import fail

from pop3s_fetch import doctor
from pop3s_fetch.doctor import Check
from tests.support.certs import ServerCert
from tests.support.cli import account_toml
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.env_keyring import EnvironmentKeyring

PASSWORD_VARIABLE = "TEST_KEYRING_PASSWORD"
ACCOUNT_STEPS = ["password", "DNS", "TCP connect", "TLS", "login", "capabilities"]
GLOBAL_CHECKS = ["config", "state directory", "keyring"]


@pytest.fixture
def use_backend() -> Iterator[None]:
    """Restore whatever keyring backend was active before the test changed it."""
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def env_keyring(use_backend: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test keyring, with no password in it until a test sets ``$TEST_KEYRING_PASSWORD``."""
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    keyring.set_keyring(EnvironmentKeyring())  # type: ignore[no-untyped-call]


class Home:
    """A config file and a state directory of one test's own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_path = root / "config.toml"
        self.environ = {"HOME": str(root), "XDG_STATE_HOME": str(root / "state")}
        self.state_dir = root / "state" / "pop3s-fetch"

    def write_account(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 995,
        username: str = "alice",
        ca_file: Path | None = None,
        name: str = "work",
    ) -> None:
        text = account_toml(
            name,
            host=host,
            port=port,
            username=username,
            destination=self.root / "Maildir",
            ca_file=ca_file,
        )
        with self.config_path.open("a") as config:
            config.write(text)

    def doctor(self, *accounts: str, timeout: float = 10) -> list[Check]:
        return list(doctor.run_checks(self.config_path, self.environ, accounts, timeout=timeout))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


def verdicts(checks: list[Check]) -> list[tuple[str, str]]:
    return [(check.name, check.status) for check in checks]


def by_name(checks: list[Check], name: str) -> Check:
    (check,) = [c for c in checks if c.name == name]
    return check


def account_verdicts(name: str, statuses: str) -> list[tuple[str, str]]:
    """``("work", "ok ok fail skip skip skip")`` -> the six per-account verdicts."""
    return [
        (f"{name}: {step}", status)
        for step, status in zip(ACCOUNT_STEPS, statuses.split(), strict=True)
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_no_secret(checks: list[Check], secret: str) -> None:
    rendered = "\n".join(line for check in checks for line in doctor.render(check))
    assert secret not in rendered
    assert secret not in repr(checks)


def configure_dovecot(home: Home, dovecot: DovecotServer, user: DovecotUser, **kw: object) -> None:
    settings: dict[str, object] = {
        "host": dovecot.host,
        "port": dovecot.port,
        "username": user.name,
        "ca_file": dovecot.ca_file,
    }
    settings.update(kw)
    home.write_account(**settings)  # type: ignore[arg-type]


def assert_tls_detail(detail: str, server_cert: ServerCert) -> None:
    """The TLS check names the certificate Dovecot presents: subject, issuer, expiry."""
    leaf = x509.load_pem_x509_certificate(server_cert.cert_chain_file.read_bytes())

    def name(rdns: x509.Name) -> str:
        return ", ".join(f"{a.rfc4514_attribute_name}={a.value!s}" for a in rdns)

    expires = leaf.not_valid_after_utc
    days = (expires - datetime.now(UTC)).days
    match = re.fullmatch(
        r"(TLSv1\.[23]), ([A-Z0-9_-]+); certificate (.*) \(verified\), issued by (.*), "
        r"expires (\d{4}-\d\d-\d\d) \(in (\d+) days\); (sha256:[0-9a-f]{64})",
        detail,
    )
    assert match is not None, detail

    def parts(text: str) -> set[str]:
        return set(text.split(", "))

    assert parts(match[3]) == parts(name(leaf.subject))
    assert parts(match[4]) == parts(name(leaf.issuer))
    assert match[5] == expires.strftime("%Y-%m-%d")
    assert int(match[6]) in (days, days - 1)  # the day may turn between the two readings


# --- against a real Dovecot -----------------------------------------------------------------


@pytest.mark.dovecot
@pytest.mark.usefixtures("env_keyring")
def test_healthy_account_passes_every_check_and_changes_nothing(
    home: Home, dovecot: DovecotServer, server_cert: ServerCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond body\n"]
    user = dovecot.add_user(messages)
    configure_dovecot(home, dovecot, user)
    monkeypatch.setenv(PASSWORD_VARIABLE, user.password)

    checks = home.doctor()

    assert verdicts(checks) == [
        ("config", "ok"),
        ("state directory", "ok"),
        ("keyring", "ok"),
        *account_verdicts("work", "ok ok ok ok ok ok"),
    ]
    assert doctor.doctor_exit_code(checks) == 0
    details = {check.name: check.detail for check in checks}
    assert details["config"] == f"{home.config_path}: 1 account (work)"
    assert details["state directory"] == (
        f"{home.state_dir} does not exist yet; the first sync creates it (mode 0700)"
    )
    assert details["keyring"] == "env keyring EnvironmentKeyring (priority -1)"
    assert details["work: password"] == "a password is stored in the keyring (not shown)"
    assert details["work: DNS"] == "127.0.0.1 resolves to 127.0.0.1"
    assert re.fullmatch(
        rf"connected to 127\.0\.0\.1 port {dovecot.port} in \d+ ms", details["work: TCP connect"]
    )
    assert_tls_detail(details["work: TLS"], server_cert)
    octets = sum(len(m.replace(b"\n", b"\r\n")) for m in messages)
    assert (
        details["work: login"]
        == f"logged in as {user.name}; 2 messages ({octets} bytes) on the server"
    )
    assert details["work: capabilities"].startswith("UIDL yes, PIPELINING yes; advertised: ")
    assert "SASL(PLAIN LOGIN SCRAM-SHA-1 SCRAM-SHA-256 CRAM-MD5)" in details["work: capabilities"]
    assert all(check.fix is None for check in checks)
    assert_no_secret(checks, user.password)
    assert user.messages_on_server() == messages  # nothing deleted or altered
    assert not home.state_dir.exists()  # doctor looks; it does not create


@pytest.mark.dovecot
@pytest.mark.usefixtures("env_keyring")
def test_wrong_password_fails_login_with_the_fix_and_exit_77(
    home: Home, dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = dovecot.add_user()
    configure_dovecot(home, dovecot, user)
    wrong = "not-" + user.password
    monkeypatch.setenv(PASSWORD_VARIABLE, wrong)

    checks = home.doctor()

    assert verdicts(checks)[3:] == account_verdicts("work", "ok ok ok ok fail ok")
    login = by_name(checks, "work: login")
    assert login.detail.startswith(f"{dovecot.host} refused the login: [AUTH]")
    assert login.fix == (
        f"username is {user.name} in {home.config_path}; check username, then store the right "
        "password with: pop3s-fetch password set work"
    )
    assert doctor.doctor_exit_code(checks) == 77
    assert_no_secret(checks, wrong)


@pytest.mark.dovecot
@pytest.mark.usefixtures("env_keyring")
def test_wrong_ca_fails_tls_with_exit_69_and_skips_login(
    home: Home, dovecot: DovecotServer, other_ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = dovecot.add_user()
    configure_dovecot(home, dovecot, user, ca_file=other_ca_file)
    monkeypatch.setenv(PASSWORD_VARIABLE, user.password)

    checks = home.doctor()

    assert verdicts(checks)[3:] == account_verdicts("work", "ok ok ok fail skip skip")
    tls_check = by_name(checks, "work: TLS")
    assert tls_check.detail.startswith(
        f"refused the TLS connection to {dovecot.host}:{dovecot.port} (unknown issuer): subject "
    )
    assert tls_check.fix is not None
    assert tls_check.fix.startswith(f"its issuer is not in {other_ca_file}: set ca = ")
    assert by_name(checks, "work: login").detail == "skipped: the TLS check did not pass"
    assert doctor.doctor_exit_code(checks) == 69


@pytest.mark.dovecot
@pytest.mark.usefixtures("env_keyring")
def test_no_password_fails_that_check_but_still_reads_capabilities(
    home: Home, dovecot: DovecotServer
) -> None:
    user = dovecot.add_user()
    configure_dovecot(home, dovecot, user)

    checks = home.doctor()

    assert verdicts(checks)[3:] == account_verdicts("work", "fail ok ok ok skip ok")
    password = by_name(checks, "work: password")
    assert (password.detail, password.fix) == (
        'no password stored for account "work"',
        "store one with: pop3s-fetch password set work",
    )
    assert by_name(checks, "work: login").detail == "skipped: the password check did not pass"
    assert by_name(checks, "work: capabilities").detail.startswith("UIDL yes, PIPELINING yes")
    assert doctor.doctor_exit_code(checks) == 77


@pytest.mark.dovecot
@pytest.mark.usefixtures("use_backend")
def test_no_keyring_backend_fails_and_skips_what_needs_a_password(
    home: Home, dovecot: DovecotServer
) -> None:
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    user = dovecot.add_user()
    configure_dovecot(home, dovecot, user)

    checks = home.doctor()

    assert verdicts(checks) == [
        ("config", "ok"),
        ("state directory", "ok"),
        ("keyring", "fail"),
        *account_verdicts("work", "skip ok ok ok skip ok"),
    ]
    backend = by_name(checks, "keyring")
    assert backend.detail == (
        "no usable keyring backend: keyring chose fail Keyring (priority 0), which cannot "
        "store passwords (no Secret Service such as gnome-keyring in this D-Bus session?)"
    )
    assert backend.fix is not None
    assert "PYTHON_KEYRING_BACKEND" in backend.fix
    assert by_name(checks, "work: password").detail == "skipped: the keyring check did not pass"
    assert doctor.doctor_exit_code(checks) == 77


# --- broken set-ups that need no server -----------------------------------------------------


@pytest.mark.usefixtures("env_keyring")
def test_missing_config_fails_with_where_it_looked_and_skips_accounts(home: Home) -> None:
    checks = home.doctor()
    assert verdicts(checks) == [
        ("config", "fail"),
        ("state directory", "ok"),
        ("keyring", "ok"),
        ("accounts", "skip"),
    ]
    config = checks[0]
    assert config.detail == f"no configuration file at {home.config_path}"
    assert config.fix is not None
    assert config.fix.endswith(
        "run: pop3s-fetch init, or start from the annotated example: "
        f"pop3s-fetch config example > {home.config_path}"
    )
    assert checks[-1].detail == "the configuration could not be loaded"
    assert doctor.doctor_exit_code(checks) == 78


@pytest.mark.usefixtures("env_keyring")
def test_invalid_config_lists_every_problem(home: Home) -> None:
    home.config_path.write_text(
        '[accounts.work]\nhost = "pop.example.com"\nport = "x"\nusernme = "alice"\n'
        'destination = "~/Mail"\n'
    )
    checks = home.doctor()
    config = checks[0]
    path = home.config_path
    assert config.status == "fail"
    assert config.detail.splitlines() == [
        f"{path}: 3 problems in the configuration",
        f'{path}: accounts.work.port: expected an integer 1-65535, got "x"',
        f'{path}: accounts.work.usernme: unknown key (did you mean "username"?)',
        f"{path}: accounts.work.username: missing required key (set it here or in [defaults])",
    ]
    assert config.fix == "correct each key listed; pop3s-fetch config example documents every key"
    assert doctor.render(config) == [
        f"FAIL  config: {path}: 3 problems in the configuration",
        f'      {path}: accounts.work.port: expected an integer 1-65535, got "x"',
        f'      {path}: accounts.work.usernme: unknown key (did you mean "username"?)',
        f"      {path}: accounts.work.username: missing required key (set it here or in "
        "[defaults])",
        "      fix: correct each key listed; pop3s-fetch config example documents every key",
    ]
    assert doctor.doctor_exit_code(checks) == 78


@pytest.mark.usefixtures("env_keyring")
def test_unknown_account_name_fails_the_config_check(home: Home) -> None:
    home.write_account()
    checks = home.doctor("wrok")
    assert checks[0].status == "fail"
    assert checks[0].detail == f'unknown account "wrok"; {home.config_path} defines: work'
    assert doctor.doctor_exit_code(checks) == 78


@pytest.mark.usefixtures("env_keyring")
def test_naming_an_account_checks_only_that_one(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "pw")
    home.write_account(name="work", port=closed_port())
    home.write_account(name="home", host="nosuchhost.invalid")
    checks = home.doctor("home")
    assert checks[0].detail == f"{home.config_path}: 2 accounts (work, home); checking home"
    assert [c.name for c in checks[3:]] == [f"home: {step}" for step in ACCOUNT_STEPS]


@pytest.mark.usefixtures("env_keyring")
def test_state_dir_open_to_others_warns_with_the_chmod_to_run(home: Home) -> None:
    home.write_account(port=closed_port())
    home.state_dir.mkdir(parents=True, mode=0o755)
    home.state_dir.chmod(0o755)
    loose = home.state_dir / "work.sqlite3"
    loose.write_bytes(b"")
    loose.chmod(0o644)
    (home.state_dir / "work.lock").touch(mode=0o600)

    checks = home.doctor()

    state = by_name(checks, "state directory")
    assert state.status == "warn"
    assert state.detail.splitlines() == [
        f"{home.state_dir} is accessible to other users (mode 0755, expected 0700)",
        "state files readable by other users (expected mode 0600): work.sqlite3",
    ]
    assert state.fix == f"chmod 700 {home.state_dir} && chmod 600 {loose}"
    # Sync still works, so a warning alone does not fail doctor.
    assert by_name(checks, "work: TCP connect").status == "fail"
    assert doctor.doctor_exit_code([c for c in checks if c.name in GLOBAL_CHECKS]) == 0


@pytest.mark.usefixtures("env_keyring")
def test_a_state_dir_others_can_write_fails_as_sync_refuses_it(home: Home) -> None:
    home.write_account()
    home.state_dir.mkdir(parents=True)
    home.state_dir.chmod(0o777)
    state = by_name(home.doctor(), "state directory")
    assert (state.status, state.exit_code) == ("fail", 77)
    assert state.detail == (
        f"{home.state_dir} is writable by other users (mode 0777), so sync refuses to trust "
        "its records"
    )
    assert (
        state.fix == f"check that nobody else changed its files, then: chmod 700 {home.state_dir}"
    )


@pytest.mark.usefixtures("env_keyring")
def test_private_state_dir_is_ok(home: Home) -> None:
    home.write_account()
    home.state_dir.mkdir(parents=True, mode=0o700)
    (home.state_dir / "work.sqlite3").touch(mode=0o600)
    state = by_name(home.doctor(timeout=0.01), "state directory")
    assert (state.status, state.detail) == (
        "ok",
        f"{home.state_dir}: private (mode 0700), 1 state file(s), all mode 0600",
    )


@pytest.mark.usefixtures("env_keyring")
def test_state_path_that_is_a_file_fails_with_exit_74(home: Home) -> None:
    home.write_account(port=closed_port())
    home.state_dir.parent.mkdir(parents=True)
    home.state_dir.write_text("not a directory")
    checks = home.doctor()
    state = by_name(checks, "state directory")
    assert (state.status, state.detail, state.fix) == (
        "fail",
        f"{home.state_dir} is not a directory",
        f"move it aside; pop3s-fetch creates {home.state_dir} itself",
    )
    assert doctor.doctor_exit_code(checks) == 74  # before the network failure that follows


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give the state directory away")
@pytest.mark.usefixtures("env_keyring")
def test_state_dir_owned_by_someone_else_fails(home: Home) -> None:
    home.write_account()
    home.state_dir.mkdir(parents=True, mode=0o700)
    os.chown(home.state_dir, 65534, 65534)
    state = by_name(home.doctor("work", timeout=0.01), "state directory")
    assert state.status == "fail"
    assert state.detail == f"{home.state_dir} belongs to uid 65534, not to you (uid 0)"


@pytest.mark.usefixtures("env_keyring")
def test_unresolvable_host_fails_dns_and_skips_the_rest(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "pw")
    home.write_account(host="nosuchhost.invalid")
    checks = home.doctor()
    assert verdicts(checks)[3:] == account_verdicts("work", "ok fail skip skip skip skip")
    dns = by_name(checks, "work: DNS")
    assert dns.detail.startswith("cannot resolve host name nosuchhost.invalid: ")
    assert dns.fix == (
        f"check host in {home.config_path}, and the network and DNS "
        "(try: getent hosts nosuchhost.invalid)"
    )
    assert [c.detail for c in checks[-4:]] == [
        "skipped: the DNS check did not pass",
        "skipped: the TCP connect check did not pass",
        "skipped: the TLS check did not pass",
        "skipped: the TLS check did not pass",
    ]
    assert doctor.doctor_exit_code(checks) == 75


@pytest.mark.usefixtures("env_keyring")
def test_closed_port_fails_tcp_with_exit_75(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "pw")
    port = closed_port()
    home.write_account(port=port)
    checks = home.doctor()
    assert verdicts(checks)[3:] == account_verdicts("work", "ok ok fail skip skip skip")
    tcp = by_name(checks, "work: TCP connect")
    assert tcp.detail == f"127.0.0.1:{port} refused the connection: nothing listens on port {port}"
    assert tcp.fix == (
        f"check port in {home.config_path} (POP3S is usually 995) and that the server is running"
    )
    assert doctor.doctor_exit_code(checks) == 75


@pytest.mark.usefixtures("env_keyring")
def test_a_server_that_never_answers_times_out_in_the_tls_check(home: Home) -> None:
    with socket.socket() as silent:  # accepts TCP (the kernel's backlog) but never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        home.write_account(port=port)
        checks = home.doctor(timeout=0.3)
    tls_check = by_name(checks, "work: TLS")
    assert (tls_check.status, tls_check.detail) == (
        "fail",
        f"timed out in the TLS handshake with 127.0.0.1:{port} (the TCP connection was accepted)",
    )
    assert tls_check.exit_code == 75


@pytest.mark.usefixtures("use_backend")
def test_the_first_failure_decides_the_exit_code(home: Home) -> None:
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    home.write_account(host="nosuchhost.invalid")
    checks = home.doctor()
    assert [c.name for c in checks if c.status == "fail"] == ["keyring", "work: DNS"]
    assert doctor.doctor_exit_code(checks) == 77
    assert doctor.summary(checks) == ("2 checks failed; fix the first one first: keyring (exit 77)")


def test_render_and_summary_of_plain_checks() -> None:
    checks = [
        Check("config", "ok", "/c.toml: 1 account (work)"),
        Check("state directory", "warn", "open to others", "chmod 700 /s"),
        Check("work: TLS", "skip", "skipped: the TCP connect check did not pass"),
    ]
    assert [line for check in checks for line in doctor.render(check)] == [
        "ok    config: /c.toml: 1 account (work)",
        "warn  state directory: open to others",
        "      fix: chmod 700 /s",
        "skip  work: TLS: skipped: the TCP connect check did not pass",
    ]
    assert doctor.summary(checks) == "no problems found, 1 warning"
    assert doctor.doctor_exit_code(checks) == 0


@pytest.mark.dovecot
@pytest.mark.usefixtures("use_backend")
def test_password_command_account_needs_no_keyring(
    home: Home, dovecot: DovecotServer, tmp_path: Path
) -> None:
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    user = dovecot.add_user([b"Subject: x\n\nx\n"])
    secret = tmp_path / "pw"
    secret.write_text(user.password + "\n")
    home.config_path.write_text(
        f'[accounts.work]\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
        f'username = "{user.name}"\ndestination = "{tmp_path / "Maildir"}"\n'
        f'ca = "{dovecot.ca_file}"\npassword_command = ["cat", "{secret}"]\n'
    )
    checks = home.doctor()
    assert by_name(checks, "keyring").status == "skip"
    password = by_name(checks, "work: password")
    assert password.detail == "password_command printed a password (not shown)"
    assert by_name(checks, "work: login").status == "ok"
    assert doctor.doctor_exit_code(checks) == 0
    assert_no_secret(checks, user.password)
