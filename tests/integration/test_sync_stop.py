"""A graceful stop (``SyncOptions.stop_requested``, daemon mode's SIGTERM) at each point of a
sync, in process against the built-in server: nothing half done, nothing lost, QUIT only when
the session is clean, and the next run completes each message exactly once."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.demo.server import Faults
from pop3s_fetch.sync import AccountResult, sync_accounts
from tests.support.mail import corpus
from tests.support.reporting import NullReporter
from tests.support.rig import InProcessRig, in_process_rig, serve

PASSWORD = "stop-test-password"


@pytest.fixture(params=[True, False], ids=["keep", "delete"])
def rig(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    ca_file: Path,
) -> Iterator[InProcessRig]:
    originals = corpus()[:6]
    with serve(server_ssl_context, originals, user="alice", password=PASSWORD) as maildrop:
        yield in_process_rig(
            maildrop,
            originals,
            tmp_path,
            name="test",
            fmt="maildir",
            keep=bool(request.param),
            ca_file=ca_file,
            timeout=5.0,
        )


class StopAfter(NullReporter):
    """Asks for a stop once ``count`` messages have arrived (0: once the listing is read)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self.stop = False

    def listed(self, account: str, messages: int, octets: int) -> None:
        self.stop = self.count == 0

    def fetched(self, account: str, message_octets: int) -> None:
        self.arrived += 1
        self.stop = self.arrived >= self.count


def _sync(rig: InProcessRig, reporter: StopAfter) -> list[AccountResult]:
    options = dataclasses.replace(rig.options, stop_requested=lambda: reporter.stop)
    password = rig.maildrop.password
    return list(sync_accounts([(rig.account, lambda: password)], options, reporter))


@pytest.mark.parametrize("count", [0, 1, 4])
def test_a_stop_without_pipelining_publishes_what_arrived_and_quits(
    rig: InProcessRig, count: int
) -> None:
    rig.server.faults = Faults(no_pipelining=True)
    (result,) = _sync(rig, StopAfter(count))
    assert result.error is None
    assert result.fetched == count
    assert len(rig.landed()) == count
    session = rig.sessions()[-1]
    assert session[-1] == "QUIT"
    assert sum(c.startswith("RETR") for c in session) == count
    assert len(rig.on_server()) == (6 if rig.keep else 6 - count)
    rig.server.faults = Faults()
    assert rig.sync().fetched == 6 - count
    assert rig.landed() == rig.expected()
    assert rig.on_server() == rig.expected_on_server()


def test_a_stop_with_retrs_in_flight_leaves_out_quit_and_deletes_next_run(
    rig: InProcessRig,
) -> None:
    (result,) = _sync(rig, StopAfter(2))
    assert result.error is None
    assert (result.fetched, result.deleted) == (2, 0)
    assert len(rig.landed()) == 2
    assert "QUIT" not in rig.sessions()[-1]
    assert len(rig.on_server()) == 6  # no QUIT: no deletion committed
    after = rig.sync()
    assert after.fetched == 4
    assert sum(c.startswith("RETR") for c in rig.sessions()[-1]) == 4
    assert rig.landed() == rig.expected()
    assert rig.on_server() == rig.expected_on_server()


def test_no_account_starts_once_a_stop_is_requested(rig: InProcessRig) -> None:
    reporter = StopAfter(0)
    reporter.stop = True
    assert _sync(rig, reporter) == []
    assert rig.sessions() == []
