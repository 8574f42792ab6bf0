"""Creating node directories and credentials: what ``govnode init``, ``govnode agency add``
and ``govnode certs issue-tester`` do, callable from the demo and the tests as well.

A node directory holds ``govnode.toml`` and ``tls/`` (0700) with the files the config names.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.identity import (
    ConsoleRole,
    Identity,
    IdentityError,
    Role,
    identity_of,
    make_identity,
    permitted_uri_hosts,
)
from node.codes import (
    FUJIAN_DIVISIONS,
    Region,
    agency_home_problem,
    credit_code_problem,
    region_problem,
)
from node.config import Mode, NodeConfig, load_config
from node.config_template import render_config
from node.pki._ca import (
    KeyPair,
    PkiError,
    create_csr,
    create_intermediate,
    create_root_ca,
    fingerprint,
    generate_key,
    issue_leaf,
    issue_out_of_region_probe,
    serial_hex,
    sign_intermediate,
    sign_node_csr,
)
from node.pki._files import (
    load_certs,
    load_keypair,
    load_private_key,
    write_client_bundle,
    write_pem,
    write_pkcs12,
    write_private_key,
)
from node.pki._revocation import Revocations

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
    base: Path,
    *,
    region: str,
    name: str,
    listen: str,
    trust_domain: str,
    hosts: list[str],
    join_listen: str | None = None,
) -> ProvinceNode:
    """Root CA, the province's own CA, the node certificate and a commented config; with
    ``join_listen``, the config opens the join port there (cities join online)."""
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
            join_listen=join_listen,
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
    write_city_requests(tls, city_requests(region, name, trust_domain, hosts))
    return write_city_config(
        base,
        region=region,
        name=name,
        listen=listen,
        trust_domain=trust_domain,
        hosts=hosts,
        province_region=province_region,
        province_endpoint=province_endpoint,
    )


@dataclass(frozen=True)
class CityRequests:
    """A city's two fresh keys and their CSRs. The keys stay on the city's machine."""

    ca_key: ec.EllipticCurvePrivateKey
    node_key: ec.EllipticCurvePrivateKey
    ca_csr: x509.CertificateSigningRequest
    node_csr: x509.CertificateSigningRequest

    def csr_pems(self) -> tuple[str, str]:
        """The CA and node CSRs as PEM text: all that ever travels to the province."""
        return (
            self.ca_csr.public_bytes(Encoding.PEM).decode("ascii"),
            self.node_csr.public_bytes(Encoding.PEM).decode("ascii"),
        )


def city_requests(region: str, name: str, trust_domain: str, hosts: list[str]) -> CityRequests:
    """Generate the city's CA and node keys and their CSRs, in memory."""
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
    return CityRequests(ca_key, node_key, ca_csr, node_csr)


def write_city_requests(tls: Path, requests: CityRequests) -> None:
    write_private_key(tls / "ca.key", requests.ca_key)
    write_private_key(tls / "node.key", requests.node_key)
    (tls / "ca.csr").write_bytes(requests.ca_csr.public_bytes(Encoding.PEM))
    (tls / "node.csr").write_bytes(requests.node_csr.public_bytes(Encoding.PEM))


def write_city_config(
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


def check_new_node_dir(base: Path) -> None:
    """Refuse a directory that already holds a node (config or keys), before anything is made."""
    for existing in (base / CONFIG_NAME, base / "tls" / "ca.key", base / "tls" / "node.key"):
        if existing.exists():
            raise ProvisionError(f"{existing} exists already; choose an empty --dir")


def create_joined_city(
    base: Path,
    requests: CityRequests,
    *,
    region: str,
    name: str,
    listen: str,
    trust_domain: str,
    hosts: list[str],
    province_region: str,
    province_endpoint: str,
    root: x509.Certificate,
    ca_cert: x509.Certificate,
) -> tuple[Path, Identity]:
    """Write a city that joined online: its keys and CSRs, a ready config, the province root,
    its CA and the node certificate its own CA issues (as ``certs install`` does)."""
    tls = _prepare_dir(base)
    write_city_requests(tls, requests)
    config_path = write_city_config(
        base,
        region=region,
        name=name,
        listen=listen,
        trust_domain=trust_domain,
        hosts=hosts,
        province_region=province_region,
        province_endpoint=province_endpoint,
    )
    return config_path, install_city_ca(load_config(config_path), root, ca_cert)


def install_city_ca(
    config: NodeConfig, root: x509.Certificate, ca_cert: x509.Certificate
) -> Identity:
    """At the city: install its CA (signed by the province) and issue its node certificate.

    The caller has already pinned ``root`` (by fingerprint). Checks that the CA is signed by
    the root and confined to exactly this city's region, then issues the node certificate from
    tls/node.csr with the city's own CA key (which never leaves this machine), and writes
    tls/root.crt, tls/ca.crt and tls/node.crt. Returns the node's identity.
    """
    if config.node.mode is not Mode.CITY:
        raise ProvisionError(f"{config.node.name}: only a city node installs a city CA")
    try:
        ca_cert.verify_directly_issued_by(root)
    except Exception:
        raise ProvisionError("the city CA certificate is not signed by the province root") from None
    expected_host = f"{config.node.region}.{config.node.trust_domain}"
    if permitted_uri_hosts(ca_cert) != [expected_host]:
        raise ProvisionError(f"the city CA certificate is not confined to {expected_host}")
    ca = KeyPair(load_private_key(config.path(config.tls.ca_key)), ca_cert)
    csr_path = config.path(config.tls.cert).parent / "node.csr"
    try:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    except ValueError as exc:
        raise ProvisionError(f"{csr_path} is not a PEM certificate request: {exc}") from None
    node_cert = sign_node_csr(
        ca, csr, region=config.node.region, trust_domain=config.node.trust_domain
    )
    write_pem(config.path(config.tls.root), root)
    write_pem(config.path(config.tls.ca_cert), ca_cert)
    write_pem(config.path(config.tls.cert), node_cert, ca_cert)
    return make_identity(config.node.region, config.node.trust_domain, Role.NODE)


def admit_city(province: NodeConfig, city: NodeConfig) -> None:
    """File-based admission in one step, for tests and the demo: what ``govnode certs
    sign-city`` does at the province and ``govnode certs install`` at the city (both machines'
    files must be at hand; in production each runs on its own machine)."""
    if province.node.mode is not Mode.PROVINCE or province.tls.root_key is None:
        raise ProvisionError("admit_city: the first configuration must be the province's")
    if city.node.mode is not Mode.CITY or not province.region.contains(city.node.region):
        raise ProvisionError(
            f"admit_city: {city.node.region} is not a city of {province.node.region}"
        )
    root = load_keypair(province.path(province.tls.root_key), province.path(province.tls.root))
    ca_csr = x509.load_pem_x509_csr((city.path(city.tls.cert).parent / "ca.csr").read_bytes())
    ca_cert = sign_intermediate(
        root,
        ca_csr,
        region=city.node.region,
        region_name=city.node.name,
        trust_domain=province.node.trust_domain,
    )
    install_city_ca(city, root.cert, ca_cert)


def region_ca(config: NodeConfig) -> KeyPair:
    return load_keypair(config.path(config.tls.ca_key), config.path(config.tls.ca_cert))


def issue_client(
    config: NodeConfig, *, role: Role, subject: str, name: str, out: Path, days: int = 365
) -> tuple[KeyPair, dict[str, Path]]:
    """Issue a client certificate from this node's CA and write a ready bundle into ``out``."""
    keypair, ca, root = make_client(config, role=role, subject=subject, name=name, days=days)
    return keypair, write_client_bundle(out, keypair, [ca], root)


def check_client(config: NodeConfig, *, role: Role, subject: str) -> None:
    """Refuse an agency code that is not valid or not of this node's region."""
    if role is Role.AGENCY:
        problem = credit_code_problem(subject)
        if problem:
            raise ProvisionError(f"--code: {subject!r} is not a valid 统一社会信用代码: {problem}")
        home_problem = agency_home_problem(config.node.region, subject)
        if home_problem:
            raise ProvisionError(f"--code: {home_problem}")


def make_client(
    config: NodeConfig, *, role: Role, subject: str, name: str, days: int = 365
) -> tuple[KeyPair, x509.Certificate, x509.Certificate]:
    """A client certificate from this node's CA, in memory: the key pair, the issuing CA and
    the root (what :func:`issue_client` writes; the console zips it for a download)."""
    check_client(config, role=role, subject=subject)
    ca = region_ca(config)
    root = load_certs(config.path(config.tls.root))[0]
    identity = make_identity(config.node.region, config.node.trust_domain, role, subject)
    try:
        keypair = issue_leaf(ca, identity, common_name=name, days=days)
    except PkiError as exc:
        raise ProvisionError(str(exc)) from None
    return keypair, ca.cert, root


def issue_authority(
    config: NodeConfig, *, out: Path, name: str = "", days: int = 365
) -> tuple[KeyPair, dict[str, Path]]:
    """Issue the credentials of this region's data management authority (数据管理机构), which
    reviews 有条件共享 applications and revokes grants at this node (第二十五条): the identity
    ``spiffe://<node region>.<trust-domain>/authority``, a bundle like an agency's. Any node,
    province or city, issues its own region's."""
    label = name or f"{config.node.name}数据管理机构"
    return issue_client(config, role=Role.AUTHORITY, subject="", name=label, out=out, days=days)


def issue_portal(
    config: NodeConfig, *, name: str, out: Path, days: int = 365
) -> tuple[KeyPair, dict[str, Path]]:
    """Issue the credentials of an open data portal (开放平台, 第三十条) of this node: the
    identity ``spiffe://<node region>.<trust-domain>/portal/<name>``, a bundle like an
    agency's. The portal calls its node only for the open data RPCs the public uses
    (gateway.roles) and names the member of the public it serves in each download."""
    try:
        make_identity(config.node.region, config.node.trust_domain, Role.PORTAL, name)
    except IdentityError as exc:
        raise ProvisionError(f"--name: {exc}") from None
    label = f"{config.node.name}政务数据开放平台 {name}"
    return issue_client(config, role=Role.PORTAL, subject=name, name=label, out=out, days=days)


def issue_operator(
    config: NodeConfig,
    *,
    role: ConsoleRole,
    name: str,
    out: Path,
    days: int = 365,
    p12_password: str | None = None,
) -> tuple[KeyPair, dict[str, Path]]:
    """Issue a console operator's credentials (node.console) from this node's CA: the identity
    ``spiffe://<node region>.<trust-domain>/operator/<role>.<name>``, a bundle like an
    agency's, and with ``p12_password`` (may be "") also ``operator.p12`` for a browser's
    certificate store. The role rides in the identity: a new role is a new certificate."""
    subject = f"{ConsoleRole(role).value}.{name}"
    try:
        make_identity(config.node.region, config.node.trust_domain, Role.OPERATOR, subject)
    except IdentityError as exc:
        raise ProvisionError(f"--name: {exc}") from None
    p12 = out / "operator.p12"
    if p12_password is not None and p12.exists():
        raise ProvisionError(f"{p12} exists already; choose another --out")
    label = f"{config.node.name} 控制台运维人员 {name}"
    keypair, paths = issue_client(
        config, role=Role.OPERATOR, subject=subject, name=label, out=out, days=days
    )
    if p12_password is not None:
        paths["p12"] = write_pkcs12(
            p12, keypair, [region_ca(config).cert], name=subject, password=p12_password
        )
    return keypair, paths


# --- conformance testers (第三十一条) --------------------------------------------------------

#: Why the tester bundle's "revoked" certificate is revoked. The revocation list itself carries
#: an RFC 5280 reason (it travels to every city and into signed CRLs), so it records
#: ``unspecified``; this text goes into the manifest and the command's output.
TESTER_REVOKED_NOTE = "conformance probe: revoked on issue"
TESTER_EXPIRED_AGE = dt.timedelta(days=30)
_REVOKED_SUFFIX = "-revoked"

#: Manifest name -> path inside the bundle directory; the conformance suite finds files by them.
TESTER_FILES = {"key": "tester.key", "cert": "tester.crt", "root": "root.pem"}
TESTER_NEGATIVES = {"expired": "expired", "revoked": "revoked", "wrong_region": "wrong-region"}
TESTER_MANIFEST = "tester.json"


@dataclass(frozen=True)
class TesterCredentials:
    """A tester's certificates, made in memory by :func:`prepare_tester`; nothing written yet."""

    config: NodeConfig
    out: Path
    ca: KeyPair
    root: x509.Certificate
    valid: KeyPair
    #: manifest name ("expired", "revoked", "wrong_region") -> the negative certificate
    negatives: dict[str, KeyPair]


@dataclass(frozen=True)
class TesterBundle:
    """What :func:`issue_tester` wrote: the tester's identity and every file, by its path."""

    identity: Identity
    serial: str
    not_after: dt.datetime
    manifest: Path
    files: dict[str, Path]  # path relative to the bundle directory -> where it was written
    revoked_serial: str


def _tester_paths(out: Path) -> list[Path]:
    names = [*TESTER_FILES.values(), TESTER_MANIFEST]
    for stem in TESTER_NEGATIVES.values():
        names += [f"negative/{stem}.key", f"negative/{stem}.crt"]
    return [out / name for name in names]


def prepare_tester(
    config: NodeConfig, *, name: str, out: Path, days: int = 30
) -> TesterCredentials:
    """At the province: every check, then a conformance tester's certificates, in memory.

    - ``valid``: ``spiffe://<province>.<trust-domain>/tester/<name>`` for ``days``;
    - ``expired``: the same identity, valid from 30 days ago until yesterday;
    - ``revoked``: ``.../tester/<name>-revoked``, valid, to be revoked by :func:`issue_tester`;
    - ``wrong_region``: ``spiffe://<the province's first city>.<trust-domain>/tester/<name>``
      signed by the province CA, whose name constraints do not permit it.

    Refuses a city's config (testers are the province's: its CA is the one every node trusts
    for province identities), a name that does not make a valid identity, and an ``out``
    that already holds any file of a bundle.
    """
    node = config.node
    if node.mode is not Mode.PROVINCE:
        raise ProvisionError(
            f"{node.name} ({node.region}) is a city node: conformance testers are issued by the "
            "province (第三十一条); run this with the province's config"
        )
    if days < 1:
        raise ProvisionError(f"--days: must be at least 1, got {days}")
    if len(name) > 64 - len(_REVOKED_SUFFIX):
        raise ProvisionError(
            f"--name: at most {64 - len(_REVOKED_SUFFIX)} characters (the revoked certificate's "
            f"identity adds {_REVOKED_SUFFIX!r}), got {len(name)}"
        )
    region, trust_domain = node.region, node.trust_domain
    city = region[:2] + "01" + region[4:]  # the province's first city, e.g. 350100
    try:
        identity = make_identity(region, trust_domain, Role.TESTER, name)
        revoked_identity = make_identity(region, trust_domain, Role.TESTER, name + _REVOKED_SUFFIX)
        outside = make_identity(city, trust_domain, Role.TESTER, name)
    except IdentityError as exc:
        raise ProvisionError(f"--name: {exc}") from None
    for path in _tester_paths(out):
        if path.exists():
            raise ProvisionError(
                f"{path} exists already: {out} holds a tester bundle; refusing to overwrite it "
                "(choose another --out)"
            )
    ca = region_ca(config)
    root = load_certs(config.path(config.tls.root))[0]
    common_name = f"conformance tester {name}"
    now = dt.datetime.now(dt.UTC)
    try:
        valid = issue_leaf(ca, identity, common_name=common_name, days=days)
        negatives = {
            "expired": issue_leaf(
                ca,
                identity,
                common_name=common_name,
                not_before=now - TESTER_EXPIRED_AGE,
                not_after=now - dt.timedelta(days=1),
            ),
            "revoked": issue_leaf(ca, revoked_identity, common_name=common_name, days=days),
            "wrong_region": issue_out_of_region_probe(
                ca, outside, common_name=common_name, days=days
            ),
        }
    except PkiError as exc:
        raise ProvisionError(str(exc)) from None
    return TesterCredentials(config, out, ca, root, valid, negatives)


async def issue_tester(credentials: TesterCredentials, revocations: Revocations) -> TesterBundle:
    """Revoke the bundle's "revoked" certificate in the province's revocation list (what
    ``govnode certs revoke`` does: the province refuses it from now on, cities from their next
    heartbeat), then write the bundle and its ``tester.json`` manifest (last, so a manifest
    means a complete bundle). Keys are written 0600."""
    config, out = credentials.config, credentials.out
    node_identity = make_identity(config.node.region, config.node.trust_domain, Role.NODE)
    revoked = credentials.negatives["revoked"].cert
    await revocations.revoke(
        serial_hex=serial_hex(revoked),
        identity=str(identity_of(revoked)),
        issuer_region=config.node.region,
        reason="unspecified",
        revoked_by=str(node_identity),
    )
    written: dict[str, Path] = {}

    def write(pair: KeyPair, stem: str) -> dict[str, str]:
        key, cert = f"{stem}.key", f"{stem}.crt"
        written[key] = write_private_key(out / key, pair.key)
        written[cert] = write_pem(out / cert, pair.cert, credentials.ca.cert)
        return {"key": key, "cert": cert}

    write(credentials.valid, "tester")
    written[TESTER_FILES["root"]] = write_pem(out / TESTER_FILES["root"], credentials.root)
    expect = {
        "expired": "refused at the TLS handshake (UNAVAILABLE): the certificate has expired",
        "revoked": "UNAUTHENTICATED at the province: the certificate is revoked (at cities "
        "from their next heartbeat)",
        "wrong_region": "refused at the TLS handshake (UNAVAILABLE): the identity lies outside "
        "the name constraints of the CA that signed it",
    }
    negative: dict[str, dict[str, str]] = {}
    for label, stem in TESTER_NEGATIVES.items():
        pair = credentials.negatives[label]
        negative[label] = write(pair, f"negative/{stem}") | {
            "identity": str(identity_of(pair.cert)),
            "serial": serial_hex(pair.cert),
            "not_after": _iso(pair.cert.not_valid_after_utc),
            "expect": expect[label],
        }
    negative["revoked"]["reason"] = TESTER_REVOKED_NOTE
    leaf = credentials.valid.cert
    manifest = {
        "identity": str(identity_of(leaf)),
        "serial": serial_hex(leaf),
        "not_after": _iso(leaf.not_valid_after_utc),
        "files": TESTER_FILES,
        "negative": negative,
    }
    path = out / TESTER_MANIFEST
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    written[TESTER_MANIFEST] = path
    return TesterBundle(
        identity_of(leaf),
        serial_hex(leaf),
        leaf.not_valid_after_utc,
        path,
        written,
        serial_hex(revoked),
    )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
