"""``govnode init``: create a node directory with keys, certificates and a commented config."""

from __future__ import annotations

from pathlib import Path

import typer

from node.cli._common import cert_hosts, echo
from node.codes import Region
from node.provision import prepare_city, provision_province

app = typer.Typer(help="Create a province or city node directory.", no_args_is_help=True)

REGION = typer.Option(..., "--region", help="GB/T 2260 code, e.g. 350000 or 350100.")
NAME = typer.Option(..., "--name", help="Name of the division, e.g. 福建省 or 福州市.")
DIR = typer.Option(..., "--dir", help="Directory to create the node in (must not hold one).")
LISTEN = typer.Option("127.0.0.1:7443", "--listen", help="HOST:PORT the node will serve on.")
TRUST_DOMAIN = typer.Option(
    "fujian.gov.cn", "--trust-domain", help="SPIFFE trust domain shared by the whole province."
)
HOSTS = typer.Option(
    [], "--host", help="Extra DNS name or IP clients use to reach the node (repeatable)."
)


@app.command("province")
def province(
    region: str = REGION,
    name: str = NAME,
    dir: Path = DIR,
    listen: str = LISTEN,
    trust_domain: str = TRUST_DOMAIN,
    host: list[str] = HOSTS,
) -> None:
    """Create the province root CA, the province's CA, the node certificate and config."""
    made = provision_province(
        dir,
        region=region,
        name=name,
        listen=listen,
        trust_domain=trust_domain,
        hosts=cert_hosts(listen, host),
    )
    echo(f"Province node {name} ({region}) created in {dir}")
    echo(f"  identity:          {made.identity}")
    echo(f"  root fingerprint:  {made.root_fingerprint}")
    echo(f"  config:            {made.config_path}")
    echo(f"Next: govnode serve --config {made.config_path}")


@app.command("city")
def city(
    region: str = REGION,
    name: str = NAME,
    dir: Path = DIR,
    listen: str = LISTEN,
    province_endpoint: str = typer.Option(
        ..., "--province-endpoint", help="HOST:PORT of the province node."
    ),
    province_region: str = typer.Option(
        "", "--province-region", help="The province's code (default: derived from --region)."
    ),
    trust_domain: str = TRUST_DOMAIN,
    host: list[str] = HOSTS,
) -> None:
    """Create the city's keys and certificate requests (CSRs) and its config.

    The keys never leave this machine. Take tls/ca.csr to the province, where
    `govnode certs sign-city` signs it; bring the result back and run `govnode certs install`.
    """
    config_path = prepare_city(
        dir,
        region=region,
        name=name,
        listen=listen,
        trust_domain=trust_domain,
        hosts=cert_hosts(listen, host),
        province_region=province_region or Region(region).province_code,
        province_endpoint=province_endpoint,
    )
    tls = dir / "tls"
    echo(f"City node {name} ({region}) prepared in {dir}")
    echo(f"  CA request:    {tls / 'ca.csr'}   (take this to the province)")
    echo(f"  node request:  {tls / 'node.csr'} (stays here)")
    echo("Next, at the province:")
    echo(
        f"  govnode certs sign-city --config PROVINCE.toml --csr ca.csr --region {region} "
        f"--name {name} --out {region}-bundle"
    )
    echo("then here, with the root fingerprint the province operator tells you out of band:")
    echo(
        f"  govnode certs install --config {config_path} --bundle {region}-bundle "
        "--fingerprint SHA256:..."
    )
