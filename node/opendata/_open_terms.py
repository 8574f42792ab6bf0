"""The terms of 授权开放 (第三十三条) that applications and keys share: the uses, what a key
authorizes, the bounds of submitted text, and the audit record of the commands that work on
the database directly. No grpc."""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.identity import Identity
from node.audit import AuditEntry, AuditLog, Operation, request_digest
from node.errors import DomainError, InvalidArgument
from node.models import OpenKeyRow
from node.opendata._publish import _outcome

T = TypeVar("T")

MAX_LINE = 200  # names, contacts, references: one line
MAX_TEXT = 2000  # purposes, comments, reasons


class OpenUse(enum.Enum):
    """What 授权开放 data will be used for (第三十三条)."""

    RESEARCH = "research"  # 科研
    EDUCATION = "education"  # 教育
    PUBLIC_WELFARE = "public_welfare"  # 其他公益性活动
    COMMERCIAL = "commercial"  # 商业开发: only after a competitive selection (第三十三、三十四条)


#: 第三十三条: 高校或者科研院所获得的数据只能用于科研教育等公益性活动.
PUBLIC_INTEREST_USES = frozenset({OpenUse.RESEARCH, OpenUse.EDUCATION, OpenUse.PUBLIC_WELFARE})
USE_TERMS = {
    OpenUse.RESEARCH: "科研",
    OpenUse.EDUCATION: "教育",
    OpenUse.PUBLIC_WELFARE: "公益性活动",
    OpenUse.COMMERCIAL: "商业开发",
}


@dataclass(frozen=True)
class KeyScope:
    """What a key authorizes: one resource, some of its published items, one use, until
    ``not_after``."""

    key_id: str
    application_id: str
    resource_code: str
    items: tuple[str, ...]
    use: OpenUse
    entity_code: str
    entity_name: str
    not_after: dt.datetime


@dataclass(frozen=True)
class OpenKey:
    """A key as the authority sees it (never the key itself)."""

    scope: KeyScope
    provider_code: str
    issued_at: dt.datetime
    revoked: bool
    revoked_at: dt.datetime | None
    revoked_by: str
    revoke_reason: str

    @property
    def key_id(self) -> str:
        return self.scope.key_id


def utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def check_line(value: str, field: str, *, required: bool, rule: str = "") -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(f"{field}: required{f' ({rule})' if rule else ''}")
    if len(value) > MAX_LINE or not value.isprintable():
        raise InvalidArgument(f"{field}: one line of at most {MAX_LINE} characters")
    return value


def check_text(
    value: str, field: str, *, required: bool, rule: str = "", limit: int = MAX_TEXT
) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(f"{field}: required{f' ({rule})' if rule else ''}")
    if len(value) > limit:
        raise InvalidArgument(f"{field}: at most {limit} characters, got {len(value)}")
    return value


def scope_of(row: OpenKeyRow) -> KeyScope:
    return KeyScope(
        key_id=row.key_id,
        application_id=row.application_id,
        resource_code=row.resource_code,
        items=tuple(json.loads(row.items)),
        use=OpenUse(row.use),
        entity_code=row.entity_code,
        entity_name=row.entity_name,
        not_after=utc(row.not_after),
    )


def key_of(row: OpenKeyRow) -> OpenKey:
    return OpenKey(
        scope=scope_of(row),
        provider_code=row.provider_code,
        issued_at=utc(row.issued_at),
        revoked=row.revoked,
        revoked_at=utc(row.revoked_at) if row.revoked_at else None,
        revoked_by=row.revoked_by,
        revoke_reason=row.revoke_reason,
    )


class Recorder:
    """Writes the outcome of a command to the audit log, when there is one (the ``govnode
    opendata`` commands; over gRPC the audit hook records the call and this is None)."""

    def __init__(self, audit: AuditLog | None) -> None:
        self._audit = audit

    async def recorded(
        self,
        method: str,
        by: Identity,
        subject: str,
        resource_code: str,
        work: Awaitable[T],
        done: Callable[[T], tuple[str, dict[str, str | int]]],
    ) -> T:
        """Run ``work``; with an audit log, record its outcome (a refusal too)."""
        try:
            result = await work
        except DomainError as exc:
            await self._record(method, by, subject, resource_code, _outcome(exc), exc.message, {})
            raise
        message, detail = done(result)
        await self._record(method, by, subject, resource_code, "OK", message, detail)
        return result

    async def _record(
        self,
        method: str,
        by: Identity,
        subject: str,
        resource_code: str,
        outcome: str,
        message: str,
        detail: dict[str, str | int],
    ) -> None:
        if self._audit is None:
            return
        await self._audit.append(
            AuditEntry(
                caller=by.uri,
                method=method,
                operation=Operation.MAINTAIN,
                outcome=outcome,
                request_digest=request_digest(f"{method} {subject}".encode()),
                resource_code=resource_code,
                message=message[:1000],
                detail=detail,
            )
        )
