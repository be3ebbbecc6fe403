"""Which messages a run fetches, leaves, or deletes: the account's limits and retention.

Pure decisions over what the listing and the state store say, so each rule is testable
without a server: ``sync`` asks, then acts in its own order (and keeps its promise that only
messages recorded as delivered are deleted, but for an oversize message the user asked to
have deleted unread).

Must not know: the wire protocol, the state's tables, mailbox formats or the configuration
file; messages are anything with a ``uidl`` and a LIST ``size``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Listed(Protocol):
    """A message as the listing gives it."""

    @property
    def uidl(self) -> str: ...

    @property
    def size(self) -> int: ...


M = TypeVar("M", bound=Listed)


@dataclass(frozen=True, slots=True)
class Limits:
    """An account's limits; None is no limit."""

    max_message_size: int | None = None
    max_messages: int | None = None
    max_bytes: int | None = None


@dataclass(slots=True)
class FetchPlan(Generic[M]):
    """What to do with the new messages of one run, each in exactly one list."""

    fetch: list[M] = field(default_factory=list)
    #: LIST size over max_message_size: left on the server, or deleted unread if so configured.
    oversize: list[M] = field(default_factory=list)
    #: RETR once ran past max_message_size though LIST said less: always left, never deleted.
    overran: list[M] = field(default_factory=list)
    #: Within every limit but past this run's max_messages or max_bytes: the next run's.
    deferred: list[M] = field(default_factory=list)


def plan_fetch(new: Sequence[M], limits: Limits, overran: Set[str] = frozenset()) -> FetchPlan[M]:
    """Split new messages (in server order) into fetched, oversize, overran and deferred.

    The per-run limits take messages in order and stop at the first that does not fit, so
    mail arrives oldest first; but the first message of a run is always taken, so that one
    bigger than max_bytes cannot hold everything behind it forever.
    """
    plan: FetchPlan[M] = FetchPlan()
    budget_bytes = limits.max_bytes
    for message in new:
        if limits.max_message_size is not None:
            if message.uidl in overran:
                plan.overran.append(message)
                continue
            if message.size > limits.max_message_size:
                plan.oversize.append(message)
                continue
        full = plan.deferred or (
            plan.fetch
            and (
                (limits.max_messages is not None and len(plan.fetch) >= limits.max_messages)
                or (budget_bytes is not None and message.size > budget_bytes)
            )
        )
        if full:
            plan.deferred.append(message)
            continue
        plan.fetch.append(message)
        if budget_bytes is not None:
            budget_bytes -= message.size
    return plan


def deletable(
    listing: Mapping[int, str],
    delivered: Set[str],
    held: Set[str],
    *,
    keep: bool,
    expired: Set[str] = frozenset(),
) -> list[tuple[int, str]]:
    """The listed (number, UIDL) pairs to DELE among messages delivered by earlier runs.

    ``keep = false`` deletes every delivered message; ``keep = "30d"`` only the ``expired``
    ones (delivered at least that long ago); ``keep = true`` none. A held message (its size
    disagreed with LIST) is never deleted.
    """
    if keep and not expired:
        return []
    eligible = delivered if not keep else delivered & expired
    return [
        (number, uidl)
        for number, uidl in sorted(listing.items())
        if uidl in eligible and uidl not in held
    ]
