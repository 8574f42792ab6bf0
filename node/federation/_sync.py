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
skipped, and so is a version not newer than the stored one. A run of changes is stored in bulk
(:func:`node.catalog.store_replicas`).

A city that has applied nothing of the province's feed starts from a snapshot of the
province's catalog instead (:meth:`CatalogExchange.apply_snapshot`, then
:meth:`CatalogExchange.finish_snapshot` moves the cursor to the feed sequence the snapshot was
taken at), rather than replaying every change the province ever made.

Pure domain: no grpc; the servicer and the city's sync task translate the wire format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role
from gateway.quote import quote
from node.catalog import (
    MAX_STORED_INT,
    Catalog,
    CatalogChange,
    ChangeKind,
    Replica,
    ResourceEntry,
    ResourceStatus,
    entry_to_json,
    store_replicas,
)
from node.codes import Region
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.models import FederationMemberRow, FeedCursorRow
from node.storage import Database, utc_now

__all__ = ["CatalogExchange", "snapshot_replicas"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_U = TypeVar("_U")

_CURSOR_LOCK = "govnode.feed_cursor."
_CURSOR: sa.Table = FeedCursorRow.__table__  # type: ignore[attr-defined]


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
        if change.sequence <= 0:
            raise InvalidArgument(f"sequence: must be positive, got {change.sequence}")
        self.check_entry(change.entry, change.origin_region, sender)

    @staticmethod
    def check_entry(entry: ResourceEntry, origin_region: str, sender: Identity) -> None:
        """What :meth:`check_change` checks of the entry a change or a snapshot carries."""
        code = entry.resource_code
        if not 0 < entry.version <= MAX_STORED_INT:
            raise InvalidArgument(
                f"entry.version: must be 1 to {MAX_STORED_INT}, got {entry.version}"
            )
        if entry.region != origin_region or code[:6] != entry.region:
            raise InvalidArgument(
                f"resource {quote(code)}: entry.region {quote(entry.region)}, origin_region "
                f"{quote(origin_region)} and the code's region must agree"
            )
        if entry.created_at is None or entry.updated_at is None:
            raise InvalidArgument(f"resource {quote(code)}: created_at and updated_at must be set")
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
        checked, refused = _until_refused(
            changes,
            lambda c: self.check_change(c, sender),
            lambda c: (c, entry_to_json(c.entry)),
        )
        peer = sender.region

        def txn(connection: Connection) -> list[CatalogChange]:
            self._db.lock_sync(connection, _CURSOR_LOCK + peer)
            held = _cursor(connection, peer)
            last = held or 0
            fresh: list[CatalogChange] = []
            replicas: list[Replica] = []
            for change, body in checked:
                if change.sequence <= last:
                    continue
                last = change.sequence
                if change.entry.region != self.region:
                    fresh.append(change)
                    replicas.append(Replica.of(change.entry, body, change.kind, sender.uri))
            stored = [fresh[i] for i in store_replicas(self._db, connection, replicas)]
            _move_cursor(connection, peer, held, last)
            return stored

        stored = await self._db.write_sync("federation.apply_remote", txn) if checked else []
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

    def snapshot_replicas(
        self, entries: Iterable[tuple[ResourceEntry, str]], sender: Identity
    ) -> tuple[list[Replica], Exception | None]:
        """The entries of ``sender``'s catalog snapshot, each (entry, its owner's body), as
        replicas to store (:meth:`apply_snapshot`), but this node's own; each checked as a
        change would be. Those before the first refused, and that refusal (None if none).

        ``entries`` may be a generator: each entry is let go once made a replica."""
        return snapshot_replicas(entries, self.region, sender)

    async def apply_snapshot(self, replicas: Sequence[Replica], sender: Identity) -> int:
        """Store replicas of ``sender``'s catalog snapshot (:meth:`snapshot_replicas`) in one
        transaction: those newer than held here. Returns how many changed the catalog. The
        feed cursor stays where it is until :meth:`finish_snapshot`, so a snapshot cut short
        is taken again from the start (what it stored is then skipped as not newer)."""
        peer = sender.region

        def txn(connection: Connection) -> int:
            self._db.lock_sync(connection, _CURSOR_LOCK + peer)
            return len(store_replicas(self._db, connection, replicas))

        stored = await self._db.write_sync("federation.apply_snapshot", txn) if replicas else 0
        if stored:
            self._catalog.notify_changed()
        return stored

    async def finish_snapshot(self, sender: Identity, as_of_sequence: int) -> None:
        """A snapshot of ``sender``'s catalog taken at ``as_of_sequence`` of its feed is
        stored whole: its feed is followed after that sequence from now on."""
        peer = sender.region

        def txn(connection: Connection) -> None:
            self._db.lock_sync(connection, _CURSOR_LOCK + peer)
            _move_cursor(connection, peer, _cursor(connection, peer), as_of_sequence)

        await self._db.write_sync("federation.finish_snapshot", txn)
        log.info("catalog_snapshot_applied", peer=peer, as_of_sequence=as_of_sequence)


def snapshot_replicas(
    entries: Iterable[tuple[ResourceEntry, str]], region: str, sender: Identity
) -> tuple[list[Replica], Exception | None]:
    """:meth:`CatalogExchange.snapshot_replicas` for the node of ``region``, without the node:
    what a process that only parses (node.clients._snapshot_parts) runs."""
    return _until_refused(
        entries,
        lambda item: CatalogExchange.check_entry(item[0], item[0].region, sender),
        lambda item: (
            None
            if item[0].region == region
            else Replica.of(item[0], item[1], _kind_of(item[0]), sender.uri)
        ),
    )


def _until_refused(
    items: Iterable[_T], check: Callable[[_T], None], make: Callable[[_T], _U | None]
) -> tuple[list[_U], Exception | None]:
    """``make(item)`` of each item before the first that ``check`` refuses (None from ``make``:
    nothing to keep of it), and that refusal (None if none). ``items`` may be a generator;
    each item is let go once made."""
    made: list[_U] = []
    for item in items:
        try:
            check(item)
        except (InvalidArgument, PermissionDenied, FailedPrecondition) as error:
            return made, error
        if (kept := make(item)) is not None:
            made.append(kept)
    return made, None


def _kind_of(entry: ResourceEntry) -> ChangeKind:
    """What a snapshot's entry says its owner last did to it."""
    if entry.status is ResourceStatus.WITHDRAWN:
        return ChangeKind.WITHDRAWN
    return ChangeKind.REGISTERED if entry.version == 1 else ChangeKind.UPDATED


def _cursor(connection: Connection, peer: str) -> int | None:
    """The highest sequence of ``peer``'s feed applied here (None before the first), locked
    for update."""
    query = (
        sa.select(_CURSOR.c.last_applied_sequence)
        .where(_CURSOR.c.peer_region == peer)
        .with_for_update()
    )
    value = connection.execute(query).scalar()
    return None if value is None else int(value)


def _move_cursor(connection: Connection, peer: str, held: int | None, last: int) -> None:
    """Move ``peer``'s cursor from ``held`` (as :func:`_cursor` read it) to ``last``."""
    now = utc_now()
    if held is None:
        connection.execute(
            sa.insert(_CURSOR).values(peer_region=peer, last_applied_sequence=last, updated_at=now)
        )
    elif last > held:
        connection.execute(
            sa.update(_CURSOR)
            .where(_CURSOR.c.peer_region == peer)
            .values(last_applied_sequence=last, updated_at=now)
        )
