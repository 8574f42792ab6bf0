"""How long a quality check (第十五、十六条) of one resource takes, and how much memory, against a
raw SQL count over the same rows in the same run.

    python -m bench.quality_check [--records 1000000] [--backend sqlite|postgresql]

Builds a fresh database (a SQLite file, or a PostgreSQL database of its own next to the one
GOVNODE_TEST_POSTGRES_URL names), registers the 老年人健康随访记录 entry of
``bench.opendata_publish`` (five items) and submits the records through ``Records.submit`` in
batches of 10,000, as a provider would. Then, in a child process of its own (so its peak memory
is the check's, not the load's), it alternates for ``--rounds`` rounds:

- ``Quality.check`` of the resource, end to end, counting every record (the node's code: every
  SQL aggregate, scoring, the drop rule against the history, the stored check; the stored
  checks are removed before each, so that it cannot start from the previous one);
- the baselines, raw SQL on the same connection pool: ``SELECT count(*)`` of the resource's
  current records (what an index answers), and a count that must read every row's values
  (``... AND length(item_values) > 0``), the least any check of the values costs.

Then it submits 1% more records and checks again: the incremental check the daily schedule
runs, which counts only the records written since the previous check; and once more from
scratch, to show the two agree. The best round of each is reported, with the ratio of the
check's time to each count's. The
target (issue 15): the check at most 3x the count that reads the rows; the index-only count is
shown beside it. Memory: the child's peak RSS (``ru_maxrss``) after the engine is open and after
the checks. The last line is one JSON object with every figure. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text

from bench.databases import backend_url
from bench.opendata_publish import CODE, PROVIDER, REGION, TRUST_DOMAIN, load, records
from gateway.identity import Identity, Role
from node.catalog import Catalog
from node.logging import configure_logging
from node.quality import Quality, QualitySettings
from node.records import Records, SubmitBatch
from node.storage import Database

T = TypeVar("T")

BY = f"spiffe://{REGION}.fujian.gov.cn/authority"

#: The baselines: the resource's current records, as the check selects them.
COUNT_SQL = {
    "index": "SELECT count(*) FROM record WHERE resource_code = :code AND deleted = :no",
    "rows": (
        "SELECT count(*) FROM record WHERE resource_code = :code AND deleted = :no "
        "AND length(CAST(item_values AS TEXT)) > 0"
    ),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _count(db: Database, sql: str) -> int:
    async with db.engine.connect() as connection:
        row = (await connection.execute(text(sql), {"code": CODE, "no": False})).one()
    return int(row[0])


async def _add_records(db: Database, first: int, count: int) -> None:
    """Submit ``count`` new records after the first ``first``, as the provider would."""
    catalog = Catalog(db, node_region=REGION)
    provider = Identity(REGION, TRUST_DOMAIN, Role.AGENCY, PROVIDER)
    made = tuple(records(first, count, random.Random(first)))
    outcome = await Records(db, REGION).submit(
        provider, await catalog.current(CODE), SubmitBatch(f"bench-more-{first}", made)
    )
    if outcome.accepted != count:
        raise RuntimeError(f"added {outcome.accepted} of {count} records: {outcome.rejections[:3]}")


async def measure(url: str, rounds: int, loaded: int) -> dict[str, Any]:
    """In the child: open the database, then alternate full checks and the counts; then add
    1% new records and check again (incremental), and once more from scratch to compare."""
    db = await Database.open(url)
    try:
        rss_open = _peak_rss_mb()
        quality = Quality(
            db, Catalog(db, node_region=REGION), node_region=REGION, settings=QualitySettings()
        )
        best: dict[str, float] = {}
        cpu: dict[str, float] = {}
        counted: dict[str, int] = {}
        grade = ""

        async def timed(name: str, work: Awaitable[T]) -> T:
            wall, used = time.perf_counter(), time.process_time()
            result = await work
            elapsed, spent = time.perf_counter() - wall, time.process_time() - used
            if elapsed < best.get(name, float("inf")):
                best[name], cpu[name] = elapsed, spent
            return result

        for _ in range(rounds):
            for name in ("index", "rows"):
                counted[name] = await timed(name, _count(db, COUNT_SQL[name]))
            await _forget_checks(db)  # so that the check counts every record
            full = await timed("check", quality.check(CODE, BY))
            grade = full.grade.value if full.grade else ""
        added = max(loaded // 100, 1)
        await _add_records(db, loaded, added)
        incremental = await timed("incremental", quality.check(CODE, BY))
        await _forget_checks(db)
        scratch = await quality.check(CODE, BY)
        return {
            "records_checked": full.records,
            "records_counted": counted,
            "grade": grade,
            "wall_s": {k: round(v, 3) for k, v in best.items()},
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "rss_open_mb": round(rss_open, 1),
            "rss_peak_mb": round(_peak_rss_mb(), 1),
            "incremental_added": added,
            "incremental_recounted": incremental.basis.recounted if incremental.basis else None,
            "incremental_matches_full": incremental.items == scratch.items
            and incremental.records == scratch.records,
        }
    finally:
        await db.close()


async def _forget_checks(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text("DELETE FROM quality_check"))


async def build(backend: str, count: int, base: Path, rounds: int) -> dict[str, Any]:
    async with backend_url(backend, base / "node.db") as url:
        db = await Database.open(url)
        try:
            await db.migrate()
            load_wall, _ = await load(db, count)
            _progress(f"loaded {count:,} records in {load_wall:.1f} s")
            if backend == "postgresql":
                async with db.engine.connect() as connection:  # as autovacuum would have
                    await connection.execute(text("ANALYZE"))
        finally:
            await db.close()
        _progress(f"checking, {rounds} round(s), in a child process")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.quality_check", "--measure", url,
            "--rounds", str(rounds), "--records", str(count),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(child.communicate(), timeout=3600)
        if child.returncode:
            raise RuntimeError(f"the measuring child failed with status {child.returncode}")
        data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    wall = data["wall_s"]
    data.update(
        backend=backend,
        records=count,
        load_s=round(load_wall, 1),
        rounds=rounds,
        check_over_count=round(wall["check"] / wall["rows"], 2) if wall["rows"] else None,
        check_over_index_count=round(wall["check"] / wall["index"], 1) if wall["index"] else None,
        incremental_over_count=(
            round(wall["incremental"] / wall["rows"], 3) if wall["rows"] else None
        ),
    )
    return data


def describe(data: dict[str, Any]) -> str:
    wall, cpu = data["wall_s"], data["cpu_s"]
    added = data["incremental_added"]
    return "\n".join(
        [
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {data['backend']}, "
            f"{os.cpu_count()} CPUs: {data['records']:,} records submitted in "
            f"{data['load_s']:.1f} s; best of {data['rounds']} round(s)",
            f"{'':<44} {'wall s':>8} {'CPU s':>8}",
            f"{'Quality.check (grade ' + data['grade'] + ')':<44} "
            f"{wall['check']:>8.3f} {cpu['check']:>8.3f}",
            f"{'count(*) reading every row (baseline)':<44} "
            f"{wall['rows']:>8.3f} {cpu['rows']:>8.3f}",
            f"{'count(*) from the index':<44} {wall['index']:>8.3f} {cpu['index']:>8.3f}",
            f"{f'Quality.check after {added:,} new records':<44} "
            f"{wall['incremental']:>8.3f} {cpu['incremental']:>8.3f}",
            f"check / row count {data['check_over_count']} (target at most 3); check / index "
            f"count {data['check_over_index_count']}; peak RSS {data['rss_peak_mb']} MB "
            f"({data['rss_open_mb']} MB with the engine open, before checking)",
            f"incremental check / row count {data['incremental_over_count']}: it counted "
            f"{data['incremental_recounted']:,} records; same figures as a full count: "
            f"{data['incremental_matches_full']}",
        ]
    )


def _progress(message: str) -> None:
    print(f"[quality-check] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="default 1,000,000")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.records < 1 or args.rounds < 1:
        raise SystemExit("--records and --rounds must be at least 1")
    configure_logging("console", "warning")
    if args.measure:
        data = asyncio.run(measure(args.measure, args.rounds, args.records))
        print(json.dumps(data), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="govnode-bench-quality-") as base:
        data = asyncio.run(build(args.backend, args.records, Path(base), args.rounds))
    print(describe(data))
    print(json.dumps(data, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
