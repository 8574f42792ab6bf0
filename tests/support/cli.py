"""Running the govnode command as an operator does: as a subprocess (``govnode``), or in-process
on a serving node's database (``cli``), and checking that a refusal is one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from tests.support.nodes import (
    GOVNODE,
)


def govnode(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOVNODE_LOG__FORMAT": "json"}
    return subprocess.run(
        [*GOVNODE, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


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
