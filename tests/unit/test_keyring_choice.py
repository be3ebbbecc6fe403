"""When pop3s-fetch may read the Secret Service itself: only where keyring would choose it."""

from __future__ import annotations

import sys
from pathlib import Path

import keyring.core
import pytest
from keyring.backends import null

from pop3s_fetch import credentials


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A Linux session with a bus, nothing configured, and no third-party keyring backend."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    (tmp_path / "site").mkdir()
    monkeypatch.delitem(sys.modules, "keyring.core", raising=False)
    credentials._keyring_plugins_installed.cache_clear()  # looked at once per process
    return {
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def chooses(environ: dict[str, str]) -> bool:
    return credentials._secret_service_is_keyring_choice(environ)


def test_left_alone_keyring_would_use_the_secret_service(environ: dict[str, str]) -> None:
    assert chooses(environ)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PYTHON_KEYRING_BACKEND", "keyring.backends.SecretService.Keyring"),
        ("KEYRING_PROPERTY_PREFERRED_COLLECTION", "/org/freedesktop/secrets/collection/other"),
        ("KEYRING_PROPERTY_SCHEME", "KeePassXC"),
        ("XDG_CURRENT_DESKTOP", "KDE"),
        ("XDG_CURRENT_DESKTOP", "ubuntu:KDE"),
    ],
)
def test_a_setting_that_chooses_or_may_outrank(
    environ: dict[str, str], name: str, value: str
) -> None:
    environ[name] = value
    assert not chooses(environ)


def test_another_desktop_is_fine(environ: dict[str, str]) -> None:
    environ["XDG_CURRENT_DESKTOP"] = "ubuntu:GNOME"
    assert chooses(environ)


def test_no_session_bus(environ: dict[str, str]) -> None:
    del environ["DBUS_SESSION_BUS_ADDRESS"]
    assert not chooses(environ)


def test_not_linux(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not chooses(environ)


def test_keyring_config_file(environ: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config" / "python_keyring" / "keyringrc.cfg"
    config.parent.mkdir(parents=True)
    config.write_text("[backend]\ndefault-keyring=keyring.backends.null.Keyring\n")
    assert not chooses(environ)


def test_keyring_config_file_under_home_without_xdg(
    environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del environ["XDG_CONFIG_HOME"]
    monkeypatch.setenv("HOME", str(tmp_path))  # Path.home(), as keyring reads it
    config = tmp_path / ".config" / "python_keyring" / "keyringrc.cfg"
    config.parent.mkdir(parents=True)
    config.write_text("[backend]\n")
    assert not chooses(environ)


def test_a_third_party_backend_installed(environ: dict[str, str], tmp_path: Path) -> None:
    own = tmp_path / "site" / "keyring-25.7.0.dist-info"
    own.mkdir()
    (own / "entry_points.txt").write_text(
        "[keyring.backends]\nchainer = keyring.backends.chainer\n"
    )
    assert chooses(environ)  # keyring's own backends do not count
    credentials._keyring_plugins_installed.cache_clear()
    plugin = tmp_path / "site" / "keyrings.alt-5.0.2.dist-info"
    plugin.mkdir()
    (plugin / "entry_points.txt").write_text("[keyring.backends]\nfile = keyrings.alt.file\n")
    assert not chooses(environ)


def test_keyring_already_set_up_in_this_process(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Imported at the top: the fixture empties sys.path, so an import here would fail when
    # this test runs alone.
    monkeypatch.setitem(sys.modules, "keyring.core", keyring.core)
    monkeypatch.setattr(keyring.core, "_keyring_backend", null.Keyring())
    assert not chooses(environ)
