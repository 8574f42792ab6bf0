"""Refusals quote at most a short prefix of what the caller sent, and what the audit log keeps
of a call is bounded: over real mutual TLS, a 100 KB value gets its own status (not gRPC's
"metadata size exceeds hard limit") with a short message, and a small audit record."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    sharing_pb2,
    sharing_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.audit import MAX_DETAIL_CHARS
from gateway.quote import MAX_MESSAGE_BYTES, QUOTE_CHARS, clip_message, quote, quote_each
from node.app import RunningNode
from node.audit import AuditLog, Operation
from node.audit._log import AuditEntry, request_digest
from node.catalog import MAX_PROBLEMS_SHOWN, validate_entry
from node.errors import InvalidArgument
from node.servicers.convert import entry_to_proto
from node.storage import Database
from tests.support.entries import NODE_REGION, item, make_entry
from tests.support.nodes import PROVINCE, PUBLIC_SECURITY, ProvinceSetup, channel, entry_of

Province = tuple[ProvinceSetup, RunningNode]
BIG = 100_000  # characters: far over gRPC's 16 KiB limit on a status message


def test_quote_keeps_short_values_and_cuts_long_ones_saying_how_long() -> None:
    assert quote("350100-3-000001") == "'350100-3-000001'"
    assert quote("福州市") == "'福州市'"
    cut = quote("x" * BIG)
    assert cut == "'" + "x" * QUOTE_CHARS + f"'… ({BIG} characters)"
    # Whatever would not print is escaped, so a message stays one readable line.
    assert quote("a\nb\x00\u202e") == r"'a\nb\x00\u202e'"
    assert quote_each([]) == ""
    assert quote_each(["a", "b"]) == "'a', 'b'"
    many = quote_each([f"n{i}" for i in range(1000)])
    assert many.startswith("'n0', 'n1'") and many.endswith("(1000 in all)")
    assert len(many) < 200


def test_clip_message_bounds_the_utf8_size_on_a_character_boundary() -> None:
    assert clip_message("short") == "short"
    for text in ("x" * BIG, "界" * BIG, "a\ud800" * BIG):
        clipped = clip_message(text)
        size = len(clipped.encode("utf-8"))  # encodable: lone surrogates were replaced
        assert size <= MAX_MESSAGE_BYTES
        assert clipped.endswith("bytes)") and "cut" in clipped
        assert clip_message(clipped) == clipped  # cutting twice changes nothing


def test_an_entry_refusal_names_ten_problems_and_counts_the_rest() -> None:
    items = tuple(item(f"Bad-{i}", key=i == 0) for i in range(300))
    with pytest.raises(InvalidArgument) as caught:
        validate_entry(make_entry(1, items=items), node_region=NODE_REGION)
    message = caught.value.message
    assert message.count("must be lower-case letters") == MAX_PROBLEMS_SHOWN
    assert message.endswith(f"and {300 - MAX_PROBLEMS_SHOWN} more problems")


async def test_the_audit_log_stores_bounded_values_from_any_writer(database: Database) -> None:
    """Submit writes its per-batch records to the sink directly, not through the guard: the
    audit log bounds what it stores itself, and the chain holds over the bounded values."""
    log = AuditLog(database)
    await log.start()
    try:
        await log.append(
            AuditEntry(
                caller="spiffe://350000.fujian.gov.cn/agency/" + "A" * 5000,
                method="/govnode.v1.SharingService/Submit",
                operation=Operation.AGGREGATE,
                outcome="OK",
                request_digest=request_digest(b"x"),
                message="界\x00" * 50_000,
                detail={"batch_id": "b" * 10_000, "accepted": 3},
            )
        )
    finally:
        await log.close()
    [record] = await log.tail(1)
    assert len(record.message.encode("utf-8")) <= MAX_MESSAGE_BYTES
    assert "\x00" not in record.message and record.message.endswith("bytes)")
    assert len(str(record.detail["batch_id"])) <= MAX_DETAIL_CHARS
    assert record.detail["accepted"] == 3 and len(record.caller) <= 300
    assert (await log.verify_chain()).ok


async def _catalog(node: RunningNode, setup: ProvinceSetup, method: str, request: Any) -> Any:
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        return await getattr(catalog_pb2_grpc.CatalogServiceStub(ch), method)(request)


async def _sharing(node: RunningNode, setup: ProvinceSetup, method: str, request: Any) -> Any:
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        call = getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(request)
        if method == "Compare":
            return [r async for r in call]
        return await call


async def _access(node: RunningNode, setup: ProvinceSetup, method: str, request: Any) -> Any:
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        return await getattr(access_pb2_grpc.AccessServiceStub(ch), method)(request)


async def _audit(node: RunningNode, setup: ProvinceSetup, method: str, request: Any) -> Any:
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        return await getattr(audit_pb2_grpc.AuditServiceStub(ch), method)(request)


Call = Callable[[RunningNode, ProvinceSetup, str, Any], Awaitable[Any]]


async def test_a_100_kb_value_gets_its_status_a_short_message_and_a_small_audit_record(
    province: Province,
) -> None:
    setup, node = province
    entry = entry_of(PROVINCE, 1)
    code = entry.resource_code
    register = catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
    await _catalog(node, setup, "RegisterResource", register)
    big = "x" * BIG
    bad_entry = entry_to_proto(entry_of(PROVINCE, 2))
    bad_entry.resource_code = big
    many_unknown = {f"item_{i:05d}_" + "y" * 40: "1" for i in range(1500)}  # ~75 KB of names
    cases: list[tuple[str, Call, str, Any, grpc.StatusCode]] = [
        (
            "GetResource",
            _catalog,
            "GetResource",
            catalog_pb2.GetResourceRequest(resource_code=big),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            "RegisterResource",
            _catalog,
            "RegisterResource",
            catalog_pb2.RegisterResourceRequest(entry=bad_entry),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "Verify key",
            _sharing,
            "Verify",
            sharing_pb2.VerifyRequest(resource_code=code, key={big: "1"}, claimed={"qymc": "a"}),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "Verify claimed",
            _sharing,
            "Verify",
            sharing_pb2.VerifyRequest(
                resource_code=code, key={"tyshxydm": "1"}, claimed=many_unknown
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "Query filter",
            _sharing,
            "Query",
            sharing_pb2.QueryRequest(
                resource_code=code,
                filters=[
                    sharing_pb2.QueryFilter(item=big, op=sharing_pb2.QUERY_OPERATOR_EQ, value="1")
                ],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "Compare ref",
            _sharing,
            "Compare",
            sharing_pb2.CompareRequest(
                resource_code=code,
                records=[sharing_pb2.CompareRecord(ref=big, key={big: "1"}, claimed={"qymc": "a"})],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "GetApplication",
            _access,
            "GetApplication",
            access_pb2.GetApplicationRequest(id="350000-A-" + big),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "QueryAudit",
            _audit,
            "QueryAudit",
            audit_pb2.QueryAuditRequest(outcome=big),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for label, call, method, request, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(node, setup, method, request)
        error = info.value
        details = error.details() or ""
        assert error.code() is expected, (label, error.code(), details[:300])
        assert len(details.encode("utf-8")) <= MAX_MESSAGE_BYTES, (label, len(details))
        assert "x" * (QUOTE_CHARS + 1) not in details, (label, details[:300])

    # What the audit log kept of each refusal is small: the message as the caller saw it.
    records = await node.audit.tail(len(cases))
    assert [r.outcome for r in records] == [c[4].name for c in cases]
    for record in records:
        assert len(record.message.encode("utf-8")) <= MAX_MESSAGE_BYTES, record.method
        assert len(json.dumps(record.detail, ensure_ascii=False)) <= 2048, record.method
        assert len(record.caller) <= 300 and len(record.resource_code) <= 15

    # And the node answers as before.
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
