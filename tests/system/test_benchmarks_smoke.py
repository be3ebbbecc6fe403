"""The benchmark suite keeps working: its quick mode runs and pop3s-fetch's copies verify.

Also checks the latency proxy on its own: bytes pass unchanged, in order, and late by the
configured delay in each direction.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.environment import missing_server
from benchmarks.latency_proxy import latency_proxy
from tests.support import server_unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A one-connection TCP echo server on 127.0.0.1."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    listener.close()
    thread.join(timeout=5)


def test_latency_proxy_delays_each_direction_and_keeps_bytes(
    echo_server: tuple[str, int],
) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, more than one chunk
    with (
        latency_proxy(*echo_server, one_way_delay=0.05) as proxy,
        socket.create_connection((proxy.host, proxy.port)) as conn,
    ):
        started = time.monotonic()
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        round_trip = time.monotonic() - started
        sender = threading.Thread(target=conn.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            received += conn.recv(65536)
        sender.join()
    assert 0.1 <= round_trip < 0.5
    assert bytes(received) == payload


def run_benchmark(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository root, once Dovecot can be started."""
    reason = missing_server()
    if reason is not None:
        server_unavailable(reason)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.dovecot
def test_quick_benchmark_runs_and_verifies_pop3s_fetch() -> None:
    done = run_benchmark("benchmarks.run", "--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("pop3s-fetch ")]
    assert len(rows) == 3, done.stdout  # one per quick scenario (rtt0, rtt10, daemon)
    assert all(row.endswith("30/30 exact") for row in rows), done.stdout
    assert "RSS flat over 3 polls" in done.stdout  # the daemon ran its polls
    assert "pop3s-fetch --version:" in done.stdout


@pytest.mark.dovecot
def test_the_daemon_scenario_polls_faster_than_the_cli_allows_for_the_memory_check() -> None:
    done = run_benchmark(
        "benchmarks.run", "--scenario", "quick-daemon", "--polls", "20", "--interval", "0.05"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RSS flat over 20 polls" in done.stdout, done.stdout


@pytest.mark.dovecot
def test_timeline_names_every_step_of_a_sync_in_order() -> None:
    done = run_benchmark("benchmarks.timeline", "--runs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [
        line.split(")", 1)[1].strip() for line in done.stdout.splitlines() if " ms  (+" in line
    ]
    assert steps == [
        "interpreter ready",
        "pop3s_fetch imported",
        "account sync starts",
        "TCP connect",
        "TCP connected",
        "TLS handshake done",
        "greeting read",
        "CAPA sent",
        "AUTH sent",
        "logged in",
        "UIDL listing read",
        "RETR sent",
        "first message read",
        "last publish starts",
        "last publish done",
        "QUIT sent",
        "exit",
    ], done.stdout


@pytest.mark.dovecot
def test_ab_runs_a_revision_and_a_directory_in_turn() -> None:
    done = run_benchmark(
        "benchmarks.ab", "HEAD", str(REPO_ROOT), "--small", "--count", "5", "--rounds", "2"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "5 small messages, first download, medians of 2 (wall, cpu seconds):"
    assert [line.split()[0] for line in lines[1:]] == ["HEAD", str(REPO_ROOT)]
    assert all(line.count("walls:") == 1 and len(line.split()) == 8 for line in lines[1:])
