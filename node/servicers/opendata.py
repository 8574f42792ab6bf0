"""OpenDataService, the authority's part (第二十九条): publish a resource's data to the open
catalog, take it out, and list what was published with each version's de-identification report.

Only this node's data management authority calls these, or the node itself (its operator's
`govnode opendata` commands call their own node with its certificate). Every call, refused or
not, is in the audit log like any other (the audit hook). The open catalog and downloads, for
every caller, are in node.servicers.open_catalog; 授权开放 applications arrive with the public
portal.
"""

from __future__ import annotations

from typing import Any

from govnode.v1 import opendata_pb2

from gateway.auth import current_peer
from gateway.identity import Identity, Role
from node import paging
from node.codes import Region
from node.errors import InvalidArgument, PermissionDenied
from node.opendata import Dataset, OpenData, Report
from node.servicers.convert import _ts

MAX_PAGE = 200
_CODE_CHARS = 15


def report_to_proto(report: Report) -> opendata_pb2.OpenDataReport:
    return opendata_pb2.OpenDataReport(
        resource_code=report.resource_code,
        version=report.version,
        entry_version=report.entry_version,
        outcome=report.outcome,
        reason=report.reason,
        rows_read=report.rows_read,
        rows_published=report.rows_published,
        rows_suppressed=report.rows_suppressed,
        min_k=report.min_k,
        k_reached=report.k_reached,
        classes=report.classes,
        quasi_identifiers=list(report.quasi_identifiers),
        treatments=dict(report.treatments),
        findings=list(report.findings),
    )


def dataset_to_proto(dataset: Dataset) -> opendata_pb2.OpenDataset:
    message = opendata_pb2.OpenDataset(
        resource_code=dataset.resource_code,
        published=dataset.published,
        version=dataset.version,
        changed_by=dataset.changed_by,
        changed_at=_ts(dataset.changed_at),
        not_served=dataset.not_served,
    )
    if dataset.report is not None:
        message.report.CopyFrom(report_to_proto(dataset.report))
    return message


class OpenDataServicer:
    def __init__(self, opendata: OpenData, identity: Identity) -> None:
        self._opendata = opendata
        self._node = identity

    def _authority(self, *, testers: bool = False) -> Identity:
        """The caller, if it is this node's authority or the node itself (or, where
        ``testers``, a conformance tester of this region or of its province, for its probe
        resources only: the province issues testers, and tests a city before approving it,
        第三十一条)."""
        caller = current_peer().identity
        own = caller.region == self._node.region
        if own and (caller.role is Role.AUTHORITY or caller == self._node):
            return caller
        ours = own or Region(caller.region).contains(self._node.region)
        if testers and ours and caller.role is Role.TESTER:
            return caller
        raise PermissionDenied(
            f"{caller} may not publish open data here: only this node's data management "
            f"authority (数据管理机构 of {self._node.region}) does (第二十九条)"
        )

    @staticmethod
    def _code(value: str) -> str:
        if not value:
            raise InvalidArgument("resource_code: required")
        if len(value) > _CODE_CHARS:
            raise InvalidArgument(f"resource_code: {value[:20]!r}… is not a resource code")
        return value

    async def PublishOpenResource(
        self, request: opendata_pb2.PublishOpenResourceRequest, context: Any
    ) -> opendata_pb2.PublishOpenResourceResponse:
        caller = self._authority(testers=True)
        report = await self._opendata.publish(
            self._code(request.resource_code), caller.uri, tester=caller.role is Role.TESTER
        )
        return opendata_pb2.PublishOpenResourceResponse(report=report_to_proto(report))

    async def UnpublishOpenResource(
        self, request: opendata_pb2.UnpublishOpenResourceRequest, context: Any
    ) -> opendata_pb2.UnpublishOpenResourceResponse:
        caller = self._authority(testers=True)
        await self._opendata.unpublish(
            self._code(request.resource_code), caller.uri, tester=caller.role is Role.TESTER
        )
        return opendata_pb2.UnpublishOpenResourceResponse()

    async def ListOpenDatasets(
        self, request: opendata_pb2.ListOpenDatasetsRequest, context: Any
    ) -> opendata_pb2.ListOpenDatasetsResponse:
        self._authority()
        size = paging.page_size(request.page_size, default=50, maximum=MAX_PAGE)
        after = paging.decode_text(request.page_token) if request.page_token else ""
        if after is None:
            raise InvalidArgument("page_token: not a token from this list; omit it to start")
        found = await self._opendata.datasets(after=after, limit=size + 1)
        page, more = found[:size], len(found) > size
        return opendata_pb2.ListOpenDatasetsResponse(
            datasets=[dataset_to_proto(d) for d in page],
            next_page_token=paging.encode_text(page[-1].resource_code) if more else "",
        )
