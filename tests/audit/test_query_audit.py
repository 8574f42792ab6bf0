"""AuditService.QueryAudit (第三十九条) over real mutual TLS, on both backends: a caller reads
the records of its own calls, refusals included, and no one else's; the data management
authority of the node's region reads them all; filters, paging and bad requests."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import audit_pb2, audit_pb2_grpc

from gateway.identity import Role, make_identity
from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.audit._log import GENESIS_HASH
from node.pki import issue_client
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    entry_of,
)
from tests.support.testers import (
    ACME,
    REAL,
    SHARED,
    catalog,
    node_info,
    refused,
    register,
    sharing,
    submit,
    verify,
)

Province = tuple[ProvinceSetup, RunningNode]
TD = "fujian.gov.cn"
TESTER = str(make_identity(PROVINCE, TD, Role.TESTER, "lab-1"))
CIVIL = str(make_identity(PROVINCE, TD, Role.AGENCY, CIVIL_AFFAIRS))
PROBE = entry_of(PROVINCE, 901, probe=True, **SHARED)


async def audit(node: RunningNode, files: TlsFiles, **fields: Any) -> audit_pb2.QueryAuditResponse:
    async with channel(node, files) as ch:
        reply: audit_pb2.QueryAuditResponse = await audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(
            audit_pb2.QueryAuditRequest(**fields)
        )
    return reply


def short(record: audit_pb2.AuditRecord) -> tuple[str, str, str]:
    """(method, outcome, operation) of a record, e.g. ("Verify", "OK", "COMPARE")."""
    operation = audit_pb2.AuditOperation.Name(record.operation).removeprefix("AUDIT_OPERATION_")
    return record.rpc_method.rsplit("/", 1)[-1], record.outcome, operation


def authority(setup: ProvinceSetup) -> TlsFiles:
    out = setup.base / "authority"
    if not (out / "client.key").exists():
        issue_client(setup.config, role=Role.AUTHORITY, subject="", name="省数据管理局", out=out)
    return TlsFiles(out / "client.key", out / "client.crt", out / "ca.crt")


def at(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@pytest.fixture
async def tested(province: Province) -> Province:
    """Public security registers its resource and another agency verifies it; then the tester
    makes its calls: node info, a probe, a probe record, a Verify (request id "rid-tester")
    and a refused Verify on the agency's resource."""
    setup, node = province
    agency, tester = setup.agency(PUBLIC_SECURITY), setup.tester()
    await catalog(node, agency, "RegisterResource", register(REAL))
    await submit(node, agency, REAL.resource_code, [ACME])
    assert (
        await sharing(node, setup.agency(CIVIL_AFFAIRS), "Verify", verify(REAL.resource_code))
    ).found

    await node_info(node, tester)
    await catalog(node, tester, "RegisterResource", register(PROBE))
    await submit(node, tester, PROBE.resource_code, [ACME])
    metadata = [(REQUEST_ID_KEY, "rid-tester")]
    assert (await sharing(node, tester, "Verify", verify(PROBE.resource_code), metadata)).all_match
    await refused(sharing(node, tester, "Verify", verify(REAL.resource_code)))
    return setup, node


TESTER_CALLS = [
    ("GetNodeInfo", "OK", "ACCESS"),
    ("RegisterResource", "OK", "MAINTAIN"),
    ("Submit", "OK", "AGGREGATE"),  # the batch, recorded before its acknowledgement
    ("Submit", "OK", "AGGREGATE"),  # the call
    ("Verify", "OK", "COMPARE"),
    ("Verify", "PERMISSION_DENIED", "COMPARE"),
]


async def test_a_tester_reads_exactly_its_own_calls(tested: Province) -> None:
    setup, node = tested
    tester = setup.tester()
    reply = await audit(node, tester)
    records = list(reply.records)
    assert [short(r) for r in records] == TESTER_CALLS
    assert reply.next_page_token == ""
    assert {r.caller_identity for r in records} == {TESTER}
    assert [r.sequence for r in records] == sorted(r.sequence for r in records)
    for r in records:
        assert len(r.record_hash) == len(r.previous_hash) == len(r.request_digest) == 64
        assert r.at.seconds > 0 and r.request_id and r.origin_node == ""
    node_call, registered, batch, _, verified, denied = records
    assert node_call.resource_code == registered.resource_code == ""  # in request.entry
    assert batch.resource_code == verified.resource_code == PROBE.resource_code
    assert "accepted=1" in batch.message and "batch_id=b1" in batch.message
    assert verified.request_id == "rid-tester"
    assert denied.resource_code == REAL.resource_code
    assert "tester identities may use only probe resources (第三十一条)" in denied.message

    # Asking for another caller's records is refused, not narrowed.
    err = await refused(audit(node, tester, caller_identity=CIVIL))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "only the data management authority of region 350000" in (err.details() or "")
    # Its own, by name: the same calls, and the two QueryAudit calls just made.
    again = await audit(node, tester, caller_identity=TESTER)
    assert [short(r) for r in again.records] == [
        *TESTER_CALLS,
        ("QueryAudit", "OK", "ACCESS"),
        ("QueryAudit", "PERMISSION_DENIED", "ACCESS"),
    ]


async def test_an_agency_sees_none_of_the_testers_records(tested: Province) -> None:
    setup, node = tested
    reply = await audit(node, setup.agency(CIVIL_AFFAIRS))
    assert [short(r) for r in reply.records] == [("Verify", "OK", "COMPARE")]
    assert {r.caller_identity for r in reply.records} == {CIVIL}


async def test_the_regions_authority_reads_every_record(tested: Province) -> None:
    setup, node = tested
    everything = list((await audit(node, authority(setup), page_size=1000)).records)
    assert [r.sequence for r in everything] == list(range(1, len(everything) + 1))
    assert everything[0].previous_hash == GENESIS_HASH
    for before, record in itertools.pairwise(everything):
        assert record.previous_hash == before.record_hash  # the chain, as stored
    assert {TESTER, CIVIL} <= {r.caller_identity for r in everything}
    civil = await audit(node, authority(setup), caller_identity=CIVIL)
    assert [(short(r), r.caller_identity) for r in civil.records] == [
        (("Verify", "OK", "COMPARE"), CIVIL)
    ]


async def test_filters_narrow_the_callers_records(tested: Province) -> None:
    setup, node = tested
    tester = setup.tester()
    [one] = (await audit(node, tester, request_id="rid-tester")).records
    assert short(one) == ("Verify", "OK", "COMPARE") and one.request_id == "rid-tester"
    assert not (await audit(node, setup.agency(CIVIL_AFFAIRS), request_id="rid-tester")).records

    denied = await audit(node, tester, outcome="PERMISSION_DENIED")
    assert [short(r) for r in denied.records] == [TESTER_CALLS[-1]]
    compared = await audit(node, tester, operation=audit_pb2.AUDIT_OPERATION_COMPARE)
    assert [short(r) for r in compared.records] == TESTER_CALLS[-2:]
    on_probe = await audit(node, tester, resource_code=PROBE.resource_code)
    assert [short(r) for r in on_probe.records] == TESTER_CALLS[2:5]

    # Times: a call made after `mid` is recorded after it (records are durable before the
    # call returns), every earlier one before.
    mid = dt.datetime.now(dt.UTC)
    await catalog(node, tester, "RegisterResource", register(entry_of(PROVINCE, 902, probe=True)))
    maintain = audit_pb2.AUDIT_OPERATION_MAINTAIN
    [later] = (await audit(node, tester, operation=maintain, start_time=at(mid))).records
    [earlier] = (await audit(node, tester, operation=maintain, end_time=at(mid))).records
    assert earlier.sequence < later.sequence


async def test_pages_follow_the_sequence(province: Province) -> None:
    setup, node = province
    tester = setup.tester()
    for n in range(901, 906):
        await catalog(node, tester, "RegisterResource", register(entry_of(PROVINCE, n, probe=True)))
    maintain = audit_pb2.AUDIT_OPERATION_MAINTAIN
    # A page that ends exactly on the last record says so (no empty page after it).
    full = await audit(node, tester, operation=maintain, page_size=5)
    assert len(full.records) == 5 and full.next_page_token == ""
    sequences: list[int] = []
    token, pages = "", 0
    while True:
        page = await audit(node, tester, operation=maintain, page_size=2, page_token=token)
        sequences += [r.sequence for r in page.records]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert sequences == [r.sequence for r in full.records] and pages == 3

    first = await audit(node, tester, operation=maintain, page_size=2)
    for token in (first.next_page_token + "x", "not-a-token"):
        err = await refused(audit(node, tester, operation=maintain, page_token=token))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (err.details() or "")
    # A token continues only the query it came from.
    err = await refused(audit(node, tester, page_token=first.next_page_token))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a page token of this query" in (err.details() or "")


async def test_bad_requests_are_refused_naming_the_field(province: Province) -> None:
    setup, node = province
    tester = setup.tester()
    assert not (await audit(node, tester, page_size=1000)).next_page_token
    # Above the maximum (1,000) a page size is reduced to it (common.proto, Pagination).
    assert not (await audit(node, tester, page_size=2**31 - 1)).next_page_token
    for fields, needle in (
        ({"page_size": -1}, "page_size: must not be negative"),
        ({"outcome": "permission denied"}, "outcome: 'permission denied' is not a gRPC status"),
        ({"operation": 99}, "operation: 99 is not a valid AuditOperation"),
    ):
        err = await refused(audit(node, tester, **fields))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, fields
        assert needle in (err.details() or ""), err.details()


async def test_usage_streams_are_only_for_providers(province: Province) -> None:
    """StreamUsageLog (tests/audit/test_usage_logs.py) serves a provider agency the records on
    its own resources; a tester, whatever it may read with QueryAudit, is refused."""
    setup, node = province
    async with channel(node, setup.tester()) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in audit_pb2_grpc.AuditServiceStub(ch).StreamUsageLog(
                audit_pb2.StreamUsageLogRequest()
            ):
                pass
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "is not an agency: usage logs go to the agency that provides the data" in (
        err.value.details() or ""
    )
