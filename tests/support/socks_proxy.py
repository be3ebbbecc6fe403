"""Real SOCKS5 proxies for the tests: Debian's ``microsocks`` and Dante's ``danted``.

Both resolve the names they are asked to connect to (as Tor does). microsocks speaks RFC 1928
with no authentication, or RFC 1929 user/password when started with ``-u``/``-P`` (which the
client refuses to do: that is how the "requires authentication" refusal is tested for real).
danted follows rules, so it can refuse a destination (reply 0x02), and its log of a refused
CONNECT names the destination as it was asked for (``localhost.995``): the proxy's own word
that it was sent a name, not an address.
Each proxy is its own process in its own session on a free loopback port, stopped (and its
session reaped) at teardown. It knows nothing about pop3s-fetch.
"""

from __future__ import annotations

import contextlib
import os
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


class Proxy:
    """One running SOCKS5 proxy; ``url`` is what a config's ``proxy`` key says."""

    def __init__(self, argv: list[str], port: int, output: Path) -> None:
        self.port = port
        with output.open("wb") as sink:
            self._process = subprocess.Popen(
                argv,
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
                raise RuntimeError(f"{self.log_text()}\n(the proxy exited)")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1.0):
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=POLL_INTERVAL)  # polling another process's start
        self.stop()
        raise RuntimeError(f"{self.log_text()}\n(the proxy did not accept on {HOST}:{self.port})")

    def log_text(self) -> str:
        return self._output.read_text(errors="replace")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        kill_session_leftovers(self._process.pid, STOP_TIMEOUT)


def require(program: str, package: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which(program, path=search)
    if found is None:
        server_unavailable(f"{program} is not installed (apt-get install {package})")
    return found


@pytest.fixture
def start_microsocks(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """Start microsocks proxies (``start_microsocks("-u", "user", "-P", "pw")`` for one
    that wants a password); all are stopped at the end of the test."""
    executable = require("microsocks", "microsocks")
    started: list[Proxy] = []

    def start(*extra: str) -> Proxy:
        port = free_port()
        argv = [executable, "-i", HOST, "-p", str(port), *extra]
        proxy = Proxy(argv, port, tmp_path / f"microsocks.{len(started)}.out")
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def microsocks(start_microsocks: Callable[..., Proxy]) -> Proxy:
    """A microsocks that takes anyone from this machine without authentication."""
    return start_microsocks()


def dante_config(port: int, verdict: str) -> str:
    """Clients from the loopback, no authentication; every CONNECT gets ``verdict``, logged."""
    users = "user.privileged: root\nuser.unprivileged: nobody\n" if os.geteuid() == 0 else ""
    return (
        f"logoutput: stderr\ninternal: {HOST} port = {port}\nexternal: {HOST}\n"
        f"clientmethod: none\nsocksmethod: none\n{users}"
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
        f"socks {verdict} {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }}\n"
    )


@pytest.fixture
def start_dante(tmp_path: Path) -> Iterator[Callable[[str], Proxy]]:
    """Start danted proxies that ``"pass"`` or ``"block"`` every CONNECT."""
    executable = require("danted", "dante-server")
    started: list[Proxy] = []

    def start(verdict: str) -> Proxy:
        port = free_port()
        config = tmp_path / f"danted.{len(started)}.conf"
        config.write_text(dante_config(port, verdict))
        argv = [
            executable,
            "-f",
            str(config),
            "-N",
            "1",
            "-p",
            str(tmp_path / f"danted.{len(started)}.pid"),
        ]
        proxy = Proxy(argv, port, tmp_path / f"danted.{len(started)}.out")
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
