"""The row API over the wire (QueryOpenRows): a real province node over mutual TLS serving a
published 普遍开放 dataset, read by an agency and by the open data portal. Filters combine
with AND and select exactly the rows a plain Python reading of the served table selects; pages
follow each other to the end; a page token pins its version (refused clearly once another is
served); a projection returns only the items named; a filter that matches nothing reads a
bounded number of rows per call and still ends; 授权开放 data and unknown items are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from govnode.v1 import opendata_pb2, opendata_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import DataItem, DataType, OpenTreatment, OpenTreatmentKind, OpenType
from node.opendata import _rows
from tests.opendata.test_download_api import PUBLIC, listing, open_entry, republish
from tests.opendata.test_publish import open_rows, person
from tests.support.access import refused, register, submit
from tests.support.nodes import PUBLIC_SECURITY, ProvinceSetup, channel, make_province, start

AMOUNT = DataItem(
    name="je",
    title="金额",
    data_type=DataType.DECIMAL,
    sensitivity_level=1,
    open=OpenTreatment(kind=OpenTreatmentKind.AS_STORED),
)
UNIVERSAL = open_entry(21, OpenType.UNIVERSAL, items=(*PUBLIC, AMOUNT))
AUTHORIZED = open_entry(22, OpenType.AUTHORIZED, items=(*PUBLIC, AMOUNT), name="授权金额")
ROWS = 1000


async def publish(node: RunningNode, setup: ProvinceSetup, entry: Any, n: int) -> None:
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, entry)
    people = [
        {k: v for k, v in person(i, 1980 + i % 3, note=f"备注{i % 7}").items() if k != "sfzhm"}
        | {"je": f"{i % 40}.{i % 4 * 25}" if i % 10 else ""}
        for i in range(n)
    ]
    await submit(node, provider, entry.resource_code, people)
    await republish(node, setup, entry.resource_code)


async def query(
    node: RunningNode,
    files: TlsFiles,
    code: str,
    *filters: tuple[str, str],
    key: str = "",
    **fields: Any,
) -> Any:
    """One page; ``key`` (授权开放) goes in the request metadata."""
    terms = [opendata_pb2.FilterTerm(key=k, value=v) for k, v in filters]
    async with channel(node, files) as ch:
        return await opendata_pb2_grpc.OpenDataServiceStub(ch).QueryOpenRows(
            opendata_pb2.QueryOpenRowsRequest(resource_code=code, filters=terms, **fields),
            metadata=(("govnode-open-key", key),) if key else (),
        )


async def every_page(
    node: RunningNode, files: TlsFiles, code: str, *filters: tuple[str, str], **fields: Any
) -> tuple[list[Any], list[Any]]:
    """Every page from the first to the one without a token: (the rows, the replies)."""
    replies = [await query(node, files, code, *filters, **fields)]
    while replies[-1].next_page_token:
        token = replies[-1].next_page_token
        replies.append(await query(node, files, code, *filters, page_token=token, **fields))
    return [row for reply in replies for row in reply.rows], replies


def numbered(rows: list[Any]) -> list[tuple[int, dict[str, str]]]:
    return [(row.row, dict(row.values)) for row in rows]


async def test_rows_are_filtered_paged_projected_and_bounded_for_agencies_and_the_portal(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        agency, portal = setup.agency(PUBLIC_SECURITY), setup.portal()
        await publish(node, setup, UNIVERSAL, ROWS)
        u = UNIVERSAL.resource_code
        served = list(enumerate(await open_rows(node.db, u, 1), start=1))
        assert len(served) == ROWS  # no row left out: the row numbers are 1..1000
        listed = (await listing(node, agency, query="人口抽样21")).resources[0]

        # --- no filter: the served rows in order, 20 a page by default, with provenance -----
        first = await query(node, portal, u)
        assert numbered(first.rows) == served[:20] and first.next_page_token
        assert (first.version, first.scanned) == (1, 21)  # the 21st says a next page exists
        assert first.source == listed.source and first.acquired_at == listed.acquired_at
        assert first.dataset_iri == listed.dataset_iri
        rows, replies = await every_page(node, agency, u, page_size=1000)  # at most 100
        assert numbered(rows) == served and [len(r.rows) for r in replies] == [100] * 10

        # --- filters combine with AND, compared by what the item holds ----------------------
        # je is a decimal: "9.5" < "10" as numbers, not as strings; empty je is null.
        def wanted(row: dict[str, str]) -> bool:
            return row["csrq"] == "1981" and row["je"] != "" and float(row["je"]) < 10

        filters = (("csrq__exact", "1981"), ("je__strictly_less", "10"))
        for files in (agency, portal):
            rows, replies = await every_page(node, files, u, *filters, page_size=50)
            expected = [(n, r) for n, r in served if wanted(r)]
            assert numbered(rows) == expected and len(expected) > 50
            assert len(replies) == -(-len(expected) // 50) and {r.version for r in replies} == {1}
        nulls, _ = await every_page(node, agency, u, ("je__isnull", ""), page_size=100)
        assert [n for n, _ in numbered(nulls)] == [n for n, r in served if r["je"] == ""]
        notes = await query(node, agency, u, ("bz__contains", "备注6"), ("qh__in", "3501,3502"))
        assert numbered(notes.rows) == [(n, r) for n, r in served if r["bz"] == "备注6"][:20]

        # --- a projection: only the items named ---------------------------------------------
        projected = await query(node, portal, u, ("je__greater", "38.5"), items=["je", "bz"])
        assert (
            numbered(projected.rows)
            == [
                (n, {"je": r["je"], "bz": r["bz"]})
                for n, r in served
                if r["je"][:2] in ("38", "39")
            ][:20]
        )

        # --- the scan bound: a filter that matches nothing reads a bounded number of rows ---
        monkeypatch.setattr(_rows, "SCAN_ROWS", 300)
        rows, replies = await every_page(node, portal, u, ("bz__exact", "没有"))
        assert rows == [] and [r.scanned for r in replies] == [300, 300, 300, 100]
        assert all(r.next_page_token for r in replies[:-1])
        sparse, replies = await every_page(node, agency, u, ("bz__exact", "备注3"), page_size=100)
        assert numbered(sparse) == [(n, r) for n, r in served if r["bz"] == "备注3"]
        assert len(replies) == 4 and max(r.scanned for r in replies) <= 300
        monkeypatch.undo()

        # --- a token pins its version: once another is served, the caller starts again ------
        page = await query(node, agency, u, page_size=10)
        await republish(node, setup, u)
        stale = await refused(query(node, agency, u, page_size=10, page_token=page.next_page_token))
        assert stale.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "continues version 1" in (stale.details() or "")
        assert "version 2 is served now: start again without a page_token" in (
            stale.details() or ""
        )
        again = await query(node, agency, u, page_size=10)
        assert again.version == 2 and len(again.rows) == 10

        # --- every call is audited as 查询 with the version, rows and rows read --------------
        records = await node.db.fetch_all(
            "SELECT operation, outcome, detail FROM audit_record "
            "WHERE method = '/govnode.v1.OpenDataService/QueryOpenRows' ORDER BY sequence",
            {},
        )
        assert {str(r[0]) for r in records} == {"query"}
        assert str(records[-1][1]) == "OK" and str(records[-2][1]) == "FAILED_PRECONDITION"
        detail = json.loads(records[0][2])
        assert {k: detail[k] for k in ("version", "filters", "rows", "scanned")} == {
            "version": 1,
            "filters": 0,
            "rows": 20,
            "scanned": 21,
        }
    finally:
        await node.stop(grace=0)


async def test_queries_that_are_refused(tmp_path: Path, db_url: str) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        agency, portal = setup.agency(PUBLIC_SECURITY), setup.portal()
        await publish(node, setup, UNIVERSAL, 30)
        await publish(node, setup, AUTHORIZED, 30)
        u, a = UNIVERSAL.resource_code, AUTHORIZED.resource_code

        async def status(files: TlsFiles, code: str, *filters: tuple[str, str], **kw: Any) -> Any:
            return await refused(query(node, files, code, *filters, **kw))

        authorized = await status(portal, a)
        assert authorized.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "授权开放" in (authorized.details() or "") and "第三十二条" in (
            authorized.details() or ""
        )

        cases: list[tuple[TlsFiles, list[tuple[str, str]], dict[str, Any], str]] = [
            (portal, [("sfzhm__exact", "1")], {}, "'sfzhm' is not a published item of"),
            (agency, [("je__sort", "asc")], {}, "sorting is not offered"),
            (agency, [("je__less", "ten")], {}, "filter 'je__less': 'ten': not a decimal number"),
            (agency, [("bz__exact", "x")] * 11, {}, "filters: at most 10 filters, got 11"),
            (agency, [], {"items": ["sfzhm"]}, "items: 'sfzhm' not published items of"),
            (agency, [], {"page_token": "bm90IGEgdG9rZW4"}, "page_token: not a token"),
            (agency, [], {"page_size": -1}, "page_size: must not be negative"),
        ]
        for files, filters, fields, expected in cases:
            wrong = await status(files, u, *filters, **fields)
            assert wrong.code() is grpc.StatusCode.INVALID_ARGUMENT, expected
            assert expected in (wrong.details() or ""), wrong.details()
            assert len(wrong.details() or "") < 400

        unknown = await status(agency, f"{u[:-6]}999999")
        assert unknown.code() is grpc.StatusCode.NOT_FOUND
        assert "never published" in (unknown.details() or "")
        long_code = await status(agency, "3" * 5000)
        assert long_code.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert len(long_code.details() or "") < 200
    finally:
        await node.stop(grace=0)
