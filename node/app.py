"""A running node: storage, TLS identity, the guarded gRPC server, and its lifecycle.

Start-up refuses loudly when anything would make the node unsafe: a region that may not run a
platform (checked by the config), a node certificate that does not carry this node's identity
or chain to the configured root, or a certificate that has expired. Health reports
NOT_SERVING while the node cannot write to its database (node.storage.StorageMonitor).
Shutdown reports NOT_SERVING first, so load balancers and peers drain before the port closes,
and ends the streams peers, agencies and health watchers hold open (UNAVAILABLE: reconnect
later, resuming where the status says) instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc.aio
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.assertion import AssertionVerifier
from gateway.auth import Authenticator
from gateway.forward import Forwarder
from gateway.identity import (
    Identity,
    IdentityError,
    Role,
    authority_identity,
    check_chain,
    make_identity,
)
from gateway.interceptors import GuardInterceptor, add_audit_detail
from gateway.ratelimit import AnonymousLimiter
from gateway.request_limits import RequestChecks, RequestLimits
from gateway.server import (
    HealthReporter,
    ServerLimits,
    build_server,
    enable_reflection,
    infrastructure_services,
)
from gateway.streams import StreamGate, StreamLimits
from gateway.tls import TlsFiles, join_server_credentials, server_credentials
from gateway.tracing import Tracing
from gateway.tracing_setup import TracingUnavailable, make_tracer_provider, tracing_of
from node.audit import (
    AuditLog,
    Checkpoints,
    NodeAuditSink,
    UsageLog,
    Witness,
    log_origin,
    log_signer,
    witness_signer,
    witness_statement,
)
from node.catalog import Catalog, ResourceEntry
from node.clients import (
    CheckpointPublisher,
    CitySync,
    NoticeDelivery,
    SummaryPublisher,
    fetch_city_catalog,
    witness_endpoints,
    witness_rule,
)
from node.config import Mode, NodeConfig
from node.console import Console, ConsoleError, start_console
from node.federation import (
    AssertionNonces,
    CatalogExchange,
    NoticeOutbox,
    ProvinceLink,
    Router,
    approved_cities,
    heard_from,
)
from node.maintenance import Maintenance, MaintenanceWatch
from node.opendata import (
    CityCatalogs,
    CityDataset,
    OpenApplications,
    OpenCatalog,
    OpenData,
    OpenKeys,
    Publisher,
    Republisher,
    open_data_gate,
)
from node.ops import (
    HealthFacts,
    LoopLagMonitor,
    MetricsListener,
    NodeMetrics,
    Sampler,
    start_listener,
)
from node.pki import (
    Revocations,
    load_chain_pem,
    load_or_create_secret,
    load_or_create_witness_key,
    load_private_key,
    verify_chain,
)
from node.quality import (
    CompareItems,
    DailyCheck,
    DataErrors,
    ErrorSettings,
    Quality,
    QualitySettings,
    SourceCompare,
    Thresholds,
    count_overdue,
)
from node.records import Records, VerifyOutcome
from node.servicers import (
    Services,
    register_join_service,
    register_services,
    service_descriptors,
)
from node.servicers.status import refusal_for
from node.servicers.stream_hints import RESUME_HINTS
from node.sharing import AccessDecider, NotificationKind, Notifications, OracleGuard
from node.storage import Database, StorageMonitor
from node.supervision import NoticeWatch, Rectifications, Rollup, Supervision
from node.version import software_version

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("govnode.node")

#: How long a stopping node waits for its streams to end (see RunningNode.stop), at most the
#: grace: a stream busy with a batch ends at its next message boundary.
STREAMS_END_S = 5.0


class StartupError(Exception):
    """The node cannot start; the message says why and what to fix."""


def node_tls_files(config: NodeConfig) -> TlsFiles:
    return TlsFiles(
        key=config.path(config.tls.key),
        chain=config.path(config.tls.cert),
        root=config.path(config.tls.root),
    )


def check_node_certificate(config: NodeConfig) -> tuple[Identity, x509.Certificate]:
    """The node's own identity, after checking its certificate fits this configuration."""
    files = node_tls_files(config)
    try:
        _, chain_pem, root_pem = files.read()
    except FileNotFoundError as exc:
        raise StartupError(
            f"{exc}; run `govnode init` (or `govnode certs install`) first"
        ) from None
    chain = x509.load_pem_x509_certificates(chain_pem)
    root = x509.load_pem_x509_certificate(root_pem)
    expected = make_identity(config.node.region, config.node.trust_domain, Role.NODE)
    try:
        identity = check_chain([c for c in chain if c != root], config.node.trust_domain)
    except IdentityError as exc:
        raise StartupError(f"tls.cert ({files.chain}): {exc}") from None
    if identity != expected:
        raise StartupError(
            f"tls.cert ({files.chain}) carries identity {identity}, but node.region and "
            f"node.trust_domain say this node is {expected}"
        )
    leaf = chain[0]
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise StartupError(
            f"tls.cert ({files.chain}) expired at {leaf.not_valid_after_utc.isoformat()}"
        )
    top = [c for c in chain if c != root][-1]
    try:
        top.verify_directly_issued_by(root)
    except Exception:
        raise StartupError(
            f"tls.cert ({files.chain}) does not chain to tls.root ({files.root})"
        ) from None
    return identity, root


@dataclass
class RunningNode:
    config: NodeConfig
    identity: Identity
    server: grpc.aio.Server
    health: HealthReporter
    db: Database
    audit: AuditLog
    port: int
    sync: CitySync | None = None  # city nodes: catalog exchange with the province
    join_port: int | None = None  # province with federation.join_listen: the join port
    forwarder: Forwarder | None = None  # routed calls: channels and breakers per peer
    guard: GuardInterceptor | None = None  # to wait for calls in progress when stopping
    join: JoinPort | None = None  # the join port's own server and guard
    monitor: StorageMonitor | None = None  # health from the database's state
    #: The audit log's signed checkpoints, and what signs them on schedule and gathers its
    #: witnesses' cosignatures.
    checkpoints: Checkpoints | None = None
    publisher: CheckpointPublisher | None = None
    #: Publishes served open datasets again on their entries' update cycles.
    republisher: Republisher | None = None
    #: The province: its approved cities' open catalogs (their refreshes end at stop).
    city_catalogs: CityCatalogs | None = None
    #: Checks the quality of every resource of the node daily (第十五条).
    quality_check: DailyCheck | None = None
    #: Delivers the notifications this node holds for other regions' recipients.
    notices: NoticeDelivery | None = None
    #: Closes rectification notices whose figure recovered, escalates those past their
    #: deadline to 通报批评 (第四十二条).
    notice_watch: NoticeWatch | None = None
    #: Computes this region's supervision summary every [supervision] summary_seconds and
    #: publishes it: a city to its province, the province to its own roll-up.
    summary: SummaryPublisher | None = None
    #: Set when the node stops: long-lived streams (a city's WatchCatalog and PublishCatalog)
    #: end at once with UNAVAILABLE instead of holding the shutdown for its grace period.
    stopping: asyncio.Event | None = None
    #: ``[metrics]``: the node's series, their listener and the event-loop monitor.
    metrics: NodeMetrics | None = None
    metrics_listener: MetricsListener | None = None
    loop_lag: LoopLagMonitor | None = None
    metrics_sampler: Sampler | None = None
    #: The node's own TracerProvider when ``[tracing]`` made one (flushed and shut at stop).
    tracer_provider: TracerProvider | None = None
    #: The operator web console ([console] listen), when on.
    console: Console | None = None
    #: Keeps health NOT_SERVING while maintenance mode is on in the database (node.maintenance).
    maintenance: MaintenanceWatch | None = None

    @property
    def address(self) -> str:
        host = self.config.node.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.limits.shutdown_grace_seconds if grace is None else grace
        log.info("node_stopping", grace_s=grace)
        # NOT_SERVING first, and the streams that wait end now (UNAVAILABLE, saying where to
        # resume), not after the background jobs below have stopped (a job cancelled in a
        # database round trip may take a while) nor after the grace. The storage monitor
        # first, so that a recovery it sees now cannot say SERVING again.
        if self.monitor is not None:
            await self.monitor.stop()
        await self.health.set_serving(False)
        if self.stopping is not None:
            self.stopping.set()
        if self.guard is not None and self.guard.streams is not None:
            self.guard.streams.stop()
        began = time.monotonic()
        if self.console is not None:
            await self.console.stop()
        if self.sync is not None:
            await self.sync.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.republisher is not None:
            await self.republisher.stop()
        if self.quality_check is not None:
            await self.quality_check.stop()
        if self.notices is not None:
            await self.notices.stop()
        if self.notice_watch is not None:
            await self.notice_watch.stop()
        if self.summary is not None:
            await self.summary.stop()
        if self.maintenance is not None:
            await self.maintenance.stop()
        if (took := time.monotonic() - began) > 1.0:
            log.info("node_stop_background_jobs_slow", took_s=round(took, 1))
        # The stopped streams' statuses leave before the server shuts down: sent during the
        # shutdown, a status could fail (ExecuteBatchError) and its call then held the stop for
        # the whole grace. A stream busy with a batch ends at its next boundary.
        streams = self.guard.streams if self.guard is not None else None
        within = min(grace, STREAMS_END_S)
        if streams is not None and (left := await streams.ended(within)):
            if within > 0:
                # Work that did not reach its next boundary, or a status that did not leave:
                # cancelled rather than held for the grace (gateway.streams).
                log.warning("streams_outlived_stop", count=left, streams=streams.describe_open())
                streams.cancel_open()
                left = await streams.ended(within)
            if left:
                log.info("streams_still_open_at_stop", count=left)
        if self.join is not None:
            await self.join.server.stop(grace)
        await self.health.stop()
        await self.server.stop(grace)
        for guard in (self.guard, self.join.guard if self.join is not None else None):
            if guard is not None:
                left = await guard.drain(max(grace, 1.0) + 4.0)
                if left:
                    log.warning("calls_still_running_at_stop", count=left)
        if self.city_catalogs is not None:
            await self.city_catalogs.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.metrics_listener is not None:
            await self.metrics_listener.stop()
        if self.loop_lag is not None:
            await self.loop_lag.stop()
        if self.metrics_sampler is not None:
            await self.metrics_sampler.stop()
        await self.audit.close()
        await self.db.close()
        if self.tracer_provider is not None:
            # Flushes the spans still queued: blocking (an export), so off the loop.
            await asyncio.to_thread(self.tracer_provider.shutdown)
        log.info("node_stopped")


@dataclass
class JoinPort:
    """The province's join port: a server of its own, because its callers have no certificate.

    It serves only FederationService/Join (see gateway.interceptors.TOKEN_AUTHORISED_METHODS);
    every other call there is UNAUTHENTICATED. Being a server of its own, it has limits of its
    own: a small message size (federation.join_max_message_bytes: grpc refuses a larger
    message before it reaches the node) and a guard that rate-limits attempts by address."""

    server: grpc.aio.Server
    guard: GuardInterceptor
    port: int


def _join_port(
    config: NodeConfig,
    authenticator: Authenticator,
    sink: NodeAuditSink,
    services: Services,
    metrics: NodeMetrics | None = None,
) -> JoinPort | None:
    """Build and bind the join port (federation.join_listen), if configured."""
    fed = config.federation
    address = fed.join_listen
    if address is None:
        return None
    limiter = AnonymousLimiter(
        fed.join_per_minute_per_address, fed.join_per_minute_total, what="join attempts"
    )
    guard = GuardInterceptor(
        authenticator,
        sink,
        limiter=limiter,
        translate=refusal_for,
        metrics=metrics.server if metrics is not None else None,  # with the main port's
    )
    server = build_server(guard, _limits(config, max_message_bytes=fed.join_max_message_bytes))
    register_join_service(server, services, infrastructure_services())
    try:
        port = server.add_secure_port(address, join_server_credentials(node_tls_files(config)))
    except RuntimeError as exc:
        raise StartupError(f"federation.join_listen: cannot listen on {address}: {exc}") from None
    if port == 0:
        raise StartupError(f"federation.join_listen: cannot listen on {address}")
    return JoinPort(server, guard, port)


def _limits(config: NodeConfig, *, max_message_bytes: int) -> ServerLimits:
    return ServerLimits(
        max_message_bytes=max_message_bytes,
        handshake_timeout_ms=round(config.limits.handshake_timeout_seconds * 1000),
        reuse_port=config.node.reuse_port,
    )


@dataclass(frozen=True)
class _Evidence:
    """What the audit checkpoints and witnessing need of the node's keys."""

    checkpoints: Checkpoints
    witness: Witness
    statement: bytes
    chain_pem: str
    usage: UsageLog
    #: The node key: it also signs download receipts (第三十五条).
    node_key: ec.EllipticCurvePrivateKey


def _open_data(
    config: NodeConfig,
    identity: Identity,
    db: Database,
    catalog: Catalog,
    notifications: Notifications,
) -> tuple[OpenData, OpenApplications, OpenKeys]:
    """The open catalog (第二十九条) and 授权开放 (第三十二至三十五条) of this node."""
    section = config.opendata
    try:
        secret = load_or_create_secret(config.path(section.key_secret))
    except Exception as exc:
        raise StartupError(f"opendata.key_secret: {exc}") from None
    opendata = OpenData(
        db,
        catalog,
        node_region=config.node.region,
        min_k=section.min_k,
        max_suppressed=section.max_suppressed,
        may_open=open_data_gate(db, province=config.node.mode is Mode.PROVINCE),
    )
    keys = OpenKeys(
        db,
        notifications,
        identity,
        key_secret=secret,
        use_report_days=section.use_report_days,
        use_report_grace_days=section.use_report_grace_days,
    )
    applications = OpenApplications(
        db,
        catalog,
        opendata,
        notifications,
        keys,
        identity,
        max_grant_days=section.max_grant_days,
    )
    return opendata, applications, keys


def _evidence(
    config: NodeConfig,
    identity: Identity,
    root: x509.Certificate,
    db: Database,
    audit: AuditLog,
    notifications: Notifications,
) -> _Evidence:
    node_key = load_private_key(config.path(config.tls.key))
    try:
        witness_key = load_or_create_witness_key(config.path(config.tls.witness_key))
    except Exception as exc:
        raise StartupError(f"tls.witness_key: {exc}") from None
    chain_pem = load_chain_pem(config.path(config.tls.cert), root)
    verify_chain(chain_pem, root, config.node.trust_domain)  # as a verifier will
    authority = authority_identity(config.node.region, config.node.trust_domain)

    async def alarm(origin: str, message: str) -> None:
        await notifications.notify(authority, NotificationKind.AUDIT_LOG_MISBEHAVED, message)

    return _Evidence(
        checkpoints=Checkpoints(
            db, audit, log_origin(identity.host), log_signer(identity.host, node_key)
        ),
        witness=Witness(db, witness_signer(identity.host, witness_key), alarm),
        statement=witness_statement(identity, node_key, witness_key.public_key()),
        chain_pem=chain_pem,
        usage=UsageLog(db, audit, identity.host, node_key, chain_pem),
        node_key=node_key,
    )


def quality_of(
    config: NodeConfig,
    db: Database,
    catalog: Catalog,
    audit: AuditLog | None = None,
    router: Router | None = None,
) -> Quality:
    """The quality checks of this node's resources, as ``[quality]`` configures them (the CLI
    builds the same). ``router``: 一致性 samples against a source at another node are routed
    there as this region's data management authority (None: those items stay unmeasured)."""
    section = config.quality
    source_compare: SourceCompare | None = None
    if router is not None:
        authority = make_identity(config.node.region, config.node.trust_domain, Role.AUTHORITY)

        async def source_compare(
            source: ResourceEntry, for_resource: str, records: CompareItems, seconds: float
        ) -> list[tuple[str, VerifyOutcome]]:
            return await router.quality_compare(authority, source, for_resource, records, seconds)

    settings = QualitySettings(
        window_days=section.window_days,
        thresholds=Thresholds(section.warn_below, section.critical_below),
        per_resource={
            code: Thresholds(t.warn_below, t.critical_below)
            for code, t in section.resources.items()
        },
        drop_points=section.drop_points,
        history_checks=section.history_checks,
        full_count_days=section.full_count_days,
        consistency_sample=section.consistency_sample,
    )
    return Quality(
        db,
        catalog,
        node_region=config.node.region,
        settings=settings,
        audit=audit,
        source_compare=source_compare,
    )


def supervision_of(config: NodeConfig, db: Database, audit: AuditLog) -> Supervision:
    """Compliance reports of this node's agencies (第八、四十二条); the CLI builds the same."""
    return Supervision(
        db,
        audit,
        node_region=config.node.region,
        trust_domain=config.node.trust_domain,
        # The error reports (纠错, 第十六条) on the agency's resources, due in the period.
        overdue_corrections=count_overdue,
    )


def rollup_of(
    config: NodeConfig, db: Database, supervision: Supervision, root: x509.Certificate
) -> Rollup:
    """The province roll-up (issue 15 item 6): at the province, the summaries its member
    cities (joined, heard from, or in ``[federation] peers``) send, checked against ``root``,
    and its own; a city refuses summaries (FAILED_PRECONDITION) and keeps none."""
    peers = frozenset(config.federation.peers)

    async def is_member(region: str) -> bool:
        return region in peers or await heard_from(db, region)

    return Rollup(
        supervision,
        root,
        is_member=is_member,
        stale_after=dt.timedelta(seconds=2 * config.supervision.summary_seconds),
    )


def data_errors_of(
    config: NodeConfig,
    db: Database,
    notifications: Notifications,
    decider: AccessDecider | None = None,
) -> DataErrors:
    """The error reports (纠错, 第十六条) on this node's records, as ``[quality]`` configures
    them (the CLI builds the same, without the oracle: it only asks who may use a resource)."""
    section = config.quality
    return DataErrors(
        db,
        decider or AccessDecider(db),
        notifications,
        node_region=config.node.region,
        trust_domain=config.node.trust_domain,
        settings=ErrorSettings(
            report_lookback_days=section.report_lookback_days,
            correction_days=section.correction_days,
            correction_lookback_days=section.correction_lookback_days,
        ),
    )


async def _metrics_listener(
    config: NodeConfig, metrics: NodeMetrics, health: HealthReporter, revocations: Revocations
) -> MetricsListener:
    """Start ``[metrics] listen`` (node.ops); a bind failure is a StartupError."""
    section = config.metrics
    assert section.listen is not None
    facts = HealthFacts(
        mode=config.node.mode.value, region=config.node.region, serving=lambda: health.serving
    )
    try:
        return await start_listener(
            section.listen,
            metrics,
            facts,
            tls=node_tls_files(config) if section.tls else None,
            trust_domain=config.node.trust_domain,
            is_revoked=revocations.reason_for,
        )
    except OSError as exc:
        raise StartupError(f"metrics.listen: cannot listen on {section.listen}: {exc}") from None


def _tracing(
    config: NodeConfig, provider: TracerProvider | None
) -> tuple[Tracing, TracerProvider | None]:
    """The node's spans: from ``provider`` (a caller's, e.g. a test's in-memory one), else
    from ``[tracing]`` (then the provider is the node's own: returned, to be shut at stop).
    Either way ``[tracing] sample_ratio`` samples new traces (gateway.tracing.Tracing)."""
    if provider is not None:
        return tracing_of(provider, config.tracing.sample_ratio), None
    try:
        own = make_tracer_provider(config.tracing, f"govnode-{config.node.region}")
    except TracingUnavailable as exc:
        raise StartupError(str(exc)) from None
    return tracing_of(own, config.tracing.sample_ratio), own


async def start_node(
    config: NodeConfig, *, tracer_provider: TracerProvider | None = None
) -> RunningNode:
    """Open storage, build the server and start serving; returns once the port is bound.
    ``tracer_provider``: records the node's spans instead of the one ``[tracing]`` names
    (the OpenTelemetry SDK's; several nodes in one process each need their own)."""
    identity, root = check_node_certificate(config)
    tracing, own_provider = _tracing(config, tracer_provider)
    db = await Database.open(config.database_url)
    audit = AuditLog(db)
    metrics: NodeMetrics | None = None
    if config.metrics.listen is not None:
        metrics = NodeMetrics(
            region=config.node.region, mode=config.node.mode.value, version=software_version()
        )
        audit.on_commit = metrics.audit_committed
    listener: MetricsListener | None = None
    try:
        await db.migrate()
        await audit.start()
        sink = NodeAuditSink(audit)
        revocations = Revocations(db)
        await revocations.assign_missing_sequences()
        verifier = AssertionVerifier(
            root,
            config.node.trust_domain,
            AssertionNonces(db).remember,
            region=config.node.region,
        )
        limits = config.limits
        streams = StreamGate(
            StreamLimits(
                per_caller=limits.streams_per_caller,
                per_origin_node=limits.streams_per_origin_node,
                total=limits.streams_total,
                stall_s=limits.stream_stall_seconds,
            ),
            hints=RESUME_HINTS,
        )
        authenticator = Authenticator(root, config.node.trust_domain, revocations.reason_for)
        requests = RequestChecks(
            [*service_descriptors(), *infrastructure_services()],
            RequestLimits(
                max_request_bytes=min(limits.max_request_bytes, limits.max_message_bytes),
                max_bulk_request_bytes=limits.max_message_bytes,
            ),
        )
        guard = GuardInterceptor(
            authenticator,
            sink,
            verifier,
            translate=refusal_for,
            streams=streams,
            requests=requests,
            metrics=metrics.server if metrics is not None else None,
            tracing=tracing,
        )
        forwarder = Forwarder(
            node_tls_files(config),
            metrics=metrics.client if metrics is not None else None,
            tracing=tracing,
        )
        server = build_server(guard, _limits(config, max_message_bytes=limits.max_message_bytes))
        catalog = Catalog(db, node_region=config.node.region)
        exchange = CatalogExchange(db, catalog)
        link = ProvinceLink() if config.node.mode is Mode.CITY else None
        notifications = Notifications(db)  # one instance: its watchers wake on every notice
        evidence = _evidence(config, identity, root, db, audit, notifications)
        opendata, open_applications, open_keys = _open_data(
            config, identity, db, catalog, notifications
        )
        stopping = asyncio.Event()
        may_open = open_data_gate(db, province=config.node.mode is Mode.PROVINCE)
        opendata = OpenData(
            db,
            catalog,
            node_region=config.node.region,
            min_k=config.opendata.min_k,
            max_suppressed=config.opendata.max_suppressed,
            may_open=may_open,
        )
        router = Router(config, db, forwarder)
        city_catalogs = None
        if config.node.mode is Mode.PROVINCE:
            section = config.opendata

            async def approved() -> list[str]:
                return await approved_cities(db)

            async def fetch(region: str) -> list[CityDataset]:
                return await fetch_city_catalog(router, region)

            city_catalogs = CityCatalogs(
                approved,
                fetch,
                refresh_s=section.city_catalog_seconds,
                keep_s=section.city_catalog_keep_seconds,
                wait_s=section.city_catalog_wait_seconds,
            )
        supervision = supervision_of(config, db, audit)
        rectifications = Rectifications(supervision, notifications)
        rollup = rollup_of(config, db, supervision, root)
        # Every data call's access decision; the grant and a suspected enumeration go into the
        # call's audit record.
        oracle = OracleGuard(db, config.oracle, notifications, config.node.trust_domain)
        if metrics is not None:
            oracle.observer = metrics.oracle_event
        decider = AccessDecider(db, oracle=oracle, audit_detail=add_audit_detail)
        data_errors = data_errors_of(config, db, notifications, decider)
        services = Services(
            config=config,
            identity=identity,
            db=db,
            catalog=catalog,
            records=Records(
                db,
                config.node.region,
                hold_updates=config.governance.submit_updates == "approve",
                trust_domain=config.node.trust_domain,
                on_held=notifications.notify_changed,
            ),
            audit=sink,
            exchange=exchange,
            decider=decider,
            province_link=link,
            router=router,
            audit_log=audit,
            checkpoints=evidence.checkpoints,
            usage=evidence.usage,
            witness=evidence.witness,
            root=root,
            witness_statement=evidence.statement,
            chain_pem=evidence.chain_pem,
            witness_rule=witness_rule(config, identity, db),
            opendata=opendata,
            open_catalog=OpenCatalog(
                db,
                opendata,
                may_open,
                Publisher(
                    region=config.node.region,
                    name=f"{config.node.name}数据管理机构",
                    base_url=config.open_data_base_url,
                ),
            ),
            node_key=evidence.node_key,
            open_applications=open_applications,
            open_keys=open_keys,
            city_catalogs=city_catalogs,
            notifications=notifications,
            quality=quality_of(config, db, catalog, audit, router),
            data_errors=data_errors,
            supervision=supervision,
            rectifications=rectifications,
            rollup=rollup,
            stopping=stopping,
            on_download=metrics.downloaded if metrics is not None else None,
        )
        names = register_services(server, services)
        health = HealthReporter(server, names)
        # Maintenance mode as the database has it, before the first answer: a node restarted
        # in maintenance is NOT_SERVING from the start.
        maintenance = MaintenanceWatch(Maintenance(db), health.set_maintenance)
        await maintenance.load()
        enable_reflection(server, names)
        try:
            port = server.add_secure_port(
                config.node.listen, server_credentials(node_tls_files(config))
            )
        except RuntimeError as exc:
            raise StartupError(
                f"node.listen: cannot listen on {config.node.listen}: {exc}"
            ) from None
        if port == 0:
            raise StartupError(f"node.listen: cannot listen on {config.node.listen}")
        join = _join_port(config, authenticator, sink, services, metrics)
        if metrics is not None:  # bound before serving: a bind failure stops nothing
            listener = await _metrics_listener(config, metrics, health, revocations)
        await server.start()
        if join is not None:
            await join.server.start()
        await health.set_serving(True)
        monitor = StorageMonitor(db, config.storage.health_probe_seconds, health.set_serving)
        monitor.start()
        console = None
        if config.console.listen is not None:
            try:
                console = await start_console(
                    services,
                    audit=audit,
                    health=health,
                    revocations=revocations,
                    maintenance=maintenance,
                )
            except ConsoleError as exc:
                await monitor.stop()
                if join is not None:
                    await join.server.stop(0)
                await server.stop(0)
                if listener is not None:
                    await listener.stop()
                raise StartupError(str(exc)) from None
    except BaseException:
        await audit.close()
        await db.close()
        raise
    node = RunningNode(
        config,
        identity,
        server,
        health,
        db,
        audit,
        port,
        join_port=join.port if join is not None else None,
        forwarder=forwarder,
        city_catalogs=city_catalogs,
        guard=guard,
        join=join,
        monitor=monitor,
        stopping=stopping,
        tracer_provider=own_provider,
        console=console,
        maintenance=maintenance,
    )
    maintenance.start()
    node.checkpoints = evidence.checkpoints
    if metrics is not None:
        node.metrics, node.metrics_listener = metrics, listener
        node.loop_lag = LoopLagMonitor(metrics.loop_lag)
        node.loop_lag.start()
        node.metrics_sampler = Sampler(
            metrics.snapshot,
            config,
            db,
            evidence.checkpoints,
            link,
            catalog=services.catalog,
            records=services.records,
        )
        node.metrics_sampler.start()
    node.publisher = CheckpointPublisher(
        db=db,
        audit=audit,
        checkpoints=evidence.checkpoints,
        identity=identity,
        tls=node_tls_files(config),
        root=root,
        chain_pem=evidence.chain_pem,
        witnesses=witness_endpoints(config, db),
        every_seconds=config.audit.checkpoint_seconds,
        every_records=config.audit.checkpoint_records,
    )
    node.publisher.start()
    if services.opendata is not None:
        node.republisher = Republisher(
            services.opendata, identity.uri, config.opendata.republish_check_seconds
        )
        node.republisher.start()
    if services.quality is not None:
        node.quality_check = DailyCheck(services.quality, identity.uri, config.quality.check_time)
        node.quality_check.start()
    node.notices = NoticeDelivery(
        config, NoticeOutbox(db, config.node.region), router, notifications
    )
    node.notices.start()
    if services.rectifications is not None:
        node.notice_watch = NoticeWatch(
            services.rectifications, config.supervision.notice_check_seconds
        )
        node.notice_watch.start()
    node.summary = SummaryPublisher(
        config,
        supervision,
        router,
        node_uri=identity.uri,
        node_key=evidence.node_key,
        chain_pem=evidence.chain_pem,
        rollup=rollup,
    )
    node.summary.start()
    if config.node.mode is Mode.CITY:
        node.sync = CitySync(config, identity, node_tls_files(config), catalog, exchange, link=link)
        node.sync.start()
    log.info(
        "node_serving",
        identity=str(identity),
        address=node.address,
        mode=config.node.mode.value,
        storage=config.database_url.split("://", 1)[0],
        join_port=node.join_port,
        metrics_port=listener.port if listener is not None else None,
    )
    return node


async def serve_forever(
    config: NodeConfig, *, tracer_provider: TracerProvider | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully (NOT_SERVING first).
    ``tracer_provider``: see :func:`start_node`.

    Once started, what the process holds (modules, the servicers, the pools: several hundred
    thousand objects that live as long as it does) is moved out of the garbage collector's
    reach (``gc.freeze``), so that its full collections do not scan it over and over. Calls
    that leave many objects alive for a while (traced calls: each span lives in the exporter's
    queue for up to a batch) set off full collections; measured, scanning the start-up heap was
    a third of what recording a span costs (bench/tracing_cost.py, ``span_us``)."""
    node = await start_node(config, tracer_provider=tracer_provider)
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await node.stop()
