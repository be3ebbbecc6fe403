"""Compare what a client delivered with what the server holds, message by message.

Owns reading a Maildir or mboxrd file back and classifying each copy by its corpus marker:
exact (byte for byte), altered (right message, other bytes: a peer adding headers), missing,
duplicated, or unknown (no marker: a fragment or a foreign file). Knows nothing about clients.
"""

from __future__ import annotations

import collections
import mailbox
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import marker_of

_QUOTED_FROM = re.compile(rb"(?m)^>(>*From )")


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


def read_maildir(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return [f.read_bytes() for sub in ("new", "cur") for f in sorted((path / sub).iterdir())]


def read_mbox(path: Path) -> list[bytes]:
    """Every message of an mboxrd file, with one level of ``>From`` quoting removed."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return [_QUOTED_FROM.sub(rb"\1", box.get_bytes(key)) for key in box.iterkeys()]
    finally:
        box.close()


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
        result = classify(expected, read_maildir(destination))
        leftovers = len(maildir_leftovers(destination))
    else:
        result = classify(expected, read_mbox(destination))
        leftovers = int(mbox_tail_problem(destination))
    return result + Verification(expected=0, leftovers=leftovers)
