"""The systemd user units: their exact text, systemd's own verdict on them, and installing them."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch import systemd
from pop3s_fetch.systemd import UnitInstallError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXECUTABLE = "/usr/local/bin/pop3s-fetch"


def exec_start(units: dict[str, str]) -> str:
    lines = [
        line for line in units[systemd.SERVICE_NAME].splitlines() if line.startswith("ExecStart=")
    ]
    assert len(lines) == 1
    return lines[0]


def section(text: str, name: str) -> list[str]:
    """The non-comment lines of one ``[name]`` section."""
    lines = text.splitlines()
    start = lines.index(f"[{name}]") + 1
    body: list[str] = []
    for line in lines[start:]:
        if line.startswith("["):
            break
        if line and not line.startswith("#"):
            body.append(line)
    return body


def test_service_runs_exactly_the_named_accounts() -> None:
    units = systemd.units(["work", "home"], executable=EXECUTABLE)
    assert sorted(units) == ["pop3s-fetch.service", "pop3s-fetch.timer"]
    assert exec_start(units) == f"ExecStart={EXECUTABLE} sync --quiet --wait 300 work home"
    assert section(units["pop3s-fetch.service"], "Unit") == [
        "Description=Fetch mail over POP3S (work, home)",
        "Documentation=man:pop3s-fetch(1)",
    ]


def test_service_without_accounts_syncs_all_and_is_hardened_but_keeps_home_and_bus() -> None:
    service = systemd.units([], executable=EXECUTABLE)["pop3s-fetch.service"]
    assert section(service, "Service") == [
        "Type=oneshot",
        f"ExecStart={EXECUTABLE} sync --quiet --wait 300",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ]
    assert "Description=Fetch mail over POP3S (every configured account)" in service
    # The credential route is documented, commented out, for the user to enable.
    assert "\n#LoadCredentialEncrypted=NAME:%h/.config/pop3s-fetch/NAME.cred\n" in service
    assert 'password_credential = "NAME"' in service


def test_timer_is_monotonic_with_a_spread_scaled_to_the_interval() -> None:
    timer = systemd.units([], executable=EXECUTABLE)["pop3s-fetch.timer"]
    assert section(timer, "Timer") == [
        "OnBootSec=2min",
        "OnUnitActiveSec=15min",
        "RandomizedDelaySec=90s",
    ]
    assert section(timer, "Install") == ["WantedBy=timers.target"]
    hourly = systemd.units([], executable=EXECUTABLE, interval="1h 30min")["pop3s-fetch.timer"]
    assert section(hourly, "Timer")[1:] == ["OnUnitActiveSec=1h 30min", "RandomizedDelaySec=300s"]
    quick = systemd.units([], executable=EXECUTABLE, interval="2min")["pop3s-fetch.timer"]
    assert section(quick, "Timer")[2] == "RandomizedDelaySec=12s"


def test_config_path_is_passed_quoted_for_systemd() -> None:
    units = systemd.units(
        ["work"], executable="/opt/my tools/pop3s-fetch", config_path=Path("/home/a b/50%$x.toml")
    )
    assert exec_start(units) == (
        'ExecStart="/opt/my tools/pop3s-fetch" --config "/home/a b/50%%$$x.toml" '
        "sync --quiet --wait 300 work"
    )


@pytest.mark.parametrize(
    ("argument", "quoted"),
    [
        ("work", "work"),
        ("a.b_c-d", "a.b_c-d"),
        ("two words", '"two words"'),
        ("50%", '"50%%"'),
        ("$HOME", '"$$HOME"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("tab\there", '"tab\\there"'),
        ("bell\x07", '"bell\\x07"'),
        ("", '""'),
    ],
)
def test_exec_quote(argument: str, quoted: str) -> None:
    assert systemd.exec_quote(argument) == quoted


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("pop3s-fetch", "the executable must be an absolute path, got 'pop3s-fetch'"),
        (
            '/opt/"x"/pop3s-fetch',
            "systemd refuses '\"' in a program path: '/opt/\"x\"/pop3s-fetch'; "
            "install pop3s-fetch under a plainer path",
        ),
        (
            "/opt/a\\b/p",
            "systemd refuses '\\\\' in a program path: '/opt/a\\\\b/p'; "
            "install pop3s-fetch under a plainer path",
        ),
    ],
)
def test_program_paths_systemd_would_refuse_are_refused(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        systemd.units([], executable=path)


def test_program_path_keeps_dollar_and_doubles_percent() -> None:
    # systemd expands no $VARIABLE in the program path, so "$" stays single there.
    assert systemd.exec_path("/opt/a$b%c/pop3s-fetch") == '"/opt/a$b%%c/pop3s-fetch"'


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [("15min", 900), ("1h", 3600), ("1h 30min", 5400), ("90", 90), ("2 days", 172800)],
)
def test_interval_seconds(interval: str, seconds: int) -> None:
    assert systemd.interval_seconds(interval) == seconds


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        ("", "the interval is empty (examples: 15min, 1h)"),
        ("soon", "not a time span: 'soon' (examples: 15min, 1h, 1h 30min)"),
        ("15 fortnights", "not a time span: '15 fortnights' (examples: 15min, 1h, 1h 30min)"),
        (
            "30s",
            "the interval '30s' is shorter than a minute; servers throttle or lock out accounts "
            "that poll that often",
        ),
    ],
)
def test_bad_intervals_are_refused(interval: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        systemd.units([], executable=EXECUTABLE, interval=interval)


# --- systemd-analyze verify -----------------------------------------------------------------


def systemd_analyze_verify(
    directory: Path, man_dir: Path, runtime: Path
) -> subprocess.CompletedProcess[str]:
    """Verify the two units as a user manager would load them.

    ``--user`` needs a runtime directory, which a container without a login session lacks;
    a private one is enough for ``verify``. ``MANPATH`` lets it check ``Documentation=``
    against the repository's man page.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_RUNTIME_DIR": str(runtime),
        "MANPATH": str(man_dir),
        "HOME": str(directory),
    }
    return subprocess.run(
        [
            "systemd-analyze",
            "--user",
            "verify",
            str(directory / systemd.SERVICE_NAME),
            str(directory / systemd.TIMER_NAME),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def verifier_dirs(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    (man1 / "pop3s-fetch.1").symlink_to(REPO_ROOT / "man" / "pop3s-fetch.1")
    return runtime, tmp_path / "man"


def installed_script() -> str:
    """The venv's console script, as the CLI would name it."""
    script = systemd.default_executable(sys.argv[0])
    if script is None:
        pytest.skip("no installed pop3s-fetch script to point ExecStart at")
    return script


def test_systemd_analyze_accepts_the_units(
    tmp_path: Path, verifier_dirs: tuple[Path, Path]
) -> None:
    runtime, man_dir = verifier_dirs
    units_dir = tmp_path / "units"
    units = systemd.units(["work", "home"], executable=installed_script(), interval="10min")
    systemd.install(units, units_dir)
    result = systemd_analyze_verify(units_dir, man_dir, runtime)
    # Unknown keys and bad values only warn (exit 0), so the output must be empty too.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_accepts_an_odd_program_path(
    tmp_path: Path, verifier_dirs: tuple[Path, Path]
) -> None:
    runtime, man_dir = verifier_dirs
    odd = tmp_path / "my 100% $tools"
    odd.mkdir()
    script = odd / "pop3s-fetch"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    units_dir = tmp_path / "units"
    systemd.install(systemd.units([], executable=str(script)), units_dir)
    result = systemd_analyze_verify(units_dir, man_dir, runtime)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_would_notice_a_wrong_program_path(
    tmp_path: Path, verifier_dirs: tuple[Path, Path]
) -> None:
    """The verifier has teeth: an ExecStart that does not name an executable file fails."""
    runtime, man_dir = verifier_dirs
    units_dir = tmp_path / "units"
    missing = tmp_path / "nowhere" / "pop3s-fetch"
    systemd.install(systemd.units([], executable=str(missing)), units_dir)
    result = systemd_analyze_verify(units_dir, man_dir, runtime)
    assert result.returncode != 0
    assert f"Command {missing} is not executable" in result.stderr


# --- installing -----------------------------------------------------------------------------


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask that would make files 0600: installed units must still be 0644."""
    previous = os.umask(0o077)
    yield None
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("strict_umask")
def test_install_writes_each_unit_0644_and_returns_the_paths(tmp_path: Path) -> None:
    units = systemd.units(["work"], executable=EXECUTABLE)
    directory = tmp_path / "config" / "systemd" / "user"
    paths = systemd.install(units, directory)
    assert paths == [directory / "pop3s-fetch.service", directory / "pop3s-fetch.timer"]
    for path in paths:
        assert path.read_text() == units[path.name]
        assert mode(path) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == [p.name for p in paths]  # no temp left


def test_install_again_with_the_same_text_changes_nothing(tmp_path: Path) -> None:
    units = systemd.units(["work"], executable=EXECUTABLE)
    first = systemd.install(units, tmp_path)
    inodes = [p.stat().st_ino for p in first]
    assert systemd.install(units, tmp_path) == first
    assert [p.stat().st_ino for p in first] == inodes


def test_install_refuses_to_overwrite_a_file_that_differs(tmp_path: Path) -> None:
    timer = tmp_path / "pop3s-fetch.timer"
    timer.write_text("[Timer]\nOnCalendar=hourly\n")
    units = systemd.units(["work"], executable=EXECUTABLE)
    with pytest.raises(UnitInstallError) as caught:
        systemd.install(units, tmp_path)
    assert str(caught.value) == (
        f"not overwriting {timer}: it differs from what pop3s-fetch would write"
    )
    assert caught.value.hint == (
        "compare it with the output of `pop3s-fetch systemd`, or pass --force to replace it"
    )
    assert caught.value.exit_code == 74
    # All or nothing: the service, which was not in the way, was not written either.
    assert timer.read_text() == "[Timer]\nOnCalendar=hourly\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pop3s-fetch.timer"]


@pytest.mark.usefixtures("strict_umask")
def test_install_with_force_replaces_what_differs(tmp_path: Path) -> None:
    timer = tmp_path / "pop3s-fetch.timer"
    timer.write_text("[Timer]\nOnCalendar=hourly\n")
    timer.chmod(0o600)
    units = systemd.units(["work"], executable=EXECUTABLE)
    paths = systemd.install(units, tmp_path, force=True)
    for path in paths:
        assert path.read_text() == units[path.name]
        assert mode(path) == 0o644


def test_install_reports_a_directory_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "systemd"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(UnitInstallError) as caught:
        systemd.install(systemd.units([], executable=EXECUTABLE), blocker / "user")
    assert str(caught.value).startswith(f"cannot write unit files into {blocker / 'user'}: ")
    assert caught.value.hint == f"make {blocker / 'user'} writable by this user"


def test_after_install_message_names_the_files_and_the_commands(tmp_path: Path) -> None:
    paths = [tmp_path / "pop3s-fetch.service", tmp_path / "pop3s-fetch.timer"]
    assert systemd.after_install_message(paths) == (
        f"wrote {paths[0]}\nwrote {paths[1]}\n"
        "now run: systemctl --user daemon-reload && systemctl --user enable --now "
        "pop3s-fetch.timer"
    )


def test_user_unit_dir_follows_xdg_config_home() -> None:
    assert systemd.user_unit_dir({"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/h"}) == Path(
        "/x/cfg/systemd/user"
    )
    assert systemd.user_unit_dir({"XDG_CONFIG_HOME": "relative", "HOME": "/h"}) == Path(
        "/h/.config/systemd/user"
    )


def test_default_executable_prefers_the_running_script_unresolved(tmp_path: Path) -> None:
    target = tmp_path / "venv" / "bin" / "pop3s-fetch"
    target.parent.mkdir(parents=True)
    target.write_text("#!/bin/sh\n")
    link = tmp_path / "bin" / "pop3s-fetch"
    link.parent.mkdir()
    link.symlink_to(target)
    assert systemd.default_executable(str(link)) == str(link)
