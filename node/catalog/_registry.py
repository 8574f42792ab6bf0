"""The catalog (政务信息资源目录): registration (登记, 第十七、十八条) and its history.

An agency registers the resources it provides; the node keeps the current entry, every
version ever written, the one authoritative source of each standard data element in the region
(一数一源, 第十三条) and an ordered change feed that other nodes follow. Every operation is one
named database transaction: a refused registration leaves nothing behind.

The entry types, their canonical JSON and the registration rules are in
:mod:`node.catalog._types` (pure, no database).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role
from gateway.quote import quote
from node import idempotency, paging
from node.catalog._probe import check_catalog_write
from node.catalog._types import (
    RESOURCE_CODE_RE,
    CatalogChange,
    ChangeKind,
    Classification,
    DataItem,
    OpenType,
    ResourceEntry,
    ResourceStatus,
    ShareType,
    entry_from_json,
    entry_to_json,
    validate_entry,
)
from node.codes import region_problem
from node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from node.idempotency import check_request_id
from node.models import (
    CatalogChangeRow,
    CatalogEntryRow,
    CatalogEntryVersionRow,
    ElementSourceRow,
)
from node.storage import Database, utc_now

__all__ = ["Catalog"]

DEFAULT_PAGE_SIZE = 100
#: Entry versions and feed sequences are INTEGER columns (32 bits on PostgreSQL), while the
#: API takes int64: nothing is stored beyond this, so a larger one is never looked up.
MAX_STORED_INT = 2**31 - 1
MAX_PAGE_SIZE = 500
#: Longest text a catalog list matches names against.
MAX_NAME_SEARCH = 64
#: A ListResources page stops before the entry that would take it past this many bytes of
#: entry JSON (it has at least one): an entry may be megabytes (an ENUM of 10,000 allowed
#: values), and a page must fit in a message (4 MiB).
PAGE_BYTES = 1024 * 1024
MAX_CHANGES = 1000
#: A catalog snapshot reads entries of up to this many characters of JSON (4 bytes each at
#: most) this many to a page, and larger ones one at a time (Catalog.snapshot_bodies).
SNAPSHOT_SMALL_CHARS = 16 * 1024
SNAPSHOT_PAGE = 500
#: Entries hashed per read by Catalog.digest.
DIGEST_PAGE = 1000
#: ``Catalog.digest(current=False)`` (heartbeats, GetNodeInfo) reuses the last digest until
#: this many times as long as computing it took has passed: a catalog that changes without
#: pause (a city taking in a snapshot of 100,000 entries) then costs its heartbeats at most
#: about a tenth of a core instead of a digest of the whole catalog every few seconds.
DIGEST_REUSE_FACTOR = 10
_LAST_SEQUENCE = "SELECT max(sequence) FROM catalog_change"
_SNAPSHOT_SMALL = (
    "SELECT resource_code, body FROM catalog_entry WHERE resource_code > :after "
    "AND length(body) <= :chars ORDER BY resource_code LIMIT :limit"
)
_SNAPSHOT_LARGE = (
    "SELECT resource_code, body FROM catalog_entry WHERE resource_code > :after "
    "AND length(body) > :chars ORDER BY resource_code LIMIT 1"
)
_PARSED_CACHE = 1024

# Held while appending to the change feed, so sequence numbers are handed out in commit order.
_FEED_LOCK = "govnode.catalog_change"
_TOKEN_PREFIX = "c1:"  # noqa: S105 (a page-token version tag, not a secret)

Entries = list[ResourceEntry]

log = structlog.get_logger(__name__)


class Catalog:
    """The catalog of one node, over its :class:`Database`.

    ``clock`` returns the current UTC time; tests pass a fixed one so that catalogs built at
    different moments are byte-for-byte comparable.
    """

    def __init__(
        self, db: Database, node_region: str, *, clock: Callable[[], dt.datetime] = utc_now
    ) -> None:
        problem = region_problem(node_region)
        if problem is not None:
            raise ValueError(problem)
        self._db = db
        self.region = node_region
        self._clock = clock
        # resource code -> (stored body, parsed entry): a cache, never the source of truth.
        self._parsed: dict[str, tuple[str, ResourceEntry]] = {}
        # Set, then replaced, after every change committed through this object, so feed
        # followers in this process wake at once (other processes' changes are polled for).
        self._changed = asyncio.Event()
        # The last digest and the (entry count, last feed sequence) read before it: a cache.
        self._digest: tuple[tuple[int, int], tuple[str, int, int]] | None = None
        # When the last digest computed (not taken from the cache) was done, and how long it
        # took, by time.monotonic(): what digest(current=False) goes by.
        self._digest_done = 0.0
        self._digest_took = 0.0

    def changed(self) -> asyncio.Event:
        """An event set when the next change is committed through this catalog object."""
        return self._changed

    def notify_changed(self) -> None:
        """Wake everyone waiting on :meth:`changed` (after a change committed)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _now(self) -> dt.datetime:
        return self._clock().astimezone(dt.UTC)

    # --- registration ---------------------------------------------------------------------

    async def register(
        self, caller: Identity, entry: ResourceEntry, request_id: str = ""
    ) -> ResourceEntry:
        """Register a new entry as version 1. Only the providing agency may register it; a
        probe entry, only a conformance tester (node.catalog._probe).

        The entry is checked first, so a malformed request is INVALID_ARGUMENT whoever sends
        it; then the caller must be the provider.
        """
        code = entry.resource_code
        check_request_id(request_id)
        validate_entry(entry, node_region=self.region)
        tester = check_catalog_write(caller, code, probe=entry.probe, action="register")
        if not tester and (caller.role is not Role.AGENCY or caller.subject != entry.provider_code):
            raise PermissionDenied(
                f"{_who(caller)} may not register resource {code}: only its provider agency "
                f"{entry.provider_code} may register it (第十八条)"
            )
        now = self._now()
        stored = entry.model_copy(
            update={
                "region": self.region,
                "version": 1,
                "status": ResourceStatus.ACTIVE,
                "created_at": now,
                "updated_at": now,
            }
        )
        body = entry_to_json(stored)

        async def txn(session: AsyncSession) -> ResourceEntry:
            if done := await self._replayed(session, caller, request_id, "register_resource", code):
                return done
            if await session.get(CatalogEntryRow, code) is not None:
                raise _already_registered(code)
            try:
                async with session.begin_nested():
                    session.add(CatalogEntryRow(**_entry_columns(stored), body=body))
            except IntegrityError as error:  # registered concurrently by another process
                if not self._db.is_unique_violation(error):
                    raise
                raise _already_registered(code) from None
            await self._claim_elements(session, stored)
            self._add_version(session, stored, body, caller)
            await self._append_change(session, stored, ChangeKind.REGISTERED)
            self._remember(session, caller, request_id, "register_resource", stored)
            return stored

        result = await self._db.write("catalog.register", txn)
        self.notify_changed()
        return result

    async def update(
        self,
        caller: Identity,
        entry: ResourceEntry,
        expected_version: int = 0,
        request_id: str = "",
    ) -> ResourceEntry:
        """Replace an entry with a new version; ``expected_version`` (when not 0) guards
        against overwriting a change the caller has not seen."""
        check_request_id(request_id)
        validate_entry(entry, node_region=self.region)

        async def txn(session: AsyncSession) -> ResourceEntry:
            return await self.update_in(session, caller, entry, expected_version, request_id)

        result = await self._db.write("catalog.update", txn)
        self.notify_changed()
        return result

    async def update_in(
        self,
        session: AsyncSession,
        caller: Identity,
        entry: ResourceEntry,
        expected_version: int = 0,
        request_id: str = "",
        *,
        reason: str = "",
    ) -> ResourceEntry:
        """:meth:`update` inside the caller's write transaction, for a change applied with
        something else (an approved change request, 第四十一条). ``entry`` has passed
        ``validate_entry``; the caller calls :meth:`notify_changed` after committing."""
        code = entry.resource_code
        if done := await self._replayed(session, caller, request_id, "update_resource", code):
            return done
        row = await self._current_for_change(session, code, caller, "change")
        if expected_version and expected_version != row.version:
            raise FailedPrecondition(
                f"resource {code} is at version {row.version}, the update expected version "
                f"{expected_version}; fetch it again and re-apply the change"
            )
        if row.status == ResourceStatus.WITHDRAWN:
            raise FailedPrecondition(f"resource {code} is withdrawn and cannot be changed")
        if entry.provider_code != row.provider_code:
            raise InvalidArgument(
                f'entry.provider_code: cannot change from "{row.provider_code}" to '
                f'"{entry.provider_code}"; the provider of a resource is fixed'
            )
        current = entry_from_json(row.body)
        if entry.probe != current.probe:
            raise InvalidArgument(
                f"entry.probe: cannot change from {str(current.probe).lower()} to "
                f"{str(entry.probe).lower()}; whether a resource is a conformance probe "
                "is fixed (第三十一条)"
            )
        new = entry.model_copy(
            update={
                "region": row.region,
                "version": row.version + 1,
                "status": ResourceStatus.ACTIVE,
                "created_at": current.created_at,
                "updated_at": self._now(),
            }
        )
        body = entry_to_json(new)
        _set_columns(row, new, body)
        await self._claim_elements(session, new)
        self._add_version(session, new, body, caller, reason=reason)
        await self._append_change(session, new, ChangeKind.UPDATED)
        self._remember(session, caller, request_id, "update_resource", new)
        return new

    async def withdraw(
        self, caller: Identity, code: str, reason: str, request_id: str = ""
    ) -> ResourceEntry:
        """Withdraw an entry (a new version with status WITHDRAWN); it stays in the history
        and releases its 一数一源 claims so another resource may become the source."""
        if not reason.strip():
            raise InvalidArgument("reason: withdrawing a resource needs a reason")
        check_request_id(request_id)

        async def txn(session: AsyncSession) -> ResourceEntry:
            return await self.withdraw_in(session, caller, code, reason, request_id)

        result = await self._db.write("catalog.withdraw", txn)
        self.notify_changed()
        return result

    async def withdraw_in(
        self,
        session: AsyncSession,
        caller: Identity,
        code: str,
        reason: str,
        request_id: str = "",
        *,
        expected_version: int = 0,
    ) -> ResourceEntry:
        """:meth:`withdraw` inside the caller's write transaction (an approved change request,
        第四十一条); the caller calls :meth:`notify_changed` after committing."""
        if done := await self._replayed(session, caller, request_id, "withdraw_resource", code):
            return done
        row = await self._current_for_change(session, code, caller, "withdraw")
        if row.status == ResourceStatus.WITHDRAWN:
            raise FailedPrecondition(f"resource {code} is already withdrawn")
        if expected_version and expected_version != row.version:
            raise FailedPrecondition(
                f"resource {code} is at version {row.version}, the withdrawal expected version "
                f"{expected_version}; fetch it again and ask again"
            )
        new = entry_from_json(row.body).model_copy(
            update={
                "version": row.version + 1,
                "status": ResourceStatus.WITHDRAWN,
                "updated_at": self._now(),
            }
        )
        body = entry_to_json(new)
        _set_columns(row, new, body)
        await self._claim_elements(session, new)  # a withdrawn entry claims nothing
        self._add_version(session, new, body, caller, reason=reason)
        await self._append_change(session, new, ChangeKind.WITHDRAWN)
        self._remember(session, caller, request_id, "withdraw_resource", new)
        return new

    # --- idempotency (node.idempotency) ----------------------------------------------------

    async def _replayed(
        self, session: AsyncSession, caller: Identity, request_id: str, operation: str, code: str
    ) -> ResourceEntry | None:
        """The entry version an earlier request with this id wrote, or None."""
        done = await idempotency.replay(self._db, session, caller, request_id, operation, code)
        if done is None:
            return None
        version = await session.get(CatalogEntryVersionRow, (code, int(done)))
        if version is None:  # versions are never deleted; this would be a corrupted database
            raise NotFound(f"resource {code} has no version {done}")
        return entry_from_json(version.body)

    def _remember(
        self,
        session: AsyncSession,
        caller: Identity,
        request_id: str,
        operation: str,
        entry: ResourceEntry,
    ) -> None:
        idempotency.remember(
            session,
            caller,
            request_id,
            operation,
            entry.resource_code,
            str(entry.version),
            self._now(),
        )

    # --- reading --------------------------------------------------------------------------

    async def current(self, code: str) -> ResourceEntry:
        """The current entry: the lookup every sharing call makes, so one point read, and the
        parsed entry is reused while its stored body is unchanged."""
        row = await self._db.fetch_one(
            "SELECT body FROM catalog_entry WHERE resource_code = :code", {"code": code}
        )
        if row is None:
            raise _not_found(code)
        body = str(row[0])
        cached = self._parsed.get(code)
        if cached is not None and cached[0] == body:
            return cached[1]
        entry = entry_from_json(body)
        if len(self._parsed) >= _PARSED_CACHE:
            self._parsed.pop(next(iter(self._parsed)))
        self._parsed[code] = (body, entry)
        return entry

    async def get(self, code: str, version: int = 0) -> ResourceEntry:
        """The current entry, or the given version of it (every version is kept)."""
        if version == 0:
            return await self.current(code)

        async def txn(session: AsyncSession) -> ResourceEntry:
            if version == 0:
                row = await session.get(CatalogEntryRow, code)
                if row is None:
                    raise _not_found(code)
                return entry_from_json(row.body)
            old = None
            if version <= MAX_STORED_INT:
                old = await session.get(CatalogEntryVersionRow, (code, version))
            if old is None:
                current = await session.get(CatalogEntryRow, code)
                if current is None:
                    raise _not_found(code)
                raise NotFound(
                    f"resource {code} has no version {version}; versions are 1 to {current.version}"
                )
            return entry_from_json(old.body)

        if version < 0:
            raise InvalidArgument(f"version: must be 0 (current) or a version, got {version}")
        return await self._db.read("catalog.get", txn)

    async def history(self, code: str, newest: int | None = None) -> Entries:
        """Every version of an entry, oldest first; with ``newest``, only the newest that many
        (a page of the operator console)."""

        async def txn(session: AsyncSession) -> Entries:
            query = select(CatalogEntryVersionRow).where(
                col(CatalogEntryVersionRow.resource_code) == code
            )
            if newest is not None:
                query = query.order_by(col(CatalogEntryVersionRow.version).desc()).limit(
                    max(1, newest)
                )
                rows = list(await session.exec(query))[::-1]
            else:
                rows = list(await session.exec(query.order_by(col(CatalogEntryVersionRow.version))))
            return [entry_from_json(row.body) for row in rows]

        entries = await self._db.read("catalog.history", txn)
        if not entries:
            raise _not_found(code)
        return entries

    async def changes(self, after_sequence: int = 0, limit: int = 100) -> list[CatalogChange]:
        """The change feed after ``after_sequence``, in order (at most ``limit``, capped)."""
        return (await self.changes_of(None, after_sequence, limit))[0]

    async def changes_of(
        self, origin_region: str | None, after_sequence: int = 0, limit: int = 100
    ) -> tuple[list[CatalogChange], int]:
        """The changes to ``origin_region``'s entries (every region's for None) among the next
        ``limit`` of the feed after ``after_sequence``, and the sequence of the last of those
        ``limit`` (``after_sequence`` when there are none): where to read on from. The other
        regions' changes are passed over without reading their entries, so a city looking
        for its own changes among 100,000 of the province's parses none of those."""
        if after_sequence < 0:
            raise InvalidArgument(f"after_sequence: must not be negative, got {after_sequence}")
        if limit < 0:
            raise InvalidArgument(f"limit: must not be negative, got {limit}")
        limit = min(limit or 100, MAX_CHANGES)
        feed: sa.Table = CatalogChangeRow.__table__  # type: ignore[attr-defined]
        version: sa.Table = CatalogEntryVersionRow.__table__  # type: ignore[attr-defined]
        # A change's body is its version's (migration 0033); rows written before keep a copy.
        stored = sa.func.coalesce(feed.c.body, version.c.body)
        body = (
            stored
            if origin_region is None
            else sa.case((feed.c.origin_region == origin_region, stored), else_=None)
        )
        query = (
            sa.select(
                feed.c.sequence,
                feed.c.resource_code,
                feed.c.version,
                feed.c.kind,
                feed.c.origin_region,
                feed.c.at,
                body,
            )
            .select_from(
                feed.outerjoin(
                    version,
                    sa.and_(
                        version.c.resource_code == feed.c.resource_code,
                        version.c.version == feed.c.version,
                    ),
                )
            )
            .where(feed.c.sequence > min(after_sequence, MAX_STORED_INT))
            .order_by(feed.c.sequence)
            .limit(limit)
        )

        async def txn(session: AsyncSession) -> tuple[list[CatalogChange], int]:
            rows = (await (await session.connection()).execute(query)).all()
            changes = [
                CatalogChange(
                    sequence=sequence,
                    resource_code=code,
                    version=version,
                    kind=ChangeKind(kind),
                    origin_region=origin,
                    at=at,
                    entry=entry_from_json(body),
                )
                for sequence, code, version, kind, origin, at, body in rows
                if body is not None
            ]
            return changes, rows[-1][0] if rows else after_sequence

        return await self._db.read("catalog.changes", txn)

    async def last_sequence(self) -> int:
        """The sequence of the last change in this node's feed (0 for none)."""
        row = await self._db.fetch_one(_LAST_SEQUENCE, {})
        return 0 if row is None or row[0] is None else int(row[0])

    async def snapshot_bodies(self) -> AsyncIterator[list[str]]:
        """The stored body of every current entry, withdrawn ones included, a page at a time:
        the content of a catalog snapshot (node.federation).

        Each page is its own read, so a page holds what was current when it was read: a reader
        takes :meth:`last_sequence` first and then every change after it, which covers any
        entry changed while the pages were read. Bodies of up to SNAPSHOT_SMALL_CHARS
        characters come first, SNAPSHOT_PAGE to a page, then larger ones one to a page, so a
        page holds at most a few megabytes however large the entries are.
        """
        after = ""
        while True:
            params = {"after": after, "chars": SNAPSHOT_SMALL_CHARS, "limit": SNAPSHOT_PAGE}
            rows = await self._db.fetch_all(_SNAPSHOT_SMALL, params)
            if not rows:
                break
            after = str(rows[-1][0])
            yield [str(body) for _, body in rows]
        after = ""
        while (
            row := await self._db.fetch_one(
                _SNAPSHOT_LARGE, {"after": after, "chars": SNAPSHOT_SMALL_CHARS}
            )
        ) is not None:
            after = str(row[0])
            yield [str(row[1])]

    async def digest(self, *, current: bool = True) -> tuple[str, int, int]:
        """(sha256 hex, entry count, last change sequence) of the current catalog.

        The hash covers the canonical JSON of every current entry (withdrawn ones included),
        sorted by resource code in Python so the result does not depend on a database
        collation: two nodes with the same catalog report the same digest.

        Every write of an entry appends to the change feed in its transaction (register,
        update, withdraw, a peer's change applied), so while the entry count and the feed's
        last sequence are those of the previous digest, so is the catalog: the digest is then
        not recomputed. Heartbeats ask for it every few seconds at both ends, and reading every
        entry each time cost a province of 100,000 entries most of a core (bench.scale).
        The codes are read and sorted first, then the bodies DIGEST_PAGE at a time, so a large
        catalog is not held in memory at once.

        ``current=False`` (heartbeats, GetNodeInfo) accepts the last digest computed, with the
        count and sequence it covers, while less than DIGEST_REUSE_FACTOR times its computing
        time has passed since: the digest a heartbeat carries may then lag a catalog that is
        changing, by no more than that.
        """
        if (
            not current
            and self._digest is not None
            and time.monotonic() - self._digest_done < DIGEST_REUSE_FACTOR * self._digest_took
        ):
            return self._digest[1]
        started = time.monotonic()
        computed = False

        async def txn(session: AsyncSession) -> tuple[tuple[int, int], tuple[str, int, int]]:
            nonlocal computed
            # The key first: rows read after it are at least as new, so a digest is never
            # cached under a key newer than what it covers.
            last = (await session.exec(select(func.max(CatalogChangeRow.sequence)))).one() or 0
            count = (await session.exec(select(func.count()).select_from(CatalogEntryRow))).one()
            key = (int(count), int(last))
            if self._digest is not None and self._digest[0] == key:
                return self._digest
            hashed = await _hash_in_pages(session)
            computed = True
            return key, (hashed[0], hashed[1], last)

        self._digest = await self._db.read("catalog.digest", txn)
        if computed:
            self._digest_done = time.monotonic()
            self._digest_took = self._digest_done - started
        return self._digest[1]

    async def list(
        self,
        *,
        provider_code: str | None = None,
        region: str | None = None,
        classification: Classification | None = None,
        industry_category: str | None = None,
        share_type: ShareType | None = None,
        open_type: OpenType | None = None,
        include_withdrawn: bool = False,
        page_size: int = 0,
        page_token: str = "",
        max_bytes: int | None = None,
        name_contains: str = "",
    ) -> tuple[Entries, str]:
        """One page of entries ordered by resource code, and the token of the next page
        ("" on the last page). Filters left None (or "") match everything; withdrawn entries
        are left out unless asked for. ``page_size`` 0 means 100; at most 500. The page also
        stops before the entry that would take its entries' JSON past ``max_bytes`` (None:
        no limit), with at least one entry. ``name_contains``: only entries whose name holds
        that text (at most 64 characters; LIKE's wildcards in it are matched literally)."""
        if len(name_contains) > MAX_NAME_SEARCH:
            raise InvalidArgument(f"name_contains: at most {MAX_NAME_SEARCH} characters")
        size = paging.page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        after = _decode_token(page_token) if page_token else ""
        query = select(CatalogEntryRow).order_by(col(CatalogEntryRow.resource_code))
        if after:
            query = query.where(col(CatalogEntryRow.resource_code) > after)
        equal: Sequence[tuple[Any, str | None]] = (
            (CatalogEntryRow.provider_code, provider_code),
            (CatalogEntryRow.region, region),
            (CatalogEntryRow.classification, classification),
            (CatalogEntryRow.industry_category, industry_category),
            (CatalogEntryRow.share_type, share_type),
            (CatalogEntryRow.open_type, open_type),
        )
        for column, value in equal:
            if value:
                query = query.where(col(column) == str(value))
        if not include_withdrawn:
            query = query.where(col(CatalogEntryRow.status) != ResourceStatus.WITHDRAWN.value)
        if name_contains:
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", name_contains) + "%"
            query = query.where(col(CatalogEntryRow.name).like(pattern, escape="\\"))
        query = query.limit(size + 1)

        async def txn(session: AsyncSession) -> list[tuple[ResourceEntry, int]]:
            return [
                (entry_from_json(row.body), len(row.body.encode()))
                for row in await session.exec(query)
            ]

        rows = await self._db.read("catalog.list", txn)
        more = len(rows) > size
        entries: Entries = []
        spent = 0
        for entry, length in rows[:size]:
            spent += length
            if entries and max_bytes is not None and spent > max_bytes:
                more = True
                break
            entries.append(entry)
        if more:
            return entries, _encode_token(entries[-1].resource_code)
        return entries, ""

    # --- inside transactions --------------------------------------------------------------

    async def _current_for_change(
        self, session: AsyncSession, code: str, caller: Identity, action: str
    ) -> CatalogEntryRow:
        # FOR UPDATE: concurrent changes of one entry queue up on PostgreSQL (on SQLite the
        # writer already holds the database write lock).
        row = await session.get(CatalogEntryRow, code, with_for_update=True)
        if row is None:
            raise _not_found(code)
        probe = entry_from_json(row.body).probe
        if check_catalog_write(caller, code, probe=probe, action=action):
            return row
        if caller.role is not Role.AGENCY or caller.subject != row.provider_code:
            raise PermissionDenied(
                f"only the provider agency {row.provider_code} may {action} resource {code}; "
                f"the caller is {_who(caller)}"
            )
        return row

    async def _claim_elements(self, session: AsyncSession, entry: ResourceEntry) -> None:
        """Make element_source say exactly what ``entry`` claims (一数一源, 第十三条)."""
        code = entry.resource_code
        wanted: dict[str, tuple[int, DataItem]] = {}
        if entry.status is ResourceStatus.ACTIVE:
            wanted = {
                item.standard_element: (i, item)
                for i, item in enumerate(entry.items)
                if item.authoritative_source
            }
        held = (
            await session.exec(
                select(ElementSourceRow).where(col(ElementSourceRow.resource_code) == code)
            )
        ).all()
        for claim in held:
            if claim.standard_element not in wanted:
                await session.delete(claim)
            else:
                claim.item_name = wanted.pop(claim.standard_element)[1].name
        await session.flush()
        # A fixed order, so two registrations claiming the same elements cannot deadlock.
        for element in sorted(wanted):
            index, item = wanted[element]
            key = (entry.region, element)
            if await session.get(ElementSourceRow, key) is not None:
                raise await self._source_conflict(session, entry, index, element)
            try:
                async with session.begin_nested():
                    session.add(
                        ElementSourceRow(
                            region=entry.region,
                            standard_element=element,
                            resource_code=code,
                            item_name=item.name,
                        )
                    )
            except IntegrityError as error:  # claimed concurrently by another process
                if not self._db.is_unique_violation(error):
                    raise
                log.info("catalog.source_claim_race", element=element, resource_code=code)
                raise await self._source_conflict(session, entry, index, element) from None

    async def _source_conflict(
        self, session: AsyncSession, entry: ResourceEntry, index: int, element: str
    ) -> FailedPrecondition:
        found = (
            await session.exec(
                select(ElementSourceRow, CatalogEntryRow)
                .join(
                    CatalogEntryRow,
                    col(CatalogEntryRow.resource_code) == col(ElementSourceRow.resource_code),
                )
                .where(col(ElementSourceRow.region) == entry.region)
                .where(col(ElementSourceRow.standard_element) == element)
                .execution_options(populate_existing=True)
            )
        ).first()
        path = f"entry.items[{index}].standard_element"
        if found is None:
            return FailedPrecondition(
                f'{path}: data element "{element}" was being claimed by another registration '
                "at the same moment; try again"
            )
        claim, source = found
        return FailedPrecondition(
            f'{path}: data element "{element}" already has an authoritative source in region '
            f"{entry.region}: item {claim.item_name} of resource {source.resource_code} "
            f"({source.name}) provided by {source.provider_name} ({source.provider_code}). "
            f"One element, one source (一数一源, 第十三条): reference {source.resource_code} "
            "instead of claiming the element"
        )

    def _add_version(
        self,
        session: AsyncSession,
        entry: ResourceEntry,
        body: str,
        caller: Identity,
        *,
        reason: str = "",
    ) -> None:
        assert entry.updated_at is not None
        session.add(
            CatalogEntryVersionRow(
                resource_code=entry.resource_code,
                version=entry.version,
                body=body,
                changed_by=caller.uri,
                changed_at=entry.updated_at,
                reason=reason,
            )
        )

    async def _append_change(
        self, session: AsyncSession, entry: ResourceEntry, kind: ChangeKind
    ) -> None:
        # The sequence is max + 1 under a lock held to commit, not an autoincrement: a
        # database sequence leaves gaps on rollback and can commit out of order, and a node
        # resuming "after N" would then skip a change that committed late. The body is the
        # version's, written beside it (_add_version): the feed reads it from there.
        await self._db.lock(session, _FEED_LOCK)
        last = (await session.exec(select(func.max(CatalogChangeRow.sequence)))).one()
        assert entry.updated_at is not None
        session.add(
            CatalogChangeRow(
                sequence=(last or 0) + 1,
                resource_code=entry.resource_code,
                version=entry.version,
                kind=kind.value,
                origin_region=entry.region,
                at=entry.updated_at,
            )
        )
        await session.flush()


# --- helpers ------------------------------------------------------------------------------


async def _hash_in_pages(session: AsyncSession) -> tuple[str, int]:
    """The digest's hash and entry count: the codes read and sorted first, then the bodies
    DIGEST_PAGE at a time in that order."""
    codes = sorted((await session.exec(select(CatalogEntryRow.resource_code))).all())
    sha = hashlib.sha256()
    for start in range(0, len(codes), DIGEST_PAGE):
        page = codes[start : start + DIGEST_PAGE]
        rows = await session.exec(
            select(CatalogEntryRow.resource_code, CatalogEntryRow.body).where(
                col(CatalogEntryRow.resource_code).in_(page)
            )
        )
        bodies = dict(rows.all())
        for code in page:
            sha.update(bodies[code].encode())
            sha.update(b"\n")
    return sha.hexdigest(), len(codes)


#: The catalog_entry columns an entry's own fields fill (all but ``body``), in the order of
#: :func:`_entry_values`.
_ENTRY_COLUMN_NAMES = (
    "resource_code",
    "name",
    "provider_code",
    "provider_name",
    "region",
    "classification",
    "industry_category",
    "share_type",
    "open_type",
    "status",
    "version",
    "created_at",
    "updated_at",
)


def _entry_values(entry: ResourceEntry) -> tuple[Any, ...]:
    """The values of :data:`_ENTRY_COLUMN_NAMES` for ``entry``."""
    return (
        entry.resource_code,
        entry.name,
        entry.provider_code,
        entry.provider_name,
        entry.region,
        entry.classification.value,
        entry.industry_category,
        entry.share_type.value,
        entry.open_type.value,
        entry.status.value,
        entry.version,
        entry.created_at,
        entry.updated_at,
    )


def _entry_columns(entry: ResourceEntry) -> dict[str, Any]:
    return dict(zip(_ENTRY_COLUMN_NAMES, _entry_values(entry), strict=True))


def _set_columns(row: CatalogEntryRow, entry: ResourceEntry, body: str) -> None:
    for name, value in _entry_columns(entry).items():
        setattr(row, name, value)
    row.body = body


def store_entry_row(
    session: AsyncSession, row: CatalogEntryRow | None, entry: ResourceEntry, body: str
) -> None:
    """Write an entry's row: a new one when ``row`` is None, else ``row`` in place. The
    registry keeps its rows this way (and bench.scale_catalog its bulk-loaded ones); catalog
    sync writes the same columns (``_ENTRY_COLUMN_NAMES``, ``_entry_values``) through
    store_replicas, so the columns of an entry are named in one place."""
    if row is None:
        session.add(CatalogEntryRow(**_entry_columns(entry), body=body))
    else:
        _set_columns(row, entry, body)


def _who(caller: Identity) -> str:
    if caller.role is Role.AGENCY:
        return f"agency {caller.subject}"
    return f"{caller.role.value} {caller.uri}"


def _not_found(code: str) -> NotFound:
    return NotFound(f"resource {quote(code)} is not in the catalog of this node")


def _already_registered(code: str) -> AlreadyExists:
    return AlreadyExists(
        f"entry.resource_code: resource {code} is already registered; use update to change it"
    )


def _encode_token(after: str) -> str:
    return paging.encode_text(_TOKEN_PREFIX + after)


def _decode_token(token: str) -> str:
    raw = paging.decode_text(token) or ""
    after = raw.removeprefix(_TOKEN_PREFIX)
    if not raw.startswith(_TOKEN_PREFIX) or not RESOURCE_CODE_RE.fullmatch(after):
        raise InvalidArgument("page_token: not a page token from this catalog; omit it to start")
    return after
