"""Replies whose size follows the stored data, not the request, stay within the message limit:
a Query page, an Exchange chunk, a ListResources page and a page of a record's history stop at
about 1 MiB (at least one row), so large records or entries, or many versions, never make a
call fail with "Sent message larger than max"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import grpc.aio
import pytest
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
from node.servicers.convert import entry_to_proto
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    start,
    with_submit_updates,
)

Province = tuple[ProvinceSetup, RunningNode]
SEND_LIMIT = 4 * 1024 * 1024  # limits.max_message_bytes, the node's default
MAX_PAGES = 100  # bound on every paging loop
KB = 1024


def documents(n: int, **fields: object) -> ResourceEntry:
    """A resource of records with a large text item (a scanned document, say)."""
    items = (
        DataItem(name="bh", title="编号", data_type=DataType.STRING, key=True, sensitivity_level=1),
        DataItem(name="lb", title="类别", data_type=DataType.STRING, sensitivity_level=1),
        DataItem(name="wj", title="文件", data_type=DataType.STRING, sensitivity_level=1),
    )
    values: dict[str, object] = {
        "resource_code": f"350000-3-{n:06d}",
        "name": f"文件登记{n}",
        "provider_name": "福建省公安厅",
        "provider_code": PUBLIC_SECURITY,
        "classification": Classification.DEPARTMENTAL,
        "items": items,
        "share_type": ShareType.UNCONDITIONAL,
        "share_methods": (ShareMethod.QUERY, ShareMethod.EXCHANGE),
        "publish_date": "2025-01-15",
    } | fields
    return ResourceEntry(**values)


async def register(province: Province, entry: ResourceEntry) -> None:
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )


async def submit(
    province: Province, code: str, batches: Sequence[Sequence[dict[str, str]]]
) -> None:
    setup, node = province

    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for n, rows in enumerate(batches):
            yield sharing_pb2.SubmitBatch(
                resource_code=code,
                batch_id=f"b{n}",
                records=[common_pb2.Record(values=r) for r in rows],
            )

    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(requests())]
    assert [a.rejected for a in acks] == [0] * len(batches)


async def test_a_query_page_of_large_records_stops_at_a_mebibyte(province: Province) -> None:
    """60 records of 100 KB: a page of 50 would be 5 MB."""
    entry = documents(1)
    await register(province, entry)
    rows = [{"bh": f"{n:03d}", "lb": "A", "wj": f"{n:03d}" + "z" * (100 * KB)} for n in range(60)]
    await submit(province, entry.resource_code, [rows[:30], rows[30:]])

    setup, node = province
    seen: list[str] = []
    token = ""
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        for _ in range(MAX_PAGES):
            page = await stub.Query(
                sharing_pb2.QueryRequest(
                    resource_code=entry.resource_code,
                    filters=[
                        sharing_pb2.QueryFilter(
                            item="lb", op=sharing_pb2.QUERY_OPERATOR_EQ, value="A"
                        )
                    ],
                    page_size=50,
                    page_token=token,
                )
            )
            assert 0 < page.ByteSize() <= 1.1 * 1024 * KB
            seen += [r.record.values["bh"] for r in page.rows]
            token = page.next_page_token
            if not token:
                break
    assert seen == [r["bh"] for r in rows], "every record once, in key order"


async def test_an_exchange_chunk_never_passes_the_message_limit(province: Province) -> None:
    """A record just under 1 MiB, then one of 3.5 MiB: together over 4 MiB."""
    entry = documents(2)
    await register(province, entry)
    small = {"bh": "a", "lb": "A", "wj": "s" * (1024 * KB - 64)}
    large = {"bh": "b", "lb": "A", "wj": "l" * (3584 * KB)}
    await submit(province, entry.resource_code, [[small], [large]])

    setup, node = province
    chunks = []
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Exchange(
            sharing_pb2.ExchangeRequest(resource_code=entry.resource_code)
        )
        async for chunk in call:
            chunks.append(chunk)
            if chunk.last or len(chunks) >= MAX_PAGES:
                break
    assert [[r.values["bh"] for r in c.records] for c in chunks] == [["a"], ["b"]]
    assert chunks[-1].last


async def test_a_catalog_page_of_large_entries_stops_at_a_mebibyte(province: Province) -> None:
    """Entries of 2 MB (an ENUM of 10,000 allowed values of 200 characters): three would not
    fit in one message."""
    allowed = tuple(f"{n:05d}" + "x" * 195 for n in range(10_000))
    large = DataItem(
        name="dm",
        title="代码",
        data_type=DataType.ENUM,
        sensitivity_level=1,
        validation=ValidationRule(enum_values=allowed),
    )
    codes = []
    for n in range(3, 6):
        entry = documents(n)
        entry = documents(n, items=(*entry.items, large))
        await register(province, entry)
        codes.append(entry.resource_code)

    setup, node = province
    listed: list[str] = []
    token = ""
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        for _ in range(MAX_PAGES):
            page = await stub.ListResources(catalog_pb2.ListResourcesRequest(page_token=token))
            assert page.ByteSize() < SEND_LIMIT
            listed += [e.resource_code for e in page.entries]
            token = page.next_page_token
            if not token:
                break
    assert listed == codes


@pytest.fixture
async def applying(tmp_path: Path, db_url: str) -> AsyncIterator[Province]:
    """A province whose Submit applies changes at once (``submit_updates = "apply"``): one
    batch carrying a key many times writes as many versions of its record."""
    setup = with_submit_updates(make_province(tmp_path / "province", db_url), "apply")
    node = await start(setup)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


async def test_the_history_of_a_record_with_many_versions_is_read_in_pages(
    applying: Province,
) -> None:
    """10 versions of 400 KB, then 10,000 small ones: 9.5 MB of history, read page by page
    (第四十一条: every version stays readable)."""
    entry = documents(6)
    await register(applying, entry)
    large = [{"bh": "k", "lb": "A", "wj": f"{n:05d}" + "v" * (400 * KB)} for n in range(10)]
    small = [{"bh": "k", "lb": "A", "wj": f"{n:05d}" + "v" * 400} for n in range(10, 10_010)]
    batches = [large[:5], large[5:], small[:5_000], small[5_000:]]
    await submit(applying, entry.resource_code, batches)

    setup, node = applying
    pages: list[list[int]] = []
    token = ""
    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        for _ in range(MAX_PAGES):
            page = await stub.GetRecordHistory(
                sharing_pb2.GetRecordHistoryRequest(
                    resource_code=entry.resource_code,
                    key={"bh": "k"},
                    page_size=200,
                    page_token=token,
                )
            )
            assert 0 < page.ByteSize() <= 1.1 * 1024 * KB
            assert all(v.record.values["wj"][:5] == f"{v.version - 1:05d}" for v in page.versions)
            pages.append([v.version for v in page.versions])
            token = page.next_page_token
            if not token:
                break
    assert [v for page in pages for v in page] == list(range(1, 10_011)), "each once, in order"

    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        for bad in ({"page_token": "归档"}, {"page_token": "x" * 100}, {"page_size": -1}):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetRecordHistory(
                    sharing_pb2.GetRecordHistoryRequest(
                        resource_code=entry.resource_code, key={"bh": "k"}, **bad
                    )
                )
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert next(iter(bad)) in (err.value.details() or "")
    assert [len(p) for p in pages[:5]] == [2, 2, 2, 2, 200], "1 MiB, or 200 versions, a page"
