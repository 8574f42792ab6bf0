"""Publishing a resource's data to the open catalog (第二十九条: 开放目录, 脱密脱敏).

The node's data management authority publishes a catalog entry whose open type is 普遍开放 or
授权开放. Publishing makes a *version*: a snapshot of the resource's current records, each
de-identified item by item as the entry declares (node.opendata._deid), stored in ``open_row``
with the key of its class over the entry's quasi-identifiers. Before the version is served:

1. no published value may be a direct identifier in clear (a citizen ID with a valid check
   character, a mobile number, a column of personal names), whatever the entry declares;
2. the table must be k-anonymous over the quasi-identifiers (``[opendata] min_k``): the check
   is a GROUP BY over ``class_key`` in SQL, on SQLite and PostgreSQL alike. Rows in classes
   smaller than k are left out up to ``[opendata] max_suppressed`` of the rows; past that the
   publication is refused, naming the quasi-identifiers to generalise further.

The report (k reached, classes, rows left out, each item's treatment, what the identifier scan
found) is kept with the version, refused or not, for the authority. A version that passed has
its files' sizes and SHA-256 computed before it is served (node.opendata._digests), and in the
same pass its files' bytes stored (node.opendata._files), all kept and deleted with its rows.
Rows are written in batches while the version is ``building``; nothing is served until the last
step flips it to ``published`` in one transaction, and a refused or abandoned version's rows are
deleted.

A published dataset is served only while its entry is the one the version was made from, is
active and still open: changing or withdrawing the entry takes it out until it is published
again (:meth:`OpenData.served`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.audit import AuditEntry, AuditLog, Operation, request_digest
from node.catalog import Catalog, OpenType, ResourceEntry, ResourceStatus, UpdateCycle
from node.errors import Aborted, DomainError, FailedPrecondition, NotFound, PermissionDenied
from node.models import (
    OpenDatasetRow,
    OpenFileChunkRow,
    OpenFileDigestRow,
    OpenRowRow,
    OpenVersionRow,
    RecordRow,
    ResourceDataRow,
)
from node.opendata._deid import Finding, IdentifierScan, Treater, TreatmentError
from node.opendata._digests import FileDigests, Variant, compute_digests, digest_rows
from node.opendata._files import StoredFiles
from node.opendata._receipt import FileDigest
from node.storage import Database

log = structlog.get_logger("govnode.opendata")

OPEN_TYPES = (OpenType.UNIVERSAL, OpenType.AUTHORIZED)
#: Records read and rows written per transaction while a version is built.
BATCH = 1000
#: A version still ``building`` after this long was abandoned (its process died): its rows are
#: deleted by the next publication of the resource.
ABANDONED_AFTER = dt.timedelta(hours=1)

_d = OpenDatasetRow.__table__  # type: ignore[attr-defined]
_v = OpenVersionRow.__table__  # type: ignore[attr-defined]
_o = OpenRowRow.__table__  # type: ignore[attr-defined]
_f = OpenFileDigestRow.__table__  # type: ignore[attr-defined]
_c = OpenFileChunkRow.__table__  # type: ignore[attr-defined]
_r = RecordRow.__table__  # type: ignore[attr-defined]
_rd = ResourceDataRow.__table__  # type: ignore[attr-defined]

#: How often a served dataset is published again when its data changed, by its entry's update
#: cycle (第二十一条); an irregular one only when the authority publishes it.
REPUBLISH_EVERY: dict[UpdateCycle, dt.timedelta] = {
    UpdateCycle.REALTIME: dt.timedelta(hours=1),
    UpdateCycle.DAILY: dt.timedelta(days=1),
    UpdateCycle.WEEKLY: dt.timedelta(days=7),
    UpdateCycle.MONTHLY: dt.timedelta(days=30),
    UpdateCycle.QUARTERLY: dt.timedelta(days=91),
    UpdateCycle.YEARLY: dt.timedelta(days=365),
}

#: Says why this node may not open data (第三十一条), or None when it may.
MayOpen = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class Report:
    """What the de-identification check of one version found (GB/T 42460: 去标识化效果评估)."""

    resource_code: str
    version: int
    entry_version: int
    outcome: str  # "published" or "refused"
    reason: str = ""
    rows_read: int = 0
    rows_published: int = 0
    rows_suppressed: int = 0
    min_k: int = 0
    #: The smallest class over the quasi-identifiers after suppression (0: none declared).
    k_reached: int = 0
    classes: int = 0
    quasi_identifiers: tuple[str, ...] = ()
    treatments: dict[str, str] = field(default_factory=dict)
    findings: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text_: str) -> Report:
        data = json.loads(text_)
        data["quasi_identifiers"] = tuple(data.get("quasi_identifiers", ()))
        data["findings"] = tuple(data.get("findings", ()))
        return cls(**data)


class PublicationRefused(FailedPrecondition):
    """The check refused the version; the report says why and is kept."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Dataset:
    """A resource in the open catalog as the authority sees it."""

    resource_code: str
    published: bool
    version: int
    changed_by: str
    changed_at: dt.datetime
    #: Why it is not served now ("" when served): unpublished, the entry changed, ...
    not_served: str
    report: Report | None


class OpenData:
    """The open catalog of this node: publication, withdrawal and what is served."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        node_region: str,
        min_k: int,
        max_suppressed: float,
        may_open: MayOpen,
        audit: AuditLog | None = None,
    ) -> None:
        """``audit``: where publications are recorded when no gRPC call records them (the
        `govnode opendata` commands work on the database directly)."""
        self._db = db
        self._audit = audit
        self._catalog = catalog
        self._region = node_region
        self._min_k = min_k
        self._max_suppressed = max_suppressed
        self._may_open = may_open
        #: The size and SHA-256 of each file a version is downloaded as (node.opendata._digests).
        self.digests = FileDigests(db)
        #: The bytes of each version's full files, written at publication (node.opendata._files).
        self.files = StoredFiles(db)

    # --- publishing --------------------------------------------------------------------------

    async def _publishable(self, code: str, *, tester: bool) -> ResourceEntry:
        entry = await self._catalog.current(code)
        if tester and not entry.probe:
            raise PermissionDenied(
                f"a conformance tester publishes only its probe resources, not {code} (第三十一条)"
            )
        reason = await self._may_open()
        if reason is not None and not entry.probe:
            # Before its approval a city opens only testers' probe data (trial mode), so the
            # conformance tests can run against it (第三十一条).
            raise FailedPrecondition(reason)
        if entry.region != self._region:
            raise FailedPrecondition(
                f"resource {code} is owned by region {entry.region}: its data is there, and "
                "that node's data management authority publishes it (第二十九条)"
            )
        if entry.status is not ResourceStatus.ACTIVE:
            raise FailedPrecondition(f"resource {code} is withdrawn: it cannot be published")
        if entry.open_type not in OPEN_TYPES:
            raise FailedPrecondition(
                f"resource {code} is 不予开放 (open type {entry.open_type.value}): only 普遍开放 "
                "and 授权开放 entries enter the open catalog (第二十九、三十二条)"
            )
        return entry

    async def publish(
        self, code: str, by: str, *, now: dt.datetime | None = None, tester: bool = False
    ) -> Report:
        """Build, check and serve a new version of ``code``'s data; returns its report.
        ``tester``: a conformance tester publishes, which it may only for its probes.

        Raises PublicationRefused (the report kept) when the check fails, FailedPrecondition
        when the entry or this node may not open data, Aborted while another publication of
        the same resource is being built."""
        try:
            report = await self._publish(code, by, now, tester)
        except DomainError as exc:
            await self._record("opendata.publish", by, code, _outcome(exc), exc.message)
            raise
        await self._record(
            "opendata.publish",
            by,
            code,
            "OK",
            f"version {report.version}: {report.rows_published} rows, k {report.k_reached}",
            {"version": report.version, "rows": report.rows_published, "k": report.k_reached},
        )
        return report

    async def _record(
        self,
        method: str,
        by: str,
        code: str,
        outcome: str,
        message: str,
        detail: dict[str, str | int] | None = None,
    ) -> None:
        if self._audit is None:
            return
        await self._audit.append(
            AuditEntry(
                caller=by,
                method=method,
                operation=Operation.MAINTAIN,
                outcome=outcome,
                request_digest=request_digest(f"{method} {code}".encode()),
                resource_code=code,
                message=message,
                detail=detail or {},
            )
        )

    async def _publish(
        self, code: str, by: str, now: dt.datetime | None, tester: bool = False
    ) -> Report:
        entry = await self._publishable(code, tester=tester)
        treater = Treater(entry.items, secrets.token_bytes(32))
        if not treater.published_items:
            raise FailedPrecondition(
                f"resource {code} declares no item for opening: every item is dropped (set "
                "an item's open treatment; levels 3 and 4 never open, 第三十七条)"
            )
        made_at = now or dt.datetime.now(dt.UTC)
        version = await self._start(entry, by, made_at)
        report = Report(
            resource_code=code,
            version=version,
            entry_version=entry.version,
            outcome="refused",
            min_k=self._min_k,
            quasi_identifiers=tuple(treater.quasi_items),
            treatments=treater.describe(),
        )
        try:
            read, problem = await self._build(code, version, treater)
            report = dataclasses.replace(report, rows_read=read)
            if problem:
                raise await self._refuse(report, problem, ())
            report = await self._check_k(report, treater)
            # The files' digests, so that the first download sends its receipt first.
            digests = await self._file_digests(code, version, treater.published_items)
        except PublicationRefused:
            raise
        except BaseException:
            await self._discard(code, version, "abandoned", report)
            raise
        report = await self._serve(report, by, made_at, (treater.published_items, digests))
        log.info(
            "opendata.published",
            resource_code=code,
            version=version,
            rows=report.rows_published,
            k=report.k_reached,
        )
        return report

    async def _start(self, entry: ResourceEntry, by: str, made_at: dt.datetime) -> int:
        """Claim the next version of ``entry``'s data (abandoned builds are cleared first)."""
        code = entry.resource_code
        stale = made_at - ABANDONED_AFTER

        async def txn(session: AsyncSession) -> tuple[int, dt.datetime | None]:
            connection = await session.connection()
            rows = (
                await connection.execute(
                    sa_select(_v.c.version, _v.c.state, _v.c.made_at).where(
                        _v.c.resource_code == code
                    )
                )
            ).all()
            building = [r for r in rows if r[1] == "building"]
            for _, _, started in building:
                if _utc(started) > stale:
                    return 0, _utc(started)
            for number, _, _ in building:
                await connection.execute(
                    delete(OpenRowRow).where(_o.c.resource_code == code, _o.c.version == number)
                )
                await connection.execute(
                    delete(OpenFileDigestRow).where(
                        _f.c.resource_code == code, _f.c.version == number
                    )
                )
                await connection.execute(
                    delete(OpenFileChunkRow).where(
                        _c.c.resource_code == code, _c.c.version == number
                    )
                )
                await connection.execute(
                    update(OpenVersionRow)
                    .where(_v.c.resource_code == code, _v.c.version == number)
                    .values(state="abandoned")
                )
            number = max((r[0] for r in rows), default=0) + 1
            data = await session.get(ResourceDataRow, code)
            await connection.execute(
                insert(OpenVersionRow).values(
                    resource_code=code,
                    version=number,
                    entry_version=entry.version,
                    data_version=data.data_version if data is not None else 0,
                    state="building",
                    made_by=by[:300],
                    made_at=made_at,
                    rows=0,
                    report="{}",
                )
            )
            return number, None

        try:
            number, busy = await self._db.write("opendata.version_start", txn)
        except IntegrityError:
            busy = made_at
            number = 0
        if busy is not None:
            raise Aborted(
                f"a publication of {code} is being made (since {busy.isoformat()}): try again "
                "when it is done"
            )
        return number

    async def _build(self, code: str, version: int, treater: Treater) -> tuple[int, str]:
        """Write the de-identified rows; (records read, a reason to refuse or "")."""
        scan = IdentifierScan(treater)
        quasi = treater.quasi_items
        after = ""
        read = 0
        while True:

            async def page(session: AsyncSession, after: str = after) -> list[Any]:
                statement = (
                    sa_select(_r.c.record_key, _r.c.item_values)
                    .where(
                        _r.c.resource_code == code,
                        _r.c.deleted.is_(False),
                        _r.c.record_key > after,
                    )
                    .order_by(_r.c.record_key)
                    .limit(BATCH)
                )
                return list((await (await session.connection()).execute(statement)).all())

            records = await self._db.read("opendata.records", page)
            if not records:
                return read, ""
            batch = []
            for key, values in records:
                try:
                    treated = treater.apply(values)
                except TreatmentError as exc:
                    return read, f"record {key[:40]}: {exc}"
                scan.add(treated)
                read += 1
                batch.append(
                    {
                        "resource_code": code,
                        "version": version,
                        "row": read,
                        "class_key": _class_key([treated.get(name, "") for name in quasi]),
                        "data": json.dumps(treated, ensure_ascii=False, separators=(",", ":")),
                    }
                )
            findings = scan.findings()
            if findings:
                return read, "; ".join(_finding(f) for f in findings[:5])

            async def write(session: AsyncSession, batch: list[dict[str, Any]] = batch) -> None:
                await (await session.connection()).execute(insert(OpenRowRow), batch)

            await self._db.write("opendata.rows", write)
            after = records[-1][0]

    async def _check_k(self, report: Report, treater: Treater) -> Report:
        """Suppress the rows of classes smaller than k, within the limit, and measure k."""
        code, version, k = report.resource_code, report.version, self._min_k
        rows = report.rows_read
        params = {"code": code, "version": version, "k": k}
        if not treater.quasi_items:
            return dataclasses.replace(report, rows_published=rows, classes=1 if rows else 0)
        small = await self._db.fetch_one(
            "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM open_row "
            "WHERE resource_code = :code AND version = :version GROUP BY class_key "
            "HAVING COUNT(*) < :k) AS small",
            params,
        )
        assert small is not None
        small_classes, suppressed = int(small[0]), int(small[1])
        if suppressed > self._max_suppressed * rows:
            names = ", ".join(treater.quasi_items)
            raise await self._refuse(
                dataclasses.replace(report, rows_suppressed=suppressed),
                f"the published table is not {k}-anonymous over its quasi-identifiers "
                f"({names}): {suppressed} of {rows} rows are in {small_classes} classes smaller "
                f"than {k}, more than the {self._max_suppressed:.0%} that may be left out; "
                f"generalise {names} further",
                (),
            )
        if suppressed:
            await self._suppress(code, version, k)
        measured = await self._db.fetch_one(
            "SELECT COUNT(*), COALESCE(MIN(n), 0), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) "
            "AS n FROM open_row WHERE resource_code = :code AND version = :version "
            "GROUP BY class_key) AS classes",
            params,
        )
        assert measured is not None
        return dataclasses.replace(
            report,
            classes=int(measured[0]),
            k_reached=int(measured[1]),
            rows_published=int(measured[2]),
            rows_suppressed=suppressed,
        )

    async def _suppress(self, code: str, version: int, k: int) -> None:
        """Delete the rows of the classes smaller than k: their keys first (few: at most the
        suppression limit), then the rows by key through ix_open_row_class. (One DELETE with
        the GROUP BY as a subquery is quadratic on PostgreSQL while the new rows have no
        statistics: the planner re-runs the grouping per row.)"""

        async def small_keys(session: AsyncSession) -> list[str]:
            rows = await (await session.connection()).execute(
                sa_select(_o.c.class_key)
                .where(_o.c.resource_code == code, _o.c.version == version)
                .group_by(_o.c.class_key)
                .having(func.count() < k)
            )
            return [str(r[0]) for r in rows]

        keys = await self._db.read("opendata.small_classes", small_keys)
        for start in range(0, len(keys), BATCH):

            async def drop(
                session: AsyncSession, chunk: list[str] = keys[start : start + BATCH]
            ) -> None:
                await (await session.connection()).execute(
                    delete(OpenRowRow).where(
                        _o.c.resource_code == code,
                        _o.c.version == version,
                        _o.c.class_key.in_(chunk),
                    )
                )

            await self._db.write("opendata.suppress", drop)

    async def _refuse(
        self, report: Report, reason: str, findings: Sequence[str]
    ) -> PublicationRefused:
        refused = dataclasses.replace(
            report, outcome="refused", reason=reason, findings=tuple(findings)
        )
        await self._discard(report.resource_code, report.version, "refused", refused)
        log.warning(
            "opendata.refused",
            resource_code=report.resource_code,
            version=report.version,
            reason=reason,
        )
        return PublicationRefused(
            f"publication of {report.resource_code} refused: {reason} (第二十九条: 脱密脱敏)",
            refused,
        )

    async def _discard(self, code: str, version: int, state: str, report: Report) -> None:
        async def txn(session: AsyncSession) -> None:
            connection = await session.connection()
            await connection.execute(
                delete(OpenRowRow).where(_o.c.resource_code == code, _o.c.version == version)
            )
            await connection.execute(
                delete(OpenFileDigestRow).where(_f.c.resource_code == code, _f.c.version == version)
            )
            await connection.execute(
                delete(OpenFileChunkRow).where(_c.c.resource_code == code, _c.c.version == version)
            )
            await connection.execute(
                update(OpenVersionRow)
                .where(_v.c.resource_code == code, _v.c.version == version)
                .values(state=state, rows=0, report=report.to_json())
            )

        await self._db.write("opendata.discard", txn)

    async def _file_digests(
        self, code: str, version: int, columns: Sequence[str]
    ) -> dict[Variant, FileDigest]:
        """The digests of the files of a version being published (one more read of its rows):
        its first download then states them at once (node.opendata._digests). The same pass
        stores the files' bytes, which downloads then stream (node.opendata._files): the
        version is served only after, so a served version has its files."""
        digests, _ = await compute_digests(
            self, code, version, columns, store=self.files.writer(code, version)
        )
        return digests

    async def _serve(
        self,
        report: Report,
        by: str,
        at: dt.datetime,
        files: tuple[Sequence[str], dict[Variant, FileDigest]],
    ) -> Report:
        """Flip the version to published and serve it, with the digests of its ``files``
        (columns, digests); drop the rows and digests of versions older than the one served
        until now (a download of that one may still be running)."""
        code, version = report.resource_code, report.version
        served = dataclasses.replace(report, outcome="published")
        columns, digests = files

        async def txn(session: AsyncSession) -> None:
            connection = await session.connection()
            current = await session.get(OpenDatasetRow, code, with_for_update=True)
            previous = current.version if current is not None else 0
            await connection.execute(
                update(OpenVersionRow)
                .where(_v.c.resource_code == code, _v.c.version == version)
                .values(state="published", rows=served.rows_published, report=served.to_json())
            )
            if current is None:
                session.add(
                    OpenDatasetRow(
                        resource_code=code,
                        published=True,
                        version=version,
                        changed_by=by[:300],
                        changed_at=at,
                    )
                )
            else:
                current.published = True
                current.version = version
                current.changed_by = by[:300]
                current.changed_at = at
            await connection.execute(
                insert(OpenFileDigestRow), digest_rows(code, version, columns, digests)
            )
            await connection.execute(
                delete(OpenRowRow).where(
                    _o.c.resource_code == code,
                    _o.c.version < version,
                    _o.c.version != previous,
                )
            )
            await connection.execute(
                delete(OpenFileDigestRow).where(
                    _f.c.resource_code == code,
                    _f.c.version < version,
                    _f.c.version != previous,
                )
            )
            await connection.execute(
                delete(OpenFileChunkRow).where(
                    _c.c.resource_code == code,
                    _c.c.version < version,
                    _c.c.version != previous,
                )
            )

        await self._db.write("opendata.serve", txn)
        return served

    async def unpublish(
        self, code: str, by: str, *, now: dt.datetime | None = None, tester: bool = False
    ) -> None:
        """Take ``code`` out of the open catalog (its versions' reports stay); a tester, only
        its probes."""
        at = now or dt.datetime.now(dt.UTC)
        if tester:
            await self._publishable(code, tester=True)

        async def txn(session: AsyncSession) -> bool:
            row = await session.get(OpenDatasetRow, code, with_for_update=True)
            if row is None or not row.published:
                return False
            row.published = False
            row.changed_by = by[:300]
            row.changed_at = at
            return True

        if not await self._db.write("opendata.unpublish", txn):
            message = f"resource {code} is not in the open catalog"
            await self._record("opendata.unpublish", by, code, "NOT_FOUND", message)
            raise NotFound(message)
        await self._record("opendata.unpublish", by, code, "OK", "taken out of the open catalog")
        log.info("opendata.unpublished", resource_code=code)

    # --- re-publication on the update cycle ----------------------------------------------

    async def due(self, now: dt.datetime | None = None) -> list[str]:
        """Served datasets whose update cycle has passed since their version was made and
        whose data changed since (更新周期, 第二十一条): what :meth:`republish_due` renews."""
        at = now or dt.datetime.now(dt.UTC)

        async def txn(session: AsyncSession) -> list[Any]:
            statement = (
                sa_select(_d.c.resource_code, _v.c.made_at, _v.c.data_version, _rd.c.data_version)
                .join(
                    _v, (_v.c.resource_code == _d.c.resource_code) & (_v.c.version == _d.c.version)
                )
                .outerjoin(_rd, _rd.c.resource_code == _d.c.resource_code)
                .where(_d.c.published.is_(True))
                .order_by(_d.c.resource_code)
            )
            return list((await (await session.connection()).execute(statement)).all())

        rows = await self._db.read("opendata.due", txn)
        found = []
        for code, made_at, built_at, current in rows:
            if current is None or int(current) == int(built_at):
                continue  # nothing new to publish
            try:
                entry = await self._catalog.current(str(code))
            except NotFound:
                continue
            period = REPUBLISH_EVERY.get(entry.update_cycle)
            if period is not None and _utc(made_at) + period <= at:
                found.append(str(code))
        return found

    async def republish_due(self, by: str, now: dt.datetime | None = None) -> list[Report]:
        """Publish again every served dataset that is :meth:`due`; a refusal leaves the
        version served before in place (its report is kept for the authority)."""
        done = []
        for code in await self.due(now):
            try:
                if (await self._served_row(code))[1]:
                    continue
                done.append(await self.publish(code, by, now=now))
            except (Aborted, FailedPrecondition, NotFound) as exc:
                log.warning("opendata.republish_failed", resource_code=code, error=exc.message)
        return done

    async def _served_row(self, code: str) -> tuple[OpenDatasetRow | None, str]:
        """The dataset's row and why it is not served now ("" when it is)."""

        async def txn(session: AsyncSession) -> OpenDatasetRow | None:
            return await session.get(OpenDatasetRow, code)

        row = await self._db.read("opendata.dataset", txn)
        return row, ("it was never published" if row is None else await self._not_served(row))

    # --- reading -----------------------------------------------------------------------------

    async def datasets(self, *, after: str = "", limit: int = 100) -> list[Dataset]:
        """Resources ever published here, by code after ``after``, with why each is not served
        if it is not, and the report of its newest version."""

        async def txn(session: AsyncSession) -> list[tuple[Any, Any]]:
            statement = (
                select(OpenDatasetRow)
                .where(_d.c.resource_code > after)
                .order_by(_d.c.resource_code)
                .limit(limit)
            )
            found = []
            for row in (await session.exec(statement)).all():
                newest = (
                    await session.exec(
                        select(OpenVersionRow)
                        .where(_v.c.resource_code == row.resource_code)
                        .order_by(_v.c.version.desc())
                        .limit(1)
                    )
                ).first()
                found.append((row, newest))
            return found

        result = []
        for row, newest in await self._db.read("opendata.datasets", txn):
            report = Report.from_json(newest.report) if newest and newest.report != "{}" else None
            result.append(
                Dataset(
                    resource_code=row.resource_code,
                    published=row.published,
                    version=row.version,
                    changed_by=row.changed_by,
                    changed_at=row.changed_at,
                    not_served=await self._not_served(row),
                    report=report,
                )
            )
        return result

    async def report(self, code: str, version: int) -> Report:
        async def txn(session: AsyncSession) -> OpenVersionRow | None:
            return await session.get(OpenVersionRow, (code, version))

        row = await self._db.read("opendata.report", txn)
        if row is None or row.report == "{}":
            raise NotFound(f"resource {code} has no open data version {version}")
        return Report.from_json(row.report)

    async def served(self, code: str) -> int:
        """The version of ``code`` served now; NotFound naming why if none is."""

        row, why = await self._served_row(code)
        if row is None or why:
            raise NotFound(f"resource {code} is not in the open catalog: {why}")
        return row.version

    async def _not_served(self, row: OpenDatasetRow) -> str:
        if not row.published:
            return "its publication was withdrawn"
        try:
            entry = await self._catalog.current(row.resource_code)
        except NotFound:
            return "its catalog entry is gone"
        reason = await self._may_open()
        if reason is not None and not entry.probe:
            return reason
        if entry.status is not ResourceStatus.ACTIVE:
            return "its catalog entry was withdrawn"
        if entry.open_type not in OPEN_TYPES:
            return "its catalog entry is 不予开放 now"
        made = await self._db.fetch_one(
            "SELECT entry_version FROM open_version WHERE resource_code = :code AND "
            "version = :version",
            {"code": row.resource_code, "version": row.version},
        )
        if made is None or int(made[0]) != entry.version:
            return (
                f"its catalog entry changed (version {entry.version}) since the data was "
                "published: publish it again"
            )
        return ""

    async def rows(
        self, code: str, version: int, *, after: int = 0, limit: int = BATCH
    ) -> list[tuple[int, dict[str, str]]]:
        """Rows of a published version after row number ``after``, in order."""

        async def txn(session: AsyncSession) -> list[Any]:
            statement = (
                sa_select(_o.c.row, _o.c.data)
                .where(_o.c.resource_code == code, _o.c.version == version, _o.c.row > after)
                .order_by(_o.c.row)
                .limit(limit)
            )
            return list((await (await session.connection()).execute(statement)).all())

        found = await self._db.read("opendata.rows", txn)
        # One json.loads for the page: called once a row, the call cost several times the
        # parsing (a download's node CPU was about 40% json.loads; bench.opendata_download).
        values = json.loads("[" + ",".join(d for _, d in found) + "]")
        return [(int(n), v) for (n, _), v in zip(found, values, strict=True)]


def _finding(finding: Finding) -> str:
    return (
        f"item {finding.item}: {finding.count} rows hold a {finding.kind} in clear (first in "
        f"row {finding.first_row}); drop, mask or pseudonymise it"
    )


def _outcome(exc: DomainError) -> str:
    """The status name of a refusal, as the audit log records calls' outcomes."""
    kind = next(c for c in type(exc).__mro__ if c.__module__ == "node.errors")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).upper()


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _class_key(values: Sequence[str]) -> str:
    """The class of a row over the quasi-identifiers: a digest of their published values."""
    canonical = json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
