"""``state rebuild`` against the built-in server's faults: TOP refused, unpipelined, endless."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch import statetools
from pop3s_fetch.demo.samples import demo_messages
from pop3s_fetch.demo.server import Faults
from pop3s_fetch.errors import ProtocolError
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "rebuild-test-password"
MESSAGES = demo_messages()


@pytest.fixture
def rig(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> Iterator[InProcessRig]:
    with serve(server_ssl_context, MESSAGES, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            MESSAGES,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=True,
            ca_file=ca_file,
            timeout=5.0,
        )


def synced_then_lost(rig: InProcessRig) -> Path:
    assert rig.sync().error is None
    state = rig.options.state_dir
    for path in state.glob("test.sqlite3*"):
        path.unlink()
    return state


def rebuild(rig: InProcessRig, state: Path) -> statetools.Rebuilt:
    return statetools.rebuild(rig.account, lambda: PASSWORD, state)


def test_without_pipelining_each_top_goes_alone_and_all_match(rig: InProcessRig) -> None:
    state = synced_then_lost(rig)
    rig.server.faults = Faults(no_pipelining=True)
    report = rebuild(rig, state)
    assert (report.matched, report.to_fetch, report.ambiguous) == (len(MESSAGES), [], [])
    tops = [line for line in rig.sessions()[-1] if line.startswith("TOP")]
    assert tops == [f"TOP {n} 0" for n in range(1, len(MESSAGES) + 1)]
    assert not any(line.startswith(("RETR", "DELE")) for line in rig.sessions()[-1])
    result = rig.sync()
    assert (result.error, result.fetched) == (None, 0)


def test_a_refused_top_leaves_the_message_to_fetch(rig: InProcessRig) -> None:
    state = synced_then_lost(rig)
    rig.server.faults = Faults(raw_replies={"TOP": b"-ERR not today\r\n"})
    report = rebuild(rig, state)
    assert (report.matched, report.no_headers) == (0, len(MESSAGES))
    assert [m.number for m in report.to_fetch] == list(range(1, len(MESSAGES) + 1))


def test_an_endless_top_is_cut_off_and_records_nothing(rig: InProcessRig) -> None:
    state = synced_then_lost(rig)
    rig.server.faults = Faults(endless_reply_to=frozenset({"TOP"}))
    with pytest.raises(ProtocolError) as caught:
        rebuild(rig, state)
    assert str(caught.value).startswith("the server sent more than ")
    assert str(caught.value).endswith(" bytes, so it was not saved")
    rig.server.faults = Faults()
    assert statetools.list_state(rig.account, state) == []
