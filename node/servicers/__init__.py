"""The gRPC servicers: thin translations between govnode.v1 messages and the domain.

:func:`register_services` builds a handler for every method of every govnode.v1 service from
the descriptors. Implemented methods are wrapped once with the domain-error mapping
(:mod:`node.servicers.status`); a method a later release implements answers UNIMPLEMENTED with
a message naming what is missing, and still shows up in reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from govnode.v1 import (
    access_pb2,
    audit_pb2,
    catalog_pb2,
    federation_pb2,
    opendata_pb2,
    quality_pb2,
    sharing_pb2,
    supervision_pb2,
    witness_pb2,
)

from gateway.audit import AuditSink
from gateway.identity import Identity
from gateway.interceptors import TOKEN_AUTHORISED_METHODS
from gateway.refusal import Refusal
from node.audit import AuditLog, Checkpoints, CosignedWatch, UsageLog, Witness, WitnessRule
from node.catalog import Catalog
from node.config import NodeConfig
from node.errors import DomainError
from node.federation import CatalogExchange, NoticeInbox, ProvinceLink, Router, heard_from
from node.governance import ChangeRequests
from node.opendata import (
    BudgetLimits,
    CityCatalogs,
    OpenApplications,
    OpenCatalog,
    OpenData,
    OpenKeys,
    PublicBudgets,
)
from node.quality import DataErrors, Quality
from node.records import Records, RecordsExchange
from node.servicers.access import AccessServicer
from node.servicers.audit import AuditServicer
from node.servicers.catalog import CatalogServicer
from node.servicers.change_requests import ChangeRequestServicer
from node.servicers.federation import FederationServicer
from node.servicers.federation_sync import FederationSyncServicer
from node.servicers.join import JoinServicer
from node.servicers.notices import NoticesServicer
from node.servicers.open_catalog import OpenCatalogServicer
from node.servicers.opendata import OpenDataServicer
from node.servicers.opendata_apps import OpenApplicationsServicer
from node.servicers.peers import PeersServicer
from node.servicers.quality import DataErrorServicer, QualityServicer
from node.servicers.rollup import RollupServicer
from node.servicers.sharing import SharingServicer
from node.servicers.sharing_stream import SharingStreamServicer
from node.servicers.status import refusal_of
from node.servicers.supervision import SupervisionServicer
from node.servicers.usage import UsageServicer
from node.servicers.witness import WitnessServicer
from node.sharing import AccessDecider, Applications, Notifications
from node.storage import Database
from node.supervision import Rectifications, ReportAdmission, Rollup, Supervision

PROTO_MODULES: tuple[ModuleType, ...] = (
    catalog_pb2,
    sharing_pb2,
    quality_pb2,
    access_pb2,
    audit_pb2,
    federation_pb2,
    opendata_pb2,
    supervision_pb2,
    witness_pb2,
)

#: What each not-yet-implemented service is waiting for, shown in its UNIMPLEMENTED message.
PLANNED: dict[str, str] = {
    "SharingService": "this sharing operation is not available yet",
    "QualityService": "not available yet",
    "OpenDataService": "this open data operation is not available yet",
    "SupervisionService": "this supervision operation is not available yet",
    "CatalogService": "this catalog operation is not available yet",
}


@dataclass
class Services:
    """What the servicers need from the node (passed explicitly, no service locator)."""

    config: NodeConfig
    identity: Identity
    db: Database
    catalog: Catalog
    records: Records
    audit: AuditSink | None
    exchange: CatalogExchange
    #: The access decision of every data call: share types, grants, item scope and the Verify
    #: oracle's quotas, rate limits and enumeration watch (node.sharing._decision).
    decider: AccessDecider
    router: Router | None = None  # forwards calls on other regions' resources
    #: City nodes: the sync task's view of the province (ListPeers).
    province_link: ProvinceLink | None = None
    #: The log ``audit`` writes to, read by AuditService.QueryAudit.
    audit_log: AuditLog | None = None
    #: The log's signed checkpoints (AuditService.GetCheckpoint and the proofs).
    checkpoints: Checkpoints | None = None
    #: The usage records and statements of the log for providers (StreamUsageLog).
    usage: UsageLog | None = None
    #: This node as a witness of other nodes' logs (WitnessService), with the province root,
    #: its witness key statement and its certificate chain (PEM, without the root).
    witness: Witness | None = None
    root: x509.Certificate | None = None
    witness_statement: bytes = b""
    chain_pem: str = ""
    #: The rule this node's checkpoints are witnessed by, as the federation is now.
    witness_rule: Callable[[], Awaitable[WitnessRule]] | None = None
    #: The node's notification store, shared so that watchers wake on every commit; None: one
    #: is made here.
    notifications: Notifications | None = None
    #: The open catalog this node's authority publishes to (第二十九条).
    opendata: OpenData | None = None
    #: What of it is served, for the public and every caller (ListOpenResources, Download,
    #: QueryOpenRows).
    open_catalog: OpenCatalog | None = None
    #: The node's key, which signs download receipts (第三十五条) with ``chain_pem``.
    node_key: ec.EllipticCurvePrivateKey | None = None
    #: 授权开放 applications and the keys approvals issue, with their use reports
    #: (第三十二至三十五条).
    open_applications: OpenApplications | None = None
    open_keys: OpenKeys | None = None
    #: The province: its approved cities' open catalogs, listed beside its own (第三十一条).
    city_catalogs: CityCatalogs | None = None
    #: The quality checks of this node's resources (第十五、十六条): QualityService.
    quality: Quality | None = None
    #: Compliance reports of this node's agencies (第八、四十二条): SupervisionService.
    supervision: Supervision | None = None
    #: The province roll-up (issue 15 item 6): summaries of every region, kept at the province.
    rollup: Rollup | None = None
    #: Its rectification notices (责令限期改正 → 通报批评), shared with the node's NoticeWatch.
    rectifications: Rectifications | None = None
    #: Error reports on this node's records (纠错, 第十六条): QualityService's error calls.
    data_errors: DataErrors | None = None
    #: Set when the node stops: the streams peers hold open end at once (UNAVAILABLE).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: Told each open data file this node served to its end: "keyed" (授权开放) or "public"
    #: (the node's metrics, node.ops); None: nobody.
    on_download: Callable[[str], None] | None = None


def service_descriptors() -> list[ServiceDescriptor]:
    return [svc for mod in PROTO_MODULES for svc in mod.DESCRIPTOR.services_by_name.values()]


def _map_errors(method: MethodDescriptor, fn: Callable[..., Any]) -> Callable[..., Any]:
    if method.server_streaming:

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                # Closed with this wrapper (the guard closes it when the call ends), so its
                # clean-up runs at once.
                async with contextlib.aclosing(fn(request, context)) as items:
                    async for item in items:
                        yield item
            except DomainError as exc:
                raise refusal_of(exc) from None

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await fn(request, context)
        except DomainError as exc:
            raise refusal_of(exc) from None

    return unary


def _unimplemented(service: ServiceDescriptor, method: MethodDescriptor) -> Callable[..., Any]:
    message = (
        f"{service.full_name}/{method.name} is not implemented by this node: "
        f"{PLANNED.get(service.name, 'not available yet')} (see README, 'Not yet available')"
    )

    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        raise Refusal(grpc.StatusCode.UNIMPLEMENTED, message)

    return behaviour


def _handler(method: MethodDescriptor, fn: Callable[..., Any]) -> grpc.RpcMethodHandler[Any, Any]:
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_deserializer": request_cls.FromString,
        "response_serializer": response_cls.SerializeToString,
    }
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(fn, **kwargs)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(fn, **kwargs)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(fn, **kwargs)
    return grpc.unary_unary_rpc_method_handler(fn, **kwargs)


def register_join_service(
    server: grpc.aio.Server, services: Services, also_refuse: list[ServiceDescriptor]
) -> None:
    """The join port's server: FederationService/Join, and every other method of the node
    (with those of ``also_refuse``, health and reflection) as a name the guard refuses with
    UNAUTHENTICATED, since the port carries no client certificate. A name the node does not
    serve at all is UNIMPLEMENTED there as on the main port."""
    join = JoinServicer(services.config, services.db)

    async def needs_certificate(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # Not reached: the guard refuses these before any handler runs. Kept as the answer if
        # it ever did not.
        raise Refusal(
            grpc.StatusCode.UNAUTHENTICATED, "this port serves only FederationService/Join"
        )
        yield  # pragma: no cover - makes this a stream handler for any method shape

    for service in [*service_descriptors(), *also_refuse]:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in service.methods:
            if f"/{service.full_name}/{method.name}" in TOKEN_AUTHORISED_METHODS:
                behaviour = _map_errors(method, getattr(join, method.name))
                handlers[method.name] = _handler(method, behaviour)
            else:
                handlers[method.name] = grpc.stream_stream_rpc_method_handler(needs_certificate)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),)
        )


def notice_inbox(config: NodeConfig, db: Database) -> NoticeInbox:
    """Where notifications other nodes deliver are checked and stored: the province takes
    them from the cities it federates with (joined, heard from, or in ``[federation] peers``),
    a city from its province."""
    peers = frozenset(config.federation.peers)

    async def is_member(region: str) -> bool:
        return region in peers or await heard_from(db, region)

    return NoticeInbox(db, config.node.region, config.node.trust_domain, is_member)


def change_requests_of(services: Services, notifications: Notifications) -> ChangeRequests:
    """The node's change requests (第四十一条), as AccessService and the operator console's
    desk review them: asked for directly, or made of catalog updates and withdrawals (and, in
    node.records._store, of Submit records that would change stored ones)."""
    return ChangeRequests(
        services.db,
        services.catalog,
        services.records,
        notifications,
        services.identity,
        # An approved correction closes its error reports (纠错) in the review's transaction.
        on_reviewed=None if services.data_errors is None else services.data_errors.change_reviewed,
    )


def register_services(server: grpc.aio.Server, services: Services) -> list[str]:
    """Add every govnode.v1 service to ``server``; returns their full names.

    A service may be implemented by several objects (one per concern); for each method the
    first object that defines it serves it.
    """
    notifications = services.notifications or Notifications(services.db)
    changes = change_requests_of(services, notifications)
    implementations: dict[str, list[object]] = {
        "govnode.v1.CatalogService": [
            CatalogServicer(services.catalog, changes, stopping=services.stopping)
        ],
        "govnode.v1.AccessService": [
            # Change requests; AccessServicer serves the rest.
            ChangeRequestServicer(services.catalog, changes),
            AccessServicer(
                services.catalog,
                Applications(services.db, notifications, services.identity),
                notifications,
                services.router,
            ),
        ],
        "govnode.v1.SharingService": [
            SharingServicer(
                services.catalog,
                services.records,
                services.audit,
                services.decider,
                services.router,
            ),
            # Exchange and Subscribe, routed to the owner like Compare.
            SharingStreamServicer(
                services.catalog,
                services.records,
                RecordsExchange(services.db, services.records.changed),
                services.decider,
                services.router,
            ),
        ],
        "govnode.v1.FederationService": [
            FederationServicer(services.config, services.identity, services.catalog, services.db),
            JoinServicer(services.config, services.db),
            FederationSyncServicer(
                services.config,
                services.identity,
                services.catalog,
                services.exchange,
                stopping=services.stopping,
            ),
            PeersServicer(services.config, services.db, services.exchange, services.province_link),
            NoticesServicer(notice_inbox(services.config, services.db), notifications),
        ],
    }
    if services.audit_log is not None:
        implementations["govnode.v1.AuditService"] = [
            AuditServicer(
                services.audit_log,
                services.config.node.region,
                services.checkpoints,
                services.db,
                services.chain_pem,
                services.identity.uri,
                services.witness_rule,
            )
        ]
        if services.usage is not None and services.checkpoints is not None:
            # Cosigned checkpoints are looked for a few times per checkpoint interval.
            every = min(max(services.config.audit.checkpoint_seconds / 4, 0.05), 1.0)
            implementations["govnode.v1.AuditService"].append(
                UsageServicer(
                    services.catalog,
                    services.audit_log,
                    services.usage,
                    CosignedWatch(services.checkpoints, every, services.witness_rule),
                    services.db,
                )
            )
    if services.opendata is not None:
        section = services.config.opendata
        # One set of budgets per member of the public for every portal's calls to this process.
        budgets = PublicBudgets(
            BudgetLimits(
                public_requests_per_minute=section.public_requests_per_minute,
                public_burst=section.public_burst,
                key_requests_per_minute=section.key_requests_per_minute,
                key_burst=section.key_burst,
                download_cost=section.download_cost,
                max_recipients=section.max_recipients,
            )
        )
        implementations["govnode.v1.OpenDataService"] = [
            OpenDataServicer(services.opendata, services.identity)
        ]
        if services.open_catalog is not None and services.node_key is not None:
            implementations["govnode.v1.OpenDataService"].append(
                OpenCatalogServicer(
                    services.open_catalog,
                    services.opendata,
                    services.identity,
                    services.node_key,
                    services.chain_pem,
                    services.open_keys,
                    budgets,
                    services.city_catalogs,
                    services.router,
                    on_download=services.on_download,
                )
            )
        if services.open_applications is not None and services.open_keys is not None:
            # 授权开放: applications, review, keys and use reports.
            implementations["govnode.v1.OpenDataService"].append(
                OpenApplicationsServicer(
                    services.open_applications, services.open_keys, services.identity, budgets
                )
            )
    if services.quality is not None:
        implementations["govnode.v1.QualityService"] = [
            QualityServicer(
                services.catalog,
                services.quality,
                services.config.node.trust_domain,
                services.data_errors,
            )
        ]
        if services.data_errors is not None:
            implementations["govnode.v1.QualityService"].append(
                DataErrorServicer(services.catalog, services.data_errors, changes, services.router)
            )
    if services.supervision is not None:
        implementations["govnode.v1.SupervisionService"] = [
            SupervisionServicer(
                services.supervision,
                services.rectifications or Rectifications(services.supervision, notifications),
                services.router,
                ReportAdmission(
                    per_caller_per_hour=services.config.supervision.reports_per_caller_per_hour,
                    at_once=services.config.supervision.reports_at_once,
                ),
            )
        ]
    if services.rollup is not None:
        # The province roll-up: GetProvinceSummary, and the summaries cities publish.
        rollup = RollupServicer(services.rollup)
        implementations.setdefault("govnode.v1.SupervisionService", []).append(rollup)
        implementations["govnode.v1.FederationService"].append(rollup)
    if services.witness is not None and services.root is not None:
        implementations["govnode.v1.WitnessService"] = [
            WitnessServicer(
                services.config,
                services.witness,
                services.root,
                services.witness_statement,
                services.chain_pem,
                services.identity,
            )
        ]
    names = []
    for service in service_descriptors():
        impls = implementations.get(service.full_name, [])
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in service.methods:
            fn = next((getattr(i, method.name) for i in impls if hasattr(i, method.name)), None)
            behaviour = _map_errors(method, fn) if fn else _unimplemented(service, method)
            handlers[method.name] = _handler(method, behaviour)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),)
        )
        names.append(service.full_name)
    return names
