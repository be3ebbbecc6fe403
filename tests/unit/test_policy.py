"""The run's decisions (issue 12): which new messages are fetched, left or deferred, and which
delivered ones are deleted, by the account's limits and retention."""

from __future__ import annotations

from dataclasses import dataclass

from pop3s_fetch.policy import Limits, deletable, plan_fetch


@dataclass(frozen=True)
class Msg:
    uidl: str
    size: int


MAILBOX = [Msg("a", 100), Msg("b", 5000), Msg("c", 200), Msg("d", 300), Msg("e", 400)]


def uidls(messages: list[Msg]) -> list[str]:
    return [m.uidl for m in messages]


def test_no_limits_fetches_everything_in_order() -> None:
    plan = plan_fetch(MAILBOX, Limits())
    assert uidls(plan.fetch) == ["a", "b", "c", "d", "e"]
    assert plan.oversize == plan.overran == plan.deferred == []


def test_oversize_is_set_aside_and_the_rest_fetched() -> None:
    plan = plan_fetch(MAILBOX, Limits(max_message_size=1000))
    assert (uidls(plan.fetch), uidls(plan.oversize)) == (["a", "c", "d", "e"], ["b"])


def test_a_message_exactly_at_the_limit_is_fetched() -> None:
    assert uidls(plan_fetch(MAILBOX, Limits(max_message_size=5000)).fetch) == uidls(MAILBOX)


def test_one_that_overran_is_skipped_whatever_its_listed_size() -> None:
    plan = plan_fetch(MAILBOX, Limits(max_message_size=1000), overran={"c"})
    assert (uidls(plan.overran), uidls(plan.oversize)) == (["c"], ["b"])
    assert uidls(plan.fetch) == ["a", "d", "e"]


def test_overran_notes_do_not_apply_without_a_size_limit() -> None:
    assert uidls(plan_fetch(MAILBOX, Limits(), overran={"c"}).fetch) == uidls(MAILBOX)


def test_max_messages_defers_the_rest() -> None:
    plan = plan_fetch(MAILBOX, Limits(max_messages=2))
    assert (uidls(plan.fetch), uidls(plan.deferred)) == (["a", "b"], ["c", "d", "e"])


def test_max_bytes_stops_at_the_first_message_that_does_not_fit() -> None:
    # a (100) fits in 1000; b (5000) does not: it and everything after wait, in order.
    plan = plan_fetch(MAILBOX, Limits(max_bytes=1000))
    assert (uidls(plan.fetch), uidls(plan.deferred)) == (["a"], ["b", "c", "d", "e"])


def test_the_first_message_of_a_run_always_comes_however_large() -> None:
    plan = plan_fetch(MAILBOX[1:], Limits(max_bytes=1000))
    assert uidls(plan.fetch) == ["b"]
    assert uidls(plan.deferred) == ["c", "d", "e"]


def test_oversize_ones_do_not_count_against_the_run_limits() -> None:
    plan = plan_fetch(MAILBOX, Limits(max_message_size=1000, max_messages=2, max_bytes=300))
    assert uidls(plan.oversize) == ["b"]
    assert (uidls(plan.fetch), uidls(plan.deferred)) == (["a", "c"], ["d", "e"])


def test_repeated_runs_fetch_everything_exactly_once() -> None:
    left, seen = list(MAILBOX), []
    while left:
        plan = plan_fetch(left, Limits(max_messages=2, max_bytes=600))
        assert plan.fetch
        seen += uidls(plan.fetch)
        left = plan.deferred
    assert seen == uidls(MAILBOX)


LISTING = {1: "a", 2: "b", 3: "c", 4: "d"}


def test_keep_true_deletes_nothing() -> None:
    assert deletable(LISTING, {"a", "b"}, set(), keep=True) == []


def test_keep_false_deletes_every_delivered_one_but_held() -> None:
    assert deletable(LISTING, {"a", "b", "c"}, {"b"}, keep=False) == [(1, "a"), (3, "c")]


def test_retention_deletes_only_expired_delivered_ones_not_held() -> None:
    got = deletable(LISTING, {"a", "b", "c"}, {"c"}, keep=True, expired={"b", "c", "x"})
    assert got == [(2, "b")]


def test_expired_but_not_delivered_is_never_deleted() -> None:
    assert deletable(LISTING, {"a"}, set(), keep=True, expired={"d"}) == []
