"""``govnode audit usage`` and ``govnode audit check-usage``: a provider's usage log as a signed
bundle, for providers that do not stream (使用日志推送给相应的数据生产应用单位, 第三十九条).

A bundle is a directory:

- ``records.jsonl``: one record per line, as its chain hash covers it (``content``,
  ``prev_hash``, ``hash``);
- ``proofs/<sequence>.tlog-proof``: each record's proof file (``govnode audit check-proof``);
- ``statements.jsonl``: the node's signed usage statements, one per line (``note``: the signed
  note, ``chain_pem``: the node's chain, ``sequences``: the sequences it lists).

It holds exactly what StreamUsageLog sends, and is checked by the same function.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import typer
from cryptography import x509

from gateway.identity import IdentityError, Role, make_identity, parse_spiffe
from node.audit import (
    MAX_PROOF_BYTES,
    AuditLog,
    UsageLog,
    UsageRecord,
    check_usage,
    cosigners,
    provided_resources,
)
from node.catalog import Catalog
from node.cli._common import CONFIG_OPTION, UserError, echo, load, node_checkpoints
from node.config import NodeConfig
from node.errors import DomainError
from node.pki import load_private_key
from node.storage import Database
from node.terminal import safe_text
from node.times import CST

#: A bundle's statements file is read whole; more than this is not a bundle.
MAX_STATEMENTS_BYTES = 64 * 1024 * 1024


async def _bundle(cfg: NodeConfig, agency: str, since: dt.datetime, out: Path) -> tuple[int, int]:
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        audit = AuditLog(db)
        checkpoints, node, chain_pem = node_checkpoints(cfg, db, audit)
        key = load_private_key(cfg.path(cfg.tls.key))  # it signs the usage statements
        try:
            provider = (
                parse_spiffe(agency)
                if agency.startswith("spiffe://")
                else make_identity(cfg.node.region, cfg.node.trust_domain, Role.AGENCY, agency)
            )
        except IdentityError as exc:
            raise UserError(f"--agency: {exc}") from None
        try:
            codes = await provided_resources(Catalog(db, node_region=cfg.node.region), provider)
        except DomainError as exc:
            raise UserError(f"--agency {agency}: {exc}") from None
        from node.clients import witness_rule  # here: node.clients is the node's client side

        witnessed = await checkpoints.newest_witnessed(await witness_rule(cfg, node, db)())
        first = await audit.query(since=since, limit=1)
        if witnessed is None or not first or first[0].sequence > witnessed.size:
            raise UserError(
                f"--since {since.astimezone(CST):%Y-%m-%d}: no record since then is covered by a "
                "witnessed checkpoint yet; try again after the next checkpoint ([audit] "
                f"checkpoint_seconds = {cfg.audit.checkpoint_seconds:g})"
            )
        after = first[0].sequence - 1
        (out / "proofs").mkdir(parents=True)
        records = statements = 0
        with (
            (out / "records.jsonl").open("w", encoding="utf-8") as record_lines,
            (out / "statements.jsonl").open("w", encoding="utf-8") as statement_lines,
        ):
            async for item in UsageLog(db, audit, node.host, key, chain_pem).stretch(
                provider=provider.uri,
                resources=codes,
                checkpoint=witnessed,
                cosigners=list((await cosigners(db)).values()),
                statement_after=after,
                after=after,
            ):
                if isinstance(item, UsageRecord):
                    record_lines.write(item.to_json() + "\n")
                    (out / "proofs" / f"{item.sequence}.tlog-proof").write_bytes(item.proof)
                    records += 1
                else:
                    statement_lines.write(item.to_json() + "\n")
                    statements += 1
                    echo(
                        f"statement: sequences {item.statement.first}-{item.statement.last}, "
                        f"{item.statement.count} of them {provider}'s"
                    )
        return records, statements
    finally:
        await db.close()


def usage(
    config: Path = CONFIG_OPTION,
    agency: str = typer.Option(
        ...,
        "--agency",
        help="The provider agency: its 统一社会信用代码 (an agency of this node's region), or "
        "its identity (spiffe://...).",
    ),
    since: str = typer.Option(
        ..., "--since", help="The first day (YYYY-MM-DD, China Standard Time) to include."
    ),
    out: Path = typer.Option(..., "--out", help="A new directory to write the bundle to."),
) -> None:
    """Write the usage log of an agency's resources as a signed bundle: every record about
    them since DATE that a witnessed checkpoint covers, each with its proof file, and the
    node's signed statements that these are all of them (第三十九条). `govnode audit
    check-usage` checks it offline."""
    try:
        day = dt.datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=CST)
    except ValueError:
        raise UserError(f"--since: {since!r} is not a date YYYY-MM-DD") from None
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: exists and is not empty; choose a new directory")
    records, statements = asyncio.run(_bundle(load(config), agency, day, out))
    echo(f"wrote {out}: {records} records with their proofs, {statements} statements")


def read_bundle(
    directory: Path,
) -> tuple[list[bytes], list[tuple[bytes, str, list[int]]], list[str]]:
    """The proofs, statements and problems of a bundle's layout (records.jsonl lines that no
    proof carries)."""
    problems: list[str] = []
    proofs: dict[int, bytes] = {}
    for path in sorted((directory / "proofs").glob("*.tlog-proof")):
        with path.open("rb") as f:
            proofs[int(path.stem) if path.stem.isdigit() else -len(proofs)] = f.read(
                MAX_PROOF_BYTES + 1
            )
    statements: list[tuple[bytes, str, list[int]]] = []
    with (directory / "statements.jsonl").open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                data = json.loads(line)
                statements.append(
                    (str(data["note"]).encode(), str(data["chain_pem"]), list(data["sequences"]))
                )
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"statements.jsonl line {n}: not a statement ({exc})")
    with (directory / "records.jsonl").open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                sequence = int(json.loads(line)["content"]["sequence"])
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"records.jsonl line {n}: not a record ({exc})")
                continue
            if sequence not in proofs:
                problems.append(f"records.jsonl: record #{sequence} has no proof file")
    return list(proofs.values()), statements, problems


def check_usage_bundle(
    directory: Path = typer.Argument(..., help="A bundle written by `govnode audit usage`."),
    root: Path = typer.Option(..., "--root", help="The province root certificate (PEM)."),
    trust_domain: str = typer.Option(
        "fujian.gov.cn", "--trust-domain", help="The platform's SPIFFE trust domain."
    ),
) -> None:
    """Check a usage bundle offline: every proof (as check-proof), every statement's signature
    by the node (its chain to the root), and that the records in each statement's range are
    exactly those it lists: a record left out of the bundle is named. Exit 1 listing what
    fails."""
    try:
        anchor = x509.load_pem_x509_certificate(root.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"--root {root}: not a PEM certificate ({exc})") from None
    try:
        if (directory / "statements.jsonl").stat().st_size > MAX_STATEMENTS_BYTES:
            raise UserError(f"{directory}: statements.jsonl is too large for a bundle")
        proofs, statements, problems = read_bundle(directory)
    except OSError as exc:
        raise UserError(
            f"{directory}: not a usage bundle ({exc.strerror}: {exc.filename})"
        ) from None
    found = check_usage(proofs, statements, anchor, trust_domain)
    problems = [*problems, *found.problems]
    if problems:
        echo(f"usage INVALID: {len(problems)} problem(s)")
        for text in problems:
            echo(f"  {safe_text(text)}")
        raise typer.Exit(1)
    ranges = ", ".join(f"{a}-{b}" for a, b in found.covered)
    echo(
        f"usage OK: {found.records} records of the audit log {found.log} for {found.provider}; "
        f"{found.statements} statement(s) cover sequences {ranges} and list exactly these"
    )
