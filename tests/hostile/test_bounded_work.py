"""Caller-controlled work is bounded (第三十七条 availability): oversized lists are refused up
front with INVALID_ARGUMENT naming the limit, and long values cost time linear in their length
and never an INTERNAL."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sharing_pb2,
    sharing_pb2_grpc,
)

from node.app import RunningNode
from node.catalog import DataItem, DataType, ResourceEntry, ShareMethod, ShareType, ValidationRule
from node.catalog._types import MAX_ENUM_VALUES
from node.servicers.convert import entry_to_proto
from tests.support.nodes import CIVIL_AFFAIRS, PUBLIC_SECURITY, ProvinceSetup, channel

Province = tuple[ProvinceSetup, RunningNode]
CODE = "350000-3-000001"
MANY = 50_000  # names in a list: far more than any entry has items, well within a message
#: Names in a map, or in a call that carries no bulk data: far more than any entry has items,
#: within what the guard lets through (gateway.request_limits: 10,000 entries a map, 256 KiB).
MANY_NAMES = 5_000


def counted_entry(**fields: object) -> ResourceEntry:
    values: dict[str, object] = {
        "resource_code": CODE,
        "name": "统计登记",
        "provider_name": "福建省公安厅",
        "provider_code": PUBLIC_SECURITY,
        "classification": "departmental",
        "items": (
            DataItem(
                name="bh", title="编号", data_type=DataType.STRING, key=True, sensitivity_level=1
            ),
            DataItem(name="sl", title="数量", data_type=DataType.INTEGER, sensitivity_level=1),
            DataItem(name="je", title="金额", data_type=DataType.DECIMAL, sensitivity_level=1),
        ),
        "share_type": ShareType.UNCONDITIONAL,
        "share_methods": (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY),
        "publish_date": "2025-01-15",
    } | fields
    return ResourceEntry(**values)


@pytest.fixture
async def registered(province: Province) -> Province:
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(counted_entry()))
        )
    return province


async def submit(
    province: Province, *batches: sharing_pb2.SubmitBatch
) -> list[sharing_pb2.SubmitAck]:
    setup, node = province

    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for b in batches:
            yield b

    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        return [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(requests())]


async def refused(province: Province, method: str, request: object) -> grpc.aio.AioRpcError:
    setup, node = province
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            call = getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(request)
            if method == "Compare":
                _ = [r async for r in call]
            else:
                await call
    return err.value


async def test_a_long_integer_is_canonicalised_not_an_internal_error(registered: Province) -> None:
    """int() refuses more than 4,300 digits (and is quadratic below): the canonical form of an
    INTEGER value is computed on its text."""
    long = "+000" + "9" * 5000
    acks = await submit(
        registered,
        sharing_pb2.SubmitBatch(
            resource_code=CODE,
            batch_id="b1",
            records=[common_pb2.Record(values={"bh": "1", "sl": long})],
        ),
    )
    assert (acks[0].accepted, acks[0].rejected) == (1, 0)
    setup, node = registered
    async with channel(node, setup.agency(CIVIL_AFFAIRS)) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        verified = await stub.Verify(
            sharing_pb2.VerifyRequest(
                resource_code=CODE, key={"bh": "1"}, claimed={"sl": "9" * 5000}
            )
        )
        other = await stub.Verify(
            sharing_pb2.VerifyRequest(
                resource_code=CODE, key={"bh": "1"}, claimed={"sl": "-" + "8" * 6000}
            )
        )
    assert verified.all_match
    assert [m.result for m in other.matches] == [sharing_pb2.MATCH_RESULT_MISMATCH]


async def test_long_decimals_are_canonicalised_exactly_not_rounded_or_refused(
    registered: Province,
) -> None:
    """decimal.Decimal rounds to 28 significant digits (two different amounts compared equal)
    and overflows past a million digits (INTERNAL): the canonical form is computed on the text."""
    exact = "1234567890123456789012345678901.10"
    huge = "-000" + "7" * 1_000_001 + ".50"
    acks = await submit(
        registered,
        sharing_pb2.SubmitBatch(
            resource_code=CODE,
            batch_id="b1",
            records=[
                common_pb2.Record(values={"bh": "1", "je": exact}),
                common_pb2.Record(values={"bh": "2", "je": huge}),
            ],
        ),
    )
    assert (acks[0].accepted, acks[0].rejected) == (2, 0)
    setup, node = registered
    async with channel(node, setup.agency(CIVIL_AFFAIRS)) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)

        async def matches(key: str, claimed: str) -> bool:
            request = sharing_pb2.VerifyRequest(
                resource_code=CODE, key={"bh": key}, claimed={"je": claimed}
            )
            reply = await stub.Verify(request)
            return reply.all_match

        async def compares(key: str, claimed: str) -> bool:
            # A claim of a megabyte: more than Verify takes (gateway.request_limits); Compare,
            # which carries bulk data, takes it.
            request = sharing_pb2.CompareRequest(
                resource_code=CODE,
                records=[
                    sharing_pb2.CompareRecord(ref="r", key={"bh": key}, claimed={"je": claimed})
                ],
            )
            return all([r.all_match async for r in stub.Compare(request)])

        assert await matches("1", "+1234567890123456789012345678901.1")
        assert not await matches("1", "1234567890123456789012345678900")
        assert await compares("2", "-" + "7" * 1_000_001 + ".5")


async def test_lists_of_names_longer_than_the_entry_are_refused_up_front(
    registered: Province,
) -> None:
    names = {f"x{i}": "1" for i in range(MANY_NAMES)}
    cases: list[tuple[str, object, str]] = [
        (
            "Verify",
            sharing_pb2.VerifyRequest(resource_code=CODE, key={"bh": "1"}, claimed=names),
            f"claimed: {MANY_NAMES} items; the resource has 3",
        ),
        (
            "Verify",
            sharing_pb2.VerifyRequest(resource_code=CODE, key=names, claimed={"sl": "1"}),
            f"key: {MANY_NAMES} items; the resource has 3",
        ),
        (
            "Compare",
            sharing_pb2.CompareRequest(
                resource_code=CODE,
                records=[sharing_pb2.CompareRecord(ref="r", key={"bh": "1"}, claimed=names)],
            ),
            f"records[0] (ref 'r'): {MANY_NAMES} items; the resource has 3",
        ),
        (
            "Query",
            sharing_pb2.QueryRequest(resource_code=CODE, key={"bh": "1"}, items=list(names)),
            f"items: {MANY_NAMES} names; the resource has 3 items",
        ),
        (
            "Query",
            sharing_pb2.QueryRequest(resource_code=CODE, key=names),
            f"key: {MANY_NAMES} items; the resource has 3",
        ),
    ]
    for method, request, message in cases:
        error = await refused(registered, method, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, message)
        assert (error.details() or "").startswith(message), (method, error.details())


async def test_a_record_with_more_values_than_items_gets_one_rejection(
    registered: Province,
) -> None:
    acks = await submit(
        registered,
        sharing_pb2.SubmitBatch(
            resource_code=CODE,
            batch_id="b1",
            records=[
                common_pb2.Record(values={"bh": "1", **{f"x{i}": "1" for i in range(MANY_NAMES)}}),
                common_pb2.Record(values={"bh": "2", "sl": "3"}),
            ],
        ),
    )
    assert (acks[0].accepted, acks[0].rejected) == (1, 1)
    assert [(r.index, r.item, r.reason) for r in acks[0].rejections] == [
        (
            0,
            "",
            f"'x0', 'x1', 'x10', 'x100', 'x1000', … ({MANY_NAMES} in all) not declared in the "
            f"catalog entry (第十二条): the record carries {MANY_NAMES + 1} values, the catalog "
            "entry declares 3 items",
        )
    ]


async def test_a_temporary_collection_names_a_bounded_number_of_items(
    registered: Province,
) -> None:
    expires = Timestamp()
    expires.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    batch = sharing_pb2.SubmitBatch(
        resource_code=CODE,
        batch_id="t1",
        records=[common_pb2.Record(values={"bh": "1"})],
        temporary=sharing_pb2.TemporaryCollection(
            reason="应急", expires_at=expires, extra_items=[f"x{i}" for i in range(MANY)]
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(registered, batch)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(
        f"temporary.extra_items: at most 1000 items, got {MANY}"
    )


async def test_an_enum_item_has_a_bounded_number_of_values(province: Province) -> None:
    setup, node = province
    entry = counted_entry(
        items=(
            DataItem(
                name="bh", title="编号", data_type=DataType.STRING, key=True, sensitivity_level=1
            ),
            DataItem(
                name="mz",
                title="名称",
                data_type=DataType.ENUM,
                sensitivity_level=1,
                validation=ValidationRule(enum_values=tuple(f"v{i}" for i in range(MANY))),
            ),
        )
    )
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "") == (
        f"entry.items[1].validation.enum_values: at most {MAX_ENUM_VALUES:,} values of at most "
        f"200 characters each, got {MANY:,}"
    )


async def test_applications_and_reviews_name_a_bounded_number_of_items(
    province: Province,
) -> None:
    """Unknown names were found with a list scan per name (quadratic with a large entry) and
    all listed in the refusal."""
    setup, node = province
    conditional = counted_entry(
        resource_code="350000-3-000002",
        share_type=ShareType.CONDITIONAL,
        share_conditions="用于行政审批",
    )
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(conditional))
        )
    not_after = Timestamp()
    not_after.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))

    def apply(items: list[str]) -> access_pb2.ApplyRequest:
        return access_pb2.ApplyRequest(
            resource_code=conditional.resource_code,
            items=items,
            share_methods=[common_pb2.SHARE_METHOD_VERIFY],
            purpose="核验登记信息",
            legal_basis="《社会组织登记管理条例》",
            not_after=not_after,
        )

    names = [f"x{i}" for i in range(MANY_NAMES)]
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        stub = access_pb2_grpc.AccessServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Apply(apply(names))
        applied = (await stub.Apply(apply(["bh", "sl"]))).application
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"items: {MANY_NAMES} names; resource 350000-3-000002 has 3 items"

    async with channel(node, setup.authority(), timeout=30) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await access_pb2_grpc.AccessServiceStub(ch).ReviewApplication(
                access_pb2.ReviewApplicationRequest(
                    application_id=applied.id,
                    decision=common_pb2.REVIEW_DECISION_APPROVE,
                    clear_text_items=names,
                    justification="核对",
                )
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"clear_text_items: {MANY_NAMES} names; 2 items are granted"


async def test_a_notification_filter_names_each_kind_at_most_once(province: Province) -> None:
    """A packed repeated enum costs a byte a value: a message could name millions of kinds,
    each looped over on the event loop and bound into one SQL IN list."""
    setup, node = province
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        stub = access_pb2_grpc.AccessServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            usage = access_pb2.NOTIFICATION_KIND_USAGE
            await stub.ListNotifications(access_pb2.ListNotificationsRequest(kinds=[usage] * MANY))
        twice = await stub.ListNotifications(
            access_pb2.ListNotificationsRequest(kinds=[access_pb2.NOTIFICATION_KIND_USAGE] * 2)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    kinds = len(access_pb2.NotificationKind.keys()) - 1  # every kind but UNSPECIFIED
    assert err.value.details() == f"kinds: at most {kinds} (each kind once), got {MANY}"
    assert list(twice.notifications) == []


async def test_an_entry_with_too_many_items_or_methods_is_refused_in_one_line(
    province: Province,
) -> None:
    """Each item and each repeated method used to add its own problem to the refusal: an entry
    of 50,000 ungraded items, or a method listed 50,000 times, made a message of megabytes."""
    setup, node = province
    ungraded = tuple(
        DataItem(name=f"x{i}", title="X", data_type=DataType.STRING, sensitivity_level=0)
        for i in range(MANY)
    )
    cases = [
        (counted_entry(items=ungraded), f"entry.items: at most 1000 items, got {MANY}"),
        (
            counted_entry(share_methods=(ShareMethod.VERIFY,) * MANY),
            f"entry.share_methods: at most 5 (each method once), got {MANY}",
        ),
    ]
    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        for entry, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.RegisterResource(
                    catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == message
