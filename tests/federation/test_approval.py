"""`govnode federation approve` (第三十一条): the province approves a city as a sub-platform on
a signed conformance report, and only on one that proves every mandatory case passed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from govnode.v1 import federation_pb2, federation_pb2_grpc

from conformance.model import Outcome, RunReport
from conformance.report import write_reports
from conformance.runner import run
from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.app import node_tls_files
from node.pki import load_certs
from tests.support.conformance_targets import Platform, platform
from tests.support.databases import NewDatabaseUrl
from tests.support.nodes import make_city

GOVNODE = str(Path(sys.executable).parent / "govnode")


async def govnode(*args: str | Path) -> tuple[int, str]:
    """The real command, in a process of its own (the nodes keep serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        GOVNODE, *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def sign(plat: Platform, report: RunReport, out: Path) -> Path:
    """Write and sign ``report`` with the platform's tester key (as the runner's CLI does)."""
    paths = write_reports(
        report,
        out,
        key_pem=(plat.tester / "tester.key").read_bytes(),
        chain_pem=(plat.tester / "tester.crt").read_bytes(),
    )
    return paths.json


async def city_approved(plat: Platform) -> bool:
    """What the city says of itself in GetNodeInfo (asked with the tester's certificate)."""
    tester = TlsFiles(plat.tester / "tester.key", plat.tester / "tester.crt", plat.root)
    async with secure_channel(plat.city.config.node.listen, tester, timeout=5) as ch:
        reply = await federation_pb2_grpc.FederationServiceStub(ch).GetNodeInfo(
            federation_pb2.GetNodeInfoRequest()
        )
    return bool(reply.node.approved_sub_platform)


async def test_a_passing_report_approves_the_city_and_nothing_less_does(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with platform(tmp_path, await db_urls(), await db_urls()) as plat:
        province = plat.province.config_path
        report = await run(plat.options())
        assert report.passed, [(r.case.id, r.reason) for r in report.results if r.reason]
        good = sign(plat, report, tmp_path / "good")

        # --- refusals first: the city is not approved by any of them -------------------------
        tampered = tmp_path / "tampered.json"
        envelope = json.loads(good.read_text(encoding="utf-8"))
        envelope["report"]["results"][0]["reason"] = "edited after signing"
        tampered.write_text(json.dumps(envelope, ensure_ascii=False), encoding="utf-8")

        failed = dataclasses.replace(report, results=list(report.results))
        sec09 = next(i for i, r in enumerate(failed.results) if r.case.id == "SEC-09")
        failed.results[sec09] = dataclasses.replace(
            failed.results[sec09], outcome=Outcome.FAILED, reason="served"
        )
        partial = await run(plat.options(), only=["CONN-01", "SEC-01"])
        stale = dataclasses.replace(
            report, finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
        )
        province_node = plat.province.config.path(plat.province.config.tls.cert)
        not_a_city = dataclasses.replace(
            report,
            target_identity="spiffe://350000.fujian.gov.cn/node",
            target_chain_pem="".join(
                c.public_bytes(Encoding.PEM).decode() for c in load_certs(province_node)
            ),
        )
        xiamen = make_city(
            tmp_path / "xiamen", "sqlite+aiosqlite:///unused.db", plat.province, "350200", "厦门市"
        )  # admitted by file, never started: unknown
        xiamen_node = xiamen.config.path(xiamen.config.tls.cert)
        unknown = dataclasses.replace(
            report,
            target_identity="spiffe://350200.fujian.gov.cn/node",
            target_chain_pem="".join(
                c.public_bytes(Encoding.PEM).decode() for c in load_certs(xiamen_node)
            ),
        )
        refusals = {
            "does not verify": tampered,
            "SEC-09 did not pass": sign(plat, failed, tmp_path / "failed"),
            "did not run: a partial run": sign(plat, partial, tmp_path / "partial"),
            "older than 30 days": sign(plat, stale, tmp_path / "stale"),
            "is not a city node": sign(plat, not_a_city, tmp_path / "province-target"),
            "350200 is not a member": sign(plat, unknown, tmp_path / "unknown"),
        }
        for why, path in refusals.items():
            code, output = await govnode("federation", "approve", "-c", province, "--report", path)
            assert code == 2, output
            assert why in output, output
        code, output = await govnode(
            "federation", "approve", "-c", plat.city.config_path, "--report", good
        )
        assert code == 2 and "only the province node approves" in output
        assert not await city_approved(plat)

        # --- the passing report approves; the city learns it on its next heartbeat ------------
        code, output = await govnode("federation", "approve", "-c", province, "--report", good)
        assert code == 0, output
        assert "Approved spiffe://350100.fujian.gov.cn/node as a sub-platform" in output
        code, output = await govnode("federation", "approve", "-c", province, "--report", good)
        assert code == 0 and "already approved on this report" in output

        deadline = time.monotonic() + 10
        while not await city_approved(plat):
            if time.monotonic() > deadline:
                pytest.fail("the city did not learn its approval within 10 s")
            await asyncio.sleep(0.2)
        async with secure_channel(
            plat.province.config.node.listen, node_tls_files(plat.province.config), timeout=5
        ) as ch:
            peers = await federation_pb2_grpc.FederationServiceStub(ch).ListPeers(
                federation_pb2.ListPeersRequest()
            )
        assert {p.node.region: p.node.approved_sub_platform for p in peers.peers} == {
            "350100": True
        }
        kept = await plat.nodes["province"].db.fetch_one(
            "SELECT report, region FROM sub_platform_approval", {}
        )
        assert kept is not None and kept[1] == "350100"
        assert kept[0] == good.read_text(encoding="utf-8")  # the report, byte for byte
