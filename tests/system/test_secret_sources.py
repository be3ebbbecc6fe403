"""Tests for the password sources besides the keyring: password_command and systemd credentials.

The commands are small ``python -c`` programs, run for real (no shell, stdin from /dev/null),
so every path through ``subprocess`` is exercised. The last section checks that a password a
command or credential file holds never reaches any exception text, however the read fails.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from pop3s_fetch import credentials
from pop3s_fetch.config import Account, OAuth2Settings
from pop3s_fetch.errors import CredentialError, ExitCode
from tests.support.memory_keyring import MemoryKeyring

SECRET = "p4ss w0rd\t'\"$HOME;"  # spaces, a tab, quotes and shell syntax: all must survive
PYTHON = sys.executable
COMMAND = f'password_command for account "work" ("{PYTHON}")'


def python(code: str) -> tuple[str, ...]:
    return (PYTHON, "-c", code)


def printing(data: bytes) -> tuple[str, ...]:
    """A command that writes ``data`` to stdout exactly, with no newline added."""
    return python(f"import sys; sys.stdout.buffer.write({data!r})")


def command_failure(argv: tuple[str, ...], *, timeout: float = 30.0) -> CredentialError:
    with pytest.raises(CredentialError) as excinfo:
        credentials.run_password_command("work", argv, timeout=timeout)
    assert excinfo.value.exit_code == ExitCode.NOPERM
    return excinfo.value


def account(**fields: object) -> Account:
    return Account(
        name="work",
        host="pop.example.com",
        username="me",
        destination=Path("/m"),
        **fields,  # type: ignore[arg-type]
    )


# --- password_command: success ------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "password"),
    [
        (SECRET.encode() + b"\n", SECRET),
        (SECRET.encode(), SECRET),  # no final newline
        (b"  padded  \nsecond line\nthird\n", "  padded  "),  # only the newline is stripped
        (b"windows\r\n", "windows"),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_first_line_of_stdout_is_the_password(output: bytes, password: str) -> None:
    assert credentials.run_password_command("work", printing(output)) == password


def test_arguments_reach_the_command_without_a_shell() -> None:
    argv = (*python("import sys; print(sys.argv[1])"), "$HOME; echo injected")
    assert credentials.run_password_command("work", argv) == "$HOME; echo injected"


def test_stdin_is_empty_so_a_prompting_command_cannot_hang() -> None:
    argv = python("import sys; print(repr(sys.stdin.read()) + ' read')")
    assert credentials.run_password_command("work", argv) == "'' read"


def test_stderr_of_a_successful_command_is_ignored() -> None:
    argv = python("import sys; print('warning: agent slow', file=sys.stderr); print('pw')")
    assert credentials.run_password_command("work", argv) == "pw"


# --- password_command: failures -----------------------------------------------------------


STDERR_HINT = (
    "run it by hand, or run pop3s-fetch with --debug to see its stderr "
    "(which may show the password if the command echoes it there)"
)


def test_failure_names_the_program_and_status_and_leaves_stderr_to_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = (
        "import sys\n"
        "sys.stderr.write('\\n  gpg: decryption failed: No secret key  \\nmore detail\\n')\n"
        "sys.exit(2)"
    )
    with caplog.at_level("DEBUG", logger="pop3s_fetch.credentials"):
        err = command_failure(python(code))
    assert str(err) == f"{COMMAND} failed (exit status 2)"
    assert err.hint == STDERR_HINT
    assert caplog.messages == [f"{COMMAND} wrote on stderr: gpg: decryption failed: No secret key"]


def test_stderr_is_not_logged_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="pop3s_fetch.credentials"):
        command_failure(python("import sys; sys.stderr.write('gpg: no key'); sys.exit(2)"))
    assert caplog.messages == []


def test_failure_with_nothing_on_stderr() -> None:
    err = command_failure(python("raise SystemExit(1)"))
    assert str(err) == f"{COMMAND} failed (exit status 1) and wrote nothing on stderr"
    assert err.hint is None


def test_long_stderr_is_shortened_in_the_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="pop3s_fetch.credentials"):
        err = command_failure(python("import sys; sys.stderr.write('x' * 500); sys.exit(3)"))
    assert str(err) == f"{COMMAND} failed (exit status 3)"
    assert caplog.messages == [f"{COMMAND} wrote on stderr: {'x' * 197}..."]


def test_a_command_killed_by_a_signal() -> None:
    err = command_failure(python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"))
    assert str(err) == (
        f"{COMMAND} failed (killed by {signal.SIGTERM.name}) and wrote nothing on stderr"
    )


def test_a_timeout_stops_the_commands_children_too(tmp_path: Path) -> None:
    """A helper's child (gpg-agent, a pinentry) must not outlive the timeout."""
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, threading\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "threading.Event().wait()"
    )
    err = command_failure(python(code), timeout=2.0)
    assert str(err) == f"{COMMAND} did not finish within 2 seconds"
    child = int(pid_file.read_text())
    # The SIGKILL is delivered asynchronously and init reaps the orphan: wait for its exit on
    # a pidfd (readable once the process has ended), which a still-running child never makes.
    try:
        pidfd = os.pidfd_open(child)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        readable, _, _ = select.select([pidfd], [], [], 10.0)
    finally:
        os.close(pidfd)
    assert readable == [pidfd], "the password command's child survived its timeout"


def test_a_first_line_longer_than_any_password_is_refused() -> None:
    err = command_failure(printing(b"x" * (credentials.MAX_SECRET_BYTES + 1) + b"\n"))
    assert str(err) == (
        f"{COMMAND} printed a first line longer than {credentials.MAX_SECRET_BYTES} bytes"
    )


def test_the_longest_password_accepted_is_returned_whole() -> None:
    line = b"y" * credentials.MAX_SECRET_BYTES
    assert credentials.run_password_command("work", printing(line + b"\n")) == line.decode()


def test_endless_output_is_drained_without_filling_memory() -> None:
    """100 MB on stdout: only the cap is kept, and the command still ends normally."""
    code = "import sys\nfor _ in range(1600): sys.stdout.write('z' * 65536)\n"
    err = command_failure(python(code))
    assert str(err) == (
        f"{COMMAND} printed a first line longer than {credentials.MAX_SECRET_BYTES} bytes"
    )


@pytest.mark.parametrize("output", [b"", b"\n", b"\nsecond line\n", b"\r\n"])
def test_no_password_on_the_first_line(output: bytes) -> None:
    err = command_failure(printing(output))
    assert str(err) == f"{COMMAND} printed nothing on its first line"


def test_output_that_is_not_utf8() -> None:
    err = command_failure(printing(b"caf\xe9\n"))
    assert str(err) == f"{COMMAND} printed something that is not UTF-8 text"


def test_command_not_found() -> None:
    err = command_failure(("/nonexistent/pop3s-fetch-no-such-program", "show"))
    assert str(err) == (
        'password_command for account "work" ("/nonexistent/pop3s-fetch-no-such-program"): '
        "command not found"
    )
    assert err.hint == "check the program name in password_command, or give its absolute path"


def test_command_that_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho pw\n")
    script.chmod(0o644)
    err = command_failure((str(script),))
    assert str(err) == (
        f'password_command for account "work" ("{script}") could not be run: Permission denied'
    )


def test_a_command_that_never_finishes_is_stopped() -> None:
    argv = python("import threading; threading.Event().wait()")
    err = command_failure(argv, timeout=0.5)
    assert str(err) == f"{COMMAND} did not finish within 0.5 seconds"
    assert err.hint == "the command must print the password without waiting for input"


def test_the_default_timeout_is_a_minute() -> None:
    assert credentials.PASSWORD_COMMAND_TIMEOUT == 60.0


# --- systemd credentials ----------------------------------------------------------------------


@pytest.fixture
def credentials_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    return directory


def read_credential(name: str, environ: dict[str, str]) -> str:
    return credentials.read_systemd_credential("work", name, environ)


def credential_failure(name: str, environ: dict[str, str]) -> CredentialError:
    with pytest.raises(CredentialError) as excinfo:
        read_credential(name, environ)
    assert excinfo.value.exit_code == ExitCode.NOPERM
    return excinfo.value


def test_credential_first_line_is_the_password(credentials_directory: Path) -> None:
    (credentials_directory / "mail").write_bytes(SECRET.encode() + b"\nignored\n")
    environ = {"CREDENTIALS_DIRECTORY": str(credentials_directory)}
    assert read_credential("mail", environ) == SECRET


def test_credential_without_a_newline(credentials_directory: Path) -> None:
    (credentials_directory / "mail").write_bytes(b"bare")
    assert read_credential("mail", {"CREDENTIALS_DIRECTORY": str(credentials_directory)}) == "bare"


@pytest.mark.parametrize("environ", [{}, {"CREDENTIALS_DIRECTORY": ""}])
def test_credentials_directory_unset(environ: dict[str, str]) -> None:
    err = credential_failure("mail", environ)
    assert str(err) == (
        'password_credential = "mail" for account "work" needs $CREDENTIALS_DIRECTORY, '
        "which is not set"
    )
    assert err.hint == (
        "systemd sets it for a service whose unit has LoadCredential= or "
        "LoadCredentialEncrypted=, e.g. LoadCredentialEncrypted=mail:/etc/credstore.encrypted/"
        "mail; run pop3s-fetch from such a unit (or systemd-run -p ...), or use the keyring or "
        "password_command instead"
    )


def test_credential_file_missing(credentials_directory: Path) -> None:
    err = credential_failure("mail", {"CREDENTIALS_DIRECTORY": str(credentials_directory)})
    assert str(err) == (
        f'password_credential = "mail" for account "work": there is no '
        f"{credentials_directory / 'mail'}"
    )
    assert err.hint == (
        "add LoadCredentialEncrypted=mail:/etc/credstore.encrypted/mail "
        "(or LoadCredential=mail:FILE) to the service unit"
    )


def test_credential_that_is_a_directory(credentials_directory: Path) -> None:
    (credentials_directory / "mail").mkdir()
    err = credential_failure("mail", {"CREDENTIALS_DIRECTORY": str(credentials_directory)})
    assert str(err) == (
        f'password_credential = "mail" for account "work": cannot read '
        f"{credentials_directory / 'mail'}: Is a directory"
    )


@pytest.mark.parametrize("content", [b"", b"\n", b"\nsecond\n"])
def test_empty_credential(credentials_directory: Path, content: bytes) -> None:
    (credentials_directory / "mail").write_bytes(content)
    err = credential_failure("mail", {"CREDENTIALS_DIRECTORY": str(credentials_directory)})
    assert str(err) == (
        f'password_credential = "mail" for account "work": {credentials_directory / "mail"} '
        "is empty on its first line"
    )


# --- get_secret: one source per account -------------------------------------------------------


@pytest.fixture
def memory() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_get_secret_defaults_to_the_keyring(memory: MemoryKeyring) -> None:
    memory.entries[("pop3s-fetch", "work")] = "from keyring"
    assert credentials.get_secret(account()) == "from keyring"


def test_get_secret_runs_the_password_command_only(memory: MemoryKeyring) -> None:
    memory.entries[("pop3s-fetch", "work")] = "from keyring"
    source = account(password_command=printing(b"from command\n"))
    assert credentials.get_secret(source) == "from command"


def test_get_secret_reads_the_systemd_credential_only(
    memory: MemoryKeyring, credentials_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.entries[("pop3s-fetch", "work")] = "from keyring"
    (credentials_directory / "mail").write_text("from systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials_directory))
    assert credentials.get_secret(account(password_credential="mail")) == "from systemd"


def test_get_secret_takes_an_explicit_environment(credentials_directory: Path) -> None:
    (credentials_directory / "mail").write_text("explicit\n")
    environ = {"CREDENTIALS_DIRECTORY": str(credentials_directory)}
    assert credentials.get_secret(account(password_credential="mail"), environ=environ) == (
        "explicit"
    )


def test_get_secret_has_no_password_for_an_oauth2_account() -> None:
    settings = OAuth2Settings(
        provider="custom",
        token_endpoint="http://127.0.0.1:1/token",
        device_endpoint="http://127.0.0.1:1/device",
        client_id="c",
        client_secret=None,
        scopes=("s",),
    )
    with pytest.raises(ValueError, match="OAuth2"):
        credentials.get_secret(account(oauth2=settings))


# --- the password never leaks -----------------------------------------------------------------


def exception_text(err: BaseException) -> str:
    """Everything a traceback, a repr or a log line of ``err`` could show."""
    parts: list[str] = []
    current: BaseException | None = err
    while current is not None:
        parts += [str(current), repr(current), repr(current.args), str(vars(current))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


PRINT_SECRET = f"import sys; sys.stdout.write({SECRET!r} + '\\n'); sys.stdout.flush()"
LEAKY_COMMANDS: dict[str, tuple[tuple[str, ...], float]] = {
    "fails after printing it, and echoes it on stderr": (
        python(f"{PRINT_SECRET}; sys.stderr.write('bad: ' + {SECRET!r} + '\\n'); sys.exit(1)"),
        30.0,
    ),
    "killed after printing it": (
        python(f"{PRINT_SECRET}; import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
        30.0,
    ),
    "hangs after printing it": (
        python(f"{PRINT_SECRET}; import threading; threading.Event().wait()"),
        1.0,
    ),
    "prints it next to bytes that are not UTF-8": (
        printing(SECRET.encode() + b"\xff\n"),
        30.0,
    ),
}


@pytest.mark.parametrize("case", list(LEAKY_COMMANDS))
def test_a_failing_command_never_leaks_the_password(case: str) -> None:
    argv, timeout = LEAKY_COMMANDS[case]
    err = command_failure(argv, timeout=timeout)
    assert SECRET not in exception_text(err)
    assert SECRET not in (err.hint or "")
    assert err.__cause__ is None
    assert err.__context__ is None


def test_scrubbed_stderr_still_says_what_went_wrong_under_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    argv, _ = LEAKY_COMMANDS["fails after printing it, and echoes it on stderr"]
    with caplog.at_level("DEBUG", logger="pop3s_fetch.credentials"):
        assert str(command_failure(argv)) == f"{COMMAND} failed (exit status 1)"
    assert caplog.messages == [f"{COMMAND} wrote on stderr: bad: [output hidden]"]


def test_a_command_that_echoes_the_password_only_on_stderr_does_not_leak_it() -> None:
    """Nothing on stdout to scrub by: only keeping stderr out of the error keeps it safe."""
    argv = python(f"import sys; sys.stderr.write('oops ' + {SECRET!r}); sys.exit(1)")
    err = command_failure(argv)
    assert SECRET not in exception_text(err)
    assert SECRET not in (err.hint or "")


def test_a_bad_credential_file_never_leaks_the_password(credentials_directory: Path) -> None:
    (credentials_directory / "mail").write_bytes(SECRET.encode() + b"\xfe\n")
    err = credential_failure("mail", {"CREDENTIALS_DIRECTORY": str(credentials_directory)})
    assert str(err) == (
        f'password_credential = "mail" for account "work": {credentials_directory / "mail"} '
        "is not UTF-8 text"
    )
    assert SECRET not in exception_text(err)
    assert err.__context__ is None
