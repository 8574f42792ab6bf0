"""The federation part of ``govnode demo`` (第十九条): 福州 and 厦门 join the province by
invitation, catalogs converge, a 厦门 agency uses a 福州 resource through the province, a
node that was away catches up, and 福州 passes the conformance suite and is approved. The
cities keep running until the context ends, so later steps (quality and supervision, [20]-[23])
use them too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govnode.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    federation_pb2,
    federation_pb2_grpc,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.channel import secure_channel
from gateway.identity import Role
from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files, start_node
from node.audit import AuditLog
from node.catalog import ResourceEntry
from node.clients import join_province
from node.codes import make_credit_code
from node.config import NodeConfig, load_config
from node.demo._conformance import show_conformance
from node.demo._evidence import show_audit_evidence
from node.demo._governance import show_governance
from node.federation import create_invitation
from node.pki import fingerprint, issue_client, load_certs
from node.ports import free_port
from node.servicers.convert import entry_to_proto
from node.terminal import status_lines

if TYPE_CHECKING:
    from node.demo._main import Demo

CITIES = (
    ("350100", "福州市", "11350100003592001G", "福州市市场监督管理局"),
    ("350200", "厦门市", "11350200003593001W", "厦门市民政局"),
)
CONVERGE_WITHIN_S = 15.0
DEMO_HEARTBEAT_S = 1.0  # so that revocations and approvals reach the cities quickly
DEMO_CHECKPOINT_S = 1.0


def _heartbeat_every(config: NodeConfig, seconds: float) -> NodeConfig:
    """The demo's quick pace: heartbeats every ``seconds``, and an audit checkpoint every
    second, so step [17] need not wait the default minute for 福州's cosigned checkpoint."""
    federation = config.federation.model_copy(update={"heartbeat_seconds": seconds})
    audit = config.audit.model_copy(update={"checkpoint_seconds": DEMO_CHECKPOINT_S})
    return config.model_copy(update={"federation": federation, "audit": audit})


@dataclass
class City:
    region: str
    name: str
    config: NodeConfig
    node: RunningNode
    agency: TlsFiles
    agency_code: str
    agency_name: str
    #: The city's data management authority (数据管理机构), once step [14] issued it.
    authority: TlsFiles | None = None


async def _digests(nodes: Sequence[tuple[RunningNode, TlsFiles]]) -> list[tuple[str, int]]:
    out = []
    for node, files in nodes:
        async with secure_channel(node.address, files, timeout=5) as ch:
            d = await catalog_pb2_grpc.CatalogServiceStub(ch).GetCatalogDigest(
                catalog_pb2.GetCatalogDigestRequest()
            )
        out.append((d.digest, d.entries))
    return out


async def _converge(nodes: Sequence[tuple[RunningNode, TlsFiles]], entries: int) -> float:
    """Poll every node's catalog digest (bounded) until all agree; seconds it took."""
    began = time.monotonic()
    for _ in range(int(CONVERGE_WITHIN_S / 0.05)):
        seen = await _digests(nodes)
        if len(set(seen)) == 1 and seen[0][1] == entries:
            return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the catalogs did not converge within {CONVERGE_WITHIN_S} s: {seen}")


def _fuzhou_resource(template: ResourceEntry, code: str, n: int, agency: str) -> ResourceEntry:
    return template.model_copy(
        update={
            "resource_code": f"350100-1-{n:06d}",
            "name": f"福州市{template.name}" if n == 1 else f"福州市{template.name}（二）",
            "provider_code": code,
            "provider_name": agency,
            "items": tuple(
                i.model_copy(update={"authoritative_source": n == 1 and i.authoritative_source})
                for i in template.items
            ),
        }
    )


async def _register(city: City, entry: ResourceEntry) -> None:
    async with secure_channel(city.node.address, city.agency, timeout=5) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )


async def _submit(city: City, code: str, rows: list[dict[str, str]]) -> int:
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code,
            batch_id="demo-fuzhou-1",
            records=[common_pb2.Record(values=r) for r in rows],
        )

    async with secure_channel(city.node.address, city.agency, timeout=10) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
    return acks[0].accepted


@asynccontextmanager
async def running_federation(
    demo: Demo,
    province: RunningNode,
    province_config: NodeConfig,
    base: Path,
    template: ResourceEntry,
) -> AsyncIterator[tuple[City, City]]:
    """Steps [10] to [17]; then 福州 and 厦门, still serving, until the context ends."""
    say = demo.say
    join_address = province_config.federation.join_listen or ""
    root = load_certs(province_config.path(province_config.tls.root))[0]
    province_files = node_tls_files(province_config)
    say("[10] Federation (第十九条): 福州 and 厦门 join the province by invitation")
    cities: list[City] = []
    try:
        for region, name, code, agency_name in CITIES:
            invitation = await create_invitation(
                province.db,
                province_region="350000",
                region=region,
                created_by=str(province.identity),
            )
            joined = await asyncio.to_thread(
                join_province,
                province=join_address,
                invitation=invitation.token,
                root_fingerprint=fingerprint(root),
                region=region,
                name=name,
                base=base / region,
                listen=f"127.0.0.1:{free_port()}",
                hosts=["127.0.0.1", "localhost"],
                trust_domain="fujian.gov.cn",
            )
            config = _heartbeat_every(load_config(joined.config_path), DEMO_HEARTBEAT_S)
            node = await start_node(config)
            _, paths = issue_client(
                config,
                role=Role.AGENCY,
                subject=code,
                name=agency_name,
                out=base / "agencies" / code,
            )
            cities.append(
                City(
                    region,
                    name,
                    config,
                    node,
                    TlsFiles(paths["key"], paths["cert"], paths["ca"]),
                    code,
                    agency_name,
                )
            )
            say(
                f"  ✓ {name} ({region}) joined with a one-time invitation "
                f"({invitation.token[:9]}…); root pinned by fingerprint, only CSRs sent; "
                f"CA confined to {region}.fujian.gov.cn; serving on {node.address}"
            )
        fuzhou, xiamen = cities
        nodes = [(province, province_files), *((c.node, node_tls_files(c.config)) for c in cities)]
        say("")

        say("[11] Catalog exchange: a 福州 entry flows up to the province and down to 厦门")
        first = _fuzhou_resource(template, fuzhou.agency_code, 1, "福州市市场监督管理局")
        await _register(fuzhou, first)
        acme = make_credit_code("91350100000000001")
        accepted = await _submit(
            fuzhou,
            first.resource_code,
            [
                {
                    "tyshxydm": acme,
                    "dwmc": "福州某某信息技术有限公司",
                    "fddbr": "郑九",
                    "djzt": "存续",
                },
                {
                    "tyshxydm": make_credit_code("91350100000000002"),
                    "dwmc": "福州某某建设有限公司",
                    "fddbr": "吴十",
                    "djzt": "注销",
                },
            ],
        )
        entries = (await _digests([(fuzhou.node, fuzhou.agency)]))[0][1]
        took = await _converge(nodes, entries)
        digest = (await _digests([(province, province_files)]))[0][0]
        say(
            f"  ✓ 福州 registered {first.resource_code} {first.name} and submitted {accepted} "
            f"records; after {took * 1000:.0f} ms all three nodes report catalog digest "
            f"{digest[:12]}… over {entries} entries"
        )
        say("")

        say("[12] Routing: a 厦门 agency verifies and queries the 福州 resource through 厦门")
        reply = await _xiamen_call(
            xiamen,
            "Verify",
            sharing_pb2.VerifyRequest(
                resource_code=first.resource_code,
                key={"tyshxydm": acme},
                claimed={"dwmc": "福州某某信息技术有限公司"},
            ),
        )
        page = await _xiamen_call(
            xiamen,
            "Query",
            sharing_pb2.QueryRequest(
                resource_code=first.resource_code,
                key={"tyshxydm": acme},
            ),
        )
        v = page.rows[0].record.values
        say(
            f"  ✓ Verify: all_match={reply.all_match}; Query: {v['dwmc']} {v['fddbr']} "
            f"(masked: {', '.join(page.rows[0].masked_items)})"
        )
        say(f"  route of request {reply.request_id}, as each node's audit log recorded it:")
        for label, node in (("厦门市", xiamen.node), ("福建省", province), ("福州市", fuzhou.node)):
            [record] = await AuditLog(node.db).query(request_id=reply.request_id)
            via = f", forwarded by {record.origin_node}" if record.origin_node else ""
            say(
                f"      {label}: #{record.sequence} {record.outcome} {record.operation.term} "
                f"caller {record.caller}{via}"
            )
        say("")

        say("[13] A node that was away catches up: 厦门 stops, 福州 registers, 厦门 restarts")
        await xiamen.node.stop(grace=0)
        second = _fuzhou_resource(template, fuzhou.agency_code, 2, "福州市市场监督管理局")
        await _register(fuzhou, second)
        xiamen.node = await start_node(xiamen.config)
        nodes = [(province, province_files), *((c.node, node_tls_files(c.config)) for c in cities)]
        took = await _converge(nodes, entries + 1)
        say(
            f"  ✓ 厦门 restarted and caught up from its last applied version in "
            f"{took * 1000:.0f} ms: every node holds {entries + 1} entries, same digest"
        )
        say("")

        await show_governance(demo, fuzhou, xiamen, template, base)

        say("[15] govnode status at the province:")
        async with secure_channel(province.address, province_files, timeout=5) as ch:
            stub = federation_pb2_grpc.FederationServiceStub(ch)
            info = await stub.GetNodeInfo(federation_pb2.GetNodeInfoRequest())
            peers = await stub.ListPeers(federation_pb2.ListPeersRequest())
        for line in status_lines(info.node, list(peers.peers)):
            say("    " + line)
        say("")

        await show_conformance(demo, province, province_config, fuzhou.node, base)
        say("")

        await show_audit_evidence(demo, province, fuzhou, reply.request_id)
        yield fuzhou, xiamen
    finally:
        for city in cities:
            await city.node.stop(grace=0)


async def _xiamen_call(city: City, method: str, request: Any) -> Any:
    async with secure_channel(city.node.address, city.agency, timeout=10) as ch:
        return await getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(request)
