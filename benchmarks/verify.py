"""Compare what a client delivered with what the server holds, message by message.

Owns classifying each delivered copy (read back through pop3s_fetch.destinations) by its
corpus marker: exact (byte for byte), altered (right message, other bytes: a peer adding
headers), missing, duplicated, or unknown (no marker: a fragment or a foreign file), and
counting leftovers. Knows nothing about clients.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import marker_of
from pop3s_fetch.destinations import read_messages


@dataclass(frozen=True, slots=True)
class Verification:
    """How the delivered copies compare with the source corpus."""

    expected: int
    exact: int = 0
    altered: int = 0
    missing: int = 0
    duplicated: int = 0
    unknown: int = 0
    leftovers: int = 0

    @property
    def perfect(self) -> bool:
        return self.exact == self.expected and not (
            self.altered or self.missing or self.duplicated or self.unknown or self.leftovers
        )

    @property
    def complete(self) -> bool:
        """Every message there once, bytes aside (for peers that add headers)."""
        return not (self.missing or self.duplicated or self.unknown or self.leftovers)

    def __add__(self, other: Verification) -> Verification:
        return Verification(
            *(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__)
        )

    def summary(self) -> str:
        parts = [f"{self.exact}/{self.expected} exact"]
        for name in ("altered", "missing", "duplicated", "unknown", "leftovers"):
            if getattr(self, name):
                parts.append(f"{name}: {getattr(self, name)}")
        return ", ".join(parts)


def maildir_leftovers(path: Path) -> list[Path]:
    return sorted((path / "tmp").iterdir()) if (path / "tmp").exists() else []


def mbox_tail_problem(path: Path) -> bool:
    """True when the mbox does not end where a message ends (a partial tail)."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(max(path.stat().st_size - 1, 0))
        return f.read(1) != b"\n"


def classify(expected: Sequence[bytes], delivered: Iterable[bytes]) -> Verification:
    """Match copies to originals by marker, then by bytes."""
    originals = {marker_of(message): message for message in expected}
    seen: collections.Counter[tuple[int, int] | None] = collections.Counter()
    exact = altered = unknown = 0
    for copy in delivered:
        marker = marker_of(copy)
        if marker not in originals:
            unknown += 1
            continue
        seen[marker] += 1
        if seen[marker] > 1:
            continue
        if copy == originals[marker]:
            exact += 1
        else:
            altered += 1
    return Verification(
        expected=len(originals),
        exact=exact,
        altered=altered,
        missing=sum(1 for marker in originals if not seen[marker]),
        duplicated=sum(count - 1 for count in seen.values() if count > 1),
        unknown=unknown,
    )


def verify_destination(expected: Sequence[bytes], destination: Path, fmt: str) -> Verification:
    """Classify one account's destination, counting temporary leftovers too."""
    if fmt == "maildir":
        result = classify(expected, read_messages(destination, "maildir"))
        leftovers = len(maildir_leftovers(destination))
    else:
        result = classify(expected, read_messages(destination, "mbox"))
        leftovers = int(mbox_tail_problem(destination))
    return result + Verification(expected=0, leftovers=leftovers)
