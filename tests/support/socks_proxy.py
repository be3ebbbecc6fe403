"""A real SOCKS5 proxy for the tests: Debian's ``microsocks``, on a loopback port of its own.

microsocks resolves the names it is asked to connect to (as Tor does), speaks RFC 1928 with no
authentication, or RFC 1929 user/password when started with ``-u``/``-P`` (which the client
refuses to do: that is how the "requires authentication" refusal is tested for real). Each
proxy is its own process in its own session, stopped (and its session reaped) at teardown.
It knows nothing about pop3s-fetch.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import kill_session_leftovers, server_unavailable

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class Microsocks:
    """One running microsocks; ``url`` is what a config's ``proxy`` key says."""

    def __init__(self, executable: str, extra: list[str], output: Path) -> None:
        self.port = free_port()
        with output.open("wb") as sink:
            self._process = subprocess.Popen(
                [executable, "-i", HOST, "-p", str(self.port), *extra],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._output = output
        self._wait_until_accepting()

    @property
    def url(self) -> str:
        return f"socks5://{HOST}:{self.port}"

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"microsocks exited: {self._output.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1.0):
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=POLL_INTERVAL)  # polling another process's start
        self.stop()
        raise RuntimeError(f"microsocks did not accept on {HOST}:{self.port}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        kill_session_leftovers(self._process.pid, STOP_TIMEOUT)


def require_microsocks() -> str:
    found = shutil.which("microsocks")
    if found is None:
        server_unavailable("microsocks is not installed (apt-get install microsocks)")
    return found


@pytest.fixture
def start_microsocks(tmp_path: Path) -> Iterator[Callable[..., Microsocks]]:
    """Start microsocks proxies (``start_microsocks("-u", "user", "-P", "pw")`` for one
    that wants a password); all are stopped at the end of the test."""
    executable = require_microsocks()
    started: list[Microsocks] = []

    def start(*extra: str) -> Microsocks:
        proxy = Microsocks(executable, list(extra), tmp_path / f"microsocks.{len(started)}.out")
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def microsocks(start_microsocks: Callable[..., Microsocks]) -> Microsocks:
    """A microsocks that takes anyone from this machine without authentication."""
    return start_microsocks()
