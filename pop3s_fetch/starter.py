"""A configuration file, or one more account in it, written from a few answers (``init``).

The text is commented so that the file teaches its own keys; it is written atomically with
mode 0600. A new file never replaces an existing one; an account added to an existing file
leaves every other byte of it (comments included) as it was. No password goes in it: the
CLI stores that in the keyring separately.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pop3s_fetch.durable import fsync_directory, fsync_file, make_dirs_durably
from pop3s_fetch.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Answers:
    """What ``init`` asks for one account."""

    name: str
    host: str
    port: int
    username: str
    destination: str
    format: str
    keep: bool
    ca: str | None = None  # a PEM file to trust, when the server's CA is not a public one
    fingerprint: str | None = None  # or the server's own certificate, pinned


def resolve_answer_path(answer: str, cwd: Path) -> str:
    """``~/Mail`` stays as typed; a relative answer is taken from where the user stands.

    The configuration resolves relative paths against its own directory, so ``Mail/x2``
    typed in ~ would otherwise have become ``~/.config/pop3s-fetch/Mail/x2``.
    """
    if answer.startswith("~") or os.path.isabs(answer):
        return answer
    return str(cwd / answer)


def _quote(value: str) -> str:
    """A TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


_HEADER = """\
# pop3s-fetch configuration, written by `pop3s-fetch init`.
# Every key is explained by `pop3s-fetch config example` and in pop3s-fetch.toml(5).
# Passwords are not kept here: they are in the OS keyring (pop3s-fetch password set NAME).

[defaults]
timeout = 60                 # seconds to wait for the server
"""


def render_account(answers: Answers) -> str:
    """The commented ``[accounts.NAME]`` table for one account."""
    keep = "true" if answers.keep else "false"
    if answers.fingerprint is not None:
        trust = f"fingerprint = {_quote(answers.fingerprint)}  # this certificate and no other"
    elif answers.ca is not None:
        trust = f"ca = {_quote(answers.ca)}  # trust this CA instead of the public ones"
    else:
        trust = '# ca = "/path/to/ca.pem"  # trust this CA instead of the public ones'
    return f"""\
[accounts.{answers.name}]
host = {_quote(answers.host)}
port = {answers.port}
username = {_quote(answers.username)}
destination = {_quote(answers.destination)}
format = {_quote(answers.format)}          # "maildir" (a directory) or "mbox" (one file)
keep = {keep}                  # true: leave messages on the server after download
{trust}
"""


def render(answers: Answers) -> str:
    """A whole new configuration file holding one account."""
    return f"{_HEADER}\n{render_account(answers)}"


def with_account(existing: str, answers: Answers) -> str:
    """``existing`` text with one more account at its end, every other byte left as it was."""
    separator = (
        ""
        if not existing or existing.endswith("\n\n")
        else ("\n" if existing.endswith("\n") else "\n\n")
    )
    return f"{existing}{separator}{render_account(answers)}"


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600; refuse to replace an existing file.

    Raises:
        ConfigError: the file exists, or cannot be written.
    """
    if path.exists():
        raise ConfigError(
            f"{path} already exists; init does not overwrite it",
            hint="edit it, or move it aside and run pop3s-fetch init again",
        )
    _write(path, text, replace=False)


def replace(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, keeping its mode (a new account added).

    Raises:
        ConfigError: it cannot be written.
    """
    _write(path, text, replace=True)


def _write(path: Path, text: str, *, replace: bool) -> None:
    try:
        make_dirs_durably(path.parent, 0o700)
        fd, temporary = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                if replace:
                    os.fchmod(file.fileno(), path.stat().st_mode & 0o777)
                file.write(text)
                file.flush()
                fsync_file(file.fileno())
            if replace:
                os.replace(temporary, path)
            else:
                os.link(temporary, path)  # fails if someone created it meanwhile: never clobber
            fsync_directory(path.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except FileExistsError as err:
        raise ConfigError(f"{path} already exists; init does not overwrite it") from err
    except OSError as err:
        raise ConfigError(
            f"cannot write {path}: {err.strerror}",
            hint=f"make {path.parent} writable, or pass --config with another path",
        ) from err


def example_text() -> str:
    """The annotated example configuration (``config.example.toml``), as shipped.

    The wheel carries it inside the package; a source checkout has it at the top of the tree.
    pip and pipx users have no checkout, so hints point at ``pop3s-fetch config example``.
    """
    from importlib import resources

    shipped = resources.files("pop3s_fetch").joinpath("config.example.toml")
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parent.parent / "config.example.toml"
    return checkout.read_text(encoding="utf-8")


#: What hints say instead of "copy config.example.toml", which only a checkout has.
EXAMPLE_COMMAND = "pop3s-fetch config example"
