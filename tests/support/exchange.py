"""数据交换 (Exchange) and 主动推送 (Subscribe) on one node: its resource, feeding records,
reading chunks and changes, and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import sharing_pb2, sharing_pb2_grpc

from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.codes import make_credit_code
from node.records._exchange import EXCHANGE_CHUNK_ROWS
from tests.support.nodes import (
    channel,
)
from tests.support.sharing import (
    COMPANIES,
    batch,
    submit,
)

CODE = COMPANIES.resource_code  # 无条件共享, offers exchange and subscribe; fddbr masked (name)

WAIT_S = 5.0  # bound on every wait for a message; never a timing assertion

MAX_CHUNKS = 100  # bound on every read loop

MANY = EXCHANGE_CHUNK_ROWS * 2 + 37  # three chunks


def company(n: int, status: str = "存续", person: str = "王五") -> dict[str, str]:
    return {
        "tyshxydm": make_credit_code(f"9135000000{n:07d}"),
        "dwmc": f"福州某某{n}有限公司",
        "fddbr": person,
        "djzt": status,
    }


async def feed(
    node: RunningNode, files: TlsFiles, batch_id: str, rows: Sequence[dict[str, str]]
) -> int:
    """Submit one batch of companies as their provider; returns the records accepted."""
    [ack] = await submit(node, files, [batch(CODE, batch_id, rows)])
    assert ack.rejected == 0, ack.rejections
    return ack.accepted


async def exchange(
    node: RunningNode,
    files: TlsFiles,
    request: sharing_pb2.ExchangeRequest,
    *,
    request_id: str = "",
) -> list[sharing_pb2.ExchangeChunk]:
    """Every chunk of one Exchange call, in order (``request_id`` sent as the caller's)."""
    metadata = ((REQUEST_ID_KEY, request_id),) if request_id else ()
    chunks: list[sharing_pb2.ExchangeChunk] = []
    async with channel(node, files, timeout=60) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Exchange(request, metadata=metadata)
        async for chunk in call:
            chunks.append(chunk)
            assert len(chunks) <= MAX_CHUNKS
    assert chunks and chunks[-1].last and not any(c.last for c in chunks[:-1])
    return chunks


async def refused_exchange(
    node: RunningNode, files: TlsFiles, request: sharing_pb2.ExchangeRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await exchange(node, files, request)
    return err.value


def records(chunks: Sequence[sharing_pb2.ExchangeChunk]) -> list[dict[str, str]]:
    return [dict(r.values) for c in chunks for r in c.records]


def keys(rows: Sequence[dict[str, str]]) -> list[str]:
    return [r["tyshxydm"] for r in rows]


async def read_changes(call: Any, count: int) -> list[sharing_pb2.RecordChange]:
    """The next ``count`` changes of a Subscribe call, each awaited at most WAIT_S."""
    out = []
    for _ in range(count):
        change = await asyncio.wait_for(call.read(), WAIT_S)
        assert isinstance(change, sharing_pb2.RecordChange), "the subscription ended"
        out.append(change)
    return out
