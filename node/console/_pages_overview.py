"""The overview: the node, its health and maintenance switch, peers, certificates about to
expire and the desks' pending counts. ``/overview/live`` is the same live part as a fragment,
which htmx polls every 5 s; without JavaScript the page shows the values of its load."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography import x509
from govnode.v1 import federation_pb2

from gateway.identity import ConsoleRole
from node.config import Mode
from node.console._actions import audited
from node.console._counts import pending_counts
from node.console._identity import ConsoleRefusal, operator_of
from node.console._render import render
from node.console._state import ConsoleState, state_of
from node.errors import FailedPrecondition, StorageUnavailable
from node.federation import province_peers
from node.maintenance import MaintenanceState
from node.pki import IssuedCertificates
from node.version import software_version

#: Peers the overview lists (a province has at most a few dozen cities).
MAX_PEERS = 200


async def live_values(state: ConsoleState) -> dict[str, Any]:
    """What the live part of the overview shows (every value one bounded query or less)."""
    db = state.services.db
    return {
        "serving": state.health.serving,
        "maintenance": state.health.maintenance,
        "switch": await _switch(state),
        "storage_ok": db.health.available,
        "pending": await pending_counts(db),
        "checkpoint": await _checkpoint(state),
        "now": dt.datetime.now(dt.UTC),
    }


async def _switch(state: ConsoleState) -> MaintenanceState | None:
    """The stored maintenance switch (since when, who, why), or None when the database cannot
    say now (the live part still shows health and storage)."""
    try:
        return await state.maintenance.maintenance.state()
    except (StorageUnavailable, FailedPrecondition):
        return None


async def _checkpoint(state: ConsoleState) -> dict[str, Any] | None:
    """The newest checkpoint whose cosignatures meet the node's witness rule: its size, when
    it was signed and how old it is."""
    services = state.services
    if services.checkpoints is None or services.witness_rule is None:
        return None
    found = await services.checkpoints.newest_witnessed(await services.witness_rule())
    if found is None:
        return None
    age = dt.datetime.now(dt.UTC) - found.made_at
    return {
        "size": found.size,
        "made_at": found.made_at,
        "age": _age(age),
        "stale": age > dt.timedelta(seconds=3 * state.config.audit.checkpoint_seconds + 60),
        "cosigned_by": found.cosigned_by,
    }


def _age(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} 秒前"
    if seconds < 7200:
        return f"{seconds // 60} 分钟前"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} 小时前"
    return f"{seconds // 86400} 天前"


@dataclass(frozen=True)
class PeerRow:
    region: str
    name: str
    health: str
    last_seen: dt.datetime | None
    digest_match: bool | None  # None: the peer has not said its digest yet
    error: str


_HEALTH: dict[int, tuple[str, str]] = {
    federation_pb2.PEER_HEALTH_HEALTHY: ("正常", "ok"),
    federation_pb2.PEER_HEALTH_DEGRADED: ("降级", "warn"),
    federation_pb2.PEER_HEALTH_UNREACHABLE: ("不可达", "bad"),
    federation_pb2.PEER_HEALTH_UNSPECIFIED: ("尚无心跳", "warn"),
}


async def peers(state: ConsoleState) -> list[tuple[PeerRow, str]]:
    """The node's peers as ``govnode status`` lists them (ListPeers): for the province each
    city, for a city its province link; with whether each one's catalog digest matches this
    node's (the catalog replicates, so the same catalog has the same digest)."""
    services = state.services
    config = state.config
    own_digest = await _own_digest(state)
    found: list[tuple[str, str, int, dt.datetime | None, str, str]] = []
    if config.node.mode is Mode.PROVINCE:
        for peer in await province_peers(
            services.db, config.federation.heartbeat_seconds, limit=MAX_PEERS
        ):
            last = peer.last_seen.ToDatetime(dt.UTC) if peer.HasField("last_seen") else None
            found.append(
                (
                    peer.node.region,
                    peer.node.name,
                    peer.health,
                    last,
                    peer.node.catalog_digest,
                    peer.last_error,
                )
            )
    else:
        link = services.province_link
        info = link.info if link is not None else None
        found.append(
            (
                config.federation.province_region or "",
                info.name if info is not None else "",
                link.health if link is not None else federation_pb2.PEER_HEALTH_UNSPECIFIED,
                link.last_seen if link is not None else None,
                info.catalog_digest if info is not None else "",
                link.last_error if link is not None else "",
            )
        )
    rows = []
    for region, name, health, last, digest, error in found:
        label, css = _HEALTH.get(health, ("未知", "warn"))
        rows.append(
            (
                PeerRow(region, name, label, last, digest == own_digest if digest else None, error),
                css,
            )
        )
    return rows


#: How long the overview reuses this node's catalog digest.
DIGEST_TTL_S = 30.0


async def _own_digest(state: ConsoleState) -> str:
    now = time.monotonic()
    if state.digest is None or now - state.digest[0] > DIGEST_TTL_S:
        digest, _, _ = await state.services.catalog.digest()
        state.digest = (now, digest)
    return state.digest[1]


async def expiring(state: ConsoleState) -> list[tuple[str, str, dt.datetime]]:
    """Certificates expiring within ``[console] expiry_warning_days``: the node's own, its
    region CA, and unrevoked ones it issued ((what, identity or serial, not after))."""
    days = state.config.console.expiry_warning_days
    limit = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    warnings = []
    node_cert = x509.load_pem_x509_certificate(state.services.chain_pem.encode())
    for what, cert in (("节点证书", node_cert), ("本区域 CA", state.region_ca)):
        if cert.not_valid_after_utc <= limit:
            warnings.append((what, state.services.identity.uri, cert.not_valid_after_utc))
    issued = IssuedCertificates(state.services.db)
    for row in await issued.expiring(dt.timedelta(days=days), limit=20):
        warnings.append((f"已签发（{row.kind}）", row.identity, row.not_after))
    return warnings


async def overview(request: web.Request) -> web.Response:
    state = state_of(request)
    config = state.config
    return await render(
        request,
        "overview.html",
        node={
            "name": config.node.name,
            "identity": state.services.identity.uri,
            "mode": config.node.mode.value,
            "region": config.node.region,
            "version": software_version(),
            "storage": config.database_url.split("+", 1)[0],
            "started_at": state.started_at,
        },
        live=await live_values(state),
        peers=await peers(state),
        expiring=await expiring(state),
        warn_days=state.config.console.expiry_warning_days,
    )


async def overview_live(request: web.Request) -> web.Response:
    return await render(request, "overview_live.html", live=await live_values(state_of(request)))


async def maintenance(request: web.Request) -> web.Response:
    """Switch maintenance mode (system role): health NOT_SERVING for peers and load balancers
    while on (gateway.server.HealthReporter), whatever the storage monitor reports. Kept in
    the database, as ``govnode maintenance`` keeps it (node.maintenance), with the optional
    ``reason``; this process applies it at once, the node's others within seconds."""
    form = await request.post()
    wanted = form.get("on")
    if wanted not in ("1", "0"):
        raise ConsoleRefusal(400, "参数 on 应为 1（开启）或 0（关闭）", "INVALID_ARGUMENT")
    reason = form.get("reason", "")
    if not isinstance(reason, str):
        raise ConsoleRefusal(400, "参数 reason 应为文本", "INVALID_ARGUMENT")
    on = wanted == "1"
    state = state_of(request)
    await audited(
        request,
        "/maintenance",
        ConsoleRole.SYSTEM,
        lambda: state.maintenance.switch(on, by=operator_of(request).uri, reason=reason),
        detail={"maintenance": "on" if on else "off", "reason": reason},
    )
    raise web.HTTPSeeOther("/")


def routes(table: web.RouteTableDef) -> None:
    table.get("/")(overview)
    table.get("/overview/live")(overview_live)
    table.post("/maintenance")(maintenance)
