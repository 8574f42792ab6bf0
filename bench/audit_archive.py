"""What the audit log costs on disk per record, and how long `govnode audit verify-archive`
takes per million records (第三十九条: at least three years of records).

    python -m bench.audit_archive [--records 131072] [--segment 16384]

Writes the records through the audit log itself (group commit, the Merkle tree grown with each
batch) into a fresh SQLite file and, when GOVNODE_TEST_POSTGRES_URL is set, a fresh PostgreSQL
database; signs and cosigns a checkpoint; seals the archive and checks it with the command an
operator runs. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from bench.archived_log import OLD, append, make_node, witnessed
from bench.databases import backend_url, postgres_url
from node.storage import Database

GOVNODE = [sys.executable, "-c", "from node.cli import main; main()"]
_PG_SIZE = (
    "SELECT pg_total_relation_size('audit_record'), pg_total_relation_size('audit_subtree'), "
    "pg_total_relation_size('audit_tree')"
)


async def _pg_bytes(url: str) -> tuple[int, int]:
    db = await Database.open(url)
    try:
        async with db.engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
            record, subtree, tree = (await connection.execute(text(_PG_SIZE))).one()
        return int(record), int(subtree) + int(tree)
    finally:
        await db.close()


def _sqlite_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def _run(backend: str, records: int, segment: int, base: Path) -> None:
    async with backend_url(backend, base / "node.db") as url:
        node = make_node(base / backend, url, segment)
        db = await Database.open(url)
        await db.migrate()
        await db.close()
        empty = _sqlite_bytes(base / "node.db") if backend == "sqlite" else 0
        started = time.perf_counter()
        await append(node, records, OLD)
        wrote = time.perf_counter() - started
        await witnessed(node)
        print(f"[{backend}] wrote {records} records in {wrote:.1f} s ({records / wrote:,.0f}/s)")
        if backend == "sqlite":
            grown = _sqlite_bytes(base / "node.db") - empty
            print(f"[{backend}] database file grew {grown / records:.0f} B/record")
        else:
            record_bytes, tree_bytes = await _pg_bytes(url)
            print(
                f"[{backend}] audit_record + indexes {record_bytes / records:.0f} B/record, "
                f"audit_subtree + audit_tree {tree_bytes / records:.1f} B/record"
            )
        out = base / f"archive-{backend}"
        started = time.perf_counter()
        sealed = await asyncio.to_thread(
            subprocess.run,
            [*GOVNODE, "audit", "archive", "--config", str(node.config), "--out", str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        seal_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in out.iterdir())
        print(
            f"[{backend}] archive: {sealed.stdout.strip()} in {seal_s:.1f} s; "
            f"{size / records:.0f} B/record on disk"
        )
    checked = await asyncio.to_thread(
        subprocess.run,
        [*GOVNODE, "audit", "verify-archive", str(out), "--root", str(node.root)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = checked.stdout.strip().splitlines()[-1]
    print(f"[{backend}] {line}")
    found = re.search(r"checked in ([\d.]+) s \(([\d.]+) s CPU in (\d+) processes\)", line)
    if found:
        wall, cpu = float(found[1]), float(found[2])
        print(
            f"[{backend}] verify-archive per million records: {wall / records * 1e6:.0f} s wall "
            f"on {found[3]} processes, {cpu / records * 1e6:.0f} s CPU"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=131_072)
    parser.add_argument("--segment", type=int, default=16_384)
    args = parser.parse_args()
    backends = ["sqlite"] + (["postgresql"] if postgres_url() else [])
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {args.records} records, segments of "
        f"{args.segment}"
    )
    with tempfile.TemporaryDirectory() as base:
        for backend in backends:
            asyncio.run(_run(backend, args.records, args.segment, Path(base)))


if __name__ == "__main__":
    main()
