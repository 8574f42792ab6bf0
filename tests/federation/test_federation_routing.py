"""Routing (第十九条, 第二十六条): a 厦门 agency's call on a 福州 (or province) resource goes
厦门 -> province -> 福州 with a signed caller assertion; 福州 applies its rules to the 厦门
agency, never to the forwarder; forged, altered, replayed and misapplied assertions are
refused; deadlines propagate; with the province down, local calls keep working and remote ones
fail fast naming the unreachable node. Real nodes over real mutual TLS, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from cryptography import x509
from govnode.v1 import common_pb2, sharing_pb2, sharing_pb2_grpc

from gateway.assertion import ASSERTION_KEY, make_assertion
from gateway.forward import CircuitBreaker, Forwarder, outgoing_timeout
from gateway.identity import Identity, Role, make_identity
from gateway.interceptors import REQUEST_ID_KEY
from gateway.refusal import Refusal
from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files
from node.audit import AuditLog
from node.catalog import MaskingKind, MaskingRule, ShareMethod, ShareType
from node.config import NodeConfig
from node.models import AssertionNonceRow
from node.pki import load_certs, load_private_key
from node.pki._ca import generate_key
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code, item
from tests.support.nodes import FUZHOU, PROVINCE, XIAMEN, Federation, Member, entry_of, federation

TD = "fujian.gov.cn"
METHODS = (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY)
ITEMS = (
    item("tyshxydm", key=True, required=True),
    item("qymc"),
    item("fddbr", masking=MaskingRule(kind=MaskingKind.NAME)),
)
ACME = {"tyshxydm": "91350100MA00000001", "qymc": "福州某某科技有限公司", "fddbr": "王五"}
OPEN, CONDITIONAL, PROVINCIAL, LOCAL = (
    f"{FUZHOU}-3-000001",
    f"{FUZHOU}-3-000002",
    f"{PROVINCE}-3-000001",
    f"{XIAMEN}-3-000001",
)


# --- helpers -------------------------------------------------------------------------------


async def call(
    node: RunningNode,
    files: TlsFiles,
    method: str,
    request: Any,
    *,
    deadline_s: float = 5.0,
    metadata: Sequence[tuple[str, str | bytes]] = (),
) -> Any:
    from tests.support.nodes import channel

    async with channel(node, files) as ch:
        result = getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(
            request, timeout=deadline_s, metadata=tuple(metadata)
        )
        if method == "Compare":
            return [r async for r in result]
        return await result


async def refused(node: RunningNode, files: TlsFiles, method: str, request: Any, **kw: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(node, files, method, request, **kw)
    return err.value


async def submit(member: Member, code: str, rows: list[dict[str, str]]) -> None:
    from tests.support.nodes import channel

    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code,
            batch_id="b1",
            records=[common_pb2.Record(values=r) for r in rows],
        )

    async with channel(member.running, member.agency()) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
    assert acks[0].accepted == len(rows), acks


def verify(code: str = OPEN, claimed: str = "福州某某科技有限公司") -> sharing_pb2.VerifyRequest:
    return sharing_pb2.VerifyRequest(
        resource_code=code, key={"tyshxydm": ACME["tyshxydm"]}, claimed={"qymc": claimed}
    )


async def loaded(fed: Federation) -> None:
    """福州: an unconditional and a conditional resource; the province: an unconditional one;
    厦门: a local one; records in each; the catalog spread to every node."""
    shared = {"share_type": ShareType.UNCONDITIONAL, "share_methods": METHODS, "items": ITEMS}
    await fed.fuzhou.register(entry_of(FUZHOU, 1, **shared))
    await fed.fuzhou.register(entry_of(FUZHOU, 2, share_methods=METHODS, items=ITEMS))
    await fed.province.register(entry_of(PROVINCE, 1, **shared))
    await fed.xiamen.register(entry_of(XIAMEN, 1, **shared))
    await submit(fed.fuzhou, OPEN, [ACME])
    await submit(fed.fuzhou, CONDITIONAL, [ACME])
    await submit(fed.province, PROVINCIAL, [ACME])
    await submit(fed.xiamen, LOCAL, [ACME])
    await fed.converged(4)


@pytest.fixture
async def fed(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    async with federation(tmp_path, db_urls) as running:
        await loaded(running)
        yield running


# --- routed calls ----------------------------------------------------------------------------


async def test_routed_verify_compare_query_apply_the_owners_rules_to_the_caller(
    fed: Federation,
) -> None:
    xiamen, caller = fed.xiamen.running, fed.xiamen.agency()
    reply = await call(xiamen, caller, "Verify", verify(), metadata=[(REQUEST_ID_KEY, "rid-v")])
    assert reply.found and reply.all_match and reply.request_id == "rid-v"
    assert not (await call(xiamen, caller, "Verify", verify(claimed="别的"))).all_match

    def compare(per_message: int) -> sharing_pb2.CompareRequest:
        return sharing_pb2.CompareRequest(
            resource_code=OPEN,
            records=[
                sharing_pb2.CompareRecord(ref=str(i), key={"tyshxydm": ACME["tyshxydm"]})
                for i in range(3)
            ],
            results_per_message=per_message,
        )

    compared = await call(xiamen, caller, "Compare", compare(0))
    assert [r.ref for r in compared] == ["0", "1", "2"] and all(r.found for r in compared)
    # Several results a message: packed at 福州, passed through by the province and 厦门.
    packed = await call(xiamen, caller, "Compare", compare(2))
    assert [[r.ref for r in m.results] for m in packed] == [["0", "1"], ["2"]]
    query = sharing_pb2.QueryRequest(resource_code=OPEN, key={"tyshxydm": ACME["tyshxydm"]})
    [row] = (await call(xiamen, caller, "Query", query)).rows
    assert row.record.values["fddbr"] == "王*" and list(row.masked_items) == ["fddbr"]
    # A province-owned resource, from 厦门.
    assert (await call(xiamen, caller, "Verify", verify(PROVINCIAL))).all_match

    # Access is decided for the 厦门 agency by 福州, whose message reaches the caller.
    err = await refused(xiamen, caller, "Verify", verify(CONDITIONAL))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "approved application" in err.details()
    assert f"agency {agency_code(1, XIAMEN)} ({XIAMEN})" in err.details()
    # Only a provider submits, to its own node.
    from tests.support.nodes import channel

    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(resource_code=OPEN, batch_id="x", records=[])

    async with channel(xiamen, caller) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as submitted:
            [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
    assert submitted.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "submit to your own node" in (submitted.value.details() or "")

    # Every node on the path audited the call under the same request id.
    caller_id = str(make_identity(XIAMEN, TD, Role.AGENCY, agency_code(1, XIAMEN)))
    records = {}
    for member in fed.members:
        [record] = await AuditLog(member.running.db).query(request_id="rid-v")
        records[member.region] = record
    assert {r.caller for r in records.values()} == {caller_id}
    assert {r.outcome for r in records.values()} == {"OK"}
    assert records[XIAMEN].origin_node == ""
    assert records[PROVINCE].origin_node == str(make_identity(XIAMEN, TD, Role.NODE))
    assert records[FUZHOU].origin_node == str(make_identity(PROVINCE, TD, Role.NODE))

    # Each forwarded call's nonce is recorded where it is served, not at the relay: the
    # province holds the one of the call on its own resource, 福州 those of the six on its.
    assert await nonces_at(fed.province.running) == 1
    assert await nonces_at(fed.fuzhou.running) == 6


async def nonces_at(node: RunningNode) -> int:
    table = AssertionNonceRow.__table__  # type: ignore[attr-defined]
    async with node.db.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


# --- assertions sent straight to 福州 ------------------------------------------------------


def node_signer(config: NodeConfig) -> tuple[Any, list[x509.Certificate]]:
    root = load_certs(config.path(config.tls.root))[0]
    chain = [c for c in load_certs(config.path(config.tls.cert)) if c != root]
    return load_private_key(config.path(config.tls.key)), chain


def assertion_for(
    request: Any,
    key: Any,
    chain: list[x509.Certificate],
    *,
    caller: Identity | None = None,
    resource_code: str | None = None,
) -> bytes:
    return make_assertion(
        caller=caller or make_identity(XIAMEN, TD, Role.AGENCY, agency_code(1, XIAMEN)),
        node_key=key,
        node_chain=chain,
        resource_code=resource_code or request.resource_code,
        request_bytes=request.SerializeToString(),
        deadline=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
        request_id="direct",
    )


async def test_forged_altered_replayed_and_misapplied_assertions_are_refused(
    fed: Federation,
) -> None:
    fuzhou = fed.fuzhou.running
    xiamen_config = fed.xiamen.setup.config
    as_node = node_tls_files(xiamen_config)  # a test client holding a real node certificate
    key, chain = node_signer(xiamen_config)
    request = verify()

    async def sent(blob: bytes, req: Any = request, files: TlsFiles = as_node) -> Any:
        return await refused(fuzhou, files, "Verify", req, metadata=[(ASSERTION_KEY, blob)])

    genuine = assertion_for(request, key, chain)
    ok = await call(fuzhou, as_node, "Verify", request, metadata=[(ASSERTION_KEY, genuine)])
    assert ok.all_match
    cases: list[tuple[str, bytes, Any, str]] = [
        ("replayed", genuine, request, "already used (replay)"),
        ("forged", assertion_for(request, generate_key(), chain), request, "altered or forged"),
        (
            "other resource",
            assertion_for(request, key, chain, resource_code=CONDITIONAL),
            request,
            f"not {OPEN!r}",
        ),
        (
            "other request",
            assertion_for(verify(claimed="别的"), key, chain),
            request,
            "different request",
        ),
        (
            "caller of another region",
            assertion_for(
                request,
                key,
                chain,
                caller=make_identity(FUZHOU, TD, Role.AGENCY, agency_code(1, FUZHOU)),
            ),
            request,
            "callers of its own region",
        ),
    ]
    signed = common_pb2.SignedCallerAssertion.FromString(assertion_for(request, key, chain))
    body = bytearray(signed.assertion)
    body[-1] ^= 1
    signed.assertion = bytes(body)
    cases.append(("altered", signed.SerializeToString(), request, "altered or forged"))
    agency_files = fed.xiamen.agency()
    agency_key = load_private_key(agency_files.key)
    agency_chain = [c for c in load_certs(agency_files.chain) if c.subject != c.issuer]
    cases.append(
        (
            "signed by an agency",
            assertion_for(request, agency_key, agency_chain),
            request,
            "not by a node",
        )
    )
    for name, blob, req, reason in cases:
        err = await sent(blob, req)
        assert err.code() is grpc.StatusCode.UNAUTHENTICATED, name
        assert reason in (err.details() or ""), (name, err.details())
    # An assertion from a caller that is not a node.
    err = await sent(assertion_for(request, key, chain), files=agency_files)
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED and "is not a node" in err.details()
    # A node calling without an assertion: nodes call on behalf of someone or not at all.
    err = await refused(fuzhou, as_node, "Verify", request)
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and "on behalf of" in err.details()
    # 福州 stays healthy, and audited every refusal.
    assert (await call(fuzhou, fed.fuzhou.agency(), "Verify", request)).all_match
    refusals = await AuditLog(fuzhou.db).query(outcome="UNAUTHENTICATED")
    assert len(refusals) >= len(cases) + 1


# --- deadlines ---------------------------------------------------------------------------


def test_the_forwarded_timeout_is_bounded_by_the_callers_remaining_time() -> None:
    assert outgoing_timeout(None, default=10.0) == 10.0
    assert 0 < outgoing_timeout(0.5) < 0.5
    assert outgoing_timeout(60.0) < 60.0
    with pytest.raises(Refusal) as err:
        outgoing_timeout(0.01)
    assert err.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_an_open_ended_streams_assertion_is_valid_only_for_its_start(tmp_path: Path) -> None:
    """Exchange and Subscribe run as long as their consumer reads; their caller assertion is
    checked when they arrive, so it need not (and does not) outlive the start window."""
    forwarder = Forwarder(TlsFiles(tmp_path / "k", tmp_path / "c", tmp_path / "r"))
    forwarder.default_timeout, forwarder.start_window = 10.0, 4.0
    assert forwarder.assertion_validity(None) == 10.0
    assert forwarder.assertion_validity(60.0) == 60.0
    assert forwarder.assertion_validity(None, open_ended=True) == 4.0
    assert forwarder.assertion_validity(3600.0, open_ended=True) == 4.0
    assert forwarder.assertion_validity(1.5, open_ended=True) == 1.5


async def test_deadlines_propagate_along_the_path(fed: Federation) -> None:
    xiamen, caller = fed.xiamen.running, fed.xiamen.agency()
    assert fed.xiamen.running.forwarder and fed.province.running.forwarder
    await call(xiamen, caller, "Verify", verify(), deadline_s=2.0)
    at_xiamen = fed.xiamen.running.forwarder.last_timeouts[-1]
    at_province = fed.province.running.forwarder.last_timeouts[-1]
    assert at_province is not None and at_xiamen is not None
    assert at_province < at_xiamen < 2.0
    # 30 ms: 厦门 forwards with what is left minus its margin, which leaves the province too
    # little to forward again: it refuses rather than call 福州 with a spent deadline.
    err = await refused(xiamen, caller, "Verify", verify(), deadline_s=0.03)
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED


# --- province outage -----------------------------------------------------------------------


async def test_with_the_province_down_local_calls_work_and_remote_ones_fail_fast(
    fed: Federation,
) -> None:
    forwarder = fed.xiamen.running.forwarder
    assert forwarder is not None
    forwarder.cooldown = 0.5
    province_endpoint = fed.province.setup.config.node.listen
    forwarder.breaker(province_endpoint).cooldown = 0.5
    xiamen, caller = fed.xiamen.running, fed.xiamen.agency()
    await fed.province.stop()
    assert (await call(xiamen, caller, "Verify", verify(LOCAL))).all_match
    for _ in range(2):  # the second call meets an open breaker
        err = await refused(xiamen, caller, "Verify", verify(), deadline_s=5.0)
        assert err.code() is grpc.StatusCode.UNAVAILABLE  # not DEADLINE_EXCEEDED: it fails fast
        assert f"node {province_endpoint} ({PROVINCE}) is unreachable" in err.details()
    assert forwarder.breaker(province_endpoint).state != "closed"
    assert (await call(xiamen, caller, "Verify", verify(LOCAL))).all_match
    await fed.province.start()
    for _ in range(100):  # bounded: reconnection and the breaker's cool-down
        try:
            assert (await call(xiamen, caller, "Verify", verify())).all_match
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the remote call did not recover after the province restarted")


# --- the circuit breaker -----------------------------------------------------------------


def test_circuit_breaker_opens_fails_fast_probes_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, cooldown=5.0, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_after() == 5.0
    now[0] = 5.0
    assert breaker.state == "half-open"
    assert breaker.allow()  # one probe
    assert not breaker.allow()  # and only one
    breaker.failure()  # the probe failed: open again
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "closed"  # the count restarted after the success


async def test_a_direct_peer_link_skips_the_province(fed: Federation) -> None:
    from tests.support.nodes import link_peers

    await fed.xiamen.stop()
    fed.xiamen.setup = link_peers(fed.xiamen.setup, {FUZHOU: fed.fuzhou.setup.config.node.listen})
    await fed.xiamen.start()
    xiamen, caller = fed.xiamen.running, fed.xiamen.agency()
    reply = await call(
        xiamen, caller, "Verify", verify(), metadata=[(REQUEST_ID_KEY, "rid-direct")]
    )
    assert reply.all_match
    [at_fuzhou] = await AuditLog(fed.fuzhou.running.db).query(request_id="rid-direct")
    assert at_fuzhou.origin_node == str(make_identity(XIAMEN, TD, Role.NODE))
    assert await AuditLog(fed.province.running.db).query(request_id="rid-direct") == []
    # Resources of the province itself still go to the province.
    assert (await call(xiamen, caller, "Verify", verify(PROVINCIAL))).all_match
