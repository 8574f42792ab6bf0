"""Creating node directories and agency credentials: what ``govnode init`` and
``govnode agency add`` do, callable from the demo and the tests as well.

A node directory holds ``govnode.toml`` and ``tls/`` (0700) with the files the config names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from gateway.identity import Identity, Role, make_identity
from node.codes import (
    FUJIAN_DIVISIONS,
    Region,
    agency_home_problem,
    credit_code_problem,
    region_problem,
)
from node.config import Mode, NodeConfig
from node.config_template import render_config
from node.pki import (
    KeyPair,
    PkiError,
    create_csr,
    create_intermediate,
    create_root_ca,
    fingerprint,
    generate_key,
    issue_leaf,
)
from node.pki_files import (
    load_certs,
    load_keypair,
    write_client_bundle,
    write_pem,
    write_private_key,
)

CONFIG_NAME = "govnode.toml"


class ProvisionError(ValueError):
    """The request to create a node or credentials is wrong; the message says how."""


def check_region(region: str, name: str, *, province: bool) -> None:
    problem = region_problem(region)
    if problem:
        raise ProvisionError(f"--region: {problem}")
    if Region(region).is_province != province:
        other = "city" if province else "province"
        raise ProvisionError(
            f"--region: {region} is not a {'province' if province else 'city'}; "
            f"use `govnode init {other}`"
        )
    known = FUJIAN_DIVISIONS.get(region)
    if known is not None and known != name:
        raise ProvisionError(f"--name: region {region} is {known}, not {name!r}")


def _prepare_dir(base: Path) -> Path:
    if (base / CONFIG_NAME).exists():
        raise ProvisionError(f"{base / CONFIG_NAME} exists already; choose an empty --dir")
    base.mkdir(parents=True, exist_ok=True)
    tls = base / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    return tls


@dataclass(frozen=True)
class ProvinceNode:
    config_path: Path
    identity: Identity
    root_fingerprint: str


def provision_province(
    base: Path, *, region: str, name: str, listen: str, trust_domain: str, hosts: list[str]
) -> ProvinceNode:
    """Root CA, the province's own CA, the node certificate and a commented config."""
    check_region(region, name, province=True)
    tls = _prepare_dir(base)
    root = create_root_ca(region, name, trust_domain)
    ca = create_intermediate(root, region, name, trust_domain)
    identity = make_identity(region, trust_domain, Role.NODE)
    node = issue_leaf(ca, identity, common_name=f"{name} govnode node", hosts=hosts)
    write_private_key(tls / "root.key", root.key)
    write_pem(tls / "root.crt", root.cert)
    write_private_key(tls / "ca.key", ca.key)
    write_pem(tls / "ca.crt", ca.cert)
    write_private_key(tls / "node.key", node.key)
    write_pem(tls / "node.crt", node.cert, ca.cert)
    config_path = base / CONFIG_NAME
    config_path.write_text(
        render_config(
            mode=Mode.PROVINCE,
            region=region,
            name=name,
            trust_domain=trust_domain,
            listen=listen,
            hosts=hosts,
        ),
        encoding="utf-8",
    )
    return ProvinceNode(config_path, identity, fingerprint(root.cert))


def prepare_city(
    base: Path,
    *,
    region: str,
    name: str,
    listen: str,
    trust_domain: str,
    hosts: list[str],
    province_region: str,
    province_endpoint: str,
) -> Path:
    """The city's CA and node keys with their CSRs, and its config; returns the config path."""
    check_region(region, name, province=False)
    if not Region(province_region).is_province or not Region(province_region).contains(region):
        raise ProvisionError(f"--province-region: {region} is not a city of {province_region}")
    tls = _prepare_dir(base)
    identity = make_identity(region, trust_domain, Role.NODE)
    ca_key, node_key = generate_key(), generate_key()
    ca_csr = create_csr(
        ca_key, identity, common_name=f"{name} govnode CA", is_ca=True, organization=name
    )
    node_csr = create_csr(
        node_key,
        identity,
        common_name=f"{name} govnode node",
        is_ca=False,
        hosts=hosts,
        organization=name,
    )
    write_private_key(tls / "ca.key", ca_key)
    write_private_key(tls / "node.key", node_key)
    (tls / "ca.csr").write_bytes(ca_csr.public_bytes(Encoding.PEM))
    (tls / "node.csr").write_bytes(node_csr.public_bytes(Encoding.PEM))
    config_path = base / CONFIG_NAME
    config_path.write_text(
        render_config(
            mode=Mode.CITY,
            region=region,
            name=name,
            trust_domain=trust_domain,
            listen=listen,
            hosts=hosts,
            province_region=province_region,
            province_endpoint=province_endpoint,
        ),
        encoding="utf-8",
    )
    return config_path


def region_ca(config: NodeConfig) -> KeyPair:
    return load_keypair(config.path(config.tls.ca_key), config.path(config.tls.ca_cert))


def issue_client(
    config: NodeConfig, *, role: Role, subject: str, name: str, out: Path, days: int = 365
) -> tuple[KeyPair, dict[str, Path]]:
    """Issue a client certificate from this node's CA and write a ready bundle into ``out``."""
    if role is Role.AGENCY:
        problem = credit_code_problem(subject)
        if problem:
            raise ProvisionError(f"--code: {subject!r} is not a valid 统一社会信用代码: {problem}")
        home_problem = agency_home_problem(config.node.region, subject)
        if home_problem:
            raise ProvisionError(f"--code: {home_problem}")
    ca = region_ca(config)
    root = load_certs(config.path(config.tls.root))[0]
    identity = make_identity(config.node.region, config.node.trust_domain, role, subject)
    try:
        keypair = issue_leaf(ca, identity, common_name=name, days=days)
    except PkiError as exc:
        raise ProvisionError(str(exc)) from None
    return keypair, write_client_bundle(out, keypair, [ca.cert], root)
