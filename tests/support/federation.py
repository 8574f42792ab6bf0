"""Province and cities: quick heartbeats for tests that wait on them, and joining online (the
join port's address, invitations, join requests, refusals, used tokens)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import federation_pb2
from sqlmodel.ext.asyncio.session import AsyncSession

from node.app import RunningNode
from node.clients._join import build_join_request
from node.federation import create_invitation
from node.federation._join import token_hash
from node.models import InvitationRow
from node.pki import (
    city_requests,
)
from node.storage import Database
from tests.support.nodes import (
    ProvinceSetup,
)


def fast(setup: ProvinceSetup, heartbeat_s: float = 0.5) -> ProvinceSetup:
    """The same node with a short heartbeat period (revocations are pulled on heartbeats)."""
    cfg = setup.config
    fed = cfg.federation.model_copy(update={"heartbeat_seconds": heartbeat_s})
    return dataclasses.replace(setup, config=cfg.model_copy(update={"federation": fed}))


TD = "fujian.gov.cn"

FUZHOU, XIAMEN = "350100", "350200"


def join_address(node: RunningNode) -> str:
    assert node.join_port is not None
    return f"127.0.0.1:{node.join_port}"


def root_pem(setup: ProvinceSetup) -> bytes:
    return setup.config.path(setup.config.tls.root).read_bytes()


def request_for(
    token: str, region: str = FUZHOU, name: str = "福州市"
) -> federation_pb2.JoinRequest:
    requests = city_requests(region, name, TD, ["127.0.0.1"])
    return build_join_request(
        requests, token=token, region=region, name=name, listen_address="127.0.0.1:9443"
    )


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def invite(node: RunningNode, region: str = FUZHOU, **kwargs: Any) -> str:
    made = await create_invitation(
        node.db, province_region="350000", region=region, created_by="test", **kwargs
    )
    return made.token


async def used_at(db: Database, token: str) -> dt.datetime | None:
    async def tx(session: AsyncSession) -> dt.datetime | None:
        row = await session.get(InvitationRow, token_hash(token))
        assert row is not None
        return row.used_at

    return await db.read("used_at", tx)
