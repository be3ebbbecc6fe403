"""A keyring backend for subprocess tests that are not about the keyring.

Selected with ``PYTHON_KEYRING_BACKEND=tests.support.env_keyring.EnvironmentKeyring``; it
answers every lookup with ``$TEST_KEYRING_PASSWORD``. The real Secret Service is exercised by
the end-to-end tests; this keeps the others fast and independent of D-Bus.
"""

from __future__ import annotations

import os

from keyring.backend import KeyringBackend


class EnvironmentKeyring(KeyringBackend):
    priority = -1  # type: ignore[assignment]  # never chosen unless asked for by name

    def get_password(self, service: str, username: str) -> str | None:
        return os.environ.get("TEST_KEYRING_PASSWORD")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NotImplementedError("read-only test keyring")

    def delete_password(self, service: str, username: str) -> None:
        raise NotImplementedError("read-only test keyring")
