"""Reading a stored open-data file (node.opendata._files) by chunk size, on SQLite and
PostgreSQL: which chunk size streams faster.

    python -m bench.opendata_file_chunks [--mb 64] [--backend sqlite|postgresql]

Writes a file of ``--mb`` MB of CSV-like text (rows of a few fields, so that PostgreSQL's TOAST
compression sees what it would see) with :class:`FileWriter` for each chunk size, then reads
it whole three times with :meth:`StoredFiles.read` (the download's read), and a 1 MB range from
its middle; prints MB/s and CPU s per MB (this process; the PostgreSQL server's CPU is not
included). A fresh database of its own (PostgreSQL: next to ``GOVNODE_TEST_POSTGRES_URL``).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

from bench.databases import fresh_postgres_database
from node.opendata import FileWriter, StoredFiles
from node.storage import Database

MB = 1_000_000
SIZES = (64 * 1024, 256 * 1024, 1024 * 1024)


def _text(size: int) -> bytes:
    rng = random.Random(7)
    rows = []
    total = 0
    while total < size:
        row = f"{rng.getrandbits(64):x},{rng.randint(1950, 2010)},3501{rng.randint(0, 99):02d},"
        row += "随访记录" * rng.randint(0, 4) + "\r\n"
        data = row.encode()
        rows.append(data)
        total += len(data)
    return b"".join(rows)[:size]


async def _measure(db: Database, data: bytes) -> None:
    files = StoredFiles(db)
    for number, chunk in enumerate(SIZES, start=1):
        writer = FileWriter(db, "BENCH", number, chunk_bytes=chunk)
        started = time.perf_counter()
        for at in range(0, len(data), 4096):
            writer.add("csv", data[at : at + 4096])
            if writer.full:
                await writer.flush()
        await writer.close()
        wrote = time.perf_counter() - started
        file = await files.find("BENCH", number, "csv")
        assert file is not None and file.size == len(data)
        best, cpu = float("inf"), 0.0
        for _ in range(3):
            wall, cpu0 = time.perf_counter(), time.process_time()
            got = 0
            async for piece in files.read(file, 0, file.size):
                got += len(piece)
            assert got == len(data)
            best = min(best, time.perf_counter() - wall)
            cpu += time.process_time() - cpu0
        middle = len(data) // 2
        wall = time.perf_counter()
        for _ in range(20):
            async for _piece in files.read(file, middle, middle + MB):
                pass
        ranged = (time.perf_counter() - wall) / 20
        print(
            f"chunk {chunk // 1024:>5} KiB: "
            f"write {len(data) / MB / wrote:7.1f} MB/s, read {len(data) / MB / best:7.1f} MB/s, "
            f"read CPU {cpu / 3 / (len(data) / MB):.4f} s/MB, a 1 MB range {ranged * 1000:.1f} ms",
            flush=True,
        )


async def run(backend: str, mb: int) -> None:
    data = _text(mb * MB)
    with tempfile.TemporaryDirectory() as base:
        if backend == "postgresql":
            async with fresh_postgres_database(os.environ["GOVNODE_TEST_POSTGRES_URL"]) as url:
                db = await Database.open(url)
                try:
                    await db.migrate()
                    await _measure(db, data)
                finally:
                    await db.close()
        else:
            db = await Database.open(f"sqlite+aiosqlite:///{Path(base) / 'node.db'}")
            try:
                await db.migrate()
                await _measure(db, data)
            finally:
                await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(run(args.backend, args.mb))


if __name__ == "__main__":
    main()
