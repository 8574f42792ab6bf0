"""Applications for 授权开放 data and the authority's review (第三十二、三十三条).

- An eligible entity applies through the portal with its 统一社会信用代码 (第三十二条); the code
  is checked, not trusted (node.opendata._eligibility), and the resource must be served and
  授权开放. A 高校 or 科研院所 may apply only for research, education or other public-welfare
  use (第三十三条: 只能用于科研教育等公益性活动).
- This node's data management authority reviews (授权, 第三十三条). An approval may narrow the
  published items and the period (at most ``[opendata] max_grant_days``); a commercial use is
  approved only with the reference of the competitive selection (公开招标等竞争性方式,
  第三十三、三十四条) that chose the developer. The approval issues a key
  (node.opendata._keys), returned once, and the provider is told in the same transaction
  (将授权情况告知相关数据生产应用单位).

Writes that carry a ``request_id`` are idempotent per submitter (node.idempotency). When an
:class:`~node.audit.AuditLog` is given (the ``govnode opendata`` commands work on the database
directly), every application and review is written to it; over gRPC the audit hook records the
calls. No grpc.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, provider_identity
from gateway.quote import quote_each
from node import paging
from node.audit import AuditLog
from node.catalog import Catalog, OpenType, ResourceEntry
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.idempotency import check_request_id, remember, replay
from node.models import OpenApplicationRow, OpenKeyRow
from node.opendata._deid import Treater
from node.opendata._eligibility import ApplicantType, check_eligibility
from node.opendata._keys import OpenKeys
from node.opendata._open_terms import (
    PUBLIC_INTEREST_USES,
    USE_TERMS,
    OpenKey,
    OpenUse,
    Recorder,
    check_line,
    check_text,
    key_of,
    utc,
)
from node.opendata._publish import OpenData
from node.sharing import NotificationKind, Notifications
from node.storage import Database
from node.times import CST

DEFAULT_PAGE = 50
MAX_PAGE = 200


class OpenApplicationStatus(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"  # 授权
    REJECTED = "rejected"


@dataclass(frozen=True)
class OpenDraft:
    """What an applicant submits through the portal."""

    resource_code: str
    entity_type: ApplicantType
    entity_code: str  # 统一社会信用代码
    entity_name: str
    contact: str  # who the authority reaches about the application (name, phone or e-mail)
    use: OpenUse
    purpose: str
    domestic_control_declared: bool = False  # 内资控股, for an enterprise
    evidence_reference: str = ""  # the document showing it, for an enterprise
    request_id: str = ""


@dataclass(frozen=True)
class OpenReview:
    """The authority's decision. On approval ``items`` (empty: every published item) and
    ``not_after`` (None: the longest allowed) may narrow the authorization."""

    approve: bool
    comment: str = ""
    items: tuple[str, ...] = ()
    not_after: dt.datetime | None = None
    competitive_selection_ref: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class OpenApplication:
    id: str
    status: OpenApplicationStatus
    resource_code: str
    provider_code: str
    entity_type: ApplicantType
    entity_code: str
    entity_name: str
    contact: str
    domestic_control_declared: bool
    evidence_reference: str
    to_confirm: str  # what the authority confirms on review (第三十二条)
    use: OpenUse
    purpose: str
    submitted_by: str
    request_id: str
    created_at: dt.datetime
    reviewer: str
    reviewed_at: dt.datetime | None
    review_comment: str
    competitive_selection_ref: str
    key: OpenKey | None  # the key an approval issued (its record, not the key)


@dataclass(frozen=True)
class Approval:
    """An application after review; ``key`` is the issued key in clear, given this once (empty
    on a rejection and on a retried request: it is not stored and cannot be shown again)."""

    application: OpenApplication
    key: str = ""


def application_of(row: OpenApplicationRow, key: OpenKeyRow | None) -> OpenApplication:
    return OpenApplication(
        id=row.id,
        status=OpenApplicationStatus(row.status),
        resource_code=row.resource_code,
        provider_code=row.provider_code,
        entity_type=ApplicantType(row.entity_type),
        entity_code=row.entity_code,
        entity_name=row.entity_name,
        contact=row.contact,
        domestic_control_declared=row.domestic_control_declared,
        evidence_reference=row.evidence_reference,
        to_confirm=row.to_confirm,
        use=OpenUse(row.use),
        purpose=row.purpose,
        submitted_by=row.submitted_by,
        request_id=row.request_id,
        created_at=utc(row.created_at),
        reviewer=row.reviewer,
        reviewed_at=utc(row.reviewed_at) if row.reviewed_at else None,
        review_comment=row.review_comment,
        competitive_selection_ref=row.competitive_selection_ref,
        key=key_of(key) if key is not None else None,
    )


def _review_record(approval: Approval) -> tuple[str, dict[str, str | int]]:
    app = approval.application
    detail: dict[str, str | int] = {"application_id": app.id, "status": app.status.value}
    if app.key is not None:
        detail["key_id"] = app.key.key_id
    return f"application {app.id} {app.status.value}", detail


class OpenApplications:
    """Applications for this node's 授权开放 resources. ``node`` is the node's identity: its
    authority reviews; ``keys`` issues the key of an approval."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        opendata: OpenData,
        notifications: Notifications,
        keys: OpenKeys,
        node: Identity,
        *,
        max_grant_days: int = 365,
        clock: Callable[[], dt.datetime] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._db = db
        self._catalog = catalog
        self._opendata = opendata
        self._notifications = notifications
        self._keys = keys
        self._region = node.region
        self._td = node.trust_domain
        self._max_grant = dt.timedelta(days=max_grant_days)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._recorder = Recorder(audit)

    async def _served_authorized(self, code: str) -> tuple[ResourceEntry, int]:
        """The entry of a served 授权开放 resource, and its served version."""
        try:
            entry = await self._catalog.current(code)
        except NotFound:
            raise NotFound(f"resource {code} is not in the catalog") from None
        if entry.open_type is not OpenType.AUTHORIZED:
            if entry.open_type is OpenType.UNIVERSAL:
                raise FailedPrecondition(
                    f"resource {code} is 普遍开放: anyone downloads it without an application "
                    "(第三十二条)"
                )
            raise FailedPrecondition(
                f"resource {code} is not open (open type {entry.open_type.value}): only 授权开放 "
                "resources are applied for (第三十二条)"
            )
        try:
            version = await self._opendata.served(code)
        except NotFound as exc:
            raise FailedPrecondition(exc.message) from None
        return entry, version

    def _check_use(self, entity: ApplicantType, use: OpenUse) -> None:
        if entity is not ApplicantType.DOMESTIC_ENTERPRISE and use not in PUBLIC_INTEREST_USES:
            raise PermissionDenied(
                f"第三十三条: a {entity.term} may use 授权开放 data only for research, education "
                f"or other public-welfare activities (科研教育等公益性活动), not for "
                f"{use.value} ({USE_TERMS[use]})"
            )

    async def apply(self, submitter: Identity, draft: OpenDraft) -> OpenApplication:
        """Store an application the portal submits (``submitter``: the portal) for an eligible
        entity. Raises Ineligible (PermissionDenied, 第三十二条) for an applicant the article
        does not allow, PermissionDenied (第三十三条) for a use its type may not make."""
        return await self._recorder.recorded(
            "opendata.apply",
            submitter,
            draft.resource_code,
            draft.resource_code,
            self._apply(submitter, draft),
            lambda a: (
                f"application {a.id} by {a.entity_code} ({a.use.value})",
                {"application_id": a.id, "entity_code": a.entity_code},
            ),
        )

    async def _apply(self, submitter: Identity, draft: OpenDraft) -> OpenApplication:
        if draft.request_id:
            check_request_id(draft.request_id)
        name = check_line(draft.entity_name, "entity_name", required=True, rule="the entity's name")
        contact = check_line(
            draft.contact, "contact", required=True, rule="who the authority reaches about it"
        )
        purpose = check_text(
            draft.purpose, "purpose", required=True, rule="what the data will be used for"
        )
        eligibility = check_eligibility(
            draft.entity_code.strip().upper(),
            draft.entity_type,
            domestic_control_declared=draft.domestic_control_declared,
            evidence_reference=draft.evidence_reference,
        )
        self._check_use(draft.entity_type, draft.use)
        entry, _ = await self._served_authorized(draft.resource_code)
        now = self._clock()

        async def txn(session: AsyncSession) -> OpenApplication:
            done = await replay(
                self._db, session, submitter, draft.request_id, "open_apply", entry.resource_code
            )
            if done:
                return await self._application(session, done)
            row = OpenApplicationRow(
                id=f"{self._region}-OA-{os.urandom(8).hex()}",
                status=OpenApplicationStatus.PENDING.value,
                resource_code=entry.resource_code,
                provider_code=entry.provider_code,
                entity_type=draft.entity_type.value,
                entity_code=eligibility.credit_code,
                entity_name=name,
                contact=contact,
                domestic_control_declared=bool(eligibility.evidence_reference),
                evidence_reference=eligibility.evidence_reference,
                to_confirm=eligibility.to_confirm[:300],
                use=draft.use.value,
                purpose=purpose,
                submitted_by=submitter.uri,
                request_id=draft.request_id,
                created_at=now,
            )
            session.add(row)
            remember(
                session, submitter, draft.request_id, "open_apply", entry.resource_code, row.id, now
            )
            return application_of(row, None)

        return await self._db.write("opendata.apply", txn)

    async def _application(self, session: AsyncSession, application_id: str) -> OpenApplication:
        row = await session.get(OpenApplicationRow, application_id)
        if row is None:
            raise NotFound(f"open application {application_id} does not exist at this node")
        key = await session.get(OpenKeyRow, row.key_id) if row.key_id else None
        return application_of(row, key)

    async def get(self, application_id: str) -> OpenApplication:
        if len(application_id) > 64:
            raise InvalidArgument("id: not an open application id")
        return await self._db.read(
            "opendata.application", lambda s: self._application(s, application_id)
        )

    async def list_applications(
        self,
        *,
        status: OpenApplicationStatus | None = None,
        resource_code: str = "",
        entity_code: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[OpenApplication], str]:
        """Applications, newest first, with the next page's token (for the authority)."""
        offset, size = paging.offset_page(
            page_token, page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE
        )
        t = OpenApplicationRow
        query = select(t)
        if status is not None:
            query = query.where(t.status == status.value)
        if resource_code:
            query = query.where(t.resource_code == resource_code)
        if entity_code:
            query = query.where(t.entity_code == entity_code)
        query = query.order_by(col(t.created_at).desc(), col(t.id).desc())

        async def txn(session: AsyncSession) -> list[OpenApplication]:
            rows = (await session.exec(query.offset(offset).limit(size + 1))).all()
            found = []
            for row in rows:
                key = await session.get(OpenKeyRow, row.key_id) if row.key_id else None
                found.append(application_of(row, key))
            return found

        rows = await self._db.read("opendata.applications", txn)
        return paging.offset_rows(rows, offset, size)

    # --- review ------------------------------------------------------------------------------

    async def review(self, by: Identity, application_id: str, review: OpenReview) -> Approval:
        """The authority approves (授权, 第三十三条) or rejects a pending application. An
        approval issues the key (returned here only) and tells the provider."""
        return await self._recorder.recorded(
            "opendata.review",
            by,
            application_id,
            "",
            self._review(by, application_id, review),
            _review_record,
        )

    def _check_review(
        self, app: OpenApplication, review: OpenReview, published: Sequence[str]
    ) -> tuple[tuple[str, ...], dt.datetime]:
        """The approved items and end (approval only)."""
        now = self._clock()
        self._check_use(app.entity_type, app.use)
        if app.use is OpenUse.COMMERCIAL and not review.competitive_selection_ref.strip():
            raise InvalidArgument(
                "competitive_selection_ref: required to approve commercial development: the "
                "developer is chosen by 公开招标等竞争性方式 (第三十三、三十四条); give the "
                "reference of the selection that chose it"
            )
        if len(review.items) > len(published):
            raise InvalidArgument(
                f"items: {len(review.items)} names; the dataset publishes {len(published)} items"
            )
        items = list(dict.fromkeys(review.items)) or list(published)
        outside = [i for i in items if i not in published]
        if outside:
            raise InvalidArgument(
                f"items: {quote_each(outside)} not published items of resource "
                f"{app.resource_code}; an approval may narrow them to some of: "
                f"{', '.join(published)}"
            )
        longest = now + self._max_grant
        end = review.not_after or longest
        if end <= now:
            raise InvalidArgument(f"not_after: {end.isoformat()} is not in the future")
        if end > longest:
            raise InvalidArgument(
                f"not_after: {end.isoformat()} is beyond the longest authorization "
                f"({self._max_grant.days} days, [opendata] max_grant_days): at most "
                f"{longest.isoformat()}"
            )
        return tuple(items), end

    async def _review(self, by: Identity, application_id: str, review: OpenReview) -> Approval:
        self._keys.check_authority(by, f"review open application {application_id}")
        if review.request_id:
            check_request_id(review.request_id)
        comment = check_text(
            review.comment, "comment", required=not review.approve, rule="why it is rejected"
        )
        reference = check_line(
            review.competitive_selection_ref, "competitive_selection_ref", required=False
        )
        current = await self.get(application_id)
        items: tuple[str, ...] = ()
        end = None
        if review.approve and current.status is OpenApplicationStatus.PENDING:
            entry, _ = await self._served_authorized(current.resource_code)
            published = Treater(entry.items, bytes(32)).published_items
            items, end = self._check_review(current, review, published)
        now = self._clock()
        clear_key = ""

        async def txn(session: AsyncSession) -> Approval:
            nonlocal clear_key
            done = await replay(
                self._db, session, by, review.request_id, "open_review", application_id
            )
            if done:
                return Approval(await self._application(session, done))
            rows = await session.exec(
                select(OpenApplicationRow)
                .where(OpenApplicationRow.id == application_id)
                .with_for_update()
            )
            row = rows.first()
            if row is None:
                raise NotFound(f"open application {application_id} does not exist at this node")
            if row.status != OpenApplicationStatus.PENDING.value:
                raise FailedPrecondition(
                    f"open application {application_id} is already {row.status}: only a "
                    "pending application is reviewed"
                )
            key_row = None
            if review.approve:
                assert end is not None
                key_id, clear_key, key_hash = self._keys.new_key()
                key_row = OpenKeyRow(
                    key_id=key_id,
                    key_hash=key_hash,
                    application_id=row.id,
                    resource_code=row.resource_code,
                    provider_code=row.provider_code,
                    entity_code=row.entity_code,
                    entity_name=row.entity_name,
                    items=json.dumps(list(items), ensure_ascii=False),
                    use=row.use,
                    issued_at=now,
                    not_after=end,
                )
                session.add(key_row)
                row.status = OpenApplicationStatus.APPROVED.value
                row.key_id = key_id
                row.competitive_selection_ref = reference
            else:
                row.status = OpenApplicationStatus.REJECTED.value
            row.reviewer = by.uri
            row.reviewed_at = now
            row.review_comment = comment
            session.add(row)
            await session.flush()  # the key row before the application names it
            remember(session, by, review.request_id, "open_review", row.id, row.id, now)
            if key_row is not None:
                message = (
                    f"授权开放：资源 {row.resource_code} 已授权 {row.entity_name}（"
                    f"{row.entity_code}，{ApplicantType(row.entity_type).term}）用于"
                    f"{USE_TERMS[OpenUse(row.use)]}，数据项 {', '.join(items)}，有效期至 "
                    f"{key_row.not_after.astimezone(CST):%Y-%m-%d %H:%M} CST；申请号 {row.id}"
                )
                if reference:
                    message += f"，竞争性方式确定（{reference}）"
                message += "（第三十三条：将授权情况告知相关数据生产应用单位）"
                Notifications.add(
                    session,
                    provider_identity(self._region, self._td, row.provider_code),
                    NotificationKind.OPEN_APPLICATION_REVIEWED,
                    message,
                    at=now,
                    resource_code=row.resource_code,
                    application_id=row.id,
                )
            return Approval(application_of(row, key_row), clear_key)

        approval = await self._db.write("opendata.review", txn)
        if approval.application.key is not None:
            self._notifications.notify_changed()
        return approval

    # --- keys --------------------------------------------------------------------------------
