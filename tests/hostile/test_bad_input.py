"""Bad values a caller controls get INVALID_ARGUMENT naming the field, never INTERNAL (issue 11,
item 5): out-of-range google.protobuf.Timestamp values, page and resume tokens that are not
this node's (non-ASCII, bad base64, huge, valid-looking but of the wrong shape), negative page
sizes; and what the wire fuzzer found: text holding U+0000, a join port of non-ASCII digits.
Page sizes above a list's maximum are reduced to it (common.proto, Pagination). A real
province over real mutual TLS, on both backends; tests/hostile/test_fuzz_wire.py throws generated
requests at every RPC.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    federation_pb2,
    federation_pb2_grpc,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files
from node.catalog import ShareMethod, ShareType
from node.servicers.convert import entry_to_proto
from tests.support.access import ACME, ITEMS, apply_request, register, submit
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    entry_of,
    make_city,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Province = tuple[ProvinceSetup, RunningNode]
ALL = (ShareMethod.VERIFY, ShareMethod.QUERY, ShareMethod.EXCHANGE)
COND = entry_of(PROVINCE, 1, items=ITEMS, share_methods=ALL)
OPEN = entry_of(PROVINCE, 2, items=ITEMS, share_methods=ALL, share_type=ShareType.UNCONDITIONAL)
KEY = {"tyshxydm": ACME["tyshxydm"]}
NUL_ACME = dict(ACME, qymc="福州\x00科技")

#: Timestamps outside what google.protobuf.Timestamp allows (0001-01-01 to 9999-12-31, nanos
#: 0 to 999,999,999), with the word the refusal must use.
BAD_TIMES = (
    (Timestamp(seconds=253402300800), "seconds out of range"),  # 10000-01-01
    (Timestamp(seconds=-62135596801), "seconds out of range"),  # before 0001-01-01
    (Timestamp(seconds=2**62), "seconds out of range"),
    (Timestamp(seconds=1_800_000_000, nanos=-1), "nanos out of range"),
    (Timestamp(seconds=1_800_000_000, nanos=1_000_000_000), "nanos out of range"),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Tokens no list ever issued: non-ASCII, not base64, huge, truncated, and base64 of
#: something that looks like a token of some list but is not (wrong prefix, wrong shape,
#: negative or enormous offsets, nested JSON). Every one is INVALID_ARGUMENT naming the field.
BAD_TOKENS = (
    "第二页",
    "页",
    "\x00",
    "%%%%",
    "²",  # a digit to str.isdigit(), not to int()
    "-1",
    "9" * 5000,  # more digits than int() parses
    "A" * 200_000,
    _b64(b"\xff\xfe\x00garbage"),
    _b64(b"o:-5"),
    _b64(b"o:99999999999999999999999999"),
    _b64(b"q1:" + b"[" * 100_000),
    _b64(b'q1:["a", 1, "x", 4]'),
    _b64(b'q1:{"a": 1}'),
    _b64(b"a1:99999999999999999999999999:ffff"),
    _b64(b"c1:\xe9\xa1\xb5"),
    _b64(json.dumps(["x"] * 3).encode()),
    "v1.AAAA.AAAA",
    "v1." + "A" * 1000 + "é.x",
)


async def _refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        result = await call if not hasattr(call, "__aiter__") else [m async for m in call]
        pytest.fail(f"expected a refusal, got {result!r}"[:300])
    return err.value


def _invalid(err: grpc.aio.AioRpcError, field: str, words: str = "") -> None:
    details = err.details() or ""
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (err.code(), details[:300])
    assert details.startswith(field) or f" {field}" in details, details[:300]
    assert words in details, details[:300]
    assert len(details) < 600, "the refusal quotes a short prefix at most"


@pytest.fixture
async def loaded(province: Province) -> AsyncIterator[Province]:
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, COND)
    await register(node, provider, OPEN)
    await submit(node, provider, COND.resource_code, [ACME])
    await submit(node, provider, OPEN.resource_code, [ACME])
    yield setup, node


def _city_node(setup: ProvinceSetup, tmp_path: Path) -> TlsFiles:
    """The node certificate of 福州 (admitted by file; never started): a node caller."""
    city = make_city(tmp_path / "fuzhou", "sqlite+aiosqlite:///unused.db", setup)
    return node_tls_files(city.config)


def _at(moment: Timestamp) -> Timestamp:
    out = Timestamp()
    out.CopyFrom(moment)
    return out


# --- Timestamps ------------------------------------------------------------------------------


async def test_out_of_range_timestamps_are_refused_naming_the_field(
    loaded: Province, tmp_path: Path
) -> None:
    setup, node = loaded
    provider, consumer = setup.agency(PUBLIC_SECURITY), setup.agency(CIVIL_AFFAIRS)
    city_node = _city_node(setup, tmp_path)
    soon = Timestamp()
    soon.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=3))

    def submit_batch(bad: Timestamp) -> Any:
        async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            yield sharing_pb2.SubmitBatch(
                resource_code=COND.resource_code,
                batch_id="temp-1",
                records=[common_pb2.Record(values=ACME)],
                temporary=sharing_pb2.TemporaryCollection(
                    reason="应急", expires_at=_at(bad), extra_items=["lxdh"]
                ),
            )

        return batches()

    def change(field: str, bad: Timestamp) -> catalog_pb2.CatalogChange:
        entry = entry_to_proto(entry_of("350100", 1))
        entry.region, entry.version = "350100", 1
        entry.status = common_pb2.RESOURCE_STATUS_ACTIVE
        entry.created_at.CopyFrom(soon)
        entry.updated_at.CopyFrom(soon)
        msg = catalog_pb2.CatalogChange(
            sequence=1,
            kind=catalog_pb2.CATALOG_CHANGE_KIND_REGISTERED,
            entry=entry,
            origin_region="350100",
        )
        msg.at.CopyFrom(soon)
        target = msg if field == "at" else msg.entry
        getattr(target, field.removeprefix("entry.")).CopyFrom(bad)
        return msg

    def publish(field: str, bad: Timestamp) -> Any:
        async def changes() -> AsyncIterator[catalog_pb2.CatalogChange]:
            yield change(field, bad)

        return changes()

    cases: list[tuple[str, TlsFiles, Callable[[grpc.aio.Channel, Timestamp], Any]]] = [
        (
            "temporary.expires_at",
            provider,
            lambda ch, bad: sharing_pb2_grpc.SharingServiceStub(ch).Submit(submit_batch(bad)),
        ),
        (
            "not_after",
            consumer,
            lambda ch, bad: access_pb2_grpc.AccessServiceStub(ch).Apply(
                apply_request(COND.resource_code, not_after=_at(bad))
            ),
        ),
        (
            "not_before",
            consumer,
            lambda ch, bad: access_pb2_grpc.AccessServiceStub(ch).Apply(
                apply_request(COND.resource_code, not_before=_at(bad))
            ),
        ),
        (
            "not_after",
            setup.authority(),
            lambda ch, bad: access_pb2_grpc.AccessServiceStub(ch).ReviewApplication(
                access_pb2.ReviewApplicationRequest(
                    application_id="350000-A-0000000000000000",
                    decision=common_pb2.REVIEW_DECISION_APPROVE,
                    not_after=_at(bad),
                )
            ),
        ),
        (
            "not_before",
            setup.authority(),
            lambda ch, bad: access_pb2_grpc.AccessServiceStub(ch).ReviewApplication(
                access_pb2.ReviewApplicationRequest(
                    application_id="350000-A-0000000000000000",
                    decision=common_pb2.REVIEW_DECISION_APPROVE,
                    not_before=_at(bad),
                )
            ),
        ),
        (
            "start_time",
            consumer,
            lambda ch, bad: audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(
                audit_pb2.QueryAuditRequest(start_time=_at(bad))
            ),
        ),
        (
            "end_time",
            setup.authority(),
            lambda ch, bad: audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(
                audit_pb2.QueryAuditRequest(end_time=_at(bad))
            ),
        ),
        (
            "node.server_time",
            city_node,
            lambda ch, bad: federation_pb2_grpc.FederationServiceStub(ch).Heartbeat(
                federation_pb2.HeartbeatRequest(
                    node=federation_pb2.NodeInfo(region="350100", server_time=_at(bad))
                )
            ),
        ),
    ]

    def publisher(field: str) -> Callable[[grpc.aio.Channel, Timestamp], Any]:
        return lambda ch, bad: federation_pb2_grpc.FederationServiceStub(ch).PublishCatalog(
            publish(field, bad)
        )

    for field in ("at", "entry.created_at", "entry.updated_at"):
        cases.append((field, city_node, publisher(field)))
    for field, caller, call in cases:
        for bad, words in BAD_TIMES:
            async with channel(node, caller) as ch:
                err = await _refusal(call(ch, bad))
            _invalid(err, field, words)
            assert "0001-01-01" in (err.details() or "") or "999,999,999" in (err.details() or "")
    # The node still works, and the extremes the type allows are not refused as out of range.
    async with channel(node, consumer) as ch:
        edge = Timestamp(seconds=253402300799, nanos=999_999_999)
        reply = await audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(
            audit_pb2.QueryAuditRequest(start_time=Timestamp(seconds=-62135596800), end_time=edge),
            timeout=5,
        )
        assert reply.records


# --- tokens ----------------------------------------------------------------------------------


async def test_tokens_that_this_node_never_issued_are_refused_naming_the_field(
    loaded: Province, tmp_path: Path
) -> None:
    setup, node = loaded
    provider, consumer = setup.agency(PUBLIC_SECURITY), setup.agency(CIVIL_AFFAIRS)
    city_node = _city_node(setup, tmp_path)
    calls: list[tuple[str, TlsFiles, Callable[[grpc.aio.Channel, str], Any]]] = [
        (
            "page_token",
            consumer,
            lambda ch, t: sharing_pb2_grpc.SharingServiceStub(ch).Query(
                sharing_pb2.QueryRequest(resource_code=OPEN.resource_code, key=KEY, page_token=t)
            ),
        ),
        (
            "page_token",
            consumer,
            lambda ch, t: catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
                catalog_pb2.ListResourcesRequest(page_token=t)
            ),
        ),
        (
            "page_token",
            consumer,
            lambda ch, t: audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(
                audit_pb2.QueryAuditRequest(page_token=t)
            ),
        ),
        (
            "page_token",
            consumer,
            lambda ch, t: access_pb2_grpc.AccessServiceStub(ch).ListApplications(
                access_pb2.ListApplicationsRequest(page_token=t)
            ),
        ),
        (
            "page_token",
            consumer,
            lambda ch, t: access_pb2_grpc.AccessServiceStub(ch).ListGrants(
                access_pb2.ListGrantsRequest(page_token=t)
            ),
        ),
        (
            "page_token",
            provider,
            lambda ch, t: access_pb2_grpc.AccessServiceStub(ch).ListChangeRequests(
                access_pb2.ListChangeRequestsRequest(page_token=t)
            ),
        ),
        (
            "page_token",
            consumer,
            lambda ch, t: access_pb2_grpc.AccessServiceStub(ch).ListNotifications(
                access_pb2.ListNotificationsRequest(page_token=t)
            ),
        ),
        (
            "page_token",
            provider,
            lambda ch, t: sharing_pb2_grpc.SharingServiceStub(ch).GetAggregationStatus(
                sharing_pb2.GetAggregationStatusRequest(page_token=t)
            ),
        ),
        (
            "page_token",
            city_node,
            lambda ch, t: federation_pb2_grpc.FederationServiceStub(ch).ListPeers(
                federation_pb2.ListPeersRequest(page_token=t)
            ),
        ),
        (
            "resume_token",
            consumer,
            lambda ch, t: sharing_pb2_grpc.SharingServiceStub(ch).Exchange(
                sharing_pb2.ExchangeRequest(resource_code=OPEN.resource_code, resume_token=t)
            ),
        ),
    ]
    for field, caller, call in calls:
        async with channel(node, caller) as ch:
            for token in BAD_TOKENS:
                err = await _refusal(call(ch, token))
                _invalid(err, field)


# --- page sizes ------------------------------------------------------------------------------


async def test_page_sizes_are_never_negative_and_too_large_ones_are_capped(
    loaded: Province, tmp_path: Path
) -> None:
    setup, node = loaded
    provider, consumer = setup.agency(PUBLIC_SECURITY), setup.agency(CIVIL_AFFAIRS)
    city_node = _city_node(setup, tmp_path)
    lists: list[tuple[TlsFiles, Callable[[grpc.aio.Channel, int], Any]]] = [
        (
            provider,
            lambda ch, n: sharing_pb2_grpc.SharingServiceStub(ch).GetAggregationStatus(
                sharing_pb2.GetAggregationStatusRequest(page_size=n)
            ),
        ),
        (
            consumer,
            lambda ch, n: sharing_pb2_grpc.SharingServiceStub(ch).Query(
                sharing_pb2.QueryRequest(resource_code=OPEN.resource_code, key=KEY, page_size=n)
            ),
        ),
        (
            consumer,
            lambda ch, n: catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
                catalog_pb2.ListResourcesRequest(page_size=n)
            ),
        ),
        (
            consumer,
            lambda ch, n: audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(
                audit_pb2.QueryAuditRequest(page_size=n)
            ),
        ),
        (
            consumer,
            lambda ch, n: access_pb2_grpc.AccessServiceStub(ch).ListApplications(
                access_pb2.ListApplicationsRequest(page_size=n)
            ),
        ),
        (
            consumer,
            lambda ch, n: access_pb2_grpc.AccessServiceStub(ch).ListGrants(
                access_pb2.ListGrantsRequest(page_size=n)
            ),
        ),
        (
            provider,
            lambda ch, n: access_pb2_grpc.AccessServiceStub(ch).ListChangeRequests(
                access_pb2.ListChangeRequestsRequest(page_size=n)
            ),
        ),
        (
            consumer,
            lambda ch, n: access_pb2_grpc.AccessServiceStub(ch).ListNotifications(
                access_pb2.ListNotificationsRequest(page_size=n)
            ),
        ),
        (
            city_node,
            lambda ch, n: federation_pb2_grpc.FederationServiceStub(ch).ListPeers(
                federation_pb2.ListPeersRequest(page_size=n)
            ),
        ),
    ]
    for caller, call in lists:
        async with channel(node, caller) as ch:
            for size in (-1, -(2**31)):
                err = await _refusal(call(ch, size))
                _invalid(err, "page_size", "negative")
            # The contract (common.proto, Pagination): reduced to the list's maximum.
            await call(ch, 2**31 - 1)
    # GetAggregationStatus pages like the others: one status per page, then the next.
    async with channel(node, provider) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        first = await stub.GetAggregationStatus(
            sharing_pb2.GetAggregationStatusRequest(page_size=1)
        )
        assert [s.resource_code for s in first.statuses] == [COND.resource_code]
        assert first.next_page_token
        second = await stub.GetAggregationStatus(
            sharing_pb2.GetAggregationStatusRequest(page_size=1, page_token=first.next_page_token)
        )
        assert [s.resource_code for s in second.statuses] == [OPEN.resource_code]


# --- text ------------------------------------------------------------------------------------


async def test_text_holding_nul_is_refused_naming_the_field(loaded: Province) -> None:
    """U+0000 is no character of any text the platform keeps, and PostgreSQL cannot store it
    (it answered INTERNAL there, and NOT_FOUND or stored it on SQLite). Any string of any
    request holding it, however deep, is INVALID_ARGUMENT naming the field, on both backends."""
    setup, node = loaded
    provider, consumer = setup.agency(PUBLIC_SECURITY), setup.agency(CIVIL_AFFAIRS)

    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=COND.resource_code,
            batch_id="nul-1",
            records=[common_pb2.Record(values=ACME), common_pb2.Record(values=NUL_ACME)],
        )

    async with channel(node, provider) as ch:
        catalog = catalog_pb2_grpc.CatalogServiceStub(ch)
        err = await _refusal(
            catalog.GetResourceHistory(catalog_pb2.GetResourceHistoryRequest(resource_code="\x00"))
        )
        _invalid(err, "resource_code", "U+0000")
        err = await _refusal(
            catalog.WithdrawResource(
                catalog_pb2.WithdrawResourceRequest(
                    resource_code=COND.resource_code, reason="a\x00"
                )
            )
        )
        _invalid(err, "reason", "U+0000")
        err = await _refusal(sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches()))
        _invalid(err, 'records[1].values["qymc"]', "U+0000")
    async with channel(node, consumer) as ch:
        err = await _refusal(
            sharing_pb2_grpc.SharingServiceStub(ch).Verify(
                sharing_pb2.VerifyRequest(
                    resource_code=OPEN.resource_code, key=KEY, claimed={"qy\x00mc": "x"}
                )
            )
        )
        _invalid(err, "claimed", "U+0000")
    # Nothing of the refused batch was stored: the record is as first submitted.
    async with channel(node, consumer) as ch:
        reply = await sharing_pb2_grpc.SharingServiceStub(ch).Query(
            sharing_pb2.QueryRequest(resource_code=OPEN.resource_code, key=KEY), timeout=5
        )
        assert [dict(r.record.values)["qymc"] for r in reply.rows] == [ACME["qymc"]]


async def test_a_join_port_that_is_not_ascii_digits_is_refused_naming_the_field(
    province: Province,
) -> None:
    """Join's listen_address: "²" is a digit to str.isdigit() but not to int() (it answered
    INTERNAL, to anyone on the join port, before any invitation was checked), and "٣" was
    taken as port 3. Both are INVALID_ARGUMENT naming the field."""
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        for address in ("city.example:²", "city.example:٣", "city.example:７４４３"):
            err = await _refusal(
                federation_pb2_grpc.FederationServiceStub(ch).Join(
                    federation_pb2.JoinRequest(
                        invitation_token="gvi1_unknown",
                        region="350900",
                        name="宁德市",
                        listen_address=address,
                        city_ca_csr_pem="x",
                        node_csr_pem="x",
                    )
                )
            )
            _invalid(err, "listen_address", "HOST:PORT")


async def test_integers_beyond_what_the_database_holds_are_answered_like_any_other(
    province: Province, tmp_path: Path
) -> None:
    """Versions and catalog feed sequences are 32-bit columns on PostgreSQL; the API takes
    int64. A version or sequence beyond 2^31 answered INTERNAL there (the fuzzer found it) and
    NOT_FOUND on SQLite. Now both answer as for any version that does not exist, and a node
    publishing such a version is refused naming it."""
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, COND)
    huge = 2**63 - 1
    async with channel(node, provider) as ch:
        err = await _refusal(
            catalog_pb2_grpc.CatalogServiceStub(ch).GetResource(
                catalog_pb2.GetResourceRequest(resource_code=COND.resource_code, version=huge)
            )
        )
    assert err.code() is grpc.StatusCode.NOT_FOUND, err.details()
    assert f"has no version {huge}; versions are 1 to 1" in (err.details() or "")

    city_node = _city_node(setup, tmp_path)
    async with channel(node, city_node) as ch:
        stub = federation_pb2_grpc.FederationServiceStub(ch)
        # Nothing follows a sequence that large: the feed waits (until the deadline).
        watch = catalog_pb2_grpc.CatalogServiceStub(ch).WatchCatalog(
            catalog_pb2.WatchCatalogRequest(after_sequence=huge), timeout=1.0
        )
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            async for change in watch:
                pytest.fail(f"no change follows sequence {huge}, got {change}")
        assert waited.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, waited.value.details()
        listed = await stub.GetRevocationList(
            federation_pb2.GetRevocationListRequest(after_sequence=huge), timeout=5
        )
        assert not listed.revocation_list.revoked

        async def changes() -> AsyncIterator[catalog_pb2.CatalogChange]:
            entry = entry_to_proto(entry_of("350100", 1))
            entry.region, entry.version = "350100", 2**40
            entry.status = common_pb2.RESOURCE_STATUS_ACTIVE
            entry.created_at.GetCurrentTime()
            entry.updated_at.GetCurrentTime()
            change = catalog_pb2.CatalogChange(
                sequence=1,
                kind=catalog_pb2.CATALOG_CHANGE_KIND_REGISTERED,
                entry=entry,
                origin_region="350100",
            )
            change.at.GetCurrentTime()
            yield change

        err = await _refusal(stub.PublishCatalog(changes()))
        _invalid(err, "entry.version", str(2**40))
