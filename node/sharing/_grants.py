"""Access to 有条件共享 resources: applications, grants and their parties (第二十五条, 第三十七条).

An agency applies to the data management authority (数据管理机构) of the node that owns a
有条件共享 resource; the authority approves (possibly narrowing items, methods and period) or
rejects; an approval makes a *grant*, and a grant bounds every use of the resource by its
grantee: which items, which share methods, which period, which items in clear text. Anything
outside it is 越权使用 (第三十七条) and refused naming the missing scope.

This module holds the values and the rules that need no database: who is a resource's provider,
who may review, who may see an application or grant. The per-call decision that applies a
grant is node.sharing._decision's; storing applications and grants is
node.sharing._applications's. Pure domain: no grpc.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass

from gateway.identity import Identity, Role
from node.catalog import TESTERS_USE_PROBES_ONLY, ResourceEntry, ShareMethod
from node.errors import PermissionDenied
from node.models import AccessApplicationRow, AccessGrantRow

#: The rule every out-of-grant refusal names.
MISUSE = "越权使用, 第三十七条"

#: How refusals and notices name the share methods (第二十六、二十七条).
METHOD_NAMES = {
    ShareMethod.VERIFY: "联机验证 (Verify)",
    ShareMethod.COMPARE: "比对验证 (Compare)",
    ShareMethod.QUERY: "检索查询 (Query)",
    ShareMethod.EXCHANGE: "数据交换 (Exchange)",
    ShareMethod.SUBSCRIBE: "主动推送 (Subscribe)",
}


class ApplicationStatus(enum.StrEnum):
    """Mirrors govnode.v1.ApplicationStatus."""

    PENDING = "pending"  # 待审定
    APPROVED = "approved"  # 审定同意
    REJECTED = "rejected"  # 审定不同意
    WITHDRAWN = "withdrawn"  # 申请人撤回


class Decision(enum.StrEnum):
    """The authority's decision on an application (审定, 第二十五条)."""

    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True)
class Application:
    """An application to use a 有条件共享 resource (第二十五条)."""

    id: str
    status: ApplicationStatus
    applicant: str  # SPIFFE ID
    resource_code: str
    provider_code: str
    region: str  # the resource's region: the node that holds the application
    probe: bool
    items: tuple[str, ...]
    share_methods: tuple[ShareMethod, ...]
    purpose: str
    legal_basis: str
    not_before: dt.datetime | None
    not_after: dt.datetime
    request_id: str
    created_at: dt.datetime
    reviewer: str = ""
    decided_at: dt.datetime | None = None
    review_comment: str = ""
    grant_id: str = ""


@dataclass(frozen=True)
class Grant:
    """A grant (授权): the bounded right of one grantee to use one resource."""

    id: str
    application_id: str
    grantee: str  # SPIFFE ID
    resource_code: str
    provider_code: str
    region: str
    probe: bool
    items: tuple[str, ...]
    clear_text_items: tuple[str, ...]
    share_methods: tuple[ShareMethod, ...]
    purpose: str
    not_before: dt.datetime
    not_after: dt.datetime
    justification: str
    granted_by: str
    created_at: dt.datetime
    revoked: bool = False
    revoked_at: dt.datetime | None = None
    revoke_reason: str = ""

    def in_force(self, now: dt.datetime) -> bool:
        return not self.revoked and self.not_before <= now <= self.not_after


@dataclass(frozen=True)
class Draft:
    """What an agency applies for (AccessService.Apply)."""

    resource_code: str
    items: tuple[str, ...]
    share_methods: tuple[ShareMethod, ...]
    purpose: str
    legal_basis: str
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    request_id: str = ""


@dataclass(frozen=True)
class Review:
    """The authority's review of one application (AccessService.ReviewApplication). On
    approval, empty items/methods and unset times keep what was applied for."""

    decision: Decision
    items: tuple[str, ...] = ()
    share_methods: tuple[ShareMethod, ...] = ()
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    clear_text_items: tuple[str, ...] = ()
    justification: str = ""
    comment: str = ""
    request_id: str = ""


# --- parties --------------------------------------------------------------------------------


def is_provider(caller: Identity, entry: ResourceEntry) -> bool:
    """Whether ``caller`` is the provider agency of ``entry``: it uses its own resources by any
    method, in clear. Nobody is the provider of a probe (第三十一条): its provider_code is a
    label, and only testers feed it."""
    return is_party_provider(caller, entry.provider_code, entry.region, entry.probe)


def is_party_provider(caller: Identity, provider_code: str, region: str, probe: bool) -> bool:
    return (
        not probe
        and caller.role is Role.AGENCY
        and caller.subject == provider_code
        and caller.region == region
    )


def may_see(
    caller: Identity, node_region: str, *, party: str, provider_code: str, region: str, probe: bool
) -> bool:
    """May ``caller`` read an application or grant whose applicant/grantee is ``party``?
    Its applicant or grantee, the resource's provider, this node's authority, and (probe
    resources only) a conformance tester."""
    return (
        caller.uri == party
        or is_party_provider(caller, provider_code, region, probe)
        or (caller.role is Role.AUTHORITY and caller.region == node_region)
        or (caller.role is Role.TESTER and probe)
    )


def check_history_reader(caller: Identity, entry: ResourceEntry, node_region: str) -> None:
    """Every version of a record, in clear (第四十一条), is for the resource's provider and the
    data management authority of the node holding it, and for a tester on a probe resource."""
    if may_see(
        caller,
        node_region,
        party="",
        provider_code=entry.provider_code,
        region=entry.region,
        probe=entry.probe,
    ):
        return
    raise PermissionDenied(
        f"{caller} may not read the history of records of resource {entry.resource_code}: "
        f"only its provider {entry.provider_code} and the data management authority of region "
        f"{node_region} may (第四十一条); other callers use Query under their share type or grant"
    )


def check_reviewer(caller: Identity, node_region: str, *, probe: bool, action: str) -> None:
    """Only this node's authority reviews and revokes (第二十五条); a conformance tester does
    so for probe resources only (第三十一条). ``action``: what is refused, for the message."""
    if caller.role is Role.AUTHORITY:
        if caller.region == node_region:
            return
        raise PermissionDenied(
            f"{caller} may not {action}: it is held by the node of region {node_region}, and "
            f"only that region's data management authority (数据管理机构) reviews it (第二十五条)"
        )
    if caller.role is Role.TESTER:
        if probe:
            return
        raise PermissionDenied(
            f"{TESTERS_USE_PROBES_ONLY}: tester {caller.uri} may not {action}, which is not "
            "on a probe resource"
        )
    raise PermissionDenied(
        f"{caller} may not {action}: only the data management authority (数据管理机构) of "
        f"region {node_region} reviews applications and revokes grants (第二十五条), with an "
        "authority certificate (`govnode certs issue-authority`)"
    )


def grant_from_row(row: AccessGrantRow) -> Grant:
    return Grant(
        id=row.id,
        application_id=row.application_id,
        grantee=row.grantee,
        resource_code=row.resource_code,
        provider_code=row.provider_code,
        region=row.region,
        probe=row.probe,
        items=tuple(json.loads(row.items)),
        clear_text_items=tuple(json.loads(row.clear_text_items)),
        share_methods=tuple(ShareMethod(m) for m in json.loads(row.share_methods)),
        purpose=row.purpose,
        not_before=row.not_before,
        not_after=row.not_after,
        justification=row.justification,
        granted_by=row.granted_by,
        created_at=row.created_at,
        revoked=row.revoked,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


def application_from_row(row: AccessApplicationRow) -> Application:
    return Application(
        id=row.id,
        status=ApplicationStatus(row.status),
        applicant=row.applicant,
        resource_code=row.resource_code,
        provider_code=row.provider_code,
        region=row.region,
        probe=row.probe,
        items=tuple(json.loads(row.items)),
        share_methods=tuple(ShareMethod(m) for m in json.loads(row.share_methods)),
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        not_before=row.not_before,
        not_after=row.not_after,
        request_id=row.request_id,
        created_at=row.created_at,
        reviewer=row.reviewer,
        decided_at=row.decided_at,
        review_comment=row.review_comment,
        grant_id=row.grant_id,
    )
