"""Step [18] of the demo: open data (第二十九至三十五条). The province's data management authority
publishes 法人单位基础信息 (普遍开放): a de-identified, checked version; the open data portal's
certificate downloads it as CSV for a member of the public, with its source and acquisition
date, and the download's receipt is checked offline with the root certificate alone."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import TYPE_CHECKING

from govnode.v1 import opendata_pb2, opendata_pb2_grpc

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import ResourceEntry
from node.config import NodeConfig
from node.opendata import ReceiptError, check_receipt
from node.pki import issue_portal, load_certs
from node.times import CST

if TYPE_CHECKING:
    from node.demo._main import Demo

RECIPIENT = "ip:127.0.0.1"


async def show_open_data(
    demo: Demo, node: RunningNode, config: NodeConfig, companies: ResourceEntry
) -> None:
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

    _, paths = issue_portal(config, name="demo", out=demo.base / "portal")
    portal = TlsFiles(paths["key"], paths["cert"], paths["ca"])
    data = b""
    chunks: list[opendata_pb2.DownloadChunk] = []
    async with secure_channel(node.address, portal, timeout=30) as ch:
        stream = opendata_pb2_grpc.OpenDataServiceStub(ch).Download(
            opendata_pb2.DownloadRequest(resource_code=code, format="csv"),
            metadata=(("govnode-recipient", RECIPIENT),),
        )
        async for chunk in stream:
            chunks.append(chunk)
            data += chunk.data
    last = chunks[-1]
    out = demo.base / "downloads" / f"{code}-v{last.version}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    (out.parent / f"{out.name}.receipt.json").write_bytes(last.receipt)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    say(
        f"  ✓ the open data portal's certificate downloads it as CSV for a member of the public "
        f"({RECIPIENT}): {len(rows) - 1} rows, {len(data)} bytes → {out}"
    )
    say(
        f"      header {','.join(rows[0])}; first row {','.join(rows[1]) if len(rows) > 1 else '-'}"
    )
    say(f"      {last.source}")
    acquired = last.acquired_at.ToDatetime(dt.UTC).astimezone(CST)
    say(f"      获取日期 {acquired:%Y-%m-%d %H:%M:%S} CST")
    root = load_certs(config.path(config.tls.root))[0]
    try:
        receipt = check_receipt(last.receipt, root, config.node.trust_domain, file_bytes=data)
    except ReceiptError as exc:
        say(f"  ✗ the download's receipt did not verify: {exc}")
        return
    say(
        f"  ✓ receipt checked offline with the root certificate alone (govnode opendata "
        f"check-receipt): {receipt.dataset} version {receipt.version}, sha256 "
        f"{receipt.sha256[:16]}…, obtained {receipt.obtained_at.astimezone(CST):%Y-%m-%d %H:%M} "
        f"CST by {receipt.recipient}"
    )
