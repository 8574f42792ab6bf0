"""Starting real nodes for tests: fresh PKI on disk, a real database, mutual TLS on loopback."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
from cryptography import x509

from gateway.channel import secure_channel
from gateway.identity import Role
from gateway.tls import TlsFiles
from node.app import RunningNode, start_node
from node.codes import make_credit_code
from node.config import NodeConfig, load_config
from node.demo import free_port
from node.pki import KeyPair, issue_leaf
from node.pki_files import load_certs, write_client_bundle
from node.provision import admit_city, issue_client, prepare_city, provision_province, region_ca

#: Example agencies of the province (codes registered in division 350000).
PUBLIC_SECURITY = make_credit_code("11350000003591001")
MARKET_REGULATION = make_credit_code("11350000003591002")
CIVIL_AFFAIRS = make_credit_code("11350000003591003")


@dataclass
class ProvinceSetup:
    base: Path
    config_path: Path
    config: NodeConfig
    bundles: dict[str, TlsFiles] = field(default_factory=dict)

    def agency(self, code: str, name: str = "测试单位", **kwargs: object) -> TlsFiles:
        """Issue (once) and return an agency's client bundle."""
        if code not in self.bundles:
            out = self.base / "agencies" / code
            _, paths = issue_client(self.config, role=Role.AGENCY, subject=code, name=name, out=out)
            self.bundles[code] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        return self.bundles[code]

    def custom_client(self, name: str, keypair: KeyPair, chain: list[x509.Certificate]) -> TlsFiles:
        """Write a bundle for a hand-made certificate (expired, foreign, out of region...)."""
        out = self.base / "custom" / name
        root = load_certs(self.config.path(self.config.tls.root))[0]
        paths = write_client_bundle(out, keypair, chain, root)
        return TlsFiles(paths["key"], paths["cert"], paths["ca"])

    def expired_agency(self, code: str) -> TlsFiles:
        ca = region_ca(self.config)
        from gateway.identity import make_identity

        now = dt.datetime.now(dt.UTC)
        keypair = issue_leaf(
            ca,
            make_identity("350000", self.config.node.trust_domain, Role.AGENCY, code),
            common_name="过期单位",
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        )
        return self.custom_client("expired", keypair, [ca.cert])


def make_province(base: Path, db_url: str) -> ProvinceSetup:
    port = free_port()
    made = provision_province(
        base,
        region="350000",
        name="福建省",
        listen=f"127.0.0.1:{port}",
        trust_domain="fujian.gov.cn",
        hosts=["127.0.0.1", "localhost"],
    )
    text = made.config_path.read_text(encoding="utf-8")
    made.config_path.write_text(
        text.replace('url = "sqlite+aiosqlite:///node.db"', f'url = "{db_url}"'), encoding="utf-8"
    )
    return ProvinceSetup(base, made.config_path, load_config(made.config_path))


def enable_join(setup: ProvinceSetup) -> ProvinceSetup:
    """The same province with its join port (federation.join_listen) on a free loopback port."""
    text = setup.config_path.read_text(encoding="utf-8")
    commented = next(line for line in text.splitlines() if line.startswith("# join_listen = "))
    port = free_port()
    text = text.replace(commented, f'join_listen = "127.0.0.1:{port}"')
    setup.config_path.write_text(text, encoding="utf-8")
    return ProvinceSetup(setup.base, setup.config_path, load_config(setup.config_path))


def _use_database(config_path: Path, db_url: str) -> None:
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace('url = "sqlite+aiosqlite:///node.db"', f'url = "{db_url}"'), encoding="utf-8"
    )


def make_city(
    base: Path,
    db_url: str,
    province_setup: ProvinceSetup,
    region: str = "350100",
    name: str = "福州市",
) -> ProvinceSetup:
    """A city node admitted by file (CA signed by the province root), following the province
    at its configured listen address. The returned setup issues the city's agencies."""
    province = province_setup.config
    config_path = prepare_city(
        base,
        region=region,
        name=name,
        listen=f"127.0.0.1:{free_port()}",
        trust_domain=province.node.trust_domain,
        hosts=["127.0.0.1", "localhost"],
        province_region=province.node.region,
        province_endpoint=province.node.listen,
    )
    _use_database(config_path, db_url)
    config = load_config(config_path)
    admit_city(province, config)
    return ProvinceSetup(base, config_path, config)


async def start(setup: ProvinceSetup) -> RunningNode:
    return await start_node(setup.config)


def channel(node: RunningNode, files: TlsFiles, timeout: float = 5.0) -> grpc.aio.Channel:
    return secure_channel(node.address, files, timeout=timeout)
