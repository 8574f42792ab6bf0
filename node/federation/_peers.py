"""How this node sees its federation peers, for FederationService/ListPeers and `govnode status`.

- On the province: the members (``federation_member``), when each was last heard from
  (``last_seen_at``, set by its heartbeats), how far its catalog feed is applied here
  (``feed_cursor``) and what it last said about itself (``node_meta``, key
  ``peer_info.<region>``: its NodeInfo and the clock skew at that heartbeat). All of it lives in
  the database, so every replica of the province answers the same.
- On a city: its one peer, the province, as its sync task (:mod:`node.clients._catalog_sync`) last
  reached it (:class:`ProvinceLink`, process memory: this process's own view of the link).

Health from the province's side: HEALTHY when heard from within :data:`HEALTHY_BEATS`
heartbeat periods, DEGRADED within :data:`DEGRADED_BEATS`, UNREACHABLE beyond.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from google.protobuf import json_format
from govnode.v1 import federation_pb2
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.models import FederationMemberRow, FeedCursorRow, NodeMetaRow, SubPlatformApprovalRow
from node.storage import Database

HEALTHY_BEATS = 3
DEGRADED_BEATS = 10
#: Failed heartbeats in a row after which a city calls its province UNREACHABLE.
UNREACHABLE_FAILURES = 3


def _info_key(region: str) -> str:
    return f"peer_info.{region}"


@dataclass
class ProvinceLink:
    """A city's view of its province, kept up to date by the heartbeat loop."""

    info: federation_pb2.NodeInfo | None = None
    last_seen: dt.datetime | None = None
    clock_skew_ms: int = 0
    last_error: str = ""
    failures: int = 0
    next_attempt_at: dt.datetime | None = None

    def succeeded(self, info: federation_pb2.NodeInfo, skew_ms: int) -> None:
        self.info = info
        self.last_seen = dt.datetime.now(dt.UTC)
        self.clock_skew_ms = skew_ms
        self.last_error = ""
        self.failures = 0
        self.next_attempt_at = None

    def failed(self, error: str, retry_in: float) -> None:
        self.last_error = error
        self.failures += 1
        self.next_attempt_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=retry_in)

    @property
    def health(self) -> federation_pb2.PeerHealth.ValueType:
        if self.failures >= UNREACHABLE_FAILURES:
            return federation_pb2.PEER_HEALTH_UNREACHABLE
        if self.failures:
            return federation_pb2.PEER_HEALTH_DEGRADED
        if self.last_seen is None:
            return federation_pb2.PEER_HEALTH_UNSPECIFIED
        return federation_pb2.PEER_HEALTH_HEALTHY


async def heard_from(db: Database, region: str) -> bool:
    """Whether a node of ``region`` ever spoke to this one: a member that joined online, a
    city that sent heartbeats or published its catalog here (also one admitted by file)."""
    row = await db.fetch_one(
        "SELECT 1 FROM federation_member WHERE region = :region "
        "UNION ALL SELECT 1 FROM node_meta WHERE key = :info "
        "UNION ALL SELECT 1 FROM feed_cursor WHERE peer_region = :region",
        {"region": region, "info": _info_key(region)},
    )
    return row is not None


def skew_ms(theirs: dt.datetime | None) -> int:
    """Peer clock (``theirs``: the server_time it sent, already checked by
    node.servicers.convert.optional_time) minus ours, in milliseconds (0 when it sent none)."""
    if theirs is None:
        return 0
    return int((theirs - dt.datetime.now(dt.UTC)).total_seconds() * 1000)


def health_for_age(
    last_seen: dt.datetime | None, period_s: float
) -> federation_pb2.PeerHealth.ValueType:
    if last_seen is None:
        return federation_pb2.PEER_HEALTH_UNSPECIFIED
    age = (dt.datetime.now(dt.UTC) - last_seen).total_seconds()
    if age <= HEALTHY_BEATS * period_s:
        return federation_pb2.PEER_HEALTH_HEALTHY
    if age <= DEGRADED_BEATS * period_s:
        return federation_pb2.PEER_HEALTH_DEGRADED
    return federation_pb2.PEER_HEALTH_UNREACHABLE


async def record_peer_info(
    db: Database, region: str, info: federation_pb2.NodeInfo, server_time: dt.datetime | None
) -> None:
    """Keep what a peer last said about itself, when, and the clock skew then (``server_time``:
    its ``info.server_time``, checked)."""
    value = json.dumps(
        {
            "node": json_format.MessageToDict(info),
            "clock_skew_ms": skew_ms(server_time),
            "seen_at": dt.datetime.now(dt.UTC).isoformat(),
        },
        ensure_ascii=False,
    )
    key = _info_key(region)

    async def txn(session: AsyncSession) -> None:
        row = await session.get(NodeMetaRow, key, with_for_update=True)
        if row is None:
            try:  # two heartbeats of a new peer may race to insert its first row
                async with session.begin_nested():
                    session.add(NodeMetaRow(key=key, value=value))
                return
            except IntegrityError as error:
                if not db.is_unique_violation(error):
                    raise
            row = await session.get(NodeMetaRow, key, with_for_update=True, populate_existing=True)
            assert row is not None  # the other heartbeat's row, committed
        row.value = value

    await db.write("peers.record_info", txn)


async def province_peers(
    db: Database, period_s: float, *, after_region: str = "", limit: int = 100
) -> list[federation_pb2.Peer]:
    """The province's peers ordered by region (after ``after_region``): its members (joined
    online) and every city that has sent heartbeats (also those admitted by file)."""

    async def txn(session: AsyncSession) -> list[federation_pb2.Peer]:
        members = {m.region: m for m in (await session.exec(select(FederationMemberRow))).all()}
        infos = {
            row.key.removeprefix("peer_info."): json.loads(row.value)
            for row in (
                await session.exec(
                    select(NodeMetaRow).where(col(NodeMetaRow.key).startswith("peer_info."))
                )
            ).all()
        }
        approved = set((await session.exec(select(SubPlatformApprovalRow.region).distinct())).all())
        regions = sorted(r for r in set(members) | set(infos) if r > after_region)[:limit]
        peers = []
        for region in regions:
            member = members.get(region)
            stored = infos.get(region, {})
            cursor = await session.get(FeedCursorRow, region)
            info = federation_pb2.NodeInfo()
            json_format.ParseDict(stored.get("node", {}), info, ignore_unknown_fields=True)
            info.region = region
            info.mode = federation_pb2.NODE_MODE_CITY
            info.approved_sub_platform = region in approved  # the province's record decides
            last_seen = None
            if member is not None:
                info.name = info.name or member.name
                info.listen_address = info.listen_address or member.endpoint
                last_seen = member.last_seen_at
            if last_seen is None and "seen_at" in stored:
                last_seen = dt.datetime.fromisoformat(stored["seen_at"])
            health = health_for_age(last_seen, period_s)
            peer = federation_pb2.Peer(
                node=info,
                health=health,
                applied_catalog_sequence=0 if cursor is None else cursor.last_applied_sequence,
                clock_skew_ms=int(stored.get("clock_skew_ms", 0)),
            )
            if last_seen is not None:
                peer.last_seen.FromDatetime(last_seen)
            if health not in (
                federation_pb2.PEER_HEALTH_HEALTHY,
                federation_pb2.PEER_HEALTH_UNSPECIFIED,
            ):
                peer.last_error = f"no heartbeat for over {HEALTHY_BEATS * period_s:.0f} s"
            peers.append(peer)
        return peers

    return await db.read("peers.province", txn)
