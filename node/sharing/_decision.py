"""The access decision of every data call (第二十四至二十六、三十七条): one call, before any data is
read, that says whether Verify, Compare, Query, Exchange or Subscribe may go on and how.

:meth:`AccessDecider.decide` takes the caller (the original caller, on a call routed here by
another node), the catalog entry, the share method and the items the request touches, and
either raises the refusal naming the rule or returns a :class:`Permit`. In order:

1. the catalog's rules (:func:`catalog_access`):
   - a withdrawn resource serves nobody; a conformance tester uses probe resources only
     (第三十一条, node.catalog), and there under exactly the rules for an agency that is not the
     provider: nobody is the provider of a probe;
   - the provider agency uses its own resources by any method and sees every item in clear;
   - 暂不共享 (NOT_SHARED) resources never serve anyone else (第二十四条);
   - a method the catalog entry does not list among its share methods is refused;
   - 无条件共享 (UNCONDITIONAL) resources serve any registered agency, with sensitive items
     masked by their masking rule;
2. 有条件共享 (CONDITIONAL) resources serve others only under an approved application's grant
   (第二十五条): the caller's grants are read afresh on every call, so an expiry or a revocation
   takes effect on the next one, and a grant bounds the items, methods and period;
3. the request's items: a key, claim, filter or requested item outside what the caller may see
   is 越权使用 (第三十七条), refused naming the item and the grant;
4. for Verify and Compare, the oracle's admission (node.sharing._oracle): rate limit, daily quota
   and enumeration watch.

What the audit record must say (the grant the call rests on, a suspected enumeration) goes to
the injected ``audit_detail``, so servicers copy nothing. Pure domain: no grpc.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role
from node.catalog import (
    HIGHLY_SENSITIVE,
    ResourceEntry,
    ResourceStatus,
    ShareMethod,
    ShareType,
    check_tester_use,
    default_clear_items,
    is_tester,
)
from node.errors import FailedPrecondition, PermissionDenied
from node.models import AccessGrantRow
from node.sharing._grants import METHOD_NAMES, MISUSE, Grant, grant_from_row, is_provider
from node.sharing._oracle import OracleGuard
from node.storage import Database

#: Receives facts for the call's audit record (gateway.interceptors.add_audit_detail).
AuditDetail = Callable[..., None]

_VERB = {
    ShareMethod.VERIFY: "Verify",
    ShareMethod.COMPARE: "Compare",
    ShareMethod.QUERY: "Query",
    ShareMethod.EXCHANGE: "Exchange",
    ShareMethod.SUBSCRIBE: "Subscribe",
}


@dataclass(frozen=True)
class Touches:
    """The items one request touches, by how it uses them (names only, except keys, whose
    values the oracle's enumeration watch needs).

    ``keys`` and ``claimed`` are per record: one for Verify, one per record for Compare, at
    most one key for Query; ``filtered`` are Query's filter items; ``read`` the items a Query or
    Exchange asks for (empty: every item the caller may see)."""

    keys: tuple[Mapping[str, str], ...] = ()
    claimed: tuple[Collection[str], ...] = ()
    filtered: tuple[str, ...] = ()
    read: tuple[str, ...] = ()

    @classmethod
    def verify(cls, key: Mapping[str, str], claimed: Collection[str]) -> Touches:
        return cls(keys=(dict(key),), claimed=(tuple(claimed),))

    @classmethod
    def compare(cls, records: Iterable[tuple[Mapping[str, str], Collection[str]]]) -> Touches:
        pairs = [(dict(key), tuple(claimed)) for key, claimed in records]
        return cls(keys=tuple(k for k, _ in pairs), claimed=tuple(c for _, c in pairs))

    @classmethod
    def query(cls, key: Mapping[str, str], filtered: Iterable[str], read: Iterable[str]) -> Touches:
        return cls(keys=(dict(key),), filtered=tuple(filtered), read=tuple(read))


@dataclass(frozen=True)
class Permit:
    """What one caller may do with one resource in one call."""

    is_provider: bool
    visible_items: frozenset[str]
    clear_items: frozenset[str]
    #: The grant(s) the access rests on (有条件共享), comma-separated; empty without a grant.
    grant_id: str = ""
    #: Whether the Verify oracle's limits applied to this call (node.sharing._oracle).
    oracle_applied: bool = False
    #: Whether this call completed a suspected enumeration run (its audit record says so).
    enumeration_suspected: bool = False

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return tuple(self.grant_id.split(",")) if self.grant_id else ()


# --- the catalog's rules ----------------------------------------------------------------------


def catalog_access(caller: Identity, entry: ResourceEntry, method: ShareMethod) -> Permit | None:
    """The caller's access by the catalog's rules, or a refusal naming the rule; None when a
    non-provider uses a 有条件共享 resource by one of its share methods: the grants decide."""
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
        return Permit(is_provider=True, visible_items=items, clear_items=items)
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
    return Permit(is_provider=False, visible_items=items, clear_items=default_clear_items(entry))


# --- grants (有条件共享, 第二十五条) -------------------------------------------------------------


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
) -> Permit:
    """A grantee's access: only the granted ``items`` (declared ones), masked by their rule
    unless the grant names them in ``clear_text``."""
    declared = frozenset(i.name for i in entry.items)
    visible = items & declared
    unmasked = default_clear_items(entry)  # level-4 items are masked even without a rule
    return Permit(
        is_provider=False,
        visible_items=visible,
        clear_items=visible & (unmasked | clear_text),
        grant_id=grant_id,
    )


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def grant_permit(
    caller: Identity,
    entry: ResourceEntry,
    method: ShareMethod,
    grants: Iterable[Grant],
    now: dt.datetime,
) -> Permit:
    """A grantee's access to a 有条件共享 resource through ``method`` under its ``grants``, or
    the refusal naming what is missing (no grant, period, revocation, method)."""
    grants = sorted(grants, key=lambda g: g.created_at, reverse=True)
    code = entry.resource_code
    if not grants:
        raise conditional_refusal(caller, entry)
    in_force = [g for g in grants if g.in_force(now)]
    if not in_force:
        latest = grants[0]
        if latest.revoked:
            why = f"was revoked at {_when(latest.revoked_at or now)} ({latest.revoke_reason})"
        elif now < latest.not_before:
            why = f"is valid only from {_when(latest.not_before)}"
        else:
            why = f"ended at {_when(latest.not_after)}"
        raise PermissionDenied(
            f"resource {code} ({entry.name}): grant {latest.id} of {caller} {why}, so it "
            f"covers no use now ({MISUSE}); apply again (AccessService.Apply, 第二十五条)"
        )
    covering = [g for g in in_force if method in g.share_methods]
    if not covering:
        allowed = sorted({m for g in in_force for m in g.share_methods})
        raise PermissionDenied(
            f"resource {code} ({entry.name}): grant {', '.join(g.id for g in in_force)} of "
            f"{caller} does not cover {METHOD_NAMES[method]}; it covers only "
            f"{', '.join(METHOD_NAMES[m] for m in allowed)} ({MISUSE})"
        )
    return grant_access(
        entry,
        frozenset(i for g in covering for i in g.items),
        frozenset(i for g in covering for i in g.clear_text_items),
        ",".join(g.id for g in covering),
    )


# --- the request's items (第三十七条) ----------------------------------------------------------


def _uses(method: ShareMethod, touches: Touches) -> Iterator[tuple[str, Iterable[str]]]:
    """Each group of item names the request touches, with how it uses them (for the message),
    in the order the refusals name them."""
    verb = _VERB[method]
    if method is ShareMethod.COMPARE:
        for i, (key, claimed) in enumerate(zip(touches.keys, touches.claimed, strict=False)):
            yield f"Compare records[{i}].key", key
            yield f"Compare records[{i}].claimed", claimed
        return
    for key in touches.keys:
        yield f"{verb} key", key
    for claimed in touches.claimed:
        yield f"{verb} claimed", claimed
    yield f"{verb} filters", touches.filtered
    yield f"{verb} items", touches.read


def check_scope(permit: Permit, entry: ResourceEntry, names: Iterable[str], use: str) -> None:
    """Refuse a call that keys on, claims, filters on or asks for items outside the caller's
    access (``use`` says how, e.g. "Verify key"). Unknown items are left to the records
    domain (INVALID_ARGUMENT)."""
    if permit.is_provider:
        return
    declared = {i.name for i in entry.items}
    missing = sorted({n for n in names if n in declared and n not in permit.visible_items})
    if not missing:
        return
    if permit.grant_id:
        raise PermissionDenied(
            f"{use}: item {', '.join(missing)} of resource {entry.resource_code} is outside "
            f"grant {permit.grant_id}, which covers only "
            f"{', '.join(sorted(permit.visible_items))} ({MISUSE})"
        )
    raise PermissionDenied(
        f"{use}: the caller may not use item {', '.join(missing)} of resource "
        f"{entry.resource_code} ({MISUSE})"
    )


def _touches_protected(permit: Permit, entry: ResourceEntry, touches: Touches) -> bool:
    """Whether a refused request touched a level-4 (HIGHLY_SENSITIVE) item outside what the
    caller may see: a request for personal or commercial data it has no right to."""
    protected = {i.name for i in entry.items if i.sensitivity_level >= HIGHLY_SENSITIVE}
    touched = {name for key in touches.keys for name in key}
    touched.update(name for claimed in touches.claimed for name in claimed)
    touched.update(touches.filtered, touches.read)
    return bool((touched & protected) - permit.visible_items)


# --- the decision -------------------------------------------------------------------------------


def _no_detail(**facts: str | int) -> None:
    return None


class AccessDecider:
    """The access decision of every Verify, Compare, Query, Exchange and Subscribe call (see the
    module docstring). ``oracle``: Verify's limits, None for none; ``audit_detail`` receives the
    facts the call's audit record carries (``grant``, ``enumeration_suspected``)."""

    def __init__(
        self,
        db: Database,
        *,
        oracle: OracleGuard | None = None,
        audit_detail: AuditDetail = _no_detail,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._oracle = oracle
        self._audit_detail = audit_detail
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    async def decide(
        self,
        caller: Identity,
        entry: ResourceEntry,
        method: ShareMethod,
        touches: Touches = Touches(),  # frozen, so one shared default is safe
        request_id: str = "",
    ) -> Permit:
        """``caller``'s permit to use ``entry`` by ``method`` touching ``touches``, or the
        refusal (PermissionDenied, FailedPrecondition, ResourceExhausted) naming the rule."""
        permit = await self._access(caller, entry, method)
        if permit.grant_id:  # named even when the request's items are refused below
            self._audit_detail(grant=permit.grant_id)
        try:
            for use, names in _uses(method, touches):
                check_scope(permit, entry, names, use)
        except PermissionDenied:
            if _touches_protected(permit, entry, touches):
                # Supervision counts it as misuse of personal or commercial data (第四十二条第五项).
                self._audit_detail(protected_items=1)
            raise
        if method not in (ShareMethod.VERIFY, ShareMethod.COMPARE) or self._oracle is None:
            return permit
        if not self._oracle.applies(caller, entry):
            return permit
        if method is ShareMethod.VERIFY:
            key = touches.keys[0] if touches.keys else {}
            flagged = await self._oracle.admit_verify(caller, entry, key, request_id=request_id)
        else:
            flagged = await self._oracle.admit_compare(
                caller, entry, touches.keys, request_id=request_id
            )
        if flagged:
            self._audit_detail(enumeration_suspected=1)
        return replace(permit, oracle_applied=True, enumeration_suspected=flagged)

    async def access(self, caller: Identity, entry: ResourceEntry, method: ShareMethod) -> Permit:
        """The caller's access to ``entry`` by ``method`` now (catalog rules and grants), with
        no request's items and no oracle: whether it may use the resource at all (an error
        report, 纠错, asks this)."""
        return await self._access(caller, entry, method)

    async def _access(self, caller: Identity, entry: ResourceEntry, method: ShareMethod) -> Permit:
        """The caller's access by the catalog's rules and, on a 有条件共享 resource, its grants,
        before the request's items are looked at."""
        permit = catalog_access(caller, entry, method)
        if permit is not None:
            return permit
        grants = await self._grants_of(caller.uri, entry.resource_code)
        return grant_permit(caller, entry, method, grants, self._clock())

    async def _grants_of(self, grantee: str, resource_code: str) -> Sequence[Grant]:
        async def txn(session: AsyncSession) -> list[Grant]:
            rows = await session.exec(
                select(AccessGrantRow).where(
                    AccessGrantRow.grantee == grantee,
                    col(AccessGrantRow.resource_code) == resource_code,
                )
            )
            return [grant_from_row(r) for r in rows.all()]

        return await self._db.read("access.grants_of", txn)
