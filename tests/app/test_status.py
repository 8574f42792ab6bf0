"""`govnode status`: a node, its peers, their health and catalog versions, run as an operator
runs it (a subprocess) against real nodes on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from govnode.v1 import catalog_pb2, catalog_pb2_grpc

from node.servicers.convert import entry_to_proto
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code, make_entry
from tests.support.federation import fast
from tests.support.nodes import GOVNODE, channel, make_city, make_province, start

PROVINCE, FUZHOU, XIAMEN = "350000", "350100", "350200"


async def govnode(*args: str | Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *GOVNODE,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def row_of(output: str, region: str) -> str:
    rows = [line for line in output.splitlines() if line.startswith(region + " ")]
    assert len(rows) == 1, output
    return rows[0]


async def test_status_shows_peers_health_and_catalog_versions(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    province = fast(make_province(tmp_path / "province", await db_urls()))
    fuzhou = fast(make_city(tmp_path / "fuzhou", await db_urls(), province, FUZHOU, "福州市"))
    xiamen = fast(make_city(tmp_path / "xiamen", await db_urls(), province, XIAMEN, "厦门市"))
    nodes = {s.config.node.region: await start(s) for s in (province, fuzhou, xiamen)}
    try:
        code = f"{FUZHOU}-3-000001"
        entry = make_entry(1, agency_code(1, FUZHOU), resource_code=code, provider_name="单位")
        async with channel(nodes[FUZHOU], fuzhou.agency(agency_code(1, FUZHOU))) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
            )
        began = time.monotonic()
        while True:  # the province has applied Fuzhou's change and heard from both cities
            rows = await nodes[PROVINCE].db.fetch_all(
                "SELECT peer_region, last_applied_sequence FROM feed_cursor", {}
            )
            seen = await nodes[PROVINCE].db.fetch_all(
                "SELECT key FROM node_meta WHERE key LIKE 'peer_info.%'", {}
            )
            if (FUZHOU, 1) in [tuple(r) for r in rows] and len(seen) == 2:
                break
            assert time.monotonic() - began < 10, (rows, seen)
            await asyncio.sleep(0.1)

        rc, out, err = await govnode("status", "--config", province.config_path)
        assert rc == 0, err
        assert "350000 福建省 (province)" in out
        fz, xm = row_of(out, FUZHOU), row_of(out, XIAMEN)
        assert "福州市" in fz and "HEALTHY" in fz and " CST" in fz
        assert fz.split()[fz.split().index("CST") + 1] == "1"  # Fuzhou's feed applied to 1
        assert "厦门市" in xm and "HEALTHY" in xm
        assert xm.split()[xm.split().index("CST") + 1] == "0"

        rc, out, err = await govnode("status", "--config", fuzhou.config_path)
        assert rc == 0, err
        assert "350100 福州市 (city)" in out
        pv = row_of(out, PROVINCE)
        assert "HEALTHY" in pv and province.config.node.listen in pv

        await nodes.pop(XIAMEN).stop(grace=0)
        rc, out, err = await govnode("status", "--config", xiamen.config_path, "--timeout", "2")
        assert rc == 1
        lines = (out + err).strip().splitlines()
        assert len(lines) == 1 and "not reachable" in lines[0], out + err
    finally:
        for node in nodes.values():
            await node.stop(grace=0)
