"""The access decision on its own (node.sharing._decision, 第二十四至二十六、三十一、三十七条):
AccessDecider.decide against a real database, with grants made by real applications and
reviews and the oracle's budgets in the node's tables, on both backends."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from gateway.identity import Identity, Role
from node.catalog import (
    TESTERS_USE_PROBES_ONLY,
    MaskingKind,
    MaskingRule,
    ResourceEntry,
    ResourceStatus,
    ShareMethod,
    ShareType,
)
from node.config import OracleSection
from node.errors import FailedPrecondition, PermissionDenied, ResourceExhausted
from node.sharing import (
    AccessDecider,
    Applications,
    Decision,
    Draft,
    Grant,
    Notifications,
    OracleGuard,
    Permit,
    Review,
    Touches,
)
from node.storage import Database
from tests.support.entries import NODE_REGION, TRUST_DOMAIN, agency, agency_code, item, make_entry

PROVIDER = agency_code(1)
OTHER = agency_code(2)
NODE = Identity(NODE_REGION, TRUST_DOMAIN, Role.NODE, "node")
AUTHORITY = Identity(NODE_REGION, TRUST_DOMAIN, Role.AUTHORITY, "authority")
TESTER = Identity(NODE_REGION, TRUST_DOMAIN, Role.TESTER, "conformance")


def entry(n: int = 1, **fields: object) -> ResourceEntry:
    """A resource of this node with a key, a masked name (level 3) and a plain item."""
    values: dict[str, object] = {
        "region": NODE_REGION,
        "items": (
            item("zjhm", key=True, required=True, sensitivity_level=3),
            item("xm", sensitivity_level=3, masking=MaskingRule(kind=MaskingKind.NAME)),
            item("dz"),
        ),
        "share_type": ShareType.UNCONDITIONAL,
        "share_methods": (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY),
    } | fields
    return make_entry(n, PROVIDER, **values)


class Details:
    """The facts the decider puts into the call's audit record."""

    def __init__(self) -> None:
        self.facts: dict[str, str | int] = {}

    def __call__(self, **facts: str | int) -> None:
        self.facts.update(facts)


@pytest.fixture
def details() -> Details:
    return Details()


def limits(**values: object) -> OracleSection:
    defaults: dict[str, object] = {
        "verify_per_minute": 0,
        "verify_per_day": 0,
        "enumeration_distinct_keys": 0,
    }
    return OracleSection.model_validate(defaults | values)


def decider_on(db: Database, details: Details, **oracle: object) -> AccessDecider:
    guard = OracleGuard(db, limits(**oracle), None, TRUST_DOMAIN) if oracle else None
    return AccessDecider(db, oracle=guard, audit_detail=details)


async def granted(
    db: Database,
    grantee: Identity,
    resource: ResourceEntry,
    items: tuple[str, ...],
    methods: tuple[ShareMethod, ...] = (ShareMethod.VERIFY,),
    clear: tuple[str, ...] = (),
) -> Grant:
    """An application by ``grantee``, approved by this node's authority: a real grant."""
    applications = Applications(db, Notifications(db), NODE)
    app = await applications.apply(
        grantee,
        resource,
        Draft(
            resource_code=resource.resource_code,
            items=items,
            share_methods=methods,
            purpose="行政审批核验",
            legal_basis="《行政许可法》",
            not_before=None,
            not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        ),
    )
    _, grant = await applications.review(
        AUTHORITY,
        app.id,
        Review(
            decision=Decision.APPROVE,
            clear_text_items=clear,
            justification="核验需要原文" if clear else "",
        ),
    )
    assert grant is not None
    return grant


def everything(resource: ResourceEntry) -> frozenset[str]:
    return frozenset(i.name for i in resource.items)


# --- the catalog's rules ------------------------------------------------------------------------


async def test_the_provider_sees_everything_in_clear_and_is_never_limited(
    database: Database, details: Details
) -> None:
    decider = decider_on(database, details, verify_per_day=1)
    resource = entry(share_type=ShareType.NOT_SHARED, share_methods=())
    for _ in range(3):  # over the day's quota of one: the provider owns the data
        permit = await decider.decide(
            agency(PROVIDER), resource, ShareMethod.VERIFY, Touches.verify({"zjhm": "1"}, ["xm"])
        )
    assert permit == Permit(
        is_provider=True, visible_items=everything(resource), clear_items=everything(resource)
    )
    assert details.facts == {}


async def test_an_unconditional_resource_serves_others_with_sensitive_items_masked(
    database: Database, details: Details
) -> None:
    resource = entry()
    permit = await decider_on(database, details).decide(
        agency(OTHER), resource, ShareMethod.QUERY, Touches.query({}, ["dz"], ["xm", "dz"])
    )
    assert not permit.is_provider
    assert permit.visible_items == everything(resource)
    assert "xm" not in permit.clear_items and "dz" in permit.clear_items
    assert permit.grant_ids == () and not permit.oracle_applied


async def test_not_shared_is_refused_to_everyone_but_the_provider(
    database: Database, details: Details
) -> None:
    resource = entry(share_type=ShareType.NOT_SHARED, share_methods=())
    with pytest.raises(PermissionDenied, match=r"暂不共享 .*only its provider may use it"):
        await decider_on(database, details).decide(agency(OTHER), resource, ShareMethod.VERIFY)


async def test_a_method_the_entry_does_not_list_is_refused_naming_the_methods(
    database: Database, details: Details
) -> None:
    resource = entry(share_methods=(ShareMethod.VERIFY,))
    with pytest.raises(
        PermissionDenied,
        match=r"not shared by 检索查询 \(Query\); its share methods are: 联机验证 \(Verify\)",
    ):
        await decider_on(database, details).decide(agency(OTHER), resource, ShareMethod.QUERY)


async def test_a_withdrawn_resource_and_a_non_agency_caller_are_refused(
    database: Database, details: Details
) -> None:
    decider = decider_on(database, details)
    with pytest.raises(FailedPrecondition, match="is withdrawn"):
        await decider.decide(
            agency(PROVIDER),
            entry(status=ResourceStatus.WITHDRAWN),
            ShareMethod.VERIFY,
        )
    with pytest.raises(PermissionDenied, match="not an agency system"):
        await decider.decide(AUTHORITY, entry(), ShareMethod.VERIFY)


# --- grants (有条件共享) --------------------------------------------------------------------------


async def test_conditional_needs_a_grant_and_a_grant_bounds_items_and_clear_text(
    database: Database, details: Details
) -> None:
    resource = entry(share_type=ShareType.CONDITIONAL, share_conditions="用于行政审批")
    decider = decider_on(database, details)
    with pytest.raises(PermissionDenied, match=r"有条件共享: .*needs an approved application"):
        await decider.decide(agency(OTHER), resource, ShareMethod.VERIFY)
    grant = await granted(
        database,
        agency(OTHER),
        resource,
        ("zjhm", "xm"),
        methods=(ShareMethod.VERIFY, ShareMethod.QUERY),
        clear=("xm",),
    )
    permit = await decider.decide(
        agency(OTHER), resource, ShareMethod.VERIFY, Touches.verify({"zjhm": "1"}, ["xm"])
    )
    assert permit.grant_ids == (grant.id,)
    assert permit.visible_items == {"zjhm", "xm"} and permit.clear_items == {"zjhm", "xm"}
    assert details.facts == {"grant": grant.id}  # the audit record names it, not the servicer


async def test_an_item_outside_the_grant_is_refused_naming_the_grant_and_its_scope(
    database: Database, details: Details
) -> None:
    resource = entry(share_type=ShareType.CONDITIONAL, share_conditions="用于行政审批")
    grant = await granted(
        database, agency(OTHER), resource, ("zjhm", "xm"), (ShareMethod.VERIFY, ShareMethod.QUERY)
    )
    decider = decider_on(database, details)
    with pytest.raises(
        PermissionDenied,
        match=rf"^Verify claimed: item dz of resource {resource.resource_code} is outside grant "
        rf"{grant.id}, which covers only xm, zjhm \(越权使用, 第三十七条\)$",
    ):
        await decider.decide(
            agency(OTHER), resource, ShareMethod.VERIFY, Touches.verify({"zjhm": "1"}, ["dz"])
        )
    assert details.facts == {"grant": grant.id}  # named even on the refusal
    with pytest.raises(PermissionDenied, match=r"^Query filters: item dz "):
        await decider.decide(
            agency(OTHER), resource, ShareMethod.QUERY, Touches.query({}, ["dz"], [])
        )
    with pytest.raises(PermissionDenied, match=r"^Query items: item dz "):
        await decider.decide(
            agency(OTHER), resource, ShareMethod.QUERY, Touches.query({}, [], ["zjhm", "dz"])
        )
    with pytest.raises(PermissionDenied, match=r"does not cover 比对验证 \(Compare\)"):
        await decider.decide(agency(OTHER), resource, ShareMethod.COMPARE)


# --- the oracle (Verify, Compare) ----------------------------------------------------------------


async def test_the_oracle_admits_inside_the_decision_until_the_budget_is_spent(
    database: Database, details: Details
) -> None:
    resource = entry()
    decider = decider_on(database, details, verify_per_day=2)
    first = await decider.decide(
        agency(OTHER), resource, ShareMethod.VERIFY, Touches.verify({"zjhm": "1"}, ["xm"])
    )
    assert first.oracle_applied and not first.enumeration_suspected
    await decider.decide(
        agency(OTHER), resource, ShareMethod.COMPARE, Touches.compare([({"zjhm": "2"}, ["xm"])])
    )
    with pytest.raises(ResourceExhausted, match=r"Verify daily quota exhausted: 2 Verify calls"):
        await decider.decide(
            agency(OTHER), resource, ShareMethod.VERIFY, Touches.verify({"zjhm": "3"}, [])
        )
    query = await decider.decide(agency(OTHER), resource, ShareMethod.QUERY)
    assert not query.oracle_applied  # the oracle guards Verify and Compare only


async def test_a_call_refused_for_its_items_spends_no_budget(
    database: Database, details: Details
) -> None:
    resource = entry(share_type=ShareType.CONDITIONAL, share_conditions="用于行政审批")
    await granted(database, agency(OTHER), resource, ("zjhm", "xm"), (ShareMethod.COMPARE,))
    decider = decider_on(database, details, verify_per_day=1)
    outside = Touches.compare([({"zjhm": "1"}, ["xm"]), ({"zjhm": "2"}, ["dz"])])
    with pytest.raises(PermissionDenied, match=r"^Compare records\[1\]\.claimed: item dz "):
        await decider.decide(agency(OTHER), resource, ShareMethod.COMPARE, outside)
    inside = Touches.compare([({"zjhm": "1"}, ["xm"])])
    permit = await decider.decide(agency(OTHER), resource, ShareMethod.COMPARE, inside)
    assert permit.oracle_applied


async def test_a_suspected_enumeration_reaches_the_permit_and_the_audit_record(
    database: Database, details: Details
) -> None:
    resource = entry()
    decider = decider_on(database, details, enumeration_distinct_keys=3)
    run = Touches.compare([({"zjhm": str(n)}, []) for n in range(3)])
    permit = await decider.decide(
        agency(OTHER), resource, ShareMethod.COMPARE, run, request_id="r-enum"
    )
    assert permit.oracle_applied and permit.enumeration_suspected
    assert details.facts == {"enumeration_suspected": 1}


# --- probes and testers (第三十一条) --------------------------------------------------------------


async def test_testers_use_probes_only_and_are_never_their_provider(
    database: Database, details: Details
) -> None:
    probe = entry(probe=True)
    decider = decider_on(database, details, verify_per_day=1)
    with pytest.raises(PermissionDenied, match=re.escape(TESTERS_USE_PROBES_ONLY)):
        await decider.decide(TESTER, entry(), ShareMethod.VERIFY)
    permit = await decider.decide(TESTER, probe, ShareMethod.QUERY)
    assert not permit.is_provider and "xm" not in permit.clear_items
    # The agency named as a probe's provider is a label: it is limited like anyone else.
    label = await decider.decide(
        agency(PROVIDER), probe, ShareMethod.VERIFY, Touches.verify({"zjhm": "1"}, [])
    )
    assert not label.is_provider and label.oracle_applied
    with pytest.raises(PermissionDenied, match=re.escape(TESTERS_USE_PROBES_ONLY)):
        await decider.decide(TESTER, entry(2, share_type=ShareType.NOT_SHARED), ShareMethod.QUERY)
