"""The catalog (登记, 第十七、十八条; 一数一源, 第十三条) on every storage backend."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel.ext.asyncio.session import AsyncSession
from structlog.testing import capture_logs

from gateway.identity import Identity, Role
from node.catalog import (
    Catalog,
    ChangeKind,
    Classification,
    DataItem,
    DataType,
    Generalization,
    MaskingKind,
    MaskingRule,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
    ResourceStatus,
    ShareMethod,
    ShareType,
    UpdateCycle,
    ValidationKind,
    ValidationRule,
    entry_from_json,
    entry_to_json,
    validate_entry,
)
from node.codes import make_credit_code
from node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from node.models import CatalogEntryRow, ElementSourceRow
from node.storage import Database
from tests.support.databases import OpenDatabase
from tests.support.entries import (
    FIXED_TIME,
    NODE_REGION,
    TRUST_DOMAIN,
    agency,
    agency_code,
    item,
    make_entry,
    resource_code,
)

PATTERN = ValidationKind.PATTERN
PROVIDER = agency_code(1)
OTHER = agency_code(2)


@pytest.fixture
def catalog(database: Database) -> Catalog:
    return Catalog(database, NODE_REGION)


def claiming(element: str, name: str = "sfzh") -> tuple[DataItem, ...]:
    """Items whose key item is the authoritative source of ``element``."""
    return (item(name, key=True, standard_element=element, authoritative_source=True),)


# --- registration ---------------------------------------------------------------------


async def test_register_then_get(catalog: Catalog) -> None:
    registered = await catalog.register(agency(PROVIDER), make_entry(1))
    assert registered.version == 1
    assert registered.status is ResourceStatus.ACTIVE
    assert registered.region == NODE_REGION
    assert registered.created_at is not None and registered.created_at.tzinfo is dt.UTC
    assert registered.updated_at == registered.created_at
    assert await catalog.get(registered.resource_code) == registered
    assert await catalog.get(registered.resource_code, 1) == registered


async def test_registering_a_code_twice_is_refused(catalog: Catalog) -> None:
    await catalog.register(agency(PROVIDER), make_entry(1))
    with pytest.raises(AlreadyExists, match=f"resource {resource_code(1)} is already registered"):
        await catalog.register(agency(PROVIDER), make_entry(1, name="again"))


async def test_only_the_provider_agency_may_register(catalog: Catalog) -> None:
    with pytest.raises(PermissionDenied) as caught:
        await catalog.register(agency(OTHER), make_entry(1, PROVIDER))
    assert OTHER in caught.value.message and PROVIDER in caught.value.message
    node = Identity(NODE_REGION, TRUST_DOMAIN, Role.NODE)
    with pytest.raises(PermissionDenied, match="only its provider agency"):
        await catalog.register(node, make_entry(1, PROVIDER))
    with pytest.raises(NotFound):
        await catalog.get(resource_code(1))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"resource_code": "3501-3-000001"}, "entry.resource_code: '3501-3-000001' must look like"),
        ({"resource_code": "350200-3-000001"}, "starts with region 350200"),
        ({"resource_code": "350100-1-000001"}, "has classification digit 1"),
    ],
)
async def test_invalid_resource_codes_are_refused(
    catalog: Catalog, fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        await catalog.register(agency(PROVIDER), make_entry(1, **fields))


async def test_an_agency_code_with_a_bad_check_character_is_refused(catalog: Catalog) -> None:
    good = agency_code(7)
    bad = good[:17] + ("0" if good[17] != "0" else "1")
    with pytest.raises(InvalidArgument) as caught:
        await catalog.register(agency(bad), make_entry(1, bad))
    message = caught.value.message
    assert f"entry.provider_code: '{bad}' is not a valid unified social credit code" in message
    assert f"GB 32100 requires {good[17]!r}" in message


async def test_an_agency_from_another_city_is_refused(catalog: Catalog) -> None:
    xiamen = make_credit_code("11350200MB0000001")
    with pytest.raises(InvalidArgument, match="division 350200, outside this node's region"):
        await catalog.register(agency(xiamen), make_entry(1, xiamen))


async def test_not_shared_needs_a_legal_basis(catalog: Catalog) -> None:
    entry = make_entry(1, share_type=ShareType.NOT_SHARED, share_methods=())
    with pytest.raises(InvalidArgument, match=r"entry\.legal_basis: 暂不共享 .*第二十四条"):
        await catalog.register(agency(PROVIDER), entry)
    ok = entry.model_copy(update={"legal_basis": "《中华人民共和国保守国家秘密法》"})
    assert (await catalog.register(agency(PROVIDER), ok)).share_type is ShareType.NOT_SHARED


# --- 一数一源 ------------------------------------------------------------------------


async def test_a_second_source_for_an_element_is_refused_and_nothing_is_stored(
    catalog: Catalog, database: Database
) -> None:
    source = await catalog.register(agency(PROVIDER), make_entry(1, items=claiming("DE00001")))
    second = make_entry(2, OTHER, provider_name="福州市民政局", items=claiming("DE00001", "zjhm"))
    with pytest.raises(FailedPrecondition) as caught:
        await catalog.register(agency(OTHER), second)
    message = caught.value.message
    assert 'entry.items[0].standard_element: data element "DE00001"' in message
    assert source.resource_code in message and PROVIDER in message
    assert "一数一源" in message and "第十三条" in message
    assert f"reference {source.resource_code} instead" in message

    with pytest.raises(NotFound):
        await catalog.get(second.resource_code)
    with pytest.raises(NotFound):
        await catalog.history(second.resource_code)
    assert [c.resource_code for c in await catalog.changes()] == [source.resource_code]

    async def claim(session: AsyncSession) -> ElementSourceRow | None:
        return await session.get(ElementSourceRow, (NODE_REGION, "DE00001"))

    row = await database.read("test.claim", claim)
    assert row is not None and row.resource_code == source.resource_code


async def test_racing_sources_exactly_one_wins(db_url: str) -> None:
    """Five processes register sources of the same element at once: one wins."""
    databases = [await Database.open(db_url) for _ in range(5)]
    try:
        await databases[0].migrate()
        contenders = [
            (Catalog(db, NODE_REGION), n, agency_code(n)) for n, db in enumerate(databases, start=1)
        ]
        results = await asyncio.gather(
            *(
                cat.register(agency(code), make_entry(n, code, items=claiming("DE9")))
                for cat, n, code in contenders
            ),
            return_exceptions=True,
        )
    finally:
        for db in databases:
            await db.close()
    winners = [r for r in results if isinstance(r, ResourceEntry)]
    losers = [r for r in results if not isinstance(r, ResourceEntry)]
    assert len(winners) == 1
    assert all(isinstance(r, FailedPrecondition) for r in losers), losers
    assert all(winners[0].resource_code in str(r) for r in losers)


async def test_a_claim_committed_during_registration_is_reported_the_same_way(
    database: Database, catalog: Catalog
) -> None:
    """The unique constraint, not the pre-check, is the last word: a claim committed while the
    registration runs is refused with the same message."""
    holding = asyncio.Event()
    release = asyncio.Event()
    source = make_entry(1, items=claiming("DE7")).model_copy(update={"region": NODE_REGION})

    async def claim_slowly(session: AsyncSession) -> None:
        session.add(
            CatalogEntryRow(
                resource_code=source.resource_code,
                name=source.name,
                provider_code=PROVIDER,
                provider_name=source.provider_name,
                region=NODE_REGION,
                classification="departmental",
                industry_category="",
                share_type="conditional",
                open_type="not_open",
                status="active",
                version=1,
                created_at=FIXED_TIME,
                updated_at=FIXED_TIME,
                body=entry_to_json(source),
            )
        )
        await session.flush()
        session.add(
            ElementSourceRow(
                region=NODE_REGION,
                standard_element="DE7",
                resource_code=source.resource_code,
                item_name="sfzh",
            )
        )
        await session.flush()
        holding.set()
        await release.wait()

    slow = asyncio.create_task(database.write("test.claim_slowly", claim_slowly))
    await holding.wait()
    racer = asyncio.create_task(
        catalog.register(agency(OTHER), make_entry(2, OTHER, items=claiming("DE7")))
    )
    with capture_logs() as logs:
        await asyncio.sleep(0.3)  # the racer is now blocked on the uncommitted claim
        release.set()
        await slow
        with pytest.raises(FailedPrecondition, match=f"resource {source.resource_code}"):
            await racer
    if database.backend == "postgresql":  # SQLite's racer waited at BEGIN IMMEDIATE instead
        assert [e["event"] for e in logs] == ["catalog.source_claim_race"]


# --- changing -------------------------------------------------------------------------


async def test_update_bumps_the_version_and_history_keeps_every_version(
    catalog: Catalog,
) -> None:
    v1 = await catalog.register(agency(PROVIDER), make_entry(1))
    v2 = await catalog.update(agency(PROVIDER), make_entry(1, name="企业登记信息（新）"), 1)
    v3 = await catalog.update(agency(PROVIDER), make_entry(1, summary="第三版"))
    assert (v2.version, v3.version) == (2, 3)
    assert v3.created_at == v1.created_at
    assert v1.updated_at is not None and v3.updated_at is not None
    assert v3.updated_at >= v1.updated_at
    assert await catalog.history(v1.resource_code) == [v1, v2, v3]
    assert await catalog.get(v1.resource_code, 2) == v2
    assert await catalog.get(v1.resource_code) == v3
    with pytest.raises(NotFound, match="has no version 4; versions are 1 to 3"):
        await catalog.get(v1.resource_code, 4)
    kinds = [(c.kind, c.version) for c in await catalog.changes()]
    assert kinds == [(ChangeKind.REGISTERED, 1), (ChangeKind.UPDATED, 2), (ChangeKind.UPDATED, 3)]


async def test_history_reads_only_the_newest_versions_when_asked(catalog: Catalog) -> None:
    v1 = await catalog.register(agency(PROVIDER), make_entry(1))
    v2 = await catalog.update(agency(PROVIDER), make_entry(1, summary="第二版"))
    v3 = await catalog.update(agency(PROVIDER), make_entry(1, summary="第三版"))
    assert await catalog.history(v1.resource_code, newest=2) == [v2, v3]
    assert await catalog.history(v1.resource_code, newest=10) == [v1, v2, v3]


async def test_names_are_searched_with_wildcards_taken_literally(catalog: Catalog) -> None:
    for n, name in enumerate(("企业登记信息", "100%_完成率", "人口基础信息"), start=1):
        await catalog.register(agency(PROVIDER), make_entry(n, name=name))
    found, _ = await catalog.list(name_contains="信息")
    assert [e.name for e in found] == ["企业登记信息", "人口基础信息"]
    assert [e.name for e in (await catalog.list(name_contains="%_"))[0]] == ["100%_完成率"]
    assert (await catalog.list(name_contains="_完"))[0][0].name == "100%_完成率"
    assert (await catalog.list(name_contains="%"))[0][0].name == "100%_完成率"
    assert (await catalog.list(name_contains="\\"))[0] == []
    with pytest.raises(InvalidArgument, match="name_contains: at most 64 characters"):
        await catalog.list(name_contains="名" * 65)


async def test_update_with_a_stale_version_is_refused(catalog: Catalog) -> None:
    await catalog.register(agency(PROVIDER), make_entry(1))
    await catalog.update(agency(PROVIDER), make_entry(1, summary="v2"))
    with pytest.raises(FailedPrecondition, match="is at version 2, the update expected version 1"):
        await catalog.update(agency(PROVIDER), make_entry(1, summary="lost"), expected_version=1)
    assert (await catalog.get(resource_code(1))).summary == "v2"


async def test_only_the_provider_may_change_or_withdraw(catalog: Catalog) -> None:
    await catalog.register(agency(PROVIDER), make_entry(1))
    expected = f"only the provider agency {PROVIDER} may change resource {resource_code(1)}"
    with pytest.raises(PermissionDenied, match=re.escape(expected)):
        await catalog.update(agency(OTHER), make_entry(1, OTHER))
    with pytest.raises(PermissionDenied, match=f"only the provider agency {PROVIDER} may withdraw"):
        await catalog.withdraw(agency(OTHER), resource_code(1), "not mine")
    assert (await catalog.get(resource_code(1))).version == 1


async def test_the_provider_cannot_be_changed(catalog: Catalog) -> None:
    await catalog.register(agency(PROVIDER), make_entry(1))
    with pytest.raises(InvalidArgument, match=r"entry\.provider_code: cannot change"):
        await catalog.update(agency(PROVIDER), make_entry(1, OTHER))


async def test_update_refreshes_source_claims(catalog: Catalog) -> None:
    await catalog.register(agency(PROVIDER), make_entry(1, items=claiming("DE1")))
    await catalog.register(agency(OTHER), make_entry(2, OTHER, items=claiming("DE2")))
    # Claiming an element someone else sources is refused, and the entry stays as it was.
    with pytest.raises(FailedPrecondition, match=f"resource {resource_code(2)}"):
        await catalog.update(agency(PROVIDER), make_entry(1, items=claiming("DE2")))
    assert (await catalog.get(resource_code(1))).version == 1
    # Dropping a claim releases it for others.
    await catalog.update(agency(PROVIDER), make_entry(1, items=claiming("DE3")))
    third = await catalog.register(agency(OTHER), make_entry(3, OTHER, items=claiming("DE1")))
    assert third.version == 1


async def test_withdraw(catalog: Catalog) -> None:
    await catalog.register(agency(PROVIDER), make_entry(1, items=claiming("DE1")))
    withdrawn = await catalog.withdraw(agency(PROVIDER), resource_code(1), "机构职能调整")
    assert (withdrawn.status, withdrawn.version) == (ResourceStatus.WITHDRAWN, 2)
    assert await catalog.get(resource_code(1)) == withdrawn
    assert [e.version for e in await catalog.history(resource_code(1))] == [1, 2]
    assert (await catalog.changes())[-1].kind is ChangeKind.WITHDRAWN
    assert (await catalog.list())[0] == []
    assert (await catalog.list(include_withdrawn=True))[0] == [withdrawn]
    # Its claim is released; it cannot be withdrawn twice or changed afterwards.
    await catalog.register(agency(OTHER), make_entry(2, OTHER, items=claiming("DE1")))
    with pytest.raises(FailedPrecondition, match="already withdrawn"):
        await catalog.withdraw(agency(PROVIDER), resource_code(1), "again")
    with pytest.raises(FailedPrecondition, match="is withdrawn"):
        await catalog.update(agency(PROVIDER), make_entry(1))
    with pytest.raises(InvalidArgument, match="reason"):
        await catalog.withdraw(agency(PROVIDER), resource_code(2), " ")


async def test_unknown_resources_are_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match=f"resource '{resource_code(9)}' is not in the catalog"):
        await catalog.get(resource_code(9))
    with pytest.raises(NotFound):
        await catalog.update(agency(PROVIDER), make_entry(9))
    with pytest.raises(NotFound):
        await catalog.withdraw(agency(PROVIDER), resource_code(9), "gone")


# --- listing --------------------------------------------------------------------------


async def test_list_pages_in_code_order(catalog: Catalog) -> None:
    for n in (5, 3, 7, 1, 6, 2, 4):
        await catalog.register(agency(PROVIDER), make_entry(n))
    codes: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = await catalog.list(page_size=3, page_token=token)
        codes += [e.resource_code for e in page]
        pages += 1
        if not token:
            break
    assert pages == 3
    assert codes == [resource_code(n) for n in range(1, 8)]
    everything, last = await catalog.list(page_size=10_000)  # capped, not refused
    assert len(everything) == 7 and last == ""


async def test_list_filters(catalog: Catalog) -> None:
    await catalog.register(agency(PROVIDER), make_entry(1))
    await catalog.register(
        agency(OTHER),
        make_entry(
            2,
            OTHER,
            classification=Classification.BASIC,
            share_type=ShareType.UNCONDITIONAL,
            share_conditions="",
        ),
    )
    by_provider, _ = await catalog.list(provider_code=OTHER)
    assert [e.provider_code for e in by_provider] == [OTHER]
    basic, _ = await catalog.list(classification=Classification.BASIC)
    assert [e.resource_code for e in basic] == [resource_code(2, Classification.BASIC)]
    conditional, _ = await catalog.list(share_type=ShareType.CONDITIONAL, region=NODE_REGION)
    assert [e.resource_code for e in conditional] == [resource_code(1)]
    assert (await catalog.list(open_type=OpenType.UNIVERSAL))[0] == []


@pytest.mark.parametrize("token", ["garbage", "YWJj", "c1:350100-3-000001"])
async def test_list_refuses_foreign_page_tokens(catalog: Catalog, token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        await catalog.list(page_token=token)


# --- digest ---------------------------------------------------------------------------


async def _build(db: Database, order: list[int]) -> tuple[str, int, int]:
    catalog = Catalog(db, NODE_REGION, clock=lambda: FIXED_TIME)
    for n in order:
        await catalog.register(agency(PROVIDER), make_entry(n))
    return await catalog.digest()


async def test_digest_does_not_depend_on_order_or_backend(open_database: OpenDatabase) -> None:
    forwards = await _build(await open_database("sqlite"), [1, 2, 3, 4])
    backwards = await _build(await open_database("sqlite"), [4, 3, 2, 1])
    assert forwards == backwards
    assert forwards[1:] == (4, 4)
    assert re.fullmatch(r"[0-9a-f]{64}", forwards[0])
    fewer = await _build(await open_database("sqlite"), [1, 2, 3])
    assert fewer[0] != forwards[0]
    assert await _build(await open_database("postgresql"), [2, 4, 1, 3]) == forwards


async def test_digest_of_an_empty_catalog(catalog: Catalog) -> None:
    digest, count, last = await catalog.digest()
    assert (count, last) == (0, 0)
    assert digest == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def test_digest_follows_every_change_whichever_catalog_object_made_it(
    database: Database,
) -> None:
    """The digest is kept between calls while the catalog is unchanged; a change through
    another object over the same database (another process of the node) still shows."""
    mine = Catalog(database, NODE_REGION, clock=lambda: FIXED_TIME)
    other = Catalog(database, NODE_REGION, clock=lambda: FIXED_TIME)
    await mine.register(agency(PROVIDER), make_entry(1))
    first = await mine.digest()
    assert await mine.digest() == first
    await other.update(agency(PROVIDER), make_entry(1, summary="第二版"))
    second = await mine.digest()
    assert second[0] != first[0] and second[1:] == (1, 2)
    await other.withdraw(agency(PROVIDER), make_entry(1).resource_code, "不再提供")
    third = await mine.digest()
    assert third[0] not in (first[0], second[0]) and third[1:] == (1, 3)
    assert await other.digest() == third


async def test_a_heartbeats_digest_lags_a_changing_catalog_by_a_bounded_time(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """digest(current=False) reuses the last digest computed while less than
    DIGEST_REUSE_FACTOR times its computing time has passed; digest() never does."""
    from node.catalog import _registry

    await catalog.register(agency(PROVIDER), make_entry(1))
    first = await catalog.digest()
    await catalog.register(agency(PROVIDER), make_entry(2))
    monkeypatch.setattr(_registry, "DIGEST_REUSE_FACTOR", 1e9)  # the window never closes
    assert await catalog.digest(current=False) == first
    second = await catalog.digest()
    assert second[1:] == (2, 2) and second[0] != first[0]
    assert await catalog.digest(current=False) == second
    await catalog.register(agency(PROVIDER), make_entry(3))
    monkeypatch.setattr(_registry, "DIGEST_REUSE_FACTOR", 0)  # the window is shut
    third = await catalog.digest(current=False)
    assert third[1:] == (3, 3) and third[0] not in (first[0], second[0])
    assert await catalog.digest() == third


async def test_the_feed_reads_each_changes_body_from_its_version_and_old_copies_still_read(
    database: Database,
) -> None:
    """Migration 0033: a change holds no body of its own (its version's row has it); the
    upgrade drops the copies older rows held where the version holds the same text, keeps
    one that differs (read as it is), and a downgrade puts the copy back into every row."""
    from sqlalchemy import text

    from tests.support.databases import migrate

    catalog = Catalog(database, NODE_REGION, clock=lambda: FIXED_TIME)

    async def bodies() -> list[str | None]:
        async with database.engine.connect() as connection:
            found = await connection.execute(
                text("SELECT body FROM catalog_change ORDER BY sequence")
            )
            return [row[0] for row in found]

    def seen(changes: list[Any]) -> list[tuple[int, str, int, str]]:
        return [(c.sequence, c.resource_code, c.version, c.entry.summary) for c in changes]

    await catalog.register(agency(PROVIDER), make_entry(1))
    await catalog.register(agency(PROVIDER), make_entry(2))
    await catalog.update(agency(PROVIDER), make_entry(1, summary="第二版"))
    before = seen(await catalog.changes(0))
    assert [v for _, _, v, _ in before] == [1, 1, 2]
    assert before[2][3] == "第二版" and before[0][3] != "第二版"
    assert await bodies() == [None, None, None]

    await migrate(database, "downgrade", "0032")
    copies = await bodies()
    assert all(copies) and '"第二版"' in str(copies[2]) and '"第二版"' not in str(copies[0])
    assert seen(await catalog.changes(0)) == before  # read from the rows' own copies
    # A copy that is not its version's text (edited by hand) is kept by the upgrade, and read.
    edited = str(copies[1]).replace('"summary":"', '"summary":"改过的')
    async with database.engine.begin() as connection:
        await connection.execute(
            text("UPDATE catalog_change SET body = :body WHERE sequence = 2"), {"body": edited}
        )
    await migrate(database, "upgrade", "head")
    assert await bodies() == [None, edited, None]
    await catalog.register(agency(PROVIDER), make_entry(3))
    assert (await bodies())[3] is None
    after = seen(await catalog.changes(0))
    assert after[1][3].startswith("改过的")
    assert [after[0], after[2]] == [before[0], before[2]]
    assert after[3][:3] == (4, make_entry(3).resource_code, 1)
    assert seen((await catalog.changes_of(NODE_REGION, 1))[0]) == after[1:]


async def test_change_feed_pages_from_a_sequence(catalog: Catalog) -> None:
    for n in range(1, 6):
        await catalog.register(agency(PROVIDER), make_entry(n))
    assert [c.sequence for c in await catalog.changes(2, 2)] == [3, 4]
    assert await catalog.changes(5) == []
    with pytest.raises(InvalidArgument, match="after_sequence"):
        await catalog.changes(-1)


# --- rules (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": " "}, "entry.name: must not be empty"),
        ({"name": "名" * 201}, "entry.name: at most 200 characters"),
        ({"items": ()}, "entry.items: a resource needs at least one data item"),
        (
            {"items": (item("xm", key=True), item("xb"), item("xm"))},
            "entry.items[2].name: duplicate item name 'xm'",
        ),
        ({"items": (item("XM", key=True),)}, "entry.items[0].name: 'XM' must be lower-case"),
        ({"items": (item("xm"),)}, "at least one item must be marked key"),
        (
            {"items": (item("xm", key=True, sensitivity_level=5),)},
            "entry.items[0].sensitivity_level: must be 1 to 4",
        ),
        (
            {"items": (item("xb", key=True, data_type=DataType.ENUM),)},
            "entry.items[0].validation.enum_values: an enum item needs its allowed values",
        ),
        (
            {
                "items": (
                    item("xm", key=True, validation=ValidationRule(kind=PATTERN, pattern="(")),
                )
            },
            "entry.items[0].validation.pattern: '(': not a valid pattern: missing ), "
            "unterminated subpattern at position 1",
        ),
        ({"share_conditions": ""}, "entry.share_conditions: 有条件共享 requires"),
        ({"share_methods": ()}, "needs at least one share method"),
        (
            {"share_methods": (ShareMethod.QUERY, ShareMethod.QUERY)},
            "entry.share_methods[1]: query is listed twice",
        ),
        (
            {
                "share_type": ShareType.NOT_SHARED,
                "legal_basis": "《保密法》",
                "share_methods": (ShareMethod.EXCHANGE,),
            },
            "entry.share_methods: a 暂不共享 (not shared) resource must not list share methods",
        ),
        ({"publish_date": "2025-02-30"}, "entry.publish_date: '2025-02-30' is not a real date"),
        ({"publish_date": "20250115"}, "must be a date YYYY-MM-DD"),
        (
            {"items": (item("xm", key=True, authoritative_source=True),)},
            "entry.items[0].authoritative_source: needs standard_element",
        ),
        (
            {
                "items": (
                    item("a", key=True, standard_element="DE1", authoritative_source=True),
                    item("b", standard_element="DE1", authoritative_source=True),
                )
            },
            "entry.items[1].standard_element: 'DE1' is already claimed by entry.items[0]",
        ),
    ],
)
def test_validation_names_the_field_and_the_rule(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_entry(make_entry(1, **fields), node_region=NODE_REGION)
    assert expected in caught.value.message


def test_validation_reports_every_problem_at_once() -> None:
    entry = make_entry(1, name="", publish_date="soon", share_methods=())
    with pytest.raises(InvalidArgument) as caught:
        validate_entry(entry, node_region=NODE_REGION)
    assert caught.value.message.count("; ") == 2


def test_a_valid_entry_passes() -> None:
    validate_entry(make_entry(1), node_region=NODE_REGION)


# --- canonical JSON -------------------------------------------------------------------

_text = st.text(max_size=20)
_items = st.builds(
    DataItem,
    name=_text,
    title=_text,
    data_type=st.sampled_from(DataType),
    required=st.booleans(),
    key=st.booleans(),
    sensitivity_level=st.integers(-5, 10),
    validation=st.builds(
        ValidationRule,
        kind=st.sampled_from(ValidationKind),
        enum_values=st.lists(_text, max_size=3).map(tuple),
        pattern=_text,
        max_length=st.integers(0, 1000),
    ),
    masking=st.builds(
        MaskingRule,
        kind=st.sampled_from(MaskingKind),
        keep_first=st.integers(0, 5),
        keep_last=st.integers(0, 5),
    ),
    standard_element=_text,
    authoritative_source=st.booleans(),
    description=_text,
    open=st.builds(
        OpenTreatment,
        kind=st.sampled_from(OpenTreatmentKind),
        keep_first=st.integers(0, 5),
        keep_last=st.integers(0, 5),
        generalize=st.sampled_from(Generalization),
        prefix_length=st.integers(0, 5),
        range_width=st.integers(0, 10**12),
    ),
    quasi_identifier=st.booleans(),
)
_china = dt.timezone(dt.timedelta(hours=8))
_times = st.none() | st.datetimes(
    min_value=dt.datetime(2000, 1, 1), timezones=st.sampled_from([dt.UTC, _china])
)
_entries = st.builds(
    ResourceEntry,
    resource_code=_text,
    name=_text,
    provider_name=_text,
    provider_code=_text,
    region=_text,
    classification=st.sampled_from(Classification),
    industry_category=_text,
    summary=st.text(),
    format=_text,
    items=st.lists(_items, max_size=3).map(tuple),
    share_type=st.sampled_from(ShareType),
    share_conditions=_text,
    legal_basis=_text,
    share_methods=st.lists(st.sampled_from(ShareMethod), max_size=5).map(tuple),
    open_type=st.sampled_from(OpenType),
    open_conditions=_text,
    update_cycle=st.sampled_from(UpdateCycle),
    publish_date=_text,
    version=st.integers(0, 2**31 - 1),
    status=st.sampled_from(ResourceStatus),
    created_at=_times,
    updated_at=_times,
)


@given(_entries)
def test_entry_json_round_trips_canonically(entry: ResourceEntry) -> None:
    text = entry_to_json(entry)
    back = entry_from_json(text)
    assert back == entry
    assert entry_to_json(back) == text  # canonical: one text per entry
    for moment in (back.created_at, back.updated_at):
        assert moment is None or moment.tzinfo is dt.UTC
