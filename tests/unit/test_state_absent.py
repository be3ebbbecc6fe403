"""When a delivered message that vanished from the server is forgotten (issue 11, item 2).

Forgetting too soon re-delivers: a server that once listed nothing, then everything again, made
the next run deliver it all a second time. A UIDL is forgotten only after it was missing from
FORGET_AFTER_LISTINGS complete listings over FORGET_AFTER_SECONDS; a listing that collapsed
(under half of what was delivered and listed before) does not count at all.
"""

from __future__ import annotations

from pathlib import Path

from pop3s_fetch.state import (
    FORGET_AFTER_LISTINGS,
    FORGET_AFTER_SECONDS,
    Intent,
    StateStore,
    open_store,
)

DAY = 24 * 3600.0
T0 = 1_800_000_000.0


def delivered_store(path: Path, uidls: list[str]) -> StateStore:
    store = open_store(path)
    store.record_intents([Intent(u, 10, f"name-{u}", 0, 10, "") for u in uidls])
    store.mark_delivered(uidls)
    return store


def test_a_transient_empty_listing_forgets_nothing(tmp_path: Path) -> None:
    with delivered_store(tmp_path / "s.sqlite3", ["a", "b", "c"]) as store:
        assert store.forget_absent({"a", "b", "c"}, now=T0) == 0
        for day in range(1, 10):  # an outage of any length that lists nothing
            assert store.forget_absent(set(), now=T0 + day * DAY) == 0
        assert store.forget_absent({"a", "b", "c"}, now=T0 + 11 * DAY) == 0
        assert store.delivered() == {"a", "b", "c"}


def test_a_collapsed_listing_forgets_nothing(tmp_path: Path) -> None:
    uidls = [f"m{n}" for n in range(10)]
    with delivered_store(tmp_path / "s.sqlite3", uidls) as store:
        store.forget_absent(set(uidls), now=T0)
        for day in range(1, 6):
            assert store.forget_absent({"m0", "m1"}, now=T0 + day * DAY) == 0
        assert store.delivered() == set(uidls)


def test_a_message_gone_for_long_enough_is_forgotten(tmp_path: Path) -> None:
    with delivered_store(tmp_path / "s.sqlite3", ["a", "b", "c"]) as store:
        store.forget_absent({"a", "b", "c"}, now=T0)
        times = [T0 + 1, T0 + FORGET_AFTER_SECONDS / 2, T0 + FORGET_AFTER_SECONDS + 2]
        assert len(times) == FORGET_AFTER_LISTINGS
        results = [store.forget_absent({"a", "b"}, now=t) for t in times]
        assert results == [0, 0, 1]
        assert store.delivered() == {"a", "b"}


def test_many_listings_in_a_short_time_are_not_enough(tmp_path: Path) -> None:
    with delivered_store(tmp_path / "s.sqlite3", ["a", "b", "c"]) as store:
        store.forget_absent({"a", "b", "c"}, now=T0)
        for minute in range(1, 30):  # a timer every minute for half an hour
            assert store.forget_absent({"a", "b"}, now=T0 + 60 * minute) == 0
        assert store.delivered() == {"a", "b", "c"}


def test_a_message_seen_again_starts_over(tmp_path: Path) -> None:
    with delivered_store(tmp_path / "s.sqlite3", ["a", "b", "c"]) as store:
        store.forget_absent({"a", "b", "c"}, now=T0)
        store.forget_absent({"a", "b"}, now=T0 + DAY)
        store.forget_absent({"a", "b"}, now=T0 + 2 * DAY)
        store.forget_absent({"a", "b", "c"}, now=T0 + 3 * DAY)  # back: the count restarts
        assert store.forget_absent({"a", "b"}, now=T0 + 4 * DAY) == 0
        assert store.forget_absent({"a", "b"}, now=T0 + 5 * DAY) == 0
        assert store.forget_absent({"a", "b"}, now=T0 + 6 * DAY) == 1


def test_held_messages_are_remembered_until_forgotten(tmp_path: Path) -> None:
    with delivered_store(tmp_path / "s.sqlite3", ["a", "b"]) as store:
        store.hold("a", listed=44, received=51)
    with open_store(tmp_path / "s.sqlite3") as store:
        assert store.held() == {"a"}
        store.forget(["a"])
        assert store.held() == set()


def test_an_idle_listing_writes_nothing(tmp_path: Path) -> None:
    # Every idle run (and every daemon poll) would otherwise pay a durable commit: an fsync.
    path = tmp_path / "s.sqlite3"
    with delivered_store(path, ["a", "b", "c"]) as store:
        store.forget_absent({"a", "b", "c", "new"}, now=T0)
        wal = Path(f"{path}-wal")
        before = wal.read_bytes()
        assert store.forget_absent({"a", "b", "c", "new"}, now=T0 + DAY) == 0
        assert wal.read_bytes() == before
        # A change still counts: one missing, then back (its note dropped), then gone for good.
        store.forget_absent({"a", "b"}, now=T0 + DAY)
        assert wal.read_bytes() != before
        store.forget_absent({"a", "b", "c"}, now=T0 + 2 * DAY)
        for day in range(3, 3 + FORGET_AFTER_LISTINGS):
            store.forget_absent({"a", "b"}, now=T0 + day * DAY + FORGET_AFTER_SECONDS)
        assert store.delivered() == {"a", "b"}


class ListedOnly(list[str]):
    """A listing's UIDLs that may be iterated but not searched: a search of a listing's
    values is a scan, and a set copy of it took 4 MiB at 100,000 messages (issue 15)."""

    def __contains__(self, item: object) -> bool:
        raise AssertionError("forget_absent searched the listing")


def test_the_listing_is_only_iterated_never_copied_or_searched(tmp_path: Path) -> None:
    uidls = [f"m{n}" for n in range(10)]
    with delivered_store(tmp_path / "s.sqlite3", uidls) as store:
        delivered = store.delivered()
        assert store.forget_absent(ListedOnly(uidls), delivered, now=T0) == 0
        assert store.forget_absent(ListedOnly(uidls[:8]), delivered, now=T0) == 0  # 2 noted
        for day in range(1, FORGET_AFTER_LISTINGS + 1):
            store.forget_absent(ListedOnly(uidls[:8]), delivered, now=T0 + day * DAY)
        assert store.delivered() == set(uidls[:8])
        delivered = store.delivered()
        assert store.forget_absent(ListedOnly(uidls), delivered, now=T0 + 9 * DAY) == 0
