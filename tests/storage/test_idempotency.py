"""Retrying a write (node.idempotency): one request_id is one request, applied once.

Every write that takes a request_id (catalog writes, applications, reviews, revocations, change
requests and their reviews) gives a retry with the same id the first outcome; an id is one
caller's for one request across all of them, so reusing it for another operation or another
object is refused with one message; two retries racing each other apply the request once; and
migration 0015 carries the ids the old tables (catalog_request, access_request) kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Role, make_identity
from node.catalog import Catalog, ResourceEntry, ResourceStatus, ShareMethod
from node.errors import InvalidArgument
from node.governance import ChangeAction, ChangeDraft, ChangeRequests, ChangeTarget
from node.idempotency import MAX_REQUEST_ID, check_request_id
from node.models import AccessApplicationRow, CatalogEntryVersionRow
from node.records import Records
from node.sharing import Applications, Decision, Draft, Notifications, Review
from node.storage import Database
from tests.support.databases import migrate
from tests.support.entries import NODE_REGION, TRUST_DOMAIN, agency, agency_code, make_entry

PROVIDER = agency(agency_code(1))
CONSUMER = agency(agency_code(2))
AUTHORITY = make_identity(NODE_REGION, TRUST_DOMAIN, Role.AUTHORITY)
NODE = make_identity(NODE_REGION, TRUST_DOMAIN, Role.NODE)
NEW_ID = "use a new id for a new request"


@dataclasses.dataclass
class World:
    db: Database
    catalog: Catalog
    applications: Applications
    changes: ChangeRequests
    first: ResourceEntry
    second: ResourceEntry


@pytest.fixture
async def world(database: Database) -> AsyncIterator[World]:
    """One node's writers over a migrated database, with two registered entries of PROVIDER."""
    notifications = Notifications(database)
    catalog = Catalog(database, NODE_REGION)
    records = Records(database, NODE_REGION, trust_domain=TRUST_DOMAIN)
    first = await catalog.register(PROVIDER, make_entry(1))
    second = await catalog.register(PROVIDER, make_entry(2))
    yield World(
        database,
        catalog,
        Applications(database, notifications, NODE),
        ChangeRequests(database, catalog, records, notifications, NODE),
        first,
        second,
    )


def draft(entry: ResourceEntry, request_id: str = "") -> Draft:
    return Draft(
        resource_code=entry.resource_code,
        items=("tyshxydm", "qymc"),
        share_methods=(ShareMethod.VERIFY,),
        purpose="行政审批",
        legal_basis="《行政许可法》",
        not_before=None,
        not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        request_id=request_id,
    )


def withdrawal(entry: ResourceEntry, request_id: str = "") -> ChangeDraft:
    return ChangeDraft(
        target=ChangeTarget.RESOURCE_ENTRY,
        action=ChangeAction.DELETE,
        resource_code=entry.resource_code,
        key={},
        values={},
        entry=None,
        reason="职能调整",
        request_id=request_id,
    )


async def count(db: Database, table: Any) -> int:
    async def txn(session: AsyncSession) -> int:
        return len((await session.exec(select(table))).all())

    return await db.read("test.count", txn)


def assert_reused(error: InvalidArgument, request_id: str, earlier: str, object_ref: str) -> None:
    message = str(error)
    assert message.startswith("request_id: ")
    assert request_id[:32] in message and earlier in message and object_ref in message
    assert NEW_ID in message


# --- a retry gets the first outcome -------------------------------------------------------


async def test_catalog_writes_replay_with_the_same_id(world: World) -> None:
    catalog = world.catalog
    registered = await catalog.register(PROVIDER, make_entry(3), "reg-3")
    assert await catalog.register(PROVIDER, make_entry(3), "reg-3") == registered

    renamed = make_entry(3, name="资源三")
    updated = await catalog.update(PROVIDER, renamed, request_id="upd-3")
    again = await catalog.update(PROVIDER, renamed, request_id="upd-3")
    assert updated.version == again.version == 2

    withdrawn = await catalog.withdraw(PROVIDER, renamed.resource_code, "停用", "wd-3")
    again = await catalog.withdraw(PROVIDER, renamed.resource_code, "停用", "wd-3")
    assert again == withdrawn and withdrawn.status is ResourceStatus.WITHDRAWN
    assert await count(world.db, CatalogEntryVersionRow) == 2 + 3  # nothing applied twice


async def test_applications_reviews_and_revocations_replay_with_the_same_id(world: World) -> None:
    apps = world.applications
    applied = await apps.apply(CONSUMER, world.first, draft(world.first, "apply-1"))
    assert (await apps.apply(CONSUMER, world.first, draft(world.first, "apply-1"))) == applied

    approve = Review(decision=Decision.APPROVE, request_id="review-1")
    reviewed, grant = await apps.review(AUTHORITY, applied.id, approve)
    assert grant is not None
    assert await apps.review(AUTHORITY, applied.id, approve) == (reviewed, grant)

    revoked = await apps.revoke(AUTHORITY, grant.id, "不再需要", "revoke-1")
    assert await apps.revoke(AUTHORITY, grant.id, "不再需要", "revoke-1") == revoked

    other = await apps.apply(CONSUMER, world.second, draft(world.second))
    withdrawn = await apps.withdraw(CONSUMER, other.id, "withdraw-1")
    assert await apps.withdraw(CONSUMER, other.id, "withdraw-1") == withdrawn
    assert await count(world.db, AccessApplicationRow) == 2


async def test_change_requests_and_their_reviews_replay_with_the_same_id(world: World) -> None:
    changes = world.changes
    asked = await changes.request(PROVIDER, world.first, withdrawal(world.first, "change-1"))
    assert (await changes.request(PROVIDER, world.first, withdrawal(world.first, "change-1"))) == (
        asked
    )
    rejected = await changes.review(AUTHORITY, asked.id, Decision.REJECT, "仍在使用", "cr-1")
    again = await changes.review(AUTHORITY, asked.id, Decision.REJECT, "仍在使用", "cr-1")
    assert again == rejected


# --- one id, one request --------------------------------------------------------------------


async def test_an_id_reused_for_another_operation_is_refused(world: World) -> None:
    """Ids are shared by every kind of write of one caller: a catalog write's id cannot name a
    change request, nor an application's its withdrawal. Another caller's ids are its own."""
    await world.catalog.update(PROVIDER, make_entry(1, name="新名称"), request_id="same")
    with pytest.raises(InvalidArgument) as refused:
        await world.changes.request(PROVIDER, world.second, withdrawal(world.second, "same"))
    assert_reused(refused.value, "same", "update_resource", world.first.resource_code)

    applied = await world.applications.apply(CONSUMER, world.first, draft(world.first, "same"))
    with pytest.raises(InvalidArgument) as refused:
        await world.applications.withdraw(CONSUMER, applied.id, "same")
    assert_reused(refused.value, "same", "apply", world.first.resource_code)


async def test_an_id_reused_on_another_object_is_refused(world: World) -> None:
    """The same operation on another object is another request (before 0015 an application's
    id was replayed whatever it named: withdrawing B with A's id returned A, B stayed pending)."""
    apps = world.applications
    first = await apps.apply(CONSUMER, world.first, draft(world.first))
    second = await apps.apply(CONSUMER, world.second, draft(world.second))
    await apps.withdraw(CONSUMER, first.id, "w-1")
    with pytest.raises(InvalidArgument) as refused:
        await apps.withdraw(CONSUMER, second.id, "w-1")
    assert_reused(refused.value, "w-1", "withdraw_application", first.id)
    [still] = [a for a in (await apps.list_applications(CONSUMER))[0] if a.id == second.id]
    assert still.status.value == "pending"

    await world.catalog.update(PROVIDER, make_entry(1, name="新名称"), request_id="u-1")
    with pytest.raises(InvalidArgument) as refused:
        await world.catalog.update(PROVIDER, make_entry(2, name="新名称"), request_id="u-1")
    assert_reused(refused.value, "u-1", "update_resource", world.first.resource_code)
    assert (await world.catalog.get(world.second.resource_code)).version == 1


async def test_the_refusal_quotes_only_a_short_prefix_of_a_long_id(world: World) -> None:
    long_id = "x" * MAX_REQUEST_ID
    await world.catalog.update(PROVIDER, make_entry(1, name="新名称"), request_id=long_id)
    with pytest.raises(InvalidArgument) as refused:
        await world.catalog.withdraw(PROVIDER, world.first.resource_code, "停用", long_id)
    message = str(refused.value)
    assert long_id not in message and f"({MAX_REQUEST_ID} characters)" in message
    assert_reused(refused.value, long_id, "update_resource", world.first.resource_code)


@pytest.mark.parametrize("bad", ["x" * (MAX_REQUEST_ID + 1), "line\nbreak"])
def test_ids_too_long_or_unprintable_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="request_id: at most 128 printable characters"):
        check_request_id(bad)


# --- racing retries -------------------------------------------------------------------------


async def test_two_concurrent_retries_of_one_id_apply_once(world: World) -> None:
    apps = world.applications
    one, two = await asyncio.gather(
        apps.apply(CONSUMER, world.first, draft(world.first, "race")),
        apps.apply(CONSUMER, world.first, draft(world.first, "race")),
    )
    assert one == two
    assert await count(world.db, AccessApplicationRow) == 1

    renamed = make_entry(2, name="并发更新")
    first, second = await asyncio.gather(
        world.catalog.update(PROVIDER, renamed, request_id="race-u"),
        world.catalog.update(PROVIDER, renamed, request_id="race-u"),
    )
    assert first.version == second.version == 2
    assert (await world.catalog.get(renamed.resource_code)).version == 2


# --- migration 0015 -------------------------------------------------------------------------


async def rows(db: Database, sql: str) -> set[tuple[Any, ...]]:
    async with db.engine.connect() as connection:
        return {tuple(r) for r in (await connection.execute(text(sql))).all()}


LOG = "SELECT caller, request_id, operation, object_ref, outcome FROM request_log"
CATALOG_REQUEST = (
    "SELECT caller, request_id, operation, resource_code, version FROM catalog_request"
)
ACCESS_REQUEST = "SELECT caller, request_id, operation, object_id FROM access_request"


async def test_migration_0015_carries_the_old_tables_ids_and_back(world: World) -> None:
    """Ids written at head go back to catalog_request and access_request on downgrade (as 0014
    kept them), and up again to the same request_log rows, the objects of applications and
    change requests read back from their tables. An id both old tables held keeps its earlier
    use."""
    db, p, c = world.db, PROVIDER.uri, CONSUMER.uri
    await world.catalog.update(PROVIDER, make_entry(1, name="新名称"), request_id="u")
    applied = await world.applications.apply(CONSUMER, world.second, draft(world.second, "a"))
    await world.applications.withdraw(CONSUMER, applied.id, "w")
    asked = await world.changes.request(PROVIDER, world.second, withdrawal(world.second, "c"))
    code1, code2 = world.first.resource_code, world.second.resource_code
    at_head = {
        (p, "u", "update_resource", code1, "2"),
        (c, "a", "apply", code2, applied.id),
        (c, "w", "withdraw_application", applied.id, applied.id),
        (p, "c", "request_change", code2, asked.id),
    }
    assert await rows(db, LOG) == at_head

    await migrate(db, "downgrade", "0014")
    assert await rows(db, CATALOG_REQUEST) == {(p, "u", "update", code1, 2)}
    assert await rows(db, ACCESS_REQUEST) == {
        (c, "a", "apply", applied.id),
        (c, "w", "withdraw", applied.id),
        (p, "c", "change_request", asked.id),
    }
    # An old node did not check ids across its two tables: "dup" is in both, the catalog
    # write first; "later" too, the catalog write second.
    early, late = "2025-01-01 00:00:00+00:00", "2025-06-01 00:00:00+00:00"
    async with db.engine.begin() as connection:
        for request_id, catalog_at, access_at in (("dup", early, late), ("later", late, early)):
            await connection.execute(
                text(
                    "INSERT INTO catalog_request VALUES (:caller, :id, 'register', :code, 1, :at)"
                ),
                {"caller": p, "id": request_id, "code": code1, "at": _when(catalog_at)},
            )
            await connection.execute(
                text("INSERT INTO access_request VALUES (:caller, :id, 'change_request', :o, :at)"),
                {"caller": p, "id": request_id, "o": asked.id, "at": _when(access_at)},
            )

    await migrate(db, "upgrade", "head")
    assert await rows(db, LOG) == at_head | {
        (p, "dup", "register_resource", code1, "1"),
        (p, "later", "request_change", code2, asked.id),
    }
    assert "catalog_request" not in await _tables(db)
    # The migrated ids work: a retry replays, another request under one is refused.
    again = await world.applications.apply(CONSUMER, world.second, draft(world.second, "a"))
    assert again.id == applied.id
    with pytest.raises(InvalidArgument, match=NEW_ID):
        await world.catalog.update(PROVIDER, make_entry(2, name="别的"), request_id="dup")

    await migrate(db, "downgrade", "0014")
    assert "request_log" not in await _tables(db)
    assert (p, "dup", "register", code1, 1) in await rows(db, CATALOG_REQUEST)
    await migrate(db, "upgrade", "head")


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def _tables(db: Database) -> set[str]:
    def names(sync: Connection) -> set[str]:
        return set(inspect(sync).get_table_names())

    async with db.engine.connect() as connection:
        return await connection.run_sync(names)
