"""Approving a city as a sub-platform after it passed the conformance suite (第三十一条).

At the province, ``govnode federation approve`` hands a signed conformance report
(``report.json``, see :mod:`conformance.report`) to :func:`check_report`, which decides from the
report alone, never from what the tester claims about it:

- the signature verifies with a tester certificate of THIS province (its region, its root);
- the report is for this suite version and is recent;
- the target's certificate chain in the report leads to the root and names the node of a city
  this province knows (a member that joined, or a city that has sent heartbeats);
- every mandatory case of the suite ran and passed (recomputed from the results).

:func:`record_approval` then keeps the report, byte for byte, with the approval. The province
tells the city on its next heartbeat; the city reports ``NodeInfo.approved_sub_platform``, and
open data (第三十一条) is served only when it is set.

Pure domain and storage: no grpc.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import IdentityError, Role, check_chain
from node.models import FederationMemberRow, NodeMetaRow, SubPlatformApprovalRow
from node.storage import Database

OWN_APPROVAL_KEY = "sub_platform.approved"
DEFAULT_MAX_AGE = dt.timedelta(days=30)


class ApprovalError(Exception):
    """The report cannot support an approval; the message says why, in one line."""


@dataclass(frozen=True)
class ApprovalFacts:
    region: str
    node_identity: str
    tester_identity: str
    suite_version: str
    report_sha256: str
    finished_at: dt.datetime
    passed: int


def check_report(
    report: dict[str, Any],
    *,
    tester_uri: str,
    report_sha256: str,
    province_region: str,
    trust_domain: str,
    root: x509.Certificate,
    known_cities: Collection[str],
    suite_version: str,
    mandatory_ids: Collection[str],
    now: dt.datetime,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> ApprovalFacts:
    """The facts an approval records, or :class:`ApprovalError` naming the first problem.

    ``report`` and ``tester_uri`` come from a report whose signature was already verified
    against ``root``; everything else is checked here.
    """
    tester_region = tester_uri.removeprefix("spiffe://").split(".", 1)[0]
    if tester_region != province_region:
        raise ApprovalError(
            f"the report is signed by {tester_uri}, not a tester of this province "
            f"({province_region}): testers are issued with `govnode certs issue-tester` here"
        )
    if report.get("tester_identity") != tester_uri:
        raise ApprovalError(
            f"the report names tester {report.get('tester_identity')!r} but is signed by "
            f"{tester_uri}"
        )
    if str(report.get("suite_version")) != suite_version:
        raise ApprovalError(
            f"the report is from suite version {report.get('suite_version')!r}; this province "
            f"approves on version {suite_version}: run the current suite"
        )
    finished_at = _when(report.get("finished_at"))
    if finished_at > now + dt.timedelta(minutes=5):
        raise ApprovalError(f"the report finished in the future ({finished_at.isoformat()})")
    if now - finished_at > max_age:
        raise ApprovalError(
            f"the report is from {finished_at:%Y-%m-%d}, older than {max_age.days} days: "
            "run the suite again"
        )
    identity = _target_identity(report, trust_domain, root)
    if identity.role is not Role.NODE or identity.region == province_region:
        raise ApprovalError(f"the report's target {identity} is not a city node")
    if identity.region not in known_cities:
        raise ApprovalError(
            f"city {identity.region} is not a member of this federation (it has neither "
            "joined nor sent a heartbeat)"
        )
    results = {
        str(r.get("id")): str(r.get("outcome"))
        for r in report.get("results", [])
        if isinstance(r, dict)
    }
    missing = sorted(i for i in mandatory_ids if i not in results or results[i] == "skipped")
    if missing:
        raise ApprovalError(
            f"mandatory case(s) {', '.join(missing)} did not run: a partial run (--only) "
            "cannot be approved"
        )
    failed = sorted(i for i in mandatory_ids if results[i] != "passed")
    if failed:
        raise ApprovalError(f"mandatory case(s) {', '.join(failed)} did not pass")
    return ApprovalFacts(
        region=identity.region,
        node_identity=identity.uri,
        tester_identity=tester_uri,
        suite_version=suite_version,
        report_sha256=report_sha256,
        finished_at=finished_at,
        passed=sum(1 for outcome in results.values() if outcome == "passed"),
    )


def _when(value: object) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ApprovalError(f"the report's finished_at {value!r} is not a time") from None
    if when.tzinfo is None:
        raise ApprovalError("the report's finished_at has no time zone")
    return when


def _target_identity(report: dict[str, Any], trust_domain: str, root: x509.Certificate) -> Any:
    pem = str(report.get("target_chain_pem") or "")
    if not pem:
        raise ApprovalError("the report holds no target certificate (the handshake failed)")
    try:
        chain = [c for c in x509.load_pem_x509_certificates(pem.encode()) if c != root]
    except ValueError as exc:
        raise ApprovalError(f"the report's target certificate is unreadable: {exc}") from None
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:  # InvalidSignature, ValueError, TypeError
            raise ApprovalError(
                "the report's target certificate chain does not lead to this province's root"
            ) from None
    try:
        identity = check_chain(chain, trust_domain)
    except IdentityError as exc:
        raise ApprovalError(f"the report's target certificate: {exc}") from None
    if report.get("target_identity") != identity.uri:
        raise ApprovalError(
            f"the report names target {report.get('target_identity')!r}, but its certificate "
            f"is {identity}"
        )
    return identity


# --- storage ----------------------------------------------------------------------------------


async def known_cities(db: Database) -> set[str]:
    """Cities the province knows: joined members and every city that sent a heartbeat."""

    async def txn(session: AsyncSession) -> set[str]:
        members = {m.region for m in (await session.exec(select(FederationMemberRow))).all()}
        beats = {
            row.key.removeprefix("peer_info.")
            for row in (
                await session.exec(
                    select(NodeMetaRow).where(col(NodeMetaRow.key).startswith("peer_info."))
                )
            ).all()
        }
        return members | beats

    return await db.read("approval.known_cities", txn)


async def record_approval(
    db: Database, facts: ApprovalFacts, report_text: str, approved_by: str, now: dt.datetime
) -> bool:
    """Keep the approval and its report; False when this very report was already approved."""

    async def txn(session: AsyncSession) -> bool:
        seen = await session.exec(
            select(SubPlatformApprovalRow).where(
                SubPlatformApprovalRow.report_sha256 == facts.report_sha256
            )
        )
        if seen.first() is not None:
            return False
        session.add(
            SubPlatformApprovalRow(
                region=facts.region,
                node_identity=facts.node_identity,
                tester_identity=facts.tester_identity,
                suite_version=facts.suite_version,
                report_sha256=facts.report_sha256,
                report=report_text,
                approved_by=approved_by,
                approved_at=now,
            )
        )
        member = await session.get(FederationMemberRow, facts.region)
        if member is not None:
            member.approved_sub_platform = True
        return True

    return await db.write("approval.record", txn)


async def approved_regions(db: Database) -> set[str]:
    async def txn(session: AsyncSession) -> set[str]:
        rows = await session.exec(select(SubPlatformApprovalRow.region).distinct())
        return set(rows.all())

    return await db.read("approval.regions", txn)


async def is_approved(db: Database, region: str) -> bool:
    row = await db.fetch_one(
        "SELECT 1 FROM sub_platform_approval WHERE region = :region LIMIT 1", {"region": region}
    )
    return row is not None


#: Approved sub-platforms the province reads at most (a province has a few dozen cities).
MAX_APPROVED = 100


async def approved_cities(db: Database) -> list[str]:
    """The cities this province approved as open-data sub-platforms (第三十一条), by region."""
    rows = await db.fetch_all(
        "SELECT DISTINCT region FROM sub_platform_approval ORDER BY region LIMIT :limit",
        {"limit": MAX_APPROVED},
    )
    return [str(row[0]) for row in rows]


# --- at a city: what the province said on its last heartbeat ---------------------------------


async def own_approval(db: Database) -> bool:
    row = await db.fetch_one(
        "SELECT value FROM node_meta WHERE key = :key", {"key": OWN_APPROVAL_KEY}
    )
    return row is not None and row[0] == "true"


async def set_own_approval(db: Database, approved: bool) -> None:
    value = "true" if approved else "false"

    async def txn(session: AsyncSession) -> None:
        row = await session.get(NodeMetaRow, OWN_APPROVAL_KEY, with_for_update=True)
        if row is None:
            session.add(NodeMetaRow(key=OWN_APPROVAL_KEY, value=value))
        else:
            row.value = value

    await db.write("approval.own", txn)


async def approvals(db: Database, region: str = "") -> list[SubPlatformApprovalRow]:
    """The approvals recorded here (of ``region``, or of every city), newest first, at most
    :data:`MAX_APPROVED`; each with the signed report it rests on."""

    async def txn(session: AsyncSession) -> list[SubPlatformApprovalRow]:
        query = select(SubPlatformApprovalRow)
        if region:
            query = query.where(col(SubPlatformApprovalRow.region) == region)
        rows = await session.exec(
            query.order_by(col(SubPlatformApprovalRow.approved_at).desc()).limit(MAX_APPROVED)
        )
        return list(rows.all())

    return await db.read("approval.list", txn)
