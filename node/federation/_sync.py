"""Catalog exchange between the province and its cities (第十九条): applying a peer's changes.

City entries flow up (city -> province, PublishCatalog) and the province-wide catalog flows
down (province -> every city, WatchCatalog), as each sender's ordered change feed. A remote
entry is stored in the same ``catalog_entry`` table as local ones, under its owner's region and
with the owner's body verbatim, so reads and :meth:`Catalog.digest` see the province-wide
catalog and every node computes the same digest. Applying a change appends it to this node's
own feed with the owner's region as origin, which is how the province relays one city's
changes to every other city.

Exactly once: ``feed_cursor`` keeps, per peer, the highest sequence of that peer's feed applied
here, advanced in the same transaction as the change itself. A change at or below the cursor is
skipped, and so is a version not newer than the stored one.

Pure domain: no grpc; the servicer and the city's sync task translate the wire format.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role
from gateway.quote import quote
from node.catalog import (
    MAX_STORED_INT,
    Catalog,
    CatalogChange,
    ResourceEntry,
    ResourceStatus,
    entry_to_json,
    store_entry_row,
)
from node.codes import Region
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.models import (
    CatalogEntryRow,
    CatalogEntryVersionRow,
    ElementSourceRow,
    FederationMemberRow,
    FeedCursorRow,
)
from node.storage import Database, utc_now

__all__ = ["CatalogExchange"]

log = structlog.get_logger(__name__)

_CURSOR_LOCK = "govnode.feed_cursor."


class CatalogExchange:
    """Applies peers' catalog changes to this node's catalog, each at most once."""

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self._db = db
        self._catalog = catalog
        self.region = catalog.region
        self.province = Region(catalog.region).province_code

    @property
    def db(self) -> Database:
        return self._db

    @property
    def is_province(self) -> bool:
        return self.region == self.province

    # --- who may send -----------------------------------------------------------------------

    def check_peer(self, caller: Identity, action: str) -> None:
        """Only federation partners exchange catalogs: on the province, a node of one of its
        cities; on a city, its province node."""
        if caller.role is not Role.NODE:
            raise PermissionDenied(
                f"{caller} may not {action}: catalog exchange is between govnode nodes only"
            )
        if self.is_province:
            region = Region(caller.region)
            if region.is_province or not Region(self.province).contains(caller.region):
                raise PermissionDenied(
                    f"{caller} may not {action}: it is not a city node of province {self.province}"
                )
        elif caller.region != self.province:
            raise PermissionDenied(
                f"{caller} may not {action}: this city node exchanges its catalog with its "
                f"province {self.province} only"
            )

    def check_change(self, change: CatalogChange, sender: Identity) -> None:
        """A city may send only its own region's entries; the province any region of the
        province (a city then skips its own, relayed back)."""
        entry = change.entry
        code = entry.resource_code
        if change.sequence <= 0:
            raise InvalidArgument(f"sequence: must be positive, got {change.sequence}")
        if not 0 < entry.version <= MAX_STORED_INT:
            raise InvalidArgument(
                f"entry.version: must be 1 to {MAX_STORED_INT}, got {entry.version}"
            )
        if entry.region != change.origin_region or code[:6] != entry.region:
            raise InvalidArgument(
                f"resource {quote(code)}: entry.region {quote(entry.region)}, origin_region "
                f"{quote(change.origin_region)} and the code's region must agree"
            )
        sender_region = Region(sender.region)
        if sender_region.is_province:
            if not sender_region.contains(entry.region):
                raise PermissionDenied(
                    f"{sender} may not send resource {code}: region {entry.region} is not in "
                    f"province {sender.region}"
                )
        elif entry.region != sender.region:
            raise PermissionDenied(
                f"{sender} may not publish resource {code} of region {entry.region}: a city "
                f"node publishes entries of its own region {sender.region} only"
            )

    # --- cursors --------------------------------------------------------------------------

    async def applied_sequence(self, peer_region: str) -> int:
        """The highest sequence of ``peer_region``'s feed applied here (0 for none)."""

        async def txn(session: AsyncSession) -> int:
            row = await session.get(FeedCursorRow, peer_region)
            return 0 if row is None else row.last_applied_sequence

        return await self._db.read("federation.applied_sequence", txn)

    async def touch_member(self, region: str) -> None:
        """Record that a city node was heard from (when the province knows it as a member)."""

        async def txn(session: AsyncSession) -> None:
            row = await session.get(FederationMemberRow, region)
            if row is not None:
                row.last_seen_at = utc_now()

        await self._db.write("federation.touch_member", txn)

    # --- applying -------------------------------------------------------------------------

    async def apply_remote(self, change: CatalogChange, sender: Identity) -> bool:
        """Apply one change of ``sender``'s feed in one transaction; True when the catalog
        changed. Already applied (sequence at or below the cursor), not newer than the stored
        version, or this node's own entry relayed back: the cursor moves, nothing else."""
        return await self.apply_remote_many([change], sender) > 0

    async def apply_remote_many(self, changes: Sequence[CatalogChange], sender: Identity) -> int:
        """Apply consecutive changes of ``sender``'s feed, in order, in one transaction, each
        as :meth:`apply_remote` would; returns how many changed the catalog.

        One transaction for many changes is what lets a newly joined city take in a province
        catalog of 100,000 entries in seconds rather than one commit per entry (bench.scale).
        Every change is checked first; if one fails its check, the changes before it are
        applied and then its error is raised, as applying them one by one would."""
        checked: list[tuple[CatalogChange, str]] = []
        refused: Exception | None = None
        for change in changes:
            try:
                self.check_change(change, sender)
            except (InvalidArgument, PermissionDenied, FailedPrecondition) as error:
                refused = error
                break
            checked.append((change, entry_to_json(change.entry)))
        peer = sender.region

        async def txn(session: AsyncSession) -> list[CatalogChange]:
            await self._db.lock(session, _CURSOR_LOCK + peer)
            cursor = await session.get(FeedCursorRow, peer, with_for_update=True)
            last = cursor.last_applied_sequence if cursor is not None else 0
            stored: list[CatalogChange] = []
            for change, body in checked:
                if change.sequence <= last:
                    continue
                last = change.sequence
                own = change.entry.region == self.region
                if not own and await self._store(session, change, body, sender):
                    stored.append(change)
            now = utc_now()
            if cursor is None:
                session.add(
                    FeedCursorRow(peer_region=peer, last_applied_sequence=last, updated_at=now)
                )
            elif last > cursor.last_applied_sequence:
                cursor.last_applied_sequence = last
                cursor.updated_at = now
            return stored

        stored = await self._db.write("federation.apply_remote", txn) if checked else []
        if stored:
            self._catalog.notify_changed()
            for change in stored:
                log.debug(
                    "catalog_change_applied",
                    peer=peer,
                    sequence=change.sequence,
                    resource_code=change.entry.resource_code,
                    version=change.entry.version,
                    kind=change.kind.value,
                )
        if refused is not None:
            raise refused
        return len(stored)

    async def _store(
        self, session: AsyncSession, change: CatalogChange, body: str, sender: Identity
    ) -> bool:
        entry = change.entry
        code = entry.resource_code
        row = await session.get(CatalogEntryRow, code, with_for_update=True)
        if row is not None and row.region != entry.region:
            raise FailedPrecondition(
                f"resource {code} is held here for region {row.region}, not {entry.region}"
            )
        if row is not None and row.version >= entry.version:
            return False
        store_entry_row(session, row, entry, body)
        await session.flush()
        await _mirror_claims(session, entry)
        assert entry.updated_at is not None
        session.add(
            CatalogEntryVersionRow(
                resource_code=code,
                version=entry.version,
                body=body,
                changed_by=sender.uri,
                changed_at=entry.updated_at,
            )
        )
        await self._catalog._append_change(session, entry, body, change.kind)
        return True


async def _mirror_claims(session: AsyncSession, entry: ResourceEntry) -> None:
    """Make element_source hold exactly what the owner's ``entry`` claims, under the owner's
    region (一数一源 is per region). The owner enforced the rule, so its word replaces any
    claim a replica still holds (e.g. from a change it has not seen withdrawn yet)."""
    code = entry.resource_code
    held = (
        await session.exec(
            select(ElementSourceRow).where(col(ElementSourceRow.resource_code) == code)
        )
    ).all()
    for claim in held:
        await session.delete(claim)
    await session.flush()
    if entry.status is not ResourceStatus.ACTIVE:
        return
    for item in sorted(entry.items, key=lambda i: i.standard_element):
        if not item.authoritative_source:
            continue
        key = (entry.region, item.standard_element)
        other = await session.get(ElementSourceRow, key)
        if other is not None:
            await session.delete(other)
            await session.flush()
        session.add(
            ElementSourceRow(
                region=entry.region,
                standard_element=item.standard_element,
                resource_code=code,
                item_name=item.name,
            )
        )
    await session.flush()
