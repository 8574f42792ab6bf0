"""Certificate revocation: the database is the source of truth, checked on every call.

``govnode certs revoke`` writes here; every process of the node reads here on each call, so a
revoked certificate is refused on its next call whichever process serves it. The signed CRL
(``node.pki.create_crl``) is the artefact that carries the same list to other nodes.

Every revocation a node learns, its own or one applied from the province, takes the next
gap-free ``sequence`` (assigned under a lock, like the catalog feed), so a peer can ask for
"everything after N" (FederationService/GetRevocationList) and miss nothing. A city keeps how far
it has applied the province's list in ``node_meta`` (:func:`cursor_key`), advanced in the same
transaction as the revocations themselves, so nothing is applied twice.

Propagation is downward only: the province's revocations reach every city. A city's own
revocations stay at that city (the province never calls a city); operators revoke a city
agency's certificate at the city that issued it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.errors import AlreadyExists, InvalidArgument
from node.models import NodeMetaRow, RevokedCertificateRow
from node.storage import Database

#: Serialises the assignment of revocation sequences (gap-free, commit order = sequence order).
_SEQUENCE_LOCK = "govnode.revocation_sequence"
#: Most revocations GetRevocationList returns in one answer.
PAGE_LIMIT = 1000

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
    sequence: int | None = None


def cursor_key(peer_region: str) -> str:
    """The node_meta key holding how far this node applied ``peer_region``'s revocations."""
    return f"revocation_cursor.{peer_region}"


def reason_to_rfc(reason: str) -> str:
    """``key_compromise`` -> ``keyCompromise`` (the RFC 5280 name on the wire)."""
    head, *rest = reason.split("_")
    return head + "".join(part.capitalize() for part in rest)


def reason_from_rfc(name: str) -> str:
    """The stored reason for an RFC 5280 name (or a stored name); unknown -> unspecified."""
    for reason in REASONS:
        if name in (reason, reason_to_rfc(reason)):
            return reason
    return "unspecified"


def _to_revocation(r: RevokedCertificateRow) -> Revocation:
    return Revocation(
        r.serial_hex, r.identity, r.issuer_region, r.reason, r.revoked_at, r.revoked_by, r.sequence
    )


async def _next_sequence(db: Database, session: AsyncSession) -> int:
    """The next gap-free sequence; the caller's transaction holds the lock until it ends."""
    await db.lock(session, _SEQUENCE_LOCK)
    last = (await session.exec(select(func.max(RevokedCertificateRow.sequence)))).one()
    return int(last or 0) + 1


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

        async def tx(session: AsyncSession) -> int:
            if await session.get(RevokedCertificateRow, serial) is not None:
                raise AlreadyExists(f"certificate {serial} is already revoked")
            sequence = await _next_sequence(self._db, session)
            session.add(
                RevokedCertificateRow(
                    serial_hex=serial,
                    identity=identity,
                    issuer_region=issuer_region,
                    reason=reason,
                    revoked_at=now,
                    revoked_by=revoked_by,
                    sequence=sequence,
                )
            )
            return sequence

        sequence = await self._db.write("revoke_certificate", tx)
        return Revocation(serial, identity, issuer_region, reason, now, revoked_by, sequence)

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
            return [_to_revocation(r) for r in rows]

        return await self._db.read("list_revocations", tx)

    async def assign_missing_sequences(self) -> int:
        """Give revocations written before sequences existed (migration 0007) their place in
        the feed, oldest first; returns how many. Run at start-up."""

        async def tx(session: AsyncSession) -> int:
            missing = (
                await session.exec(
                    select(RevokedCertificateRow)
                    .where(col(RevokedCertificateRow.sequence).is_(None))
                    .order_by(col(RevokedCertificateRow.revoked_at))
                )
            ).all()
            if not missing:
                return 0
            sequence = await _next_sequence(self._db, session)
            for row in missing:
                row.sequence = sequence
                sequence += 1
            return len(missing)

        return await self._db.write("revocation.assign_sequences", tx)

    async def last_sequence(self) -> int:
        row = await self._db.fetch_one("SELECT MAX(sequence) FROM revoked_certificate", {})
        return 0 if row is None or row[0] is None else int(row[0])

    async def after(
        self, after_sequence: int, limit: int = PAGE_LIMIT
    ) -> tuple[list[Revocation], int]:
        """Revocations with a sequence above ``after_sequence`` in order (at most ``limit``),
        and the sequence to ask after next: the page's last when more remain, else the last
        this node knows."""

        async def tx(session: AsyncSession) -> tuple[list[Revocation], int]:
            rows = (
                await session.exec(
                    select(RevokedCertificateRow)
                    .where(col(RevokedCertificateRow.sequence) > after_sequence)
                    .order_by(col(RevokedCertificateRow.sequence))
                    .limit(limit)
                )
            ).all()
            page = [_to_revocation(r) for r in rows]
            if len(page) == limit and page[-1].sequence is not None:
                return page, page[-1].sequence
            last = (await session.exec(select(func.max(RevokedCertificateRow.sequence)))).one()
            return page, int(last or 0)

        return await self._db.read("revocation.after", tx)

    async def of_issuer(self, issuer_region: str) -> list[Revocation]:
        """Every revocation of certificates issued by ``issuer_region``'s CA (for its CRL)."""

        async def tx(session: AsyncSession) -> list[Revocation]:
            rows = await session.exec(
                select(RevokedCertificateRow)
                .where(col(RevokedCertificateRow.issuer_region) == issuer_region)
                .order_by(col(RevokedCertificateRow.sequence))
            )
            return [_to_revocation(r) for r in rows]

        return await self._db.read("revocation.of_issuer", tx)

    async def cursor(self, peer_region: str) -> int:
        """How far this node has applied ``peer_region``'s revocation sequence (0: nothing)."""

        async def tx(session: AsyncSession) -> int:
            row = await session.get(NodeMetaRow, cursor_key(peer_region))
            return 0 if row is None else int(row.value)

        return await self._db.read("revocation.cursor", tx)

    async def apply_remote(
        self, peer_region: str, revoked: list[Revocation], last_sequence: int
    ) -> int:
        """Apply a peer's revocations (each with the peer's ``sequence``) in one transaction
        with the cursor; returns how many were new here. One at or below the cursor, or a
        serial already revoked here, is skipped (the cursor still moves)."""
        key = cursor_key(peer_region)

        async def tx(session: AsyncSession) -> int:
            sequence = await _next_sequence(self._db, session)
            meta = await session.get(NodeMetaRow, key, with_for_update=True)
            cursor = 0 if meta is None else int(meta.value)
            applied = 0
            for r in revoked:
                assert r.sequence is not None
                if r.sequence <= cursor:
                    continue
                cursor = r.sequence
                serial = normalise_serial(r.serial_hex)
                if await session.get(RevokedCertificateRow, serial) is not None:
                    continue
                session.add(
                    RevokedCertificateRow(
                        serial_hex=serial,
                        identity=r.identity,
                        issuer_region=r.issuer_region,
                        reason=r.reason if r.reason in REASONS else "unspecified",
                        revoked_at=r.revoked_at,
                        revoked_by=r.revoked_by,
                        sequence=sequence,
                    )
                )
                await session.flush()
                sequence += 1
                applied += 1
            cursor = max(cursor, last_sequence)
            if meta is None:
                session.add(NodeMetaRow(key=key, value=str(cursor)))
            else:
                meta.value = str(cursor)
            return applied

        return await self._db.write("revocation.apply_remote", tx)
