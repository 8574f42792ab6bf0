"""``govnode portal``: the public open data portal (开放平台, 第三十条), its own process.

- ``init``: write ``portal.toml`` next to the portal's credentials, and (``--self-signed``) a
  self-signed HTTPS certificate for trials;
- ``serve``: run it. It talks to its node only over mutual TLS with the portal certificate
  from ``govnode certs issue-portal``; it never opens the node's database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from cryptography import x509

from gateway.identity import IdentityError, identity_of
from gateway.tracing_setup import TracingUnavailable
from node.cli._common import UserError, echo
from node.opendata import FileDigest, ReceiptError, check_receipt
from node.times import CST
from portal.app import ReceiptChecker, ReceiptRefused
from portal.config import DEFAULT_LISTEN, PortalConfig, PortalConfigError, load_portal_config
from portal.server import self_signed, serve, write_config

app = typer.Typer(
    help="The public open data portal (第三十条): `init` writes its configuration, `serve` "
    "runs it.",
    no_args_is_help=True,
)

PORTAL_CONFIG = typer.Option(..., "--config", "-c", help="The portal's portal.toml.")


def receipt_checker(config: PortalConfig) -> ReceiptChecker:
    """The node's offline receipt check, against the root in the portal's credentials and the
    trust domain of its own certificate."""
    tls = config.node_tls
    try:
        root = x509.load_pem_x509_certificate(tls.root.read_bytes())
        own = x509.load_pem_x509_certificate(tls.chain.read_bytes())
        trust_domain = identity_of(own).trust_domain
    except (OSError, ValueError, IdentityError) as exc:
        raise UserError(f"portal credentials {tls.chain.parent}: {exc}") from None

    def check(receipt: bytes, *, sha256: str | None, size: int | None) -> Mapping[str, Any]:
        digest = None if sha256 is None or size is None else FileDigest(sha256, size)
        try:
            stated = check_receipt(receipt, root, trust_domain, file_digest=digest)
        except ReceiptError as exc:
            raise ReceiptRefused(exc.check, str(exc)) from None
        fields = dataclasses.asdict(stated)
        fields["obtained_at"] = f"{stated.obtained_at.astimezone(CST):%Y-%m-%d %H:%M:%S} CST"
        return fields

    return check


def _load(path: Path) -> PortalConfig:
    try:
        return load_portal_config(path)
    except PortalConfigError as exc:
        raise UserError(str(exc)) from None


@app.command("serve")
def serve_command(config: Path = PORTAL_CONFIG) -> None:
    """Serve the public over HTTPS until interrupted (SIGINT or SIGTERM)."""
    loaded = _load(config)
    checker = receipt_checker(loaded)

    def ready(url: str) -> None:
        echo(f"portal serving {url} for the node at {loaded.section.node} (Ctrl-C stops)")

    try:
        asyncio.run(serve(loaded, checker, ready=ready))
    except TracingUnavailable as exc:
        raise UserError(f"{config}: {exc}") from None
    except OSError as exc:
        raise UserError(f"portal: cannot listen on {loaded.section.listen}: {exc}") from None


@app.command("init")
def init_command(
    directory: Path = typer.Option(..., "--dir", help="Where portal.toml goes."),
    node: str = typer.Option(..., "--node", help="The node's gRPC address, HOST:PORT."),
    credentials: Path = typer.Option(
        ..., "--credentials", help="The directory `govnode certs issue-portal --out` wrote."
    ),
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="HOST:PORT the public uses."),
    base_url: str = typer.Option("", "--base-url", help="The public address (https://…)."),
    node_name: str = typer.Option(
        "", "--node-name", help="The name in the node's certificate, if not the address's host."
    ),
    self_signed_for: str = typer.Option(
        "",
        "--self-signed",
        help="Make a self-signed HTTPS certificate for this host name or address (trials).",
    ),
) -> None:
    """Write portal.toml; with --self-signed, also server.key and server.crt."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "portal.toml").exists():
        raise UserError(f"{directory / 'portal.toml'} exists; not overwritten")
    bundle = credentials.resolve()
    for name in ("client.key", "client.crt", "ca.crt"):
        if not (bundle / name).is_file():
            raise UserError(f"--credentials {credentials}: no {name} (govnode certs issue-portal)")
    if self_signed_for:
        if (directory / "server.key").exists():
            raise UserError(f"{directory / 'server.key'} exists; not overwritten")
        cert, _ = self_signed(directory, self_signed_for)
        echo(f"Wrote a self-signed certificate for {self_signed_for}: {cert} (for trials only)")
    try:
        path = write_config(
            directory,
            node=node,
            credentials=bundle,
            listen=listen,
            base_url=base_url,
            node_name=node_name,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    echo(f"Wrote {path}; run: govnode portal serve --config {path}")
