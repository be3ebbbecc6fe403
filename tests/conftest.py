"""Shared fixtures. The real-server and certificate fixtures live in ``tests/support``."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.certs",
    "tests.support.dovecot",
    "tests.support.oauth2_authority",
    "tests.support.dovecot_oauth2",
    "tests.support.dovecot_variants",
    "tests.support.secret_service",
    "tests.support.cli",
    "tests.support.socks_proxy",
]
