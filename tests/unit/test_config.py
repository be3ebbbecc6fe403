"""Tests for pop3s_fetch.config: lookup order, parsing, and the exact text of every problem."""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path

import pytest

from pop3s_fetch import config
from pop3s_fetch.config import Account, Config
from pop3s_fetch.errors import ConfigError, ExitCode

REPO_ROOT = Path(__file__).resolve().parents[2]

MINIMAL_ACCOUNT = """
[accounts.work]
host = "pop.example.com"
username = "me"
destination = "/var/mail/work"
"""


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "config.toml"


def problems_of(text: str, path: Path) -> list[str]:
    """Parse ``text``, expecting a validation error, and return its problem lines."""
    with pytest.raises(ConfigError) as excinfo:
        config.parse(text, path)
    return excinfo.value.problems


def single_problem(text: str, path: Path) -> str:
    found = problems_of(text, path)
    assert len(found) == 1, found
    return found[0]


def account_with(path: Path, extra: str) -> str:
    """Return the message of the single problem caused by adding ``extra`` to a valid account."""
    prefix = f"{path}: "
    line = single_problem(MINIMAL_ACCOUNT + extra, path)
    assert line.startswith(prefix)
    return line.removeprefix(prefix)


# --- lookup ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xdg", "found"),
    [
        pytest.param("/x/conf", "/x/conf/pop3s-fetch/config.toml", id="xdg-config-home-absolute"),
        pytest.param(None, "/home/a/.config/pop3s-fetch/config.toml", id="xdg-unset"),
        pytest.param("", "/home/a/.config/pop3s-fetch/config.toml", id="xdg-empty"),
        pytest.param("relative/conf", "/home/a/.config/pop3s-fetch/config.toml", id="xdg-relative"),
    ],
)
def test_default_path_uses_xdg_config_home_only_when_absolute(xdg: str | None, found: str) -> None:
    environ = {"HOME": "/home/a"}
    if xdg is not None:
        environ["XDG_CONFIG_HOME"] = xdg
    assert config.default_config_path(environ) == Path(found)


def test_default_path_without_home_variable_uses_the_password_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/from/pwd")))
    assert config.default_config_path({}) == Path("/from/pwd/.config/pop3s-fetch/config.toml")


EVERY_SOURCE = {"POP3S_FETCH_CONFIG": "/env/c.toml", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}


@pytest.mark.parametrize(
    ("explicit", "environ", "found"),
    [
        pytest.param(
            Path("/cli/c.toml"),
            EVERY_SOURCE,
            "/cli/c.toml",
            id="explicit-path-wins-over-environment",
        ),
        pytest.param(None, EVERY_SOURCE, "/env/c.toml", id="environment-variable-wins-over-xdg"),
        pytest.param(
            None,
            {"POP3S_FETCH_CONFIG": "", "XDG_CONFIG_HOME": "/x", "HOME": "/h"},
            "/x/pop3s-fetch/config.toml",
            id="empty-environment-variable-is-ignored",
        ),
        pytest.param(
            None,
            {"HOME": "/h"},
            "/h/.config/pop3s-fetch/config.toml",
            id="home-fallback-when-nothing-else-is-set",
        ),
    ],
)
def test_lookup_order(explicit: Path | None, environ: dict[str, str], found: str) -> None:
    assert config.find_config_path(explicit, environ) == Path(found)


def test_tilde_in_explicit_and_environment_paths_is_expanded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/home/t")
    assert config.find_config_path(Path("~/a.toml"), {}) == Path("/home/t/a.toml")
    assert config.find_config_path(None, {"POP3S_FETCH_CONFIG": "~/b.toml"}) == Path(
        "/home/t/b.toml"
    )


# --- load: file-level failures ----------------------------------------------------------------


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    err = excinfo.value
    assert str(err) == f"no configuration file at {path}"
    assert err.hint == (
        "pop3s-fetch looked for --config, then $POP3S_FETCH_CONFIG, then "
        "$XDG_CONFIG_HOME/pop3s-fetch/config.toml (default ~/.config/pop3s-fetch/config.toml); "
        "run: pop3s-fetch init, or start from the annotated example: "
        f"pop3s-fetch config example > {path}"
    )
    assert err.exit_code == ExitCode.CONFIG
    assert err.problems == []


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.load(tmp_path)
    assert str(excinfo.value) == f"cannot read configuration file {tmp_path}: Is a directory"


@pytest.mark.parametrize(
    ("content", "after_path"),
    [
        pytest.param(
            b'# caf\xe9\n[accounts.a]\nhost = "h"\n',
            ": not UTF-8 text (bad byte at offset 5); TOML files must be UTF-8",
            id="non-utf8-file",
        ),
        pytest.param(
            b'[accounts.work]\nhost = "pop.example.com"\nport = = 3\n',
            ":3:8: invalid TOML: invalid value",
            id="syntax-error-has-file-line-and-column",
        ),
    ],
)
def test_unreadable_content(tmp_path: Path, content: bytes, after_path: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    assert str(excinfo.value) == f"{path}{after_path}"
    assert excinfo.value.problems == []


def test_syntax_error_at_end_of_document(cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.parse('[accounts.work]\nhost = "x', cfg_path)
    assert str(excinfo.value) == f"{cfg_path}:2:10: invalid TOML: unterminated string"


def test_load_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL_ACCOUNT, encoding="utf-8")
    loaded = config.load(path)
    assert loaded.path == path
    assert list(loaded.accounts) == ["work"]


# --- parse: values, defaults and paths --------------------------------------------------------


def test_minimal_account_gets_documented_defaults(cfg_path: Path) -> None:
    loaded = config.parse(MINIMAL_ACCOUNT, cfg_path)
    assert loaded.accounts == {
        "work": Account(
            name="work",
            host="pop.example.com",
            username="me",
            destination=Path("/var/mail/work"),
            format="maildir",
            port=995,
            keep=True,
            ca_file=None,
            timeout=60.0,
        )
    }


def test_every_key_is_read(cfg_path: Path) -> None:
    text = """
[accounts.a]
host = "h.example"
username = "u"
destination = "/m/a.mbox"
format = "mbox"
port = 1995
keep = false
ca_file = "/etc/ca.pem"
timeout = 2.5
"""
    account = config.parse(text, cfg_path).accounts["a"]
    assert account == Account(
        name="a",
        host="h.example",
        username="u",
        destination=Path("/m/a.mbox"),
        format="mbox",
        port=1995,
        keep=False,
        ca_file=Path("/etc/ca.pem"),
        timeout=2.5,
    )


def test_defaults_are_inherited_and_overridden(cfg_path: Path) -> None:
    text = """
[defaults]
host = "pop.example.com"
username = "shared"
timeout = 30
keep = false

[accounts.one]
destination = "/m/one"

[accounts.two]
destination = "/m/two"
username = "own"
timeout = 5
"""
    accounts = config.parse(text, cfg_path).accounts
    one, two = accounts["one"], accounts["two"]
    assert (one.host, one.username, one.timeout, one.keep) == (
        "pop.example.com",
        "shared",
        30,
        False,
    )
    assert (two.host, two.username, two.timeout, two.keep) == ("pop.example.com", "own", 5, False)


def test_accounts_keep_file_order(cfg_path: Path) -> None:
    text = "".join(
        f'[accounts.{name}]\nhost = "h"\nusername = "u"\ndestination = "/m/{name}"\n'
        for name in ["zeta", "alpha", "mid"]
    )
    assert list(config.parse(text, cfg_path).accounts) == ["zeta", "alpha", "mid"]


def test_relative_paths_are_relative_to_the_config_directory(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT.replace("/var/mail/work", "mail/work") + 'ca_file = "certs/ca.pem"\n'
    account = config.parse(text, cfg_path).accounts["work"]
    assert account.destination == cfg_path.parent / "mail" / "work"
    assert account.ca_file == cfg_path.parent / "certs" / "ca.pem"


def test_relative_config_path_still_yields_absolute_destinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = MINIMAL_ACCOUNT.replace("/var/mail/work", "mail")
    account = config.parse(text, Path("sub/config.toml")).accounts["work"]
    assert account.destination == tmp_path / "sub" / "mail"


def test_tilde_is_expanded_in_paths(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    text = MINIMAL_ACCOUNT.replace("/var/mail/work", "~/Mail") + 'ca_file = "~/ca.pem"\n'
    account = config.parse(text, cfg_path).accounts["work"]
    assert account.destination == Path("/home/tester/Mail")
    assert account.ca_file == Path("/home/tester/ca.pem")


@pytest.mark.parametrize("written", ["$HOME/Mail/x", "${HOME}/Mail", "/m/$MAILDIR_ROOT"])
def test_a_shell_variable_in_a_path_is_refused(cfg_path: Path, written: str) -> None:
    """TOML is not a shell: "$HOME/Mail/x" became <config dir>/$HOME/Mail/x (issue 14)."""
    text = MINIMAL_ACCOUNT.replace("/var/mail/work", written)
    assert problems_of(text, cfg_path) == [
        f'{cfg_path}: accounts.work.destination: "{written}" names a shell variable, which is '
        "not expanded here; write the path itself, or ~ for your home directory"
    ]


def test_a_dollar_that_is_not_a_variable_is_kept(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT.replace("/var/mail/work", "/m/cost$5")
    assert config.parse(text, cfg_path).accounts["work"].destination == Path("/m/cost$5")


def test_files_the_configuration_names_must_exist_when_it_is_loaded(tmp_path: Path) -> None:
    """A typo such as ca = "~/bench-ca.pen" was valid, then failed as TLS (69), not 78."""
    (tmp_path / "real.pem").write_text("x")
    (tmp_path / "certs").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        MINIMAL_ACCOUNT + 'ca = "bench-ca.pen"\nclient_cert = "certs"\nclient_key = "real.pem"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.problems == [
        f"{path}: accounts.work.ca: there is no file {tmp_path / 'bench-ca.pen'}",
        f"{path}: accounts.work.client_cert: {tmp_path / 'certs'} is a directory, not a file",
    ]
    assert caught.value.exit_code == 78
    (tmp_path / "bench-ca.pen").write_text("x")
    path.write_text(MINIMAL_ACCOUNT + 'ca = "bench-ca.pen"\nclient_cert = "real.pem"\n')
    assert config.load(path).accounts["work"].tls.ca == str(tmp_path / "bench-ca.pen")


def test_the_example_names_its_ca_files_as_missing_until_they_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    example = REPO_ROOT / "config.example.toml"
    with pytest.raises(ConfigError) as caught:
        config.load(example)
    ca_dir = tmp_path / ".config" / "pop3s-fetch"
    assert caught.value.problems == [
        f"{example}: accounts.work-archive.ca: there is no file {ca_dir / 'work-ca.pem'}",
        f"{example}: accounts.self-hosted.ca: there is no file {ca_dir / 'example-org-ca.pem'}",
    ]
    ca_dir.mkdir(parents=True)
    for name in ("work-ca.pem", "example-org-ca.pem"):
        (ca_dir / name).write_text("x")
    assert set(config.load(example).accounts) == set(
        config.parse(example.read_text(), example).accounts
    )


def test_config_objects_are_frozen(cfg_path: Path) -> None:
    account = config.parse(MINIMAL_ACCOUNT, cfg_path).accounts["work"]
    with pytest.raises(AttributeError):
        account.port = 1  # type: ignore[misc]


# --- parse: problems, with their exact text ---------------------------------------------------

KEEP_EXPECTED = 'expected true, false or a duration such as "30d", "12h" or "2w"'


def test_error_message_counts_problems(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT + 'port = "x"\nkeep = 1\n'
    with pytest.raises(ConfigError) as excinfo:
        config.parse(text, cfg_path)
    assert str(excinfo.value) == f"{cfg_path}: 2 problems in the configuration"
    assert excinfo.value.exit_code == ExitCode.CONFIG
    assert excinfo.value.problems == [
        f'{cfg_path}: accounts.work.port: expected an integer 1-65535, got "x"',
        f'{cfg_path}: accounts.work.keep: {KEEP_EXPECTED}, got 1 (did you mean true, or "1d"?)',
    ]


def test_error_message_for_one_problem_is_singular(cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.parse(MINIMAL_ACCOUNT + "port = 0\n", cfg_path)
    assert str(excinfo.value) == f"{cfg_path}: 1 problem in the configuration"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('port = "x"', 'accounts.work.port: expected an integer 1-65535, got "x"'),
        ("port = 0", "accounts.work.port: expected an integer 1-65535, got 0"),
        ("port = 65536", "accounts.work.port: expected an integer 1-65535, got 65536"),
        ("port = true", "accounts.work.port: expected an integer 1-65535, got true"),
        ("port = 995.0", "accounts.work.port: expected an integer 1-65535, got 995.0"),
        ('format = "mh"', 'accounts.work.format: expected "maildir", "mbox" or "mda", got "mh"'),
        (
            'format = "Maildir"',
            'accounts.work.format: expected "maildir", "mbox" or "mda", got "Maildir" '
            '(did you mean "maildir"?)',
        ),
        (
            'port = "995"',
            'accounts.work.port: expected an integer 1-65535, got "995" '
            "(did you mean 995, without quotes?)",
        ),
        ('port = "99999"', 'accounts.work.port: expected an integer 1-65535, got "99999"'),
        (
            'timeout = "60s"',
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, "
            'got "60s" (did you mean 60?)',
        ),
        (
            'timeout = "2m"',
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, "
            'got "2m" (did you mean 120?)',
        ),
        (
            'timeout = "2h"',
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, "
            'got "2h"',
        ),
        (
            'tls = "STARTTLS"',
            'accounts.work.tls: expected "implicit" or "starttls", got "STARTTLS" '
            '(did you mean "starttls"?)',
        ),
        ('tls = "none"', 'accounts.work.tls: expected "implicit" or "starttls", got "none"'),
        ("x509_strict = 1", "accounts.work.x509_strict: expected true or false, got 1"),
        ('keep = "yes"', f'accounts.work.keep: {KEEP_EXPECTED}, got "yes" (did you mean true?)'),
        ("keep = 0", f"accounts.work.keep: {KEEP_EXPECTED}, got 0 (did you mean false?)"),
        (
            "timeout = 0",
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, got 0",
        ),
        (
            "timeout = -1.5",
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, "
            "got -1.5",
        ),
        (
            "timeout = 3600.5",
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, "
            "got 3600.5",
        ),
        (
            "timeout = nan",
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, got nan",
        ),
        (
            "timeout = inf",
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, got inf",
        ),
        (
            "timeout = true",
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, "
            "got true",
        ),
        (
            'timeout = "30"',
            "accounts.work.timeout: expected a number of seconds above 0 and at most 3600, "
            'got "30" (did you mean 30, without quotes?)',
        ),
        ('ca_file = ""', 'accounts.work.ca_file: expected a non-empty path, got ""'),
        ("ca_file = false", "accounts.work.ca_file: expected a non-empty path, got false"),
        (
            'ca_file = "a\\u0000b"',
            'accounts.work.ca_file: a path cannot contain a NUL character, got "a\\u0000b"',
        ),
        ("ca_file = [1, 2]", "accounts.work.ca_file: expected a non-empty path, got [1, 2]"),
        (
            "ca_file = {x = 1}",
            "accounts.work.ca_file: expected a non-empty path, got {x = 1}",
        ),
        (
            "ca_file = 1979-05-27",
            "accounts.work.ca_file: expected a non-empty path, got 1979-05-27",
        ),
    ],
)
def test_bad_values(cfg_path: Path, line: str, message: str) -> None:
    assert account_with(cfg_path, line + "\n") == message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("host", '""', 'expected a host name such as "pop.example.com", got ""'),
        ("host", "5", 'expected a host name such as "pop.example.com", got 5'),
        (
            "host",
            '"pop3s://pop.example.com"',
            'expected a host name such as "pop.example.com", got "pop3s://pop.example.com"',
        ),
        (
            "host",
            '"pop example"',
            'expected a host name such as "pop.example.com", got "pop example"',
        ),
        ("username", '""', 'expected a non-empty string, got ""'),
        ("username", "7", "expected a non-empty string, got 7"),
        ("destination", '""', 'expected a non-empty path, got ""'),
        ("destination", "1.5", "expected a non-empty path, got 1.5"),
    ],
)
def test_bad_required_values(cfg_path: Path, key: str, value: str, message: str) -> None:
    lines = {"host": '"pop.example.com"', "username": '"me"', "destination": '"/m"'}
    lines[key] = value
    text = "[accounts.work]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items())
    assert single_problem(text, cfg_path) == f"{cfg_path}: accounts.work.{key}: {message}"


def test_password_value_never_appears_in_problems(cfg_path: Path) -> None:
    text = '[defaults]\npassword = "s3cr3t-value"\n' + MINIMAL_ACCOUNT + "password = 1\n"
    found = problems_of(text, cfg_path)
    assert len(found) == 2
    assert not any("s3cr3t-value" in line for line in found)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            'format = "a\\"b\\\\c\\td\\u0001é"\n',
            'accounts.work.format: expected "maildir", "mbox" or "mda", '
            'got "a\\"b\\\\c\\td\\u0001é"',
            id="strings-are-shown-with-toml-escapes",
        ),
        pytest.param(
            "prot = 995\n",
            'accounts.work.prot: unknown key (did you mean "port"?)',
            id="unknown-key-suggests-the-closest",
        ),
        pytest.param(
            "colour = 1\n",
            "accounts.work.colour: unknown key; known keys: host, username, destination, format, "
            "port, keep, ca_file, timeout, tls, ca, fingerprint, tls_min_version, x509_strict, "
            "client_cert, client_key, auth, password_command, password_credential, "
            + "".join(f"{key}, " for key in config.ACCOUNT_KEYS[18:-1])
            + "oauth2",
            id="unknown-key-without-close-match-lists-known-keys",
        ),
        pytest.param(
            '"ca file" = "x"\n',
            'accounts.work."ca file": unknown key (did you mean "ca_file"?)',
            id="keys-that-need-quoting-are-quoted-in-the-key-path",
        ),
        pytest.param(
            'password = "hunter2"\n',
            "accounts.work.password: passwords are not read from the config file; "
            "store it in the OS keyring with: pop3s-fetch password set work",
            id="password-in-account-is-refused",
        ),
    ],
)
def test_one_problem_in_an_account(cfg_path: Path, extra: str, message: str) -> None:
    assert account_with(cfg_path, extra) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            MINIMAL_ACCOUNT.replace("/var/mail/work", "~no-such-user-pop3s-fetch/Mail"),
            'accounts.work.destination: cannot expand the ~ in "~no-such-user-pop3s-fetch/Mail"',
            id="unknown-user-in-tilde-path",
        ),
        pytest.param(
            "[defaults]\ntimout = 5\n" + MINIMAL_ACCOUNT,
            'defaults.timout: unknown key (did you mean "timeout"?)',
            id="unknown-key-in-defaults",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + '[account.home]\nhost = "x"\n',
            'account: unknown key (did you mean "accounts"?)',
            id="unknown-top-level-table",
        ),
        pytest.param(
            "verbose = true\n" + MINIMAL_ACCOUNT,
            "verbose: unknown key; known keys: accounts, defaults",
            id="unknown-top-level-key-without-close-match",
        ),
        pytest.param(
            '[defaults]\npassword = "hunter2"\n' + MINIMAL_ACCOUNT,
            "defaults.password: passwords are not read from the config file; "
            "store each account's password in the OS keyring with: pop3s-fetch password set NAME",
            id="password-in-defaults-is-refused",
        ),
        pytest.param(
            "",
            "accounts: no accounts defined; add an [accounts.NAME] table",
            id="no-accounts-in-an-empty-file",
        ),
        pytest.param(
            "[defaults]\ntimeout = 5\n",
            "accounts: no accounts defined; add an [accounts.NAME] table",
            id="no-accounts-only-defaults",
        ),
        pytest.param(
            "[accounts]\n",
            "accounts: no accounts defined; add an [accounts.NAME] table",
            id="no-accounts-in-an-empty-table",
        ),
        pytest.param(
            'accounts = "work"\n',
            'accounts: expected a table of accounts, got "work"',
            id="accounts-must-be-a-table",
        ),
        pytest.param(
            "[accounts]\nwork = 5\n",
            "accounts.work: expected a table, got 5",
            id="account-must-be-a-table",
        ),
        pytest.param(
            "defaults = 5\n" + MINIMAL_ACCOUNT,
            "defaults: expected a table, got 5",
            id="defaults-must-be-a-table",
        ),
        pytest.param(
            '[defaults]\npassword_command = ["p"]\npassword_credential = "c"\n' + MINIMAL_ACCOUNT,
            "defaults: set at most one of password_command, password_credential and "
            "oauth2 (found password_command and password_credential)",
            id="two-secret-sources-in-defaults",
        ),
    ],
)
def test_one_problem_in_a_file(cfg_path: Path, text: str, message: str) -> None:
    assert single_problem(text, cfg_path) == f"{cfg_path}: {message}"


EVERY_PROBLEM_IN_ONE_FILE = """
typo = 1
[defaults]
port = 99999
[accounts.one]
host = "h"
username = ""
destination = "/m"
[accounts."bad name"]
host = "h"
username = "u"
destination = "/m"
[accounts.two]
format = "mh"
"""
CUSTOM_OAUTH2_MISSING = (
    'missing required key (provider "custom" needs it; set it here or in [defaults.oauth2])'
)


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        pytest.param(
            "[accounts.work]\nport = 1\n",
            [
                "accounts.work.host: missing required key (set it here or in [defaults])",
                "accounts.work.username: missing required key (set it here or in [defaults])",
                "accounts.work.destination: missing required key (set it here or in [defaults])",
            ],
            id="missing-required-keys-are-each-reported",
        ),
        pytest.param(
            '[defaults]\nhost = ""\n[accounts.a]\nusername = "u"\ndestination = "/m"\n',
            ['defaults.host: expected a host name such as "pop.example.com", got ""'],
            id="invalid-default-is-reported-once-not-as-missing",
        ),
        pytest.param(
            EVERY_PROBLEM_IN_ONE_FILE,
            [
                "typo: unknown key; known keys: accounts, defaults",
                "defaults.port: expected an integer 1-65535, got 99999",
                'accounts.one.username: expected a non-empty string, got ""',
                'accounts."bad name": invalid account name; use at most 64 letters, '
                'digits, ".", "_" and "-", starting with a letter or digit',
                'accounts.two.format: expected "maildir", "mbox" or "mda", got "mh"',
                "accounts.two.host: missing required key (set it here or in [defaults])",
                "accounts.two.username: missing required key (set it here or in [defaults])",
                "accounts.two.destination: missing required key (set it here or in [defaults])",
            ],
            id="every-problem-in-the-file-is-reported-in-file-order",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + '[accounts.work.oauth2]\nprovider = "custom"\n',
            [
                f"accounts.work.oauth2.{key}: {CUSTOM_OAUTH2_MISSING}"
                for key in ["token_endpoint", "device_endpoint", "client_id", "scopes"]
            ],
            id="custom-oauth2-provider-needs-everything",
        ),
        pytest.param(
            '[defaults.oauth2]\nprovider = "google"\nclient_id = ""\n' + MINIMAL_ACCOUNT,
            ['defaults.oauth2.client_id: expected a non-empty string, got ""'],
            id="an-invalid-default-oauth2-key-is-reported-once",
        ),
    ],
)
def test_every_problem_in_file_order(cfg_path: Path, text: str, messages: list[str]) -> None:
    assert problems_of(text, cfg_path) == [f"{cfg_path}: {message}" for message in messages]


@pytest.mark.parametrize(
    ("name", "rendered"),
    [
        ('"my work"', '"my work"'),
        ('".hidden"', '".hidden"'),
        ('"-dash"', "-dash"),
        ('"a/b"', '"a/b"'),
        ('"ünï"', '"ünï"'),
        ("a" * 65, "a" * 65),
    ],
)
def test_bad_account_names(cfg_path: Path, name: str, rendered: str) -> None:
    text = MINIMAL_ACCOUNT.replace("[accounts.work]", f"[accounts.{name}]")
    assert single_problem(text, cfg_path) == (
        f"{cfg_path}: accounts.{rendered}: invalid account name; use at most 64 letters, "
        'digits, ".", "_" and "-", starting with a letter or digit'
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param('"a.b_c-D9"', id="dots-dashes-underscores"),
        pytest.param("a" * 64, id="longest"),
    ],
)
def test_good_account_names(cfg_path: Path, name: str) -> None:
    text = MINIMAL_ACCOUNT.replace("[accounts.work]", f"[accounts.{name}]")
    assert list(config.parse(text, cfg_path).accounts) == [name.strip('"')]


# --- select ---------------------------------------------------------------------------------


@pytest.fixture
def three_accounts(cfg_path: Path) -> Config:
    text = "".join(
        f'[accounts.{name}]\nhost = "h"\nusername = "u"\ndestination = "/m/{name}"\n'
        for name in ["home", "work", "list"]
    )
    return config.parse(text, cfg_path)


def test_select_nothing_means_all_in_file_order(three_accounts: Config) -> None:
    assert [a.name for a in three_accounts.select([])] == ["home", "work", "list"]


def test_select_keeps_the_requested_order_and_drops_repeats(three_accounts: Config) -> None:
    selected = three_accounts.select(["list", "home", "list"])
    assert [a.name for a in selected] == ["list", "home"]


@pytest.mark.parametrize(
    ("names", "unknown"),
    [
        pytest.param(["home", "wrok"], 'account "wrok"', id="one-unknown-name"),
        pytest.param(["x", "y"], 'accounts "x", "y"', id="several-unknown-names"),
    ],
)
def test_select_unknown_names_lists_known_names(
    three_accounts: Config, cfg_path: Path, names: list[str], unknown: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        three_accounts.select(names)
    assert str(excinfo.value) == f"unknown {unknown}; {cfg_path} defines: home, work, list"
    assert excinfo.value.exit_code == ExitCode.CONFIG


def test_select_from_no_accounts(cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Config(path=cfg_path, accounts={}).select([])
    assert str(excinfo.value) == f"no accounts are defined in {cfg_path}"
    assert (
        excinfo.value.hint == "add an [accounts.NAME] table; pop3s-fetch config example shows one"
    )


# --- the shipped example ----------------------------------------------------------------------


def test_example_config_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/example")
    example = REPO_ROOT / "config.example.toml"
    loaded = config.parse(example.read_text(), example)
    assert loaded.accounts == {
        "home": Account(
            name="home",
            host="pop.example.net",
            username="alice@example.net",
            destination=Path("/home/example/Mail/home"),
            format="maildir",
            port=995,
            keep=True,
            ca_file=None,
            timeout=30.0,
        ),
        "work-archive": Account(
            name="work-archive",
            host="mail.example.com",
            username="asmith",
            destination=Path("/home/example/Mail/work.mbox"),
            format="mbox",
            port=995,
            keep=False,
            ca_file=Path("/home/example/.config/pop3s-fetch/work-ca.pem"),
            timeout=120.0,
        ),
        "self-hosted": Account(
            name="self-hosted",
            host="mail.example.org",
            username="bob",
            destination=Path("/home/example/Mail/self-hosted"),
            port=110,
            tls=config.TlsSettings(
                mode="starttls",
                ca="/home/example/.config/pop3s-fetch/example-org-ca.pem",
                fingerprint="sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f0"
                "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                min_version="1.3",
                x509_strict=True,
            ),
            auth="scram-sha-256",
            timeout=30.0,
        ),
        "gmail": Account(
            name="gmail",
            host="pop.gmail.com",
            username="alice@gmail.com",
            destination=Path("/home/example/Mail/gmail"),
            oauth2=config.OAuth2Settings(
                provider="google",
                token_endpoint="https://oauth2.googleapis.com/token",
                device_endpoint="https://oauth2.googleapis.com/device/code",
                client_id="123456789012-abcdefghijklmnop.apps.googleusercontent.com",
                client_secret="GOCSPX-your-client-secret",
                scopes=("https://mail.google.com/",),
            ),
            timeout=30.0,
        ),
        "office365": Account(
            name="office365",
            host="outlook.office365.com",
            username="asmith@example.com",
            destination=Path("/home/example/Mail/office365"),
            oauth2=config.OAuth2Settings(
                provider="microsoft",
                token_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/token",
                device_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
                client_id="00000000-0000-0000-0000-000000000000",
                client_secret=None,
                scopes=("https://outlook.office.com/POP.AccessAsUser.All", "offline_access"),
            ),
            timeout=30.0,
        ),
        "headless": Account(
            name="headless",
            host="pop.example.net",
            username="backup@example.net",
            destination=Path("/srv/mail/backup"),
            password_command=("pass", "show", "mail/backup"),
            timeout=30.0,
        ),
        "slow-link": Account(
            name="slow-link",
            host="pop.example.net",
            username="carol@example.net",
            destination=Path("/home/example/Mail/slow-link"),
            keep=True,
            delete_after=30 * 86400.0,
            max_message_size=25_000_000,
            oversize="skip",
            max_messages=500,
            max_bytes=200_000_000,
            timeout=30.0,
        ),
        "filtered": Account(
            name="filtered",
            host="pop.example.net",
            username="alice@example.net",
            destination=None,
            format="mda",
            keep=False,
            timeout=30.0,
            mda=("/usr/bin/procmail", "-f", "{sender}"),
            mda_timeout=300.0,
        ),
    }


def test_example_config_documents_every_key() -> None:
    """Each key appears as a setting, live or commented out, with the comment above it."""
    text = (REPO_ROOT / "config.example.toml").read_text(encoding="utf-8")
    keys = [*config.ACCOUNT_KEYS, *config.OAUTH2_KEYS]
    keys.remove("oauth2")
    for key in keys:
        assert f"\n{key} = " in text or f"\n# {key} = " in text, key
    assert "\n[accounts.gmail.oauth2]\n" in text


# --- TLS, trust, authentication and secret sources (issue 5) --------------------------------

FINGERPRINT_HEX = "ab" * 32


def parsed_account(cfg_path: Path, extra: str, base: str = MINIMAL_ACCOUNT) -> Account:
    return config.parse(base + extra, cfg_path).accounts["work"]


def test_new_keys_have_documented_defaults(cfg_path: Path) -> None:
    account = parsed_account(cfg_path, "")
    assert account.tls == config.TlsSettings(
        mode="implicit",
        ca="certifi",
        fingerprint=None,
        min_version="1.2",
        x509_strict=True,
        client_cert=None,
        client_key=None,
    )
    assert (account.auth, account.password_command, account.password_credential) == (
        "auto",
        None,
        None,
    )
    assert account.oauth2 is None
    assert account.secret_source == "keyring"


def test_every_tls_key_is_read(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    extra = f"""
tls = "starttls"
port = 2110
ca = "certs/ca.pem"
fingerprint = "sha256:{FINGERPRINT_HEX}"
tls_min_version = "1.3"
x509_strict = false
client_cert = "~/client.pem"
client_key = "keys/client.key"
auth = "scram-sha-256"
"""
    account = parsed_account(cfg_path, extra)
    assert account.tls == config.TlsSettings(
        mode="starttls",
        ca=str(cfg_path.parent / "certs" / "ca.pem"),
        fingerprint=f"sha256:{FINGERPRINT_HEX}",
        min_version="1.3",
        x509_strict=False,
        client_cert=Path("/home/tester/client.pem"),
        client_key=cfg_path.parent / "keys" / "client.key",
    )
    assert account.port == 2110
    assert account.ca_file == cfg_path.parent / "certs" / "ca.pem"
    assert account.auth == "scram-sha-256"


def test_a_file_called_certifi_is_spelt_as_a_path(cfg_path: Path) -> None:
    account = parsed_account(cfg_path, 'ca = "./certifi"\n')
    assert account.tls.ca == str(cfg_path.parent / "certifi")


def test_an_account_trust_setting_replaces_either_default(cfg_path: Path) -> None:
    text = '[defaults]\nca = "system"\n' + MINIMAL_ACCOUNT + 'ca_file = "/x.pem"\n'
    assert config.parse(text, cfg_path).accounts["work"].tls.ca == "/x.pem"
    text = '[defaults]\nca_file = "/x.pem"\n' + MINIMAL_ACCOUNT + 'ca = "system"\n'
    account = config.parse(text, cfg_path).accounts["work"]
    assert (account.tls.ca, account.ca_file) == ("system", None)


@pytest.mark.parametrize(
    ("extra", "mode", "port"),
    [
        ("port = 110\n", "starttls", 110),
        ('tls = "starttls"\n', "starttls", 110),
        ('tls = "implicit"\nport = 110\n', "implicit", 110),
        ('tls = "implicit"\n', "implicit", 995),
        ("port = 1995\n", "implicit", 1995),
    ],
)
def test_tls_mode_and_port_imply_each_other(
    cfg_path: Path, extra: str, mode: str, port: int
) -> None:
    account = parsed_account(cfg_path, extra)
    assert (account.tls.mode, account.port) == (mode, port)


@pytest.mark.parametrize(
    "written",
    [
        f"sha256:{FINGERPRINT_HEX}",
        f"SHA256:{FINGERPRINT_HEX.upper()}",
        "sha256:" + ":".join(["AB"] * 32),
    ],
)
def test_fingerprints_are_normalised(cfg_path: Path, written: str) -> None:
    account = parsed_account(cfg_path, f'fingerprint = "{written}"\n')
    assert account.tls.fingerprint == f"sha256:{FINGERPRINT_HEX}"


@pytest.mark.parametrize(
    ("text", "fields", "expected"),
    [
        pytest.param(
            MINIMAL_ACCOUNT + "timeout = 3600\n",
            ["timeout"],
            [3600.0],
            id="integer-timeout-becomes-float",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'ca = "certifi"\n',
            ["tls.ca", "ca_file"],
            ["certifi", None],
            id="named-trust-store-certifi-leaves-ca-file-unset",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'ca = "system"\n',
            ["tls.ca", "ca_file"],
            ["system", None],
            id="named-trust-store-system-leaves-ca-file-unset",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'ca_file = "/etc/ssl/private-ca.pem"\n',
            ["tls.ca", "ca_file"],
            ["/etc/ssl/private-ca.pem", Path("/etc/ssl/private-ca.pem")],
            id="ca-file-means-ca",
        ),
        pytest.param(
            "[defaults]\nport = 110\n" + MINIMAL_ACCOUNT,
            ["tls.mode"],
            ["starttls"],
            id="port-110-from-defaults-means-starttls",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'tls_min_version = "1.3"\n',
            ["tls.min_version"],
            ["1.3"],
            id="tls-min-version-as-string",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + "tls_min_version = 1.3\n",
            ["tls.min_version"],
            ["1.3"],
            id="tls-min-version-as-number",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'client_cert = "/both.pem"\n',
            ["tls.client_cert", "tls.client_key"],
            [Path("/both.pem"), None],
            id="client-cert-alone-may-hold-the-key",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'auth = "CRAM-MD5"\n',
            ["auth"],
            ["cram-md5"],
            id="auth-names-are-case-insensitive",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'password_command = ["pass", "show", "mail/work"]\n',
            ["password_command", "secret_source"],
            [("pass", "show", "mail/work"), "password_command"],
            id="password-command-becomes-a-tuple",
        ),
        pytest.param(
            MINIMAL_ACCOUNT + 'password_credential = "mail-work.password"\n',
            ["password_credential", "secret_source"],
            ["mail-work.password", "password_credential"],
            id="password-credential-is-read",
        ),
    ],
)
def test_accepted_values(
    cfg_path: Path, text: str, fields: list[str], expected: list[object]
) -> None:
    """Each named field (dotted: tls.ca) of the parsed account, and its exact type."""
    account = config.parse(text, cfg_path).accounts["work"]
    found = [attrgetter(field)(account) for field in fields]
    assert found == expected
    assert [type(value) for value in found] == [type(value) for value in expected]


BAD_FINGERPRINT = (
    'accounts.work.fingerprint: expected "sha256:" and 64 hex digits (colons allowed), '
    "as printed by pop3s-fetch serverinfo NAME, got "
)
BAD_ARGV = (
    'accounts.work.password_command: expected an array of non-empty strings such as ["pass", '
    '"show", "mail/work"] (it is run without a shell), got '
)
BAD_CREDENTIAL = (
    "accounts.work.password_credential: expected a credential name as given to LoadCredential= "
    'or LoadCredentialEncrypted= (a file name, no "/"), got '
)
AUTH_CHOICES = (
    '"auto", "scram-sha-256", "scram-sha-1", "plain", "user", "xoauth2", "oauthbearer", '
    '"apop", "cram-md5", "login"'
)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'tls = "ssl"',
            'accounts.work.tls: expected "implicit" or "starttls", got "ssl" '
            '(did you mean "implicit"?)',
        ),
        ("tls = true", 'accounts.work.tls: expected "implicit" or "starttls", got true'),
        (
            "ca = 5",
            'accounts.work.ca: expected "certifi", "system" or the path of a PEM file or '
            "directory, got 5",
        ),
        (
            'ca = ""',
            'accounts.work.ca: expected "certifi", "system" or the path of a PEM file or '
            'directory, got ""',
        ),
        (
            'ca = "a\\u0000b"',
            'accounts.work.ca: a path cannot contain a NUL character, got "a\\u0000b"',
        ),
        (f'fingerprint = "{FINGERPRINT_HEX}"', f'{BAD_FINGERPRINT}"{FINGERPRINT_HEX}"'),
        ('fingerprint = "sha256:abcd"', f'{BAD_FINGERPRINT}"sha256:abcd"'),
        (
            f'fingerprint = "sha256:{FINGERPRINT_HEX}00"',
            f'{BAD_FINGERPRINT}"sha256:{FINGERPRINT_HEX}00"',
        ),
        (
            f'fingerprint = "sha256:{"g" * 64}"',
            f'{BAD_FINGERPRINT}"sha256:{"g" * 64}"',
        ),
        (
            f'fingerprint = "sha1:{FINGERPRINT_HEX}"',
            f'{BAD_FINGERPRINT}"sha1:{FINGERPRINT_HEX}"',
        ),
        ("fingerprint = 7", f"{BAD_FINGERPRINT}7"),
        (
            'tls_min_version = "1.1"',
            'accounts.work.tls_min_version: expected "1.2" or "1.3", got "1.1"',
        ),
        (
            "tls_min_version = 1.0",
            'accounts.work.tls_min_version: expected "1.2" or "1.3", got 1.0',
        ),
        ("tls_min_version = 1", 'accounts.work.tls_min_version: expected "1.2" or "1.3", got 1'),
        (
            'x509_strict = "no"',
            'accounts.work.x509_strict: expected true or false, got "no" (did you mean false?)',
        ),
        ('client_cert = ""', 'accounts.work.client_cert: expected a non-empty path, got ""'),
        ("client_key = 3", "accounts.work.client_key: expected a non-empty path, got 3"),
        (
            'auth = "digest-md5"',
            f'accounts.work.auth: expected one of {AUTH_CHOICES}, got "digest-md5"',
        ),
        ("auth = 1", f"accounts.work.auth: expected one of {AUTH_CHOICES}, got 1"),
        (
            'password_command = "pass show mail"',
            f'{BAD_ARGV}"pass show mail" (did you mean ["pass", "show", "mail"]?)',
        ),
        (
            "password_command = \"gpg -d 'my pw.gpg'\"",
            f'{BAD_ARGV}"gpg -d \'my pw.gpg\'" (did you mean ["gpg", "-d", "my pw.gpg"]?)',
        ),
        (
            'password_command = "pass show mail | head -n 1"',
            f'{BAD_ARGV}"pass show mail | head -n 1" '
            '(did you mean ["sh", "-c", "pass show mail | head -n 1"]?)',
        ),
        ('password_command = "gpg -d \'x"', f'{BAD_ARGV}"gpg -d \'x"'),
        ("password_command = []", f"{BAD_ARGV}[]"),
        ('password_command = ["pass", ""]', f'{BAD_ARGV}["pass", ""]'),
        ('password_command = ["pass", 1]', f'{BAD_ARGV}["pass", 1]'),
        ('password_credential = "a/b"', f'{BAD_CREDENTIAL}"a/b"'),
        ('password_credential = ".."', f'{BAD_CREDENTIAL}".."'),
        ('password_credential = "."', f'{BAD_CREDENTIAL}"."'),
        ('password_credential = ""', f'{BAD_CREDENTIAL}""'),
        ("password_credential = 5", f"{BAD_CREDENTIAL}5"),
        ('password_credential = "a\\u0000b"', f'{BAD_CREDENTIAL}"a\\u0000b"'),
        pytest.param(
            'ca = "system"\nca_file = "/x.pem"',
            "accounts.work.ca_file: set ca or ca_file, not both "
            "(ca_file = PATH is the older spelling of ca = PATH)",
            id="ca-and-ca-file-together",
        ),
        pytest.param(
            'client_key = "/k.pem"',
            "accounts.work.client_key: set client_cert too (the certificate that goes with this "
            "key)",
            id="client-key-needs-client-cert",
        ),
    ],
)
def test_bad_new_values(cfg_path: Path, line: str, message: str) -> None:
    assert account_with(cfg_path, line + "\n") == message


# --- oauth2 ---------------------------------------------------------------------------------


def test_microsoft_preset_fills_endpoints_and_scopes(cfg_path: Path) -> None:
    extra = '[accounts.work.oauth2]\nprovider = "microsoft"\nclient_id = "app-id"\n'
    account = parsed_account(cfg_path, extra)
    assert account.oauth2 == config.OAuth2Settings(
        provider="microsoft",
        token_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/token",
        device_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
        client_id="app-id",
        client_secret=None,
        scopes=("https://outlook.office.com/POP.AccessAsUser.All", "offline_access"),
    )
    assert account.auth == "auto"
    assert account.secret_source == "oauth2"


def test_google_preset_with_its_installed_app_secret(cfg_path: Path) -> None:
    extra = (
        'auth = "xoauth2"\n[accounts.work.oauth2]\nprovider = "google"\n'
        'client_id = "123.apps.googleusercontent.com"\nclient_secret = "not-really-secret"\n'
    )
    account = parsed_account(cfg_path, extra)
    assert account.oauth2 == config.OAuth2Settings(
        provider="google",
        token_endpoint="https://oauth2.googleapis.com/token",
        device_endpoint="https://oauth2.googleapis.com/device/code",
        client_id="123.apps.googleusercontent.com",
        client_secret="not-really-secret",
        scopes=("https://mail.google.com/",),
    )
    assert account.auth == "xoauth2"


def test_explicit_values_override_a_preset(cfg_path: Path) -> None:
    extra = (
        "oauth2 = {"
        'provider = "microsoft", client_id = "c", scopes = ["s1"], '
        'token_endpoint = "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"}\n'
    )
    settings = parsed_account(cfg_path, extra).oauth2
    assert settings is not None
    assert settings.token_endpoint == "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"
    assert settings.device_endpoint.endswith("/common/oauth2/v2.0/devicecode")
    assert settings.scopes == ("s1",)


CUSTOM_OAUTH2 = """
[accounts.work.oauth2]
provider = "custom"
token_endpoint = "http://127.0.0.1:8080/token"
device_endpoint = "http://localhost:8080/device"
client_id = "test-client"
scopes = ["mail", "offline"]
"""


def test_custom_provider_on_the_loopback_interface(cfg_path: Path) -> None:
    assert parsed_account(cfg_path, CUSTOM_OAUTH2).oauth2 == config.OAuth2Settings(
        provider="custom",
        token_endpoint="http://127.0.0.1:8080/token",
        device_endpoint="http://localhost:8080/device",
        client_id="test-client",
        client_secret=None,
        scopes=("mail", "offline"),
    )


def test_plain_http_to_ipv6_loopback_is_accepted(cfg_path: Path) -> None:
    text = CUSTOM_OAUTH2.replace("http://127.0.0.1:8080", "http://[::1]:8080")
    settings = parsed_account(cfg_path, text).oauth2
    assert settings is not None
    assert settings.token_endpoint == "http://[::1]:8080/token"


@pytest.mark.parametrize(
    ("provider", "company"), [("microsoft", "Microsoft"), ("google", "Google")]
)
def test_preset_still_needs_a_client_id(cfg_path: Path, provider: str, company: str) -> None:
    extra = f'[accounts.work.oauth2]\nprovider = "{provider}"\n'
    assert account_with(cfg_path, extra) == (
        f"accounts.work.oauth2.client_id: missing required key (register an application with "
        f"{company} to get one; set it here or in [defaults.oauth2])"
    )


ENDPOINT_PROBLEM = (
    "accounts.work.oauth2.token_endpoint: expected an https:// URL (http:// only for "
    "127.0.0.1, localhost or [::1]), got "
)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'provider = "gmail"',
            'accounts.work.oauth2.provider: expected "microsoft", "google" or "custom", '
            'got "gmail"',
        ),
        ('token_endpoint = "http://example.com/t"', f'{ENDPOINT_PROBLEM}"http://example.com/t"'),
        ('token_endpoint = "http://127.0.0.2/t"', f'{ENDPOINT_PROBLEM}"http://127.0.0.2/t"'),
        ('token_endpoint = "ftp://example.com/t"', f'{ENDPOINT_PROBLEM}"ftp://example.com/t"'),
        ('token_endpoint = "https:///t"', f'{ENDPOINT_PROBLEM}"https:///t"'),
        ('token_endpoint = "https://[::1/t"', f'{ENDPOINT_PROBLEM}"https://[::1/t"'),
        ('token_endpoint = "https://a b/t"', f'{ENDPOINT_PROBLEM}"https://a b/t"'),
        (
            'token_endpoint = "https://u:p@example.com/t"',
            f'{ENDPOINT_PROBLEM}"https://u:p@example.com/t"',
        ),
        ("token_endpoint = 1", f"{ENDPOINT_PROBLEM}1"),
        (
            'client_id = ""',
            'accounts.work.oauth2.client_id: expected a non-empty string, got ""',
        ),
        (
            "client_secret = false",
            "accounts.work.oauth2.client_secret: expected a non-empty string, got false",
        ),
        (
            'scopes = "https://mail.google.com/"',
            "accounts.work.oauth2.scopes: expected an array of scopes such as "
            '["https://mail.google.com/"], got "https://mail.google.com/"',
        ),
        (
            "scopes = []",
            "accounts.work.oauth2.scopes: expected an array of scopes such as "
            '["https://mail.google.com/"], got []',
        ),
        (
            'scopes = ["a b"]',
            "accounts.work.oauth2.scopes: expected an array of scopes such as "
            '["https://mail.google.com/"], got ["a b"]',
        ),
        (
            "client = 1",
            'accounts.work.oauth2.client: unknown key (did you mean "client_id"?)',
        ),
    ],
)
def test_bad_oauth2_values(cfg_path: Path, line: str, message: str) -> None:
    # Every other key is valid, so the bad line is the only problem.
    base = 'provider = "custom"\ntoken_endpoint = "https://t.example/t"\n'
    base += 'device_endpoint = "https://t.example/d"\nclient_id = "c"\nscopes = ["s"]\n'
    key = line.split(" = ")[0]
    lines = [entry for entry in base.splitlines() if not entry.startswith(f"{key} = ")]
    extra = "[accounts.work.oauth2]\n" + "\n".join([*lines, line]) + "\n"
    assert account_with(cfg_path, extra) == message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_plain_http_is_allowed_only_on_loopback(cfg_path: Path, host: str) -> None:
    extra = CUSTOM_OAUTH2.replace("http://127.0.0.1:8080", f"http://{host}:9")
    settings = parsed_account(cfg_path, extra).oauth2
    assert settings is not None
    assert settings.token_endpoint == f"http://{host}:9/token"


def test_defaults_oauth2_is_merged_key_by_key(cfg_path: Path) -> None:
    text = (
        '[defaults.oauth2]\nprovider = "google"\nclient_id = "shared"\nclient_secret = "s"\n'
        + MINIMAL_ACCOUNT
        + '[accounts.work.oauth2]\nclient_id = "own"\n'
        + '[accounts.other]\nhost = "h"\nusername = "u"\ndestination = "/m/o"\n'
    )
    accounts = config.parse(text, cfg_path).accounts
    work, other = accounts["work"].oauth2, accounts["other"].oauth2
    assert work is not None
    assert other is not None
    assert (work.provider, work.client_id, work.client_secret) == ("google", "own", "s")
    assert (other.provider, other.client_id, other.client_secret) == ("google", "shared", "s")


def test_an_account_secret_source_replaces_the_default_one(cfg_path: Path) -> None:
    text = (
        '[defaults.oauth2]\nprovider = "google"\nclient_id = "c"\n'
        + MINIMAL_ACCOUNT
        + 'password_command = ["pass", "mail"]\n'
    )
    account = config.parse(text, cfg_path).accounts["work"]
    assert account.oauth2 is None
    assert account.password_command == ("pass", "mail")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            '[accounts.work.oauth2]\nclient_id = "c"\n',
            "accounts.work.oauth2.provider: missing required key (set it here or in "
            "[defaults.oauth2])",
            id="oauth2-needs-a-provider",
        ),
        pytest.param(
            'oauth2 = "google"\n',
            'accounts.work.oauth2: expected a table, got "google"',
            id="oauth2-must-be-a-table",
        ),
        pytest.param(
            'password_command = ["pass", "mail"]\npassword_credential = "mail"\n'
            '[accounts.work.oauth2]\nprovider = "google"\nclient_id = "c"\n',
            "accounts.work: set at most one of password_command, password_credential and oauth2 "
            "(found password_command, password_credential and oauth2)",
            id="two-secret-sources",
        ),
        pytest.param(
            'auth = "xoauth2"\n',
            'accounts.work.auth: "xoauth2" logs in with an OAuth2 token; add an '
            "[accounts.work.oauth2] table (or [defaults.oauth2])",
            id="xoauth2-needs-an-oauth2-table",
        ),
        pytest.param(
            'auth = "oauthbearer"\n',
            'accounts.work.auth: "oauthbearer" logs in with an OAuth2 token; add an '
            "[accounts.work.oauth2] table (or [defaults.oauth2])",
            id="oauthbearer-needs-an-oauth2-table",
        ),
        pytest.param(
            'auth = "plain"\n[accounts.work.oauth2]\nprovider = "google"\nclient_id = "c"\n',
            'accounts.work.auth: "plain" logs in with a password, but this account has an oauth2 '
            'table; use "auto", "xoauth2" or "oauthbearer"',
            id="password-mechanisms-refuse-an-oauth2-table",
        ),
    ],
)
def test_oauth2_and_secret_source_problems(cfg_path: Path, extra: str, message: str) -> None:
    assert account_with(cfg_path, extra) == message


# --- Account built in code ------------------------------------------------------------------


def test_account_needs_only_four_fields() -> None:
    account = Account(name="a", host="h", username="u", destination=Path("/m"))
    assert account.tls == config.TlsSettings()
    assert (account.ca_file, account.auth, account.oauth2) == (None, "auto", None)


def test_account_ca_file_sets_tls_ca_and_the_reverse() -> None:
    by_file = Account(name="a", host="h", username="u", destination=Path("/m"), ca_file=Path("/c"))
    by_tls = Account(
        name="a", host="h", username="u", destination=Path("/m"), tls=config.TlsSettings(ca="/c")
    )
    assert by_file == by_tls
    assert (by_file.tls.ca, by_file.ca_file) == ("/c", Path("/c"))


def test_account_refuses_contradictory_trust() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        Account(
            name="a",
            host="h",
            username="u",
            destination=Path("/m"),
            ca_file=Path("/c"),
            tls=config.TlsSettings(ca="system"),
        )
