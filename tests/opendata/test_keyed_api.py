"""授权开放 data with a key over the wire (第三十二至三十五条): a real province node over mutual
TLS, its open data portal presenting the key of an approved application in the request
metadata. The file and the rows hold only the approved items; the receipt names the key's
holder, ``key:<key id>``, and verifies over exactly the bytes sent; the audit log records the
key's id and use and never the key, and no log line holds it. A missing, unknown, revoked,
expired, foreign or suspended key is refused naming the article; a malformed one is refused
without being repeated."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from govnode.v1 import opendata_pb2
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role
from node.app import RunningNode
from node.catalog import OpenType
from node.models import OpenKeyRow
from node.opendata import OpenReview, Receipt, check_receipt
from node.pki import load_certs
from tests.opendata.test_applications import draft
from tests.opendata.test_applications_api import domain
from tests.opendata.test_download_api import (
    AUTHORIZED,
    TD,
    UNIVERSAL,
    checked,
    download,
    listing,
    open_entry,
    publish,
)
from tests.opendata.test_publish import open_rows
from tests.opendata.test_rows_api import every_page, query
from tests.support.access import refused
from tests.support.nodes import PROVINCE, PUBLIC_SECURITY, ProvinceSetup, make_province, start

APPROVED = ("csrq", "qh")  # of bh, csrq, qh, bz published
OTHER = open_entry(6, OpenType.AUTHORIZED, name="授权样本二")
DOWNLOAD = "/govnode.v1.OpenDataService/Download"
QUERY = "/govnode.v1.OpenDataService/QueryOpenRows"


async def approved_key(
    setup: ProvinceSetup, node: RunningNode, code: str, items: tuple[str, ...] = APPROVED
) -> tuple[str, str]:
    """(key id, key) of an application for ``code`` approved for ``items``, made at the domain
    level as the portal's and the authority's calls make it."""
    applications, _, portal = domain(setup, node.db)
    app = await applications.apply(portal, draft(code))
    authority = Identity(PROVINCE, TD, Role.AUTHORITY)
    approval = await applications.review(authority, app.id, OpenReview(approve=True, items=items))
    assert approval.application.key is not None
    key_id = approval.application.key.key_id
    assert approval.key.startswith(f"gok_{key_id}_")
    return key_id, approval.key


def receipt_of(
    chunks: Sequence[opendata_pb2.DownloadChunk], root: x509.Certificate, data: bytes
) -> Receipt:
    """The download's receipt, verified over ``data``, the bytes received."""
    return check_receipt(chunks[0].receipt, root, TD, file_bytes=data)


async def change_key(node: RunningNode, key_id: str, **fields: dt.datetime) -> None:
    """Move a key's dates, as time passing would."""

    async def txn(session: AsyncSession) -> None:
        row = await session.get(OpenKeyRow, key_id)
        assert row is not None
        for name, value in fields.items():
            setattr(row, name, value)
        session.add(row)

    await node.db.write("test.change_key", txn)


async def test_the_portal_downloads_and_queries_only_the_approved_items_with_a_key(
    tmp_path: Path, db_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        portal, agency = setup.portal(), setup.agency(PUBLIC_SECURITY)
        await publish(node, setup, AUTHORIZED, 1200)
        await publish(node, setup, UNIVERSAL, 30)
        a, u = AUTHORIZED.resource_code, UNIVERSAL.resource_code
        key_id, key = await approved_key(setup, node, a)
        holder = f"key:{key_id}"
        listed = (await listing(node, portal, query="授权样本")).resources[0]
        served = [{i: row[i] for i in APPROVED} for row in await open_rows(node.db, a, 1)]
        assert len(served) == 1200
        root = load_certs(setup.config.path(setup.config.tls.root))[0]

        # --- CSV: the approved items only, the receipt naming the key's holder ---------------
        chunks = await download(node, portal, a, "csv", key=key)  # no recipient header needed
        data = checked(chunks, listed)
        lines = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        assert lines[0] == list(APPROVED)
        assert lines[1:] == [[row[i] for i in APPROVED] for row in served]
        receipt = receipt_of(chunks, root, data)
        assert receipt.recipient == holder and receipt.size == len(data)
        assert (receipt.resource_code, receipt.format, receipt.version) == (a, "csv", 1)

        # --- JSON Lines: objects of the approved items; a recipient header agreeing is fine --
        chunks = await download(node, portal, a, "jsonl", holder, key=key)
        data = checked(chunks, listed)
        assert [json.loads(line) for line in data.decode("utf-8").splitlines()] == served
        assert receipt_of(chunks, root, data).recipient == holder
        # Any authenticated caller may present a key; the receipt still names its holder.
        chunks = await download(node, agency, a, "csv", key=key, bom=True)
        data = checked(chunks, listed)
        assert data.startswith(b"\xef\xbb\xbfcsrq,qh\r\n")
        assert receipt_of(chunks, root, data).recipient == holder

        # --- the rows: approved items only, filters and projections within them -------------
        rows, replies = await every_page(node, portal, a, ("csrq__exact", "1981"), key=key)
        expected = [(n, r) for n, r in enumerate(served, start=1) if r["csrq"] == "1981"]
        assert [(r.row, dict(r.values)) for r in rows] == expected and len(replies) > 1
        projected = await query(node, portal, a, key=key, items=["qh"], page_size=3)
        assert [dict(r.values) for r in projected.rows] == [{"qh": r["qh"]} for r in served[:3]]
        for filters, items, where in (
            ([("bz__exact", "x")], [], "filter 'bz__exact': 'bz' is not a published item"),
            ([], ["bh"], "items: 'bh' not published items of"),
        ):
            outside = await refused(query(node, portal, a, *filters, key=key, items=items))
            assert outside.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert where in (outside.details() or "") and "csrq, qh" in (outside.details() or "")

        # --- 普遍开放 ignores a key: the whole file, the portal's own recipient --------------
        chunks = await download(node, portal, u, "csv", "ip:203.0.113.9", key=key)
        data = b"".join(c.data for c in chunks)
        assert data.startswith(b"bh,csrq,qh,bz\r\n")
        assert receipt_of(chunks, root, data).recipient == "ip:203.0.113.9"
        assert len((await query(node, agency, u, key=key)).rows) == 20

        # --- the audit log: the key's id and use, never the key; no log line holds it -------
        records = await node.db.fetch_all(
            "SELECT method, outcome, detail FROM audit_record WHERE method IN (:d, :q) "
            "ORDER BY sequence",
            {"d": DOWNLOAD, "q": QUERY},
        )
        keyed = [json.loads(r[2]) for r in records if str(r[1]) == "OK" and "key_id" in r[2]]
        assert len(keyed) == 3 + len(replies) + 1
        assert {(d["key_id"], d["use"]) for d in keyed} == {(key_id, "public_welfare")}
        downloads = [d for d in keyed if "sha256" in d]
        assert [d["recipient"] for d in downloads] == [holder] * 3
        plain = [json.loads(r[2]) for r in records if str(r[0]) == DOWNLOAD][-1]
        assert "key_id" not in plain and plain["recipient"] == "ip:203.0.113.9"
        everything = await node.db.fetch_all("SELECT * FROM audit_record", {})
        assert key_id in repr(everything) and key not in repr(everything)
        secret = key[21:]  # what follows gok_<key id>_
        assert secret not in repr(everything)
        logged = capfd.readouterr()
        assert secret not in logged.out and secret not in logged.err
    finally:
        await node.stop(grace=0)


async def test_keys_that_are_refused(tmp_path: Path, db_url: str) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        portal = setup.portal()
        await publish(node, setup, AUTHORIZED, 30)
        await publish(node, setup, OTHER, 30)
        a, other = AUTHORIZED.resource_code, OTHER.resource_code
        key_id, key = await approved_key(setup, node, a)
        revoked_id, revoked = await approved_key(setup, node, a)
        expired_id, expired = await approved_key(setup, node, a)
        late_id, late = await approved_key(setup, node, a)
        authority = Identity(PROVINCE, TD, Role.AUTHORITY)
        _, keys, _ = domain(setup, node.db)
        await keys.revoke(authority, revoked_id, "超出授权用途")
        now = dt.datetime.now(dt.UTC)
        await change_key(node, expired_id, not_after=now - dt.timedelta(minutes=1))
        # Issued 200 days ago: period 1's report was due at 90 days, suspended from 120.
        await change_key(node, late_id, issued_at=now - dt.timedelta(days=200))
        unknown = f"gok_{'0' * 16}_{'A' * 43}"
        forged = f"gok_{key_id}_{'A' * 43}"  # a real id, a wrong secret

        cases = [
            ("", "presented in the request metadata govnode-open-key", "第三十二条、第三十三条"),
            (unknown, "the 授权开放 key is unknown", "第三十三条"),
            (forged, "the 授权开放 key is unknown", "第三十三条"),
            (revoked, f"key gok_{revoked_id}_… was revoked", "超出授权用途"),
            (expired, f"key gok_{expired_id}_… expired at", "第三十三条"),
            (late, f"key gok_{late_id}_… is suspended: the use report for period 1", "第三十五条"),
        ]
        for presented, expected, article in cases:
            for call in (
                download(node, portal, a, "csv", "ip:203.0.113.9", key=presented),
                query(node, portal, a, key=presented),
            ):
                denied = await refused(call)
                details = denied.details() or ""
                assert denied.code() is grpc.StatusCode.PERMISSION_DENIED, details
                assert expected in details and article in details, details
                assert not presented or presented[21:] not in details
        for call in (
            download(node, portal, other, "csv", key=key),
            query(node, portal, other, key=key),
        ):
            foreign = await refused(call)
            assert foreign.code() is grpc.StatusCode.PERMISSION_DENIED
            assert f"key gok_{key_id}_… authorizes resource {a}, not '{other}'" in (
                foreign.details() or ""
            )
            assert "第三十三条" in (foreign.details() or "")

        # A key that cannot be one: INVALID_ARGUMENT, never repeating it.
        for bad in ("x" * 101, f"{key[:-1]}+", "gok 1", f"{key},{key}"):
            for call in (
                download(node, portal, a, "csv", key=bad),
                query(node, portal, a, key=bad),
            ):
                malformed = await refused(call)
                details = malformed.details() or ""
                assert malformed.code() is grpc.StatusCode.INVALID_ARGUMENT, details
                assert "govnode-open-key" in details and bad not in details
                assert key[21:] not in details
        # With a key the receipt names its holder: a portal may not name someone else.
        mismatch = await refused(download(node, portal, a, "csv", "ip:203.0.113.9", key=key))
        assert mismatch.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"key:{key_id}" in (mismatch.details() or "")

        # Filing the overdue report lifts the suspension.
        await keys.file_report(authority, "第一期开发利用情况", key=late)
        assert len((await query(node, portal, a, key=late)).rows) == 20

        records = await node.db.fetch_all("SELECT * FROM audit_record", {})
        for secret in (key, revoked, expired, late, unknown, forged):
            assert secret not in repr(records) and secret[21:] not in repr(records)
    finally:
        await node.stop(grace=0)
