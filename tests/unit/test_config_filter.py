"""The header filter's and trace headers' keys (issue 12, items 4 and 5): what is accepted, and
one line naming the key, with a "did you mean" where the intent is clear, for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from pop3s_fetch import config
from pop3s_fetch.errors import ConfigError

BASE = (
    '[accounts.work]\nhost = "pop.example.com"\nusername = "me@example.com"\ndestination = "/m"\n'
)


def account(extra: str, base: str = BASE) -> config.Account:
    return config.parse(base + extra, Path("/c/config.toml")).accounts["work"]


def problem(extra: str, base: str = BASE) -> str:
    with pytest.raises(ConfigError) as excinfo:
        config.parse(base + extra, Path("/c/config.toml"))
    (line,) = excinfo.value.problems
    return line.removeprefix("/c/config.toml: accounts.work.")


def test_defaults_keep_the_copy_byte_exact_and_run_no_filter() -> None:
    plain = account("")
    assert (plain.filter, plain.filter_may_delete, plain.add_headers) == (None, False, ())
    assert plain.filter_timeout == config.DEFAULT_FILTER_TIMEOUT


def test_filter_keys_here_and_in_defaults() -> None:
    spam = account(
        'filter = ["/usr/local/bin/spamcheck", "{sender}", "--user={recipient}"]\n'
        "filter_timeout = 5\nfilter_may_delete = true\n"
    )
    assert spam.filter == ("/usr/local/bin/spamcheck", "{sender}", "--user={recipient}")
    assert (spam.filter_timeout, spam.filter_may_delete) == (5.0, True)
    inherited = account("", '[defaults]\nfilter = ["spamcheck"]\n' + BASE)
    assert inherited.filter == ("spamcheck",)


def test_add_headers_any_case_written_in_one_order() -> None:
    traced = account('add_headers = ["X-Original-To", "received"]\n')
    assert traced.add_headers == ("received", "x-original-to")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('filter = "spamcheck"', "filter: expected an array of non-empty strings such as"),
        ("filter = []", "filter: expected an array of non-empty strings such as"),
        ('filter = ["f", "{sendr}"]', "filter: unknown placeholder {sendr} in argument 2 (did "),
        ('filter = ["{uidl}"]', "filter: the program (the first argument) cannot hold a "),
        ('filter = ["f"]\nfilter_may_delete = "yes"', "filter_may_delete: expected true or "),
        ('filter = ["f"]\nfilter_timeout = 0', "filter_timeout: expected"),
        ("filter_may_delete = true", "filter_may_delete: has no effect without filter"),
        ("filter_timeout = 9", "filter_timeout: has no effect without filter"),
        ('filters = ["f"]', 'filters: unknown key (did you mean "filter"?)'),
        ('add_headers = ["recieved"]', 'add_headers: unknown header "recieved" (did you mean '),
        ('add_headers = ["x-spam"]', 'add_headers: unknown header "x-spam" (known: "received"'),
        ('add_headers = "received"', 'add_headers: expected an array such as ["received", '),
        ('add_headers = ["received", "Received"]', "add_headers: names a header more than once"),
        ('add_header = ["received"]', 'add_header: unknown key (did you mean "add_headers"?)'),
    ],
)
def test_mistakes(line: str, message: str) -> None:
    assert problem(line + "\n").startswith(message)


def test_delivered_to_needs_a_username_fit_for_a_header() -> None:
    base = BASE.replace('"me@example.com"', '"me and you"')
    assert account('add_headers = ["received"]\n', base).add_headers == ("received",)
    assert problem('add_headers = ["delivered-to"]\n', base).startswith(
        "add_headers: Delivered-To and X-Original-To name the username, which must then be "
        "one word of printable ASCII"
    )
