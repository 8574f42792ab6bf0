"""Approving a city as a sub-platform (第三十一条) on a signed conformance report: verify the
report, check it against what the province knows, record the approval.

It sits at node's top level because two edges use it, ``govnode federation approve`` (cli) and
the demo's last step, and the one may not import the other. It is the one module outside the
cli and the demo that imports the conformance suite (its version, its mandatory cases and the
report signature), and it does so lazily so neither edge pays for the suite unless it approves.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from cryptography import x509

from node.config import NodeConfig
from node.federation import (
    DEFAULT_MAX_AGE,
    ApprovalError,
    ApprovalFacts,
    check_report,
    known_cities,
    record_approval,
)
from node.storage import Database


class ReportRefused(Exception):
    """The report does not verify or does not support an approval; the message says why."""


async def approve_report(
    cfg: NodeConfig, data: bytes, approved_by: str, max_age: dt.timedelta = DEFAULT_MAX_AGE
) -> tuple[ApprovalFacts, bool]:
    """Verify a signed conformance report and record the approval it supports; returns the
    facts and whether the approval is new. ReportRefused names why a report is refused."""
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        return await approve_report_in(db, cfg, data, approved_by, max_age)
    finally:
        await db.close()


async def approve_report_in(
    db: Database,
    cfg: NodeConfig,
    data: bytes,
    approved_by: str,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> tuple[ApprovalFacts, bool]:
    """:func:`approve_report` on a database already open: the serving node's (the operator
    console approves through it)."""
    from conformance.model import SUITE_VERSION
    from conformance.report import ReportError, verify_signed_report
    from conformance.suite import all_cases

    root_path = cfg.path(cfg.tls.root)
    # File reads and signature checks off the event loop: the console runs this in the node.
    root_pem = await asyncio.to_thread(root_path.read_bytes)
    try:
        verified = await asyncio.to_thread(verify_signed_report, data, root_pem)
    except ReportError as exc:
        raise ReportRefused(f"the report does not verify: {exc}") from None
    now = dt.datetime.now(dt.UTC)
    try:
        facts = check_report(
            verified.report,
            tester_uri=verified.tester.uri,
            report_sha256=verified.sha256,
            province_region=cfg.node.region,
            trust_domain=cfg.node.trust_domain,
            root=x509.load_pem_x509_certificate(root_pem),
            known_cities=await known_cities(db),
            suite_version=SUITE_VERSION,
            mandatory_ids=[c.info.id for c in all_cases() if c.info.mandatory],
            now=now,
            max_age=max_age,
        )
    except ApprovalError as exc:
        raise ReportRefused(f"not approved: {exc}") from None
    new = await record_approval(db, facts, data.decode("utf-8"), approved_by, now)
    return facts, new
