"""What a pip or pipx user gets: the wheel carries what the program prints and installs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_example_configuration_and_the_man_pages(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("pop3s_fetch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = archive.read("pop3s_fetch/config.example.toml").decode()
    assert shipped == (REPO_ROOT / "config.example.toml").read_text()
    assert any(name.endswith("share/man/man1/pop3s-fetch.1") for name in names)
    assert any(name.endswith("share/man/man5/pop3s-fetch.toml.5") for name in names)
