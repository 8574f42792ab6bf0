"""The province roll-up on the wire (issue 15 item 6): FederationService.PublishSupervisionSummary
(a city's signed summary, checked and kept by node.supervision.Rollup) and
SupervisionService.GetProvinceSummary (the province-wide table, for the province's authority)."""

from __future__ import annotations

from typing import Any

from govnode.v1 import federation_pb2, supervision_pb2

from gateway.auth import current_peer
from gateway.identity import authority_identity
from gateway.interceptors import add_audit_detail
from node.codes import Region
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.servicers.supervision import figure_to_proto, timestamp
from node.supervision import MAX_SUMMARY_BYTES, CityTable, Rollup


def region_to_proto(table: CityTable) -> supervision_pb2.RegionSummary:
    summary = table.summary
    grades = table.grades()
    return supervision_pb2.RegionSummary(
        region=summary.region,
        signed_by=table.signed_by,
        generated_at=timestamp(summary.generated_at),
        received_at=timestamp(table.received_at),
        period_start=timestamp(summary.period_start),
        period_end=timestamp(summary.period_end),
        audit_head_size=summary.head_size,
        audit_head_hash=summary.head_hash,
        stale=table.stale,
        agencies=[
            supervision_pb2.AgencySummary(
                region=summary.region,
                agency_code=a.agency_code,
                figures=[figure_to_proto(f, term=False) for f in a.figures],
                first_sequence=a.first,
                last_sequence=a.last,
            )
            for a in summary.agencies
        ],
        agencies_total=summary.agencies_total,
        totals=[figure_to_proto(f) for f in table.totals()],
        resources_total=summary.resources_total,
        grades=[
            supervision_pb2.GradeCount(grade=grade, resources=n)
            for grade, n in sorted(grades.items(), key=lambda g: (g[0] == "", g[0]))
        ],
        open_errors=sum(r.open_errors for r in summary.resources),
    )


class RollupServicer:
    def __init__(self, rollup: Rollup) -> None:
        self._rollup = rollup

    async def PublishSupervisionSummary(
        self, request: federation_pb2.PublishSupervisionSummaryRequest, context: Any
    ) -> federation_pb2.PublishSupervisionSummaryResponse:
        sender = current_peer().identity
        await self._rollup.check_sender(sender)  # before anything of the request is looked at
        if len(request.summary) > MAX_SUMMARY_BYTES:
            raise InvalidArgument(
                f"summary: {len(request.summary)} bytes; at most {MAX_SUMMARY_BYTES}"
            )
        summary, stored = await self._rollup.accept(sender, request.summary)
        add_audit_detail(
            summary_region=summary.region, agencies=len(summary.agencies), stored=int(stored)
        )
        return federation_pb2.PublishSupervisionSummaryResponse(
            stored=stored, received_at=timestamp(self._rollup.now())
        )

    async def GetProvinceSummary(
        self, request: supervision_pb2.GetProvinceSummaryRequest, context: Any
    ) -> supervision_pb2.GetProvinceSummaryResponse:
        caller = current_peer().identity
        rollup = self._rollup
        province = Region(rollup.region).province_code
        if caller.uri != authority_identity(province, rollup.trust_domain):
            raise PermissionDenied(
                "the province-wide supervision table is read by the province's data management "
                f"authority only (第八条); {caller.uri} is not it"
            )
        if not rollup.is_province:
            raise FailedPrecondition(
                f"this node ({rollup.region}) is a city node: the province-wide table is at the "
                "province's node"
            )
        tables = await rollup.table(request.region)
        return supervision_pb2.GetProvinceSummaryResponse(
            regions=[region_to_proto(t) for t in tables],
            stale_after_seconds=rollup.stale_after.total_seconds(),
        )
