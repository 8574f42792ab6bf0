"""Child processes of the bench (servers, load generators), always stopped.

However a block using :func:`child` ends (done, error, Ctrl-C, SIGTERM), its process gets
SIGTERM and, after a grace period, SIGKILL, and is waited for before the temporary directory it
works in is removed. Children stay in the bench's process group, so a Ctrl-C in the terminal
reaches them too even if the bench itself dies first; the echo server also exits when its stdin
(a pipe from the bench) closes. Their stderr goes to a file, shown when something fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time of the processes ``pids`` so far, added up, their threads
    included (Linux /proc; clock ticks, so 10 ms steps: measure over seconds, not calls)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class ChildFailed(RuntimeError):
    """A child process exited or misbehaved; the message carries the end of its stderr."""


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    stderr_path: Path

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ChildFailed:
        tail = self.stderr_tail()
        return ChildFailed(
            f"{self.name}: {what}" + (f"\n--- its stderr ---\n{tail}" if tail else "")
        )

    async def read_line(self, within: float) -> str:
        """The next stdout line, or ChildFailed if it exits or stays silent ``within`` s."""
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), within)
        except TimeoutError:
            raise self.failure(f"no output within {within:.0f} s") from None
        if not raw:
            await self.process.wait()
            raise self.failure(f"exited with code {self.process.returncode}")
        return raw.decode("utf-8", errors="replace").strip()

    async def stop(self, grace: float = 10.0) -> None:
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


#: The checkout holding bench/, gateway/ and node/: children run from it, so
#: ``python -m bench.echo`` works wherever the bench was started from.
REPO_ROOT = Path(__file__).resolve().parent.parent


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{REPO_ROOT}{os.pathsep}{existing}" if existing else str(REPO_ROOT)


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


@contextlib.asynccontextmanager
async def child(
    name: str,
    command: Sequence[str],
    *,
    logs: Path,
    env: dict[str, str] | None = None,
    grace: float = 10.0,
) -> AsyncIterator[Child]:
    """Run ``command`` for the duration of the block; it is stopped however the block ends.

    stdin is a pipe the child may watch: it closes when the bench exits, even on SIGKILL.
    """
    stderr_path = logs / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})},
            cwd=REPO_ROOT,
        )
    running = Child(name, process, stderr_path)
    try:
        yield running
    finally:
        # Shield the clean-up from the cancellation that Ctrl-C delivers to the bench.
        await asyncio.shield(running.stop(grace))
        if process.stdin is not None:
            process.stdin.close()


def tls_arguments(p: argparse.ArgumentParser, *, target: bool = True) -> None:
    """``--target HOST:PORT`` (unless ``target`` is False: a server) and the mutual-TLS files
    ``--key``, ``--cert`` and ``--root`` of a bench child process."""
    if target:
        p.add_argument("--target", required=True, help="HOST:PORT")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True)
