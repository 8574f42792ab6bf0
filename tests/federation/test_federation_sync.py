"""Catalog exchange (第十九条): city entries flow up to the province, the province-wide catalog
flows down to every city, as an ordered, resumable feed. Real nodes on loopback over real
mutual TLS, each with its own database; nodes are stopped and restarted (also in the middle of
a burst) and must converge to one digest with nothing lost and nothing applied twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import (
    catalog_pb2,
    common_pb2,
    federation_pb2,
    federation_pb2_grpc,
)
from structlog.testing import capture_logs

import node.clients._catalog_sync as catalog_sync
import node.clients._snapshot_parts as snapshot_parts
from gateway.identity import Identity, Role, make_identity
from gateway.tls import TlsFiles
from node.app import node_tls_files
from node.catalog import (
    Catalog,
    CatalogChange,
    ChangeKind,
    DataType,
    ResourceEntry,
    ResourceStatus,
    ValidationKind,
    ValidationRule,
    entry_to_json,
)
from node.clients._snapshot_parts import PartParser
from node.errors import InvalidArgument, PermissionDenied
from node.federation import CatalogExchange, snapshot_replicas
from node.servicers.convert import entry_to_proto
from node.servicers.federation_sync import change_to_proto, snapshot_entries
from node.servicers.stopping import until_stopping
from node.storage import Database
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import FIXED_TIME, OPEN_ENTRY, agency, agency_code, item
from tests.support.nodes import (
    FUZHOU,
    PROVINCE,
    XIAMEN,
    Federation,
    Member,
    channel,
    entry_of,
    federation,
    update_approved,
    withdraw_approved,
)

TD = "fujian.gov.cn"
RESTART_WAIT_S = 15.0  # after a restart: reconnection backoff (capped at 5 s) included


async def assert_once_each(fed: Federation) -> None:
    """On every node: each entry has exactly versions 1..version in its history and one feed
    row per version; nothing was applied twice, nothing skipped."""
    for member in fed.members:
        db = member.running.db
        rows = await db.fetch_all(
            "SELECT e.resource_code, e.version,"
            " (SELECT COUNT(*) FROM catalog_entry_version v"
            "  WHERE v.resource_code = e.resource_code),"
            " (SELECT COUNT(*) FROM catalog_change c WHERE c.resource_code = e.resource_code)"
            " FROM catalog_entry e",
            {},
        )
        bad = [tuple(r) for r in rows if not r[1] == r[2] == r[3]]
        assert not bad, f"{member.region}: (code, version, history rows, feed rows) {bad}"
        dupes = await db.fetch_all(
            "SELECT resource_code, version, COUNT(*) FROM catalog_change "
            "GROUP BY resource_code, version HAVING COUNT(*) > 1",
            {},
        )
        assert not dupes, f"{member.region}: changes fed twice: {dupes}"


async def last_sequence(member: Member) -> int:
    row = await member.running.db.fetch_one("SELECT max(sequence) FROM catalog_change", {})
    return int(row[0] or 0) if row is not None else 0


async def applied(member: Member) -> int:
    """How far ``member`` (a city) has applied the province's feed."""
    row = await member.running.db.fetch_one(
        "SELECT last_applied_sequence FROM feed_cursor WHERE peer_region = :p", {"p": PROVINCE}
    )
    return int(row[0]) if row is not None else 0


# --- the domain: apply each change at most once -------------------------------------------


def change(entry: ResourceEntry, sequence: int, kind: ChangeKind = ChangeKind.REGISTERED) -> Any:
    stored = entry.model_copy(
        update={
            "region": entry.resource_code[:6],
            "version": entry.version or 1,
            "status": entry.status,
            "created_at": FIXED_TIME,
            "updated_at": FIXED_TIME,
        }
    )
    return CatalogChange(
        sequence=sequence,
        resource_code=stored.resource_code,
        version=stored.version,
        kind=kind,
        origin_region=stored.region,
        at=FIXED_TIME,
        entry=stored,
    )


async def test_apply_remote_applies_each_change_once(database: Database) -> None:
    catalog = Catalog(database, PROVINCE)
    exchange = CatalogExchange(database, catalog)
    fuzhou = Identity(FUZHOU, TD, Role.NODE)
    first = change(entry_of(FUZHOU, 1), 3)
    assert await exchange.apply_remote(first, fuzhou)
    assert not await exchange.apply_remote(first, fuzhou)  # same sequence: already applied
    assert await exchange.applied_sequence(FUZHOU) == 3
    v2 = change(entry_of(FUZHOU, 1, version=2, summary="二"), 5, ChangeKind.UPDATED)
    assert await exchange.apply_remote(v2, fuzhou)
    stale = change(entry_of(FUZHOU, 1, version=2, summary="旧"), 6, ChangeKind.UPDATED)
    assert not await exchange.apply_remote(stale, fuzhou)  # version not newer: no-op
    assert await exchange.applied_sequence(FUZHOU) == 6
    got = await catalog.get(f"{FUZHOU}-3-000001")
    assert (got.version, got.summary) == (2, "二")
    assert [e.version for e in await catalog.history(got.resource_code)] == [1, 2]
    feed = await catalog.changes(0)
    assert [(c.sequence, c.origin_region, c.version) for c in feed] == [
        (1, FUZHOU, 1),
        (2, FUZHOU, 2),
    ]
    with pytest.raises(PermissionDenied, match=f"region {XIAMEN}"):
        await exchange.apply_remote(change(entry_of(XIAMEN, 1), 7), fuzhou)
    with pytest.raises(PermissionDenied, match="not a city node"):
        exchange.check_peer(Identity(PROVINCE, TD, Role.NODE), "publish")


async def test_apply_remote_many_applies_a_run_in_one_go_and_stops_at_a_refused_change(
    database: Database,
) -> None:
    catalog = Catalog(database, FUZHOU)
    exchange = CatalogExchange(database, catalog)
    province = Identity(PROVINCE, TD, Role.NODE)
    first = change(entry_of(XIAMEN, 1), 1)
    assert await exchange.apply_remote(first, province)
    v2 = change(entry_of(XIAMEN, 1, version=2, summary="二"), 3, ChangeKind.UPDATED)
    run = [
        first,  # already applied: skipped
        change(entry_of(FUZHOU, 1), 2),  # this city's own, relayed back: skipped
        v2,
        change(entry_of(PROVINCE, 1), 4),
        change(entry_of(PROVINCE, 2), 5),
    ]
    assert await exchange.apply_remote_many(run, province) == 3
    assert await exchange.applied_sequence(PROVINCE) == 5
    assert (await catalog.get(f"{XIAMEN}-3-000001")).summary == "二"
    assert await exchange.apply_remote_many(run, province) == 0  # all applied already
    refused = change(entry_of(PROVINCE, 3), 0)  # sequence 0: refused by its check
    with pytest.raises(InvalidArgument, match="sequence"):
        await exchange.apply_remote_many([change(entry_of(PROVINCE, 4), 6), refused], province)
    assert await exchange.applied_sequence(PROVINCE) == 6  # the change before it applied
    assert (await catalog.digest())[1] == 4


async def test_city_skips_its_own_entries_relayed_back(database: Database) -> None:
    catalog = Catalog(database, FUZHOU)
    exchange = CatalogExchange(database, catalog)
    province = Identity(PROVINCE, TD, Role.NODE)
    assert not await exchange.apply_remote(change(entry_of(FUZHOU, 1), 1), province)
    assert await exchange.apply_remote(change(entry_of(XIAMEN, 1), 2), province)
    assert await exchange.apply_remote(change(entry_of(PROVINCE, 1), 3), province)
    assert await exchange.applied_sequence(PROVINCE) == 3
    assert (await catalog.digest())[1] == 2
    with pytest.raises(PermissionDenied):
        exchange.check_peer(Identity(XIAMEN, TD, Role.NODE), "watch")


async def test_a_run_that_moves_an_element_source_leaves_the_claims_one_by_one_would(
    database: Database,
) -> None:
    """Bulk storing (store_replicas) against what applying each change alone leaves: an entry
    taking an element from another resource, then losing it again in the same run."""
    catalog = Catalog(database, FUZHOU)
    exchange = CatalogExchange(database, catalog)
    province = Identity(PROVINCE, TD, Role.NODE)
    claim = (item("tyshxydm", key=True, standard_element="DE01", authoritative_source=True),)
    plain = (item("tyshxydm", key=True, standard_element="DE01"),)
    a, b = f"{XIAMEN}-3-000001", f"{XIAMEN}-3-000002"
    assert await exchange.apply_remote(change(entry_of(XIAMEN, 1, items=claim), 1), province)
    run = [
        change(entry_of(XIAMEN, 2, items=plain), 2),
        change(entry_of(XIAMEN, 2, items=claim, version=2), 3, ChangeKind.UPDATED),  # takes it
        change(entry_of(XIAMEN, 3, items=claim, status=ResourceStatus.WITHDRAWN), 4),
    ]
    assert await exchange.apply_remote_many(run, province) == 3
    sources = await database.fetch_all(
        "SELECT region, standard_element, resource_code FROM element_source", {}
    )
    assert [tuple(r) for r in sources] == [(XIAMEN, "DE01", b)]
    run = [
        change(entry_of(XIAMEN, 1, items=claim, version=2), 5, ChangeKind.UPDATED),  # back
        change(entry_of(XIAMEN, 1, items=plain, version=3), 6, ChangeKind.UPDATED),  # gone
    ]
    assert await exchange.apply_remote_many(run, province) == 2
    assert await database.fetch_all("SELECT resource_code FROM element_source", {}) == []
    assert [e.version for e in await catalog.history(a)] == [1, 2, 3]
    assert [(c.sequence, c.resource_code) for c in await catalog.changes(0)] == [
        (1, a),
        (2, b),
        (3, b),
        (4, f"{XIAMEN}-3-000003"),
        (5, a),
        (6, a),
    ]
    assert await exchange.apply_remote(
        change(entry_of(XIAMEN, 2, items=claim, version=3), 7), province
    )
    gone = change(entry_of(XIAMEN, 2, items=claim, version=4, status=ResourceStatus.WITHDRAWN), 8)
    assert await exchange.apply_remote(gone, province)  # a withdrawn source claims nothing
    assert await database.fetch_all("SELECT resource_code FROM element_source", {}) == []


async def test_a_regions_own_changes_are_found_among_the_provinces(database: Database) -> None:
    """What the city's up loop and WatchCatalog's origin_region read: only that region's
    changes, and how far the feed was read, so that a page of other regions' changes is
    passed over once."""
    catalog = Catalog(database, FUZHOU, clock=lambda: FIXED_TIME)
    exchange = CatalogExchange(database, catalog)
    province = Identity(PROVINCE, TD, Role.NODE)
    await exchange.apply_remote_many([change(entry_of(XIAMEN, n), n) for n in (1, 2, 3)], province)
    mine = agency(agency_code(1, FUZHOU), FUZHOU)
    await catalog.register(mine, entry_of(FUZHOU, 1))  # sequence 4
    await exchange.apply_remote(change(entry_of(PROVINCE, 1), 4), province)  # sequence 5
    found, scanned = await catalog.changes_of(FUZHOU, 0, limit=2)
    assert (found, scanned) == ([], 2)
    found, scanned = await catalog.changes_of(FUZHOU, 2, limit=2)
    assert [(c.sequence, c.resource_code) for c in found] == [(4, f"{FUZHOU}-3-000001")]
    assert found[0].entry.region == FUZHOU and scanned == 4
    assert await catalog.changes_of(FUZHOU, 4) == ([], 5)
    assert await catalog.changes_of(FUZHOU, 5) == ([], 5)  # nothing after: where it was
    everyone, scanned = await catalog.changes_of(None, 0)
    assert [c.origin_region for c in everyone] == [XIAMEN] * 3 + [FUZHOU, PROVINCE]
    assert scanned == 5


def test_a_snapshot_part_that_is_not_entries_is_refused_naming_what() -> None:
    """What a city does with a part a faulty or hostile province sends: a refusal that names
    the problem and quotes a short prefix of what came, never the whole of it."""
    good = change(entry_of(PROVINCE, 1), 1).entry
    body = entry_to_json(good)
    part = federation_pb2.CatalogSnapshotPart(as_of_sequence=3, entries_json=[body])
    assert list(snapshot_entries(part)) == [(good, body)]
    huge = "{" + "x" * 1_000_000
    for bad, needle in (
        (huge, "is not a catalog entry"),
        (body.replace('"version":1', '"version":"one"'), "version"),
        ("[]", "is not a catalog entry"),
    ):
        with pytest.raises(InvalidArgument, match=needle) as refused:
            list(snapshot_entries(federation_pb2.CatalogSnapshotPart(entries_json=[body, bad])))
        assert len(refused.value.message) < 400
    wire = entry_to_proto(good)
    wire.ClearField("created_at")  # without its times: not a replica's entry
    with pytest.raises(InvalidArgument, match="created_at"):
        list(snapshot_entries(federation_pb2.CatalogSnapshotPart(large_entry=wire)))


async def test_a_parsing_process_makes_the_replicas_and_refusals_the_city_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parsing process of its own (spawned, as the city spawns it) makes the same replicas
    of a part as the city makes itself, refuses the same entry (after the replicas before it),
    and raises the same refusal, quoting a short prefix, for a part that is not entries."""
    monkeypatch.setattr(PartParser, "unavailable", False)
    sender = make_identity(PROVINCE, "fujian.gov.cn", Role.NODE)
    good = [change(entry_of(PROVINCE, n), 1).entry for n in (1, 2)]
    foreign = change(entry_of("360100", 1), 1).entry
    parts = [
        federation_pb2.CatalogSnapshotPart(entries_json=[entry_to_json(e) for e in good]),
        federation_pb2.CatalogSnapshotPart(
            entries_json=[entry_to_json(e) for e in (good[0], foreign, good[1])]
        ),
    ]
    parser = PartParser(FUZHOU, sender, after=0, wait_s=60.0)
    try:
        for part in parts:
            parsing = await parser.submit(part)
            assert parsing is not None, "past `after` entries, with the process ready"
            made, refused = await asyncio.wait_for(parsing, 30.0)
            here, refused_here = snapshot_replicas(snapshot_entries(part), FUZHOU, sender)
            assert made == here and made
            assert repr(refused) == repr(refused_here)
        assert isinstance(refused, PermissionDenied) and "360100" in refused.message
        bad = federation_pb2.CatalogSnapshotPart(entries_json=["{" + "x" * 1_000_000])
        parsing = await parser.submit(bad)
        assert parsing is not None
        with pytest.raises(InvalidArgument, match="is not a catalog entry") as err:
            await asyncio.wait_for(parsing, 30.0)
        assert len(err.value.message) < 400
    finally:
        parser.close()
    assert not PartParser.unavailable


async def test_without_a_parsing_process_the_city_parses_the_parts_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where no process can be started (a container without POSIX semaphores, for instance),
    the parser says so once in the log and every part is parsed by the city itself."""

    def cannot(*args: Any, **kwargs: Any) -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(PartParser, "unavailable", False)
    monkeypatch.setattr(snapshot_parts, "ProcessPoolExecutor", cannot)
    sender = make_identity(PROVINCE, "fujian.gov.cn", Role.NODE)
    part = federation_pb2.CatalogSnapshotPart(
        entries_json=[entry_to_json(change(entry_of(PROVINCE, 1), 1).entry)]
    )
    with capture_logs() as logs:
        for _ in range(3):
            parser = PartParser(FUZHOU, sender, after=0, wait_s=60.0)
            assert await parser.submit(part) is None
            parser.close()
    warned = [e for e in logs if e["event"] == "catalog_snapshot_parse_process_unavailable"]
    assert len(warned) == 1 and "Function not implemented" in warned[0]["error"]
    assert PartParser.unavailable


async def test_a_snapshot_stores_what_is_newer_and_moves_the_cursor_only_when_whole(
    database: Database,
) -> None:
    catalog = Catalog(database, FUZHOU)
    exchange = CatalogExchange(database, catalog)
    province = Identity(PROVINCE, TD, Role.NODE)

    def held(entry: ResourceEntry) -> tuple[ResourceEntry, str]:
        stored = change(entry, 1).entry
        return stored, entry_to_json(stored)

    async def apply(entries: list[tuple[ResourceEntry, str]]) -> int:
        replicas, refused = exchange.snapshot_replicas(iter(entries), province)
        assert refused is None
        return await exchange.apply_snapshot(replicas, province)

    claim = (item("tyshxydm", key=True, standard_element="DE01", authoritative_source=True),)
    assert await apply([held(entry_of(XIAMEN, 1, version=2))]) == 1
    snapshot = [
        held(entry_of(XIAMEN, 1, version=2, summary="旧")),  # not newer: skipped
        held(entry_of(XIAMEN, 2, version=3, status=ResourceStatus.WITHDRAWN)),
        held(entry_of(FUZHOU, 1)),  # this city's own: skipped
        held(entry_of(PROVINCE, 1, items=claim)),
    ]
    assert await apply(snapshot) == 2
    assert await exchange.applied_sequence(PROVINCE) == 0  # not whole yet
    assert [e.version for e in await catalog.history(f"{XIAMEN}-3-000002")] == [3]
    assert (await catalog.get(f"{XIAMEN}-3-000001")).summary == "企业登记信息"
    kinds = [(c.resource_code, c.kind) for c in await catalog.changes(0)]
    assert kinds == [
        (f"{XIAMEN}-3-000001", ChangeKind.UPDATED),
        (f"{XIAMEN}-3-000002", ChangeKind.WITHDRAWN),
        (f"{PROVINCE}-3-000001", ChangeKind.REGISTERED),
    ]
    sources = await database.fetch_all("SELECT resource_code FROM element_source", {})
    assert [tuple(r) for r in sources] == [(f"{PROVINCE}-3-000001",)]
    foreign = held(entry_of("360100", 1))  # another province's region
    after = held(entry_of(XIAMEN, 5))
    replicas, refused = exchange.snapshot_replicas(
        iter([held(entry_of(XIAMEN, 4)), foreign, after]), province
    )
    assert isinstance(refused, PermissionDenied) and "not in province" in refused.message
    assert [r.code for r in replicas] == [f"{XIAMEN}-3-000004"]  # those before it only
    assert await exchange.apply_snapshot(replicas, province) == 1
    assert (await catalog.digest())[1] == 4
    await exchange.finish_snapshot(province, 42)
    assert await exchange.applied_sequence(PROVINCE) == 42
    await exchange.finish_snapshot(province, 7)  # never backwards
    assert await exchange.applied_sequence(PROVINCE) == 42


# --- over the wire ------------------------------------------------------------------------


async def test_changes_propagate_to_every_node(tmp_path: Path, db_urls: NewDatabaseUrl) -> None:
    async with federation(tmp_path, db_urls) as fed:
        await fed.converged(0)
        code = f"{FUZHOU}-3-000001"
        sent = time.monotonic()
        # With open treatments and quasi-identifiers (issue 14): they travel with the entry,
        # and every node's digest covers them (converged compares the digests).
        registered = await fed.fuzhou.register(entry_of(FUZHOU, 1, **OPEN_ENTRY))
        latency = None
        for _ in range(100):  # until 厦门 has it: 0.02 s steps, at most 2 s
            with contextlib.suppress(grpc.aio.AioRpcError):
                got = await fed.xiamen.catalog(
                    "GetResource", catalog_pb2.GetResourceRequest(resource_code=code)
                )
                latency = time.monotonic() - sent
                break
            await asyncio.sleep(0.02)
        assert latency is not None, "福州's registration did not reach 厦门 within 2 s"
        print(f"\n福州 -> 厦门 propagation: {latency * 1000:.0f} ms")
        assert got.entry == registered
        assert got.entry.items[2].quasi_identifier and got.entry.items[2].open.generalize
        await fed.converged(1)

        # Updates and withdrawals apply on 福州's authority's approval (第四十一条), then travel.
        fz = fed.fuzhou
        update = entry_to_proto(entry_of(FUZHOU, 1, **OPEN_ENTRY, summary="更新后的摘要"))
        await update_approved(fz.running, fz.setup, fz.agency(), update, expected_version=1)
        await withdraw_approved(fz.running, fz.setup, fz.agency(), code, "停止提供")
        await fed.province.register(entry_of(PROVINCE, 1))
        await fed.converged(2)
        for member in (fed.province, fed.xiamen):
            history = await member.catalog(
                "GetResourceHistory", catalog_pb2.GetResourceHistoryRequest(resource_code=code)
            )
            assert [v.version for v in history.versions] == [1, 2, 3]
            assert history.versions[1].summary == "更新后的摘要"
            assert history.versions[2].status == common_pb2.RESOURCE_STATUS_WITHDRAWN
        for member in (fed.fuzhou, fed.xiamen):
            got = await member.catalog(
                "GetResource", catalog_pb2.GetResourceRequest(resource_code=f"{PROVINCE}-3-000001")
            )
            assert got.entry.region == PROVINCE
        listed = await fed.xiamen.catalog(
            "ListResources", catalog_pb2.ListResourcesRequest(region=PROVINCE)
        )
        assert [e.resource_code for e in listed.entries] == [f"{PROVINCE}-3-000001"]
        await assert_once_each(fed)


@pytest.fixture(params=["the city", "a process"])
def parsed_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where a late city parses the province's snapshot: in its own process, or every part in
    a parsing process of its own (node.clients._snapshot_parts; a large snapshot's parts go
    there once it is started: here from the first part, waiting for it to be ready)."""
    if request.param == "a process":
        monkeypatch.setattr(catalog_sync, "PROCESS_AFTER", 0)
        monkeypatch.setattr(catalog_sync, "PROCESS_WAIT_S", 60.0)
        monkeypatch.setattr(PartParser, "unavailable", False)
    return str(request.param)


def assert_parsed_in(where: str, logs: list[MutableMapping[str, Any]]) -> None:
    events = [e["event"] for e in logs]
    assert ("catalog_snapshot_parse_process_started" in events) is (where == "a process")
    assert "catalog_snapshot_parse_process_unavailable" not in events


async def test_a_city_that_joins_late_takes_a_snapshot_then_follows_the_feed(
    tmp_path: Path, db_urls: NewDatabaseUrl, parsed_in: str
) -> None:
    """A city that has applied nothing of the province's feed takes the catalog as it stands
    (GetCatalogSnapshot): the same digest, each entry at its current version only, an entry
    over the snapshot's 1 MiB part in its structured form; then the feed after the snapshot.
    The same whether the city parses the parts itself or in a parsing process."""
    values = tuple(f"{i:05d}" + "状态" * 40 for i in range(10_000))  # about 2.5 MB of JSON
    large = entry_of(
        PROVINCE,
        2,
        items=(
            item("tyshxydm", key=True, required=True),
            item(
                "zt",
                data_type=DataType.ENUM,
                validation=ValidationRule(kind=ValidationKind.ENUM, enum_values=values),
            ),
        ),
    )
    async with federation(tmp_path, db_urls) as fed:
        await fed.converged(0)
        await fed.xiamen.stop()
        await fed.province.register(entry_of(PROVINCE, 1))
        await fed.province.register(large)
        fz = fed.fuzhou
        await fz.register(entry_of(FUZHOU, 1))
        update = entry_to_proto(entry_of(FUZHOU, 1, summary="更新后的摘要"))
        await update_approved(fz.running, fz.setup, fz.agency(), update, expected_version=1)
        for _ in range(100):  # until the province has 福州's update: 0.05 s steps, at most 5 s
            if await last_sequence(fed.province) == 4:
                break
            await asyncio.sleep(0.05)
        assert await last_sequence(fed.province) == 4
        with capture_logs() as logs:
            await fed.xiamen.start()
            await fed.converged(3, RESTART_WAIT_S)
        assert_parsed_in(parsed_in, logs)
        xm = fed.xiamen.running
        assert await applied(fed.xiamen) == 4
        history = await fed.xiamen.catalog(
            "GetResourceHistory",
            catalog_pb2.GetResourceHistoryRequest(resource_code=f"{FUZHOU}-3-000001"),
        )
        assert [v.version for v in history.versions] == [2]  # the version current at its join
        feed = await xm.db.fetch_all("SELECT resource_code, kind FROM catalog_change", {})
        assert sorted(tuple(row) for row in feed) == [
            (f"{PROVINCE}-3-000001", "registered"),
            (f"{PROVINCE}-3-000002", "registered"),
            (f"{FUZHOU}-3-000001", "updated"),
        ]
        request = catalog_pb2.GetResourceRequest(resource_code=large.resource_code)
        got = await fed.xiamen.catalog("GetResource", request)
        assert got.entry == (await fed.province.catalog("GetResource", request)).entry
        assert len(got.entry.items[1].validation.enum_values) == 10_000

        await fed.province.register(entry_of(PROVINCE, 3))  # after the snapshot: by the feed
        await fed.converged(4)
        assert await applied(fed.xiamen) == 5


async def test_a_snapshot_with_an_entry_the_city_refuses_stores_what_came_before_and_retries(
    tmp_path: Path, db_urls: NewDatabaseUrl, parsed_in: str
) -> None:
    """A province whose catalog holds an entry its city must refuse (here another province's
    region, written into its database by hand): the late city stores the entries before it,
    leaves its cursor at 0, logs the refusal, and takes the snapshot again until it passes;
    also when a parsing process made the refusal."""
    from node.catalog._registry import _entry_columns
    from node.models import CatalogEntryRow

    foreign = change(entry_of("360100", 1), 1).entry  # sorts after every 35xxxx code
    table = CatalogEntryRow.__table__  # type: ignore[attr-defined]
    async with federation(tmp_path, db_urls) as fed:
        await fed.converged(0)
        await fed.xiamen.stop()
        await fed.province.register(entry_of(PROVINCE, 1))
        await fed.province.running.db.write_sync(
            "test.foreign_entry",
            lambda c: c.execute(
                table.insert(), [{**_entry_columns(foreign), "body": entry_to_json(foreign)}]
            ),
        )
        with capture_logs() as logs:
            await fed.xiamen.start()
            for _ in range(100):  # until it stored what came first: 0.05 s steps, at most 5 s
                if (await fed.xiamen.digest())[1] == 1:
                    break
                await asyncio.sleep(0.05)
            assert (await fed.xiamen.digest())[1] == 1
            assert await applied(fed.xiamen) == 0  # not whole: taken again from the start
            for _ in range(100):  # the refusal is logged once the stored batch is done
                if any(e["event"] == "catalog_sync_refused_change" for e in logs):
                    break
                await asyncio.sleep(0.05)
        refusals = [e for e in logs if e["event"] == "catalog_sync_refused_change"]
        assert refusals and "not in province 350000" in refusals[0]["error"]
        assert_parsed_in(parsed_in, logs)
        await fed.province.running.db.write_sync(
            "test.foreign_entry_gone",
            lambda c: c.execute(table.delete().where(table.c.resource_code == "360100-3-000001")),
        )
        await fed.converged(1, RESTART_WAIT_S)  # the city held that entry already
        for _ in range(int(RESTART_WAIT_S / 0.05)):  # until the retried snapshot is whole
            if await applied(fed.xiamen) == 1:
                break
            await asyncio.sleep(0.05)
        assert await applied(fed.xiamen) == 1


async def test_a_late_city_replays_the_feed_when_its_province_serves_no_snapshot(
    tmp_path: Path, db_urls: NewDatabaseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A province older than GetCatalogSnapshot answers UNIMPLEMENTED, as gRPC does for a
    method it does not know: the late city replays the province's feed from its first change
    instead, so it holds every version, and converges."""
    from node.servicers.federation_sync import FederationSyncServicer

    async def older(self: Any, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield  # pragma: no cover - a server stream that ends before its first message

    monkeypatch.setattr(FederationSyncServicer, "GetCatalogSnapshot", older)
    async with federation(tmp_path, db_urls) as fed:
        await fed.converged(0)
        await fed.xiamen.stop()
        fz = fed.fuzhou
        await fz.register(entry_of(FUZHOU, 1))
        update = entry_to_proto(entry_of(FUZHOU, 1, summary="更新后的摘要"))
        await update_approved(fz.running, fz.setup, fz.agency(), update, expected_version=1)
        await fed.province.register(entry_of(PROVINCE, 1))
        with capture_logs() as logs:
            await fed.xiamen.start()
            await fed.converged(2, RESTART_WAIT_S)
        assert any(e["event"] == "catalog_snapshot_not_served" for e in logs)
        history = await fed.xiamen.catalog(
            "GetResourceHistory",
            catalog_pb2.GetResourceHistoryRequest(resource_code=f"{FUZHOU}-3-000001"),
        )
        assert [v.version for v in history.versions] == [1, 2]  # every version: the feed's
        for _ in range(int(RESTART_WAIT_S / 0.05)):  # its cursor at the province's last change
            if await applied(fed.xiamen) == await last_sequence(fed.province):
                break
            await asyncio.sleep(0.05)
        assert await applied(fed.xiamen) == await last_sequence(fed.province) == 3


async def test_convergence_after_restarting_each_node_in_turn(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        n = 0
        for member in fed.members:
            n += 1
            await member.register(entry_of(member.region, n))
            await fed.converged(n)
            await member.stop()
            for other in fed.members:  # changes elsewhere while it is down
                if other is not member:
                    n += 1
                    await other.register(entry_of(other.region, n))
            await asyncio.sleep(0.3)
            await member.start()
            await fed.converged(n, RESTART_WAIT_S)
        await assert_once_each(fed)

        # Mid-stream: stop a node while a burst is flowing through it, restart, converge.
        for victim in (fed.xiamen, fed.province):
            burst = [entry_of(FUZHOU, n + i) for i in range(1, 51)]
            n += len(burst)

            async def stop_midway(victim: Member = victim, base: int = n - 50) -> None:
                for _ in range(200):  # until about a third of the burst arrived, at most 4 s
                    if (await victim.digest())[1] >= base + 15:
                        break
                    await asyncio.sleep(0.02)
                await victim.stop()

            stopper = asyncio.create_task(stop_midway())
            for entry in burst:
                await fed.fuzhou.register(entry)
            await stopper
            await victim.start()
            await fed.converged(n, RESTART_WAIT_S)
            await assert_once_each(fed)


async def test_publish_catalog_and_snapshot_refusals(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        forged = change(entry_of(XIAMEN, 9), 1)
        fuzhou_node = node_tls_files(fed.fuzhou.setup.config)

        async def publish(files: TlsFiles, *changes: Any) -> grpc.aio.AioRpcError:
            async with channel(fed.province.running, files) as ch:
                stub = federation_pb2_grpc.FederationServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.PublishCatalog(iter([change_to_proto(c) for c in changes]))
            return err.value

        err = await publish(fed.fuzhou.agency(), change(entry_of(FUZHOU, 9), 1))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "between govnode nodes only" in (err.details() or "")
        err = await publish(fuzhou_node, forged)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"{XIAMEN}-3-000009" in (err.details() or "")
        assert f"region {XIAMEN}" in (err.details() or "")

        async with channel(fed.province.running, fuzhou_node) as ch:
            beat = await federation_pb2_grpc.FederationServiceStub(ch).Heartbeat(
                federation_pb2.HeartbeatRequest()
            )
        assert beat.node.region == PROVINCE and beat.applied_catalog_sequence == 0

        async def snapshot(member: Member, files: TlsFiles) -> grpc.aio.AioRpcError:
            async with channel(member.running, files) as ch:
                stub = federation_pb2_grpc.FederationServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in stub.GetCatalogSnapshot(
                        federation_pb2.GetCatalogSnapshotRequest()
                    ):
                        pass
            return err.value

        err = await snapshot(fed.province, fed.fuzhou.agency())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "between govnode nodes only" in (err.details() or "")
        err = await snapshot(fed.xiamen, node_tls_files(fed.province.setup.config))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "province node only" in (err.details() or "")
        await fed.converged(0)
        for member in fed.members:
            count = await member.running.db.fetch_one("SELECT COUNT(*) FROM catalog_entry", {})
            assert count is not None and count[0] == 0  # the refused changes left nothing


async def test_a_publish_stream_cancelled_while_waiting_leaves_no_read_behind() -> None:
    """A city that goes away (its node stops) cancels PublishCatalog while the province waits
    for its next change: the read in flight ends with the call, rather than finishing later
    with an exception nobody retrieves ("Task exception was never retrieved" on stderr)."""
    release, cancelled = asyncio.Event(), asyncio.Event()

    async def changes() -> Any:
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield  # pragma: no cover: the stream ends before its first change

    async def handler() -> None:
        async for _ in until_stopping(changes(), asyncio.Event()):
            pass  # pragma: no cover

    call = asyncio.create_task(handler())
    await asyncio.sleep(0.01)  # the handler waits for the first change
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await asyncio.wait_for(cancelled.wait(), timeout=1)
