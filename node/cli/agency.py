"""``govnode agency``: issue client credentials for an agency system."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from gateway.identity import Role
from node.cli._common import CONFIG_OPTION, UserError, echo, load
from node.cli.certs import record_issued
from node.pki import fingerprint, issue_client

#: The bundle's optional file naming the node's address; the agency SDK (govnode_client) reads it.
ENDPOINT_FILE = "endpoint"
#: HOST:PORT, a DNS name or IPv4 address, or [IPv6]:PORT.
_ENDPOINT = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}")

app = typer.Typer(help="Issue credentials for agency systems.", no_args_is_help=True)


@app.command("add")
def add(
    config: Path = CONFIG_OPTION,
    code: str = typer.Option(..., "--code", help="The agency's 统一社会信用代码 (GB 32100)."),
    name: str = typer.Option(..., "--name", help="The agency's name, e.g. 福州市公安局."),
    out: Path = typer.Option(..., "--out", help="Directory for client.key, client.crt, ca.crt."),
    days: int = typer.Option(365, "--days", min=1, max=825, help="Validity in days."),
    endpoint: str = typer.Option(
        "",
        "--endpoint",
        help="The node's address as the agency reaches it (HOST:PORT), written to the "
        "bundle's `endpoint` file for the agency SDK (govnode_client).",
    ),
) -> None:
    """Issue an agency client certificate from this node's CA and write a ready bundle."""
    if endpoint and not _ENDPOINT.fullmatch(endpoint):
        raise UserError(f"--endpoint: {endpoint[:64]!r} is not HOST:PORT")
    cfg = load(config)
    keypair, paths = issue_client(
        cfg, role=Role.AGENCY, subject=code, name=name, out=out, days=days
    )
    if endpoint:
        paths["endpoint"] = out / ENDPOINT_FILE
        paths["endpoint"].write_text(endpoint + "\n", encoding="ascii")
    record_issued(cfg, keypair.cert)
    echo(f"Issued spiffe identity for {name}: {keypair.cert.subject.rfc4514_string()}")
    echo(f"  serial {keypair.cert.serial_number:x}, fingerprint {fingerprint(keypair.cert)}")
    for label, path in paths.items():
        echo(f"  {label:<6} {path}")
