"""``govnode agency``: issue client credentials for an agency system."""

from __future__ import annotations

from pathlib import Path

import typer

from gateway.identity import Role
from node.cli._common import CONFIG_OPTION, echo, load
from node.cli.certs import record_issued
from node.pki import fingerprint, issue_client

app = typer.Typer(help="Issue credentials for agency systems.", no_args_is_help=True)


@app.command("add")
def add(
    config: Path = CONFIG_OPTION,
    code: str = typer.Option(..., "--code", help="The agency's 统一社会信用代码 (GB 32100)."),
    name: str = typer.Option(..., "--name", help="The agency's name, e.g. 福州市公安局."),
    out: Path = typer.Option(..., "--out", help="Directory for client.key, client.crt, ca.crt."),
    days: int = typer.Option(365, "--days", min=1, max=825, help="Validity in days."),
) -> None:
    """Issue an agency client certificate from this node's CA and write a ready bundle."""
    cfg = load(config)
    keypair, paths = issue_client(
        cfg, role=Role.AGENCY, subject=code, name=name, out=out, days=days
    )
    record_issued(cfg, keypair.cert)
    echo(f"Issued spiffe identity for {name}: {keypair.cert.subject.rfc4514_string()}")
    echo(f"  serial {keypair.cert.serial_number:x}, fingerprint {fingerprint(keypair.cert)}")
    for label, path in paths.items():
        echo(f"  {label:<6} {path}")
