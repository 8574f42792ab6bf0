"""What the node sends with a refusal for any gRPC client, not only govnode_client: the request
id on every refusal, and a retry delay under gRPC's own key (grpc-retry-pushback-ms) as well as
govnode's (retry-after-ms), so that a stock client's retry policy waits as long as the node
asks (gRFC A6)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import cast

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, sharing_pb2, sharing_pb2_grpc

from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles, channel_credentials
from node.app import RunningNode
from node.codes import make_credit_code
from node.pki import Revocations, load_keypair
from node.servicers.convert import entry_to_proto
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    start,
    with_limits,
)
from tests.support.oracle import sensitive
from tests.support.sharing import agency

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMITED = sensitive(1)
VERIFY_PER_MINUTE = 60

#: A stock client's retry policy (gRFC A6): RESOURCE_EXHAUSTED is retryable, and its own
#: backoff is a few milliseconds: far too short for the node's rate limit to refill, so that
#: only the node's pushback can make the retry succeed.
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": "govnode.v1.SharingService"}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.001s",
                "maxBackoff": "0.002s",
                "backoffMultiplier": 1.5,
                "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
            },
        }
    ]
}

Province = tuple[ProvinceSetup, RunningNode]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def province(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Province]:
    base = tmp_path_factory.mktemp("metadata")
    setup = make_province(base / "province", f"sqlite+aiosqlite:///{base / 'node.db'}")
    setup = with_limits(setup, verify_per_minute=VERIFY_PER_MINUTE)
    node = await start(setup)
    try:
        async with channel(node, agency(setup, PUBLIC_SECURITY)) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(LIMITED))
            )
        yield setup, node
    finally:
        await node.stop(grace=0)


def stock_channel(node: RunningNode, files: TlsFiles, *, retries: bool) -> grpc.aio.Channel:
    """grpcio as any agency would use it: no govnode code on the client side."""
    options: list[tuple[str, int | str]] = [("grpc.enable_retries", int(retries))]
    if retries:
        options.append(("grpc.service_config", json.dumps(SERVICE_CONFIG)))
    return grpc.aio.secure_channel(node.address, channel_credentials(files), options=options)


def trailing(err: grpc.aio.AioRpcError) -> dict[str, str]:
    pairs = cast(Iterable[tuple[str, str | bytes]], err.trailing_metadata() or ())
    return {k: v for k, v in pairs if isinstance(v, str)}


async def audited(node: RunningNode, request_id: str) -> list[str]:
    rows = await node.db.fetch_all(
        "SELECT outcome FROM audit_record WHERE request_id = :r ORDER BY sequence",
        {"r": request_id},
    )
    return [str(row[0]) for row in rows]


def verify_request() -> sharing_pb2.VerifyRequest:
    return sharing_pb2.VerifyRequest(
        resource_code=LIMITED.resource_code, key={"zjhm": "k"}, claimed={"xm": "张三"}
    )


async def spend_the_bucket(node: RunningNode, files: TlsFiles) -> dict[str, str]:
    """Verify until the rate limit refuses; the refusal's trailing metadata."""
    async with stock_channel(node, files, retries=False) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        # The bucket holds VERIFY_PER_MINUTE calls and refills one a second: bounded, with room
        # for a slow machine.
        for _ in range(10 * VERIFY_PER_MINUTE):
            try:
                await stub.Verify(verify_request(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                return trailing(exc)
    raise AssertionError(f"no refusal after {10 * VERIFY_PER_MINUTE} calls")


async def test_a_rate_limit_refusal_carries_grpc_retry_pushback_ms(province: Province) -> None:
    setup, node = province
    sent = await spend_the_bucket(node, agency(setup, make_credit_code("11350000003591011")))
    assert sent["grpc-retry-pushback-ms"] == sent["retry-after-ms"]
    assert 0 < int(sent["retry-after-ms"]) <= 1000
    assert await audited(node, sent[REQUEST_ID_KEY]) == ["RESOURCE_EXHAUSTED"]


async def test_a_stock_client_retries_after_the_nodes_pushback(province: Province) -> None:
    setup, node = province
    files = agency(setup, make_credit_code("11350000003591012"))
    # A machine slow enough to let a token come back between the refusal and the next call
    # has that call answered at once: then spend the bucket again (at most 3 times).
    for n in range(3):
        await spend_the_bucket(node, files)
        async with stock_channel(node, files, retries=True) as ch:
            reply = await sharing_pb2_grpc.SharingServiceStub(ch).Verify(
                verify_request(), timeout=30, metadata=((REQUEST_ID_KEY, f"stock-retry-{n}"),)
            )
        assert not reply.found
        attempts = await audited(node, f"stock-retry-{n}")
        if len(attempts) > 1:
            break
    # The node saw the attempts (gRPC resends the request id with each): refused, then, after
    # the pushback, answered; with its own 1-2 ms backoff alone, all 5 would be refused.
    assert attempts[-1] == "OK"
    assert 1 <= len(attempts[:-1]) < 4
    assert set(attempts[:-1]) == {"RESOURCE_EXHAUSTED"}


async def test_every_refusal_carries_the_request_id(province: Province) -> None:
    setup, node = province
    async with stock_channel(node, agency(setup, CIVIL_AFFAIRS), retries=False) as ch:
        catalog = catalog_pb2_grpc.CatalogServiceStub(ch)
        # A servicer's refusal (NOT_FOUND), with the id the caller chose.
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await catalog.GetResource(
                catalog_pb2.GetResourceRequest(resource_code="350000-3-999999"),
                metadata=((REQUEST_ID_KEY, "mine-1"),),
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        assert trailing(missing.value)[REQUEST_ID_KEY] == "mine-1"
        # The guard's refusal of bytes that are no message, with an id of the node's.
        raw = ch.unary_unary("/govnode.v1.CatalogService/GetResource", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as garbage:
            await raw(b"\xff\xff\xff")
        assert garbage.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        node_id = trailing(garbage.value)[REQUEST_ID_KEY]
        assert len(node_id) == 32 and await audited(node, node_id) == ["INVALID_ARGUMENT"]
        # A caller's id that is too long (or holds a space) is replaced, not echoed.
        with pytest.raises(grpc.aio.AioRpcError) as replaced:
            await catalog.GetResource(
                catalog_pb2.GetResourceRequest(resource_code="350000-3-999999"),
                metadata=((REQUEST_ID_KEY, "x" * 129),),
            )
        assert len(trailing(replaced.value)[REQUEST_ID_KEY]) == 32


async def test_the_authentication_refusal_carries_the_request_id(province: Province) -> None:
    setup, node = province
    victim = agency(setup, make_credit_code("11350000003591013"))
    serial = format(load_keypair(victim.key, victim.chain).cert.serial_number, "x")
    await Revocations(node.db).revoke(
        serial_hex=serial, identity="", issuer_region="350000", reason="key_compromise",
        revoked_by="test",
    )  # fmt: skip
    async with stock_channel(node, victim, retries=False) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await catalog_pb2_grpc.CatalogServiceStub(ch).GetResource(
                catalog_pb2.GetResourceRequest(resource_code=LIMITED.resource_code),
                metadata=((REQUEST_ID_KEY, "revoked-1"),),
            )
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert serial in (refused.value.details() or "")
    assert trailing(refused.value)[REQUEST_ID_KEY] == "revoked-1"
    assert await audited(node, "revoked-1") == ["UNAUTHENTICATED"]
