"""The sharing-governance part of ``govnode demo`` (第二十五条, 第三十七条): a 厦门 agency
applies, through 厦门, for a 有条件共享 resource of 福州; 福州's data management authority
approves it narrowed; the agency's routed Query returns only the granted items, masked; a use
outside the grant is refused (越权使用); the authority revokes the grant and the next call is
refused; the provider's change of a record applies only once the authority approves it
(第四十一条)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.catalog import ResourceEntry, ShareType
from node.codes import make_credit_code
from node.pki import issue_authority
from node.servicers.convert import entry_to_proto

if TYPE_CHECKING:
    from node.demo._federation import City
    from node.demo._main import Demo

CODE = "350100-1-000003"
APPLIED = ["tyshxydm", "dwmc", "fddbr", "djzt"]
GRANTED = ["tyshxydm", "dwmc", "fddbr"]


async def show_governance(
    demo: Demo, fuzhou: City, xiamen: City, template: ResourceEntry, base: Path
) -> None:
    say = demo.say
    say(
        "[14] Sharing governance (第二十五条): a 厦门 agency applies for a 福州 有条件共享 resource"
    )
    entry = template.model_copy(
        update={
            "resource_code": CODE,
            "name": "福州市法人单位登记详情",
            "provider_code": fuzhou.agency_code,
            "provider_name": "福州市市场监督管理局",
            "share_type": ShareType.CONDITIONAL,
            "share_conditions": "仅用于行政审批中的主体资格核验",
            "items": tuple(
                i.model_copy(update={"authoritative_source": False}) for i in template.items
            ),
        }
    )
    async with secure_channel(fuzhou.node.address, fuzhou.agency, timeout=10) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )
        acme = make_credit_code("91350100000000003")

        async def batch() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            yield sharing_pb2.SubmitBatch(
                resource_code=CODE,
                batch_id="demo-fuzhou-governance",
                records=[
                    common_pb2.Record(
                        values={
                            "tyshxydm": acme,
                            "dwmc": "福州某某软件有限公司",
                            "fddbr": "陈十一",
                            "djzt": "存续",
                        }
                    )
                ],
            )

        async for _ in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batch()):
            pass
    await _wait_known(xiamen, CODE)

    not_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=90)
    request = access_pb2.ApplyRequest(
        resource_code=CODE,
        items=APPLIED,
        share_methods=[common_pb2.SHARE_METHOD_QUERY, common_pb2.SHARE_METHOD_VERIFY],
        purpose="企业设立登记审批中核验股东主体资格",
        legal_basis="《市场主体登记管理条例》第十条",
    )
    request.not_after.FromDatetime(not_after)
    applied = await _xiamen(xiamen, "Apply", request, access_pb2_grpc.AccessServiceStub)
    application = applied.application
    say(
        f"  ✓ 厦门市民政局 applied at 厦门; the application {application.id} lives at 福州 "
        f"(items {', '.join(APPLIED)}; Query and Verify)"
    )

    _, paths = issue_authority(fuzhou.config, out=base / "fuzhou-authority")
    authority = TlsFiles(paths["key"], paths["cert"], paths["ca"])
    fuzhou.authority = authority  # it approves 纠错's correction in step [22] too
    async with secure_channel(fuzhou.node.address, fuzhou.agency, timeout=10) as ch:
        notes = await access_pb2_grpc.AccessServiceStub(ch).ListNotifications(
            access_pb2.ListNotificationsRequest()
        )
    received = [n for n in notes.notifications if n.application_id == application.id]
    say(f"  ✓ the provider was notified: {received[0].message if received else '(none)'}")

    async with secure_channel(fuzhou.node.address, authority, timeout=10) as ch:
        stub = access_pb2_grpc.AccessServiceStub(ch)
        reviewed = await stub.ReviewApplication(
            access_pb2.ReviewApplicationRequest(
                application_id=application.id,
                decision=common_pb2.REVIEW_DECISION_APPROVE,
                items=GRANTED,
                share_methods=[common_pb2.SHARE_METHOD_QUERY],
                comment="同意; 登记状态不在审批所需范围内",
            )
        )
    grant = reviewed.grant
    say(
        f"  ✓ 福州's data management authority approved it narrowed: grant {grant.id}, items "
        f"{', '.join(grant.items)}, Query only, until {not_after:%Y-%m-%d}"
    )

    query = sharing_pb2.QueryRequest(resource_code=CODE, key={"tyshxydm": acme})
    page = await _xiamen(xiamen, "Query", query, sharing_pb2_grpc.SharingServiceStub)
    row = page.rows[0]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(row.record.values.items()))
    say(
        f"  ✓ 厦门's routed Query returns only the granted items: {shown} "
        f"(masked: {', '.join(row.masked_items) or 'none'})"
    )

    outside = sharing_pb2.QueryRequest(resource_code=CODE, key={"tyshxydm": acme}, items=["djzt"])
    say(f"  ✓ asking for djzt: {await _refusal(xiamen, 'Query', outside)}")

    async with secure_channel(fuzhou.node.address, authority, timeout=10) as ch:
        await access_pb2_grpc.AccessServiceStub(ch).RevokeGrant(
            access_pb2.RevokeGrantRequest(grant_id=grant.id, reason="审批事项已办结")
        )
    say(
        f"  ✓ the authority revoked {grant.id}; the next Query: "
        f"{await _refusal(xiamen, 'Query', query)}"
    )
    await _change_request(demo, fuzhou, authority, acme)
    say("")


async def _change_request(demo: Demo, fuzhou: City, authority: TlsFiles, acme: str) -> None:
    """第四十一条: a provider's batch that changes a stored record is held for the authority."""
    new = {"tyshxydm": acme, "dwmc": "福州某某软件有限公司", "fddbr": "林十二", "djzt": "存续"}
    query = sharing_pb2.QueryRequest(resource_code=CODE, key={"tyshxydm": acme})

    async def batch() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=CODE, batch_id="fz-daily-2", records=[common_pb2.Record(values=new)]
        )

    async with secure_channel(fuzhou.node.address, fuzhou.agency, timeout=10) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        [ack] = [a async for a in stub.Submit(batch())]
        before = await stub.Query(query)
    held = ack.held_records[0].change_request_id
    demo.say(
        f"  ✓ 第四十一条: 福州市市场监督管理局's batch {ack.batch_id} changes a stored record "
        f"(法定代表人 → 林十二): {ack.accepted} applied, {ack.held} held as change request "
        f"{held}; the record still reads {before.rows[0].record.values['fddbr']}"
    )
    async with secure_channel(fuzhou.node.address, authority, timeout=10) as ch:
        reviewed = await access_pb2_grpc.AccessServiceStub(ch).ReviewChangeRequest(
            access_pb2.ReviewChangeRequestRequest(
                id=held, decision=common_pb2.REVIEW_DECISION_APPROVE, comment="同意，已核变更登记"
            )
        )
    async with secure_channel(fuzhou.node.address, fuzhou.agency, timeout=10) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        after = await stub.Query(query)
        versions = await stub.GetRecordHistory(
            sharing_pb2.GetRecordHistoryRequest(resource_code=CODE, key={"tyshxydm": acme})
        )
    done = reviewed.change_request
    demo.say(
        f"  ✓ 福州's authority approved it: the record is now version {done.applied_version} "
        f"({after.rows[0].record.values['fddbr']}); every version stays readable: "
        + " → ".join(f"v{v.version} {v.record.values['fddbr']}" for v in versions.versions)
    )


async def _xiamen(city: City, method: str, request: Any, stub_cls: Any) -> Any:
    async with secure_channel(city.node.address, city.agency, timeout=10) as ch:
        return await getattr(stub_cls(ch), method)(request)


async def _refusal(city: City, method: str, request: Any) -> str:
    try:
        await _xiamen(city, method, request, sharing_pb2_grpc.SharingServiceStub)
    except grpc.aio.AioRpcError as exc:
        details = exc.details() or ""
        return f"{exc.code().name}: {details[:150]}{'…' if len(details) > 150 else ''}"
    return "answered (unexpected)"


async def _wait_known(city: City, code: str) -> None:
    """Until 厦门 knows the entry (catalog exchange, bounded): routing needs its region."""
    deadline = time.monotonic() + 10
    async with secure_channel(city.node.address, city.agency, timeout=5) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        while time.monotonic() < deadline:
            try:
                await stub.GetResource(catalog_pb2.GetResourceRequest(resource_code=code))
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{code} did not reach 厦门 within 10 s")
