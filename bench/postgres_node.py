"""A second province node for the Submit scenario, on PostgreSQL: the same ``govnode serve``,
configuration and example resource as the bench's SQLite node, in a fresh database of its own
next to the one ``GOVNODE_BENCH_POSTGRES_URL`` names (created, and dropped after the run; the
user needs CREATEDB). The database is never analysed during the run, as on a server with
autovacuum off or right after a bulk load.

Started only when that variable is set, e.g.
``GOVNODE_BENCH_POSTGRES_URL=postgresql+asyncpg://root@127.0.0.1:5432/test python -m bench
--scenario submit``.

Run as ``python -m bench.postgres_node [--records 80000]`` (same variable), it shows how
Submit's rate holds up as one resource grows on PostgreSQL: the node alone, records submitted
in slices of 20,000 (batches of 1,000 on one stream), each slice's rate printed, then two
slices of changes of stored records (held for approval). It prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from bench import province as province_mod
from bench.databases import fresh_postgres_database
from bench.province import Province, submit

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


#: Records per printed slice, and per batch.
SLICE = 20_000
BATCH = 1_000


async def growth(base_url: str, records: int) -> None:
    """Submit ``records`` new records in slices to a node on PostgreSQL, then two slices of
    changes of the first ones; print each slice's rate."""
    with tempfile.TemporaryDirectory(prefix="govnode-bench-pg-") as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        async with serve_on_postgres(base_url, Path(tmp), logs) as node:
            done = 0
            while done < records:
                batches = min(SLICE, records - done) // BATCH
                figures = await submit(
                    node.target, node.provider, first=done, batches=batches, batch_size=BATCH,
                    duration=600.0,
                )  # fmt: skip
                done += figures.accepted
                print(f"new records, {done:>9,} stored: {figures.records_per_s:>8,.0f} records/s")
                if figures.rejected or not figures.accepted:
                    raise SystemExit(f"refused: {figures.first_problem}")
            for first in (0, SLICE):
                figures = await submit(
                    node.target, node.provider, first=first, batches=SLICE // BATCH,
                    batch_size=BATCH, duration=600.0, changed=True,
                )  # fmt: skip
                rate = figures.held_per_s
                print(f"changes held, {figures.held:>7,} records: {rate:>8,.0f} records/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Submit's rate as one resource grows, on a node on PostgreSQL"
    )
    parser.add_argument("--records", type=int, default=80_000, help="default 80,000")
    args = parser.parse_args(argv)
    if not SLICE * 2 <= args.records <= 10_000_000:
        raise SystemExit(f"--records: from {SLICE * 2:,} to 10,000,000")
    base_url = postgres_url()
    if base_url is None:
        raise SystemExit(f"{POSTGRES_ENV} is not set: no PostgreSQL server to run on")
    asyncio.run(growth(base_url, args.records))


if __name__ == "__main__":
    main()
