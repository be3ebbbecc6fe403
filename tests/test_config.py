"""Tests for pop3s_fetch.config: lookup order, parsing, and the exact text of every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pop3s_fetch import config
from pop3s_fetch.config import Account, Config
from pop3s_fetch.errors import ConfigError, ExitCode

REPO_ROOT = Path(__file__).resolve().parent.parent

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


def test_default_path_uses_xdg_config_home_when_absolute() -> None:
    environ = {"XDG_CONFIG_HOME": "/x/conf", "HOME": "/home/a"}
    assert config.default_config_path(environ) == Path("/x/conf/pop3s-fetch/config.toml")


@pytest.mark.parametrize("xdg", [None, "", "relative/conf"])
def test_default_path_falls_back_to_home_dot_config(xdg: str | None) -> None:
    environ = {"HOME": "/home/a"}
    if xdg is not None:
        environ["XDG_CONFIG_HOME"] = xdg
    assert config.default_config_path(environ) == Path("/home/a/.config/pop3s-fetch/config.toml")


def test_default_path_without_home_variable_uses_the_password_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/from/pwd")))
    assert config.default_config_path({}) == Path("/from/pwd/.config/pop3s-fetch/config.toml")


def test_explicit_path_wins_over_environment() -> None:
    environ = {"POP3S_FETCH_CONFIG": "/env/c.toml", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}
    assert config.find_config_path(Path("/cli/c.toml"), environ) == Path("/cli/c.toml")


def test_environment_variable_wins_over_xdg() -> None:
    environ = {"POP3S_FETCH_CONFIG": "/env/c.toml", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}
    assert config.find_config_path(None, environ) == Path("/env/c.toml")


def test_empty_environment_variable_is_ignored() -> None:
    environ = {"POP3S_FETCH_CONFIG": "", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}
    assert config.find_config_path(None, environ) == Path("/x/pop3s-fetch/config.toml")


def test_home_fallback_when_nothing_else_is_set() -> None:
    assert config.find_config_path(None, {"HOME": "/h"}) == Path(
        "/h/.config/pop3s-fetch/config.toml"
    )


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
        f"copy config.example.toml to {path} and edit it"
    )
    assert err.exit_code == ExitCode.CONFIG
    assert err.problems == []


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.load(tmp_path)
    assert str(excinfo.value) == f"cannot read configuration file {tmp_path}: Is a directory"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'# caf\xe9\n[accounts.a]\nhost = "h"\n')
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    assert str(excinfo.value) == (
        f"{path}: not UTF-8 text (bad byte at offset 5); TOML files must be UTF-8"
    )


def test_syntax_error_has_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[accounts.work]\nhost = "pop.example.com"\nport = = 3\n', encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    assert str(excinfo.value) == f"{path}:3:8: invalid TOML: invalid value"
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


def test_integer_timeout_becomes_float(cfg_path: Path) -> None:
    account = config.parse(MINIMAL_ACCOUNT + "timeout = 3600\n", cfg_path).accounts["work"]
    assert account.timeout == 3600.0
    assert isinstance(account.timeout, float)


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


def test_environment_variables_are_not_expanded(
    cfg_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILDIR_ROOT", "/should/not/appear")
    text = MINIMAL_ACCOUNT.replace("/var/mail/work", "/m/$MAILDIR_ROOT")
    assert config.parse(text, cfg_path).accounts["work"].destination == Path("/m/$MAILDIR_ROOT")


def test_unknown_user_in_tilde_path_is_a_problem(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT.replace("/var/mail/work", "~no-such-user-pop3s-fetch/Mail")
    assert single_problem(text, cfg_path) == (
        f"{cfg_path}: accounts.work.destination: "
        'cannot expand the ~ in "~no-such-user-pop3s-fetch/Mail"'
    )


def test_account_names_allow_dots_dashes_underscores(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT.replace("[accounts.work]", '[accounts."a.b_c-D9"]')
    assert list(config.parse(text, cfg_path).accounts) == ["a.b_c-D9"]


def test_config_objects_are_frozen(cfg_path: Path) -> None:
    account = config.parse(MINIMAL_ACCOUNT, cfg_path).accounts["work"]
    with pytest.raises(AttributeError):
        account.port = 1  # type: ignore[misc]


# --- parse: problems, with their exact text ---------------------------------------------------


def test_error_message_counts_problems(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT + 'port = "x"\nkeep = 1\n'
    with pytest.raises(ConfigError) as excinfo:
        config.parse(text, cfg_path)
    assert str(excinfo.value) == f"{cfg_path}: 2 problems in the configuration"
    assert excinfo.value.exit_code == ExitCode.CONFIG
    assert excinfo.value.problems == [
        f'{cfg_path}: accounts.work.port: expected an integer 1-65535, got "x"',
        f"{cfg_path}: accounts.work.keep: expected true or false, got 1",
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
        ('format = "mh"', 'accounts.work.format: expected "maildir" or "mbox", got "mh"'),
        ('format = "Maildir"', 'accounts.work.format: expected "maildir" or "mbox", got "Maildir"'),
        ('keep = "yes"', 'accounts.work.keep: expected true or false, got "yes"'),
        ("keep = 0", "accounts.work.keep: expected true or false, got 0"),
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
            'got "30"',
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


def test_strings_are_shown_with_toml_escapes(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT + 'format = "a\\"b\\\\c\\td\\u0001é"\n'
    assert account_with(cfg_path, text[len(MINIMAL_ACCOUNT) :]) == (
        'accounts.work.format: expected "maildir" or "mbox", got "a\\"b\\\\c\\td\\u0001é"'
    )


def test_missing_required_keys_are_each_reported(cfg_path: Path) -> None:
    assert problems_of("[accounts.work]\nport = 1\n", cfg_path) == [
        f"{cfg_path}: accounts.work.host: missing required key (set it here or in [defaults])",
        f"{cfg_path}: accounts.work.username: missing required key (set it here or in [defaults])",
        f"{cfg_path}: accounts.work.destination: missing required key "
        "(set it here or in [defaults])",
    ]


def test_invalid_default_is_reported_once_not_as_missing(cfg_path: Path) -> None:
    text = '[defaults]\nhost = ""\n[accounts.a]\nusername = "u"\ndestination = "/m"\n'
    assert problems_of(text, cfg_path) == [
        f'{cfg_path}: defaults.host: expected a host name such as "pop.example.com", got ""'
    ]


def test_unknown_key_suggests_the_closest(cfg_path: Path) -> None:
    assert account_with(cfg_path, "prot = 995\n") == (
        'accounts.work.prot: unknown key (did you mean "port"?)'
    )


def test_unknown_key_without_close_match_lists_known_keys(cfg_path: Path) -> None:
    assert account_with(cfg_path, "colour = 1\n") == (
        "accounts.work.colour: unknown key; known keys: host, username, destination, format, "
        "port, keep, ca_file, timeout"
    )


def test_unknown_key_in_defaults(cfg_path: Path) -> None:
    text = "[defaults]\ntimout = 5\n" + MINIMAL_ACCOUNT
    assert single_problem(text, cfg_path) == (
        f'{cfg_path}: defaults.timout: unknown key (did you mean "timeout"?)'
    )


def test_keys_that_need_quoting_are_quoted_in_the_key_path(cfg_path: Path) -> None:
    assert account_with(cfg_path, '"ca file" = "x"\n') == (
        'accounts.work."ca file": unknown key (did you mean "ca_file"?)'
    )


def test_unknown_top_level_table(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT + '[account.home]\nhost = "x"\n'
    assert single_problem(text, cfg_path) == (
        f'{cfg_path}: account: unknown key (did you mean "accounts"?)'
    )


def test_unknown_top_level_key_without_close_match(cfg_path: Path) -> None:
    text = "verbose = true\n" + MINIMAL_ACCOUNT
    assert single_problem(text, cfg_path) == (
        f"{cfg_path}: verbose: unknown key; known keys: accounts, defaults"
    )


def test_password_in_account_is_refused(cfg_path: Path) -> None:
    assert account_with(cfg_path, 'password = "hunter2"\n') == (
        "accounts.work.password: passwords are not read from the config file; "
        "store it in the OS keyring with: pop3s-fetch password set work"
    )


def test_password_in_defaults_is_refused(cfg_path: Path) -> None:
    text = '[defaults]\npassword = "hunter2"\n' + MINIMAL_ACCOUNT
    assert single_problem(text, cfg_path) == (
        f"{cfg_path}: defaults.password: passwords are not read from the config file; "
        "store each account's password in the OS keyring with: pop3s-fetch password set NAME"
    )


def test_password_value_never_appears_in_problems(cfg_path: Path) -> None:
    text = '[defaults]\npassword = "s3cr3t-value"\n' + MINIMAL_ACCOUNT + "password = 1\n"
    found = problems_of(text, cfg_path)
    assert len(found) == 2
    assert not any("s3cr3t-value" in line for line in found)


@pytest.mark.parametrize("text", ["", "[defaults]\ntimeout = 5\n", "[accounts]\n"])
def test_no_accounts_is_a_problem(cfg_path: Path, text: str) -> None:
    assert single_problem(text, cfg_path) == (
        f"{cfg_path}: accounts: no accounts defined; add an [accounts.NAME] table"
    )


def test_accounts_must_be_a_table(cfg_path: Path) -> None:
    assert single_problem('accounts = "work"\n', cfg_path) == (
        f'{cfg_path}: accounts: expected a table of accounts, got "work"'
    )


def test_account_must_be_a_table(cfg_path: Path) -> None:
    text = "[accounts]\nwork = 5\n"
    assert single_problem(text, cfg_path) == f"{cfg_path}: accounts.work: expected a table, got 5"


def test_defaults_must_be_a_table(cfg_path: Path) -> None:
    text = "defaults = 5\n" + MINIMAL_ACCOUNT
    assert single_problem(text, cfg_path) == f"{cfg_path}: defaults: expected a table, got 5"


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


def test_longest_account_name_is_accepted(cfg_path: Path) -> None:
    text = MINIMAL_ACCOUNT.replace("[accounts.work]", f"[accounts.{'a' * 64}]")
    assert list(config.parse(text, cfg_path).accounts) == ["a" * 64]


def test_every_problem_in_the_file_is_reported_in_file_order(cfg_path: Path) -> None:
    text = """
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
    assert problems_of(text, cfg_path) == [
        f"{cfg_path}: typo: unknown key; known keys: accounts, defaults",
        f"{cfg_path}: defaults.port: expected an integer 1-65535, got 99999",
        f'{cfg_path}: accounts.one.username: expected a non-empty string, got ""',
        f'{cfg_path}: accounts."bad name": invalid account name; use at most 64 letters, '
        'digits, ".", "_" and "-", starting with a letter or digit',
        f'{cfg_path}: accounts.two.format: expected "maildir" or "mbox", got "mh"',
        f"{cfg_path}: accounts.two.host: missing required key (set it here or in [defaults])",
        f"{cfg_path}: accounts.two.username: missing required key (set it here or in [defaults])",
        f"{cfg_path}: accounts.two.destination: missing required key "
        "(set it here or in [defaults])",
    ]


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


def test_select_unknown_name_lists_known_names(three_accounts: Config, cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        three_accounts.select(["home", "wrok"])
    assert str(excinfo.value) == f'unknown account "wrok"; {cfg_path} defines: home, work, list'
    assert excinfo.value.exit_code == ExitCode.CONFIG


def test_select_several_unknown_names(three_accounts: Config, cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        three_accounts.select(["x", "y"])
    assert str(excinfo.value) == f'unknown accounts "x", "y"; {cfg_path} defines: home, work, list'


def test_select_from_no_accounts(cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Config(path=cfg_path, accounts={}).select([])
    assert str(excinfo.value) == f"no accounts are defined in {cfg_path}"
    assert excinfo.value.hint == "add an [accounts.NAME] table; see config.example.toml"


# --- the shipped example ----------------------------------------------------------------------


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/example")
    loaded = config.load(REPO_ROOT / "config.example.toml")
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
    }


def test_example_config_documents_every_key() -> None:
    text = (REPO_ROOT / "config.example.toml").read_text(encoding="utf-8")
    for key in ["host", "username", "destination", "format", "port", "keep", "ca_file", "timeout"]:
        assert f"\n{key} = " in text, key
