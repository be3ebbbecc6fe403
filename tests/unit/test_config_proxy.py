"""``proxy = "socks5://HOST:PORT"`` in the configuration: what is accepted, and each near miss.

A URL with credentials is refused without being echoed (it holds a password).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pop3s_fetch import config
from pop3s_fetch.errors import ConfigError
from pop3s_fetch.socks import Proxy

BASE = '[accounts.work]\nhost = "pop.example.com"\nusername = "me"\ndestination = "/m"\n'


def account(extra: str, *, defaults: str = "") -> config.Account:
    text = (f"[defaults]\n{defaults}" if defaults else "") + BASE + extra
    return config.parse(text, Path("/c/config.toml")).accounts["work"]


def problem(extra: str) -> str:
    with pytest.raises(ConfigError) as excinfo:
        config.parse(BASE + extra, Path("/c/config.toml"))
    (line,) = excinfo.value.problems
    return line.removeprefix("/c/config.toml: accounts.work.proxy: ")


@pytest.mark.parametrize(
    ("url", "proxy"),
    [
        ("socks5://127.0.0.1:9050", Proxy("127.0.0.1", 9050)),
        ("socks5h://127.0.0.1:9050", Proxy("127.0.0.1", 9050)),
        ("SOCKS5://Proxy.Example:1080/", Proxy("proxy.example", 1080)),
        ("socks5://[::1]:1080", Proxy("::1", 1080)),
    ],
)
def test_socks5_urls_are_accepted(url: str, proxy: Proxy) -> None:
    assert account(f'proxy = "{url}"\n').proxy == proxy


def test_no_proxy_by_default_and_false_overrides_defaults() -> None:
    assert account("").proxy is None
    tor = 'proxy = "socks5://127.0.0.1:9050"\n'
    assert account("", defaults=tor).proxy == Proxy("127.0.0.1", 9050)
    assert account("proxy = false\n", defaults=tor).proxy is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            '"http://127.0.0.1:3128"',
            'proxy scheme "http" is not supported, only SOCKS5 is (did you mean '
            '"socks5://127.0.0.1:3128"?)',
        ),
        (
            '"socks4a://127.0.0.1:9050"',
            'proxy scheme "socks4a" is not supported, only SOCKS5 is (did you mean '
            '"socks5://127.0.0.1:9050"?)',
        ),
        (
            '"127.0.0.1:9050"',
            'expected a socks5:// URL (did you mean "socks5://127.0.0.1:9050"?)',
        ),
        (
            '"socks5://127.0.0.1"',
            'the port is missing (did you mean "socks5://127.0.0.1:9050", Tor\'s, or '
            '"socks5://127.0.0.1:1080"?)',
        ),
        (
            '"socks5://127.0.0.1:0"',
            'expected socks5://HOST:PORT such as "socks5://127.0.0.1:9050", got '
            '"socks5://127.0.0.1:0"',
        ),
        (
            '"socks5://127.0.0.1:99999"',
            'expected socks5://HOST:PORT such as "socks5://127.0.0.1:9050", got '
            '"socks5://127.0.0.1:99999"',
        ),
        (
            '"socks5://127.0.0.1:9050/tor"',
            'expected nothing after HOST:PORT, got "socks5://127.0.0.1:9050/tor"',
        ),
        (
            "true",
            'expected a URL such as "socks5://127.0.0.1:9050" (or false for a direct '
            "connection), got true",
        ),
    ],
)
def test_near_misses_get_one_line_and_a_guess(value: str, message: str) -> None:
    assert problem(f"proxy = {value}\n") == message


@pytest.mark.parametrize(
    "url",
    ["socks5://tor:s3cret@127.0.0.1:9050", "tor:s3cret@127.0.0.1:9050", "http://u:s3cret@h:1"],
)
def test_credentials_in_the_url_are_refused_and_not_echoed(url: str) -> None:
    message = problem(f'proxy = "{url}"\n')
    assert message.startswith(
        "a user name or password in the proxy URL is refused: pop3s-fetch does not do proxy "
        "authentication, because its password would sit in this file"
    )
    assert "s3cret" not in message


@pytest.mark.parametrize("key", ["proxy_host", "proxy_port"])
def test_mpops_keys_point_to_proxy(key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.parse(BASE + f'{key} = "x"\n', Path("/c/config.toml"))
    assert excinfo.value.problems == [
        f"/c/config.toml: accounts.work.{key}: unknown key (did you mean proxy = "
        '"socks5://HOST:PORT"?)'
    ]
