"""A broken or hostile POP3S server: what it can no longer make the client do (issue 11).

Each case scripts the built-in server (``Faults``) and syncs in this process. The promises:
nothing is lost (no message deleted that was not saved as itself), nothing is recorded under
the wrong UIDL, memory and time stay bounded, and a fault ends in that account's protocol
error, never in an internal error or in the other accounts not running.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults, wire_size
from pop3s_fetch.pop3 import client as pop3_client
from pop3s_fetch.state import open_store
from pop3s_fetch.sync import sync_accounts
from tests.support.mail import as_stored
from tests.support.reporting import NullReporter
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "hostile-test-password"
MESSAGES = [
    b"Subject: one\n\nfirst body\n",
    b"Subject: two\n\nsecond body, a bit longer\n",
    b"Subject: three\n\nthird body, longer again than the others\n",
]


@pytest.fixture(params=["maildir", "mbox"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path, fmt: str
) -> Iterator[InProcessRig]:
    with serve(server_ssl_context, MESSAGES, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            MESSAGES,
            tmp_path,
            name="test",
            fmt=fmt,
            keep=False,
            ca_file=ca_file,
            timeout=2.0,
        )


def stored(rig: InProcessRig, *messages: bytes) -> list[bytes]:
    return sorted(as_stored(message, rig.fmt) for message in messages)


# --- never lose, never misfile ----------------------------------------------------------------


def test_a_retr_answered_with_another_body_is_saved_but_never_deleted(rig: InProcessRig) -> None:
    """RETR 1 answered with message 3's body: message 1 must stay on the server."""
    rig.server.faults = Faults(retr_body_of={1: 3})
    result = rig.sync()
    assert result.error is None, result.error
    assert rig.landed() == stored(rig, MESSAGES[1], MESSAGES[2], MESSAGES[2])
    assert rig.on_server() == [MESSAGES[0]]  # never deleted: its own body was never saved
    assert "DELE 1" not in rig.sessions()[0]
    listed, received = wire_size(MESSAGES[0]), wire_size(MESSAGES[2])
    assert result.warnings == [
        "1 message arrived with another size than the server listed (first: message 1, "
        f"listed {listed} bytes, {received} arrived); saved and left on the server, as it may "
        "be another message's body"
    ]
    rig.server.faults = Faults()
    again = rig.sync()  # held: neither fetched again nor deleted, and no second warning
    assert (again.error, again.fetched, again.deleted, again.warnings) == (None, 0, 0, [])
    assert rig.on_server() == [MESSAGES[0]]


def test_list_sizes_that_are_only_close_keep_every_message_downloadable(
    rig: InProcessRig,
) -> None:
    rig.server.faults = Faults(list_size_delta={1: 7, 2: -3})
    result = rig.sync()
    assert result.error is None, result.error
    assert rig.landed() == stored(rig, *MESSAGES)
    assert rig.on_server() == sorted(MESSAGES[:2])  # the two that disagreed stay
    assert result.warnings[0].startswith("2 messages arrived with another size")


@pytest.mark.parametrize(
    ("verb", "reply"),
    [
        pytest.param("UIDL", b"+OK\r\n1 aaa\r\n1 bbb\r\n2 ccc\r\n.\r\n", id="uidl-number-twice"),
        pytest.param("LIST", b"+OK\r\n1 40\r\n1 41\r\n2 42\r\n.\r\n", id="list-number-twice"),
        pytest.param("LIST", b"+OK\r\n1 abc\r\n2 40\r\n3 40\r\n.\r\n", id="list-size-abc"),
        pytest.param("LIST", b"+OK\r\n1 1.5\r\n2 40\r\n3 40\r\n.\r\n", id="list-size-fraction"),
        pytest.param(
            "LIST", b"+OK\r\n1 99999999999999999999999999\r\n.\r\n", id="list-size-overflow"
        ),
        pytest.param("UIDL", b"+OK\r\n0 aaa\r\n.\r\n", id="uidl-number-zero"),
    ],
)
def test_a_listing_that_could_misfile_mail_is_refused_and_nothing_is_deleted(
    rig: InProcessRig, verb: str, reply: bytes
) -> None:
    rig.server.faults = Faults(raw_replies={verb: reply})
    result = rig.sync()
    assert result.error is not None
    assert int(result.error.exit_code) == 76
    assert rig.on_server() == sorted(MESSAGES)
    assert rig.landed() == []


def test_a_protocol_fault_in_one_account_lets_the_others_run(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    with (
        serve(server_ssl_context, MESSAGES, user="alice", password=PASSWORD) as bad,
        serve(server_ssl_context, MESSAGES, user="alice", password=PASSWORD) as good,
    ):
        bad.server.faults = Faults(raw_replies={"LIST": b"+OK\r\n1 abc\r\n.\r\n"})
        rigs = [
            in_process_rig(
                drop,
                MESSAGES,
                tmp_path / name,
                name=name,
                fmt="maildir",
                keep=True,
                ca_file=ca_file,
                timeout=2.0,
            )
            for name, drop in (("bad", bad), ("good", good))
        ]
        results = sync_accounts(
            [(r.account, lambda: PASSWORD) for r in rigs],
            rigs[0].options,
            NullReporter(),
            jobs=2,
        )
    assert [r.account for r in results] == ["bad", "good"]
    assert results[0].error is not None
    assert int(results[0].error.exit_code) == 76
    assert str(results[0].error) == "malformed LIST line from the server: '1 abc'"
    assert results[1].error is None
    assert results[1].fetched == len(MESSAGES)


def test_a_blank_line_inside_capa_is_harmless(rig: InProcessRig) -> None:
    capa = b"+OK\r\nUIDL\r\n\r\nPIPELINING\r\nUSER\r\n.\r\n"
    rig.server.faults = Faults(raw_replies={"CAPA": capa})
    result = rig.sync()
    assert result.error is None, result.error
    assert rig.landed() == stored(rig, *MESSAGES)


# --- bounded memory and time ------------------------------------------------------------------


def test_an_endless_capa_is_cut_off(rig: InProcessRig) -> None:
    rig.server.faults = Faults(endless_reply_to=frozenset({"CAPA"}))
    result = rig.sync()
    assert result.error is not None
    assert str(result.error) == (
        "the server's CAPA reply is longer than 65,536 bytes, so it was not read to the end"
    )
    assert int(result.error.exit_code) == 76


def test_an_endless_uidl_is_cut_off(rig: InProcessRig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pop3_client, "LISTING_LIMIT", 1 << 20)  # the real one is 41 MB
    rig.server.faults = Faults(endless_reply_to=frozenset({"UIDL"}))
    result = rig.sync()
    assert result.error is not None
    assert str(result.error) == (
        "the server's UIDL reply is longer than 1,048,576 bytes, so it was not read to the end"
    )
    assert rig.on_server() == sorted(MESSAGES)


def test_an_endless_message_is_refused_and_stays_on_the_server(rig: InProcessRig) -> None:
    rig.server.faults = Faults(endless_reply_to=frozenset({"RETR"}))
    result = rig.sync()
    assert result.error is not None
    assert int(result.error.exit_code) == 76
    limit = pop3_client.retr_limit(wire_size(MESSAGES[0]))
    assert str(result.error) == (
        f"the server sent more than {limit} bytes for message 1, which LIST gave as "
        f"{wire_size(MESSAGES[0])} bytes, so it was not saved"
    )
    assert rig.landed() == []
    assert rig.on_server() == sorted(MESSAGES)
    assert rig.temporary_files() == []


def test_a_trickled_greeting_does_not_hold_the_account(rig: InProcessRig) -> None:
    rig.server.faults = Faults(trickle_greeting=0.25)
    result = rig.sync()
    assert result.error is not None
    assert str(result.error).startswith("the server sent a reply too slowly (")
    assert int(result.error.exit_code) == 75


def test_a_trickled_message_is_given_up_and_kept(rig: InProcessRig) -> None:
    rig.server.faults = Faults(trickle_retr={1: 0.25})
    result = rig.sync()
    assert result.error is not None
    assert "too slowly" in str(result.error)
    assert rig.on_server() == sorted(MESSAGES)
    with open_store(rig.options.state_dir / "test.sqlite3") as store:
        assert store.delivered() == set()


def test_a_transient_empty_listing_does_not_deliver_everything_again(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    """Run 1 lists 3; run 2 (a hiccup) lists none; run 3 lists the same 3: nothing twice."""
    with serve(server_ssl_context, MESSAGES, user="alice", password=PASSWORD) as maildrop:
        rig = in_process_rig(
            maildrop,
            MESSAGES,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=True,
            ca_file=ca_file,
            timeout=2.0,
        )
        assert rig.sync().fetched == 3
        rig.server.faults = Faults(raw_replies={"UIDL": b"+OK\r\n.\r\n"})
        assert rig.sync().error is None
        rig.server.faults = Faults()
        third = rig.sync()
    assert (third.error, third.fetched) == (None, 0)
    assert rig.landed() == stored(rig, *MESSAGES)


def test_a_state_directory_others_can_write_is_refused_before_anything_is_deleted(
    rig: InProcessRig,
) -> None:
    """A planted record in a world-writable state directory could make keep = false delete
    a message that was never saved: the sync refuses to start."""
    rig.options.state_dir.mkdir(parents=True)
    rig.options.state_dir.chmod(0o777)
    result = rig.sync()
    assert result.error is not None
    assert int(result.error.exit_code) == 77
    assert "is writable by other users (mode 0777)" in str(result.error)
    assert rig.sessions() == []  # refused before any connection
    assert rig.on_server() == sorted(MESSAGES)
