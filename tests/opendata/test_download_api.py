"""The open catalog and downloads over the wire (第二十九至三十五条): a real province node over
mutual TLS, an agency and the open data portal calling it. What is listed is what is served;
a download is the served version's rows, exactly, in chunks that each carry the source and
acquisition date, the first stating the file's size, SHA-256 and a receipt that verifies
offline and names the recipient; a publication meanwhile does not mix versions; 授权开放 data,
data no longer served, bad formats and a portal that names no recipient are refused."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from govnode.v1 import common_pb2, opendata_pb2, opendata_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import OpenType, ResourceEntry
from node.opendata import CHUNK_BYTES, check_receipt
from node.pki import load_certs
from tests.opendata.test_publish import ITEMS, open_rows, person
from tests.support.access import refused, register, submit
from tests.support.entries import make_entry
from tests.support.nodes import (
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    start,
)

TD = "fujian.gov.cn"
AGENCY = f"spiffe://{PROVINCE}.{TD}/agency/{PUBLIC_SECURITY}"
PUBLIC = ITEMS[:4]  # bh, csrq, qh, bz: levels 1 and 2, so 普遍开放 may hold them (第三十七条)
NOTES = ("", '含逗号,和"引号"', "两行\r\n备注", "plain")


def open_entry(n: int, open_type: OpenType, **fields: Any) -> ResourceEntry:
    values: dict[str, Any] = {
        "resource_code": f"{PROVINCE}-3-{n:06d}",
        "provider_name": "福建省公安厅",
        "name": f"人口抽样{n}",
        "summary": "按出生年份和区划汇总的样本",
        "items": PUBLIC if open_type is OpenType.UNIVERSAL else ITEMS,
        "open_type": open_type,
    } | fields
    return make_entry(n, PUBLIC_SECURITY, **values)


UNIVERSAL = open_entry(8, OpenType.UNIVERSAL, summary="Sample by birth YEAR and 区划")
AUTHORIZED = open_entry(7, OpenType.AUTHORIZED, name="授权样本")
WITHDRAWN = open_entry(9, OpenType.UNIVERSAL, provider_name="福建省民政厅")


async def publish(node: RunningNode, setup: ProvinceSetup, entry: ResourceEntry, n: int) -> None:
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, entry)
    people = [person(i, 1980 + i % 3, note=NOTES[i % len(NOTES)] * 20) for i in range(n)]
    names = {item.name for item in entry.items}
    people = [{k: v for k, v in p.items() if k in names} for p in people]
    await submit(node, provider, entry.resource_code, people)
    await republish(node, setup, entry.resource_code)


async def republish(node: RunningNode, setup: ProvinceSetup, code: str) -> None:
    async with channel(node, setup.authority()) as ch:
        await opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(
            opendata_pb2.PublishOpenResourceRequest(resource_code=code)
        )


async def listing(node: RunningNode, files: TlsFiles, **fields: Any) -> Any:
    async with channel(node, files) as ch:
        return await opendata_pb2_grpc.OpenDataServiceStub(ch).ListOpenResources(
            opendata_pb2.ListOpenResourcesRequest(**fields)
        )


def codes(reply: Any) -> list[str]:
    return [r.entry.resource_code for r in reply.resources]


async def download(
    node: RunningNode,
    files: TlsFiles,
    code: str,
    fmt: str,
    recipient: str = "",
    *,
    key: str = "",
    **fields: Any,
) -> list[opendata_pb2.DownloadChunk]:
    """A whole download; ``recipient`` and ``key`` (授权开放) go in the request metadata."""
    metadata = [("govnode-recipient", recipient)] if recipient else []
    metadata += [("govnode-open-key", key)] if key else []
    async with channel(node, files, timeout=30) as ch:
        call = opendata_pb2_grpc.OpenDataServiceStub(ch).Download(
            opendata_pb2.DownloadRequest(resource_code=code, format=fmt, **fields),
            metadata=tuple(metadata),
        )
        return [chunk async for chunk in call]


def checked(chunks: Sequence[opendata_pb2.DownloadChunk], listed: Any) -> bytes:
    """The file's bytes, once the chunks are what a download promises: each at most
    CHUNK_BYTES (256 KiB) with the provenance of the listed resource and its offset in the
    file, the first alone stating the file's size and digest (and carrying the receipt), the
    last alone marked."""
    at = 0
    for chunk in chunks:
        assert len(chunk.data) <= CHUNK_BYTES
        assert chunk.source == listed.source and chunk.acquired_at == listed.acquired_at
        assert (chunk.version, chunk.dataset_iri) == (listed.version, listed.dataset_iri)
        assert chunk.offset == at
        at += len(chunk.data)
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[0].receipt and not any(c.sha256 or c.receipt or c.size for c in chunks[1:])
    data = b"".join(c.data for c in chunks)
    assert chunks[0].sha256 == hashlib.sha256(data).hexdigest()
    assert chunks[0].size == len(data)
    return data


def table(rows: Sequence[dict[str, str]]) -> list[list[str]]:
    return [[row[item.name] for item in PUBLIC] for row in rows]


async def test_the_open_catalog_is_listed_and_downloaded_by_an_agency_and_by_the_portal(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        agency, portal = setup.agency(PUBLIC_SECURITY), setup.portal()
        await publish(node, setup, UNIVERSAL, 1500)
        await publish(node, setup, AUTHORIZED, 30)
        await publish(node, setup, WITHDRAWN, 30)
        async with channel(node, setup.authority()) as ch:
            await opendata_pb2_grpc.OpenDataServiceStub(ch).UnpublishOpenResource(
                opendata_pb2.UnpublishOpenResourceRequest(resource_code=WITHDRAWN.resource_code)
            )
        u, a = UNIVERSAL.resource_code, AUTHORIZED.resource_code

        # --- the listing: what is served, by code, with paging, filters and a query ----------
        everything = await listing(node, portal)
        assert codes(everything) == [a, u] and not everything.next_page_token
        listed = everything.resources[1]
        assert list(listed.formats) == ["csv", "jsonl"]
        assert (listed.version, listed.rows) == (1, 1500)
        assert listed.dataset_iri == f"https://opendata.{TD}/dataset/{u}"
        assert PUBLIC_SECURITY in listed.source and "福建省公安厅" in listed.source
        assert u in listed.source and "福建省数据管理机构" in listed.source
        assert listed.acquired_at.seconds > 0
        assert [i.name for i in listed.entry.items] == ["bh", "csrq", "qh", "bz"]
        first = listed.entry.items[0]
        assert first.title == "编号" and first.open.kind and not first.sensitivity_level
        # 授权开放 is listed too, without its level-3 item, which never opens.
        assert [i.name for i in everything.resources[0].entry.items] == ["bh", "csrq", "qh", "bz"]

        page = await listing(node, agency, page_size=1)
        assert codes(page) == [a] and page.next_page_token
        page = await listing(node, agency, page_size=1, page_token=page.next_page_token)
        assert codes(page) == [u] and not page.next_page_token
        assert codes(await listing(node, agency, query="出生年份")) == [a]  # the summary
        assert codes(await listing(node, agency, query="birth year")) == [u]  # either case
        assert codes(await listing(node, agency, query="授权")) == [a]  # the name
        assert codes(await listing(node, agency, query="公安厅")) == [a, u]  # the provider
        assert codes(await listing(node, agency, query="民政厅")) == []  # not served
        universal = common_pb2.OPEN_TYPE_UNIVERSAL
        assert codes(await listing(node, agency, open_type=universal)) == [u]
        assert codes(await listing(node, agency, region="350100")) == []
        too_long = await refused(listing(node, agency, query="查" * 101))
        assert too_long.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "query: is 101 characters, at most 100" in (too_long.details() or "")

        # --- CSV as an agency: the served rows exactly; a recipient header is ignored --------
        chunks = await download(node, agency, u, "csv", recipient="ip:203.0.113.9")
        assert len(chunks) >= 2
        data = checked(chunks, listed)
        served = await open_rows(node.db, u, 1)
        lines = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        assert lines[0] == ["bh", "csrq", "qh", "bz"]
        assert lines[1:] == table(served) and len(served) == 1500
        assert data.count(b"\r\n") > 1500 and data.startswith(b"bh,csrq,qh,bz\r\n")
        root = load_certs(setup.config.path(setup.config.tls.root))[0]
        receipt = check_receipt(chunks[0].receipt, root, TD, file_bytes=data)
        assert receipt.recipient == AGENCY  # an agency cannot name another recipient
        assert (receipt.resource_code, receipt.version, receipt.format) == (u, 1, "csv")
        assert receipt.dataset == listed.dataset_iri and receipt.provider_code == PUBLIC_SECURITY
        assert receipt.authority_region == PROVINCE and receipt.node == str(node.identity)

        # --- JSON Lines as the portal, for a member of the public ----------------------------
        chunks = await download(node, portal, u, "jsonl", recipient="ip:203.0.113.9")
        data = checked(chunks, listed)
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        assert rows == served and list(rows[0]) == ["bh", "csrq", "qh", "bz"]
        receipt = check_receipt(chunks[0].receipt, root, TD, file_bytes=data)
        assert (receipt.recipient, receipt.format) == ("ip:203.0.113.9", "jsonl")

        # --- the byte order mark Excel wants -------------------------------------------------
        plain = b"".join(c.data for c in await download(node, portal, u, "csv", "key:ab12cd34"))
        chunks = await download(node, portal, u, "csv", "key:ab12cd34", bom=True)
        with_bom = checked(chunks, listed)
        assert with_bom == b"\xef\xbb\xbf" + plain
        assert check_receipt(chunks[0].receipt, root, TD, file_bytes=with_bom).size == len(with_bom)

        # --- a publication during a download: the file is the version it started with --------
        async with channel(node, agency, timeout=30) as ch:
            call = opendata_pb2_grpc.OpenDataServiceStub(ch).Download(
                opendata_pb2.DownloadRequest(resource_code=u, format="jsonl")
            )
            stream = aiter(call)
            started = [await anext(stream)]
            await republish(node, setup, u)
            chunks = started + [chunk async for chunk in stream]
        data = checked(chunks, listed)
        assert [json.loads(line) for line in data.decode().splitlines()] == served
        assert check_receipt(chunks[0].receipt, root, TD, file_bytes=data).version == 1
        assert (await listing(node, agency, query="birth")).resources[0].version == 2

        # --- every download is audited as 下载 with its recipient, version and digest --------
        records = await node.db.fetch_all(
            "SELECT caller, operation, outcome, detail FROM audit_record "
            "WHERE method = '/govnode.v1.OpenDataService/Download' ORDER BY sequence",
            {},
        )
        assert [(str(r[1]), str(r[2])) for r in records] == [("download", "OK")] * 5
        details = [json.loads(r[3]) for r in records]
        assert details[0]["recipient"] == AGENCY and details[1]["recipient"] == "ip:203.0.113.9"
        assert details[1]["version"] == 1 and details[1]["format"] == "jsonl"
        assert details[1]["sha256"] == receipt.sha256 and details[1]["size"] == receipt.size
    finally:
        await node.stop(grace=0)


async def test_downloads_that_are_refused(tmp_path: Path, db_url: str) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        agency, portal = setup.agency(PUBLIC_SECURITY), setup.portal()
        await publish(node, setup, UNIVERSAL, 30)
        await publish(node, setup, AUTHORIZED, 30)
        u, a = UNIVERSAL.resource_code, AUTHORIZED.resource_code

        async def status(files: TlsFiles, code: str, fmt: str, *args: Any, **kw: Any) -> Any:
            return await refused(download(node, files, code, fmt, *args, **kw))

        nameless = await status(portal, u, "csv")
        assert nameless.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "govnode-recipient" in (nameless.details() or "")
        for bad in ("203.0.113.9", "ip:" + "9" * 200, "ip:a b", "ip:<script>"):
            wrong = await status(portal, u, "csv", bad)
            assert wrong.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
            assert len(wrong.details() or "") < 400

        authorized = await status(agency, a, "csv")
        assert authorized.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "授权开放" in (authorized.details() or "") and "第三十二条" in (
            authorized.details() or ""
        )
        assert "portal" in (authorized.details() or "")

        unknown = await status(agency, f"{PROVINCE}-3-999999", "csv")
        assert unknown.code() is grpc.StatusCode.NOT_FOUND
        assert "never published" in (unknown.details() or "")
        async with channel(node, setup.authority()) as ch:
            await opendata_pb2_grpc.OpenDataServiceStub(ch).UnpublishOpenResource(
                opendata_pb2.UnpublishOpenResourceRequest(resource_code=u)
            )
        withdrawn = await status(portal, u, "csv", "ip:203.0.113.9")
        assert withdrawn.code() is grpc.StatusCode.NOT_FOUND
        assert "its publication was withdrawn" in (withdrawn.details() or "")

        xlsx = await status(agency, a, "xlsx")
        assert xlsx.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "csv, jsonl" in (xlsx.details() or "")
        bom = await status(agency, a, "jsonl", bom=True)
        assert bom.code() is grpc.StatusCode.INVALID_ARGUMENT and "bom" in (bom.details() or "")
        long_code = await status(agency, "3" * 5000, "csv")
        assert long_code.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert len(long_code.details() or "") < 200
    finally:
        await node.stop(grace=0)
