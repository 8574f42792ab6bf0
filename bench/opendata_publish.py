"""How long publishing a resource to the open catalog takes (第二十九条), with its de-identification
and k-anonymity check, per phase, and what a published row costs on disk.

    python -m bench.opendata_publish [--records 1000000] [--backend sqlite|postgresql]

Builds a fresh database (a SQLite file, or a PostgreSQL database of its own next to the one
GOVNODE_TEST_POSTGRES_URL names), registers a 授权开放 entry of health follow-up records whose
items carry open treatments (a pseudonymised key, a birth date generalised to its year and a
district code to its city as the quasi-identifiers, a free-text note as stored, a level-3
citizen ID that never opens), and submits the records through ``Records.submit`` in batches of
10,000, as a provider would. Then it times ``OpenData.publish`` end to end and, in the same
run, its phases:

- build: reading the records in pages, treating, scanning and writing the rows; split into
  the page reads, the row writes and the Python in between (treat, scan, class key);
- k-anonymity: the SQL over ``class_key`` (count the small classes, delete them, measure);
- the rest: claiming the version and flipping it to published.

The baseline, measured twice in the same run (before and after publishing, best kept), is
reading every record of the resource in the same pages with the same statement and nothing
else. CPU is this process's (``time.process_time``: the event loop and, on SQLite, the
database's threads); PostgreSQL's own CPU is in its server processes, read from ``/proc`` for
the backends of the run's database when the server runs on this machine.

The last line is one JSON object with every figure. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import make_url, text
from sqlalchemy import select as sa_select
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.databases import backend_url
from gateway.identity import Identity, Role
from node.catalog import (
    Catalog,
    Classification,
    DataItem,
    DataType,
    Generalization,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
    ShareMethod,
    ShareType,
    UpdateCycle,
)
from node.codes import make_citizen_id, make_credit_code
from node.logging import configure_logging
from node.models import RecordRow
from node.opendata import (
    FileDigest,
    OpenData,
    PublicationRefused,
    Report,
    Treater,
    Variant,
    open_data_gate,
)
from node.records import Records, SubmitBatch
from node.storage import Database

T = TypeVar("T")

REGION = "350000"  # the province: it may always open data (第三十一条)
TRUST_DOMAIN = "fujian.gov.cn"
PROVIDER = make_credit_code(f"11{REGION}MB0000014")
CODE = f"{REGION}-3-000014"
BY = f"spiffe://{REGION}.{TRUST_DOMAIN}/authority"
MIN_K = 5
MAX_SUPPRESSED = 0.05
SUBMIT_BATCH = 10_000
#: As node.opendata._publish reads the records: pages of this many, by record key.
PAGE = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Districts (GB/T 2260) of Fujian's nine cities; the open data keeps the city (4 digits).
DISTRICTS = (
    ("350102", "350103", "350104", "350105", "350111", "350121", "350181"),  # 福州
    ("350203", "350205", "350206", "350211", "350212", "350213"),  # 厦门
    ("350302", "350303", "350304", "350305", "350322"),  # 莆田
    ("350404", "350405", "350421", "350423", "350481"),  # 三明
    ("350502", "350503", "350504", "350521", "350581", "350582"),  # 泉州
    ("350602", "350603", "350622", "350623", "350681"),  # 漳州
    ("350702", "350703", "350721", "350722", "350781"),  # 南平
    ("350802", "350803", "350821", "350823", "350881"),  # 龙岩
    ("350902", "350921", "350922", "350981", "350982"),  # 宁德
)
NOTES = (
    "血压控制良好，继续当前用药",
    "空腹血糖偏高，建议复查并调整饮食",
    "行动不便，已安排家庭医生上门随访",
    "本次随访未见异常",
    "家属陪同就诊，已完成健康宣教",
    "",
)


def entry() -> ResourceEntry:
    """A 授权开放 entry of 老年人健康随访记录 with every item's open treatment declared."""
    kind = OpenTreatmentKind
    items = (
        DataItem(
            name="sfbh",
            title="随访编号",
            data_type=DataType.STRING,
            key=True,
            required=True,
            sensitivity_level=2,
            open=OpenTreatment(kind=kind.PSEUDONYMIZE),
        ),
        DataItem(
            name="csrq",
            title="出生日期",
            data_type=DataType.DATE,
            sensitivity_level=2,
            open=OpenTreatment(kind=kind.GENERALIZE, generalize=Generalization.YEAR),
            quasi_identifier=True,
        ),
        DataItem(
            name="xzqh",
            title="现住址行政区划代码",
            data_type=DataType.STRING,
            sensitivity_level=1,
            open=OpenTreatment(
                kind=kind.GENERALIZE, generalize=Generalization.PREFIX, prefix_length=4
            ),
            quasi_identifier=True,
        ),
        DataItem(
            name="sfqk",
            title="随访情况",
            data_type=DataType.STRING,
            sensitivity_level=1,
            open=OpenTreatment(kind=kind.AS_STORED),
        ),
        # Level 3: never opens (第三十七条), whatever is stored.
        DataItem(
            name="sfzhm", title="公民身份号码", data_type=DataType.STRING, sensitivity_level=3
        ),
    )
    return ResourceEntry(
        resource_code=CODE,
        name="老年人健康随访记录",
        provider_name="福建省卫生健康委员会",
        provider_code=PROVIDER,
        classification=Classification.DEPARTMENTAL,
        industry_category="卫生健康",
        summary="65岁以上老年人健康随访记录，供科研机构授权使用",
        format="table",
        items=items,
        share_type=ShareType.CONDITIONAL,
        share_conditions="用于卫生健康管理",
        share_methods=(ShareMethod.QUERY,),
        open_type=OpenType.AUTHORIZED,  # its level-3 item allows no more (第三十七条)
        update_cycle=UpdateCycle.MONTHLY,
        publish_date="2026-01-15",
    )


def records(first: int, count: int, rng: random.Random) -> Iterator[dict[str, str]]:
    """Follow-up records ``first`` .. ``first + count - 1``: born 1930-2005 all over the
    province (about 680 classes of year x city); one in 2,000 born 1900-1929, whose classes
    are mostly smaller than k and are left out."""
    for i in range(first, first + count):
        city = DISTRICTS[rng.randrange(len(DISTRICTS))]
        district = city[rng.randrange(len(city))]
        year = 1900 + rng.randrange(30) if i % 2000 == 1999 else 1930 + rng.randrange(76)
        born = f"{year}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        yield {
            "sfbh": f"SF{district}{i:010d}",
            "csrq": f"{born[:4]}-{born[4:6]}-{born[6:]}",
            "xzqh": district,
            "sfqk": NOTES[rng.randrange(len(NOTES))],
            "sfzhm": make_citizen_id(f"{district}{born}{rng.randrange(1000):03d}"),
        }


# --- timing ----------------------------------------------------------------------------------


@dataclass
class Span:
    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    pg_cpu: float | None = None

    def add(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu
        self.calls += 1


@dataclass
class Clock:
    """Wall and process CPU time per named span; PostgreSQL backends' CPU where readable."""

    pg_database: str | None = None
    spans: dict[str, Span] = field(default_factory=dict)
    #: The spans under way, outermost first (what was running when a run is cut short).
    running: list[str] = field(default_factory=list)

    def pg_cpu(self) -> float | None:
        return _pg_backends_cpu(self.pg_database) if self.pg_database else None

    async def time(self, name: str, work: Awaitable[T]) -> T:
        wall, cpu, pg = time.perf_counter(), time.process_time(), self.pg_cpu()
        self.running.append(name)
        try:
            return await work
        finally:
            self.running.remove(name)
            span = self.spans.setdefault(name, Span())
            span.add(time.perf_counter() - wall, time.process_time() - cpu)
            if pg is not None and (pg_after := self.pg_cpu()) is not None:
                span.pg_cpu = (span.pg_cpu or 0.0) + pg_after - pg

    def span(self, name: str) -> Span:
        return self.spans.get(name, Span())


def _pg_backends_cpu(database: str) -> float | None:
    """User + system CPU seconds of the server processes connected to ``database`` now (same
    machine only; parallel workers and backends that have exited are not counted)."""
    total, found = 0, False
    needle = f" {database} ".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            if not cmdline.startswith(b"postgres:") or needle not in cmdline:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        found = True
    return total / CLK_TCK if found else None


class TimedDatabase(Database):
    """The node's Database, timing each named transaction and point read it runs."""

    clock: Clock | None = None

    async def write(self, name: str, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self.clock is None:
            return await super().write(name, fn)
        return await self.clock.time(f"db.{name}", super().write(name, fn))

    async def read(self, name: str, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self.clock is None:
            return await super().read(name, fn)
        return await self.clock.time(f"db.{name}", super().read(name, fn))

    async def fetch_one(self, sql: str, params: Any) -> Sequence[Any] | None:
        if self.clock is None:
            return await super().fetch_one(sql, params)
        name = "k.small_classes" if "HAVING" in sql else "k.measure"
        name = name if "open_row" in sql else "db.point_read"
        return await self.clock.time(name, super().fetch_one(sql, params))


class TimedOpenData(OpenData):
    """OpenData with its steps timed: the node's code, only wrapped."""

    clock: Clock
    #: Run ANALYZE open_row before the k-anonymity SQL (PostgreSQL; the node does not).
    analyze: bool = False

    async def _start(self, entry: ResourceEntry, by: str, made_at: dt.datetime) -> int:
        return await self.clock.time("start", super()._start(entry, by, made_at))

    async def _build(self, code: str, version: int, treater: Treater) -> tuple[int, str]:
        return await self.clock.time("build", super()._build(code, version, treater))

    async def _check_k(self, report: Report, treater: Treater) -> Report:
        if self.analyze:
            await self.clock.time("analyze", self._analyze())
        return await self.clock.time("k", super()._check_k(report, treater))

    async def _analyze(self) -> None:
        async with self._db.engine.connect() as connection:
            await connection.execute(text("ANALYZE open_row"))
            await connection.commit()

    async def _file_digests(
        self, code: str, version: int, columns: Sequence[str]
    ) -> dict[Variant, FileDigest]:
        return await self.clock.time("digests", super()._file_digests(code, version, columns))

    async def _serve(
        self,
        report: Report,
        by: str,
        at: dt.datetime,
        files: tuple[Sequence[str], dict[Variant, FileDigest]],
    ) -> Report:
        return await self.clock.time("serve", super()._serve(report, by, at, files))


# --- the run ---------------------------------------------------------------------------------


async def load(
    db: Database, count: int, resource: ResourceEntry | None = None
) -> tuple[float, float]:
    """Register the entry (``resource``, by default :func:`entry`) and submit ``count``
    records, each with the values of its items only; (wall s, CPU s) of the submits."""
    catalog = Catalog(db, node_region=REGION)
    provider = Identity(REGION, TRUST_DOMAIN, Role.AGENCY, PROVIDER)
    registered = await catalog.register(provider, resource or entry())
    names = {item.name for item in registered.items}
    store = Records(db, REGION)
    rng = random.Random(14)
    wall = cpu = 0.0
    for first in range(0, count, SUBMIT_BATCH):
        made = records(first, min(SUBMIT_BATCH, count - first), rng)
        batch = SubmitBatch(
            batch_id=f"bench-{first}",
            records=tuple(
                made if resource is None else ({k: r[k] for k in r if k in names} for r in made)
            ),
        )
        started, started_cpu = time.perf_counter(), time.process_time()
        outcome = await store.submit(provider, registered, batch)
        wall += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        if outcome.rejections or outcome.accepted != len(batch.records):
            raise RuntimeError(f"batch {batch.batch_id}: {outcome.rejections[:3]}")
        done = first + len(batch.records)
        if done % 100_000 == 0 or done == count:
            _progress(f"submitted {done:,} of {count:,} records")
    return wall, cpu


async def select_all(db: Database) -> int:
    """Every current record of the resource, in the pages publishing reads them in."""
    r = RecordRow.__table__  # type: ignore[attr-defined]
    after, read = "", 0
    while True:

        async def page(session: AsyncSession, after: str = after) -> list[Any]:
            statement = (
                sa_select(r.c.record_key, r.c.item_values)
                .where(r.c.resource_code == CODE, r.c.deleted.is_(False), r.c.record_key > after)
                .order_by(r.c.record_key)
                .limit(PAGE)
            )
            return list((await (await session.connection()).execute(statement)).all())

        rows = await db.read("bench.select", page)
        if not rows:
            return read
        read += len(rows)
        after = rows[-1][0]


def _sqlite_bytes(path: Path) -> int:
    """The database file's size once its WAL is checkpointed into it."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def _sqlite_open_row_bytes(path: Path, table: str = "open_row") -> int | None:
    """Bytes of ``table`` and its indexes (the dbstat table, when SQLite has it)."""
    try:
        with sqlite3.connect(path) as connection:
            row = connection.execute(
                "SELECT SUM(pgsize) FROM dbstat WHERE tbl_name = :table", {"table": table}
            ).fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row and row[0] is not None else None


async def _pg_open_row_bytes(db: Database, table: str = "open_row") -> int:
    async with db.engine.connect() as connection:
        size = (
            await connection.execute(
                text("SELECT pg_total_relation_size(:table)"), {"table": table}
            )
        ).one()
    return int(size[0])


async def _cancel_statements(db: Database) -> None:
    """Stop what the run's other PostgreSQL connections are still executing."""
    async with db.engine.connect() as connection:
        await connection.execute(
            text(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND state = 'active'"
            )
        )


async def run(
    backend: str, count: int, base: Path, *, publish_within: float, analyze: bool
) -> dict[str, Any]:
    sqlite_file = base / "node.db"
    async with backend_url(backend, sqlite_file) as url:
        db = await TimedDatabase.open(url)
        assert isinstance(db, TimedDatabase)
        try:
            await db.migrate()
            load_wall, load_cpu = await load(db, count)
            _progress(f"loaded {count:,} records in {load_wall:.1f} s")
            if backend == "postgresql":
                # As autovacuum would have by the time anyone publishes the data.
                async with db.engine.connect() as connection:
                    await connection.execute(text("ANALYZE"))
            clock = Clock(pg_database=make_url(url).database if backend == "postgresql" else None)
            db.clock = clock
            before = _sqlite_bytes(sqlite_file) if backend == "sqlite" else 0
            _progress("baseline: reading every record in pages")
            await clock.time("select.1", select_all(db))
            opendata = TimedOpenData(
                db,
                Catalog(db, node_region=REGION),
                node_region=REGION,
                min_k=MIN_K,
                max_suppressed=MAX_SUPPRESSED,
                may_open=open_data_gate(db, province=True),
            )
            opendata.clock = clock
            opendata.analyze = analyze
            _progress("publishing")
            report: Report | None = None
            cut_short = ""
            task = asyncio.create_task(clock.time("publish", opendata.publish(CODE, BY)))
            done, _ = await asyncio.wait({task}, timeout=publish_within)
            if done:
                try:
                    report = task.result()
                except PublicationRefused as refused:
                    # Too few records for k over ~700 classes: the check's time still counts.
                    report, cut_short = refused.report, f"refused: {refused.report.reason}"
            else:
                cut_short = " > ".join(clock.running)
                _progress(f"publishing did not finish within {publish_within:g} s (in {cut_short})")
                task.cancel()
                if backend == "postgresql":
                    await _cancel_statements(db)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            _progress("baseline again")
            await clock.time("select.2", select_all(db))
            if backend == "sqlite":
                grown: int | None = _sqlite_bytes(sqlite_file) - before
                open_row_bytes = _sqlite_open_row_bytes(sqlite_file)
                file_bytes = _sqlite_open_row_bytes(sqlite_file, "open_file_chunk")
            else:
                grown = None
                open_row_bytes = await _pg_open_row_bytes(db)
                file_bytes = await _pg_open_row_bytes(db, "open_file_chunk")
        finally:
            await db.close()
    data = figures(backend, count, load_wall, load_cpu, clock, report, grown, open_row_bytes)
    published = data["rows_published"]
    return data | {
        "analyze_before_k": analyze,
        "cut_short": cut_short,
        "timeout_s": publish_within,
        "file_chunk_bytes_per_row": round(file_bytes / published)
        if file_bytes and published
        else None,
    }


def figures(
    backend: str,
    count: int,
    load_wall: float,
    load_cpu: float,
    clock: Clock,
    report: Report | None,
    grown: int | None,
    open_row_bytes: int | None,
) -> dict[str, Any]:
    s = clock.span
    select = min((s("select.1"), s("select.2")), key=lambda span: span.wall)
    publish, build, k = s("publish"), s("build"), s("k")
    reads, writes = s("db.opendata.records"), s("db.opendata.rows")
    python = Span(
        build.wall - reads.wall - writes.wall, build.cpu - reads.cpu - writes.cpu, build.calls
    )
    analyze = s("analyze")
    digests = s("digests")
    rest = Span(
        publish.wall - build.wall - analyze.wall - k.wall - digests.wall,
        publish.cpu - build.cpu - analyze.cpu - k.cpu - digests.cpu,
    )
    phases = {
        "publish": publish,
        "build": build,
        "build.read_pages": reads,
        "build.treat_scan_key": python,
        "build.write_rows": writes,
        "analyze": s("analyze"),
        "k": k,
        "k.small_classes": s("k.small_classes"),
        "k.suppress": s("db.opendata.suppress"),
        "k.measure": s("k.measure"),
        "digests": digests,
        "start_and_serve": rest,
        "select_baseline": select,
    }
    published = report.rows_published if report else 0
    # A publication cut short has no rate of its own.
    done = publish.wall if report else 0.0
    return {
        "backend": backend,
        "records": count,
        "rows_published": published,
        "rows_suppressed": report.rows_suppressed if report else None,
        "classes": report.classes if report else None,
        "k_reached": report.k_reached if report else None,
        "load_s": round(load_wall, 2),
        "load_cpu_s": round(load_cpu, 2),
        "load_records_per_s": round(count / load_wall),
        "phases": {
            name: {
                "wall_s": round(span.wall, 3),
                "cpu_s": round(span.cpu, 3),
                **({"pg_cpu_s": round(span.pg_cpu, 3)} if span.pg_cpu is not None else {}),
            }
            for name, span in phases.items()
        },
        "publish_rows_per_s": round(count / done) if done else None,
        "select_rows_per_s": round(count / select.wall) if select.wall else None,
        "publish_over_select": round(done / select.wall, 2) if select.wall and done else None,
        "build_over_select": round(build.wall / select.wall, 2) if select.wall else None,
        "k_over_select": round(k.wall / select.wall, 3) if select.wall else None,
        "file_growth_bytes_per_row": round(grown / published) if grown and published else None,
        "open_row_bytes_per_row": (
            round(open_row_bytes / published) if open_row_bytes and published else None
        ),
    }


def describe(data: dict[str, Any]) -> str:
    p = data["phases"]
    lines = [
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {data['backend']}, "
        f"{os.cpu_count()} CPUs: {data['records']:,} records submitted in {data['load_s']:.1f} s "
        f"({data['load_records_per_s']:,}/s through Records.submit, batches of {SUBMIT_BATCH:,})",
        (
            f"publication {data['cut_short']}"
            if data["cut_short"].startswith("refused")
            else f"publishing CUT SHORT after {data['timeout_s']:g} s, in {data['cut_short']}: "
            "the figures below are up to that point"
            if data["cut_short"]
            else f"published {data['rows_published']:,} rows ({data['rows_suppressed']:,} "
            f"left out), {data['classes']:,} classes, k reached {data['k_reached']} "
            f"(min_k {MIN_K})"
        ),
        "",
        f"{'phase':<34} {'wall s':>9} {'CPU s':>9} {'server CPU s':>13}",
    ]
    labels = {
        "publish": "OpenData.publish, end to end",
        "build": "  build: read, treat, scan, write",
        "build.read_pages": "    reading record pages",
        "build.treat_scan_key": "    treat + scan + class key",
        "build.write_rows": "    writing open_row",
        "analyze": "  ANALYZE open_row (bench only)",
        "k": "  k-anonymity SQL",
        "k.small_classes": "    count small classes",
        "k.suppress": "    delete them (suppression)",
        "k.measure": "    measure k, classes, rows",
        "digests": "  file digests + stored files (csv, jsonl)",
        "start_and_serve": "  claim version + serve",
        "select_baseline": "baseline: SELECT all, same pages",
    }
    for name, label in labels.items():
        phase = p[name]
        if name == "analyze" and not data["analyze_before_k"]:
            continue
        server = f"{phase['pg_cpu_s']:.2f}" if "pg_cpu_s" in phase else "-"
        lines.append(f"{label:<34} {phase['wall_s']:>9.2f} {phase['cpu_s']:>9.2f} {server:>13}")
    lines += [
        "",
        f"publish {_num(data['publish_rows_per_s'])} records/s; SELECT "
        f"{_num(data['select_rows_per_s'])}"
        f" records/s; publish / SELECT time {data['publish_over_select']}, build / SELECT "
        f"{data['build_over_select']}, k-anonymity SQL / SELECT {data['k_over_select']}",
    ]
    disk = []
    if data["file_growth_bytes_per_row"] is not None:
        disk.append(f"SQLite file grew {data['file_growth_bytes_per_row']} B per published row")
    if data["open_row_bytes_per_row"] is not None:
        what = "pg_total_relation_size" if data["backend"] == "postgresql" else "dbstat"
        disk.append(f"open_row + indexes {data['open_row_bytes_per_row']} B/row ({what})")
    if data.get("file_chunk_bytes_per_row") is not None:
        disk.append(f"stored files (open_file_chunk) {data['file_chunk_bytes_per_row']} B/row")
    lines.append("; ".join(disk) or "on-disk size not measured")
    if data["backend"] == "postgresql":
        lines.append(
            "CPU s is this process's; server CPU s is PostgreSQL's backends for the run's "
            "database, from /proc (parallel workers not counted)"
        )
    else:
        lines.append("CPU s is this process's, SQLite's threads included")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _progress(message: str) -> None:
    print(f"[opendata-publish] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records",
        type=int,
        default=1_000_000,
        help="records to publish (default 1,000,000; below about 20,000 the ~700 classes are "
        "too small and the publication is refused, which is reported)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds publishing may take before it is cut short (default 600)",
    )
    parser.add_argument(
        "--analyze-before-k",
        action="store_true",
        help="run ANALYZE open_row before the k-anonymity SQL, which the node does not do "
        "(PostgreSQL: without statistics on the new rows the suppression DELETE is quadratic)",
    )
    args = parser.parse_args(argv)
    if args.records < 1:
        raise SystemExit("--records must be at least 1")
    configure_logging("console", "warning")
    with tempfile.TemporaryDirectory(prefix="govnode-bench-publish-") as base:
        data = asyncio.run(
            run(
                args.backend,
                args.records,
                Path(base),
                publish_within=args.timeout,
                analyze=args.analyze_before_k,
            )
        )
    print(describe(data))
    print(json.dumps(data, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
