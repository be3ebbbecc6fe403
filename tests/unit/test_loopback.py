"""The one rule for which hosts are this machine, shared by config and oauth2."""

from __future__ import annotations

import pytest

from pop3s_fetch import loopback


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "127.0.0.1", "::1"])
def test_the_documented_loopback_hosts(host: str) -> None:
    assert loopback.is_loopback(host)


@pytest.mark.parametrize(
    "host", ["localhost.example.com", "10.0.0.1", "127.0.0.2", "[::1]", "0:0:0:0:0:0:0:1", ""]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    # 127.0.0.2 is a loopback address, but the documentation promises exactly three names.
    assert not loopback.is_loopback(host)
