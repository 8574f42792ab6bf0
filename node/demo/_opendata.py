"""Steps [18] and [19] of the demo: open data (第二十九至三十五条). The province's data
management authority publishes 法人单位基础信息 (普遍开放): a de-identified, checked version; the
public portal, a process of its own, serves it over HTTPS to anyone (no client certificate):
the CSV with its source and acquisition date, and the download's receipt is checked offline
with the root certificate alone. Then 授权开放: a university applies through the portal's
JSON API, is refused for commercial use, approved for research, and downloads with its key."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from govnode.v1 import (
    catalog_pb2,
    common_pb2,
    opendata_pb2,
    opendata_pb2_grpc,
    sharing_pb2,
)

from gateway.channel import secure_channel
from node.app import RunningNode
from node.catalog import (
    Classification,
    DataItem,
    DataType,
    Generalization,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
    ShareMethod,
)
from node.codes import make_credit_code
from node.config import NodeConfig
from node.demo._portal import DemoPortal
from node.demo._sharing import submit_batch
from node.opendata import ReceiptError, check_receipt
from node.pki import load_certs
from node.servicers.convert import entry_to_proto
from node.times import CST

if TYPE_CHECKING:
    from node.demo._main import Demo

RECIPIENT = "ip:127.0.0.1"


async def show_open_data(
    demo: Demo, node: RunningNode, config: NodeConfig, companies: ResourceEntry, portal: DemoPortal
) -> None:
    """Step [18]: published by the authority, downloaded by the public through the portal."""
    say = demo.say
    code = companies.resource_code
    say(f"[18] Open data (第二十九至三十五条): the authority publishes {companies.name} (普遍开放)")
    async with secure_channel(node.address, demo.authority, timeout=30) as ch:
        reply = await opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(
            opendata_pb2.PublishOpenResourceRequest(resource_code=code)
        )
    report = reply.report
    say(
        f"  ✓ version {report.version}: {report.rows_published} rows published, "
        f"{report.rows_suppressed} left out; no direct identifier in clear"
    )
    for item in companies.items:
        say(f"      {item.name} {item.title}: {report.treatments.get(item.name, '?')}")
    say(
        f"  ✓ the public portal runs as a process of its own (govnode portal serve) at "
        f"{portal.url}; it calls the node over mutual TLS as {portal.identity}"
    )
    async with portal.session() as web:
        async with web.get(f"{portal.url}/api/v1/datasets", params={"q": "法人"}) as response:
            listed = (await response.json())["datasets"]
        say(
            f"  ✓ GET /api/v1/datasets?q=法人 (HTTPS, no client certificate): "
            f"{', '.join(d['name'] for d in listed)}"
        )
        async with web.get(f"{portal.url}/api/v1/datasets/{code}/data.csv") as response:
            response.raise_for_status()
            data = await response.read()
            headers = response.headers
    receipt_bytes = _receipt_header(headers["Govnode-Receipt"])
    version = headers["Govnode-Version"]
    out = demo.base / "downloads" / f"{code}-v{version}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    (out.parent / f"{out.name}.receipt.json").write_bytes(receipt_bytes)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    say(
        f"  ✓ the public downloads it: GET /api/v1/datasets/{code}/data.csv → "
        f"{len(rows) - 1} rows, {len(data)} bytes → {out}"
    )
    say(
        f"      header {','.join(rows[0])}; first row {','.join(rows[1]) if len(rows) > 1 else '-'}"
    )
    say(f"      Link: {headers['Link'].split(',')[0]}")
    say(f"      {unquote(headers['Govnode-Source'])}")
    acquired = dt.datetime.fromisoformat(headers["Govnode-Acquired-At"]).astimezone(CST)
    say(f"      获取日期 {acquired:%Y-%m-%d %H:%M:%S} CST")
    root = load_certs(config.path(config.tls.root))[0]
    try:
        receipt = check_receipt(receipt_bytes, root, config.node.trust_domain, file_bytes=data)
    except ReceiptError as exc:
        say(f"  ✗ the download's receipt did not verify: {exc}")
        return
    say(
        f"  ✓ receipt (header Govnode-Receipt) checked offline with the root certificate alone "
        f"(govnode opendata check-receipt): {receipt.dataset} version {receipt.version}, sha256 "
        f"{receipt.sha256[:16]}…, obtained {receipt.obtained_at.astimezone(CST):%Y-%m-%d %H:%M} "
        f"CST by {receipt.recipient}"
    )


def _receipt_header(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


UNIVERSITY = make_credit_code("12350000488001234")  # a 事业单位 (GB 32100: 1 机构编制, 2 事业单位)
CIVIL_AFFAIRS = "11350000003591003A"  # 福建省民政厅, an example agency


def _allowance_entry(template: ResourceEntry) -> ResourceEntry:
    """高龄津贴发放信息 (授权开放): what each item becomes in the open data, with birth year and
    district as the quasi-identifiers."""

    def item(name: str, title: str, data_type: DataType, **fields: Any) -> DataItem:
        return DataItem(name=name, title=title, data_type=data_type, sensitivity_level=2, **fields)

    return template.model_copy(
        update={
            "resource_code": "350000-2-000005",
            "name": "高龄津贴发放信息",
            "provider_code": CIVIL_AFFAIRS,
            "provider_name": "福建省民政厅",
            "classification": Classification.THEMATIC,
            "industry_category": "民政",
            "summary": "全省高龄津贴的发放对象和金额，供研究使用。",
            "open_type": OpenType.AUTHORIZED,
            "open_conditions": "高校、科研院所用于科研和教学",
            "share_methods": (ShareMethod.QUERY,),
            "items": (
                item(
                    "bh",
                    "发放编号",
                    DataType.STRING,
                    key=True,
                    open=OpenTreatment(kind=OpenTreatmentKind.PSEUDONYMIZE),
                ),
                item(
                    "csrq",
                    "出生日期",
                    DataType.DATE,
                    required=True,
                    open=OpenTreatment(
                        kind=OpenTreatmentKind.GENERALIZE, generalize=Generalization.YEAR
                    ),
                    quasi_identifier=True,
                ),
                item(
                    "qh",
                    "户籍地区划",
                    DataType.STRING,
                    required=True,
                    open=OpenTreatment(
                        kind=OpenTreatmentKind.GENERALIZE,
                        generalize=Generalization.PREFIX,
                        prefix_length=4,
                    ),
                    quasi_identifier=True,
                ),
                item(
                    "ffje",
                    "发放金额",
                    DataType.DECIMAL,
                    required=True,
                    open=OpenTreatment(
                        kind=OpenTreatmentKind.GENERALIZE,
                        generalize=Generalization.RANGE,
                        range_width=100,
                    ),
                ),
            ),
        }
    )


def _allowances() -> list[dict[str, str]]:
    districts = ("350102", "350203")  # 福州鼓楼, 厦门思明
    return [
        {
            "bh": f"GL{i:05d}",
            "csrq": f"{1930 + i % 3}-0{1 + i % 9}-1{i % 10}",
            "qh": districts[i % 2],
            "ffje": str(100 + 50 * (i % 4)),
        }
        for i in range(60)
    ]


async def show_authorized_open_data(
    demo: Demo, node: RunningNode, config: NodeConfig, template: ResourceEntry, portal: DemoPortal
) -> None:
    """Step [19]: a university applies for 授权开放 data; refused for commercial use, approved
    for research with fewer items; its key downloads only those items."""
    say = demo.say
    entry = _allowance_entry(template)
    code = entry.resource_code
    say(f"[19] 授权开放 (第三十二至三十五条): a university applies for {entry.name}")
    await demo.catalog_call(
        CIVIL_AFFAIRS,
        node,
        lambda stub: stub.RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        ),
    )
    batch = sharing_pb2.SubmitBatch(
        resource_code=code,
        batch_id="demo-allowances-1",
        records=[common_pb2.Record(values=r) for r in _allowances()],
    )
    ack = await submit_batch(demo, node, CIVIL_AFFAIRS, batch)
    async with secure_channel(node.address, demo.authority, timeout=30) as ch:
        published = await opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(
            opendata_pb2.PublishOpenResourceRequest(resource_code=code)
        )
    report = published.report
    say(
        f"  ✓ 福建省民政厅 registered it and submitted {ack.accepted} records; published as "
        f"version {report.version}: k = {report.k_reached} over "
        f"{', '.join(report.quasi_identifiers)}"
    )

    def application(use: str, request_id: str) -> dict[str, str]:
        return {
            "resource_code": code,
            "entity_type": "university",
            "entity_code": UNIVERSITY,
            "entity_name": "福建示范大学",
            "use": use,
            "purpose": "老龄化与社会保障研究",
            "request_id": request_id,
            "contact": "research-office@example.edu.cn",
        }

    async with portal.session() as web:
        applying = f"{portal.url}/api/v1/applications"
        async with web.post(applying, json=application("commercial", "a1")) as response:
            refusal = (await response.json())["error"]
            say(
                f"  ✗ for commercial use: {response.status} {refusal['code']}: {refusal['message']}"
            )
        async with web.post(applying, json=application("research", "a2")) as response:
            response.raise_for_status()
            app_id = (await response.json())["id"]
    say(f"  ✓ for research: application {app_id} is pending (POST /api/v1/applications)")
    async with secure_channel(node.address, demo.authority, timeout=30) as ch:
        reviewed = await opendata_pb2_grpc.OpenDataServiceStub(ch).ReviewOpenApplication(
            opendata_pb2.ReviewOpenApplicationRequest(
                id=app_id,
                decision=common_pb2.REVIEW_DECISION_APPROVE,
                comment="同意，限科研使用",
                items=["csrq", "ffje"],
                request_id="r1",
            )
        )
    key = reviewed.key
    key_id = reviewed.application.key_id
    say(
        f"  ✓ the authority approves it narrowed to csrq, ffje; the key (key id {key_id}) is "
        "shown once, and 福建省民政厅 is told (第三十三条)"
    )
    async with (
        portal.session(**{"X-API-Key": key}) as web,
        web.get(f"{portal.url}/api/v1/datasets/{code}/data.csv") as response,
    ):
        response.raise_for_status()
        data = await response.read()
        receipt_bytes = _receipt_header(response.headers["Govnode-Receipt"])
    header = data.decode("utf-8").splitlines()[0]
    root = load_certs(config.path(config.tls.root))[0]
    try:
        receipt = check_receipt(receipt_bytes, root, config.node.trust_domain, file_bytes=data)
    except ReceiptError as exc:
        say(f"  ✗ the keyed download's receipt did not verify: {exc}")
        return
    say(
        f"  ✓ with its key (header X-API-Key) the portal serves only the approved items "
        f"({header}), receipt for {receipt.recipient} checked offline"
    )
