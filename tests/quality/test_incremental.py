"""Incremental quality checks (第十五条, 全程监控): between full counts a check counts only the
records written since the previous one, and must find exactly what a full count finds, after
new records, updates applied at once, approved updates and approved deletions; it counts in
full again when the entry changed or the last full count is too old. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from gateway.identity import Identity, Role
from node.governance import ChangeAction, ChangeDraft, ChangeRequests, ChangeTarget
from node.quality import Quality, QualityReport
from node.records import Records, SubmitBatch
from node.sharing import Decision, Notifications
from node.storage import Database
from tests.quality.test_quality import (
    ENTRY,
    PROVIDER,
    T0,
    Clock,
    cid,
    person,
    settings,
    submit,
    world,
)
from tests.support.entries import NODE_REGION, TRUST_DOMAIN, agency

AUTHORITY = Identity(NODE_REGION, TRUST_DOMAIN, Role.AUTHORITY)
NODE = Identity(NODE_REGION, TRUST_DOMAIN, Role.NODE)
CODE = ENTRY.resource_code


def counted(report: QualityReport) -> tuple[int, list[tuple[str, int, int]]]:
    """What a check counted over the records: how many, and per item filled and missing."""
    return report.records, [(i.item, i.filled, i.missing) for i in report.items]


async def from_scratch(database: Database, catalog: object, clock: Clock) -> QualityReport:
    """A check that counts every record: a day later, with full counts kept for a day only."""
    quality = Quality(
        database,
        catalog,  # type: ignore[arg-type]
        node_region=NODE_REGION,
        settings=settings(full_count_days=1),
        clock=lambda: clock() + dt.timedelta(days=1),
    )
    return await quality.check(CODE, AUTHORITY.uri)


async def test_an_incremental_check_counts_what_a_full_count_counts(database: Database) -> None:
    clock, catalog, records, _audit = await world(database)
    await submit(records, clock, 1, "b0", *(person(i, sjhm=f"1380000{i:04d}") for i in range(40)))
    quality = Quality(database, catalog, node_region=NODE_REGION, settings=settings(), clock=clock)
    first = await quality.check(CODE, AUTHORITY.uri)
    assert first.basis is not None and first.basis.recounted == -1  # the first counts in full
    assert counted(first)[0] == 40

    # Nothing written since: nothing counted again, the same figures.
    clock.at = T0 + dt.timedelta(days=1, hours=1)
    same = await quality.check(CODE, AUTHORITY.uri)
    assert same.basis is not None and same.basis.recounted == 0
    assert counted(same) == counted(first)

    # New records, one without its optional phone number.
    await submit(records, clock, 2, "b1", person(100, sjhm="13800000100"), person(101))
    # An update applied at once ([governance] submit_updates = "apply"): 3 loses its phone.
    applying = Records(database, NODE_REGION, clock=clock, hold_updates=False)
    clock.at = T0 + dt.timedelta(days=2, hours=1)
    await applying.submit(agency(PROVIDER), ENTRY, SubmitBatch(batch_id="b2", records=(person(3),)))
    # An approved update (第四十一条) that gives 101 a phone, and an approved deletion of 5.
    changes = ChangeRequests(database, catalog, records, Notifications(database), NODE)
    for action, key, values in (
        (ChangeAction.UPDATE, 101, person(101, sjhm="13800000101")),
        (ChangeAction.DELETE, 5, {}),
    ):
        asked = await changes.request(
            agency(PROVIDER),
            await catalog.current(CODE),
            ChangeDraft(
                target=ChangeTarget.RECORD,
                action=action,
                resource_code=CODE,
                key={"sfzhm": cid(key)},
                values=values,
                entry=None,
                reason="核实后更正",
            ),
        )
        await changes.review(AUTHORITY, asked.id, Decision.APPROVE, "")

    clock.at = T0 + dt.timedelta(days=3)
    later = await quality.check(CODE, AUTHORITY.uri)
    assert later.basis is not None
    assert later.basis.recounted == 4  # 100, 101, 3 and 5: written since the previous check
    full = await from_scratch(database, catalog, clock)
    assert full.basis is not None and full.basis.recounted == -1
    assert counted(later) == counted(full)
    assert later.records == 41  # 40 + 2 new - 1 deleted
    phones = {i.item: i.filled for i in later.items}["sjhm"]
    assert phones == 40 - 1 - 1 + 1 + 1  # 3 lost it, 5 deleted, 100 and 101 have one


async def test_an_old_full_count_is_counted_in_full_again(database: Database) -> None:
    clock, catalog, records, _audit = await world(database)
    await submit(records, clock, 1, "b0", *(person(i) for i in range(10)))
    quality = Quality(
        database, catalog, node_region=NODE_REGION, settings=settings(full_count_days=2),
        clock=clock,
    )  # fmt: skip
    await quality.check(CODE, AUTHORITY.uri)
    await submit(records, clock, 2, "b1", person(30))
    clock.at = T0 + dt.timedelta(days=2)
    incremental = await quality.check(CODE, AUTHORITY.uri)
    assert incremental.basis is not None and incremental.basis.recounted == 1
    # Two days after the first full count, the next one counts in full again.
    clock.at = T0 + dt.timedelta(days=3, minutes=1)
    again = await quality.check(CODE, AUTHORITY.uri)
    assert again.basis is not None and again.basis.recounted == -1
    assert again.basis.full_at == clock.at
    assert counted(again) == counted(incremental)
