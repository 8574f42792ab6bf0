"""The certificates this node's CA issued: recorded when issued (by the CLI or the console),
listed with their expiry (soonest first, keyset-paged) and whether they are revoked."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import and_, or_
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import IdentityError, identity_of
from node.models import IssuedCertificateRow, RevokedCertificateRow
from node.pki._ca import serial_hex
from node.storage import Database

#: The most one page lists.
MAX_PAGE = 200

#: The kinds of client certificate a node's CA issues (their identity's role): a bounded set,
#: so that they can label a metric (node.ops) without ever naming a subject.
ISSUED_KINDS = ("agency", "operator", "tester", "portal", "authority")


@dataclass(frozen=True)
class IssuedCertificate:
    serial_hex: str
    identity: str
    kind: str
    name: str
    not_after: dt.datetime
    issued_at: dt.datetime
    issued_by: str
    #: The revocation list's reason when revoked, else None.
    revoked: str | None = None

    def expires_within(self, days: int, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.UTC)
        return self.not_after <= now + dt.timedelta(days=days)

    @property
    def cursor(self) -> str:
        """Where the next page starts (after this one)."""
        return f"{self.not_after.astimezone(dt.UTC).isoformat()}|{self.serial_hex}"


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    text = value if isinstance(value, str) else value.decode(errors="replace")
    return text[:200]


def parse_cursor(cursor: str) -> tuple[dt.datetime, str] | None:
    """A page cursor from :attr:`IssuedCertificate.cursor`, or None when it is not one."""
    when, sep, serial = cursor.partition("|")
    if not sep or not serial or len(serial) > 64:
        return None
    try:
        moment = dt.datetime.fromisoformat(when)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment, serial


class IssuedCertificates:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, cert: x509.Certificate, *, issued_by: str) -> IssuedCertificate:
        """Record a certificate just issued (its kind is its identity's role)."""
        try:
            identity = identity_of(cert)
            uri, kind = identity.uri, identity.role.value
        except IdentityError:
            uri, kind = cert.subject.rfc4514_string()[:300], "other"
        row = IssuedCertificateRow(
            serial_hex=serial_hex(cert),
            identity=uri,
            kind=kind,
            name=_common_name(cert),
            not_after=cert.not_valid_after_utc,
            issued_at=dt.datetime.now(dt.UTC),
            issued_by=issued_by[:300],
        )

        async def tx(session: AsyncSession) -> None:
            session.add(row)

        await self._db.write("issued_certificate.record", tx)
        return _issued(row, None)

    async def page(
        self,
        *,
        after: tuple[dt.datetime, str] | None = None,
        limit: int = 50,
        kind: str | None = None,
        expiring_before: dt.datetime | None = None,
    ) -> list[IssuedCertificate]:
        """Certificates by expiry, soonest first, after the cursor ``after``; ``kind`` and
        ``expiring_before`` filter. With whether each is revoked."""
        limit = max(1, min(limit, MAX_PAGE))
        c = IssuedCertificateRow

        async def tx(session: AsyncSession) -> list[IssuedCertificate]:
            statement = select(c, RevokedCertificateRow.reason).join(
                RevokedCertificateRow,
                col(RevokedCertificateRow.serial_hex) == col(c.serial_hex),
                isouter=True,
            )
            if after is not None:
                moment, serial = after
                statement = statement.where(
                    or_(
                        col(c.not_after) > moment,
                        and_(col(c.not_after) == moment, col(c.serial_hex) > serial),
                    )
                )
            if kind:
                statement = statement.where(col(c.kind) == kind)
            if expiring_before is not None:
                statement = statement.where(col(c.not_after) <= expiring_before)
            statement = statement.order_by(col(c.not_after), col(c.serial_hex)).limit(limit)
            rows = (await session.exec(statement)).all()
            return [_issued(row, reason) for row, reason in rows]

        return await self._db.read("issued_certificate.page", tx)

    async def expiring(self, within: dt.timedelta, limit: int = 20) -> list[IssuedCertificate]:
        """Unrevoked certificates that expire within ``within`` (or have expired in the last
        ``within``), soonest first."""
        now = dt.datetime.now(dt.UTC)
        found = await self.page(
            after=(now - within, ""), limit=MAX_PAGE, expiring_before=now + within
        )
        return [c for c in found if c.revoked is None][:limit]

    async def earliest_expiry(self, now: dt.datetime | None = None) -> dict[str, dt.datetime]:
        """kind -> the soonest expiry among the certificates of that kind (one of
        :data:`ISSUED_KINDS`) that are neither revoked nor already expired: what the next
        renewal of each kind is due by. A kind with no such certificate is absent. One grouped
        query over the expiry index, whatever the number of certificates."""
        now = now or dt.datetime.now(dt.UTC)
        c, r = IssuedCertificateRow, RevokedCertificateRow

        async def tx(session: AsyncSession) -> dict[str, dt.datetime]:
            statement = (
                select(c.kind, func.min(c.not_after))
                .join(r, col(r.serial_hex) == col(c.serial_hex), isouter=True)
                .where(col(r.serial_hex).is_(None))
                .where(col(c.not_after) > now)
                .where(col(c.kind).in_(ISSUED_KINDS))
                .group_by(col(c.kind))
            )
            rows = (await session.exec(statement)).all()
            return {str(kind): when for kind, when in rows if when is not None}

        return await self._db.read("issued_certificate.earliest_expiry", tx)

    async def get(self, serial: str) -> IssuedCertificate | None:
        """The certificate with this serial (normalised hex), or None when not recorded."""

        async def tx(session: AsyncSession) -> IssuedCertificate | None:
            row = await session.get(IssuedCertificateRow, serial)
            if row is None:
                return None
            revoked = await session.get(RevokedCertificateRow, serial)
            return _issued(row, None if revoked is None else revoked.reason)

        return await self._db.read("issued_certificate.get", tx)

    async def count(self) -> int:
        async def tx(session: AsyncSession) -> int:
            return int(
                (await session.exec(select(func.count()).select_from(IssuedCertificateRow))).one()
            )

        return await self._db.read("issued_certificate.count", tx)


def _issued(row: IssuedCertificateRow, reason: str | None) -> IssuedCertificate:
    return IssuedCertificate(
        serial_hex=row.serial_hex,
        identity=row.identity,
        kind=row.kind,
        name=row.name,
        not_after=row.not_after,
        issued_at=row.issued_at,
        issued_by=row.issued_by,
        revoked=reason,
    )
