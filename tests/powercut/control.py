"""Mount, cut and restore the power-cut file system from a test.

Its one job: start :mod:`tests.powercut.filesystem` as a child process over a backing
directory, talk to it, and take it down again; and tell why FUSE cannot be used here, so
that tests skip with a clear reason. Must not know pop3s-fetch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
#: How long the controller waits for the file system to answer a command or to mount.
COMMAND_TIMEOUT = 30.0


def unavailable_reason() -> str | None:
    """Why a FUSE file system cannot be mounted here, or None if it can."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse (FUSE is not available in this container)"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "not root and no fusermount3 (install fuse3)"
    try:
        import mfusepy  # type: ignore[import-untyped]  # noqa: F401  # loads libfuse
    except ImportError:
        return "mfusepy is not installed (pip install -e '.[test]')"
    except (OSError, AttributeError) as err:
        return f"no usable libfuse for mfusepy (install fuse3): {err}"
    return None


class PowerCut:
    """The power-cut file system's process for mounts at ``mount``; a context manager.

    One process serves one mount after another (:meth:`mount_over`, :meth:`unmount`), each a
    fresh file system over its backing directory with nothing cut. Nothing may touch the
    mount between :meth:`cut` (or an armed cut firing) and :meth:`release`: it would block
    like the process under test.
    """

    def __init__(self, mount: Path, log: Path) -> None:
        self.mount = mount
        self.mounted = False
        self._log = log.open("ab")
        #: Readable once the power is cut (armed, or by :meth:`cut`): wait on it with select.
        self.cut_signal, cut_end = os.pipe()
        os.set_blocking(self.cut_signal, False)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.powercut.filesystem", str(mount), str(cut_end)],
            pass_fds=(cut_end,),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            cwd=REPO_ROOT,
        )
        os.close(cut_end)

    def _answer(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        timer = threading.Timer(COMMAND_TIMEOUT, self._process.kill)
        timer.start()
        try:
            line = self._process.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            raise RuntimeError(f"the power-cut file system died; see {self._log.name}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"power-cut file system: {reply.get('error')}")
        return reply

    def command(self, text: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(text + "\n")
        self._process.stdin.flush()
        return self._answer()

    def mount_over(self, backing: Path) -> None:
        """Mount a fresh power-cut file system over ``backing``: all of it durable, no cut."""
        self.command(f"mount {backing}")
        self.mounted = True

    def arm(self, k: int) -> None:
        """Cut just before the k-th counted operation (1-based)."""
        self.command(f"arm {k}")

    def cut(self) -> None:
        self.command("cut")

    def counted(self) -> int:
        return int(self.command("count")["counted"])

    def is_cut(self) -> bool:
        return bool(self.command("count")["cut"])

    def trace(self) -> list[str]:
        """The counted operations done before the cut, e.g. ``"fsyncdir /state"``."""
        return list(self.command("trace")["trace"])

    def release(self) -> None:
        """Answer every blocked operation with EIO (kill the process under test first)."""
        self.command("release")

    def restore(self, target: Path) -> None:
        """Write the durable state (after a cut) into ``target``, empty or missing."""
        self.command(f"restore {target}")

    def unmount(self) -> None:
        """Release anything blocked and unmount; the process stays for the next mount."""
        if not self.mounted:
            return
        self.mounted = False
        try:
            self.command("unmount")
        except (RuntimeError, BrokenPipeError):
            subprocess.run(["umount", "-l", str(self.mount)], check=False)
            raise
        finally:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.cut_signal, 4096):  # this mount's cut, if any
                    pass

    def close(self) -> None:
        """Unmount, and end the file system's process."""
        try:
            self.unmount()
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()  # it unmounts lazily and exits
            try:
                self._process.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                subprocess.run(["umount", "-l", str(self.mount)], check=False)
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        os.close(self.cut_signal)
        self._log.close()

    def __enter__(self) -> PowerCut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
