"""The conformance suite (第三十一条) against real nodes: it passes against a correctly
configured city, every mandatory security case fails against a city broken for it, and a
target that is not govnode at all fails with reasons instead of crashing the run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from conformance.model import Outcome, RunReport
from conformance.report import verify_signed_report
from conformance.runner import run
from conformance.suite import all_cases
from gateway.tls import server_credentials
from node.app import node_tls_files
from node.demo._main import free_port
from tests.support.conformance_targets import (
    Platform,
    front,
    issue_tester,
    old_tls_context,
    open_plaintext_port,
    platform,
    sniffing_relay,
)
from tests.support.databases import NewDatabaseUrl
from tests.support.nodes import PUBLIC_SECURITY, make_province
from tests.support.portal import portal_config, run_portal

MANDATORY_SECURITY = [
    c.info.id for c in all_cases() if c.info.group == "security" and c.info.mandatory
]


def outcomes(report: RunReport) -> dict[str, Outcome]:
    return {r.case.id: r.outcome for r in report.results}


def reasons(report: RunReport) -> str:
    return "\n".join(
        f"{r.case.id} {r.outcome.value}: {r.reason} | {r.evidence}" for r in report.results
    )


# --- a correctly configured city passes, by the real command, its open data portal too --------


async def test_the_suite_passes_against_a_correct_city(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with (
        platform(tmp_path, await db_urls(), await db_urls()) as plat,
        run_portal(portal_config(plat.city, plat.nodes["city"], tmp_path / "portal")) as portal,
    ):
        reports = tmp_path / "reports"
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "govnode"),
            "conformance",
            "run",
            "--province",
            plat.province.config.node.listen,
            "--target",
            plat.city.config.node.listen,
            "--root",
            str(plat.root),
            "--tester",
            str(plat.tester),
            "--report-dir",
            str(reports),
            "--sync-timeout",
            "15",
            "--portal",
            portal.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "GOVNODE_LOG__LEVEL": "warning"},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        text = out.decode()
        assert proc.returncode == 0, text
        envelope = (reports / "report.json").read_bytes()
        verified = verify_signed_report(envelope, plat.root.read_bytes())
    report = verified.report
    assert report["passed"] is True
    assert report["target_identity"] == "spiffe://350100.fujian.gov.cn/node"
    assert verified.tester.uri == report["tester_identity"]
    failed = [r for r in report["results"] if r["outcome"] != "passed"]
    assert failed == [], failed
    assert {r["id"] for r in report["results"]} == {c.info.id for c in all_cases()}
    for case in all_cases():  # progress and the verdict are printed as the cases run
        assert case.info.id in text
    assert "PASSED: every mandatory case passed" in text
    assert (reports / "report.xml").is_file() and (reports / "report.html").is_file()


# --- broken targets: every mandatory security case can fail ------------------------------------


def no_client_verification(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """TLS without client certificate verification (the guard still refuses later)."""
    import node.app

    def creds(files: Any) -> grpc.ServerCredentials:
        key, chain, _ = files.read()
        return grpc.ssl_server_credentials([(key, chain)], None, require_client_auth=False)

    monkeypatch.setattr(node.app, "server_credentials", creds)


def revocation_unchecked(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """The guard never asks whether a certificate is revoked."""
    import node.app
    from gateway.auth import Authenticator

    async def never(serial_hex: str) -> str | None:
        return None

    def authenticator(root: Any, trust_domain: str, _lookup: Any) -> Authenticator:
        return Authenticator(root, trust_domain, never)

    monkeypatch.setattr(node.app, "Authenticator", authenticator)


def assertions_trusted(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """Caller assertions are believed without checking who signed them."""
    import datetime as dt

    from govnode.v1 import common_pb2

    import gateway.assertion as ga
    from gateway.identity import parse_spiffe

    async def believe(self: Any, blob: bytes, **kwargs: Any) -> ga.VerifiedAssertion:
        signed = common_pb2.SignedCallerAssertion.FromString(blob)
        claim = common_pb2.CallerAssertion.FromString(signed.assertion)
        return ga.VerifiedAssertion(
            caller=parse_spiffe(claim.caller_identity),
            origin_node=parse_spiffe(claim.origin_node),
            resource_code=claim.resource_code,
            request_id=claim.request_id,
            deadline=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
        )

    monkeypatch.setattr(ga.AssertionVerifier, "verify", believe)


def _serve_share_type(monkeypatch: pytest.MonkeyPatch, share_type: str) -> None:
    """The catalog's rules let anyone use resources of ``share_type`` by any method."""
    import node.sharing._decision as decision
    from node.sharing import Permit

    original: Callable[..., Permit | None] = getattr(decision, "catalog_access")  # noqa: B009

    def lax(caller: Any, entry: Any, method: Any) -> Permit | None:
        if entry.share_type.value == share_type:
            items = frozenset(i.name for i in entry.items)
            return Permit(is_provider=False, visible_items=items, clear_items=items)
        return original(caller, entry, method)

    monkeypatch.setattr(decision, "catalog_access", lax)


def serves_not_shared(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    _serve_share_type(monkeypatch, "not_shared")


def serves_conditional(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    _serve_share_type(monkeypatch, "conditional")


def no_masking(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    import node.records._query

    monkeypatch.setattr(node.records._query, "mask", lambda value, rule: value)


def no_audit(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """Calls are answered but never written to the audit log."""
    import node.audit._log

    async def drop(self: Any, entry: Any) -> int:
        return 0

    monkeypatch.setattr(node.audit._log.AuditLog, "append", drop)


def internal_on_bad_bytes(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """Bad request bytes reach the handler unparsed: gRPC's generic INTERNAL."""
    import gateway.interceptors as gi

    def parse(self: Any, raw: bytes) -> Any:
        return self.deserialize(raw)

    monkeypatch.setattr(gi._Call, "parse", parse)


def grants_ignore_scope(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """A grant opens every item of the resource, in clear."""
    import node.sharing._decision
    from node.sharing import Permit

    def everything(entry: Any, items: Any, clear_text: Any, grant_id: str) -> Permit:
        names = frozenset(i.name for i in entry.items)
        return Permit(is_provider=False, visible_items=names, clear_items=names, grant_id=grant_id)

    monkeypatch.setattr(node.sharing._decision, "grant_access", everything)


def grants_never_end(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """Revocation and the end of a grant are not checked."""
    import node.sharing._grants

    monkeypatch.setattr(
        node.sharing._grants.Grant, "in_force", lambda self, now: self.not_before <= now
    )


#: breakage -> (how, the cases it must fail, what each failure's reason must say)
BREAKAGES = {
    "no-client-verification": (
        no_client_verification,
        ["SEC-01", "SEC-02", "SEC-03", "SEC-05"],
        "accepted a TLS connection",
    ),
    "revocation-unchecked": (revocation_unchecked, ["SEC-04"], "certificate the province revoked"),
    "assertions-trusted": (assertions_trusted, ["SEC-08"], "forged assertion"),
    "serves-not-shared": (serves_not_shared, ["SEC-09"], "was served to the tester"),
    "serves-conditional": (serves_conditional, ["SEC-10"], "was served to the tester"),
    "no-masking": (no_masking, ["SEC-11"], "is not masked"),
    "no-audit": (no_audit, ["SEC-12"], "is missing"),
    "internal-on-bad-bytes": (internal_on_bad_bytes, ["SEC-14"], "expected INVALID_ARGUMENT"),
    "grants-ignore-scope": (grants_ignore_scope, ["SEC-15"], "outside the grant"),
    "grants-never-end": (grants_never_end, ["SEC-16", "SEC-17"], "still"),
}


def test_every_mandatory_security_case_has_a_broken_target() -> None:
    covered = {i for _, ids, _ in BREAKAGES.values() for i in ids}
    covered |= {"SEC-06", "SEC-07", "SEC-13", "SEC-18"}  # broken by a relay or the config
    assert covered == set(MANDATORY_SECURITY)


@pytest.mark.parametrize("name", sorted(BREAKAGES))
async def test_a_case_fails_against_a_target_broken_for_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    breakage, failing, why = BREAKAGES[name]
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    async with platform(
        tmp_path, db % "province", db % "city", breakage=breakage, monkeypatch=monkeypatch
    ) as plat:
        report = await run(plat.options(), only=failing)
    for result in report.results:
        if result.case.id in failing:
            assert result.outcome is Outcome.FAILED, reasons(report)
            assert why in result.reason, reasons(report)
    assert not report.passed


async def test_plaintext_is_caught_on_a_port_that_also_speaks_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    async with platform(
        tmp_path,
        db % "province",
        db % "city",
        breakage=open_plaintext_port,
        monkeypatch=monkeypatch,
    ) as plat:
        tls_port = int(plat.city.config.node.listen.rsplit(":", 1)[1])
        async with front(sniffing_relay(tls_port, plat.plaintext_port)) as address:
            plat.target = address
            broken = await run(plat.options(), only=["SEC-07", "CONN-03"])
    got = outcomes(broken)
    assert got["SEC-07"] is Outcome.FAILED, reasons(broken)
    assert "speaks HTTP/2 in plaintext" in reasons(broken)
    assert got["CONN-03"] is Outcome.PASSED, reasons(broken)  # TLS through the relay works


async def test_tls_1_1_is_caught_on_a_port_that_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    async with platform(
        tmp_path,
        db % "province",
        db % "city",
        breakage=open_plaintext_port,
        monkeypatch=monkeypatch,
    ) as plat:
        port = plat.plaintext_port

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            from tests.support.conformance_targets import _relay

            await _relay(reader, writer, port)

        async with front(relay, old_tls_context(plat.city)) as address:
            plat.target = address
            report = await run(plat.options(), only=["SEC-06"])
    assert outcomes(report)["SEC-06"] is Outcome.FAILED, reasons(report)
    assert "completed a TLSv1" in reasons(report)


async def test_a_missing_verify_rate_limit_is_caught(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    async with platform(
        tmp_path, db % "province", db % "city", city_sections={"oracle": {"verify_per_minute": 0}}
    ) as plat:
        report = await run(plat.options(verify_per_minute=100), only=["SEC-18"])
    assert outcomes(report)["SEC-18"] is Outcome.FAILED, reasons(report)
    assert "no rate limit" in reasons(report)


async def test_oversized_messages_are_caught_when_the_limit_is_raised(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    async with platform(
        tmp_path,
        db % "province",
        db % "city",
        city_sections={"limits": {"max_message_bytes": 64 << 20}},
    ) as plat:
        report = await run(plat.options(), only=["SEC-13"])
    assert outcomes(report)["SEC-13"] is Outcome.FAILED, reasons(report)
    assert "expected RESOURCE_EXHAUSTED" in reasons(report)


async def test_a_revocation_that_reaches_the_target_late_is_waited_for(tmp_path: Path) -> None:
    """The suite run right after the province issued the tester bundle, against a good city
    that learns revocations on its heartbeat (every 3 s): SEC-04 waits, then judges, and says
    so. (A target that never applies revocations fails: see revocation-unchecked above.)"""
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    slow = {"federation": {"heartbeat_seconds": 3.0}}
    async with platform(tmp_path, db % "province", db % "city", city_sections=slow) as plat:
        # The city has just learned lab-1's revoked certificate (the platform waited for it),
        # so lab-2's reaches it on its next heartbeat, after the run below has begun.
        tester = await issue_tester(plat.province, tmp_path / "lab-2", name="lab-2")
        notices: list[str] = []
        report = await run(
            plat.options(tester=tester, revocation_timeout_s=15.0),
            only=["SEC-04"],
            notice=notices.append,
        )
    [result] = [r for r in report.results if r.case.id == "SEC-04"]
    assert result.outcome is Outcome.PASSED, reasons(report)
    assert "after waiting" in result.reason, reasons(report)
    assert any("waiting up to 15 s" in n for n in notices), notices


# --- a target that is not govnode ----------------------------------------------------------------


@pytest.fixture
async def bare_server(tmp_path: Path) -> AsyncIterator[tuple[Platform, str]]:
    """Province (real) + a TLS gRPC server with only health, using the city's certificate."""
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    async with platform(tmp_path, db % "province", db % "city") as plat:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # type: ignore[attr-defined]
        port = free_port()
        server.add_secure_port(
            f"127.0.0.1:{port}", server_credentials(node_tls_files(plat.city.config))
        )
        await server.start()
        try:
            yield plat, f"127.0.0.1:{port}"
        finally:
            await server.stop(0)


async def test_a_bare_grpc_server_fails_with_reasons(bare_server: tuple[Platform, str]) -> None:
    plat, address = bare_server
    plat.target = address
    report = await run(plat.options(sync_timeout_s=2.0, latency_budget_s=2.0))
    got = outcomes(report)
    assert not report.passed
    assert got["CONN-01"] is Outcome.PASSED and got["CONN-03"] is Outcome.PASSED
    for case_id in ("CONN-04", "CONN-06", "CONN-07", "SEC-09", "SEC-11", "SEC-12"):
        assert got[case_id] is Outcome.FAILED, reasons(report)
    for result in report.results:
        assert result.reason and "Traceback" not in result.reason
    assert "UNIMPLEMENTED" in reasons(report)


async def test_an_unreachable_target_fails_every_case_without_crashing(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/%s.db"
    async with platform(tmp_path, db % "province", db % "city") as plat:
        plat.target = f"127.0.0.1:{free_port()}"
        report = await run(plat.options(call_timeout_s=2.0), only=["CONN-01", "CONN-02", "SEC-01"])
    got = outcomes(report)
    assert got["CONN-01"] is Outcome.FAILED and got["CONN-02"] is Outcome.FAILED
    assert "not reachable" in next(r.reason for r in report.results if r.case.id == "CONN-01")
    # A refusal case cannot pass vacuously: its positive control (the valid certificate) fails.
    assert got["SEC-01"] is Outcome.FAILED
    assert "would prove nothing" in reasons(report)
    assert not report.passed
    json.dumps(report.to_json())  # the report is still complete and serialisable


# --- the command line ------------------------------------------------------------------------


def govnode_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "govnode"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_list_names_every_case_with_its_article() -> None:
    result = govnode_cli("conformance", "list")
    assert result.returncode == 0, result.stderr
    for case in all_cases():
        assert case.info.id in result.stdout
    assert "optional" in result.stdout and "第三十一条" in result.stdout


async def test_bad_invocations_are_one_line_errors(tmp_path: Path) -> None:
    province = make_province(tmp_path / "province", f"sqlite+aiosqlite:///{tmp_path}/p.db")
    tester = await issue_tester(province, tmp_path / "tester")
    root = tester / "root.pem"
    common = ["conformance", "run", "--province", "127.0.0.1:1", "--target", "127.0.0.1:2"]
    missing = govnode_cli(*common, "--root", root, "--tester", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and "tester.crt" in missing.stderr
    unknown = govnode_cli(*common, "--root", root, "--tester", tester, "--only", "SEC-01,NOPE-9")
    assert unknown.returncode == 2
    assert "unknown case id(s) NOPE-9" in unknown.stderr
    not_a_tester = tmp_path / "agency"
    files = province.agency(PUBLIC_SECURITY)
    not_a_tester.mkdir()
    (not_a_tester / "tester.crt").write_bytes(files.chain.read_bytes())
    (not_a_tester / "tester.key").write_bytes(files.key.read_bytes())
    refused = govnode_cli(*common, "--root", root, "--tester", not_a_tester)
    assert refused.returncode == 2 and "is not a tester identity" in refused.stderr
