"""The last part of ``govnode demo`` (第三十一条): the province issues a tester, the tester runs
the conformance suite against 福州 over the wire, and the province approves 福州 as a
sub-platform on the signed report; 福州 learns it on its next heartbeat."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from govnode.v1 import federation_pb2, federation_pb2_grpc

from conformance.cases import Case
from conformance.model import CaseResult, Outcome
from conformance.report import write_reports
from conformance.runner import run
from conformance.session import Options
from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.approval import approve_report
from node.config import NodeConfig
from node.pki import Revocations, issue_tester, normalise_serial, prepare_tester

if TYPE_CHECKING:
    from node.demo._main import Demo

WAIT_S = 15.0
_MARK = {Outcome.PASSED: "✓", Outcome.FAILED: "✗", Outcome.SKIPPED: "-"}


async def show_conformance(
    demo: Demo,
    province: RunningNode,
    province_config: NodeConfig,
    fuzhou: RunningNode,
    base: Path,
) -> None:
    say = demo.say
    say(
        "[16] Conformance (第三十一条): a tester runs the suite against 福州, the province approves"
    )
    credentials = prepare_tester(province_config, name="demo-lab", out=base / "tester")
    bundle = await issue_tester(credentials, Revocations(province.db))
    say(f"  ✓ the province issued tester {bundle.identity} (bundle in {base / 'tester'})")
    await _until(lambda: _revoked_at(fuzhou, bundle.revoked_serial), "revocation")
    say("  ✓ its revoked probe certificate reached 福州 on a heartbeat")

    def progress(index: int, total: int, case: Case, result: CaseResult | None) -> None:
        if result is not None:
            say(f"    {_MARK[result.outcome]} {case.info.id} {case.info.title}: {result.reason}")

    options = Options(
        province=province.address,
        target=fuzhou.address,
        root=province_config.path(province_config.tls.root),
        tester=base / "tester",
        latency_calls=100,
    )
    report = await run(options, progress=progress)
    tester_dir = base / "tester"
    paths = write_reports(
        report,
        base / "conformance-report",
        key_pem=(tester_dir / "tester.key").read_bytes(),
        chain_pem=(tester_dir / "tester.crt").read_bytes(),
    )
    counts = report.counts()
    say(
        f"  {'✓' if report.passed else '✗'} {counts['passed']} passed, {counts['failed']} failed; "
        f"signed report {paths.json} (+ report.xml, report.html)"
    )
    if not report.passed:
        say("  ✗ 福州 did not pass; the province does not approve it")
        return
    approved_by = f"operator {os.environ.get('USER') or '?'} (govnode demo)"
    facts, _ = await approve_report(province_config, paths.json.read_bytes(), approved_by)
    say(
        f"  ✓ govnode federation approve: {facts.node_identity} approved, report sha256 "
        f"{facts.report_sha256[:16]}… kept with the approval"
    )
    await _until(lambda: _approved(fuzhou), "approval")
    say("  ✓ 福州 learned it on its next heartbeat: GetNodeInfo.approved_sub_platform = true")


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` (bounded) until it holds: facts reach a city on its heartbeats."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the {what} did not reach 福州 within {WAIT_S:.0f} s")


async def _revoked_at(city: RunningNode, serial: str) -> bool:
    return await Revocations(city.db).reason_for(normalise_serial(serial)) is not None


async def _approved(city: RunningNode) -> bool:
    cfg = city.config
    files = TlsFiles(cfg.path(cfg.tls.key), cfg.path(cfg.tls.cert), cfg.path(cfg.tls.root))
    async with secure_channel(city.address, files, timeout=5) as ch:
        reply = await federation_pb2_grpc.FederationServiceStub(ch).GetNodeInfo(
            federation_pb2.GetNodeInfoRequest()
        )
    return bool(reply.node.approved_sub_platform)
