"""有条件共享 applications and grants over mutual TLS: the agencies and resources of the access
tests, applying, reviewing as the data management authority, calling under a grant, and
reading refusals and notifications."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import MaskingKind, MaskingRule, ResourceEntry, ShareMethod, ShareType
from node.servicers.convert import entry_to_proto
from tests.support.entries import item
from tests.support.nodes import (
    PROVINCE,
    ProvinceSetup,
    channel,
    entry_of,
)

Province = tuple[ProvinceSetup, RunningNode]

ITEMS = (
    item("tyshxydm", key=True, required=True),
    item("qymc"),
    item("fddbr", masking=MaskingRule(kind=MaskingKind.NAME)),
)

ACME = {"tyshxydm": "91350100MA00000001", "qymc": "福州某某科技有限公司", "fddbr": "王五"}

ALL_METHODS = (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY)

COND = entry_of(PROVINCE, 1, items=ITEMS, share_methods=ALL_METHODS)

OPEN = entry_of(
    PROVINCE, 2, items=ITEMS, share_methods=ALL_METHODS, share_type=ShareType.UNCONDITIONAL
)

PROBE = entry_of(PROVINCE, 901, probe=True, items=ITEMS, share_methods=ALL_METHODS)

KIND = access_pb2.NotificationKind

M = common_pb2.ShareMethod


def authority(setup: ProvinceSetup) -> TlsFiles:
    """Issue (once) and return the node's data management authority bundle."""
    return setup.authority()


async def access(node: RunningNode, files: TlsFiles, method: str, request: Any, **kw: Any) -> Any:
    async with channel(node, files) as ch:
        return await getattr(access_pb2_grpc.AccessServiceStub(ch), method)(
            request, timeout=5, **kw
        )


async def sharing(node: RunningNode, files: TlsFiles, method: str, request: Any, **kw: Any) -> Any:
    async with channel(node, files) as ch:
        result = getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(request, timeout=5, **kw)
        if method == "Compare":
            return [r async for r in result]
        return await result


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def register(node: RunningNode, files: TlsFiles, entry: ResourceEntry) -> None:
    async with channel(node, files) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )


async def submit(node: RunningNode, files: TlsFiles, code: str, rows: list[dict[str, str]]) -> None:
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code, batch_id="b1", records=[common_pb2.Record(values=r) for r in rows]
        )

    async with channel(node, files) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
    assert acks[0].accepted == len(rows), acks


def ts(moment: dt.datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    out = Timestamp()
    out.FromDatetime(moment)
    return out


def apply_request(
    code: str = COND.resource_code,
    items: tuple[str, ...] = ("tyshxydm", "qymc", "fddbr"),
    methods: tuple[int, ...] = (M.SHARE_METHOD_VERIFY, M.SHARE_METHOD_QUERY),
    *,
    days: float = 30,
    **fields: Any,
) -> access_pb2.ApplyRequest:
    values: dict[str, Any] = {
        "resource_code": code,
        "items": list(items),
        "share_methods": list(methods),
        "purpose": "核验企业登记信息，用于社会组织登记审批",
        "legal_basis": "《社会组织登记管理条例》",
        "not_after": ts(dt.datetime.now(dt.UTC) + dt.timedelta(days=days)),
    } | fields
    return access_pb2.ApplyRequest(**values)


def query(code: str = COND.resource_code, items: tuple[str, ...] = ()) -> sharing_pb2.QueryRequest:
    return sharing_pb2.QueryRequest(
        resource_code=code, key={"tyshxydm": ACME["tyshxydm"]}, items=list(items)
    )


def verify(code: str = COND.resource_code, **claimed: str) -> sharing_pb2.VerifyRequest:
    return sharing_pb2.VerifyRequest(
        resource_code=code, key={"tyshxydm": ACME["tyshxydm"]}, claimed=claimed
    )


async def notifications(node: RunningNode, files: TlsFiles) -> list[access_pb2.Notification]:
    reply = await access(node, files, "ListNotifications", access_pb2.ListNotificationsRequest())
    return list(reply.notifications)


async def next_note(stream: Any) -> access_pb2.Notification:
    """The next notification a WatchNotifications stream sends."""
    note = await stream.read()
    assert isinstance(note, access_pb2.Notification), note
    return note


def approve(app_id: str, **fields: Any) -> access_pb2.ReviewApplicationRequest:
    return access_pb2.ReviewApplicationRequest(
        application_id=app_id, decision=common_pb2.REVIEW_DECISION_APPROVE, **fields
    )


async def poll_refused(call: Any, within_s: float = 10.0) -> grpc.aio.AioRpcError:
    """Repeat ``call()`` (every 0.1 s, bounded) until it is refused; return the refusal."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            return exc
        await asyncio.sleep(0.1)
    pytest.fail(f"still served after {within_s} s")
