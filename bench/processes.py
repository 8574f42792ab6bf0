"""Several processes of one node: Verify through one ``govnode serve`` and through two, both on
the node's address (``[node] reuse_port``) and one PostgreSQL database.

The ``processes`` scenario provisions a province of its own on a fresh PostgreSQL database
(next to the one GOVNODE_BENCH_POSTGRES_URL names; without it the scenario says so and measures
nothing), seeds it through the first process, and then alternates: a round with the second
process started beside the first, a round with the first alone. Each round's load opens
:data:`CONNECTIONS` connections, so that the kernel (SO_REUSEPORT hashes each new connection)
spreads them over the processes. It reports calls/s of both, their ratio (target 1.7), the
servers' CPU per call (every process of the node, from /proc) and how many calls each process
answered (its own /metrics).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from bench import observability
from bench.procs import Child, cpu_seconds

#: Connections of the load generator: enough that both processes get some.
CONNECTIONS = 16
#: How much better two processes must do than one.
TARGET = 1.7


def share_the_port(config_path: Path, database_url: str) -> None:
    """Point the node's config at ``database_url`` and let its processes share the address."""
    text = config_path.read_text(encoding="utf-8")
    default = 'url = "sqlite+aiosqlite:///node.db"'
    if default not in text:
        raise RuntimeError(f"{config_path}: no default storage url to replace")
    text = text.replace(default, f'url = "{database_url}"').replace(
        "[node]\n", "[node]\nreuse_port = true\n", 1
    )
    config_path.write_text(text, encoding="utf-8")


def cores() -> int:
    return len(os.sched_getaffinity(0))


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def answered(metrics_ports: list[int]) -> list[float]:
    """Verify calls each process answered so far, by its own /metrics."""
    return [await observability.verify_calls_counted(port) for port in metrics_ports]


async def wait_healthy(metrics_port: int, node: Child, within: float = 60.0) -> None:
    """Until this very process says SERVING on its own ``/healthz``: the shared address's
    health may be answered by another process of the node."""
    deadline = time.monotonic() + within
    url = f"http://127.0.0.1:{metrics_port}/healthz"
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            if node.process.returncode is not None:
                raise node.failure(f"exited with code {node.process.returncode} while starting")
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise node.failure(f"its /healthz did not say SERVING within {within:.0f} s")
