"""Certificate revocation: the database is the source of truth, checked on every call.

``govnode certs revoke`` writes here; every process of the node reads here on each call, so a
revoked certificate is refused on its next call whichever process serves it. The signed CRL
(``node.pki.create_crl``) is the artefact that carries the same list to other nodes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.errors import AlreadyExists, InvalidArgument
from node.models import RevokedCertificateRow
from node.storage import Database

REASONS = (
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
)


@dataclass(frozen=True)
class Revocation:
    serial_hex: str
    identity: str
    issuer_region: str
    reason: str
    revoked_at: dt.datetime
    revoked_by: str


def normalise_serial(serial: str) -> str:
    s = serial.strip().lower().removeprefix("0x").replace(":", "")
    if not s or any(c not in "0123456789abcdef" for c in s):
        raise InvalidArgument(f"serial {serial!r} is not a hexadecimal certificate serial")
    return s.lstrip("0") or "0"


class Revocations:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def revoke(
        self, *, serial_hex: str, identity: str, issuer_region: str, reason: str, revoked_by: str
    ) -> Revocation:
        if reason not in REASONS:
            raise InvalidArgument(f"reason {reason!r} must be one of {', '.join(REASONS)}")
        serial = normalise_serial(serial_hex)
        now = dt.datetime.now(dt.UTC)

        async def tx(session: AsyncSession) -> None:
            if await session.get(RevokedCertificateRow, serial) is not None:
                raise AlreadyExists(f"certificate {serial} is already revoked")
            session.add(
                RevokedCertificateRow(
                    serial_hex=serial,
                    identity=identity,
                    issuer_region=issuer_region,
                    reason=reason,
                    revoked_at=now,
                    revoked_by=revoked_by,
                )
            )

        await self._db.write("revoke_certificate", tx)
        return Revocation(serial, identity, issuer_region, reason, now, revoked_by)

    async def reason_for(self, serial_hex: str) -> str | None:
        """Why the certificate is revoked, or None when it is not.

        Runs on every call, so it is one primary-key point read: a revocation committed by any
        process (``govnode certs revoke``, another replica) is seen by the very next call.
        """
        row = await self._db.fetch_one(
            "SELECT reason FROM revoked_certificate WHERE serial_hex = :serial",
            {"serial": serial_hex},
        )
        return None if row is None else str(row[0])

    async def all(self) -> list[Revocation]:
        async def tx(session: AsyncSession) -> list[Revocation]:
            rows = await session.exec(
                select(RevokedCertificateRow).order_by(col(RevokedCertificateRow.revoked_at))
            )
            return [
                Revocation(
                    r.serial_hex, r.identity, r.issuer_region, r.reason, r.revoked_at, r.revoked_by
                )
                for r in rows
            ]

        return await self._db.read("list_revocations", tx)
