"""A province catalog of many entries reaching a newly joined city (``python -m bench.scale
--parts catalog``): how long until the city's catalog has the province's digest.

The province (350000) and a city (福州, 350100, admitted by file as bench.federation does) are
provisioned; the province's catalog gets ``entries`` entries written in bulk while it is
stopped: the rows :meth:`node.catalog.Catalog.register` writes (the entry, its version 1 and
its change in the feed, numbered on from the feed's last sequence), 5,000 per transaction.
Each entry is the example 法人单位基础信息 under its own code, without its claim to be the
authoritative source of a standard element (one resource per element and region, 一数一源).
Then the province starts; once its start-up work is done (the supervision summary reads every
entry), the city starts for the first time: having applied nothing of the province's feed, it
takes the catalog as a snapshot (GetCatalogSnapshot) and then follows the feed. The clock runs
from the city's start until GetCatalogDigest answers the same digest on both (the city's entry
count is watched in its database first, cheaply, so the digest is asked only when it can
match).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from govnode.v1 import catalog_pb2, catalog_pb2_grpc
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bench import dataset
from bench.databases import backend_url
from bench.procs import Child, cpu_seconds
from bench.province import serve_node
from bench.scale_client import vm_hwm_mb
from gateway.channel import secure_channel
from gateway.identity import Role
from gateway.tls import TlsFiles
from node.catalog import ChangeKind, ResourceEntry, ResourceStatus, entry_to_json, store_entry_row
from node.codes import make_credit_code
from node.config import NodeConfig, load_config
from node.models import CatalogChangeRow, CatalogEntryRow, CatalogEntryVersionRow
from node.pki import admit_city, issue_client, prepare_city, provision_province
from node.ports import free_port
from node.storage import Database

PROVINCE, CITY, TRUST_DOMAIN = "350000", "350100", "fujian.gov.cn"
HOSTS = ["127.0.0.1", "localhost"]
BATCH = 5_000
#: How long the catalog may take to reach the city before the part gives up (and reports how
#: many entries the city holds by then), seconds.
REACH_TIMEOUT_S = 1800.0
POLL_S = 0.1
#: The province counts as settled below this share of a core for this many seconds in a row
#: (_settle).
SETTLED_CPU = 0.05
SETTLED_SECONDS = 5
SETTLE_TIMEOUT_S = 300.0


def _entry(template: ResourceEntry, i: int, at: dt.datetime) -> ResourceEntry:
    items = tuple(
        item.model_copy(update={"authoritative_source": False}) for item in template.items
    )
    return template.model_copy(
        update={
            "resource_code": f"{PROVINCE}-1-{100_000 + i:06d}",
            "name": f"{template.name}（规模测试{i:06d}）",
            "items": items,
            "region": PROVINCE,
            "version": 1,
            "status": ResourceStatus.ACTIVE,
            "created_at": at,
            "updated_at": at,
        }
    )


async def load_entries(db: Database, count: int, by: str) -> None:
    """Write ``count`` catalog entries at the province, as registered (the node stopped)."""
    if count > 899_999:
        raise ValueError("at most 899,999 entries: the codes have six digits")
    template = dataset.resource_entry()
    done = 0
    while done < count:
        n = min(BATCH, count - done)
        at = dt.datetime.now(dt.UTC)
        entries = [_entry(template, done + j, at) for j in range(n)]

        async def txn(
            session: AsyncSession, entries: list[ResourceEntry] = entries, at: Any = at
        ) -> None:
            last = (await session.exec(select(func.max(CatalogChangeRow.sequence)))).one()
            for seq, entry in enumerate(entries, start=(last or 0) + 1):
                body = entry_to_json(entry)
                store_entry_row(session, None, entry, body)
                session.add(
                    CatalogEntryVersionRow(
                        resource_code=entry.resource_code,
                        version=1,
                        body=body,
                        changed_by=by,
                        changed_at=at,
                    )
                )
                session.add(
                    CatalogChangeRow(
                        sequence=seq,
                        resource_code=entry.resource_code,
                        version=1,
                        kind=ChangeKind.REGISTERED.value,
                        origin_region=PROVINCE,
                        at=at,
                    )
                )

        await db.write("bench.scale_catalog", txn)
        done += n


def _agency(config_path: Path, out: Path, code: str, name: str) -> TlsFiles:
    _, paths = issue_client(
        load_config(config_path), role=Role.AGENCY, subject=code, name=name, out=out
    )
    return TlsFiles(paths["key"], paths["cert"], paths["ca"])


def _add_federation_lines(config_path: Path, lines: list[str]) -> None:
    text = config_path.read_text(encoding="utf-8")
    added = "".join(f"{line}\n" for line in lines)
    config_path.write_text(text.replace("[federation]\n", f"[federation]\n{added}", 1), "utf-8")


async def _digest(target: str, files: TlsFiles) -> catalog_pb2.GetCatalogDigestResponse:
    async with secure_channel(target, files, timeout=60.0) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        reply: catalog_pb2.GetCatalogDigestResponse = await stub.GetCatalogDigest(
            catalog_pb2.GetCatalogDigestRequest(), timeout=60.0
        )
        return reply


async def _count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(CatalogEntryRow))).one()[0]
        )


@contextlib.asynccontextmanager
async def _databases(backend: str, base: Path) -> AsyncIterator[tuple[str, str]]:
    async with (
        backend_url(backend, base / "province.db") as p,
        backend_url(backend, base / "city.db") as c,
    ):
        yield p, c


def _provision(base: Path) -> tuple[Any, NodeConfig, Path, NodeConfig, TlsFiles, TlsFiles]:
    """The province and the city, the city admitted by file; an agency of each (blocking)."""
    base.mkdir(parents=True, exist_ok=True)
    made = provision_province(
        base / "province", region=PROVINCE, name="福建省", listen=f"127.0.0.1:{free_port()}",
        trust_domain=TRUST_DOMAIN, hosts=HOSTS,
    )  # fmt: skip
    province = load_config(made.config_path)
    city_path = prepare_city(
        base / "city", region=CITY, name="福州市", listen=f"127.0.0.1:{free_port()}",
        trust_domain=TRUST_DOMAIN, hosts=HOSTS, province_region=PROVINCE,
        province_endpoint=province.node.listen,
    )  # fmt: skip
    city = load_config(city_path)
    admit_city(province, city)
    _add_federation_lines(
        made.config_path,
        [f'peers = {{ "{CITY}" = "{city.node.listen}" }}'],
    )
    p_agency = _agency(made.config_path, base / "agencies-p", dataset.CONSUMER_CODE, "福建省公安厅")
    c_agency = _agency(
        city_path, base / "agencies-c", make_credit_code("11350100003592001"), "福州市公安局"
    )
    return made, province, city_path, city, p_agency, c_agency


async def catalog_reaches_city(
    base: Path, entries: int, backend: str, say: Callable[[str], None]
) -> dict[str, Any]:
    made, province, city_path, city, p_agency, c_agency = _provision(base)
    async with _databases(backend, base) as (p_url, c_url):
        p_db = await Database.open(p_url)
        try:
            await p_db.migrate()
            t0 = time.perf_counter()
            await load_entries(p_db, entries, f"spiffe://{PROVINCE}.{TRUST_DOMAIN}/authority")
            say(f"  {entries:,} catalog entries written in {time.perf_counter() - t0:.1f} s")
        finally:
            await p_db.close()
        async with serve_node(
            "province", made.config_path, province.node.listen, p_agency, base,
            env={"GOVNODE_STORAGE__URL": p_url},
        ) as p_node:  # fmt: skip
            wanted = await _digest(province.node.listen, p_agency)
            settled = await _settle(p_node)
            say(f"  the province settled {settled:.1f} s after serving (its start-up work done)")
            return await _join(
                city_path, city.node.listen, c_agency, c_url, wanted, p_node, base, say
            )


async def _settle(node: Child) -> float:
    """Wait until ``node`` uses under SETTLED_CPU of a core for SETTLED_SECONDS seconds in a
    row (its start-up work done, which on PostgreSQL also waits on the server: the
    supervision summary of a province of 100,000 entries takes a while), so that what the
    join measures is the join; at most SETTLE_TIMEOUT_S. Returns the seconds waited."""
    began = time.monotonic()
    quiet = 0
    while quiet < SETTLED_SECONDS and time.monotonic() - began < SETTLE_TIMEOUT_S:
        before = cpu_seconds(node.process.pid)
        await asyncio.sleep(1.0)
        quiet = quiet + 1 if cpu_seconds(node.process.pid) - before < SETTLED_CPU else 0
    return time.monotonic() - began


async def _join(
    city_path: Path,
    target: str,
    agency: TlsFiles,
    url: str,
    wanted: catalog_pb2.GetCatalogDigestResponse,
    p_node: Child,
    base: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    p_cpu = cpu_seconds(p_node.process.pid)
    t0 = time.perf_counter()
    async with serve_node(
        "city", city_path, target, agency, base, env={"GOVNODE_STORAGE__URL": url}
    ) as c_node:
        serving = time.perf_counter() - t0
        db = await Database.open(url)
        try:
            deadline = time.monotonic() + REACH_TIMEOUT_S
            same = False
            held = 0
            while not same and time.monotonic() < deadline:
                held = await _count(db)
                if held >= wanted.entries:
                    same = (await _digest(target, agency)).digest == wanted.digest
                if not same:
                    await asyncio.sleep(POLL_S)
        finally:
            await db.close()
        reached = time.perf_counter() - t0
        figures = {
            "entries": wanted.entries,
            # Past the bound: how far the city got, so the rate is still measured.
            "same_digest": same,
            "entries_at_city": held,
            "same_digest_s" if same else "gave_up_after_s": round(reached, 3),
            "city_serving_s": round(serving, 3),
            "after_serving_s": round(reached - serving, 3),
            "entries_per_s_after_serving": round(held / max(reached - serving, 1e-9), 1),
            "city_cpu_s": round(cpu_seconds(c_node.process.pid), 3),
            "province_cpu_s": round(cpu_seconds(p_node.process.pid) - p_cpu, 3),
            "city_vmhwm_mb": round(vm_hwm_mb(c_node.process.pid), 1),
        }
    if not same:
        say(
            f"  NOT the same digest within {REACH_TIMEOUT_S:.0f} s: the city held "
            f"{held:,} of {wanted.entries:,} entries"
        )
        return figures
    say(
        f"  {figures['entries']:,} entries reached the city in {figures['same_digest_s']} s "
        f"from its start ({figures['after_serving_s']} s after SERVING)"
    )
    return figures
