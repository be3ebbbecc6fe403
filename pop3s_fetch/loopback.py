"""Which hosts are this machine: the only ones plain ``http://`` may reach (test servers).

One rule for the whole program, so that what the configuration accepts and what the OAuth2
code sends (and keeps away from any proxy) can never disagree. It is the set the
documentation names: ``127.0.0.1``, ``localhost`` and ``[::1]``, spelled that way. Other
loopback addresses (``127.0.0.2``) are refused; widening the rule is a change of behaviour
for the man page, not a refactor.

Must not know: URLs, HTTP or the configuration file; it judges one host name.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LOOPBACK_HOSTS", "is_loopback"]

#: Host names as :func:`urllib.parse.urlsplit` gives them (IPv6 without brackets).
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(host: str) -> bool:
    """True for :data:`LOOPBACK_HOSTS`, in any letter case."""
    return host.lower() in LOOPBACK_HOSTS
