"""What the peers' parsers hand over: one account as the peer had it, and notes on what was lost.

Each parser (:mod:`.fetchmail`, :mod:`.getmail`, :mod:`.mpop`) fills these from the peer's own
files and says, for every option it met, whether it became a key here or why it could not. The
importer (:mod:`.importer`) turns them into configuration text and seeded state. Knows nothing of
our configuration file, the keyring or the state store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Characters allowed in an account name here (config.ACCOUNT_NAME_PATTERN, kept in step).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class PeerFileError(Exception):
    """A peer's file cannot be read or makes no sense: where, and what is wrong."""

    def __init__(self, path: Path, line: int | None, text: str) -> None:
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {text}")
        self.path = path
        self.line = line
        self.text = text


@dataclass(frozen=True, slots=True)
class Note:
    """One option of the peer's file that did not become a key of ours, and why."""

    path: Path
    line: int
    option: str
    why: str

    def __str__(self) -> str:
        return f"{self.path.name} line {self.line}: `{self.option}` {self.why}"


@dataclass
class PeerAccount:
    """One mailbox as a peer polled it, translated key by key into our terms.

    ``keys`` holds our configuration keys (TOML-ready Python values: str, int, bool, list of
    str), never a password. ``password`` is the secret the peer's file held, if any: it goes
    to the keyring and nowhere else, and ``password_where`` says where to remove it.
    ``uidls`` maps each UIDL the peer recorded as fetched to when (epoch seconds), or None
    where the peer kept no time.
    """

    name: str
    path: Path
    line: int
    keys: dict[str, object] = field(default_factory=dict)
    password: str | None = field(default=None, repr=False)
    password_where: str | None = None
    uidls: dict[str, float | None] = field(default_factory=dict)
    state_files: list[Path] = field(default_factory=list)
    state_looked: list[Path] = field(default_factory=list)  # where the UIDLs were looked for
    notes: list[Note] = field(default_factory=list)
    skipped: str | None = None  # why this account cannot be imported at all (IMAP, ...)

    def __repr__(self) -> str:  # the password stays out of tracebacks and assertion messages
        return f"PeerAccount(name={self.name!r}, path={self.path!r}, line={self.line})"

    def note(self, line: int, option: str, why: str) -> None:
        self.notes.append(Note(self.path, line, option, why))

    @property
    def host(self) -> str:
        return str(self.keys.get("host", ""))

    @property
    def username(self) -> str:
        return str(self.keys.get("username", ""))


def account_name(*parts: str) -> str:
    """A name our configuration accepts, made from a peer's label: other characters become '-'."""
    joined = "-".join(part for part in parts if part)
    name = "".join(c if c in _NAME_CHARS else "-" for c in joined).strip("-._")
    return (name or "imported")[:64]


def unique_names(accounts: list[PeerAccount]) -> None:
    """Give accounts that would share a name a numeric suffix (work, work-2, ...), in order."""
    seen: set[str] = set()
    for account in accounts:
        base, number = account.name, 1
        while account.name in seen:
            number += 1
            account.name = f"{base}-{number}"
        seen.add(account.name)


def shell_argv(command: str) -> list[str]:
    """A peer's shell command line, run the way the peer ran it: by /bin/sh."""
    return ["/bin/sh", "-c", command]


def mda_argv(command: str, sender: str, recipient: str) -> list[str]:
    """A peer's MDA command (a shell line with ``sender``/``recipient`` placeholders) as argv.

    The peer ran it through a shell with the addresses pasted in. Here the shell stays (the
    line may use pipes or redirections), but the addresses are handed over as positional
    arguments ``$1`` and ``$2``, so a hostile address is never parsed as shell syntax.
    """
    script = command
    for placeholder, variable in ((sender, '"$1"'), (recipient, '"$2"')):
        for quoted in (f"'{placeholder}'", f'"{placeholder}"', placeholder):
            script = script.replace(quoted, variable)
    if script == command:
        return shell_argv(command)
    return ["/bin/sh", "-c", script, "sh", "{sender}", "{recipient}"]


def sha256_fingerprint(text: str) -> str | None:
    """``sha256:`` and 64 hex digits from a peer's fingerprint, or None when it is not SHA-256."""
    digits = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(digits) == 64 and all(c in "0123456789abcdef" for c in digits):
        return f"sha256:{digits}"
    return None
