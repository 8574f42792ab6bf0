"""``govnode demo``: a province node on loopback with fresh PKI and the example catalog.

Everything a reader sees happens for real: certificates are generated, the node serves mutual
TLS on 127.0.0.1, example agencies register their catalog entries over gRPC with their own
client certificates, and every refusal shown is the status a real caller would get.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from govnode.v1 import access_pb2, access_pb2_grpc, catalog_pb2, catalog_pb2_grpc, common_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.channel import secure_channel
from gateway.identity import Role
from gateway.tls import TlsFiles
from node.app import RunningNode, start_node
from node.catalog import ResourceEntry, ShareMethod, ShareType
from node.config import NodeConfig, load_config
from node.demo._examples import EXAMPLES_DIR, ExampleAgency, load_example_catalog
from node.demo._federation import running_federation
from node.demo._opendata import show_authorized_open_data, show_open_data
from node.demo._portal import public_portal
from node.demo._quality import show_quality_and_supervision
from node.demo._sharing import show_data_path
from node.pki import Revocations, issue_authority, issue_client, provision_province
from node.ports import free_port as free_port  # re-exported: tests and bench import it here
from node.servicers.convert import entry_to_proto

Say = Callable[[str], None]

SHARE_TYPE_ZH = {
    ShareType.UNCONDITIONAL: "无条件共享",
    ShareType.CONDITIONAL: "有条件共享",
    ShareType.NOT_SHARED: "暂不共享",
}
METHOD_ZH = {
    ShareMethod.VERIFY: "联机验证",
    ShareMethod.COMPARE: "比对验证",
    ShareMethod.QUERY: "检索查询",
    ShareMethod.EXCHANGE: "数据交换",
    ShareMethod.SUBSCRIBE: "主动推送",
}


class Demo:
    def __init__(self, base: Path, say: Say) -> None:
        self.base = base
        self.say = say
        self.bundles: dict[str, TlsFiles] = {}
        self.names: dict[str, str] = {}
        self._authority: TlsFiles | None = None

    def issue_authority(self, config: NodeConfig) -> Path:
        """Issue the node's authority certificate; returns the bundle's directory."""
        _, paths = issue_authority(config, out=self.base / "authority")
        self._authority = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        return self.base / "authority"

    @property
    def authority(self) -> TlsFiles:
        """The province's data management authority (数据管理机构), issued in step [1]."""
        assert self._authority is not None, "issued with the agencies"
        return self._authority

    def agency_files(self, code: str) -> TlsFiles:
        return self.bundles[code]

    async def catalog_call(
        self, code: str, node: RunningNode, call: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        async with secure_channel(node.address, self.agency_files(code), timeout=5) as channel:
            return await call(catalog_pb2_grpc.CatalogServiceStub(channel))

    async def expect_refusal(
        self, title: str, code: str, node: RunningNode, call: Callable[[Any], Awaitable[Any]]
    ) -> None:
        try:
            await self.catalog_call(code, node, call)
        except grpc.aio.AioRpcError as exc:
            self.say(f"  ✗ {title}")
            self.say(f"      → {exc.code().name}: {exc.details()}")
            return
        raise RuntimeError(f"demo expected a refusal for: {title}")


def _describe(entry: ResourceEntry) -> str:
    methods = "、".join(METHOD_ZH[m] for m in entry.share_methods) or "—"
    return f"{SHARE_TYPE_ZH[entry.share_type]}; methods: {methods}"


async def run_demo(base: Path, *, keep_running: bool, say: Say = print) -> None:
    port = free_port()
    say(f"govnode demo: a province node on 127.0.0.1:{port}, working directory {base}")
    say("")
    say("[1] PKI (ECDSA P-256): province root CA → 福建省 CA (name-constrained) → certificates")
    made = provision_province(
        base / "province",
        region="350000",
        name="福建省",
        listen=f"127.0.0.1:{port}",
        trust_domain="fujian.gov.cn",
        hosts=["127.0.0.1", "localhost"],
        # The province's join port, so the cities of step [10] can join online.
        join_listen=f"127.0.0.1:{free_port()}",
    )
    config = load_config(made.config_path)
    say(f"    node identity     {made.identity}")
    say(f"    root fingerprint  {made.root_fingerprint}")

    catalog = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml")
    demo = Demo(base, say)
    say(f"    agency certificates issued by the 福建省 CA ({len(catalog.agencies)}):")
    for agency in [*catalog.agencies, ExampleAgency("11350000003591005G", "福建省示例局")]:
        out = base / "agencies" / agency.code
        _, paths = issue_client(
            config, role=Role.AGENCY, subject=agency.code, name=agency.name, out=out
        )
        demo.bundles[agency.code] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        demo.names[agency.code] = agency.name
        say(f"      {agency.name:<12} {agency.code}  → {out}")
    say(f"    authority certificate (数据管理机构)  → {demo.issue_authority(config)}")
    say("")

    node = await start_node(config)
    try:
        await _show_node(demo, node)
        await _register_catalog(demo, node, catalog.resources)
        await _show_refusals(demo, node, catalog.resources)
        await _show_update_and_listing(demo, node, catalog.resources)
        say("")
        await show_data_path(demo, node, catalog.resources)
        say("")
        async with running_federation(demo, node, config, base, catalog.resources[1]) as (
            fuzhou,
            xiamen,
        ):
            say("")
            async with public_portal(demo, node, config) as portal:
                await show_open_data(demo, node, config, catalog.resources[1], portal)
                say("")
                await show_authorized_open_data(demo, node, config, catalog.resources[1], portal)
                say("")
                await show_quality_and_supervision(
                    demo, node, config, catalog.resources[0], fuzhou, xiamen
                )
                say("")
                if keep_running:
                    any_code = catalog.agencies[0].code
                    bundle = base / "agencies" / any_code
                    say(f"The node keeps running on {node.address}. Try it with any gRPC client:")
                    say(
                        f"  grpcurl -cacert {bundle}/ca.crt -cert {bundle}/client.crt "
                        f"-key {bundle}/client.key {node.address} list"
                    )
                    say(
                        f"The public portal serves {portal.url}/ (a self-signed certificate: "
                        f"{portal.server_cert}); open it in a browser."
                    )
                    say("Press Ctrl-C to stop.")
                    await asyncio.Event().wait()
        say(
            "Demo finished: the portal and the cities stopped, the node shut down gracefully "
            "(NOT_SERVING first)."
        )
    finally:
        await node.stop(grace=1.0)


async def _show_node(demo: Demo, node: RunningNode) -> None:
    code = next(iter(demo.bundles))
    async with secure_channel(node.address, demo.agency_files(code), timeout=5) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services: list[str] = []
        async for reply in stream:
            services = [s.name for s in reply.list_services_response.service]
    govnode = sorted(s for s in services if s.startswith("govnode.v1."))
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
    demo.say(f"[2] Node serving over mutual TLS: health {status}")
    demo.say(
        f"    reflection lists {len(govnode)} govnode.v1 services: "
        + ", ".join(s.removeprefix("govnode.v1.") for s in govnode)
    )
    demo.say("")


async def _register_catalog(demo: Demo, node: RunningNode, resources: list[ResourceEntry]) -> None:
    demo.say(
        "[3] Catalog registration (登记, 第十七、十八条): each agency registers its own entries"
    )
    for entry in resources:
        request = catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        async with secure_channel(
            node.address, demo.agency_files(entry.provider_code), timeout=5
        ) as channel:
            reply = await catalog_pb2_grpc.CatalogServiceStub(channel).RegisterResource(request)
        got = reply.entry
        demo.say(
            f"  ✓ {got.resource_code} {got.name} ({demo.names[entry.provider_code]}) "
            f"v{got.version}: {_describe(entry)}"
        )
    demo.say("")


async def _show_refusals(demo: Demo, node: RunningNode, resources: list[ResourceEntry]) -> None:
    demo.say("[4] Refusals: what a caller sees when a rule of the Measures is broken")
    by_code = {e.resource_code: e for e in resources}
    people, marriage, petitions = (
        by_code["350000-1-000001"],
        by_code["350000-3-000001"],
        by_code["350000-3-000002"],
    )
    # 一数一源 (第十三条): a second resource claiming to be the source of the citizen ID.
    items = tuple(
        i.model_copy(update={"authoritative_source": True}) if i.name == "gmsfhm" else i
        for i in marriage.items
    )
    duplicate = marriage.model_copy(update={"resource_code": "350000-3-000003", "items": items})
    await demo.expect_refusal(
        "一数一源 (第十三条): 民政厅 claims to be the source of 公民身份号码 (DE0001)",
        marriage.provider_code,
        node,
        lambda s: s.RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(duplicate))
        ),
    )
    no_basis = petitions.model_copy(update={"resource_code": "350000-3-000004", "legal_basis": ""})
    await demo.expect_refusal(
        "暂不共享 without a legal basis (第二十四条)",
        petitions.provider_code,
        node,
        lambda s: s.RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(no_basis))
        ),
    )
    await demo.expect_refusal(
        "民政厅 tries to change 公安厅's entry (only the provider may)",
        marriage.provider_code,
        node,
        lambda s: s.UpdateResource(
            catalog_pb2.UpdateResourceRequest(
                entry=entry_to_proto(people.model_copy(update={"summary": "篡改"})),
                reason="调整摘要",
            )
        ),
    )
    bad_code = entry_to_proto(people)
    bad_code.resource_code = "350000-1-000009"
    bad_code.provider_code = "113500000035910015"  # wrong GB 32100 check character (4)
    await demo.expect_refusal(
        "an entry whose agency code fails the GB 32100 check",
        people.provider_code,
        node,
        lambda s: s.RegisterResource(catalog_pb2.RegisterResourceRequest(entry=bad_code)),
    )
    revoked_code = "11350000003591005G"
    cert = demo.agency_files(revoked_code).chain.read_bytes()
    from cryptography import x509

    serial = format(x509.load_pem_x509_certificates(cert)[0].serial_number, "x")
    await Revocations(node.db).revoke(
        serial_hex=serial,
        identity=f"spiffe://350000.fujian.gov.cn/agency/{revoked_code}",
        issuer_region="350000",
        reason="key_compromise",
        revoked_by=str(node.identity),
    )
    await demo.expect_refusal(
        f"福建省示例局 calls after its certificate {serial[:12]}… was revoked",
        revoked_code,
        node,
        lambda s: s.ListResources(catalog_pb2.ListResourcesRequest()),
    )
    demo.say("")


async def _show_update_and_listing(
    demo: Demo, node: RunningNode, resources: list[ResourceEntry]
) -> None:
    people = resources[0]
    demo.say(
        "[5] The provider updates its entry: a change request until the data management "
        "authority approves it (第四十一条); history keeps every version"
    )
    changed = entry_to_proto(people)
    changed.summary = people.summary + "（新增手机号码核验）"
    asked = await demo.catalog_call(
        people.provider_code,
        node,
        lambda s: s.UpdateResource(
            catalog_pb2.UpdateResourceRequest(
                entry=changed, expected_version=1, reason="新增手机号码核验服务"
            )
        ),
    )
    demo.say(
        f"  ✓ {demo.names[people.provider_code]} asked: change request "
        f"{asked.change_request_id} is pending; the entry stays v{asked.entry.version}"
    )
    async with secure_channel(node.address, demo.authority, timeout=5) as channel:
        reviewed = await access_pb2_grpc.AccessServiceStub(channel).ReviewChangeRequest(
            access_pb2.ReviewChangeRequestRequest(
                id=asked.change_request_id, decision=common_pb2.REVIEW_DECISION_APPROVE
            )
        )
    history = await demo.catalog_call(
        people.provider_code,
        node,
        lambda s: s.GetResourceHistory(
            catalog_pb2.GetResourceHistoryRequest(resource_code=people.resource_code)
        ),
    )
    demo.say(
        f"  ✓ the 福建省 authority approved it: {people.resource_code} is now "
        f"v{reviewed.change_request.applied_version}; history: "
        + " → ".join(f"v{v.version}" for v in history.versions)
    )
    demo.say("")
    viewer = resources[2].provider_code
    listing = await demo.catalog_call(
        viewer, node, lambda s: s.ListResources(catalog_pb2.ListResourcesRequest())
    )
    digest = await demo.catalog_call(
        viewer, node, lambda s: s.GetCatalogDigest(catalog_pb2.GetCatalogDigestRequest())
    )
    demo.say(f"[6] The catalog as {demo.names[viewer]} sees it ({len(listing.entries)} entries)")
    for e in listing.entries:
        share = SHARE_TYPE_ZH[ShareType(common_pb2.ShareType.Name(e.share_type)[11:].lower())]
        demo.say(f"    {e.resource_code}  v{e.version}  {e.name:<10} {e.provider_name:<12} {share}")
    demo.say(
        f"    catalog digest {digest.digest[:16]}… over {digest.entries} entries, "
        f"change feed at sequence {digest.last_sequence}"
    )
