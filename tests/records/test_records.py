"""Records on one node: 汇聚 Submit, 联机验证 Verify, 比对验证 Compare, 检索查询 Query,
history and aggregation status, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

import node.records._submit as records_submit
from gateway.identity import Identity, Role
from node.catalog import ResourceEntry, ResourceStatus, UpdateCycle
from node.codes import make_citizen_id
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.records import (
    MatchResult,
    QueryFilter,
    Records,
    SubmitBatch,
    TemporaryCollection,
    VerifyOutcome,
)
from node.records._store import QueryOperator, Rejection
from node.storage import Database
from tests.support.entries import (
    FIXED_TIME,
    NODE_REGION,
    TRUST_DOMAIN,
    agency,
    agency_code,
    make_entry,
    person_entry,
)

PROVIDER = agency_code(7)
ENTRY = person_entry(2, PROVIDER)
ALL_ITEMS = frozenset(item.name for item in ENTRY.items)


def cid(i: int) -> str:
    """A valid 公民身份号码, a different one for every ``i`` (born 1980-01-01 + i days)."""
    birth = dt.date(1980, 1, 1) + dt.timedelta(days=i)
    return make_citizen_id(f"350102{birth:%Y%m%d}{i % 1000:03d}")


def person(i: int, **values: str) -> dict[str, str]:
    return {"sfzhm": cid(i), "xm": f"张{i}", "sjhm": f"138{i:08d}"} | values


def batch(batch_id: str, *records: dict[str, str], **fields: Any) -> SubmitBatch:
    return SubmitBatch(batch_id=batch_id, records=tuple(records), **fields)


@pytest.fixture
def records(database: Database) -> Records:
    return Records(database, NODE_REGION, clock=lambda: FIXED_TIME)


@pytest.fixture
async def refusing(sqlite_url: str) -> AsyncIterator[Records]:
    """Records over an empty, unmigrated database, for requests refused before any storage
    is touched (the shape of a request is checked first, on one backend is enough)."""
    db = await Database.open(sqlite_url)
    try:
        yield Records(db, NODE_REGION, clock=lambda: FIXED_TIME)
    finally:
        await db.close()


async def submit(records: Records, b: SubmitBatch, entry: ResourceEntry = ENTRY) -> Any:
    return await records.submit(agency(PROVIDER), entry, b)


# --- 汇聚 Submit ------------------------------------------------------------------------


async def test_valid_records_are_applied_and_invalid_ones_rejected_with_reasons(
    records: Records,
) -> None:
    bad_id = cid(2)[:17] + ("0" if cid(2)[17] != "0" else "1")
    outcome = await submit(
        records,
        batch(
            "b1",
            person(1, csrq="1980-01-02", ysr="8500.50", hyzk="已婚"),
            person(2, sfzhm=bad_id),
            person(3, csrq="1980-02-30", email="x@example.cn"),
            person(4),
        ),
    )
    assert (outcome.accepted, outcome.rejected, outcome.duplicate) == (2, 2, False)
    assert outcome.rejections == (
        Rejection(
            1,
            "sfzhm",
            f"公民身份号码 check character is {bad_id[17]!r}, GB 11643 requires {cid(2)[17]!r}",
        ),
        Rejection(2, "csrq", "1980-02-30 is not a real calendar date"),
        Rejection(2, "email", "not declared in the catalog entry (第十二条)"),
    )
    # The valid records went in together: two versions, data version 2.
    assert outcome.data_version == 2
    assert outcome.committed_at == FIXED_TIME
    history = await records.record_history(ENTRY, {"sfzhm": cid(1)})
    assert [v.values for v in history] == [person(1, csrq="1980-01-02", ysr="8500.5", hyzk="已婚")]
    with pytest.raises(NotFound):
        await records.record_history(ENTRY, {"sfzhm": cid(3)})
    [status] = await records.aggregation_status([ENTRY])
    assert (status.record_count, status.data_version) == (2, 2)


async def test_a_resent_batch_is_applied_once(records: Records) -> None:
    first = await submit(records, batch("b1", person(1), person(2, xm="")))
    # The same records, their items in another order: the same content.
    resent = batch("b1", dict(reversed(person(1).items())), person(2, xm=""))
    assert await submit(records, resent) == dataclasses.replace(first, duplicate=True)
    assert len(await records.record_history(ENTRY, {"sfzhm": cid(1)})) == 1
    [status] = await records.aggregation_status([ENTRY])
    assert (status.data_version, status.record_count) == (1, 1)
    assert (await records.verify(ENTRY, {"sfzhm": cid(1)}, {"xm": "张1"})).all_match


async def test_a_batch_id_resent_with_other_content_is_refused(records: Records) -> None:
    await submit(records, batch("b1", person(1), person(2, xm="")))
    for other in (
        batch("b1", person(1, xm="李四"), person(2, xm="")),  # a value corrected
        batch("b1", person(2, xm=""), person(1)),  # the same records in another order
        batch("b1", person(1), person(2, xm=""), person(3)),  # one record more
        batch("b1", person(1)),  # one record fewer
        batch("b1", person(1, sfzhm=f" {cid(1)} "), person(2, xm="")),  # written another way
    ):
        with pytest.raises(FailedPrecondition, match=r"batch_id 'b1': .* differs .* new batch_id"):
            await submit(records, other)
    history = await records.record_history(ENTRY, {"sfzhm": cid(1)})
    assert [v.values["xm"] for v in history] == ["张1"]
    [status] = await records.aggregation_status([ENTRY])
    assert (status.data_version, status.record_count) == (1, 1)


async def test_a_batch_id_resent_with_another_temporary_collection_is_refused(
    records: Records,
) -> None:
    extra = person(1, hjd="福州")
    await submit(records, batch("t1", extra, temporary=temporary()))
    assert (await submit(records, batch("t1", extra, temporary=temporary()))).duplicate
    for changed in (temporary(reason="另一事由"), temporary(extra_items=("hjd", "zz"))):
        with pytest.raises(FailedPrecondition, match="differs"):
            await submit(records, batch("t1", extra, temporary=changed))
    with pytest.raises(FailedPrecondition, match="differs"):
        await submit(records, batch("t1", person(1, hjd="福州")))  # without the collection


async def test_a_long_batch_id_is_quoted_as_a_prefix(records: Records) -> None:
    long_id = "daily-" + "x" * 122
    await submit(records, batch(long_id, person(1)))
    with pytest.raises(FailedPrecondition) as err:
        await submit(records, batch(long_id, person(2)))
    assert f"batch_id '{long_id[:40]}'… (128 characters)" in err.value.message
    assert long_id not in err.value.message


@pytest.fixture
def applying(database: Database) -> Records:
    """Records whose Submit applies changes of stored records at once (``submit_updates =
    "apply"``: the authority's standing approval, 第四十一条)."""
    return Records(database, NODE_REGION, clock=lambda: FIXED_TIME, hold_updates=False)


async def test_a_change_of_a_stored_record_is_held_for_approval(
    records: Records, database: Database
) -> None:
    await submit(records, batch("b1", person(1), person(2)))
    # Record 1 changes, record 2 is resent exactly as stored, record 3 is new.
    outcome = await submit(records, batch("b2", person(2), person(1, xm="张一"), person(3)))
    assert (outcome.accepted, outcome.rejected) == (2, 0)
    [held] = outcome.held
    assert held.index == 1 and held.change_request_id.startswith(f"{NODE_REGION}-C-")
    assert outcome.data_version == 3  # record 3 only
    history = await records.record_history(ENTRY, {"sfzhm": cid(1)})
    assert [v.values["xm"] for v in history] == ["张1"]  # unchanged until approved
    # The held record is a pending change request with the before and after, from its batch.
    row = await database.fetch_one(
        "SELECT status, batch_id, previous_version, new_values, requester FROM change_request"
        " WHERE id = :id",
        {"id": held.change_request_id},
    )
    assert row is not None
    status, batch_id, previous_version, new_values, requester = row
    assert (status, batch_id, previous_version) == ("pending", "b2", 1)
    assert '"xm": "张一"' in new_values and requester == agency(PROVIDER).uri
    # The same change arriving again (a daily full refresh) reuses the pending request.
    again = await submit(records, batch("b3", person(1, xm="张一")))
    assert [h.change_request_id for h in again.held] == [held.change_request_id]
    # Another change of the same record is a request of its own.
    other = await submit(records, batch("b4", person(1, xm="张壹")))
    assert other.held[0].change_request_id != held.change_request_id
    # A resent batch gets its first outcome, held records included.
    assert await submit(
        records, batch("b2", person(2), person(1, xm="张一"), person(3))
    ) == dataclasses.replace(outcome, duplicate=True)


async def test_changes_make_new_versions_and_unchanged_records_do_not(applying: Records) -> None:
    records = applying
    await submit(records, batch("b1", person(1), person(2)))
    # Record 1 changes; record 2 is resent exactly as stored (the same data written another way).
    outcome = await submit(
        records,
        batch("b2", person(1, xm="张一"), person(2) | {"sfzhm": f" {cid(2).lower()} "}),
    )
    assert (outcome.accepted, outcome.data_version) == (2, 3)
    history = await records.record_history(ENTRY, {"sfzhm": cid(1)})
    assert [(v.version, v.data_seq, v.values["xm"], v.batch_id) for v in history] == [
        (1, 1, "张1", "b1"),
        (2, 3, "张一", "b2"),
    ]
    assert history[0].submitted_by == agency(PROVIDER).uri
    assert len(await records.record_history(ENTRY, {"sfzhm": cid(2)})) == 1
    page = await records.query(
        ENTRY, key={"sfzhm": cid(1)}, visible_items=ALL_ITEMS, clear_items=ALL_ITEMS
    )
    assert [(row.version, row.values["xm"]) for row in page.rows] == [(2, "张一")]


async def test_a_key_twice_in_one_batch_applies_both_in_order_with_standing_approval(
    applying: Records,
) -> None:
    records = applying
    outcome = await submit(records, batch("b1", person(1, xm="甲"), person(1, xm="乙")))
    assert (outcome.accepted, outcome.data_version) == (2, 2)
    history = await records.record_history(ENTRY, {"sfzhm": cid(1)})
    assert [(v.version, v.values["xm"]) for v in history] == [(1, "甲"), (2, "乙")]
    [status] = await records.aggregation_status([ENTRY])
    assert status.record_count == 1


async def test_a_key_with_many_values_in_one_batch_is_refused_everywhere(
    records: Records,
) -> None:
    # 40 occurrences of one new key with two values among valid records of other keys.
    sent = [
        person(1, xm="甲" if n % 2 else "乙") if n % 3 == 0 else person(100 + n) for n in range(120)
    ]
    outcome = await submit(records, batch("b1", *sent))
    refused = [n for n in range(120) if n % 3 == 0]
    assert [r.index for r in outcome.rejections] == refused
    assert (outcome.accepted, outcome.rejected, outcome.held) == (80, 40, ())
    first = outcome.rejections[0].reason
    # Each reason names a few of the key's other positions, not all of them.
    assert "records[3], records[6], records[9], records[12], records[15] and 34 more" in first
    assert max(len(r.reason) for r in outcome.rejections) < 400
    with pytest.raises(NotFound):
        await records.record_history(ENTRY, {"sfzhm": cid(1)})
    # Repeated unchanged, a key is accepted each time and written once.
    outcome = await submit(records, batch("b2", person(1), person(1), person(1)))
    assert (outcome.accepted, outcome.rejected, outcome.data_version) == (3, 0, 81)
    assert len(await records.record_history(ENTRY, {"sfzhm": cid(1)})) == 1


async def test_only_the_provider_may_submit(records: Records) -> None:
    for caller in (
        agency(agency_code(8)),
        Identity(NODE_REGION, TRUST_DOMAIN, Role.NODE),
        Identity(NODE_REGION, TRUST_DOMAIN, Role.AUTHORITY),
    ):
        with pytest.raises(PermissionDenied, match=f"only its provider agency {PROVIDER}"):
            await records.submit(caller, ENTRY, batch("b1", person(1)))
    [status] = await records.aggregation_status([ENTRY])
    assert status.data_version == 0


@pytest.mark.parametrize(
    ("b", "message"),
    [
        (batch("", {"sfzhm": "x"}), "batch_id: required"),
        (batch("x" * 129, {"sfzhm": "x"}), "batch_id: required, at most 128"),
        (batch("bad\nid", {"sfzhm": "x"}), "printable"),
        (batch("b1"), "records: a batch needs at least one record"),
        (SubmitBatch("b1", ({"sfzhm": "x"},) * 10_001), "at most 10000 per batch"),
    ],
)
async def test_malformed_batches_are_refused(
    refusing: Records, b: SubmitBatch, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await submit(refusing, b)


async def test_a_withdrawn_or_foreign_resource_takes_no_records(records: Records) -> None:
    withdrawn = ENTRY.model_copy(update={"status": ResourceStatus.WITHDRAWN})
    with pytest.raises(FailedPrecondition, match="is withdrawn"):
        await submit(records, batch("b1", person(1)), withdrawn)
    foreign = ENTRY.model_copy(update={"region": "350200"})
    with pytest.raises(FailedPrecondition, match="belongs to region 350200"):
        await submit(records, batch("b1", person(1)), foreign)
    with pytest.raises(FailedPrecondition, match="belongs to region 350200"):
        await records.verify(foreign, {"sfzhm": cid(1)}, {})


# --- 临时采集 temporary collection -----------------------------------------------------------


def temporary(**fields: Any) -> TemporaryCollection:
    values: dict[str, Any] = {
        "reason": "疫情防控紧急需要",
        "expires_at": FIXED_TIME + dt.timedelta(days=30),
        "extra_items": ("jkm",),
    } | fields
    return TemporaryCollection(**values)


@pytest.mark.parametrize(
    ("collection", "message"),
    [
        (temporary(reason="  "), "temporary.reason: collecting items outside the catalog"),
        (temporary(expires_at=FIXED_TIME), "temporary.expires_at: .* has passed"),
        (
            temporary(expires_at=FIXED_TIME + dt.timedelta(days=91)),
            "temporary.expires_at: at most 90 days ahead",
        ),
        (temporary(extra_items=()), "temporary.extra_items: name the items"),
        (temporary(extra_items=("JKM",)), r"temporary.extra_items\[0\]: 'JKM' must be"),
        (temporary(extra_items=("xm",)), r"temporary.extra_items\[0\]: 'xm' is declared"),
        (temporary(extra_items=("jkm", "jkm")), r"extra_items\[1\]: 'jkm' is listed twice"),
    ],
)
async def test_temporary_collection_needs_reason_expiry_and_new_items(
    refusing: Records, collection: TemporaryCollection, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await submit(refusing, batch("b1", person(1, jkm="绿码"), temporary=collection))


async def test_temporary_collection_is_accepted_and_flagged(records: Records) -> None:
    refused = await submit(records, batch("b0", person(1, jkm="绿码")))
    assert refused.rejections == (
        Rejection(0, "jkm", "not declared in the catalog entry (第十二条)"),
    )
    outcome = await submit(records, batch("b1", person(1, jkm="绿码"), temporary=temporary()))
    assert (outcome.accepted, outcome.rejected) == (1, 0)
    [version] = await records.record_history(ENTRY, {"sfzhm": cid(1)})
    assert version.values["jkm"] == "绿码"
    assert version.temporary_reason == "疫情防控紧急需要"
    assert version.temporary_expires_at == FIXED_TIME + dt.timedelta(days=30)
    assert version.temporary_items == ("jkm",)
    # Out-of-catalog items are never served by Query.
    page = await records.query(
        ENTRY, key={"sfzhm": cid(1)}, visible_items=ALL_ITEMS, clear_items=ALL_ITEMS
    )
    assert "jkm" not in page.rows[0].values


# --- all or nothing ---------------------------------------------------------------------


async def test_a_batch_failing_midway_leaves_nothing(
    records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = records_submit.Binder.insert_many
    calls = 0

    async def fail_second(self: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the current records went in, before their versions
            raise RuntimeError("disk full")
        await real(self, *args)

    monkeypatch.setattr(records_submit.Binder, "insert_many", fail_second)
    with pytest.raises(RuntimeError, match="disk full"):
        await submit(records, batch("b1", person(1), person(2)))
    monkeypatch.undo()
    [status] = await records.aggregation_status([ENTRY])
    assert (status.record_count, status.data_version, status.last_aggregated_at) == (0, 0, None)
    assert not (await records.verify(ENTRY, {"sfzhm": cid(1)}, {})).found
    # Nothing recorded the batch either: sending it again applies it.
    outcome = await submit(records, batch("b1", person(1), person(2)))
    assert (outcome.accepted, outcome.duplicate, outcome.data_version) == (2, False, 2)


async def test_concurrent_resends_of_one_batch_apply_once(database: Database) -> None:
    # Separate Records objects share nothing but the database, like separate processes.
    nodes = [Records(database, NODE_REGION, clock=lambda: FIXED_TIME) for _ in range(4)]
    b = batch("b1", *(person(i) for i in range(50)))
    outcomes = await asyncio.gather(*(submit(r, b) for r in nodes))
    assert sorted(o.duplicate for o in outcomes) == [False, True, True, True]
    assert {o.data_version for o in outcomes} == {50}
    [status] = await nodes[0].aggregation_status([ENTRY])
    assert (status.record_count, status.data_version) == (50, 50)


async def test_concurrent_batches_get_gap_free_data_versions(database: Database) -> None:
    nodes = [Records(database, NODE_REGION) for _ in range(4)]
    batches = [batch(f"b{n}", *(person(n * 10 + i) for i in range(10))) for n in range(4)]
    outcomes = await asyncio.gather(*(submit(r, b) for r, b in zip(nodes, batches, strict=True)))
    assert sorted(o.data_version for o in outcomes) == [10, 20, 30, 40]
    seqs = []
    for i in range(40):
        seqs += [v.data_seq for v in await nodes[0].record_history(ENTRY, {"sfzhm": cid(i)})]
    assert sorted(seqs) == list(range(1, 41))


# --- 联机验证 Verify / 比对验证 Compare ---------------------------------------------------------


async def test_verify_compares_item_by_item_without_returning_values(records: Records) -> None:
    await submit(records, batch("b1", person(1, csrq="1980-01-02", ysr="100.00")))
    outcome = await records.verify(
        ENTRY,
        {"sfzhm": cid(1).lower()},
        {"xm": " 张1 ", "sjhm": "13900000000", "ysr": "100", "hyzk": "已婚"},
    )
    assert outcome == VerifyOutcome(
        found=True,
        matches=(
            ("hyzk", MatchResult.NOT_PRESENT),
            ("sjhm", MatchResult.MISMATCH),
            ("xm", MatchResult.MATCH),
            ("ysr", MatchResult.MATCH),
        ),
    )
    assert not outcome.all_match
    # No stored value: the disputed mark carries report ids, item names and a time only.
    assert [f.name for f in dataclasses.fields(VerifyOutcome)] == ["found", "matches", "dispute"]
    assert (await records.verify(ENTRY, {"sfzhm": cid(1)}, {"xm": "张1"})).all_match
    missing = await records.verify(ENTRY, {"sfzhm": cid(9)}, {"xm": "张1"})
    assert missing == VerifyOutcome(found=False) and not missing.all_match


@pytest.mark.parametrize(
    ("key", "claimed", "message"),
    [
        ({}, {"xm": "a"}, "key: missing key item\\(s\\) sfzhm"),
        ({"sfzhm": "1", "xm": "a"}, {}, "key: 'xm' not a key item"),
        ({"sfzhm": " "}, {}, "key.sfzhm: must not be empty"),
        ({"sfzhm": "1"}, {"nickname": "a"}, "claimed: 'nickname' not an item"),
        ({"sfzhm": "1"}, {"xm": ""}, "claimed.xm: a claimed value must not be empty"),
    ],
)
async def test_verify_refuses_malformed_requests(
    refusing: Records, key: dict[str, str], claimed: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await refusing.verify(ENTRY, key, claimed)


async def test_compare_answers_in_input_order(records: Records) -> None:
    await submit(records, batch("b1", *(person(i) for i in range(5))))
    items = [(f"r{i}", {"sfzhm": cid(i)}, {"xm": f"张{i % 3}"}) for i in range(7, -1, -1)]
    results = await records.compare(ENTRY, items)
    assert [ref for ref, _ in results] == [f"r{i}" for i in range(7, -1, -1)]
    found = {ref: (o.found, o.all_match) for ref, o in results}
    assert found == {
        "r7": (False, False),
        "r6": (False, False),
        "r5": (False, False),
        "r4": (True, False),
        "r3": (True, False),
        "r2": (True, True),
        "r1": (True, True),
        "r0": (True, True),
    }
    assert await records.compare(ENTRY, []) == []


async def test_compare_refuses_too_many_or_malformed_items(refusing: Records) -> None:
    Item = tuple[str, dict[str, str], dict[str, str]]
    many: list[Item] = [("r", {"sfzhm": cid(1)}, {})] * 10_001
    with pytest.raises(InvalidArgument, match="at most 10000 per call, got 10001"):
        await refusing.compare(ENTRY, many)
    bad: list[Item] = [("ok", {"sfzhm": cid(1)}, {}), ("broken", {"xm": "张1"}, {})]
    with pytest.raises(InvalidArgument, match=r"records\[1\] \(ref 'broken'\)\.key: missing"):
        await refusing.compare(ENTRY, bad)


# --- 检索查询 Query ---------------------------------------------------------------------------


async def seed_people(records: Records, count: int = 6) -> None:
    people = [
        person(
            i, csrq=f"19{80 + i}-06-01", ysr=str(1000 * (i + 1)), hyzk="已婚" if i % 2 else "未婚"
        )
        for i in range(count)
    ]
    await submit(records, batch("seed", *people))


async def test_query_by_key_masks_what_is_not_in_clear(records: Records) -> None:
    await seed_people(records)
    page = await records.query(
        ENTRY,
        key={"sfzhm": cid(1)},
        visible_items=ALL_ITEMS,
        clear_items=frozenset({"csrq"}),
        items=["sfzhm", "xm", "sjhm", "csrq", "hyzk"],
    )
    [row] = page.rows
    assert row.values == {
        "sfzhm": cid(1)[:6] + "********" + cid(1)[-4:],
        "xm": "张*",
        "sjhm": "138****0001",
        "csrq": "1981-06-01",
        "hyzk": "已婚",  # masking NONE: shown as stored
    }
    assert row.masked_items == ("sfzhm", "xm", "sjhm")
    assert (page.next_page_token, page.truncated) == ("", False)


async def test_query_by_filters(records: Records) -> None:
    await seed_people(records)

    async def xm(*filters: QueryFilter) -> list[str]:
        page = await records.query(
            ENTRY, filters=filters, items=["xm"], visible_items=ALL_ITEMS, clear_items=ALL_ITEMS
        )
        return sorted(row.values["xm"] for row in page.rows)

    assert await xm(QueryFilter("hyzk", QueryOperator.EQ, value="已婚")) == ["张1", "张3", "张5"]
    assert await xm(QueryFilter("csrq", QueryOperator.PREFIX, value="198")) == [
        f"张{i}" for i in range(6)
    ]
    dates = QueryFilter("csrq", QueryOperator.RANGE, lower="1982-01-01", upper="1984-06-01")
    assert await xm(dates) == ["张2", "张3"]
    # Decimals compare as numbers: 10000 > 9000 although "10000" < "9000" as text.
    money = QueryFilter("ysr", QueryOperator.RANGE, lower="3000.0")
    assert await xm(money) == ["张2", "张3", "张4", "张5"]
    assert await xm(money, QueryFilter("hyzk", "eq", value="未婚")) == ["张2", "张4"]
    assert await xm(QueryFilter("xm", QueryOperator.EQ, value="张 9")) == []


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({}, InvalidArgument, "give key values or at least one filter"),
        ({"items": ["nickname"]}, InvalidArgument, "items: 'nickname' not an item"),
        ({"items": ["sjhm"]}, PermissionDenied, "items: the caller may not see 'sjhm'"),
        (
            {"filters": [QueryFilter("sjhm", QueryOperator.PREFIX, value="138")]},
            PermissionDenied,
            "may not see item 'sjhm', so may not filter on it",
        ),
        (
            {"filters": [QueryFilter("ysr", QueryOperator.RANGE)]},
            InvalidArgument,
            r"filters\[0\]: RANGE needs a lower or an upper bound",
        ),
        (
            {"filters": [QueryFilter("csrq", QueryOperator.RANGE, lower="soon")]},
            InvalidArgument,
            r"filters\[0\].lower: not a date",
        ),
        ({"filters": [QueryFilter("xm", "like", value="张")]}, InvalidArgument, "op: must be"),
        ({"page_size": -1}, InvalidArgument, "page_size: must not be negative"),
        ({"page_token": "garbage"}, InvalidArgument, "page_token: not a page token"),
    ],
)
async def test_query_refusals(
    refusing: Records, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    visible = ALL_ITEMS - {"sjhm"}
    base: dict[str, Any] = {"key": {"sfzhm": cid(1)}} if arguments else {}
    with pytest.raises(error, match=message):
        await refusing.query(ENTRY, visible_items=visible, **(base | arguments))


async def test_query_pages_in_key_order(records: Records) -> None:
    await seed_people(records)
    everyone = QueryFilter("xm", QueryOperator.PREFIX, value="张")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await records.query(
            ENTRY,
            filters=[everyone],
            items=["sfzhm"],
            visible_items=ALL_ITEMS,
            clear_items=ALL_ITEMS,
            page_size=4,
            page_token=token,
        )
        seen += [row.values["sfzhm"] for row in page.rows]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 2
    assert seen == sorted(cid(i) for i in range(6))
    # A token continues only the query it came from.
    first = await records.query(ENTRY, filters=[everyone], visible_items=ALL_ITEMS, page_size=4)
    with pytest.raises(InvalidArgument, match="page_token"):
        await records.query(
            ENTRY,
            filters=[QueryFilter("xm", QueryOperator.PREFIX, value="李")],
            visible_items=ALL_ITEMS,
            page_token=first.next_page_token,
        )


async def test_a_query_serves_at_most_1000_rows(records: Records) -> None:
    await submit(records, batch("big", *(person(i) for i in range(1100))))
    everyone = QueryFilter("xm", QueryOperator.PREFIX, value="张")
    served = 0
    token = ""
    while True:
        page = await records.query(
            ENTRY,
            filters=[everyone],
            items=["xm"],
            visible_items=ALL_ITEMS,
            page_size=500,  # more than the maximum: 200 per page
            page_token=token,
        )
        assert len(page.rows) <= 200
        served += len(page.rows)
        token = page.next_page_token
        if not token:
            break
    assert served == 1000
    assert page.truncated


# --- aggregation status -----------------------------------------------------------------


async def test_aggregation_status_reports_overdue_resources(records: Records) -> None:
    daily = ENTRY
    weekly = person_entry(3, PROVIDER, update_cycle=UpdateCycle.WEEKLY)
    irregular = make_entry(4, PROVIDER, update_cycle=UpdateCycle.IRREGULAR)
    never = make_entry(5, PROVIDER, update_cycle=UpdateCycle.MONTHLY, publish_date="2025-02-20")
    await submit(records, batch("b1", person(1)), daily)
    await submit(records, batch("b1", person(1)), weekly)

    later = FIXED_TIME + dt.timedelta(days=3)
    statuses = await records.aggregation_status([daily, weekly, irregular, never], now=later)
    assert [(s.resource_code, s.overdue) for s in statuses] == [
        (daily.resource_code, True),  # one day plus a day's grace has passed
        (weekly.resource_code, False),
        (irregular.resource_code, False),
        (never.resource_code, False),  # published 2025-02-20: due 32 days later
    ]
    assert statuses[0].last_aggregated_at == FIXED_TIME
    assert statuses[0].due_at == FIXED_TIME + dt.timedelta(days=2)
    assert statuses[2].due_at is None
    assert (statuses[3].record_count, statuses[3].last_aggregated_at) == (0, None)

    much_later = FIXED_TIME + dt.timedelta(days=40)
    statuses = await records.aggregation_status([weekly, irregular, never], now=much_later)
    assert [s.overdue for s in statuses] == [True, False, True]
    withdrawn = never.model_copy(update={"status": ResourceStatus.WITHDRAWN})
    [status] = await records.aggregation_status([withdrawn], now=much_later)
    assert not status.overdue
