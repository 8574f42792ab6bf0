"""Exchange and Subscribe across the federation: 福州's 有条件共享 resource, a 厦门 consumer with
a grant on it, submitting at a member and reading the audit log of a member."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from govnode.v1 import access_pb2, common_pb2, sharing_pb2, sharing_pb2_grpc

from gateway.tls import TlsFiles
from node.audit import AuditLog, AuditRecord
from node.catalog import ShareMethod
from node.records._exchange import EXCHANGE_CHUNK_ROWS
from tests.support.access import (
    ITEMS,
    M,
    access,
    apply_request,
    approve,
    authority,
)
from tests.support.entries import agency_code
from tests.support.nodes import (
    FUZHOU,
    XIAMEN,
    Federation,
    Member,
    channel,
    entry_of,
)

STREAMS = (ShareMethod.EXCHANGE, ShareMethod.SUBSCRIBE, ShareMethod.QUERY)

#: 福州's 有条件共享 resource (fddbr masked by its name rule), and a 无条件共享 one.
COND = entry_of(FUZHOU, 11, items=ITEMS, share_methods=STREAMS)

MANY = EXCHANGE_CHUNK_ROWS * 2 + 37  # three chunks

WAIT_S = 10.0  # bound on every wait for one message or one poll; never a timing assertion

CONSUMER = agency_code(2, XIAMEN)  # the 厦门 agency holding the grant

GRANTED = ("tyshxydm", "qymc", "fddbr")


def company(n: int, name: str = "") -> dict[str, str]:
    return {
        "tyshxydm": f"91350100MA{n:08d}",
        "qymc": name or f"福州某某{n}有限公司",
        "fddbr": "王五",
    }


async def submit(member: Member, code: str, batch_id: str, rows: Sequence[dict[str, str]]) -> None:
    """One batch into ``code`` as its provider (new record keys only: updates go through a
    change request, 第四十一条)."""

    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code,
            batch_id=batch_id,
            records=[common_pb2.Record(values=r) for r in rows],
        )

    async with channel(member.running, member.agency(), timeout=30) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
    assert [(a.accepted, a.rejected) for a in acks] == [(len(rows), 0)], acks


async def grant(fed: Federation, applicant: TlsFiles, *, not_after: Any = None) -> access_pb2.Grant:
    """Applied at 厦门 (made at 福州), approved by 福州's authority."""
    applied = await access(
        fed.xiamen.running,
        applicant,
        "Apply",
        apply_request(
            COND.resource_code,
            GRANTED,
            (M.SHARE_METHOD_EXCHANGE, M.SHARE_METHOD_SUBSCRIBE),
        ),
    )
    fields: dict[str, Any] = {} if not_after is None else {"not_after": not_after}
    reviewed = await access(
        fed.fuzhou.running,
        authority(fed.fuzhou.setup),
        "ReviewApplication",
        approve(applied.application.id, **fields),
    )
    result: access_pb2.Grant = reviewed.grant
    return result


def consumer(fed: Federation) -> TlsFiles:
    return fed.xiamen.setup.agency(CONSUMER)


async def audited(
    member: Member, request_id: str, outcome: str = "OK", within_s: float = WAIT_S
) -> AuditRecord:
    """The one audit record ``member`` wrote for ``request_id``, polled (every 0.05 s, bounded)
    until it is there with ``outcome``."""
    log = AuditLog(member.running.db)
    found: list[AuditRecord] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = await log.query(request_id=request_id)
        if [r.outcome for r in found] == [outcome]:
            return found[0]
        await asyncio.sleep(0.05)
    pytest.fail(f"{member.region}: no single {outcome} record for {request_id}: {found}")
