"""AccessService: 有条件共享 applications, their review, grants (第二十五条, 第三十七条) and
notifications. Change requests (第四十一条) are node.servicers.change_requests'.

Applications and grants live at the node that owns the resource. Apply on another region's
resource is forwarded there (node.federation._routing, with a signed caller assertion, like
Verify); so are GetApplication, WithdrawApplication and GetGrant on an id whose region prefix
names another
node. Lists and notifications are this node's own; notifications other nodes made for this
node's region's recipients are delivered here (node.federation._notices) and listed with their
origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import Message
from govnode.v1 import access_pb2, common_pb2

from gateway.auth import current_peer
from gateway.identity import IdentityError, parse_spiffe
from gateway.interceptors import add_audit_detail
from gateway.quote import quote
from gateway.streams import idle
from node import paging
from node.catalog import Catalog, ShareMethod
from node.errors import InvalidArgument
from node.federation import Router
from node.servicers.convert import _enum_in, _enum_out, optional_time
from node.sharing import (
    Application,
    Applications,
    ApplicationStatus,
    Decision,
    Draft,
    Grant,
    Notification,
    NotificationKind,
    Notifications,
    Review,
    region_of_id,
)

_SERVICE = "/govnode.v1.AccessService/"
#: Longest a WatchNotifications waits for a commit signal before it reads again anyway (a
#: notification written by another process, such as `govnode access approve`, wakes no one).
WATCH_POLL_S = 1.0
#: Most notifications on one ListNotifications page.
NOTIFICATIONS_PAGE = 500

_STATUS = {
    ApplicationStatus.PENDING: access_pb2.APPLICATION_STATUS_PENDING,
    ApplicationStatus.APPROVED: access_pb2.APPLICATION_STATUS_APPROVED,
    ApplicationStatus.REJECTED: access_pb2.APPLICATION_STATUS_REJECTED,
    ApplicationStatus.WITHDRAWN: access_pb2.APPLICATION_STATUS_WITHDRAWN,
}
_STATUS_IN = {v: k for k, v in _STATUS.items()}
_KINDS = {
    kind: access_pb2.NotificationKind.Value(f"NOTIFICATION_KIND_{kind.name}")
    for kind in NotificationKind
}
_KINDS_IN = {v: k for k, v in _KINDS.items()}
_DECISIONS = {
    common_pb2.REVIEW_DECISION_APPROVE: Decision.APPROVE,
    common_pb2.REVIEW_DECISION_REJECT: Decision.REJECT,
}


def caller_proto(uri: str) -> common_pb2.Caller | None:
    if not uri:
        return None
    try:
        who = parse_spiffe(uri)
    except IdentityError:
        return common_pb2.Caller(identity=uri)
    return common_pb2.Caller(
        identity=who.uri, region=who.region, role=who.role.value, subject=who.subject
    )


def _set_time(message: Any, field: str, value: dt.datetime | None) -> None:
    if value is not None:
        getattr(message, field).FromDatetime(value.astimezone(dt.UTC))


def _methods_in(values: Any, field: str) -> tuple[ShareMethod, ...]:
    return tuple(
        _enum_in("ShareMethod", m, f"{field}[{i}]", ShareMethod) for i, m in enumerate(values)
    )


def _methods_out(methods: tuple[ShareMethod, ...]) -> list[Any]:
    return [_enum_out("ShareMethod", m) for m in methods]


def application_proto(app: Application) -> access_pb2.Application:
    out = access_pb2.Application(
        id=app.id,
        status=_STATUS[app.status],
        applicant=caller_proto(app.applicant),
        resource_code=app.resource_code,
        provider_code=app.provider_code,
        items=list(app.items),
        share_methods=_methods_out(app.share_methods),
        purpose=app.purpose,
        legal_basis=app.legal_basis,
        request_id=app.request_id,
        review_comment=app.review_comment,
        grant_id=app.grant_id,
    )
    reviewer = caller_proto(app.reviewer)
    if reviewer is not None:
        out.reviewer.CopyFrom(reviewer)
    _set_time(out, "not_before", app.not_before)
    _set_time(out, "not_after", app.not_after)
    _set_time(out, "created_at", app.created_at)
    _set_time(out, "decided_at", app.decided_at)
    return out


def grant_proto(grant: Grant) -> access_pb2.Grant:
    out = access_pb2.Grant(
        id=grant.id,
        application_id=grant.application_id,
        grantee=caller_proto(grant.grantee),
        resource_code=grant.resource_code,
        items=list(grant.items),
        clear_text_items=list(grant.clear_text_items),
        share_methods=_methods_out(grant.share_methods),
        purpose=grant.purpose,
        revoked=grant.revoked,
        justification=grant.justification,
        granted_by=caller_proto(grant.granted_by),
        revoke_reason=grant.revoke_reason,
    )
    _set_time(out, "not_before", grant.not_before)
    _set_time(out, "not_after", grant.not_after)
    _set_time(out, "created_at", grant.created_at)
    _set_time(out, "revoked_at", grant.revoked_at)
    return out


def notification_proto(n: Notification) -> access_pb2.Notification:
    out = access_pb2.Notification(
        id=n.id,
        kind=_KINDS[n.kind],
        recipient=n.recipient,
        resource_code=n.resource_code,
        application_id=n.application_id,
        grant_id=n.grant_id,
        change_request_id=n.change_request_id,
        audit_sequence=n.audit_sequence,
        data_error_id=n.data_error_id,
        message=n.message,
        origin_region=n.origin_region,
        origin_id=n.origin_id,
    )
    _set_time(out, "at", n.at)
    return out


def _kinds_in(values: Any) -> list[NotificationKind]:
    # A packed enum costs a byte a value: bounded before the loop and the SQL IN list.
    if len(values) > len(_KINDS_IN):
        raise InvalidArgument(
            f"kinds: at most {len(_KINDS_IN)} (each kind once), got {len(values)}"
        )
    kinds = []
    for i, value in enumerate(values):
        kind = _KINDS_IN.get(value)
        if kind is None:
            raise InvalidArgument(f"kinds[{i}]: {value} is not a valid NotificationKind")
        kinds.append(kind)
    return list(dict.fromkeys(kinds))


def _id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > 64 or not value.isprintable():
        raise InvalidArgument(f"{field}: {quote(value)} is not an application or grant id")
    return value


class AccessServicer:
    """``router`` forwards calls on what other nodes hold; without one, only local ones are
    served."""

    def __init__(
        self,
        catalog: Catalog,
        applications: Applications,
        notifications: Notifications,
        router: Router | None = None,
        *,
        poll_s: float = WATCH_POLL_S,
    ) -> None:
        self._catalog = catalog
        self._applications = applications
        self._notifications = notifications
        self._router = router
        self._poll_s = poll_s

    async def _forward_by_id(
        self, object_id: str, method: str, request: Message, response_type: Any, context: Any
    ) -> Any:
        """The owner's answer when ``object_id`` names another region's node, else None."""
        region = region_of_id(object_id)
        if self._router is None or not region or region == self._applications.region:
            return None
        return await self._router.unary_to(
            region, _SERVICE + method, request, response_type, context
        )

    async def Apply(
        self, request: access_pb2.ApplyRequest, context: Any
    ) -> access_pb2.ApplyResponse:
        if not request.resource_code:
            raise InvalidArgument("resource_code is required")
        entry = await self._catalog.get(request.resource_code)
        if self._router is not None and not self._router.is_local(entry):
            reply: access_pb2.ApplyResponse = await self._router.unary(
                entry, _SERVICE + "Apply", request, access_pb2.ApplyResponse, context
            )
            return reply
        app = await self._applications.apply(
            current_peer().identity,
            entry,
            Draft(
                resource_code=entry.resource_code,
                items=tuple(request.items),
                share_methods=_methods_in(request.share_methods, "share_methods"),
                purpose=request.purpose,
                legal_basis=request.legal_basis,
                not_before=optional_time(request, "not_before"),
                not_after=optional_time(request, "not_after"),
                request_id=request.request_id,
            ),
        )
        add_audit_detail(application=app.id)
        return access_pb2.ApplyResponse(application=application_proto(app))

    async def GetApplication(
        self, request: access_pb2.GetApplicationRequest, context: Any
    ) -> access_pb2.GetApplicationResponse:
        app_id = _id(request.id, "id")
        forwarded = await self._forward_by_id(
            app_id, "GetApplication", request, access_pb2.GetApplicationResponse, context
        )
        if forwarded is not None:
            reply: access_pb2.GetApplicationResponse = forwarded
            return reply
        app = await self._applications.get_application(current_peer().identity, app_id)
        return access_pb2.GetApplicationResponse(application=application_proto(app))

    async def ListApplications(
        self, request: access_pb2.ListApplicationsRequest, context: Any
    ) -> access_pb2.ListApplicationsResponse:
        status = None
        if request.status:
            status = _STATUS_IN.get(request.status)
            if status is None:
                raise InvalidArgument(f"status: {request.status} is not a valid ApplicationStatus")
        apps, token = await self._applications.list_applications(
            current_peer().identity,
            status=status,
            resource_code=request.resource_code,
            applicant=request.applicant_identity,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return access_pb2.ListApplicationsResponse(
            applications=[application_proto(a) for a in apps], next_page_token=token
        )

    async def WithdrawApplication(
        self, request: access_pb2.WithdrawApplicationRequest, context: Any
    ) -> access_pb2.WithdrawApplicationResponse:
        app_id = _id(request.id, "id")
        forwarded = await self._forward_by_id(
            app_id, "WithdrawApplication", request, access_pb2.WithdrawApplicationResponse, context
        )
        if forwarded is not None:
            reply: access_pb2.WithdrawApplicationResponse = forwarded
            return reply
        app = await self._applications.withdraw(current_peer().identity, app_id, request.request_id)
        add_audit_detail(application=app.id)
        return access_pb2.WithdrawApplicationResponse(application=application_proto(app))

    async def ReviewApplication(
        self, request: access_pb2.ReviewApplicationRequest, context: Any
    ) -> access_pb2.ReviewApplicationResponse:
        app_id = _id(request.application_id, "application_id")
        decision = _DECISIONS.get(request.decision)
        if decision is None:
            raise InvalidArgument("decision is required (REVIEW_DECISION_APPROVE or _REJECT)")
        app, grant = await self._applications.review(
            current_peer().identity,
            app_id,
            Review(
                decision=decision,
                items=tuple(request.items),
                share_methods=_methods_in(request.share_methods, "share_methods"),
                not_before=optional_time(request, "not_before"),
                not_after=optional_time(request, "not_after"),
                clear_text_items=tuple(request.clear_text_items),
                justification=request.justification,
                comment=request.comment,
                request_id=request.request_id,
            ),
        )
        add_audit_detail(application=app.id, decision=decision.value)
        reply = access_pb2.ReviewApplicationResponse(application=application_proto(app))
        if grant is not None:
            add_audit_detail(grant=grant.id)
            reply.grant.CopyFrom(grant_proto(grant))
        return reply

    async def ListGrants(
        self, request: access_pb2.ListGrantsRequest, context: Any
    ) -> access_pb2.ListGrantsResponse:
        grants, token = await self._applications.list_grants(
            current_peer().identity,
            grantee=request.grantee_identity,
            resource_code=request.resource_code,
            include_inactive=request.include_inactive,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return access_pb2.ListGrantsResponse(
            grants=[grant_proto(g) for g in grants], next_page_token=token
        )

    async def GetGrant(
        self, request: access_pb2.GetGrantRequest, context: Any
    ) -> access_pb2.GetGrantResponse:
        grant_id = _id(request.id, "id")
        forwarded = await self._forward_by_id(
            grant_id, "GetGrant", request, access_pb2.GetGrantResponse, context
        )
        if forwarded is not None:
            reply: access_pb2.GetGrantResponse = forwarded
            return reply
        grant = await self._applications.get_grant(current_peer().identity, grant_id)
        return access_pb2.GetGrantResponse(grant=grant_proto(grant))

    async def RevokeGrant(
        self, request: access_pb2.RevokeGrantRequest, context: Any
    ) -> access_pb2.RevokeGrantResponse:
        grant = await self._applications.revoke(
            current_peer().identity,
            _id(request.grant_id, "grant_id"),
            request.reason,
            request.request_id,
        )
        add_audit_detail(grant=grant.id)
        return access_pb2.RevokeGrantResponse(grant=grant_proto(grant))

    async def ListNotifications(
        self, request: access_pb2.ListNotificationsRequest, context: Any
    ) -> access_pb2.ListNotificationsResponse:
        if request.after_id < 0:
            raise InvalidArgument(f"after_id: must not be negative, got {request.after_id}")
        size = paging.page_size(request.page_size, default=100, maximum=NOTIFICATIONS_PAGE)
        after = request.after_id
        if request.page_token:
            token_after = paging.parse_count(request.page_token)  # the last id served
            if token_after is None:
                raise InvalidArgument("page_token: not a token from this list; omit it to start")
            after = max(after, token_after)
        found = await self._notifications.list_for(
            current_peer().identity.uri,
            after_id=after,
            kinds=_kinds_in(request.kinds),
            limit=size + 1,
        )
        page = found[:size]
        token = str(page[-1].id) if len(found) > size else ""
        return access_pb2.ListNotificationsResponse(
            notifications=[notification_proto(n) for n in page], next_page_token=token
        )

    async def WatchNotifications(
        self, request: access_pb2.WatchNotificationsRequest, context: Any
    ) -> AsyncIterator[access_pb2.Notification]:
        if request.after_id < 0:
            raise InvalidArgument(f"after_id: must not be negative, got {request.after_id}")
        recipient = current_peer().identity.uri
        kinds = _kinds_in(request.kinds)
        after = request.after_id
        sent = 0
        while True:
            # Taken before reading, so a commit between the read and the wait wakes us.
            changed = self._notifications.changed()
            found = await self._notifications.list_for(
                recipient, after_id=after, kinds=kinds, limit=500
            )
            for n in found:
                yield notification_proto(n)
                after = n.id
                sent += 1
            if found:
                add_audit_detail(notifications=sent, last_id=after)
                continue
            remaining = context.time_remaining() if context is not None else None
            wait = self._poll_s if remaining is None else min(self._poll_s, max(remaining, 0.01))
            # Nothing new: a stopping node ends the stream here (gateway.streams).
            with idle(), contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)
