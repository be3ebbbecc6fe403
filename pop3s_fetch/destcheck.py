"""Whether an account's state describes the destination it is configured with now.

The state is kept per account name. Pointed at another destination (a second configuration
with the same account, an edited ``destination``), a sync would take every message the
state records as delivered for present in the new place too, skip them all and report an
empty success. So the state records which destination its copies are in (the ``server``
facts table, one small read per run) and a sync, or a state command that trusts the
state, refuses to go on when the configured one differs (:class:`DestinationChanged`,
exit 78) before anything is fetched or the new destination is created.

What counts as the same destination: for Maildir and mbox, the same kind at the same real
path (``~``, a trailing slash or a symbolic link on the way make no difference: the path is
resolved); for format = "mda", the same program (its file name: ``/usr/bin/procmail`` and
``procmail`` are one). An MDA's arguments may change freely: the program and its rules
decide where mail goes, which pop3s-fetch cannot see, and refusing every edited flag would
leave only costly ways out. Seeded rows (``state seed``, imports) name no copy, and a state
without a row naming one has nothing to lose: it adopts the configured destination.

Must not know: POP3, click or how a destination lays its mail out (``destinations`` says
whether it holds a placement).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from pop3s_fetch.config import Account
from pop3s_fetch.destinations import Placement, holds
from pop3s_fetch.errors import ConfigError
from pop3s_fetch.state import StateStore

#: How many of the latest rows a state from an older version is checked by (see check()).
LEGACY_SAMPLE = 200


class DestinationChanged(ConfigError):
    """The configured destination is not the one the state's copies are in (exit 78)."""


@dataclass(frozen=True, slots=True)
class Where:
    """A destination as the state records it: ``key`` is compared, ``shown`` is for people."""

    kind: str  # maildir, mbox or mda
    key: str  # the resolved path, or the MDA's program name
    shown: str

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def load(cls, text: str) -> Where | None:
        try:
            fields = json.loads(text)
            return cls(str(fields["kind"]), str(fields["key"]), str(fields["shown"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as a state from before it was recorded

    def same(self, other: Where) -> bool:
        return (self.kind, self.key) == (other.kind, other.key)


def where(account: Account) -> Where:
    """The account's configured destination, resolved."""
    if account.format == "mda":
        assert account.mda is not None  # config requires it with format "mda"
        program = os.path.basename(account.mda[0])
        return Where("mda", program, f"the MDA {program}")
    assert account.destination is not None  # config requires one for files
    path = os.path.expanduser(str(account.destination))
    return Where(account.format, os.path.realpath(path), shown_path(path))


def shown_path(path: str) -> str:
    """``path`` with the home directory written ``~``, and no trailing slash."""
    path = os.path.normpath(path)
    home = os.path.normpath(os.path.expanduser("~"))
    if home != "/" and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path


def check(account: Account, store: StateStore, *, record: bool = True) -> None:
    """Refuse when the state's copies are in another destination; else record this one
    (unless not ``record``: ``check`` and ``sync --dry-run`` write nothing).

    One read of a recorded fact on every run; the count and the look into the destination
    happen only when it differs or was never recorded.

    A state written before destinations were recorded is judged once, by looking: if any of
    its latest LEGACY_SAMPLE copies is in the configured destination, that is where they
    went, and it is recorded. Accepting the configured destination unseen would be the
    unsafe choice: it is exactly the silent "0 new, all skipped" this check exists to stop,
    for everyone upgrading. Looking can err only towards a refusal (a mail reader deleted or
    rewrote every one of those messages), which says what to do; a wrong acceptance would
    say nothing. An MDA keeps nothing to look at, so with format = "mda" it is accepted.

    Raises:
        DestinationChanged: the state's copies are elsewhere; nothing was touched.
    """
    current = where(account)
    text = store.destination()
    recorded = Where.load(text) if text is not None else None
    if recorded is not None and recorded.same(current):
        return
    if recorded is not None:
        count = store.copies()
        if count:
            raise _changed(account.name, count, recorded.shown, current)
    else:
        latest = store.recent_copies(LEGACY_SAMPLE)
        if latest and current.kind != "mda":
            assert account.destination is not None
            placements = [Placement(i.target, i.offset, i.length, i.digest) for i in latest]
            if not any(holds(account.destination, account.format, placements)):
                raise _changed(account.name, store.copies(), None, current)
    if record:
        store.remember_destination(current.dump())


def _changed(account: str, count: int, before: str | None, now: Where) -> DestinationChanged:
    """The refusal: where the copies are, where they are not, and the ways out."""
    noun = "message was" if count == 1 else "messages were"
    ways = []
    if now.kind != "mda":
        fmt = " --format mbox" if now.kind == "mbox" else ""
        ways.append(
            f"to copy the mailbox there: pop3s-fetch backup {account} --to {now.shown}{fmt}"
        )
    ways.append(f"to fetch everything into it again: pop3s-fetch state forget {account} --all")
    if before is not None:
        ways.append(f"or set the destination back to {before}")
    else:
        before = "another destination (none of the latest this state names is there)"
        ways.append(
            f"if they are there after all: pop3s-fetch state forget {account} --all, "
            f"then pop3s-fetch state rebuild {account}"
        )
    return DestinationChanged(
        f"{count} {noun} delivered to {before}, not to {now.shown}",
        hint="; ".join(ways) + "; nothing was downloaded or deleted",
    )
