"""A Submit acknowledgement is bounded in size whatever the batch: every refused record is
listed, with at most a few reasons each and at most 1 MiB of reasons in all, so the ack of a
committed batch always reaches its provider, and a resend replays the same ack."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence

from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, sharing_pb2, sharing_pb2_grpc

from node.app import RunningNode
from node.catalog import (
    Classification,
    DataItem,
    DataType,
    ResourceEntry,
    ShareMethod,
    ShareType,
    ValidationRule,
)
from node.records import BatchOutcome
from node.records._rejections import (
    ACK_REASON_BYTES,
    MAX_ACK_BYTES,
    NOT_LISTED,
    REASON_BYTES,
    RejectionList,
    bounded,
    rejection_bytes,
)
from node.records._types import MAX_BATCH_ID, MAX_BATCH_RECORDS, HeldRecord, Rejection
from node.servicers.convert import entry_to_proto
from node.servicers.sharing import submit_ack
from tests.support.nodes import PUBLIC_SECURITY, ProvinceSetup, channel

Province = tuple[ProvinceSetup, RunningNode]
SEND_LIMIT = 4 * 1024 * 1024  # limits.max_message_bytes, the node's default
#: INTEGER items a record gets wrong, each: 20 problems a record.
BAD_ITEMS = tuple(f"n{i:02d}" for i in range(20))
#: ENUM items whose refusal shows ten allowed values of 200 characters: 6 KB, the longest
#: reasons Submit gives.
ENUM_ITEMS = tuple(f"e{i}" for i in range(6))
LONG_VALUES = tuple("福" * 199 + str(i) for i in range(10))


def entry(code: str, items: Sequence[DataItem]) -> ResourceEntry:
    key = DataItem(
        name="bh", title="编号", data_type=DataType.STRING, key=True, sensitivity_level=1
    )
    return ResourceEntry(
        resource_code=code,
        name="统计登记",
        provider_name="福建省公安厅",
        provider_code=PUBLIC_SECURITY,
        classification=Classification.DEPARTMENTAL,
        items=(key, *items),
        share_type=ShareType.UNCONDITIONAL,
        share_methods=(ShareMethod.VERIFY, ShareMethod.QUERY),
        publish_date="2025-01-15",
    )


COUNTED = entry(
    "350000-3-000001",
    [
        DataItem(name=n, title=f"数量{n}", data_type=DataType.INTEGER, sensitivity_level=1)
        for n in BAD_ITEMS
    ],
)
ENUMERATED = entry(
    "350000-3-000002",
    [
        DataItem(
            name=n,
            title=f"类别{n}",
            data_type=DataType.ENUM,
            sensitivity_level=1,
            validation=ValidationRule(enum_values=LONG_VALUES),
        )
        for n in ENUM_ITEMS
    ],
)


async def register(province: Province, registered: ResourceEntry) -> None:
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(registered))
        )


async def submit(province: Province, batch: sharing_pb2.SubmitBatch) -> sharing_pb2.SubmitAck:
    setup, node = province

    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield batch

    # The client takes what the node may send (4 MiB), as every gRPC client does by default.
    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=60) as ch:
        [ack] = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(requests())]
    return ack


def by_index(ack: sharing_pb2.SubmitAck) -> dict[int, list[sharing_pb2.RecordRejection]]:
    listed: dict[int, list[sharing_pb2.RecordRejection]] = {}
    for r in ack.rejections:
        listed.setdefault(r.index, []).append(r)
    return listed


def batch_of(code: str, batch_id: str, rows: Sequence[dict[str, str]]) -> sharing_pb2.SubmitBatch:
    return sharing_pb2.SubmitBatch(
        resource_code=code, batch_id=batch_id, records=[common_pb2.Record(values=r) for r in rows]
    )


async def test_the_ack_of_a_batch_refused_everywhere_arrives_and_replays(
    province: Province,
) -> None:
    """5,000 records with 20 bad values each: 100,000 problems, about 7 MB of rejections if each
    were listed, well over the 4 MiB a message may take, in a request of 1 MB. The batch is
    committed (its valid records stored) either way; its ack must reach the provider."""
    await register(province, COUNTED)
    valid = {0, 2_500, 4_999}
    rows = [
        {"bh": f"{n:05d}", **{name: "7" if n in valid else "x" for name in BAD_ITEMS}}
        for n in range(5_000)
    ]
    batch = batch_of(COUNTED.resource_code, "every-value-bad", rows)
    assert batch.ByteSize() < SEND_LIMIT / 3

    ack = await submit(province, batch)

    assert (ack.accepted, ack.rejected, ack.duplicate) == (3, 4_997, False)
    listed = by_index(ack)
    # Every refused record is listed, and only those.
    assert sorted(listed) == sorted(set(range(5_000)) - valid)
    # The first records: five of their problems (by item name), then how many more there are.
    first = listed[1]
    assert [r.item for r in first] == [*BAD_ITEMS[:5], ""]
    assert all("not an integer" in r.reason for r in first[:5])
    assert first[5].reason.startswith("and 15 more problems: an ack lists at most 5 per record")
    # Once the ack's 1 MiB for reasons is spent, each further refused record gets one short
    # rejection saying so.
    short = [i for i, rs in listed.items() if len(rs) == 1]
    assert short, "1 MiB of reasons lists fewer than 4,997 records of six rejections"
    assert all(len(listed[i]) == 6 for i in listed if i < short[0])
    assert all(
        [(r.item, r.reason) for r in listed[i]] == [("", NOT_LISTED)]
        for i in listed
        if i >= short[0]
    )
    assert ack.ByteSize() < SEND_LIMIT / 2

    again = await submit(province, batch)
    assert again.duplicate
    again.duplicate = False
    assert again == ack, "a resend replays the same ack, marked duplicate"


async def test_the_largest_ack_fits_half_the_message_limit(province: Province) -> None:
    """The worst case over the wire: the most records a batch may have (10,000), each refused
    for six values whose reasons are the longest Submit gives (cut to 1 KiB)."""
    await register(province, ENUMERATED)
    rows = [{"bh": f"{n:05d}", **dict.fromkeys(ENUM_ITEMS, "x")} for n in range(MAX_BATCH_RECORDS)]
    batch = batch_of(ENUMERATED.resource_code, "longest-reasons", rows)

    ack = await submit(province, batch)

    assert (ack.accepted, ack.rejected) == (0, MAX_BATCH_RECORDS)
    assert sorted(by_index(ack)) == list(range(MAX_BATCH_RECORDS))
    first = by_index(ack)[0]
    assert [r.item for r in first] == [*ENUM_ITEMS[:5], ""]
    assert first[0].reason.startswith("not one of the allowed values (" + LONG_VALUES[0])
    assert len(first[0].reason.encode()) <= REASON_BYTES
    assert first[0].reason.endswith(" bytes)"), "cut, saying so"
    # Within a few percent of the computed worst case, and that is under half the limit.
    assert 0.95 * MAX_ACK_BYTES < ack.ByteSize() <= MAX_ACK_BYTES < SEND_LIMIT / 2

    again = await submit(province, batch)
    again.duplicate = False
    assert again == ack


async def test_records_missing_every_required_item_get_their_ack(province: Province) -> None:
    """10,000 records of a file in the wrong layout: only the key matches the entry's 200
    required items. Two million problems, found in time linear in their number (not refused
    as too much work, which named patterns the entry does not have)."""
    required = [
        DataItem(
            name=f"r{i:03d}",
            title=f"项{i}",
            data_type=DataType.STRING,
            sensitivity_level=1,
            required=True,
        )
        for i in range(200)
    ]
    layout = entry("350000-3-000003", required)
    await register(province, layout)
    rows = [{"bh": f"{n:05d}"} for n in range(MAX_BATCH_RECORDS)]

    ack = await submit(province, batch_of(layout.resource_code, "wrong-layout", rows))

    assert (ack.accepted, ack.rejected) == (0, MAX_BATCH_RECORDS)
    first = by_index(ack)[0]
    assert [(r.item, r.reason) for r in first[:5]] == [
        (f"r{i:03d}", "required item is missing or empty (第十五条)") for i in range(5)
    ]
    assert first[5].reason.startswith("and 195 more problems")


# --- the arithmetic behind MAX_ACK_BYTES ------------------------------------------------------


def test_rejection_sizes_are_those_of_the_encoded_ack() -> None:
    for rejection in [
        Rejection(0, "", "x"),
        Rejection(1, "sfzhm", "not a date YYYY-MM-DD"),
        Rejection(127, "", "福" * 50),
        Rejection(128, "a" * 63, "y" * 1024),
        Rejection(MAX_BATCH_RECORDS - 1, "", NOT_LISTED),
    ]:
        ack = sharing_pb2.SubmitAck(
            rejections=[
                sharing_pb2.RecordRejection(
                    index=rejection.index, item=rejection.item, reason=rejection.reason
                )
            ]
        )
        assert rejection_bytes(rejection) == ack.ByteSize(), rejection


def test_no_batch_makes_an_ack_larger_than_max_ack_bytes() -> None:
    """The worst case in full: item names of 63 characters, 1,000 problems a record with
    reasons of 4 KB, a batch id of 128 four-byte characters, the latest commit time; and the
    same with half the records held for approval instead."""
    name = "x" * 63
    problems = [(f"{name[:-3]}{i:03d}", "原因" * 700) for i in range(1000)]
    for held in (0, MAX_BATCH_RECORDS // 2):
        listing = RejectionList()
        for index in range(held, MAX_BATCH_RECORDS):
            listing.refuse(index, problems)
        outcome = BatchOutcome(
            batch_id="𝔅" * MAX_BATCH_ID,
            accepted=0,
            rejected=MAX_BATCH_RECORDS - held,
            rejections=tuple(listing.rejections),
            duplicate=True,
            data_version=2**62,
            committed_at=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
            held=tuple(HeldRecord(i, f"350100-C-{i:016x}") for i in range(held)),
        )
        ack = submit_ack(outcome)
        assert ack.ByteSize() <= MAX_ACK_BYTES
        assert {r.index for r in ack.rejections} == set(range(held, MAX_BATCH_RECORDS))
        listed = sum(rejection_bytes(r) for r in listing.rejections if r.reason != NOT_LISTED)
        assert ACK_REASON_BYTES - 7_000 < listed <= ACK_REASON_BYTES
    assert MAX_ACK_BYTES < SEND_LIMIT / 2


def test_a_bounded_list_is_stored_and_replayed_unchanged() -> None:
    """What Submit stores is what a resend replays (bounded() changes nothing bounded), and a
    list stored before the bounds is cut to them when replayed."""
    listing = RejectionList()
    for index in range(MAX_BATCH_RECORDS):
        listing.refuse(index, [(f"i{n:03d}", f"reason {n} " * 10) for n in range(index % 12 + 1)])
    assert bounded(listing.rejections) == tuple(listing.rejections)
    old = [Rejection(i, f"i{n}", "not an integer " * 5) for i in range(2_000) for n in range(50)]
    replayed = bounded(old)
    assert {r.index for r in replayed} == set(range(2_000))
    assert sum(rejection_bytes(r) for r in replayed) <= MAX_ACK_BYTES
    assert bounded(replayed) == replayed


def test_a_made_up_item_name_is_quoted_not_echoed() -> None:
    listing = RejectionList()
    listing.refuse(0, [("q" * 100_000, "not declared in the catalog entry (第十二条)")])
    [rejection] = listing.rejections
    assert rejection.item == ""
    assert rejection.reason == (
        f"item '{'q' * 64}'… (100000 characters): not declared in the catalog entry (第十二条)"
    )
