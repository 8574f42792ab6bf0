"""Who may use a resource, how, and which items they see in clear (第二十四至二十六条).

One decision per call, before any data is read:

- the provider agency uses its own resources by any method and sees every item in clear;
- 暂不共享 (NOT_SHARED) resources never serve anyone else (第二十四条);
- a method the catalog entry does not list among its share methods is refused;
- 有条件共享 (CONDITIONAL) resources serve others only under an approved application's grant
  (第二十五条): :func:`authorize` refuses them, saying an application is needed, and
  node.sharing.AccessControl, which reads the grants, settles them with :func:`grant_access`;
- 无条件共享 (UNCONDITIONAL) resources serve any registered agency, with sensitive items masked
  by their masking rule.

Conformance testers (第三十一条, node.catalog._probe) use probe resources only, and under exactly
the rules above for an agency that is not the provider: nobody is the provider of a probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.identity import Identity, Role
from node.catalog import (
    ResourceEntry,
    ResourceStatus,
    ShareMethod,
    ShareType,
    check_tester_use,
    default_clear_items,
    is_tester,
)
from node.errors import FailedPrecondition, PermissionDenied

METHOD_NAMES = {
    ShareMethod.VERIFY: "联机验证 (Verify)",
    ShareMethod.COMPARE: "比对验证 (Compare)",
    ShareMethod.QUERY: "检索查询 (Query)",
    ShareMethod.EXCHANGE: "数据交换 (Exchange)",
    ShareMethod.SUBSCRIBE: "主动推送 (Subscribe)",
}


@dataclass(frozen=True)
class Access:
    """What one caller may do with one resource in one call."""

    is_provider: bool
    visible_items: frozenset[str]
    clear_items: frozenset[str]
    #: The grant(s) the access rests on (有条件共享), comma-separated, for the audit record.
    grant_id: str = ""


def is_provider(caller: Identity, entry: ResourceEntry) -> bool:
    return (
        not entry.probe  # a probe's provider_code is a label; only testers feed it
        and caller.role is Role.AGENCY
        and caller.subject == entry.provider_code
        and caller.region == entry.region
    )


def authorize(caller: Identity, entry: ResourceEntry, method: ShareMethod) -> Access:
    """The caller's access to ``entry`` through ``method``, or a refusal naming the rule.
    Knows no grants: a non-provider's use of a 有条件共享 resource is refused."""
    access = authorize_without_grant(caller, entry, method)
    if access is None:
        raise conditional_refusal(caller, entry)
    return access


def conditional_refusal(caller: Identity, entry: ResourceEntry) -> PermissionDenied:
    """The refusal of a 有条件共享 resource to a caller that holds no grant for it."""
    who = f"{caller.role.value} {caller.subject} ({caller.region})"
    return PermissionDenied(
        f"resource {entry.resource_code} ({entry.name}) is 有条件共享: {who} needs an approved "
        "application (AccessService.Apply, reviewed by the data management authority) "
        f"before using it (第二十五条); conditions: {entry.share_conditions}"
    )


def grant_access(
    entry: ResourceEntry, items: frozenset[str], clear_text: frozenset[str], grant_id: str
) -> Access:
    """A grantee's access: only the granted ``items`` (declared ones), masked by their rule
    unless the grant names them in ``clear_text``."""
    declared = frozenset(i.name for i in entry.items)
    visible = items & declared
    unmasked = default_clear_items(entry)  # level-4 items are masked even without a rule
    return Access(
        is_provider=False,
        visible_items=visible,
        clear_items=visible & (unmasked | clear_text),
        grant_id=grant_id,
    )


def authorize_without_grant(
    caller: Identity, entry: ResourceEntry, method: ShareMethod
) -> Access | None:
    """:func:`authorize`, except that a non-provider's use of a 有条件共享 resource by one of
    its share methods returns None: the grants decide it (node.sharing._grants)."""
    code = entry.resource_code
    if entry.status is ResourceStatus.WITHDRAWN:
        raise FailedPrecondition(f"resource {code} ({entry.name}) is withdrawn")
    check_tester_use(caller, entry)
    if caller.role is not Role.AGENCY and not is_tester(caller):
        raise PermissionDenied(
            f"{caller} is not an agency system; data sharing calls are made by agencies"
        )
    items = frozenset(i.name for i in entry.items)
    if is_provider(caller, entry):
        return Access(is_provider=True, visible_items=items, clear_items=items)
    if entry.share_type is ShareType.NOT_SHARED:
        raise PermissionDenied(
            f"resource {code} ({entry.name}) is 暂不共享 (not shared) under "
            f"{entry.legal_basis or 'its legal basis'}; only its provider may use it (第二十四条)"
        )
    if method not in entry.share_methods:
        offered = ", ".join(METHOD_NAMES[m] for m in entry.share_methods) or "none"
        raise PermissionDenied(
            f"resource {code} ({entry.name}) is not shared by {METHOD_NAMES[method]}; "
            f"its share methods are: {offered}"
        )
    if entry.share_type is ShareType.CONDITIONAL:
        return None
    return Access(is_provider=False, visible_items=items, clear_items=default_clear_items(entry))
