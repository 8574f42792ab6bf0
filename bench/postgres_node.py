"""A second province node for the Submit scenario, on PostgreSQL: the same ``govnode serve``,
configuration and example resource as the bench's SQLite node, in a fresh database of its own
next to the one ``GOVNODE_BENCH_POSTGRES_URL`` names (created, and dropped after the run; the
user needs CREATEDB). The database is never analysed during the run, as on a server with
autovacuum off or right after a bulk load.

Started only when that variable is set, e.g.
``GOVNODE_BENCH_POSTGRES_URL=postgresql+asyncpg://root@127.0.0.1:5432/test python -m bench
--scenario submit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from bench import province as province_mod
from bench.databases import fresh_postgres_database
from bench.province import Province

POSTGRES_ENV = "GOVNODE_BENCH_POSTGRES_URL"


def postgres_url() -> str | None:
    """The PostgreSQL server the bench may make its database on, if any."""
    return os.environ.get(POSTGRES_ENV) or None


@contextlib.asynccontextmanager
async def serve_on_postgres(base_url: str, workdir: Path, logs: Path) -> AsyncIterator[Province]:
    """A provisioned province node serving on a fresh PostgreSQL database next to
    ``base_url``, the example resource registered by its provider, for the block."""
    async with fresh_postgres_database(base_url) as url:
        province = await asyncio.to_thread(province_mod.provision, workdir / "province-postgresql")
        async with province_mod.serve_node(
            "govnode-postgresql",
            province.config_path,
            province.target,
            province.consumer,
            logs,
            env={"GOVNODE_STORAGE__URL": url},
        ):
            await province_mod.register_resource(province)
            yield province
