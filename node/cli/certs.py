"""``govnode certs``: sign a city's CA, install it, issue testers, authorities and open data
portals, revoke and inspect certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import typer
from cryptography import x509

from gateway.identity import (
    ConsoleRole,
    IdentityError,
    Role,
    identity_of,
    make_identity,
    permitted_uri_hosts,
)
from node.cli._audited import Action, Auditor
from node.cli._common import CONFIG_OPTION, UserError, echo, load, node_storage
from node.codes import FUJIAN_DIVISIONS, Region, region_problem
from node.config import Mode, NodeConfig
from node.pki import (
    REASONS,
    TESTER_REVOKED_NOTE,
    IssuedCertificates,
    ProvisionError,
    Revocations,
    TesterBundle,
    TesterCredentials,
    fingerprint,
    fingerprint_matches,
    install_city_ca,
    issue_authority,
    issue_operator,
    issue_portal,
    issue_tester,
    load_certs,
    load_keypair,
    normalise_serial,
    prepare_tester,
    serial_hex,
    sign_intermediate,
    write_pem,
)
from node.storage import Database

app = typer.Typer(
    help="Sign, install, issue, revoke and inspect certificates.", no_args_is_help=True
)


#: ``issued_by`` of the certificates the CLI issues.
ISSUED_BY_CLI = "cli"


async def _record(cfg: NodeConfig, certs: list[x509.Certificate]) -> None:
    async with node_storage(cfg) as (db, audit):
        issued = IssuedCertificates(db)
        audited = Auditor(audit, make_identity(cfg.node.region, cfg.node.trust_domain, Role.NODE))
        for cert in certs:
            try:
                subject = str(identity_of(cert))
            except IdentityError:
                subject = cert.subject.rfc4514_string()
            detail = {"serial": serial_hex(cert), "subject": subject}
            await audited(
                Action("certs/issue", detail=detail),
                lambda: issued.record(cert, issued_by=ISSUED_BY_CLI),  # noqa: B023
            )


def record_issued(cfg: NodeConfig, *certs: x509.Certificate) -> None:
    """Record certificates the CLI just issued in the node's list (``govnode certs list``, the
    console's certificate page and its expiry warnings)."""
    asyncio.run(_record(cfg, list(certs)))


def _load_csr(path: Path) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(path.read_bytes())
    except ValueError as exc:
        raise UserError(f"{path} is not a PEM certificate request: {exc}") from None


@app.command("sign-city")
def sign_city(
    config: Path = CONFIG_OPTION,
    csr: Path = typer.Option(..., "--csr", help="The city's tls/ca.csr from `govnode init city`."),
    region: str = typer.Option(..., "--region", help="The city's code, e.g. 350100."),
    name: str = typer.Option(..., "--name", help="The city's name, e.g. 福州市."),
    out: Path = typer.Option(..., "--out", help="Directory to write ca.crt and root.crt into."),
) -> None:
    """At the province: sign a city's intermediate CA, confined to the city's region."""
    cfg = load(config)
    if cfg.node.mode is not Mode.PROVINCE or cfg.tls.root_key is None:
        raise UserError(f"{config}: only the province node signs city CAs")
    problem = region_problem(region)
    if problem or Region(region).is_province or not cfg.region.contains(region):
        raise UserError(f"--region: {problem or f'{region} is not a city of {cfg.node.region}'}")
    known = FUJIAN_DIVISIONS.get(region)
    if known is not None and known != name:
        raise UserError(f"--name: region {region} is {known}, not {name!r}")
    root = load_keypair(cfg.path(cfg.tls.root_key), cfg.path(cfg.tls.root))
    cert = sign_intermediate(
        root, _load_csr(csr), region=region, region_name=name, trust_domain=cfg.node.trust_domain
    )
    out.mkdir(parents=True, exist_ok=True)
    write_pem(out / "ca.crt", cert)
    write_pem(out / "root.crt", root.cert)
    echo(f"Signed the CA of {name} ({region}), permitted only {region}.{cfg.node.trust_domain}")
    echo(f"  wrote {out / 'ca.crt'} and {out / 'root.crt'}")
    echo(f"  root fingerprint (tell the city operator out of band): {fingerprint(root.cert)}")


@app.command("install")
def install(
    config: Path = CONFIG_OPTION,
    bundle: Path = typer.Option(..., "--bundle", help="Directory from `certs sign-city`."),
    root_fingerprint: str = typer.Option(
        ..., "--fingerprint", help="The province root's SHA-256 fingerprint, from its operator."
    ),
) -> None:
    """At the city: check the signed CA against the root fingerprint, then issue the node cert.

    The node certificate is issued here, by the city's own CA, from tls/node.csr: the city's
    CA key never leaves this machine, so the province cannot issue it.
    """
    cfg = load(config)
    if cfg.node.mode is not Mode.CITY:
        raise UserError(f"{config}: `certs install` is for city nodes")
    root = load_certs(bundle / "root.crt")[0]
    if not fingerprint_matches(root, root_fingerprint):
        raise UserError(
            f"{bundle / 'root.crt'} has fingerprint {fingerprint(root)}, not the one given: "
            "refusing to trust it"
        )
    ca_cert = load_certs(bundle / "ca.crt")[0]
    try:
        identity = install_city_ca(cfg, root, ca_cert)
    except ProvisionError as exc:
        raise UserError(f"{bundle / 'ca.crt'}: {exc}") from None
    echo(f"Installed the CA of {cfg.node.name} and issued the node certificate")
    echo(f"  identity: {identity}")
    echo(f"Next: govnode serve --config {config}")


async def _revoke(cfg: NodeConfig, serial: str, identity: str, region: str, reason: str) -> None:
    async with node_storage(cfg) as (db, audit):
        node = make_identity(cfg.node.region, cfg.node.trust_domain, Role.NODE)
        detail = {"serial": serial, "subject": identity, "reason": reason}
        await Auditor(audit, node)(
            Action("certs/revoke", detail=detail),
            lambda: Revocations(db).revoke(
                serial_hex=serial,
                identity=identity,
                issuer_region=region,
                reason=reason,
                revoked_by=str(node),
            ),
        )


@app.command("revoke")
def revoke(
    config: Path = CONFIG_OPTION,
    cert: Path | None = typer.Option(None, "--cert", help="PEM file of the certificate."),
    serial: str | None = typer.Option(None, "--serial", help="Hex serial, if no PEM is at hand."),
    reason: str = typer.Option("unspecified", "--reason", help=f"One of: {', '.join(REASONS)}."),
) -> None:
    """Revoke a certificate: the node refuses it from its next call on."""
    cfg = load(config)
    if (cert is None) == (serial is None):
        raise UserError("give exactly one of --cert or --serial")
    identity, region = "", ""
    if cert is not None:
        leaf = load_certs(cert)[0]
        serial = serial_hex(leaf)
        try:
            who = identity_of(leaf)
            identity, region = str(who), who.region
        except IdentityError:
            identity = leaf.subject.rfc4514_string()
    assert serial is not None
    serial = normalise_serial(serial)
    asyncio.run(_revoke(cfg, serial, identity, region, reason))
    echo(f"Revoked certificate {serial} {identity}".rstrip() + f" ({reason})")


async def _issue_tester(cfg: NodeConfig, credentials: TesterCredentials) -> TesterBundle:
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        return await issue_tester(credentials, Revocations(db))
    finally:
        await db.close()


@app.command("issue-tester")
def issue_tester_command(
    config: Path = CONFIG_OPTION,
    name: str = typer.Option(
        ..., "--name", help="The tester's name, e.g. lab-1: its identity is .../tester/NAME."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Directory for the bundle; refused if it already holds one."
    ),
    days: int = typer.Option(30, "--days", min=1, max=365, help="Validity in days."),
) -> None:
    """At the province: issue a conformance tester's credentials (第三十一条).

    Writes tester.key, tester.crt and root.pem (the tester's identity
    spiffe://<province>.<trust-domain>/tester/NAME), and under negative/ three certificates
    every node must refuse: expired, revoked (recorded in the province's revocation list at
    once; cities learn it on their next heartbeat) and wrong-region (an identity outside the
    province CA's name constraints). tester.json lists them all.
    """
    cfg = load(config)
    credentials = prepare_tester(cfg, name=name, out=out, days=days)
    bundle = asyncio.run(_issue_tester(cfg, credentials))
    record_issued(cfg, credentials.valid.cert)
    cst = dt.timezone(dt.timedelta(hours=8), "CST")
    echo(f"Issued conformance tester {bundle.identity} (第三十一条)")
    echo(
        f"  serial {bundle.serial}, valid until "
        f"{bundle.not_after.astimezone(cst):%Y-%m-%d %H:%M} CST, "
        f"fingerprint {fingerprint(credentials.valid.cert)}"
    )
    for relative in ("tester.key", "tester.crt", "root.pem"):
        echo(f"  {bundle.files[relative]}")
    echo("  negative certificates every node must refuse:")
    echo(f"    expired       {bundle.files['negative/expired.crt']} (ended yesterday)")
    echo(
        f"    revoked       {bundle.files['negative/revoked.crt']} (serial "
        f"{bundle.revoked_serial}, revoked here: {TESTER_REVOKED_NOTE})"
    )
    outside = identity_of(credentials.negatives["wrong_region"].cert)
    echo(
        f"    wrong-region  {bundle.files['negative/wrong-region.crt']} ({outside}, outside "
        "this CA's name constraints)"
    )
    echo(f"  manifest: {bundle.manifest}")


@app.command("issue-authority")
def issue_authority_command(
    config: Path = CONFIG_OPTION,
    out: Path = typer.Option(
        ..., "--out", help="Directory for client.key, client.crt, ca.crt; refused if it has a key."
    ),
    name: str = typer.Option(
        "", "--name", help="Name in the certificate, e.g. 福州市大数据管理局 (default: node name)."
    ),
    days: int = typer.Option(365, "--days", min=1, max=825, help="Validity in days."),
) -> None:
    """Issue this region's data management authority (数据管理机构) credentials.

    The authority reviews 有条件共享 applications for this node's resources and revokes grants
    (第二十五条): identity spiffe://<this node's region>.<trust-domain>/authority, in a bundle
    like an agency's. Any node, province or city, issues its own region's. Its operators use it
    with any gRPC client (AccessService), or run `govnode access` on the node itself.
    """
    cfg = load(config)
    keypair, paths = issue_authority(cfg, out=out, name=name, days=days)
    record_issued(cfg, keypair.cert)
    echo(f"Issued the data management authority {identity_of(keypair.cert)} (第二十五条)")
    echo(f"  serial {keypair.cert.serial_number:x}, fingerprint {fingerprint(keypair.cert)}")
    for label, path in paths.items():
        echo(f"  {label:<6} {path}")


@app.command("issue-portal")
def issue_portal_command(
    config: Path = CONFIG_OPTION,
    name: str = typer.Option(
        ..., "--name", help="The portal's name, e.g. opendata-1: its identity is .../portal/NAME."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Directory for client.key, client.crt, ca.crt; refused if it has a key."
    ),
    days: int = typer.Option(365, "--days", min=1, max=825, help="Validity in days."),
) -> None:
    """Issue credentials for this node's public open data portal (开放平台, 第三十条).

    The portal (`govnode portal serve`) serves the public over HTTPS and calls this node over
    mutual TLS with these credentials: identity spiffe://<this node's region>.<trust-domain>/
    portal/NAME, in a bundle like an agency's. The node lets a portal call only the open data
    RPCs the public needs (gateway.roles.PORTAL_METHODS; PERMISSION_DENIED for anything else),
    and a portal's download names, in the govnode-recipient header, the member of the public it
    serves (e.g. ip:203.0.113.9): the download receipt names them. Then `govnode portal init`.
    Revoke it like any certificate: `govnode certs revoke --cert OUT/client.crt`.
    """
    cfg = load(config)
    keypair, paths = issue_portal(cfg, name=name, out=out, days=days)
    record_issued(cfg, keypair.cert)
    echo(f"Issued the open data portal {identity_of(keypair.cert)} (第三十条)")
    echo(f"  serial {keypair.cert.serial_number:x}, fingerprint {fingerprint(keypair.cert)}")
    for label, path in paths.items():
        echo(f"  {label:<6} {path}")


@app.command("issue-operator")
def issue_operator_command(
    config: Path = CONFIG_OPTION,
    name: str = typer.Option(
        ..., "--name", help="The operator's name (letters, digits, - and _), e.g. li-ming."
    ),
    role: ConsoleRole = typer.Option(
        ...,
        "--role",
        help="observer (read only), service (desks), security (certificates), "
        "system (config, maintenance).",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Directory for client.key, client.crt, ca.crt; refused if it has a key."
    ),
    p12: bool = typer.Option(
        False, "--p12", help="Also write operator.p12 (key + certificate) for a browser."
    ),
    p12_password: str = typer.Option(
        "",
        "--p12-password",
        envvar="GOVNODE_P12_PASSWORD",
        help="Password of operator.p12 (or GOVNODE_P12_PASSWORD); empty: unencrypted.",
    ),
    days: int = typer.Option(365, "--days", min=1, max=825, help="Validity in days."),
) -> None:
    """Issue a console operator's certificate (the node's web console, [console] listen).

    Identity spiffe://<this node's region>.<trust-domain>/operator/ROLE.NAME, issued by this
    node's CA: only this node's console accepts it, and the gRPC port refuses it everything but
    health. With --p12 the bundle also holds operator.p12 to import into a browser's
    certificate store (Chrome: Settings > Privacy and security > Security > Manage
    certificates; Firefox: Settings > Certificates > Your Certificates > Import). Revoke it
    like any certificate: `govnode certs revoke --cert OUT/client.crt`.
    """
    cfg = load(config)
    try:
        keypair, paths = issue_operator(
            cfg,
            role=role,
            name=name,
            out=out,
            days=days,
            p12_password=p12_password if p12 else None,
        )
    except ProvisionError as exc:
        raise UserError(str(exc)) from None
    record_issued(cfg, keypair.cert)
    echo(f"Issued console operator {identity_of(keypair.cert)} ({role.value})")
    echo(f"  serial {keypair.cert.serial_number:x}, fingerprint {fingerprint(keypair.cert)}")
    for label, path in paths.items():
        echo(f"  {label:<6} {path}")


async def _list(cfg: NodeConfig) -> None:
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        rows = await Revocations(db).all()
    finally:
        await db.close()
    if not rows:
        echo("No certificates are revoked.")
    cst = dt.timezone(dt.timedelta(hours=8), "CST")
    for r in rows:
        echo(
            f"{r.revoked_at.astimezone(cst):%Y-%m-%d %H:%M} CST  {r.serial_hex}  "
            f"{r.identity or '-'}  {r.reason}"
        )


async def _list_issued(cfg: NodeConfig, kind: str | None, limit: int) -> None:
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        rows = await IssuedCertificates(db).page(kind=kind, limit=limit)
    finally:
        await db.close()
    if not rows:
        echo("No certificates are recorded as issued by this node.")
    cst = dt.timezone(dt.timedelta(hours=8), "CST")
    now = dt.datetime.now(dt.UTC)
    for r in rows:
        state = (
            f"revoked ({r.revoked})"
            if r.revoked is not None
            else "EXPIRED"
            if r.not_after <= now
            else "expires soon"
            if r.expires_within(cfg.console.expiry_warning_days, now)
            else "valid"
        )
        echo(
            f"{r.not_after.astimezone(cst):%Y-%m-%d %H:%M} CST  {r.serial_hex}  {r.kind:<9}  "
            f"{r.identity}  {state}"
        )


@app.command("list")
def list_issued(
    config: Path = CONFIG_OPTION,
    kind: str | None = typer.Option(
        None, "--kind", help="Only agency, operator, tester, portal or authority certificates."
    ),
    limit: int = typer.Option(200, "--limit", min=1, max=200, help="At most this many."),
) -> None:
    """List the certificates this node issued, soonest expiry first, with their state.

    Recorded since migration 0030 by `agency add`, `certs issue-*` and the console; a
    certificate issued before is not listed (revoke it by --cert or --serial as before).
    """
    asyncio.run(_list_issued(load(config), kind, limit))


@app.command("list-revoked")
def list_revoked(config: Path = CONFIG_OPTION) -> None:
    """List the certificates this node refuses."""
    asyncio.run(_list(load(config)))


@app.command("show")
def show(pem: Path = typer.Argument(..., help="A PEM certificate or chain file.")) -> None:
    """Print a certificate's identity, serial, validity and fingerprint."""
    cst = dt.timezone(dt.timedelta(hours=8), "CST")
    for cert in load_certs(pem):
        try:
            who = str(identity_of(cert))
        except IdentityError:
            hosts = permitted_uri_hosts(cert)
            who = f"CA for {', '.join(hosts)}" if hosts else "root CA"
        echo(f"{cert.subject.rfc4514_string()}")
        echo(f"  identity:     {who}")
        echo(f"  serial:       {serial_hex(cert)}")
        echo(
            f"  valid:        {cert.not_valid_before_utc.astimezone(cst):%Y-%m-%d %H:%M} to "
            f"{cert.not_valid_after_utc.astimezone(cst):%Y-%m-%d %H:%M} CST"
        )
        echo(f"  fingerprint:  {fingerprint(cert)}")
