"""The destinations package: its factory, reading mail back, and which module may import which."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import pop3s_fetch.destinations as destinations
from pop3s_fetch.destinations import BACKENDS, Kind, open_destination, read_messages
from tests.unit.test_delivery import MESSAGES, as_stored, deliver

PACKAGE_DIR = Path(destinations.__file__).parent
BACKEND_MODULES = {name.rsplit(".", 1)[1] for name in BACKENDS.values()}


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_each_backend_provides_what_the_factory_calls(kind: str) -> None:
    module = importlib.import_module(BACKENDS[kind])
    opener = inspect.signature(module.open_destination)
    assert list(opener.parameters) == ["path", "owner", "lock_timeout", "command"]
    assert list(inspect.signature(module.read_messages).parameters) == ["path"]


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_read_messages_gives_back_what_was_delivered(tmp_path: Path, kind: Kind) -> None:
    path = tmp_path / ("Maildir" if kind == "maildir" else "inbox.mbox")
    messages = list(MESSAGES.values())
    with open_destination(path, kind) as destination:
        deliver(destination, messages)

    landed = read_messages(path, kind)

    expected = [as_stored(kind, m) for m in messages]
    if kind == "mbox":
        assert landed == expected  # file order is delivery order
    else:
        assert sorted(landed) == sorted(expected)  # Maildir names do not sort by time


def test_read_messages_takes_cur_after_new_in_file_name_order(tmp_path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "new" / "2.b").write_bytes(b"new 2\n")
    (tmp_path / "new" / "1.a").write_bytes(b"new 1\n")
    (tmp_path / "cur" / "0.c:2,S").write_bytes(b"cur 0\n")
    (tmp_path / "tmp" / "3.d").write_bytes(b"not delivered yet\n")

    assert read_messages(tmp_path, "maildir") == [b"new 1\n", b"new 2\n", b"cur 0\n"]


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_a_destination_never_created_holds_no_messages(tmp_path: Path, kind: Kind) -> None:
    assert read_messages(tmp_path / "missing", kind) == []


def test_an_empty_mbox_holds_no_messages(tmp_path: Path) -> None:
    (tmp_path / "inbox").touch()
    assert read_messages(tmp_path / "inbox", "mbox") == []


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown destination kind 'mh'"):
        open_destination(tmp_path / "x", "mh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown destination kind 'mh'"):
        read_messages(tmp_path / "x", "mh")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_a_maildir_run_imports_no_other_backend(tmp_path: Path) -> None:
    """Start-up time: the mbox backend, and the email package, load only when used."""
    code = (
        "import sys, pathlib\n"
        "from pop3s_fetch.destinations import open_destination, read_messages\n"
        f"path = pathlib.Path({str(tmp_path / 'Maildir')!r})\n"
        "open_destination(path, 'maildir').close()\n"
        "read_messages(path, 'maildir')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('email', 'mailbox')\n"
        "    or m == 'pop3s_fetch.destinations.mbox'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "[]\n"


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any level (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    "module", sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")
)
def test_no_module_below_the_factory_imports_it(module: str) -> None:
    imported = _imported_modules(PACKAGE_DIR / f"{module}.py")
    assert "pop3s_fetch.destinations" not in imported
    # The shared modules know no backend, and a backend knows no other.
    others = {f"pop3s_fetch.destinations.{b}" for b in BACKEND_MODULES - {module}}
    assert not others & imported
