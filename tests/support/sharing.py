"""The example catalog on a province over mutual TLS: its resources (PEOPLE, COMPANIES,
PETITIONS), agencies with their certificates, registering entries and submitting batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, sharing_pb2, sharing_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import ResourceEntry
from node.demo import EXAMPLES_DIR, load_example_catalog
from node.servicers.convert import entry_to_proto
from tests.support.nodes import (
    ProvinceSetup,
    channel,
)

EXAMPLES = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml")

PEOPLE, COMPANIES, MARRIAGE, PETITIONS = EXAMPLES.resources

NAMES = {a.code: a.name for a in EXAMPLES.agencies}


def agency(setup: ProvinceSetup, code: str) -> TlsFiles:
    return setup.agency(code, NAMES.get(code, "测试单位"))


async def register(setup: ProvinceSetup, node: RunningNode, entry: ResourceEntry) -> None:
    async with channel(node, agency(setup, entry.provider_code)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )


def batch(
    code: str, batch_id: str, rows: Sequence[dict[str, str]], **kw: object
) -> sharing_pb2.SubmitBatch:
    return sharing_pb2.SubmitBatch(
        resource_code=code,
        batch_id=batch_id,
        records=[common_pb2.Record(values=r) for r in rows],
        **kw,  # type: ignore[arg-type]
    )


async def submit(
    node: RunningNode, files: TlsFiles, batches: Sequence[sharing_pb2.SubmitBatch]
) -> list[sharing_pb2.SubmitAck]:
    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for b in batches:
            yield b

    async with channel(node, files) as ch:
        return [ack async for ack in sharing_pb2_grpc.SharingServiceStub(ch).Submit(requests())]
