"""Work waiting at the data management authority's desks, made the way agencies and the portal
make it: over the real gRPC API with their own certificates. 有条件共享 applications (Apply),
a change held from a Submit batch (第四十一条), an error report on a received record (纠错),
and a 授权开放 application through the portal's certificate (ApplyOpenAccess)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from govnode.v1 import (
    access_pb2,
    common_pb2,
    opendata_pb2,
    opendata_pb2_grpc,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import OpenType
from tests.opendata.test_eligibility import DECLARED, ENTERPRISE
from tests.opendata.test_publish import ITEMS as OPEN_ITEMS
from tests.opendata.test_publish import person
from tests.quality.test_errors import report
from tests.support.access import (
    ACME,
    COND,
    OPEN,
    access,
    apply_request,
    register,
    sharing,
    verify,
)
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    entry_of,
)

AUTHORIZED = entry_of(PROVINCE, 7, items=OPEN_ITEMS, open_type=OpenType.AUTHORIZED)
#: The new name the provider submits for ACME: held as a change request.
RENAMED = "福州某某信息技术有限公司"


@dataclass
class Waiting:
    """The ids of what waits at each desk."""

    approve_application: str  # CIVIL_AFFAIRS applied for COND
    reject_application: str  # MARKET_REGULATION applied for COND
    change: str  # the provider's held change of ACME's name
    data_error: str  # CIVIL_AFFAIRS reported ACME's name on OPEN wrong
    open_application: str  # an enterprise applied for AUTHORIZED through the portal


async def submit_batch(
    node: RunningNode, files: TlsFiles, code: str, batch: str, rows: list[dict[str, str]]
) -> sharing_pb2.SubmitAck:
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code, batch_id=batch, records=[common_pb2.Record(values=r) for r in rows]
        )

    async with channel(node, files) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
    return acks[0]


async def make_work(setup: ProvinceSetup, node: RunningNode) -> Waiting:
    provider = setup.agency(PUBLIC_SECURITY)
    civil = setup.agency(CIVIL_AFFAIRS)
    market = setup.agency(MARKET_REGULATION)
    for entry in (COND, OPEN, AUTHORIZED):
        await register(node, provider, entry)
    for entry in (COND, OPEN):
        ack = await submit_batch(node, provider, entry.resource_code, "first", [ACME])
        assert ack.accepted == 1, ack
    people = [person(i, 1980 + i % 3) for i in range(60)]
    ack = await submit_batch(node, provider, AUTHORIZED.resource_code, "people", people)
    assert ack.accepted == len(people), ack

    applied = []
    for files in (civil, market):
        reply = await access(node, files, "Apply", apply_request())
        applied.append(reply.application.id)

    held = await submit_batch(
        node, provider, COND.resource_code, "rename", [ACME | {"qymc": RENAMED}]
    )
    assert held.held == 1, held

    # A consumer that received the record reports it wrong (纠错).
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, qymc=ACME["qymc"]))
    assert answer.all_match
    data_error = await report(node, civil)

    async with channel(node, setup.authority()) as ch:
        await opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(
            opendata_pb2.PublishOpenResourceRequest(resource_code=AUTHORIZED.resource_code)
        )
    async with channel(node, setup.portal()) as ch:
        made = await opendata_pb2_grpc.OpenDataServiceStub(ch).ApplyOpenAccess(
            opendata_pb2.ApplyOpenAccessRequest(
                resource_code=AUTHORIZED.resource_code,
                entity_type=opendata_pb2.APPLICANT_ENTITY_TYPE_DOMESTIC_ENTERPRISE,
                entity_code=ENTERPRISE,
                entity_name="福州数智科技有限公司",
                contact="林工 0591-87654321",
                use=opendata_pb2.OPEN_DATA_USE_PUBLIC_WELFARE,
                purpose="人口结构公益研究",
                domestic_control_declared=True,
                evidence_reference=str(DECLARED["evidence_reference"]),
            )
        )
    return Waiting(
        approve_application=applied[0],
        reject_application=applied[1],
        change=held.held_records[0].change_request_id,
        data_error=data_error.id,
        open_application=made.application.id,
    )


async def grants_of(node: RunningNode, files: TlsFiles) -> list[access_pb2.Grant]:
    reply = await access(node, files, "ListGrants", access_pb2.ListGrantsRequest())
    return list(reply.grants)
