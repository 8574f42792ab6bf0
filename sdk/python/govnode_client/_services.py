"""The agency-facing methods of a govnode node, grouped by gRPC service.

Each attribute is one RPC with its generated request and response types (govnode.v1), its
default deadline and whether it is retried (govnode_client._calls). Left out on purpose:
the node-to-node methods (FederationService, CatalogService.WatchCatalog), the data management
authority's (ReviewApplication, RevokeGrant, ReviewChangeRequest, IssueRectificationNotice,
GetProvinceSummary, the open data authority's publishing and review methods) and the open
data portal's on behalf of the public (ApplyOpenAccess, GetOpenApplication,
ListOpenApplications, FileUseReport): a node refuses an agency those, or an agency has no use
for them. Their request types are in govnode.v1, and ``client.channel`` calls them.
"""

from __future__ import annotations

from govnode.v1 import access_pb2 as acc
from govnode.v1 import audit_pb2 as aud
from govnode.v1 import catalog_pb2 as cat
from govnode.v1 import opendata_pb2 as od
from govnode.v1 import quality_pb2 as qa
from govnode.v1 import sharing_pb2 as sh
from govnode.v1 import supervision_pb2 as sup

from govnode_client._calls import BULK_TIMEOUT, Paged, ServerStream, Service, Unary

_SHARING = "/govnode.v1.SharingService/"
_CATALOG = "/govnode.v1.CatalogService/"
_ACCESS = "/govnode.v1.AccessService/"
_AUDIT = "/govnode.v1.AuditService/"
_QUALITY = "/govnode.v1.QualityService/"
_OPEN = "/govnode.v1.OpenDataService/"
_SUPERVISION = "/govnode.v1.SupervisionService/"


class Sharing(Service):
    """共享 (第二十一、二十六、二十七条). Submit is :meth:`Client.submit` (resends after a
    reconnect); the raw stream is ``client.channel``'s."""

    verify = Unary(_SHARING + "Verify", sh.VerifyRequest, sh.VerifyResponse)
    compare = ServerStream(
        _SHARING + "Compare", sh.CompareRequest, sh.CompareResult, timeout=BULK_TIMEOUT
    )
    query = Paged(_SHARING + "Query", sh.QueryRequest, sh.QueryResponse, lambda r: r.rows)
    exchange = ServerStream(
        _SHARING + "Exchange", sh.ExchangeRequest, sh.ExchangeChunk, timeout=BULK_TIMEOUT
    )
    subscribe = ServerStream(_SHARING + "Subscribe", sh.SubscribeRequest, sh.RecordChange)
    get_aggregation_status = Paged(
        _SHARING + "GetAggregationStatus",
        sh.GetAggregationStatusRequest,
        sh.GetAggregationStatusResponse,
        lambda r: r.statuses,
    )
    get_record_history = Paged(
        _SHARING + "GetRecordHistory",
        sh.GetRecordHistoryRequest,
        sh.GetRecordHistoryResponse,
        lambda r: r.versions,
    )


class Catalog(Service):
    """The catalog (目录, 第十八条): reads, and a provider's registrations and changes."""

    register_resource = Unary(
        _CATALOG + "RegisterResource",
        cat.RegisterResourceRequest,
        cat.RegisterResourceResponse,
        write=True,
        idempotent=True,
    )
    update_resource = Unary(
        _CATALOG + "UpdateResource",
        cat.UpdateResourceRequest,
        cat.UpdateResourceResponse,
        write=True,
        idempotent=True,
    )
    withdraw_resource = Unary(
        _CATALOG + "WithdrawResource",
        cat.WithdrawResourceRequest,
        cat.WithdrawResourceResponse,
        write=True,
        idempotent=True,
    )
    get_resource = Unary(_CATALOG + "GetResource", cat.GetResourceRequest, cat.GetResourceResponse)
    list_resources = Paged(
        _CATALOG + "ListResources",
        cat.ListResourcesRequest,
        cat.ListResourcesResponse,
        lambda r: r.entries,
    )
    get_resource_history = Unary(
        _CATALOG + "GetResourceHistory",
        cat.GetResourceHistoryRequest,
        cat.GetResourceHistoryResponse,
    )
    get_catalog_digest = Unary(
        _CATALOG + "GetCatalogDigest", cat.GetCatalogDigestRequest, cat.GetCatalogDigestResponse
    )


class Access(Service):
    """有条件共享 applications and grants (第二十五条), notifications, record changes
    (第四十一条)."""

    apply = Unary(
        _ACCESS + "Apply", acc.ApplyRequest, acc.ApplyResponse, write=True, idempotent=True
    )
    get_application = Unary(
        _ACCESS + "GetApplication", acc.GetApplicationRequest, acc.GetApplicationResponse
    )
    list_applications = Paged(
        _ACCESS + "ListApplications",
        acc.ListApplicationsRequest,
        acc.ListApplicationsResponse,
        lambda r: r.applications,
    )
    withdraw_application = Unary(
        _ACCESS + "WithdrawApplication",
        acc.WithdrawApplicationRequest,
        acc.WithdrawApplicationResponse,
        write=True,
        idempotent=True,
    )
    get_grant = Unary(_ACCESS + "GetGrant", acc.GetGrantRequest, acc.GetGrantResponse)
    list_grants = Paged(
        _ACCESS + "ListGrants", acc.ListGrantsRequest, acc.ListGrantsResponse, lambda r: r.grants
    )
    list_notifications = Paged(
        _ACCESS + "ListNotifications",
        acc.ListNotificationsRequest,
        acc.ListNotificationsResponse,
        lambda r: r.notifications,
    )
    watch_notifications = ServerStream(
        _ACCESS + "WatchNotifications", acc.WatchNotificationsRequest, acc.Notification
    )
    request_record_change = Unary(
        _ACCESS + "RequestRecordChange",
        acc.RequestRecordChangeRequest,
        acc.RequestRecordChangeResponse,
        write=True,
        idempotent=True,
    )
    get_change_request = Unary(
        _ACCESS + "GetChangeRequest", acc.GetChangeRequestRequest, acc.GetChangeRequestResponse
    )
    list_change_requests = Paged(
        _ACCESS + "ListChangeRequests",
        acc.ListChangeRequestsRequest,
        acc.ListChangeRequestsResponse,
        lambda r: r.change_requests,
    )


class Audit(Service):
    """The audit log (第三十九条): an agency's own records, the usage log of its resources,
    and the checkpoints and proofs to check them with."""

    query_audit = Paged(
        _AUDIT + "QueryAudit", aud.QueryAuditRequest, aud.QueryAuditResponse, lambda r: r.records
    )
    get_checkpoint = Unary(
        _AUDIT + "GetCheckpoint", aud.GetCheckpointRequest, aud.GetCheckpointResponse
    )
    get_inclusion_proof = Unary(
        _AUDIT + "GetInclusionProof", aud.GetInclusionProofRequest, aud.GetInclusionProofResponse
    )
    get_consistency_proof = Unary(
        _AUDIT + "GetConsistencyProof",
        aud.GetConsistencyProofRequest,
        aud.GetConsistencyProofResponse,
    )
    stream_usage_log = ServerStream(
        _AUDIT + "StreamUsageLog", aud.StreamUsageLogRequest, aud.UsageLogMessage
    )


class Quality(Service):
    """Data quality (第十五、十六条): reports, and error reports (纠错) by consumers."""

    get_quality_report = Unary(
        _QUALITY + "GetQualityReport", qa.GetQualityReportRequest, qa.GetQualityReportResponse
    )
    report_data_error = Unary(
        _QUALITY + "ReportDataError",
        qa.ReportDataErrorRequest,
        qa.ReportDataErrorResponse,
        write=True,
        idempotent=True,
    )
    list_data_errors = Paged(
        _QUALITY + "ListDataErrors",
        qa.ListDataErrorsRequest,
        qa.ListDataErrorsResponse,
        lambda r: r.reports,
    )
    get_data_error = Unary(
        _QUALITY + "GetDataError", qa.GetDataErrorRequest, qa.GetDataErrorResponse
    )
    resolve_data_error = Unary(
        _QUALITY + "ResolveDataError",
        qa.ResolveDataErrorRequest,
        qa.ResolveDataErrorResponse,
        write=True,
        idempotent=True,
    )


class OpenData(Service):
    """Open data (第二十九至三十六条) as an agency reads it."""

    list_open_resources = Paged(
        _OPEN + "ListOpenResources",
        od.ListOpenResourcesRequest,
        od.ListOpenResourcesResponse,
        lambda r: r.resources,
    )
    get_open_resource = Unary(
        _OPEN + "GetOpenResource", od.GetOpenResourceRequest, od.GetOpenResourceResponse
    )
    get_open_catalog_document = Unary(
        _OPEN + "GetOpenCatalogDocument",
        od.GetOpenCatalogDocumentRequest,
        od.GetOpenCatalogDocumentResponse,
    )
    download = ServerStream(
        _OPEN + "Download", od.DownloadRequest, od.DownloadChunk, timeout=BULK_TIMEOUT
    )
    query_open_rows = Paged(
        _OPEN + "QueryOpenRows",
        od.QueryOpenRowsRequest,
        od.QueryOpenRowsResponse,
        lambda r: r.rows,
    )


class Supervision(Service):
    """Supervision (第四十二条): an agency's compliance report and its notices."""

    get_compliance_report = Unary(
        _SUPERVISION + "GetComplianceReport",
        sup.GetComplianceReportRequest,
        sup.GetComplianceReportResponse,
    )
    list_rectification_notices = Paged(
        _SUPERVISION + "ListRectificationNotices",
        sup.ListRectificationNoticesRequest,
        sup.ListRectificationNoticesResponse,
        lambda r: r.notices,
    )
    list_published_criticisms = Paged(
        _SUPERVISION + "ListPublishedCriticisms",
        sup.ListPublishedCriticismsRequest,
        sup.ListPublishedCriticismsResponse,
        lambda r: r.notices,
    )


__all__ = ["Access", "Audit", "Catalog", "OpenData", "Quality", "Sharing", "Supervision"]
