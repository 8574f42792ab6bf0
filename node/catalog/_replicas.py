"""Other nodes' entries stored here in bulk (catalog sync, node.federation).

A replica is an entry owned by another region, with the owner's canonical JSON body verbatim.
Storing one writes what registering an entry writes: the entry's row, its version, its change
in this node's own feed, and the owner's claims to be the authoritative source of standard
elements (一数一源, 第十三条; the owner enforced the rule, so its word replaces any claim held
here). :func:`store_replicas` does that for many entries in a handful of Core statements on one
connection (:meth:`Database.write_sync`), so a city taking in a province catalog of 100,000
entries spends its time in the database's inserts rather than in a round trip per row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from node.catalog._registry import (
    _ENTRY_COLUMN_NAMES,
    _FEED_LOCK,
    _entry_values,
)
from node.catalog._types import ChangeKind, ResourceEntry, ResourceStatus
from node.errors import FailedPrecondition
from node.models import CatalogChangeRow, CatalogEntryRow, CatalogEntryVersionRow, ElementSourceRow
from node.storage import Database, in_chunks, insert_rows

__all__ = ["Replica", "store_replicas"]

_ENTRY: sa.Table = CatalogEntryRow.__table__  # type: ignore[attr-defined]
_VERSION: sa.Table = CatalogEntryVersionRow.__table__  # type: ignore[attr-defined]
_CHANGE: sa.Table = CatalogChangeRow.__table__  # type: ignore[attr-defined]
_SOURCE: sa.Table = ElementSourceRow.__table__  # type: ignore[attr-defined]
#: The columns each bulk insert names, in the order of its rows' values.
_ENTRY_COLUMNS = (*_ENTRY_COLUMN_NAMES, "body")
_CODE = _ENTRY_COLUMN_NAMES.index("resource_code")
_REGION = _ENTRY_COLUMN_NAMES.index("region")
_VERSION_AT = _ENTRY_COLUMN_NAMES.index("version")
_UPDATED_AT = _ENTRY_COLUMN_NAMES.index("updated_at")
_VERSION_COLUMNS = ("resource_code", "version", "body", "changed_by", "changed_at", "reason")
#: A change's body is its version's (migration 0033): the feed row holds none.
_CHANGE_COLUMNS = ("sequence", "resource_code", "version", "kind", "origin_region", "at")


@dataclass(frozen=True, slots=True)
class Replica:
    """One entry of another region to store, as :func:`store_replicas` needs it: its
    catalog_entry column values, its owner's canonical JSON ``body``, ``kind`` (what the owner
    did), ``changed_by`` (the URI of the node it came from) and the standard elements it is
    the authoritative source of, each with its item's name (none unless it is active).

    Made by :meth:`of` from the parsed entry, which is then let go: a city taking in a
    snapshot of 100,000 entries holds a few scalars per entry in its batches rather than each
    entry's tree of objects, which the garbage collector would otherwise walk again and again
    while they wait to be stored (most of the parsing's cost, measured in bench.scale).
    """

    values: tuple[Any, ...]
    body: str
    kind: ChangeKind
    changed_by: str
    claims: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, entry: ResourceEntry, body: str, kind: ChangeKind, changed_by: str) -> Replica:
        claims: tuple[tuple[str, str], ...] = ()
        if entry.status is ResourceStatus.ACTIVE:
            claims = tuple(
                (item.standard_element, item.name)
                for item in sorted(entry.items, key=lambda i: i.standard_element)
                if item.authoritative_source
            )
        return cls(_entry_values(entry), body, kind, changed_by, claims)

    @property
    def code(self) -> str:
        return str(self.values[_CODE])

    @property
    def region(self) -> str:
        return str(self.values[_REGION])

    @property
    def version(self) -> int:
        return int(self.values[_VERSION_AT])

    @property
    def updated_at(self) -> dt.datetime:
        value: dt.datetime = self.values[_UPDATED_AT]
        return value


def store_replicas(db: Database, connection: Connection, replicas: Sequence[Replica]) -> list[int]:
    """Store, in order, every replica newer than the entry held here, as storing them one by
    one would; returns the positions in ``replicas`` of those stored.

    Raises :class:`FailedPrecondition` when a code is held here for another region (the
    caller's transaction then writes nothing). The feed's sequence numbers are handed out
    under the feed's lock, as :class:`~node.catalog.Catalog` does for its own writes.
    """
    held = _held_versions(connection, {r.code for r in replicas})
    existing = set(held)
    stored: list[int] = []
    rows: dict[str, tuple[Any, ...]] = {}
    versions: list[tuple[Any, ...]] = []
    claims = _Claims()
    for index, replica in enumerate(replicas):
        code, region, version = replica.code, replica.region, replica.version
        here = held.get(code)
        if here is not None and here[0] != region:
            raise FailedPrecondition(
                f"resource {code} is held here for region {here[0]}, not {region}"
            )
        if here is not None and here[1] >= version:
            continue
        held[code] = (region, version)
        rows[code] = (*replica.values, replica.body)
        versions.append((code, version, replica.body, replica.changed_by, replica.updated_at, ""))
        claims.replace(replica)
        stored.append(index)
    if not stored:
        return stored
    new = [row for code, row in rows.items() if code not in existing]
    if new:
        insert_rows(connection, _ENTRY, _ENTRY_COLUMNS, new)
    updated = [
        {**dict(zip(_ENTRY_COLUMNS, row, strict=True)), "b_code": code}
        for code, row in rows.items()
        if code in existing
    ]
    if updated:
        # The SET clause is every column named in the parameters (b_code is the WHERE's).
        where = _ENTRY.c.resource_code == sa.bindparam("b_code")
        connection.execute(sa.update(_ENTRY).where(where), updated)
    insert_rows(connection, _VERSION, _VERSION_COLUMNS, versions)
    claims.write(connection)
    _append_changes(db, connection, [replicas[i] for i in stored])
    return stored


def _held_versions(connection: Connection, codes: set[str]) -> dict[str, tuple[str, int]]:
    """(region, version) of each of ``codes`` held here, locked for update on PostgreSQL."""
    held: dict[str, tuple[str, int]] = {}
    for chunk in in_chunks(sorted(codes)):
        query = (
            sa.select(_ENTRY.c.resource_code, _ENTRY.c.region, _ENTRY.c.version)
            .where(_ENTRY.c.resource_code.in_(chunk))
            .with_for_update()
        )
        for code, region, version in connection.execute(query):
            held[code] = (region, version)
    return held


class _Claims:
    """The element_source rows a run of stored replicas leaves, worked out in memory: each
    stored entry drops every claim it held, then claims its authoritative elements, taking
    each from whichever resource held it."""

    def __init__(self) -> None:
        self.cleared_codes: set[str] = set()
        self.cleared_keys: set[tuple[str, str]] = set()
        self.claims: dict[tuple[str, str], tuple[str, str]] = {}
        self.keys_of: dict[str, set[tuple[str, str]]] = {}

    def replace(self, replica: Replica) -> None:
        code = replica.code
        self.cleared_codes.add(code)
        for key in self.keys_of.pop(code, set()):
            del self.claims[key]
        for element, name in replica.claims:
            key = (replica.region, element)
            self.cleared_keys.add(key)
            previous = self.claims.get(key)
            if previous is not None:
                self.keys_of[previous[0]].discard(key)
            self.claims[key] = (code, name)
            self.keys_of.setdefault(code, set()).add(key)

    def write(self, connection: Connection) -> None:
        for chunk in in_chunks(sorted(self.cleared_codes)):
            connection.execute(sa.delete(_SOURCE).where(_SOURCE.c.resource_code.in_(chunk)))
        if self.cleared_keys:
            connection.execute(
                sa.delete(_SOURCE).where(
                    _SOURCE.c.region == sa.bindparam("b_region"),
                    _SOURCE.c.standard_element == sa.bindparam("b_element"),
                ),
                [{"b_region": r, "b_element": e} for r, e in sorted(self.cleared_keys)],
            )
        if self.claims:
            connection.execute(
                sa.insert(_SOURCE),
                [
                    {
                        "region": region,
                        "standard_element": element,
                        "resource_code": code,
                        "item_name": item,
                    }
                    for (region, element), (code, item) in sorted(self.claims.items())
                ],
            )


def _append_changes(db: Database, connection: Connection, replicas: Sequence[Replica]) -> None:
    db.lock_sync(connection, _FEED_LOCK)
    last = connection.execute(sa.select(sa.func.max(_CHANGE.c.sequence))).scalar() or 0
    insert_rows(
        connection,
        _CHANGE,
        _CHANGE_COLUMNS,
        [
            (last + offset, r.code, r.version, r.kind.value, r.region, r.updated_at)
            for offset, r in enumerate(replicas, start=1)
        ],
    )
