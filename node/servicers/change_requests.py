"""AccessService's change requests (第四十一条): RequestRecordChange, GetChangeRequest,
ListChangeRequests and ReviewChangeRequest, over node.governance._changes.

Registered before AccessServicer for the same service (node.servicers.register_services): the
registry takes, per method, the first object that defines it. Providers ask at their own node,
which owns their resources, and its authority reviews there; these calls are not routed.
"""

from __future__ import annotations

from typing import Any

from govnode.v1 import access_pb2, common_pb2

from gateway.auth import current_peer
from gateway.interceptors import add_audit_detail
from node.catalog import Catalog
from node.errors import InvalidArgument
from node.governance import (
    ChangeAction,
    ChangeDraft,
    ChangeRequest,
    ChangeRequests,
    ChangeStatus,
    ChangeTarget,
)
from node.servicers.access import _DECISIONS, _id, _set_time, caller_proto
from node.servicers.convert import entry_from_proto, entry_to_proto

_TARGETS = {
    access_pb2.CHANGE_TARGET_RECORD: ChangeTarget.RECORD,
    access_pb2.CHANGE_TARGET_RESOURCE_ENTRY: ChangeTarget.RESOURCE_ENTRY,
}
_TARGETS_OUT = {v: k for k, v in _TARGETS.items()}
_ACTIONS = {
    access_pb2.CHANGE_ACTION_UPDATE: ChangeAction.UPDATE,
    access_pb2.CHANGE_ACTION_DELETE: ChangeAction.DELETE,
}
_ACTIONS_OUT = {v: k for k, v in _ACTIONS.items()}
_STATUS = {
    ChangeStatus.PENDING: access_pb2.CHANGE_REQUEST_STATUS_PENDING,
    ChangeStatus.APPROVED: access_pb2.CHANGE_REQUEST_STATUS_APPROVED,
    ChangeStatus.REJECTED: access_pb2.CHANGE_REQUEST_STATUS_REJECTED,
}
_STATUS_IN = {v: k for k, v in _STATUS.items()}


def change_proto(change: ChangeRequest) -> access_pb2.ChangeRequest:
    out = access_pb2.ChangeRequest(
        id=change.id,
        status=_STATUS[change.status],
        requester=caller_proto(change.requester),
        target=_TARGETS_OUT[change.target],
        action=_ACTIONS_OUT[change.action],
        resource_code=change.resource_code,
        key=change.key,
        reason=change.reason,
        request_id=change.request_id,
        review_comment=change.review_comment,
        applied_version=change.applied_version,
        previous_version=change.previous_version,
        batch_id=change.batch_id,
    )
    if change.values:
        out.record.CopyFrom(common_pb2.Record(values=change.values))
    if change.target is ChangeTarget.RECORD:
        out.previous_record.CopyFrom(common_pb2.Record(values=change.previous_values))
    if change.entry is not None:
        out.entry.CopyFrom(entry_to_proto(change.entry))
    reviewer = caller_proto(change.reviewer)
    if reviewer is not None:
        out.reviewer.CopyFrom(reviewer)
    _set_time(out, "created_at", change.created_at)
    _set_time(out, "reviewed_at", change.reviewed_at)
    return out


class ChangeRequestServicer:
    def __init__(self, catalog: Catalog, changes: ChangeRequests) -> None:
        self._catalog = catalog
        self._changes = changes

    async def RequestRecordChange(
        self, request: access_pb2.RequestRecordChangeRequest, context: Any
    ) -> access_pb2.RequestRecordChangeResponse:
        target = _TARGETS.get(request.target)
        if target is None:
            raise InvalidArgument("target is required (CHANGE_TARGET_RECORD or _RESOURCE_ENTRY)")
        action = _ACTIONS.get(request.action)
        if action is None:
            raise InvalidArgument("action is required (CHANGE_ACTION_UPDATE or _DELETE)")
        if not request.resource_code:
            raise InvalidArgument("resource_code is required")
        entry = await self._catalog.get(request.resource_code)
        change = await self._changes.request(
            current_peer().identity,
            entry,
            ChangeDraft(
                target=target,
                action=action,
                resource_code=entry.resource_code,
                key=dict(request.key),
                values=dict(request.record.values) if request.HasField("record") else {},
                entry=entry_from_proto(request.entry) if request.HasField("entry") else None,
                reason=request.reason,
                request_id=request.request_id,
            ),
        )
        add_audit_detail(change_request=change.id)
        return access_pb2.RequestRecordChangeResponse(change_request=change_proto(change))

    async def GetChangeRequest(
        self, request: access_pb2.GetChangeRequestRequest, context: Any
    ) -> access_pb2.GetChangeRequestResponse:
        change = await self._changes.get(current_peer().identity, _id(request.id, "id"))
        return access_pb2.GetChangeRequestResponse(change_request=change_proto(change))

    async def ListChangeRequests(
        self, request: access_pb2.ListChangeRequestsRequest, context: Any
    ) -> access_pb2.ListChangeRequestsResponse:
        status = None
        if request.status:
            status = _STATUS_IN.get(request.status)
            if status is None:
                raise InvalidArgument(
                    f"status: {request.status} is not a valid ChangeRequestStatus"
                )
        changes, token = await self._changes.list(
            current_peer().identity,
            status=status,
            resource_code=request.resource_code,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return access_pb2.ListChangeRequestsResponse(
            change_requests=[change_proto(c) for c in changes], next_page_token=token
        )

    async def ReviewChangeRequest(
        self, request: access_pb2.ReviewChangeRequestRequest, context: Any
    ) -> access_pb2.ReviewChangeRequestResponse:
        change_id = _id(request.id, "id")
        decision = _DECISIONS.get(request.decision)
        if decision is None:
            raise InvalidArgument("decision is required (REVIEW_DECISION_APPROVE or _REJECT)")
        change = await self._changes.review(
            current_peer().identity, change_id, decision, request.comment, request.request_id
        )
        # The provider names the agency whose change was decided (supervision, 第四十二条第六项).
        add_audit_detail(
            change_request=change.id, decision=decision.value, provider=change.provider_code
        )
        return access_pb2.ReviewChangeRequestResponse(change_request=change_proto(change))
