"""A first configuration file, written from a few answers (``pop3s-fetch init``).

The text is commented so that the file teaches its own keys; it is written atomically with
mode 0600 and never over an existing file. No password goes in it: the CLI stores that in the
keyring separately.
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


def _quote(value: str) -> str:
    """A TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render(answers: Answers) -> str:
    """The commented configuration text for one account."""
    keep = "true" if answers.keep else "false"
    return f"""\
# pop3s-fetch configuration, written by `pop3s-fetch init`.
# Every key is described in config.example.toml and in pop3s-fetch(1).
# The password is not kept here: it is in the OS keyring
# (pop3s-fetch password set {answers.name}).

[defaults]
timeout = 60                 # seconds to wait for the server

[accounts.{answers.name}]
host = {_quote(answers.host)}
port = {answers.port}                 # POP3S: TLS from the first byte
username = {_quote(answers.username)}
destination = {_quote(answers.destination)}
format = {_quote(answers.format)}          # "maildir" (a directory) or "mbox" (one file)
keep = {keep}                  # true: leave messages on the server after download
# ca_file = "/path/to/ca.pem"  # trust this CA instead of the public ones
"""


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
    try:
        make_dirs_durably(path.parent, 0o700)
        fd, temporary = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                fsync_file(file.fileno())
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
