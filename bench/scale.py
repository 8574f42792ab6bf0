"""Province scale (issue 17, item 5): the node with millions of records in one resource.

    python -m bench --scale [--records 10000000] [--backend sqlite|postgresql] [--parts ...]
    python -m bench.scale ...   (the same)

Not part of ``make bench``'s default run. On a fresh database (a SQLite file, or a PostgreSQL
database of its own next to the one GOVNODE_TEST_POSTGRES_URL names), a province node
(``govnode serve``, as an operator runs it) registers 法人单位基础信息; the bench then writes
the records itself in bulk while the node is stopped (bench.scale_data says how) and restarts
the node on them. Parts (``--parts``, comma separated; default all):

- ``verify``: Verify and Query by key at light load (4 in flight, bench.scale_client) with
  ``--light-records`` (100,000) and then with ``--records`` in the resource;
- ``compare``: Compare of ``--compare-size`` (10,000) records in one call, 3 calls;
- ``exchange``: a full Exchange snapshot of the resource (``--records`` of them) on a freshly
  started node: records/s and the peak memory (VmHWM) of the node and of the consumer;
- ``catalog``: ``--catalog-entries`` (100,000) catalog entries at the province reaching a city
  that joins afterwards, until both catalogs have the same digest (bench.scale_catalog);
- ``audit``: ``--records`` audit records appended through the node's audit log, then the
  time of a signed checkpoint, an inclusion proof, and ``govnode audit verify --offline``.

Each figure comes with wall and CPU seconds. Progress goes to stderr; the last line on stdout
is one JSON object with every figure. Prints figures; asserts only that the answers are right
(a Verify finds what was loaded, Compare matches, the snapshot is whole, the chain verifies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text

from bench import dataset
from bench.databases import backend_url
from bench.procs import Child, child, cpu_seconds, python_command
from bench.province import Province, provision, register_resource, serve_node
from bench.scale_client import vm_hwm_mb
from bench.scale_data import load_audit, load_records, provider_identity
from node.audit import AuditLog, Checkpoints, log_origin, log_signer, read_log_signer
from node.logging import configure_logging
from node.pki import load_certs, load_chain_pem, load_private_key
from node.storage import Database

T = TypeVar("T")

PARTS = ("verify", "compare", "exchange", "catalog", "audit")
#: Bounds of one client run and of ``govnode audit verify``, seconds.
CLIENT_SECONDS = 900.0
VERIFY_SECONDS = 3600.0

#: Issue 17's targets at province scale.
P99_TARGET_MS = 5.0
P99_GROWTH_TARGET = 2.0  # p99 at --records no worse than this times p99 at --light-records
COMPARE_TARGET_S = 1.0
CATALOG_TARGET_S = 5.0
NOT_MET = "not met (what limits it, measured: README, Province scale)"


def verdicts(figures: dict[str, Any]) -> list[str]:
    """Each target of the parts measured in ``figures`` (run's output), met or not."""
    lines: list[str] = []
    light: dict[str, Any] = figures.get("light", {})
    sizes = sorted(int(size) for size in light)
    for method in ("verify", "query") if sizes else ():
        p99 = {size: float(light[str(size)][method]["p99_ms"]) for size in sizes}
        big, small = p99[sizes[-1]], p99[sizes[0]]
        ok = big < P99_TARGET_MS
        lines.append(
            f"{method} p99 under {P99_TARGET_MS:g} ms at {sizes[-1]:,}: {big} ms, "
            f"{'met' if ok else NOT_MET}"
        )
        if len(sizes) > 1:
            growth = big / small if small else float("inf")
            ok = growth <= P99_GROWTH_TARGET
            lines.append(
                f"{method} p99 at {sizes[-1]:,} within {P99_GROWTH_TARGET:g}x of at "
                f"{sizes[0]:,}: {growth:.2f}x, {'met' if ok else NOT_MET}"
            )
    if "compare" in figures:
        best: dict[int, float] = {}
        for r in figures["compare"]["rounds"]:
            per = int(r["results_per_message"])
            best[per] = min(best.get(per, float("inf")), float(r["wall_s"]))
        for per, wall in sorted(best.items(), reverse=True):
            ok = wall < COMPARE_TARGET_S
            lines.append(
                f"compare of {figures['compare']['size']:,} under {COMPARE_TARGET_S:g} s, "
                f"{per} a message: {wall} s, {'met' if ok else NOT_MET}"
            )
    catalog = figures.get("catalog")
    if catalog is not None:
        took = catalog.get("same_digest_s")
        ok = took is not None and took < CATALOG_TARGET_S
        shown = f"{took} s" if took is not None else "never the same digest"
        lines.append(
            f"catalog of {catalog['entries']:,} to a new city under {CATALOG_TARGET_S:g} s: "
            f"{shown}, {'met' if ok else NOT_MET}"
        )
    return lines


def say(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def timed(what: Awaitable[T]) -> tuple[T, dict[str, float]]:
    """``what``'s result, with the wall and this process's CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = await what
    return result, {
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
    }


class Scale:
    """One run: the province's files, its database URL and the figures gathered so far."""

    def __init__(self, args: argparse.Namespace, base: Path, province: Province, url: str):
        self.args = args
        self.base = base
        self.province = province
        self.url = url
        self.env = {"GOVNODE_STORAGE__URL": url}
        self.loaded = 0
        self.figures: dict[str, Any] = {"records": args.records, "backend": args.backend}

    @contextlib.asynccontextmanager
    async def node(self) -> AsyncIterator[Child]:
        p = self.province
        async with serve_node(
            "govnode", p.config_path, p.target, p.consumer, self.base, env=self.env
        ) as node:
            yield node

    async def load_to(self, db: Database, count: int) -> None:
        """Records 0 .. count-1 in the resource (the node stopped)."""
        if count <= self.loaded:
            return
        step = max(count // 10, 1)

        def progress(done: int, total: int) -> None:
            if done % step < 10_000 or done == total:
                say(f"  records {self.loaded + done:,} of {count:,}")

        by = provider_identity("350000", self.province.config.node.trust_domain).uri
        _, took = await timed(
            load_records(
                db,
                dataset.resource_entry(),
                by,
                self.loaded,
                count - self.loaded,
                progress=progress,
            )
        )
        analyse = await self.analyse(db)
        rate = (count - self.loaded) / took["wall_s"] if took["wall_s"] else 0.0
        self.figures.setdefault("load", []).append(
            {"to": count, **took, "records_per_s": round(rate), "analyze_s": analyse}
        )
        say(f"loaded to {count:,} records at {rate:,.0f} records/s")
        self.loaded = count

    async def analyse(self, db: Database) -> float | None:
        """PostgreSQL: ANALYZE after a bulk load (autovacuum may be off; the node's queries
        are planned on statistics). SQLite needs nothing."""
        if not self.url.startswith("postgresql"):
            return None
        t0 = time.perf_counter()
        async with db.engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.commit()
        return round(time.perf_counter() - t0, 3)

    async def client(self, node: Child, part: str, *extra: str) -> dict[str, Any]:
        files = self.province.consumer
        command = python_command(
            "-m", "bench.scale_client", "--part", part, "--target", self.province.target,
            "--key", str(files.key), "--cert", str(files.chain), "--root", str(files.root),
            "--server-pid", str(node.process.pid), "--records", str(self.loaded),
            "--seconds", str(CLIENT_SECONDS), *extra,
        )  # fmt: skip
        async with child(f"client-{part}", command, logs=self.base) as run:
            line = await run.read_line(within=CLIENT_SECONDS + 120.0)
        result: dict[str, Any] = json.loads(line)
        return result

    async def light(self, node: Child) -> None:
        a = self.args
        figures = await self.client(node, "light", "--calls", str(a.calls))
        self.figures.setdefault("light", {})[str(self.loaded)] = figures
        for method in ("verify", "query"):
            f = figures[method]
            say(
                f"  {method} at {self.loaded:,}: p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, "
                f"{f['calls']} calls, server {f['server_cpu_ms_per_call']} CPU ms/call"
            )

    async def part_verify(self, db: Database) -> None:
        sizes = sorted({min(self.args.light_records, self.args.records), self.args.records})
        for size in sizes:
            await self.load_to(db, size)
            async with self.node() as node:
                await self.light(node)

    async def part_compare(self, db: Database) -> None:
        await self.load_to(db, self.args.records)
        async with self.node() as node:
            figures = await self.client(
                node, "compare", "--compare-size", str(self.args.compare_size)
            )
        self.figures["compare"] = figures
        for r in figures["rounds"]:
            say(
                f"  compare {figures['size']:,}, {r['results_per_message']} a message: "
                f"{r['wall_s']} s (server {r['server_cpu_s']} CPU s), {r['all_match']} matched"
            )

    async def part_exchange(self, db: Database) -> None:
        await self.load_to(db, self.args.records)
        async with self.node() as node:
            figures = await self.client(node, "exchange")
        self.figures["exchange"] = figures
        say(
            f"  exchange {figures['records']:,} records: {figures['records_per_s']:,.0f}/s; "
            f"peak memory node {figures['server_vmhwm_mb']} MB, "
            f"consumer {figures['client_vmhwm_mb']} MB"
        )

    async def part_catalog(self, db: Database) -> None:
        from bench.scale_catalog import catalog_reaches_city

        self.figures["catalog"] = await catalog_reaches_city(
            self.base / "catalog", self.args.catalog_entries, self.args.backend, say
        )

    async def part_audit(self, db: Database) -> None:
        a = self.args
        caller = provider_identity("350000", self.province.config.node.trust_domain).uri
        step = max(a.records // 10, 1)

        def progress(done: int, total: int) -> None:
            if done % step < 10_000 or done == total:
                say(f"  audit records {done:,} of {total:,}")

        appended, took = await timed(load_audit(db, caller, a.records, progress=progress))
        figures: dict[str, Any] = {"appended": appended, "append": took}
        figures["analyze_s"] = await self.analyse(db)
        audit = AuditLog(db)
        cfg = self.province.config
        root = load_certs(cfg.path(cfg.tls.root))[0]
        chain = load_chain_pem(cfg.path(cfg.tls.cert), root)
        identity, _ = read_log_signer(chain, root, cfg.node.trust_domain)
        checkpoints = Checkpoints(
            db,
            audit,
            log_origin(identity.host),
            log_signer(identity.host, load_private_key(cfg.path(cfg.tls.key))),
        )
        made, figures["checkpoint"] = await timed(checkpoints.make())
        size = made.size if made is not None else (await audit.head())[0]
        figures["size"] = size
        middle = max(size // 2, 1)
        proof, figures["inclusion_proof"] = await timed(audit.inclusion_proof(middle, size))
        figures["inclusion_proof"]["hashes"] = len(proof[1])
        figures["verify"] = await self.audit_verify()
        self.figures["audit"] = figures
        say(
            f"  audit at {size:,}: checkpoint {figures['checkpoint']['wall_s']} s, inclusion "
            f"proof {figures['inclusion_proof']['wall_s']} s, audit verify "
            f"{figures['verify']['wall_s']} s ({figures['verify']['said']})"
        )

    async def audit_verify(self) -> dict[str, Any]:
        command = python_command(
            "-c", "from node.cli import main; main()", "audit", "verify", "--offline",
            "--config", str(self.province.config_path),
        )  # fmt: skip
        t0 = time.perf_counter()
        async with child("audit-verify", command, logs=self.base, env=self.env) as run:
            line = await run.read_line(within=VERIFY_SECONDS)
            cpu = cpu_seconds(run.process.pid)
            peak = vm_hwm_mb(run.process.pid)
            await asyncio.wait_for(run.process.wait(), VERIFY_SECONDS)
        if not line.startswith("audit chain intact"):
            raise RuntimeError(f"govnode audit verify said: {line[:200]}")
        return {
            "wall_s": round(time.perf_counter() - t0, 3),
            "cpu_s_at_answer": round(cpu, 3),
            "vmhwm_mb": round(peak, 1),
            "said": line[:120],
        }


PART_RUNNERS: dict[str, Callable[[Scale, Database], Awaitable[None]]] = {
    "verify": Scale.part_verify,
    "compare": Scale.part_compare,
    "exchange": Scale.part_exchange,
    "catalog": Scale.part_catalog,
    "audit": Scale.part_audit,
}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging(level="warning", fmt="console")
    with tempfile.TemporaryDirectory(prefix="govnode-scale-", dir=args.tmp) as tmp:
        base = Path(tmp)
        province = provision(base / "province")
        async with backend_url(args.backend, base / "scale.db") as url:
            scale = Scale(args, base, province, url)
            async with scale.node():
                await register_resource(province)
            db = await Database.open(url)
            started = time.perf_counter()
            try:
                for name in args.parts:
                    say(f"part {name}")
                    await PART_RUNNERS[name](scale, db)
            finally:
                await db.close()
            scale.figures["seconds"] = round(time.perf_counter() - started, 1)
            if lines := verdicts(scale.figures):
                say("targets:")
                for line in lines:
                    say(f"  {line}")
            return scale.figures


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench --scale", description=__doc__)
    p.add_argument("--records", type=int, default=10_000_000, help="records in the resource")
    p.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma separated, of: {', '.join(PARTS)}"
    )
    p.add_argument("--light-records", type=int, default=100_000, help="the smaller size")
    p.add_argument("--calls", type=int, default=2000, help="measured calls per method")
    p.add_argument("--compare-size", type=int, default=10_000, help="records in one Compare")
    p.add_argument("--catalog-entries", type=int, default=100_000)
    p.add_argument("--tmp", type=Path, default=None, help="where the temporary files go")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        p.error(
            f"--parts: {', '.join(unknown[:3]) or 'none given'}; choose from {', '.join(PARTS)}"
        )
    args.parts = [part for part in PARTS if part in parts]  # always in the same order
    for name in ("records", "light_records", "calls", "compare_size", "catalog_entries"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.compare_size > 10_000:
        p.error("--compare-size: at most 10,000 (Compare's own limit)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        figures = asyncio.run(run(args))
    except KeyboardInterrupt:
        say("interrupted; processes stopped and temporary files removed")
        return 130
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
