"""Run ``python -m MODULE ARGS`` many times without paying for the interpreter and imports.

Its one job: import a package's modules once, then for each request fork a child that runs
a module as ``__main__`` with its own argv and standard streams, exactly as ``python -m``
would from there on (the same ``runpy`` call; a normal interpreter exit, with its atexit
handlers and exit code). Each run is a process of its own that a test can SIGKILL by its
pid; what it skips is the start of the interpreter and the imports, which for a
``pop3s-fetch sync`` are two thirds of its CPU time and touch no file outside the code. The
server is started with the environment and working directory that every run gets.

Run as ``python -m tests.powercut.forkserver PACKAGE``: imports PACKAGE and every module
under it but ``__main__``, says ``{"ready": true}``, then reads one JSON request a line on
stdin, ``{"module": ..., "argv": [...], "stdin": PATH, "stdout": PATH, "stderr": PATH}``
(output files are appended to), and answers ``{"pid": N}`` once the child is forked and
``{"exit": CODE}`` once it has ended (negative: killed by that signal), one run at a time.
:class:`ForkServer` starts one and talks to it. Must not know pop3s-fetch or pytest.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import runpy
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

#: How long the client waits for the server to start or to answer a request.
ANSWER_TIMEOUT = 60.0


def preload(package: str) -> None:
    """Import ``package`` and all its modules but ``__main__`` (which runs the program)."""
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if module.name.rsplit(".", 1)[-1] != "__main__":
            importlib.import_module(module.name)


def _redirect(request: dict[str, Any]) -> None:
    """Point fds 0, 1 and 2 at the request's files (sys.stdin & co. follow their fds)."""
    targets = (
        (0, request["stdin"], os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND),
    )
    for number, path, flags in targets:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        os.dup2(fd, number)  # dup2 clears close-on-exec on the copy
        os.close(fd)


def serve(requests: IO[str], answers: IO[str]) -> dict[str, Any] | None:
    """Fork a child per request; return the request in the child, None in the server at EOF."""
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in requests:
        request: dict[str, Any] = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        print(json.dumps({"pid": pid}), file=answers, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), file=answers, flush=True)
    return None


def main(argv: list[str]) -> None:
    (package,) = argv
    preload(package)
    # The protocol moves off fds 0 and 1, which each run gets for its own streams.
    requests = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w")
    request = serve(requests, answers)
    if request is None:
        return
    requests.close()
    answers.close()
    _redirect(request)
    sys.argv = [request["module"], *request["argv"]]
    # What ``python -m`` does; an exception or SystemExit ends this child as it would end it.
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


class ForkServer:
    """A fork server for ``package``'s modules, with ``env`` for every run; a context manager."""

    def __init__(self, package: str, env: Mapping[str, str], log: Path) -> None:
        with log.open("ab") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, package],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=dict(env),
            )
        assert self._process.stdout is not None
        self._answers = self._process.stdout.fileno()
        self._buffer = b""
        self._log = log
        self._next(ANSWER_TIMEOUT, None)  # {"ready": true}

    def start(self, module: str, argv: list[str], stdout: Path, stderr: Path) -> int:
        """Start ``python -m module *argv`` (stdin /dev/null) and return its pid."""
        request = {
            "module": module,
            "argv": argv,
            "stdin": os.devnull,
            "stdout": str(stdout),
            "stderr": str(stderr),
        }
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request).encode() + b"\n")
        self._process.stdin.flush()
        answer = self._next(ANSWER_TIMEOUT, None)
        assert answer is not None
        assert "pid" in answer, answer
        return int(answer["pid"])

    def wait(self, timeout: float, unless: int | None = None) -> int | None:
        """The exit code of the run started last (None: fd ``unless`` became readable first).

        Raises:
            TimeoutError: neither happened within ``timeout`` seconds.
        """
        answer = self._next(timeout, unless)
        if answer is None:
            return None
        return int(answer["exit"])

    def run(self, module: str, argv: list[str], output: Path, timeout: float) -> int:
        """Run ``python -m module *argv`` to its end, stdout and stderr to ``output``."""
        self.start(module, argv, output, output)
        code = self.wait(timeout)
        assert code is not None
        return code

    def _next(self, timeout: float, unless: int | None) -> dict[str, Any] | None:
        """The next answer line, or None once ``unless`` is readable and no answer is there."""
        deadline = time.monotonic() + timeout
        watched = [self._answers] if unless is None else [self._answers, unless]
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select(watched, [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"no answer from the fork server in {timeout} s")
            if self._answers not in ready:
                return None
            chunk = os.read(self._answers, 4096)
            if not chunk:
                raise RuntimeError(f"the fork server died; see {self._log}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        """End the server (after its last run has ended) and wait for it."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=ANSWER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main(sys.argv[1:])
