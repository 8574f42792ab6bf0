"""``govnode init``: create a node directory with keys, certificates and a commented config."""

from __future__ import annotations

from pathlib import Path

import typer

from node.cli._common import UserError, cert_hosts, echo, split_hostport
from node.codes import Region
from node.pki import prepare_city, provision_province

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
    join_listen: str | None = typer.Option(
        None,
        "--join-listen",
        help=(
            "HOST:PORT of the join port, where cities join online with an invitation "
            "(TLS without a client certificate; only Join is served). Default: no join port; "
            "cities are admitted by file (`govnode certs sign-city`)."
        ),
    ),
) -> None:
    """Create the province root CA, the province's CA, the node certificate and config."""
    hosts = host
    if join_listen is not None:
        join_host = _check_join_listen(listen, join_listen)
        if join_host not in _WILDCARDS:
            hosts = [*host, join_host]  # cities verify the province's certificate there too
    made = provision_province(
        dir,
        region=region,
        name=name,
        listen=listen,
        trust_domain=trust_domain,
        hosts=cert_hosts(listen, hosts),
        join_listen=join_listen,
    )
    echo(f"Province node {name} ({region}) created in {dir}")
    echo(f"  identity:          {made.identity}")
    echo(f"  root fingerprint:  {made.root_fingerprint}")
    echo(f"  config:            {made.config_path}")
    if join_listen is not None:
        echo(f"  join port:         {join_listen} (cities join online once the node serves)")
    echo(f"Next: govnode serve --config {made.config_path}")
    if join_listen is not None:
        echo(
            f"then, for each city: govnode federation invite --config {made.config_path} "
            "--region CITY"
        )


_WILDCARDS = ("0.0.0.0", "::", "")


def _check_join_listen(listen: str, join_listen: str) -> str:
    """The join port's host, once it is a HOST:PORT apart from the node's own port."""
    host, port = split_hostport(listen, "--listen")
    join_host, join_port = split_hostport(join_listen, "--join-listen")
    overlaps = join_host == host or join_host in _WILDCARDS or host in _WILDCARDS
    if join_port == port and overlaps:
        raise UserError(
            f"--join-listen {join_listen} must differ from --listen {listen}: the join port is "
            "a second port (e.g. the listen port + 1)"
        )
    return join_host


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
