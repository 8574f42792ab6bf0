"""Issuing project acceptance certificates (第九、二十二条): the five conditions evaluated over this
node's own tables in one read, then, when every one holds, the certificate signed by the node
key, stored and audited; otherwise a refusal naming every condition that failed.

1. registered: the agency's catalog entries, active, of this node's region (for a project:
   each listed resource exists here, is active and is the agency's);
2. aggregated on time: none overdue under its update cycle (node.records' aggregation status);
3. quality: each one's newest quality check is at most ``max_check_age_days`` old and graded
   ``min_grade`` or better;
4. no open rectification notice on the agency, no criticism (通报批评) published in the last
   ``criticism_days``;
5. no error report (纠错) on the agency's resources overdue now (node.quality.count_overdue).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.quote import quote
from node.audit import AuditEntry, Operation, request_digest
from node.catalog import ResourceEntry, ResourceStatus, entry_from_json
from node.errors import FailedPrecondition, InvalidArgument
from node.models import AcceptanceCertificateRow
from node.quality import count_overdue
from node.records import aggregation_status_on
from node.storage import in_chunks
from node.supervision._certificate import (
    MAX_PROJECT,
    MAX_RESOURCES,
    Certificate,
    CertificateError,
    CertifiedResource,
    make_certificate,
)
from node.supervision._reports import Supervision, check_agency_code
from node.times import CST

__all__ = ["CERTIFY_METHOD", "Certifier", "CertifySettings", "NodeSigner"]

#: The audit record's method for a certificate issued by the CLI.
CERTIFY_METHOD = "supervision.certify"
_GRADES = "ABCDE"
_CATALOG = SQLModel.metadata.tables["catalog_entry"]
_QUALITY = SQLModel.metadata.tables["quality_check"]
_NOTICES = SQLModel.metadata.tables["rectification_notice"]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class CertifySettings:
    """``[supervision] certify_*`` and ``certificate_days``."""

    min_grade: str = "C"
    max_check_age_days: int = 7
    criticism_days: int = 365
    certificate_days: int = 90


@dataclass(frozen=True)
class NodeSigner:
    """The node's identity, key and chain (leaf first, without the root)."""

    node_uri: str
    key: ec.EllipticCurvePrivateKey
    chain_pem: str


def _cst(moment: dt.datetime) -> str:
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M CST")


def _check_project(project: str, resources: list[str]) -> None:
    if not project and resources:
        raise InvalidArgument("--resources needs --project: the project they are certified for")
    if project and not resources:
        raise InvalidArgument("--project needs --resources: the project's resource codes")
    if project and (
        len(project) > MAX_PROJECT
        or project == "-"
        or not project.isprintable()
        or project != project.strip()
    ):
        raise InvalidArgument(
            f"project: {quote(project)} is not a name of 1 to {MAX_PROJECT} printable characters"
        )
    if len(resources) > MAX_RESOURCES:
        raise InvalidArgument(f"resources: at most {MAX_RESOURCES}, got {len(resources)}")
    if len(set(resources)) != len(resources):
        raise InvalidArgument("resources: a resource code is listed twice")
    for code in resources:
        if not code or len(code) > 64:
            raise InvalidArgument(f"resources: {quote(code)} is not a resource code")


class Certifier:
    """Certificates of this node's agencies, issued as this node."""

    def __init__(
        self, supervision: Supervision, signer: NodeSigner, settings: CertifySettings
    ) -> None:
        self._s = supervision
        self._signer = signer
        self._settings = settings

    async def _entries(
        self, conn: AsyncConnection, agency: str, codes: list[str], failed: list[str]
    ) -> list[ResourceEntry]:
        """Condition 1: the resources certified (none when it fails)."""
        region = self._s.region
        if codes:
            found = {}
            for chunk in in_chunks(codes):
                rows = await conn.execute(
                    sa.select(_CATALOG.c.resource_code, _CATALOG.c.body).where(
                        _CATALOG.c.resource_code.in_(chunk)
                    )
                )
                found.update({row.resource_code: entry_from_json(row.body) for row in rows})
            entries = []
            for code in codes:
                entry = found.get(code)
                if entry is None:
                    failed.append(
                        f"registered: resource {quote(code)} is not in this node's catalog"
                    )
                elif entry.provider_code != agency:
                    failed.append(
                        f"registered: resource {code} is agency {entry.provider_code}'s, not "
                        f"{agency}'s"
                    )
                elif entry.region != region:
                    failed.append(
                        f"registered: resource {code} is of region {entry.region}, not this "
                        f"node's {region}"
                    )
                elif entry.status is not ResourceStatus.ACTIVE:
                    failed.append(
                        f"registered: resource {code} is {entry.status.value}, not active"
                    )
                else:
                    entries.append(entry)
            return entries if len(entries) == len(codes) else []
        rows = await conn.execute(
            sa.select(_CATALOG.c.region, _CATALOG.c.body)
            .where(_CATALOG.c.provider_code == agency)
            .order_by(_CATALOG.c.resource_code)
            .limit(MAX_RESOURCES * 4)
        )
        every = [entry_from_json(row.body) for row in rows]
        entries = [e for e in every if e.region == region and e.status is ResourceStatus.ACTIVE]
        if not entries:
            elsewhere = sorted({e.region for e in every if e.region != region})
            where = f" (its entries here are of region {', '.join(elsewhere)})" if elsewhere else ""
            failed.append(
                f"registered: agency {agency} has no active catalog entry of region {region}"
                f"{where} (第十二条)"
            )
            return []
        if len(entries) > MAX_RESOURCES:
            failed.append(
                f"registered: agency {agency} has more than {MAX_RESOURCES} resources; certify "
                "it project by project (--project, --resources)"
            )
            return []
        return entries

    async def _conditions(
        self, conn: AsyncConnection, agency: str, codes: list[str], now: dt.datetime
    ) -> tuple[list[CertifiedResource], list[str]]:
        settings = self._settings
        failed: list[str] = []
        entries = await self._entries(conn, agency, codes, failed)
        # 2. aggregated on time (第二十一条).
        for status in await aggregation_status_on(conn, entries, now):
            if status.overdue:
                due = _cst(status.due_at) if status.due_at is not None else "?"
                failed.append(
                    f"aggregated: resource {status.resource_code} is overdue since {due} "
                    f"(update cycle {status.update_cycle.value}, 第二十一条)"
                )
        # 3. quality (第十五、十六条).
        newest: dict[str, Any] = {}
        for chunk in in_chunks([e.resource_code for e in entries]):
            rows = await conn.execute(
                sa.select(_QUALITY.c.resource_code, _QUALITY.c.checked_at, _QUALITY.c.grade)
                .where(_QUALITY.c.resource_code.in_(chunk))
                .order_by(_QUALITY.c.checked_at, _QUALITY.c.id)
            )
            for row in rows:
                newest[row.resource_code] = row
        oldest = now - dt.timedelta(days=settings.max_check_age_days)
        certified = []
        for entry in entries:
            code = entry.resource_code
            check = newest.get(code)
            if check is None:
                failed.append(f"quality: resource {code} has no quality check")
                continue
            if check.checked_at < oldest:
                failed.append(
                    f"quality: resource {code} was last checked {_cst(check.checked_at)}, more "
                    f"than {settings.max_check_age_days} days ago"
                )
            if check.grade not in _GRADES:
                failed.append(f"quality: resource {code}: nothing could be measured (no grade)")
            elif _GRADES.index(check.grade) > _GRADES.index(settings.min_grade):
                failed.append(
                    f"quality: resource {code} is graded {check.grade}, below {settings.min_grade}"
                )
            else:
                certified.append(CertifiedResource(code, check.grade, check.checked_at))
        # 4. rectification (第四十二条).
        since = now - dt.timedelta(days=settings.criticism_days)
        rows = await conn.execute(
            sa.select(_NOTICES.c.id, _NOTICES.c.status, _NOTICES.c.deadline, _NOTICES.c.closed_at)
            .where(
                _NOTICES.c.agency_code == agency,
                sa.or_(
                    _NOTICES.c.status == "open",
                    sa.and_(_NOTICES.c.status == "criticised", _NOTICES.c.closed_at >= since),
                ),
            )
            .order_by(_NOTICES.c.issued_at, _NOTICES.c.id)
            .limit(20)
        )
        for row in rows:
            if row.status == "open":
                failed.append(
                    f"rectification: notice {row.id} is open (责令限期改正, deadline "
                    f"{_cst(row.deadline)})"
                )
            else:
                failed.append(
                    f"rectification: notice {row.id} was published as 通报批评 on "
                    f"{_cst(row.closed_at)}, within the last {settings.criticism_days} days"
                )
        # 5. corrections (纠错, 第十六条).
        overdue, _ = await count_overdue(conn, agency, _EPOCH, now, now, open_only=True)
        if overdue:
            failed.append(
                f"corrections: {overdue} error report(s) (纠错) on agency {agency}'s resources "
                "are overdue (第十六条)"
            )
        return certified, failed

    async def certify(
        self, agency: str, project: str, resources: list[str], by: str
    ) -> tuple[Certificate, bytes]:
        """Issue the certificate (stored and audited) and return it with its file; refuses
        FAILED_PRECONDITION naming every condition that fails."""
        check_agency_code(agency)
        _check_project(project, resources)
        settings = self._settings
        now = self._s.now().astimezone(dt.UTC).replace(microsecond=0)
        head = await self._s.audit.tree_head()

        async def txn(session: AsyncSession) -> tuple[list[CertifiedResource], list[str]]:
            return await self._conditions(await session.connection(), agency, resources, now)

        certified, failed = await self._s.db.read("supervision.certify", txn)
        what = f"project {project!r} of agency {agency}" if project else f"agency {agency}"
        if failed:
            raise FailedPrecondition(
                f"cannot certify {what} (第九、二十二条): " + "; ".join(failed)
            )
        try:
            certificate = Certificate(
                agency_code=agency,
                project=project,
                region=self._s.region,
                resources=tuple(certified),
                min_grade=settings.min_grade,
                max_check_age_days=settings.max_check_age_days,
                criticism_days=settings.criticism_days,
                node=self._signer.node_uri,
                issued_at=now,
                valid_until=now + dt.timedelta(days=settings.certificate_days),
                audit_size=head.size,
                audit_root=head.root.hex(),
                serial=f"{self._s.region}-C-{os.urandom(8).hex()}",
            )
            document = make_certificate(certificate, self._signer.key, self._signer.chain_pem)
        except CertificateError as exc:
            raise FailedPrecondition(f"cannot sign the certificate ({exc.check}): {exc}") from None

        async def store(session: AsyncSession) -> None:
            session.add(
                AcceptanceCertificateRow(
                    serial=certificate.serial,
                    agency_code=agency,
                    project=project,
                    resources=json.dumps([r.code for r in certificate.resources]),
                    issued_at=certificate.issued_at,
                    valid_until=certificate.valid_until,
                    issued_by=by,
                    audit_size=certificate.audit_size,
                    audit_root=certificate.audit_root,
                    document=document.decode(),
                )
            )

        await self._s.db.write("supervision.store_certificate", store)
        await self._s.audit.append(
            AuditEntry(
                caller=by,
                method=CERTIFY_METHOD,
                operation=Operation.ANALYZE,
                outcome="OK",
                request_digest=request_digest(f"{CERTIFY_METHOD} {certificate.serial}".encode()),
                detail={
                    "certificate": certificate.serial,
                    "agency": agency,
                    "project": project,
                    "resources": len(certificate.resources),
                },
            )
        )
        return certificate, document
