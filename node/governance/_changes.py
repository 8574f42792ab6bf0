"""Approved change and deletion (未经批准，任何单位和个人均不得更改和删除政务数据, 第四十一条).

A provider asks for a change of one record (new values, by key) or its deletion, or for an
update or the withdrawal of one of its catalog entries; the request is stored pending, and the
node's data management authority (数据管理机构) approves it, which applies the change in the
same transaction, or rejects it with a reason. Nothing is removed: a record change or deletion
is a new record version (node.records._change), an entry update or withdrawal a new entry
version (node.catalog._registry). Each request keeps the record as it was when asked (before and
after), readable by the requester, the resource's provider and the authority.

The authority is notified of a request, the requester of its review, each in the transaction of
the fact (node.sharing._notifications). Ids carry the node's region (``350100-C-<hex>``); writes
with a ``request_id`` are idempotent per caller (node.idempotency). No grpc.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, IdentityError, Role, authority_identity, parse_spiffe
from gateway.quote import quote
from node import paging
from node.catalog import (
    MAX_PROBLEMS_SHOWN,
    Catalog,
    ResourceEntry,
    ResourceStatus,
    check_catalog_write,
    check_submitter,
    entry_from_json,
    entry_to_json,
    validate_entry,
)
from node.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from node.idempotency import check_request_id, remember, replay
from node.models import ChangeRequestRow
from node.records import (
    MAX_CHECK_SECONDS,
    Records,
    current_record,
    full_key,
    key_text,
    schema_for,
    write_record_change,
)
from node.sharing import (
    MAX_TEXT,
    Decision,
    NotificationKind,
    Notifications,
    check_reviewer,
    may_see,
)
from node.storage import Database

ARTICLE = "第四十一条"
#: ListChangeRequests pages, as ListApplications and ListGrants.
DEFAULT_PAGE = 50
MAX_PAGE = 200


class ChangeTarget(enum.StrEnum):
    """Mirrors govnode.v1.ChangeTarget."""

    RECORD = "record"
    RESOURCE_ENTRY = "entry"


class ChangeAction(enum.StrEnum):
    """Mirrors govnode.v1.ChangeAction."""

    UPDATE = "update"  # 更改
    DELETE = "delete"  # 删除 (records: a version marked deleted; entries: withdrawal)


class ChangeStatus(enum.StrEnum):
    """Mirrors govnode.v1.ChangeRequestStatus."""

    PENDING = "pending"
    APPROVED = "approved"  # and applied
    REJECTED = "rejected"


@dataclass(frozen=True)
class ChangeDraft:
    """What a provider asks for (AccessService.RequestRecordChange)."""

    target: ChangeTarget
    action: ChangeAction
    resource_code: str
    key: Mapping[str, str]
    values: Mapping[str, str]  # record updates
    entry: ResourceEntry | None  # entry updates
    reason: str
    request_id: str = ""
    #: Entry changes: refused unless the entry is at this version (0: don't check).
    expected_version: int = 0


@dataclass(frozen=True)
class ChangeRequest:
    id: str
    status: ChangeStatus
    requester: str  # SPIFFE ID
    target: ChangeTarget
    action: ChangeAction
    resource_code: str
    provider_code: str
    probe: bool
    key: dict[str, str]
    values: dict[str, str]  # record updates: the new values
    entry: ResourceEntry | None  # entry updates: the new entry
    previous_values: dict[str, str]  # records: the values when asked
    previous_version: int
    reason: str
    request_id: str
    created_at: dt.datetime
    reviewer: str = ""
    reviewed_at: dt.datetime | None = None
    review_comment: str = ""
    applied_version: int = 0
    batch_id: str = ""  # a record change held from this Submit batch (node.records._hold)


def _loads(text: str) -> dict[str, str]:
    return dict(json.loads(text)) if text else {}


def _dumps(values: Mapping[str, str]) -> str:
    return json.dumps(dict(values), ensure_ascii=False, sort_keys=True)


def change_from_row(row: ChangeRequestRow) -> ChangeRequest:
    return ChangeRequest(
        id=row.id,
        status=ChangeStatus(row.status),
        requester=row.requester,
        target=ChangeTarget(row.target),
        action=ChangeAction(row.action),
        resource_code=row.resource_code,
        provider_code=row.provider_code,
        probe=row.probe,
        key=_loads(row.key_values),
        values=_loads(row.new_values),
        entry=entry_from_json(row.new_entry) if row.new_entry else None,
        previous_values=_loads(row.previous_values),
        previous_version=row.previous_version,
        reason=row.reason,
        request_id=row.request_id,
        created_at=row.created_at,
        reviewer=row.reviewer,
        reviewed_at=row.reviewed_at,
        review_comment=row.review_comment,
        applied_version=row.applied_version,
        batch_id=row.batch_id,
    )


def _text(value: str, field: str, rule: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidArgument(f"{field}: required ({rule})")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{field}: at most {MAX_TEXT} characters, got {len(value)}")
    return value


def _what(target: ChangeTarget, action: ChangeAction) -> str:
    if target is ChangeTarget.RECORD:
        return "更改记录" if action is ChangeAction.UPDATE else "删除记录"
    return "更改目录" if action is ChangeAction.UPDATE else "撤销目录"


_STATUS_ZH = {ChangeStatus.APPROVED: "已批准并生效", ChangeStatus.REJECTED: "未获批准"}

#: Runs inside a transaction of this module with the change request as it now stands: in
#: :meth:`ChangeRequests.request` once it is made, in :meth:`ChangeRequests.review` once it is
#: approved (and applied) or rejected. An exception rolls the whole transaction back. Error
#: reports (纠错, node.quality._errors) follow their correction this way.
ChangeHook = Callable[[AsyncSession, "ChangeRequest", dt.datetime], Awaitable[None]]


class ChangeRequests:
    """Change requests held by this node (the owner of the resources they concern)."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        records: Records,
        notifications: Notifications,
        node: Identity,
        clock: Callable[[], dt.datetime] | None = None,
        on_reviewed: ChangeHook | None = None,
    ) -> None:
        """``on_reviewed``: run in the review's transaction of every change request."""
        self._db = db
        self._on_reviewed = on_reviewed
        self._catalog = catalog
        self._records = records
        self._notifications = notifications
        self._region = node.region
        self._td = node.trust_domain
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    # --- asking ---------------------------------------------------------------------------

    def _check_requester(self, caller: Identity, entry: ResourceEntry, draft: ChangeDraft) -> None:
        code = entry.resource_code
        if draft.target is ChangeTarget.RECORD:
            tester = check_submitter(caller, entry)  # probe records: testers only
        else:
            action = "change" if draft.action is ChangeAction.UPDATE else "withdraw"
            tester = check_catalog_write(caller, code, probe=entry.probe, action=action)
        if not tester and (
            caller.role is not Role.AGENCY
            or caller.subject != entry.provider_code
            or caller.region != entry.region
        ):
            raise PermissionDenied(
                f"{caller} may not ask to change resource {code}: only its provider agency "
                f"{entry.provider_code} may, and the authority approves ({ARTICLE})"
            )
        if entry.region != self._region:
            raise FailedPrecondition(
                f"resource {code} is held by the node of region {entry.region}; ask there "
                f"(this node is {self._region})"
            )
        if entry.status is not ResourceStatus.ACTIVE:
            raise FailedPrecondition(f"resource {code} ({entry.name}) is {entry.status.value}")

    def _check_shape(self, draft: ChangeDraft) -> None:
        if draft.target is ChangeTarget.RECORD:
            if draft.entry is not None:
                raise InvalidArgument("entry: only for a RESOURCE_ENTRY target")
            if not draft.key:
                raise InvalidArgument("key: required for a RECORD target (the key items' values)")
            if draft.action is ChangeAction.UPDATE and not draft.values:
                raise InvalidArgument("record: required for a RECORD UPDATE (the new values)")
            if draft.action is ChangeAction.DELETE and draft.values:
                raise InvalidArgument("record: must be empty for a deletion")
            return
        if draft.key or draft.values:
            raise InvalidArgument("key and record: only for a RECORD target")
        if draft.action is ChangeAction.UPDATE:
            if draft.entry is None:
                raise InvalidArgument("entry: required for a RESOURCE_ENTRY UPDATE (the new entry)")
            if draft.entry.resource_code != draft.resource_code:
                raise InvalidArgument(
                    f"entry.resource_code: {quote(draft.entry.resource_code)} is not the "
                    f"resource the request concerns ({quote(draft.resource_code)})"
                )
        elif draft.entry is not None:
            raise InvalidArgument("entry: must be unset for a withdrawal")

    def _new_values(
        self, entry: ResourceEntry, record_key: str, draft: ChangeDraft
    ) -> dict[str, str]:
        """The new record in canonical form, checked like Submit (第十二、十五条); the key
        items may be left out (they come from ``key``) but may not change."""
        schema = schema_for(entry)
        start = time.thread_time()

        def budget() -> None:
            if time.thread_time() - start > MAX_CHECK_SECONDS:
                raise ResourceExhausted(
                    f"record: checking its values took more than {MAX_CHECK_SECONDS:g} s of "
                    "CPU; simplify the entry's patterns"
                )

        values, problems = schema.clean({**draft.key, **draft.values}, budget=budget)
        if problems:
            shown = [f"values.{quote(item)}: {why}" if item else why for item, why in problems]
            if len(shown) > MAX_PROBLEMS_SHOWN:
                more = len(shown) - MAX_PROBLEMS_SHOWN
                shown = [*shown[:MAX_PROBLEMS_SHOWN], f"and {more} more problems"]
            raise InvalidArgument("record: " + "; ".join(shown))
        if key_text([values[name] for name in schema.key_items]) != record_key:
            raise InvalidArgument(
                f"record: the key items ({', '.join(schema.key_items)}) must keep the values "
                "named in key; a change does not move a record to another key"
            )
        return values

    async def request(
        self,
        caller: Identity,
        entry: ResourceEntry,
        draft: ChangeDraft,
        *,
        within: ChangeHook | None = None,
        authority_may_ask: bool = False,
    ) -> ChangeRequest:
        """A provider asks for approval of a change or deletion (第四十一条); the authority is
        notified in the same transaction. Nothing changes until it approves. ``within`` runs in
        that transaction once the request is made (not on a replayed request id).
        ``authority_may_ask``: this node's authority may ask too (the correction of an error
        report from the operator's desk, node.quality._errors); it still reviews it apart."""
        check_request_id(draft.request_id)
        self._check_shape(draft)
        reason = _text(draft.reason, "reason", "why the change is needed")
        if not (authority_may_ask and caller.uri == authority_identity(self._region, self._td)):
            self._check_requester(caller, entry, draft)
        code = entry.resource_code
        record_key = new_values = new_entry = ""
        if draft.target is ChangeTarget.RECORD:
            record_key = full_key(schema_for(entry), draft.key, "key")
            if draft.action is ChangeAction.UPDATE:
                # In a worker thread, as Submit's checks: patterns may take a while.
                checked = await asyncio.to_thread(self._new_values, entry, record_key, draft)
                new_values = _dumps(checked)
        elif draft.entry is not None:
            validate_entry(draft.entry, node_region=self._region)
            if draft.entry.provider_code != entry.provider_code:
                raise InvalidArgument(
                    f'entry.provider_code: cannot change from "{entry.provider_code}" to '
                    f'"{draft.entry.provider_code}"; the provider of a resource is fixed'
                )
            if draft.entry.probe != entry.probe:
                raise InvalidArgument(
                    f"entry.probe: cannot change from {str(entry.probe).lower()} to "
                    f"{str(draft.entry.probe).lower()}; whether a resource is a conformance "
                    "probe is fixed (第三十一条)"
                )
            new_entry = entry_to_json(draft.entry)
        # What the request is about, for its request_id (migration 0015 derives the same).
        changed = f"{code} record {record_key}" if record_key else code
        now = self._clock()

        async def txn(session: AsyncSession) -> ChangeRequest:
            done = await replay(
                self._db, session, caller, draft.request_id, "request_change", changed
            )
            if done:
                return await self._get(session, done)
            previous_values: dict[str, str] = {}
            previous_version = entry.version
            if draft.expected_version and draft.expected_version != entry.version:
                raise FailedPrecondition(
                    f"resource {code} is at version {entry.version}, the change expected "
                    f"version {draft.expected_version}; fetch it again and re-apply the change"
                )
            if draft.target is ChangeTarget.RECORD:
                current = await current_record(await session.connection(), code, record_key)
                if current is None or current.deleted:
                    raise NotFound(
                        f"resource {code} has no record with this key"
                        + (" (it was deleted with approval)" if current is not None else "")
                    )
                if new_values and _loads(new_values) == current.values:
                    raise FailedPrecondition(
                        f"the record of resource {code} already has these values: there is "
                        "nothing to change"
                    )
                previous_values, previous_version = current.values, current.version
            row = ChangeRequestRow(
                id=f"{self._region}-C-{os.urandom(8).hex()}",
                status=ChangeStatus.PENDING.value,
                requester=caller.uri,
                target=draft.target.value,
                action=draft.action.value,
                resource_code=code,
                provider_code=entry.provider_code,
                probe=entry.probe,
                record_key=record_key,
                key_values=_dumps(draft.key) if record_key else "",
                new_values=new_values,
                new_entry=new_entry,
                previous_values=_dumps(previous_values) if record_key else "",
                previous_version=previous_version,
                reason=reason,
                request_id=draft.request_id,
                created_at=now,
            )
            session.add(row)
            remember(session, caller, draft.request_id, "request_change", changed, row.id, now)
            Notifications.add(
                session,
                authority_identity(self._region, self._td),
                NotificationKind.CHANGE_REQUESTED,
                f"{caller} 申请{_what(draft.target, draft.action)}：资源 {code}（{entry.name}），"
                f"理由：{reason}；申请号 {row.id}，待数据管理机构批准（{ARTICLE}）",
                at=now,
                resource_code=code,
                change_request_id=row.id,
            )
            change = change_from_row(row)
            if within is not None:
                await within(session, change, now)
            return change

        change = await self._db.write("changes.request", txn)
        self._notifications.notify_changed()
        return change

    # --- CatalogService.UpdateResource / WithdrawResource --------------------------------

    async def update_entry(
        self,
        caller: Identity,
        entry: ResourceEntry,
        *,
        expected_version: int = 0,
        reason: str = "",
        request_id: str = "",
    ) -> tuple[ResourceEntry, ChangeRequest | None]:
        """UpdateResource: the entry as it stands and the pending change request the update
        became (第四十一条), or, for a probe entry (no government data, 第三十一条), the entry at
        its new version and None. The entry is checked before the caller, as at registration."""
        check_request_id(request_id)
        validate_entry(entry, node_region=self._region)
        current = await self._catalog.get(entry.resource_code)
        if current.probe:
            return await self._catalog.update(caller, entry, expected_version, request_id), None
        draft = ChangeDraft(
            target=ChangeTarget.RESOURCE_ENTRY,
            action=ChangeAction.UPDATE,
            resource_code=current.resource_code,
            key={},
            values={},
            entry=entry,
            reason=reason,
            request_id=request_id,
            expected_version=expected_version,
        )
        return current, await self.request(caller, current, draft)

    async def withdraw_entry(
        self, caller: Identity, code: str, *, reason: str, request_id: str = ""
    ) -> tuple[ResourceEntry, ChangeRequest | None]:
        """WithdrawResource, like :meth:`update_entry`: a pending change request, or for a probe
        entry the withdrawal at once."""
        check_request_id(request_id)
        if not code:
            raise InvalidArgument("resource_code is required")
        if not reason.strip():
            raise InvalidArgument("reason: withdrawing a resource needs a reason")
        current = await self._catalog.get(code)
        if current.probe:
            return await self._catalog.withdraw(caller, code, reason, request_id), None
        draft = ChangeDraft(
            target=ChangeTarget.RESOURCE_ENTRY,
            action=ChangeAction.DELETE,
            resource_code=code,
            key={},
            values={},
            entry=None,
            reason=reason,
            request_id=request_id,
        )
        return current, await self.request(caller, current, draft)

    # --- reading --------------------------------------------------------------------------

    async def _get(self, session: AsyncSession, change_id: str) -> ChangeRequest:
        row = await session.get(ChangeRequestRow, change_id)
        if row is None:
            raise NotFound(f"change request {change_id} does not exist at this node")
        return change_from_row(row)

    def _check_visible(self, caller: Identity, change: ChangeRequest) -> None:
        if not may_see(
            caller,
            self._region,
            party=change.requester,
            provider_code=change.provider_code,
            region=self._region,
            probe=change.probe,
        ):
            raise PermissionDenied(
                f"{caller} may not see change request {change.id}: it is visible to its "
                "requester, the resource's provider and the data management authority only"
            )

    async def get(self, caller: Identity, change_id: str) -> ChangeRequest:
        change = await self._db.read("changes.get", lambda s: self._get(s, change_id))
        self._check_visible(caller, change)
        return change

    async def list(
        self,
        caller: Identity,
        *,
        status: ChangeStatus | None = None,
        resource_code: str = "",
        batch_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[ChangeRequest], str]:
        """The change requests ``caller`` may see, newest first, with the next page's token."""
        offset, size = paging.offset_page(
            page_token, page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE
        )
        t = ChangeRequestRow
        query = select(t)
        if not (caller.role is Role.AUTHORITY and caller.region == self._region):
            seen = [col(t.requester) == caller.uri]
            if caller.role is Role.AGENCY:
                mine = col(t.provider_code) == caller.subject
                seen.append(sa.and_(mine, col(t.probe).is_(False)))
            if caller.role is Role.TESTER:
                seen.append(col(t.probe).is_(True))
            query = query.where(sa.or_(*seen))
        if status is not None:
            query = query.where(t.status == status.value)
        if resource_code:
            query = query.where(t.resource_code == resource_code)
        if batch_id:
            query = query.where(t.batch_id == batch_id)
        query = query.order_by(col(t.created_at).desc(), col(t.id).desc())

        async def txn(session: AsyncSession) -> list[ChangeRequestRow]:
            return list((await session.exec(query.offset(offset).limit(size + 1))).all())

        rows = await self._db.read("changes.list", txn)
        page, token = paging.offset_rows(rows, offset, size)
        return [change_from_row(r) for r in page], token

    # --- review ---------------------------------------------------------------------------

    async def review(
        self,
        caller: Identity,
        change_id: str,
        decision: Decision,
        comment: str,
        request_id: str = "",
    ) -> ChangeRequest:
        """The authority approves (the change is applied in this transaction) or rejects with a
        reason; the requester is notified either way."""
        check_request_id(request_id)
        if decision is Decision.REJECT:
            comment = _text(comment, "comment", "the reason for a rejection")
        elif len(comment) > MAX_TEXT:
            raise InvalidArgument(f"comment: at most {MAX_TEXT} characters, got {len(comment)}")
        comment = comment.strip()
        now = self._clock()

        async def txn(session: AsyncSession) -> ChangeRequest:
            if done := await replay(
                self._db, session, caller, request_id, "review_change", change_id
            ):
                return await self._get(session, done)
            rows = await session.exec(
                select(ChangeRequestRow).where(ChangeRequestRow.id == change_id).with_for_update()
            )
            row = rows.first()
            if row is None:
                raise NotFound(f"change request {change_id} does not exist at this node")
            check_reviewer(
                caller, self._region, probe=row.probe, action=f"review change request {row.id}"
            )
            if row.status != ChangeStatus.PENDING.value:
                raise FailedPrecondition(
                    f"change request {row.id} is already {row.status}: only a pending request "
                    "is reviewed"
                )
            if decision is Decision.APPROVE:
                row.applied_version = await self._apply(session, row, now)
                row.status = ChangeStatus.APPROVED.value
            else:
                row.status = ChangeStatus.REJECTED.value
            row.reviewer = caller.uri
            row.reviewed_at = now
            row.review_comment = comment
            session.add(row)
            remember(session, caller, request_id, "review_change", row.id, row.id, now)
            change = change_from_row(row)
            message = (
                f"变更申请 {row.id}（{_what(change.target, change.action)}，资源 "
                f"{row.resource_code}）{_STATUS_ZH[change.status]}"
            )
            if row.applied_version:
                message += f"，新版本 {row.applied_version}"
            if comment:
                message += f"；意见：{comment}"
            Notifications.add(
                session,
                row.requester,
                NotificationKind.CHANGE_REVIEWED,
                message + f"（{ARTICLE}）",
                at=now,
                resource_code=row.resource_code,
                change_request_id=row.id,
            )
            if self._on_reviewed is not None:
                await self._on_reviewed(session, change, now)
            return change

        change = await self._db.write("changes.review", txn)
        self._notifications.notify_changed()
        if change.status is ChangeStatus.APPROVED:
            if change.target is ChangeTarget.RECORD:
                self._records.notify_changed(change.resource_code)
            else:
                self._catalog.notify_changed()
        return change

    async def _apply(self, session: AsyncSession, row: ChangeRequestRow, now: dt.datetime) -> int:
        """Apply an approved change inside the review's transaction; the new version."""
        change = change_from_row(row)
        code = change.resource_code
        if change.target is ChangeTarget.RECORD:
            return await write_record_change(
                self._db,
                await session.connection(),
                code,
                row.record_key,
                change.values if change.action is ChangeAction.UPDATE else None,
                expected_version=change.previous_version,
                by=change.requester,
                change_id=change.id,
                at=now,
            )
        requester = _identity(change.requester)
        why = f"变更申请 {change.id}：{change.reason}"
        if change.action is ChangeAction.UPDATE:
            assert change.entry is not None
            validate_entry(change.entry, node_region=self._region)
            entry = await self._catalog.update_in(
                session, requester, change.entry, change.previous_version, reason=why
            )
        else:
            entry = await self._catalog.withdraw_in(
                session, requester, code, why, expected_version=change.previous_version
            )
        return entry.version


def _identity(uri: str) -> Identity:
    try:
        return parse_spiffe(uri)
    except IdentityError as error:  # stored from a verified certificate: never expected
        raise FailedPrecondition(f"requester {uri!r} is not a valid identity") from error


__all__ = [
    "ChangeAction",
    "ChangeDraft",
    "ChangeHook",
    "ChangeRequest",
    "ChangeRequests",
    "ChangeStatus",
    "ChangeTarget",
]
