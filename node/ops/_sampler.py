"""What the metrics read from the database, refreshed in the background.

A scrape must never wait on the database (it runs on the node's loop, and Prometheus scrapes
every node every 15 s or so), so the sampler reads, every ``[metrics] refresh_seconds``, what
the node already keeps, into the :class:`~node.ops.Snapshot` the scrape copies out:

- peers: on the province every city it knows (``node.federation.province_peers``: heartbeats,
  applied feed sequence); on a city its province (``ProvinceLink``, the heartbeat loop's view,
  and its feed cursor). Up means heard from within 3 heartbeat periods. Feed lag is how many
  catalog changes the peer last said it had that this node has not applied yet;
- the audit log: its newest checkpoint's size, and when the newest checkpoint a witness
  cosigned was signed (witness lag is now minus that);
- quality: how many resources have each grade in their latest check;
- aggregation (汇聚, 第二十一条): how many of this region's active resources are overdue under
  their update cycle now, by cycle. It is the very judgement supervision's certificates make
  ("aggregated on time", node.supervision) and GetAggregationStatus reports:
  ``Records.aggregation_status`` over the catalog's entries of this region, probes left out;
- certificates: the node's own (leaf and its CA), the region CA's and the root's expiry, read
  once at start from their files; and, each round, for each kind of certificate this node's CA
  issued (agency, operator, tester, portal, authority: recorded since migration 0030 by the CLI
  and the console, node.pki.IssuedCertificates), the soonest expiry among those neither revoked
  nor expired, labelled by kind only, never by subject.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import structlog
from cryptography import x509
from govnode.v1 import federation_pb2

from node.audit import Checkpoints
from node.catalog import Catalog, UpdateCycle
from node.config import Mode, NodeConfig
from node.federation import ProvinceLink, province_peers
from node.ops._metrics import Snapshot
from node.pki import IssuedCertificates
from node.records import Records
from node.storage import Database
from node.tasks import BackgroundJob

log = structlog.get_logger("govnode.ops")

GRADES = ("A", "B", "C", "D", "E")
_PEERS_SHOWN = 100  # a province has about ten cities; bounded all the same
#: The cycles a resource can be overdue under (an irregular one never is).
CYCLES = tuple(c.value for c in UpdateCycle if c is not UpdateCycle.IRREGULAR)
#: The catalog page one aggregation read covers, and the most resources a round reads: a region
#: has hundreds to a few thousand; beyond the cap a round counts what it read (logged).
_CATALOG_PAGE = 500
_MAX_RESOURCES = 50_000

_LATEST_GRADES = (
    "SELECT q.grade, COUNT(*) FROM quality_check q JOIN "
    "(SELECT resource_code, MAX(id) AS id FROM quality_check GROUP BY resource_code) latest "
    "ON q.id = latest.id GROUP BY q.grade"
)
_CURSOR = "SELECT last_applied_sequence FROM feed_cursor WHERE peer_region = :region"


def certificate_expiries(config: NodeConfig) -> dict[tuple[str, ...], float]:
    """kind -> expiry (Unix time) of the node's certificates on disk: ``node`` (its leaf),
    ``node_ca`` (the CA that issued it, when the chain carries it), ``region_ca`` (the CA this
    node issues agencies from) and ``root``."""
    found: dict[tuple[str, ...], float] = {}

    def read(path: Path) -> list[x509.Certificate]:
        try:
            return x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            return []

    roots = read(config.path(config.tls.root))
    chain = [c for c in read(config.path(config.tls.cert)) if c not in roots]
    for kind, certs in (
        ("node", chain[:1]),
        ("node_ca", chain[1:2]),
        ("region_ca", read(config.path(config.tls.ca_cert))[:1]),
        ("root", roots[:1]),
    ):
        if certs:
            found[(kind,)] = certs[0].not_valid_after_utc.timestamp()
    return found


class Sampler(BackgroundJob):
    task_name = "govnode-metrics-sampler"

    def __init__(
        self,
        snapshot: Snapshot,
        config: NodeConfig,
        db: Database,
        checkpoints: Checkpoints,
        link: ProvinceLink | None,
        *,
        catalog: Catalog,
        records: Records,
    ) -> None:
        self._snapshot = snapshot
        self._catalog = catalog
        self._records = records
        self._config = config
        self._db = db
        self._checkpoints = checkpoints
        self._link = link
        self._own_certificates = certificate_expiries(config)
        snapshot.replace("govnode_certificate_expiry_timestamp_seconds", self._own_certificates)

    async def _forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the database is down: the next round tries again
                log.warning("metrics_refresh_failed", error=repr(exc)[:300])
            await asyncio.sleep(self._config.metrics.refresh_seconds)

    async def refresh(self) -> None:
        await self._peers()
        await self._audit()
        await self._grades()
        await self._issued()
        await self._overdue()

    async def _peers(self) -> None:
        period = self._config.federation.heartbeat_seconds
        up: dict[tuple[str, ...], float] = {}
        seen: dict[tuple[str, ...], float] = {}
        lag: dict[tuple[str, ...], float] = {}
        healthy = federation_pb2.PEER_HEALTH_HEALTHY
        if self._config.node.mode is Mode.PROVINCE:
            for peer in await province_peers(self._db, period, limit=_PEERS_SHOWN):
                region = (peer.node.region,)
                up[region] = float(peer.health == healthy)
                if peer.HasField("last_seen"):
                    seen[region] = peer.last_seen.ToDatetime(dt.UTC).timestamp()
                behind = peer.node.catalog_last_sequence - peer.applied_catalog_sequence
                lag[region] = float(max(0, behind))
        elif self._link is not None:
            province = self._config.federation.province_region or ""
            link, region = self._link, (province,)
            up[region] = float(link.health == healthy)
            if link.last_seen is not None:
                seen[region] = link.last_seen.timestamp()
            if link.info is not None:
                row = await self._db.fetch_one(_CURSOR, {"region": province})
                applied = int(row[0]) if row is not None else 0
                lag[region] = float(max(0, link.info.catalog_last_sequence - applied))
        self._snapshot.replace("govnode_peer_up", up)
        self._snapshot.replace("govnode_peer_last_heartbeat_timestamp_seconds", seen)
        self._snapshot.replace("govnode_catalog_feed_lag_changes", lag)

    async def _audit(self) -> None:
        newest = await self._checkpoints.newest()
        if newest is not None:
            self._snapshot.set("govnode_audit_log_size_records", float(newest.size))
        witnessed = await self._checkpoints.newest_cosigned()
        if witnessed is not None:
            self._snapshot.set(
                "govnode_witnessed_checkpoint_timestamp_seconds", witnessed.made_at.timestamp()
            )

    async def _grades(self) -> None:
        counts: dict[tuple[str, ...], float] = {(grade,): 0.0 for grade in GRADES}
        for grade, count in await self._db.fetch_all(_LATEST_GRADES, {}):
            if grade in GRADES:  # "" is a check that measured nothing
                counts[(str(grade),)] = float(count)
        self._snapshot.replace("govnode_quality_resources", counts)

    async def _issued(self) -> None:
        expiries = dict(self._own_certificates)
        for kind, when in (await IssuedCertificates(self._db).earliest_expiry()).items():
            expiries[(kind,)] = when.timestamp()
        self._snapshot.replace("govnode_certificate_expiry_timestamp_seconds", expiries)

    async def _overdue(self) -> None:
        counts: dict[tuple[str, ...], float] = {(cycle,): 0.0 for cycle in CYCLES}
        token, read = "", 0
        while True:
            entries, token = await self._catalog.list(
                region=self._config.node.region, page_size=_CATALOG_PAGE, page_token=token
            )
            own = [e for e in entries if not e.probe]
            for status in await self._records.aggregation_status(own):
                if status.overdue:
                    counts[(status.update_cycle.value,)] += 1
            read += len(entries)
            if not token:
                break
            if read >= _MAX_RESOURCES:
                log.warning("metrics_overdue_truncated", resources_read=read)
                break
        self._snapshot.replace("govnode_aggregation_overdue_resources", counts)
