"""Running the govnode command as an operator does: as a process of its own (``govnode``), or
in a thread on a serving node's database (``cli``), and checking that a refusal is one line.

Each command is a process of its own, forked from a zygote process that has imported the
command once (tests.support.zygote), so that a test does not pay a second or so of imports
for every command it runs. A command run while the zygote is busy with another (commands run
concurrently), or when ``GOVNODE_TEST_ZYGOTE=0``, starts a fresh interpreter instead.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from tests.support.nodes import (
    GOVNODE,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Zygote:
    """The zygote process of this test process, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def run(
        self, args: list[str], env: Mapping[str, str], cwd: Path | None, timeout: float
    ) -> subprocess.CompletedProcess[str] | None:
        """The command run in a child of the zygote; None when the zygote is busy or gone."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            process = self._started()
            if process is None:
                return None
            with tempfile.TemporaryDirectory(prefix="govnode-cli-") as scratch:
                out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
                request = {
                    "args": args,
                    "env": dict(env),
                    "cwd": str(cwd or Path.cwd()),
                    "stdout": str(out),
                    "stderr": str(err),
                }
                assert process.stdin is not None
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                deadline = time.monotonic() + timeout
                pid = self._reply(process, deadline)["pid"]
                try:
                    status = self._reply(process, deadline)["status"]
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
                    self._reply(process, time.monotonic() + 10)
                    raise subprocess.TimeoutExpired(
                        [*GOVNODE, *args], timeout, out.read_bytes(), err.read_bytes()
                    ) from None
                return subprocess.CompletedProcess(
                    [*GOVNODE, *args],
                    status,
                    out.read_text(encoding="utf-8", errors="replace"),
                    err.read_text(encoding="utf-8", errors="replace"),
                )
        except (BrokenPipeError, EOFError):
            self.close()
            return None
        finally:
            self._lock.release()

    def _started(self) -> subprocess.Popen[bytes] | None:
        if self._process is None or self._process.poll() is not None:
            self._buffer = b""
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from tests.support.zygote import serve; serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPO_ROOT,
            )
        return self._process

    def _reply(self, process: subprocess.Popen[bytes], deadline: float) -> Any:
        """The zygote's next reply line, waiting until ``deadline`` at most."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("the zygote ended")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        if self._process is not None:
            stdin: IO[bytes] | None = self._process.stdin
            if stdin is not None:
                stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None


_ZYGOTE = _Zygote()
atexit.register(_ZYGOTE.close)


def run_govnode(
    args: list[str], env: Mapping[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``govnode ARGS`` in a process of its own, its output captured as text."""
    if os.environ.get("GOVNODE_TEST_ZYGOTE", "1") != "0":
        done = _ZYGOTE.run(args, env, cwd, timeout)
        if done is not None:
            return done
    return subprocess.run(
        [*GOVNODE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def govnode(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOVNODE_LOG__FORMAT": "json"}
    return run_govnode([str(a) for a in args], env, cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


async def cli(*args: str | Path) -> tuple[int, str, str]:
    result = await asyncio.to_thread(govnode, *args)
    return result.returncode, result.stdout, result.stderr
