"""授权开放 through the portal (第三十二至三十五条): an eligible entity applies with the JSON API,
the node's authority approves it narrowed to some items, and the key's holder downloads and
queries only those items through the portal with the key in a header, files its use report
with the API and with the form, and is refused once the key is revoked."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from pathlib import Path

from govnode.v1 import common_pb2, opendata_pb2, opendata_pb2_grpc
from playwright.async_api import Page, expect

from node.codes import make_credit_code
from node.opendata import check_receipt
from node.pki import load_certs
from tests.opendata.test_download_api import AUTHORIZED, TD, publish
from tests.support.nodes import channel, make_province, start
from tests.support.portal import ROOMY, client, portal_config, run_portal, with_budget

UNIVERSITY = make_credit_code("12350000488001234")


async def test_an_authorized_key_holder_downloads_reports_and_is_revoked_through_the_portal(
    page: Page, tmp_path: Path, db_url: str
) -> None:
    setup = with_budget(make_province(tmp_path / "province", db_url), **ROOMY)
    node = await start(setup)
    try:
        await publish(node, setup, AUTHORIZED, 30)
        code = AUTHORIZED.resource_code
        root = load_certs(setup.config.path(setup.config.tls.root))[0]
        config = portal_config(setup, node, tmp_path / "portal")
        async with run_portal(config) as portal, client() as web:
            api = f"{portal.url}/api/v1"
            application = {
                "resource_code": code,
                "entity_type": "university",
                "entity_code": UNIVERSITY,
                "entity_name": "福建某大学",
                "use": "research",
                "purpose": "人口结构研究",
                "contact": "数据中心 0591-12345678",
                "request_id": "apply-1",
            }
            async with web.post(f"{api}/applications", json=application) as response:
                filed = await response.json()
                assert response.status == 201, filed
            assert filed["status"] == "pending" and filed["entity_code"] == UNIVERSITY
            async with web.post(f"{api}/applications", json=application) as response:
                assert (await response.json())["id"] == filed["id"]  # a retry: the same one
            async with web.post(
                f"{api}/applications", json=application | {"entity_code": "123", "request_id": "x"}
            ) as response:
                refusal = await response.json()
                assert response.status in (400, 403) and "第三十二条" in refusal["error"]["message"]

            # the authority approves it for two of the published items
            async with channel(node, setup.authority()) as ch:
                reviewed = await opendata_pb2_grpc.OpenDataServiceStub(ch).ReviewOpenApplication(
                    opendata_pb2.ReviewOpenApplicationRequest(
                        id=filed["id"],
                        decision=common_pb2.REVIEW_DECISION_APPROVE,
                        items=["csrq", "qh"],
                        request_id="review-1",
                    )
                )
            key, key_id = reviewed.key, reviewed.application.key_id
            status = f"{api}/applications/{filed['id']}"
            async with web.get(status) as response:
                shown = await response.json()
                assert shown["status"] == "approved" and shown["items"] == ["csrq", "qh"]
                assert key not in await response.text()  # a key is shown once, not here

            # the key's holder downloads only the approved items; the receipt names the key
            with_key = {"X-API-Key": key}
            async with web.get(f"{api}/datasets/{code}/data.csv", headers=with_key) as response:
                assert response.status == 200
                data = await response.read()
                header = response.headers["Govnode-Receipt"]
            table = list(csv.reader(io.StringIO(data.decode(), newline="")))
            assert table[0] == ["csrq", "qh"] and len(table) == 31
            receipt_bytes = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
            receipt = check_receipt(receipt_bytes, root, TD, file_bytes=data)
            assert receipt.recipient == f"key:{key_id}"
            bearer = {"Authorization": f"Bearer {key}"}
            async with web.get(f"{api}/datasets/{code}/rows?page_size=3", headers=bearer) as r:
                rows = (await r.json())["rows"]
                assert r.status == 200 and len(rows) == 3
                assert all(set(row["values"]) == {"csrq", "qh"} for row in rows)
            async with web.get(f"{api}/datasets/{code}/rows?bz__isnull=", headers=with_key) as r:
                assert r.status == 400  # an item the approval left out cannot be filtered on
            async with web.get(
                f"{api}/datasets/{code}/data.csv",
                headers={"X-API-Key": key, "Authorization": "Bearer gok_other_key"},
            ) as r:
                assert r.status == 400  # two different keys: refused, neither used

            # the use report (第三十五条), with the form and with the API
            await page.goto(f"{portal.url}/use-reports")
            await page.fill("input[name=key]", key)
            await page.fill("textarea[name=text]", "第一期：完成人口结构分析报告一份。")
            await page.click("#report-form button")
            await expect(page.locator("#filed")).to_contain_text("已报送：第 1 期")
            await page.goto(f"{portal.url}/use-reports")
            await page.fill("input[name=key]", "gok_unknown_key")
            await page.fill("textarea[name=text]", "报告")
            await page.click("#report-form button")
            await expect(page.locator("#error")).to_contain_text("未能报送")
            report = {"text": "第一期（更正）", "period": 1, "request_id": "report-1"}
            async with web.post(f"{api}/use-reports", json=report) as response:
                assert response.status == 401  # no key, no report
            unknown = {"X-API-Key": "gok_unknown_key"}
            async with web.post(f"{api}/use-reports", json=report, headers=unknown) as response:
                assert response.status in (401, 403)
            later = {"text": "第二期", "period": 2, "request_id": "report-2"}
            async with web.post(f"{api}/use-reports", json=later, headers=with_key) as response:
                body = await response.json()
                assert response.status == 409 and "has not begun" in body["error"]["message"]

            # revoked: every later use is refused, naming why
            async with channel(node, setup.authority()) as ch:
                await opendata_pb2_grpc.OpenDataServiceStub(ch).RevokeOpenKey(
                    opendata_pb2.RevokeOpenKeyRequest(
                        key_id=key_id, reason="超出批准用途", request_id="revoke-1"
                    )
                )
            async with web.get(f"{api}/datasets/{code}/data.csv", headers=with_key) as response:
                body = await response.json()
                assert response.status == 403 and "revoked" in body["error"]["message"]
            assert hashlib.sha256(data).hexdigest() == receipt.sha256
        assert b"portal_request_failed" not in portal.stderr, portal.stderr.decode()[-2000:]
    finally:
        await node.stop(grace=0)
