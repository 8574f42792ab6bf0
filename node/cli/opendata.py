"""``govnode opendata``: open data (开放开发, 第二十九至三十六条).

- ``check-receipt``: check a download receipt offline, with the province root certificate
  only (注明来源和获取日期, 第三十五条).
"""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography import x509

from node.cli._common import UserError, echo
from node.opendata import MAX_RECEIPT_BYTES, ReceiptError, check_receipt, sha256_of
from node.terminal import safe_text
from node.times import CST

app = typer.Typer(
    help=(
        "Open data (第二十九至三十六条): check a download receipt offline "
        "(`govnode opendata check-receipt --help`)."
    ),
    no_args_is_help=True,
)


@app.command("check-receipt")
def check_receipt_command(
    file: Path = typer.Argument(..., help="A download receipt (JSON) the node gave with a file."),
    root: Path = typer.Option(..., "--root", help="The province root certificate (PEM)."),
    trust_domain: str = typer.Option(
        "fujian.gov.cn", "--trust-domain", help="The platform's SPIFFE trust domain."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="The downloaded file: its SHA-256 and size must be the ones the receipt states.",
    ),
) -> None:
    """Check a download receipt offline: the node's certificate chain leads to the root, the
    node signed the receipt, and (with --data) the file is the one it describes. Prints the
    source, version, date obtained and recipient it states (第三十五条). Needs no node and no
    network. Exit 1 naming the check that failed."""
    try:
        anchor = x509.load_pem_x509_certificate(root.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"--root {root}: not a PEM certificate ({exc})") from None
    try:
        with file.open("rb") as f:
            receipt_bytes = f.read(MAX_RECEIPT_BYTES + 1)
        digest = None if data is None else sha256_of(data)
    except OSError as exc:
        raise UserError(f"{exc.filename}: {exc.strerror}") from None
    try:
        receipt = check_receipt(receipt_bytes, anchor, trust_domain, file_digest=digest)
    except ReceiptError as exc:
        echo(f"receipt INVALID ({exc.check} check): {safe_text(str(exc))}")
        raise typer.Exit(1) from None
    lines = [
        f"source: {receipt.dataset}",
        f"  resource {receipt.resource_code} {receipt.resource_name}",
        f"  provided by {receipt.provider_name} ({receipt.provider_code})",
        f"  published by {receipt.authority_name} ({receipt.authority_region})",
        f"version: {receipt.version} ({receipt.format}, {receipt.size} bytes, "
        f"sha256 {receipt.sha256})",
        f"obtained: {receipt.obtained_at.astimezone(CST):%Y-%m-%d %H:%M:%S} CST "
        f"by {receipt.recipient}",
        f"signed by: {receipt.node}",
    ]
    for line in lines:
        echo(safe_text(line))
    if data is not None:
        echo(safe_text(f"data: {data} is the file the receipt describes"))
    echo("receipt verified")
