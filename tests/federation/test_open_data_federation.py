"""The province's open catalog holds its approved cities' open datasets (第三十一条): listed
beside the province's own, in resource-code order, and read, downloaded and queried through
the province, which forwards each call to the city with a signed caller assertion. The city
serves the province's portal as its own: its node signs the receipt, which names the owner
and the recipient the portal named; both nodes audit the call. A city the province has not
approved is neither listed nor forwarded to; a city that goes away keeps its listing for a
while, and its downloads answer UNAVAILABLE saying so. Real nodes over mutual TLS, on both
backends."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
import pytest
from govnode.v1 import opendata_pb2, opendata_pb2_grpc

from gateway.identity import Identity, Role, make_identity
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import OpenType, ResourceEntry
from node.config import load_config
from node.federation import ApprovalFacts, own_approval, record_approval, set_own_approval
from node.opendata import OpenReview, check_receipt
from node.pki import load_certs
from tests.opendata.test_applications import draft
from tests.opendata.test_applications_api import domain
from tests.opendata.test_publish import ITEMS, person
from tests.support.access import refused, register, submit
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code, make_entry
from tests.support.nodes import (
    FUZHOU,
    PROVINCE,
    PUBLIC_SECURITY,
    XIAMEN,
    Federation,
    Member,
    ProvinceSetup,
    channel,
    link_peers,
    make_city,
    make_province,
)
from tests.support.portal import client, portal_config, run_portal

TD = "fujian.gov.cn"
PUBLIC = ITEMS[:4]  # bh, csrq, qh, bz: levels 1 and 2, so 普遍开放 may hold them (第三十七条)
RECIPIENT = "ip:203.0.113.9"
#: The province asks a city again after 1 s, keeps a silent one's listing for 4 s.
KEEP_S = 4.0


def provider_of(region: str) -> str:
    return PUBLIC_SECURITY if region == PROVINCE else agency_code(1, region)


def open_entry(region: str, n: int, name: str) -> ResourceEntry:
    return make_entry(
        n,
        provider_of(region),
        resource_code=f"{region}-3-{n:06d}",
        provider_name=f"{region}公安局",
        name=name,
        summary="按出生年份和区划汇总的样本",
        items=PUBLIC,
        open_type=OpenType.UNIVERSAL,
    )


P1 = open_entry(PROVINCE, 1, "全省人口抽样")
F1 = open_entry(FUZHOU, 1, "福州人口抽样")
F2 = open_entry(FUZHOU, 2, "福州道路名录")
X1 = open_entry(XIAMEN, 1, "厦门人口抽样")


def with_opendata(setup: ProvinceSetup, **values: float) -> ProvinceSetup:
    """The same node with keys of ``[opendata]`` set (each a line `govnode init` wrote)."""
    text = setup.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{key} = "))
        text = text.replace(line, f"{key} = {value}", 1)
    setup.config_path.write_text(text, encoding="utf-8")
    return ProvinceSetup(setup.base, setup.config_path, load_config(setup.config_path))


async def publish(member: Member, entry: ResourceEntry, n: int = 30) -> None:
    provider = member.setup.agency(provider_of(member.region))
    await register(member.running, provider, entry)
    names = {item.name for item in entry.items}
    rows = [{k: v for k, v in person(i, 1980 + i % 3).items() if k in names} for i in range(n)]
    await submit(member.running, provider, entry.resource_code, rows)
    async with channel(member.running, member.setup.authority()) as ch:
        await opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(
            opendata_pb2.PublishOpenResourceRequest(resource_code=entry.resource_code)
        )


async def approve(province: Member, city: Member) -> None:
    """The province approves ``city`` as a sub-platform (as `govnode federation approve` records
    it), and the city knows (it would learn it on its next heartbeat)."""
    facts = ApprovalFacts(
        region=city.region,
        node_identity=str(make_identity(city.region, TD, Role.NODE)),
        tester_identity=f"spiffe://{PROVINCE}.{TD}/tester/lab-1",
        suite_version="3",
        report_sha256=city.region * 10 + "0" * 4,
        finished_at=dt.datetime.now(dt.UTC),
        passed=36,
    )
    assert await record_approval(province.running.db, facts, "{}", "test", facts.finished_at)
    await set_own_approval(city.running.db, True)


async def listing(node: RunningNode, files: TlsFiles, **fields: Any) -> Any:
    async with channel(node, files) as ch:
        return await opendata_pb2_grpc.OpenDataServiceStub(ch).ListOpenResources(
            opendata_pb2.ListOpenResourcesRequest(**fields)
        )


def codes(reply: Any) -> list[str]:
    return [r.entry.resource_code for r in reply.resources]


async def download(
    node: RunningNode, files: TlsFiles, code: str, fmt: str = "csv", recipient: str = RECIPIENT
) -> list[opendata_pb2.DownloadChunk]:
    async with channel(node, files, timeout=30) as ch:
        call = opendata_pb2_grpc.OpenDataServiceStub(ch).Download(
            opendata_pb2.DownloadRequest(resource_code=code, format=fmt),
            metadata=(("govnode-recipient", recipient),),
        )
        return [chunk async for chunk in call]


async def rows(node: RunningNode, files: TlsFiles, code: str, **fields: Any) -> Any:
    async with channel(node, files) as ch:
        return await opendata_pb2_grpc.OpenDataServiceStub(ch).QueryOpenRows(
            opendata_pb2.QueryOpenRowsRequest(resource_code=code, **fields),
            metadata=(("govnode-recipient", RECIPIENT),),
        )


async def audited(node: RunningNode, method: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(caller, outcome, origin node, detail) of every call of ``method`` this node audited."""
    found = await node.db.fetch_all(
        "SELECT caller, outcome, origin_node, detail FROM audit_record "
        "WHERE method = :method ORDER BY sequence",
        {"method": f"/govnode.v1.OpenDataService/{method}"},
    )
    return [(str(r[0]), str(r[1]), str(r[2] or ""), json.loads(r[3] or "{}")) for r in found]


async def believe_approved(city: Member) -> None:
    """Make ``city`` believe it is an approved sub-platform although the province never approved
    it: told so after its first heartbeat (which says otherwise) has landed. Bounded."""
    deadline = time.monotonic() + 20.0
    while True:
        await set_own_approval(city.running.db, True)
        await asyncio.sleep(0.3)  # a heartbeat under way lands meanwhile
        if await own_approval(city.running.db):
            return
        assert time.monotonic() < deadline, "厦门 kept learning it is not approved"


@pytest.fixture
async def fed(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    """The province (P1), 福州 approved as a sub-platform (F1, F2) and 厦门, which believes it
    is approved but is not (X1): each with a published 普遍开放 dataset."""
    province = make_province(tmp_path / "province", await db_urls())
    fuzhou = make_city(tmp_path / "fuzhou", await db_urls(), province, FUZHOU, "福州市")
    xiamen = make_city(tmp_path / "xiamen", await db_urls(), province, XIAMEN, "厦门市")
    province = link_peers(
        province, {FUZHOU: fuzhou.config.node.listen, XIAMEN: xiamen.config.node.listen}
    )
    province = with_opendata(
        province,
        city_catalog_seconds=1.0,
        city_catalog_keep_seconds=KEEP_S,
        city_catalog_wait_seconds=5.0,
    )
    # 厦门 heartbeats rarely: each heartbeat tells it the province's answer (not approved),
    # and the tests need it to go on believing otherwise once told so below.
    xiamen = dataclasses.replace(
        xiamen,
        config=xiamen.config.model_copy(
            update={
                "federation": xiamen.config.federation.model_copy(
                    update={"heartbeat_seconds": 300.0}
                )
            }
        ),
    )
    running = Federation(Member(province), Member(fuzhou), Member(xiamen))
    try:
        for member in running.members:
            await member.start()
        await approve(running.province, running.fuzhou)
        await believe_approved(running.xiamen)  # the province never approved it
        await publish(running.province, P1)
        await publish(running.fuzhou, F1)
        await publish(running.fuzhou, F2)
        await publish(running.xiamen, X1)
        yield running
    finally:
        for member in reversed(running.members):
            await member.stop()


async def test_the_province_lists_serves_and_forwards_an_approved_citys_open_data(
    fed: Federation,
) -> None:
    province, fuzhou = fed.province.running, fed.fuzhou.running
    portal = fed.province.setup.portal()
    city_portal = fed.fuzhou.setup.portal()

    # --- listed beside the province's own, in code order, with the city's source -------------
    listed = await listing(province, portal)
    assert codes(listed) == [P1.resource_code, F1.resource_code, F2.resource_code]
    at_city = await listing(fuzhou, city_portal)
    assert list(listed.resources[1:]) == list(at_city.resources)  # as the city lists them
    f1 = listed.resources[1]
    assert "开放单位：福州市数据管理机构（350100）" in f1.source
    assert "开放单位：福建省数据管理机构（350000）" in listed.resources[0].source

    # --- filters and paging over the merged list --------------------------------------------
    assert codes(await listing(province, portal, region=FUZHOU)) == [
        F1.resource_code,
        F2.resource_code,
    ]
    assert codes(await listing(province, portal, region=PROVINCE)) == [P1.resource_code]
    assert codes(await listing(province, portal, region=XIAMEN)) == []
    assert codes(await listing(province, portal, query="道路")) == [F2.resource_code]
    assert codes(await listing(province, portal, query="人口")) == [
        P1.resource_code,
        F1.resource_code,
    ]
    assert codes(await listing(province, portal, open_type=2)) == []  # 授权开放: none
    pages: list[str] = []
    token = ""
    for _ in range(5):
        page = await listing(province, portal, page_size=1, page_token=token)
        pages += codes(page)
        token = page.next_page_token
        if not token:
            break
    assert pages == codes(listed)
    page = await listing(province, portal, page_size=2, query="人口")
    assert codes(page) == [P1.resource_code, F1.resource_code] and not page.next_page_token
    page = await listing(province, portal, page_size=1, query="福州")
    assert codes(page) == [F1.resource_code] and page.next_page_token
    rest = await listing(
        province, portal, page_size=1, query="福州", page_token=page.next_page_token
    )
    assert codes(rest) == [F2.resource_code] and not rest.next_page_token

    # --- one dataset's page, forwarded ------------------------------------------------------
    async with channel(province, portal) as ch:
        got = await opendata_pb2_grpc.OpenDataServiceStub(ch).GetOpenResource(
            opendata_pb2.GetOpenResourceRequest(resource_code=F1.resource_code),
            metadata=(("govnode-recipient", RECIPIENT),),
        )
    assert got.resource == f1

    # --- a download through the province: the city's file, signed by the city ---------------
    chunks = await download(province, portal, F1.resource_code)
    data = b"".join(c.data for c in chunks)
    direct = b"".join(c.data for c in await download(fuzhou, city_portal, F1.resource_code))
    assert data == direct and data.startswith(b"bh,csrq,qh,bz\r\n") and chunks[-1].last
    assert chunks[0].source == f1.source and chunks[0].dataset_iri == f1.dataset_iri
    root = load_certs(fed.province.setup.config.path(fed.province.setup.config.tls.root))[0]
    receipt = check_receipt(chunks[0].receipt, root, TD, file_bytes=data)
    assert receipt.node == str(fuzhou.identity) == f"spiffe://{FUZHOU}.{TD}/node"
    assert receipt.recipient == RECIPIENT
    assert receipt.authority_region == FUZHOU and receipt.resource_code == F1.resource_code
    assert receipt.provider_code == provider_of(FUZHOU)

    # --- its rows, forwarded ----------------------------------------------------------------
    answer = await rows(province, portal, F1.resource_code, page_size=10)
    assert len(answer.rows) == 10 and answer.source == f1.source and answer.next_page_token
    more = await rows(province, portal, F1.resource_code, page_token=answer.next_page_token)
    assert more.rows[0].row > answer.rows[-1].row

    # --- audited at both nodes --------------------------------------------------------------
    portal_uri = f"spiffe://{PROVINCE}.{TD}/portal/opendata-1"
    at_province = await audited(province, "Download")
    assert [(c, o) for c, o, _, _ in at_province] == [(portal_uri, "OK")]
    detail = at_province[0][3]
    assert detail["routed_to"] == FUZHOU and detail["recipient"] == RECIPIENT
    assert detail["sha256"] == receipt.sha256 and detail["relayed_bytes"] == len(data)
    at_fuzhou = await audited(fuzhou, "Download")
    forwarded = [a for a in at_fuzhou if a[0] == portal_uri]
    assert len(forwarded) == 1 and forwarded[0][1] == "OK"
    assert forwarded[0][2] == str(province.identity)  # forwarded by the province
    assert forwarded[0][3]["recipient"] == RECIPIENT
    assert forwarded[0][3]["sha256"] == receipt.sha256
    queried = [a for a in await audited(fuzhou, "QueryOpenRows") if a[0] == portal_uri]
    assert len(queried) == 2 and all(a[2] == str(province.identity) for a in queried)


async def test_an_unapproved_citys_open_data_is_neither_listed_nor_forwarded(
    fed: Federation,
) -> None:
    province, xiamen = fed.province.running, fed.xiamen.running
    portal = fed.province.setup.portal()
    # 厦门 serves X1 itself (it believes it is approved) ...
    assert codes(await listing(xiamen, fed.xiamen.setup.portal())) == [X1.resource_code]
    # ... but the province approved only 福州.
    assert XIAMEN not in "".join(codes(await listing(province, portal)))
    for call in (
        download(province, portal, X1.resource_code),
        rows(province, portal, X1.resource_code),
    ):
        err = await refused(call)
        assert err.code() is grpc.StatusCode.NOT_FOUND
        assert "not approved by this province as an open-data sub-platform (第三十一条)" in (
            err.details() or ""
        )
    assert await audited(xiamen, "Download") == []  # nothing reached 厦门


async def test_a_city_that_goes_away_keeps_its_listing_for_a_while(fed: Federation) -> None:
    province = fed.province.running
    portal = fed.province.setup.portal()
    assert F1.resource_code in codes(await listing(province, portal))
    await fed.fuzhou.stop()
    gone = time.monotonic()

    # Within city_catalog_keep_seconds of its last answer the listing still holds it ...
    assert F1.resource_code in codes(await listing(province, portal))
    # ... its downloads answer UNAVAILABLE, naming it ...
    err = await refused(download(province, portal, F1.resource_code))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert (
        f"resource {F1.resource_code} is served by the open-data sub-platform of region "
        f"{FUZHOU}, which cannot be reached now; try again later"
    ) in (err.details() or "")
    # ... and past it the city drops out, the province's own data staying.
    while F1.resource_code in codes(listed := await listing(province, portal)):
        assert time.monotonic() - gone < KEEP_S + 10, "the silent city was never dropped"
        await asyncio.sleep(0.3)
    assert codes(listed) == [P1.resource_code]


async def test_a_key_issued_by_the_city_is_checked_by_the_city_through_the_province(
    fed: Federation,
) -> None:
    """授权开放: the city's authority approved the application and issued the key; the
    province passes it on (govnode-open-key) and the city checks it and narrows the file."""
    province, fuzhou = fed.province.running, fed.fuzhou.running
    portal = fed.province.setup.portal()
    keyed = open_entry(FUZHOU, 3, "福州授权样本").model_copy(
        update={"items": ITEMS, "open_type": OpenType.AUTHORIZED}
    )
    await publish(fed.fuzhou, keyed)
    applications, _, applicant = domain(fed.fuzhou.setup, fuzhou.db)
    application = await applications.apply(applicant, draft(keyed.resource_code))
    approval = await applications.review(
        Identity(FUZHOU, TD, Role.AUTHORITY),
        application.id,
        OpenReview(approve=True, items=("csrq", "qh")),
    )
    assert approval.application.key is not None
    key_id, key = approval.application.key.key_id, approval.key

    err = await refused(download(province, portal, keyed.resource_code))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and "授权开放" in (err.details() or "")

    async with channel(province, portal, timeout=30) as ch:
        call = opendata_pb2_grpc.OpenDataServiceStub(ch).Download(
            opendata_pb2.DownloadRequest(resource_code=keyed.resource_code, format="csv"),
            metadata=(("govnode-open-key", key),),
        )
        chunks = [chunk async for chunk in call]
    data = b"".join(c.data for c in chunks)
    assert data.startswith(b"csrq,qh\r\n")  # only the approved items
    root = load_certs(fed.province.setup.config.path(fed.province.setup.config.tls.root))[0]
    receipt = check_receipt(chunks[0].receipt, root, TD, file_bytes=data)
    assert receipt.recipient == f"key:{key_id}" and receipt.node == str(fuzhou.identity)

    err = await refused(download(province, portal, keyed.resource_code, recipient="key:other"))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED  # no key: the city refuses
    at_fuzhou = [a for a in await audited(fuzhou, "Download") if a[3].get("key_id") == key_id]
    assert len(at_fuzhou) == 1 and key not in json.dumps(at_fuzhou)


async def test_the_provinces_portal_serves_an_approved_citys_dataset_to_the_public(
    fed: Federation, tmp_path: Path
) -> None:
    """Through the province's public portal process, over HTTPS with no client certificate: a
    福州 dataset is listed and downloaded (the bytes 福州 serves, resumable), its provenance and
    receipt naming 福州, the owner (第三十一条, 第三十五条)."""
    province, fuzhou = fed.province.running, fed.fuzhou.running
    root = load_certs(fed.province.setup.config.path(fed.province.setup.config.tls.root))[0]
    config = portal_config(fed.province.setup, province, tmp_path / "province-portal")
    code = F1.resource_code
    async with run_portal(config) as portal, client() as web:
        async with web.get(f"{portal.url}/api/v1/datasets") as response:
            listed = [d["resource_code"] for d in (await response.json())["datasets"]]
        assert listed == [P1.resource_code, F1.resource_code, F2.resource_code]
        async with web.get(f"{portal.url}/dataset/{code}") as response:
            assert response.status == 200 and "福州市数据管理机构" in await response.text()
        async with web.get(f"{portal.url}/api/v1/datasets/{code}/data.csv") as response:
            assert response.status == 200
            data = await response.read()
            source = unquote(response.headers["Govnode-Source"])
            header = response.headers["Govnode-Receipt"]
        assert "开放单位：福州市数据管理机构（350100）" in source
        receipt_bytes = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        receipt = check_receipt(receipt_bytes, root, TD, file_bytes=data)
        assert receipt.node == str(fuzhou.identity) and receipt.recipient == "ip:127.0.0.1"
        assert receipt.authority_region == FUZHOU and receipt.resource_code == code
        async with web.get(
            f"{portal.url}/api/v1/datasets/{code}/data.csv", headers={"Range": "bytes=10-29"}
        ) as response:
            assert response.status == 206 and await response.read() == data[10:30]
        async with web.get(f"{portal.url}/api/v1/datasets/{X1.resource_code}/data.csv") as r:
            refusal = (await r.json())["error"]
            assert r.status == 404 and "第三十一条" in refusal["message"]


async def test_the_provinces_dcat_catalog_holds_its_approved_cities_datasets(
    fed: Federation,
) -> None:
    """GetOpenCatalogDocument at the province: the province's datasets then 福州's, in code
    order, paged over both; each city dataset under the city's IRI and published by the city's
    authority; 厦门 (not approved) absent."""
    portal = fed.province.setup.portal()

    async def document(page: int) -> dict[str, Any]:
        async with channel(fed.province.running, portal) as ch:
            reply = await opendata_pb2_grpc.OpenDataServiceStub(ch).GetOpenCatalogDocument(
                opendata_pb2.GetOpenCatalogDocumentRequest(format="jsonld", page=page, page_size=2)
            )
        assert reply.total == 3
        parsed: dict[str, Any] = json.loads(reply.document)
        return parsed

    def one(value: Any) -> Any:
        """A JSON-LD value written alone or as the first of several."""
        return value[0] if isinstance(value, list) else value

    def typed(doc: dict[str, Any], rdf_type: str) -> list[dict[str, Any]]:
        return [n for n in doc["@graph"] if rdf_type in (n.get("@type") or [])]

    def datasets(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {one(n["dct:identifier"])["@value"]: n for n in typed(doc, "dcat:Dataset")}

    first, second = datasets(await document(1)), datasets(await document(2))
    assert list(first) == [P1.resource_code, F1.resource_code]
    assert list(second) == [F2.resource_code]
    assert X1.resource_code not in first | second
    f1 = first[F1.resource_code]
    assert f1["@id"].endswith(f"/dataset/{F1.resource_code}")
    publishers = {n["@id"]: n for n in typed(await document(1), "foaf:Agent")}
    city_publisher = publishers[one(f1["dct:publisher"])["@id"]]
    assert one(city_publisher["foaf:name"])["@value"] == "福州市数据管理机构"
    assert one(city_publisher["dct:identifier"])["@value"] == FUZHOU
    own = publishers[one(first[P1.resource_code]["dct:publisher"])["@id"]]
    assert one(own["dct:identifier"])["@value"] == PROVINCE
