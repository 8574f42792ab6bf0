"""Every RPC of govnode.v1, fuzzed over the wire (issue 11, item 5: INTERNAL only for bugs).

A province (its join port open) and 福州 joined to it run on loopback over real mutual TLS,
holding resources, records, applications, a grant and a held change, so that requests reach
deep code. For every method of every service in the govnode.v1 descriptors (a new RPC is
fuzzed without touching this file), hypothesis sends:

- requests built from the method's input descriptor: any field may be set; strings huge,
  non-ASCII, NUL-bearing, or one of the values the nodes know (resource codes, ids, item names,
  identities, real and foreign page tokens); integers at their type's extremes; timestamps out
  of range; repeated fields with many items; nested messages. Often it starts from a valid
  request (tests/hostile/test_fuzz_wire.py's seeds), so that a few changed fields are what the node
  sees;
- raw bytes: a request's encoding with bytes flipped, inserted or cut off, sent as is;

as the province's provider and consumer agencies, its authority, a conformance tester and
福州's node (to the province); as a 福州 agency and 福州's authority to 福州 (which routes calls
on province resources through the province); and anonymously on the join port. No answer may
be INTERNAL or UNKNOWN, and both nodes answer health checks SERVING after every method and at
the end.

Bounded: ``GOVNODE_FUZZ_EXAMPLES`` examples per method (default 12; set it higher to fuzz
longer), a deadline on every call, server streams read a few messages (open-ended ones wait a
moment for the first), and once ``GOVNODE_FUZZ_BUDGET_S`` seconds (default 60) have passed the
remaining methods get 3 examples each. Reproducible: hypothesis is derandomized and keeps no
example database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from govnode.v1 import (
    access_pb2,
    audit_pb2,
    catalog_pb2,
    common_pb2,
    federation_pb2,
    sharing_pb2,
)
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, configuration, given, settings
from hypothesis import strategies as st

from gateway.assertion import ASSERTION_KEY
from gateway.channel import channel_options
from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files
from node.audit import AuditLog
from node.catalog import ShareMethod, ShareType
from node.config import load_config
from node.servicers import service_descriptors
from node.servicers.convert import entry_to_proto
from node.servicers.open_catalog import OPEN_KEY
from tests.support.access import ACME, ITEMS, access, apply_request, approve, register, submit
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code, person_entry
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    FUZHOU,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    enable_join,
    entry_of,
    link_peers,
    make_city,
    make_province,
    start,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
T = TypeVar("T")

EXAMPLES = int(os.environ.get("GOVNODE_FUZZ_EXAMPLES", "12"))
BUDGET_S = float(os.environ.get("GOVNODE_FUZZ_BUDGET_S", "60"))
#: Examples per method once the budget is spent (every method is still fuzzed).
LATE_EXAMPLES = 3
CALL_TIMEOUT_S = 10.0
#: Server streams: at most this many messages are read, then the call is cancelled.
MAX_READS = 4
#: Streams that last as long as their caller reads: how long to wait for each message.
OPEN_ENDED = frozenset({"WatchCatalog", "Subscribe", "WatchNotifications", "StreamUsageLog"})
OPEN_WAIT_S = 0.3
#: Answers that mean a bug (README: "a bug | INTERNAL with a request id").
BUGS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
#: Client channels may send more than the node's 4 MiB limit, so that the node's own limit
#: (RESOURCE_EXHAUSTED) is what answers an oversized request.
CLIENT_MAX_BYTES = 8 * 1024 * 1024

METHODS = (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY)
STREAMING = (*METHODS, ShareMethod.EXCHANGE, ShareMethod.SUBSCRIBE)
COND = entry_of(PROVINCE, 1, items=ITEMS, share_methods=METHODS)
OPEN = entry_of(
    PROVINCE, 2, items=ITEMS, share_methods=STREAMING, share_type=ShareType.UNCONDITIONAL
)
SECRET = entry_of(
    PROVINCE,
    3,
    items=ITEMS,
    share_type=ShareType.NOT_SHARED,
    share_methods=(),
    legal_basis="《中华人民共和国保守国家秘密法》",
)
PEOPLE = person_entry(
    4,
    PUBLIC_SECURITY,
    resource_code=f"{PROVINCE}-3-000004",
    share_type=ShareType.UNCONDITIONAL,
)
ZHANG = {"sfzhm": "11010519491231002X", "xm": "张三", "sjhm": "13800138000", "csrq": "1949-12-31"}
AT_FUZHOU = entry_of(FUZHOU, 5, items=ITEMS, share_methods=STREAMING)
FUZHOU_AGENCY = agency_code(1, FUZHOU)
#: How often each caller is drawn, relative to the others: the ones that reach deep code more.
WEIGHTS = {
    "provider agency": 3,
    "consumer agency": 2,
    "province authority": 2,
    "tester": 1,
    "福州 node": 2,
    "福州 agency": 2,
    "福州 authority": 1,
    "province node": 1,
    "anonymous": 1,
}


# --- the running federation --------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    label: str
    target: str  # "province", "fuzhou" or "join" (the province's join port, no certificate)
    files: TlsFiles | None


@dataclass
class World:
    """What the nodes hold, for requests that reach deep code."""

    codes: list[str]
    ids: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    resume_tokens: list[str] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass
class Federation:
    province: ProvinceSetup
    fuzhou: ProvinceSetup
    nodes: dict[str, RunningNode]
    callers: list[Caller]


def _unthrottled(setup: ProvinceSetup) -> ProvinceSetup:
    """The province with its join port's rate limits out of the fuzzer's reach. A call the
    limiter refuses is audited only when it is the first of its window (by design: a flood
    must not grow the audit log), and a client still streaming a large message when the
    refusal comes sees gRPC's own INTERNAL: the fuzzer could then not tell that call from a
    node bug. The limiter has its own tests (tests/federation/test_join_port.py); here every
    anonymous call reaches the guard's checks and the servicer, and is audited."""
    text = setup.config_path.read_text(encoding="utf-8")
    listen = next(line for line in text.splitlines() if line.startswith("join_listen = "))
    limits = "join_per_minute_per_address = 10000\njoin_per_minute_total = 100000"
    setup.config_path.write_text(text.replace(listen, f"{listen}\n{limits}"), encoding="utf-8")
    return ProvinceSetup(setup.base, setup.config_path, load_config(setup.config_path))


async def _federation(tmp_path: Path, db_urls: NewDatabaseUrl) -> Federation:
    province = _unthrottled(enable_join(make_province(tmp_path / "province", await db_urls())))
    fuzhou = make_city(tmp_path / "fuzhou", await db_urls(), province, FUZHOU, "福州市")
    province = link_peers(province, {FUZHOU: fuzhou.config.node.listen})
    nodes = {"province": await start(province)}
    try:
        nodes["fuzhou"] = await start(fuzhou)
    except BaseException:
        await nodes["province"].stop(grace=0)
        raise
    callers = [
        Caller("provider agency", "province", province.agency(PUBLIC_SECURITY)),
        Caller("consumer agency", "province", province.agency(CIVIL_AFFAIRS)),
        Caller("province authority", "province", province.authority()),
        Caller("tester", "province", province.tester()),
        Caller("福州 node", "province", node_tls_files(fuzhou.config)),
        Caller("福州 agency", "fuzhou", fuzhou.agency(FUZHOU_AGENCY)),
        Caller("福州 authority", "fuzhou", fuzhou.authority()),
        Caller("province node", "fuzhou", node_tls_files(province.config)),
        Caller("anonymous", "join", None),
    ]
    return Federation(province, fuzhou, nodes, callers)


async def _populate(fed: Federation) -> World:
    """Resources, records, applications (one approved, one pending), a grant, a held change,
    notifications; and the tokens and ids they give."""
    province, fuzhou = fed.nodes["province"], fed.nodes["fuzhou"]
    provider = fed.province.agency(PUBLIC_SECURITY)
    consumer = fed.province.agency(CIVIL_AFFAIRS)
    for entry in (COND, OPEN, SECRET, PEOPLE):
        await register(province, provider, entry)
    await register(fuzhou, fed.fuzhou.agency(FUZHOU_AGENCY), AT_FUZHOU)
    for entry in (COND, OPEN):
        await submit(province, provider, entry.resource_code, [ACME])
    await submit(province, provider, PEOPLE.resource_code, [ZHANG])
    await submit(fuzhou, fed.fuzhou.agency(FUZHOU_AGENCY), AT_FUZHOU.resource_code, [ACME])
    world = World(codes=[e.resource_code for e in (COND, OPEN, SECRET, PEOPLE, AT_FUZHOU)])

    applied = await access(province, consumer, "Apply", apply_request(COND.resource_code))
    reviewed = await access(
        province, fed.province.authority(), "ReviewApplication", approve(applied.application.id)
    )
    pending = await access(
        province, consumer, "Apply", apply_request(COND.resource_code, purpose="第二次申请")
    )
    world.ids += [applied.application.id, reviewed.grant.id, pending.application.id]
    # A changed record is held as a change request (第四十一条).
    changed = dict(ACME, qymc="福州某某科技股份有限公司")
    async with _channel(province, provider) as ch:
        acks = [
            a
            async for a in ch.stream_stream(
                "/govnode.v1.SharingService/Submit",
                request_serializer=_serialize,
                response_deserializer=sharing_pb2.SubmitAck.FromString,
            )(
                [
                    sharing_pb2.SubmitBatch(
                        resource_code=COND.resource_code,
                        batch_id="changed",
                        records=[common_pb2.Record(values=changed)],
                    )
                ],
                timeout=CALL_TIMEOUT_S,
            )
        ]
    world.ids += [h.change_request_id for a in acks for h in a.held_records]
    world.ids += [f"{region}-{kind}-00ff" for region in ("350900", "440100") for kind in "AGC"]

    # Real tokens: the next page of each list, and an Exchange resume token.
    async with _channel(province, consumer) as ch:
        for path, request, response in (
            (
                "/govnode.v1.CatalogService/ListResources",
                catalog_pb2.ListResourcesRequest(page_size=1),
                catalog_pb2.ListResourcesResponse,
            ),
            (
                "/govnode.v1.AccessService/ListApplications",
                access_pb2.ListApplicationsRequest(page_size=1),
                access_pb2.ListApplicationsResponse,
            ),
            (
                "/govnode.v1.AuditService/QueryAudit",
                audit_pb2.QueryAuditRequest(page_size=1),
                audit_pb2.QueryAuditResponse,
            ),
        ):
            reply = await ch.unary_unary(
                path, request_serializer=_serialize, response_deserializer=response.FromString
            )(request, timeout=CALL_TIMEOUT_S)
            world.tokens.append(reply.next_page_token)
        chunks = ch.unary_stream(
            "/govnode.v1.SharingService/Exchange",
            request_serializer=_serialize,
            response_deserializer=sharing_pb2.ExchangeChunk.FromString,
        )(sharing_pb2.ExchangeRequest(resource_code=OPEN.resource_code), timeout=CALL_TIMEOUT_S)
        world.resume_tokens += [c.resume_token async for c in chunks]
    world.identities = [
        f"spiffe://350000.fujian.gov.cn/agency/{PUBLIC_SECURITY}",
        f"spiffe://350000.fujian.gov.cn/agency/{CIVIL_AFFAIRS}",
        "spiffe://350000.fujian.gov.cn/authority",
        f"spiffe://350100.fujian.gov.cn/agency/{FUZHOU_AGENCY}",
        "spiffe://350100.fujian.gov.cn/node",
    ]
    # 福州 routes calls on province resources once the catalogs have met (bounded wait).
    async with _channel(fuzhou, fed.fuzhou.agency(FUZHOU_AGENCY)) as ch:
        listing = ch.unary_unary(
            "/govnode.v1.CatalogService/ListResources",
            request_serializer=_serialize,
            response_deserializer=catalog_pb2.ListResourcesResponse.FromString,
        )
        for _ in range(100):
            reply = await listing(catalog_pb2.ListResourcesRequest(), timeout=CALL_TIMEOUT_S)
            if {e.resource_code for e in reply.entries} >= set(world.codes):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("福州's catalog never received the province's entries")
    return world


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _channel(node: RunningNode, files: TlsFiles | None, port: int | None = None) -> Any:
    host = node.address.rpartition(":")[0]
    target = f"{host}:{port or node.port}"
    options = channel_options(CLIENT_MAX_BYTES)
    if files is None:  # the join port: TLS without a client certificate
        root = node_tls_files(node.config).root.read_bytes()
        return grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates=root), options=options
        )
    key, chain, root = files.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


# --- calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    messages: int


class Wire:
    """One channel per caller; every call runs on the test's event loop (where the nodes
    serve), submitted from hypothesis' thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fed: Federation) -> None:
        self.loop = loop
        self.fed = fed
        self.channels: dict[str, grpc.aio.Channel] = {}
        #: (method, caller, status) -> how often it was the answer; printed at the end.
        self.seen: Counter[tuple[str, str, str]] = Counter()
        #: INTERNAL seen by the client over another answer the node recorded (see _fuzz).
        self.transport: Counter[tuple[str, str, str]] = Counter()
        self.numbers = itertools.count()
        for caller in fed.callers:
            if caller.target == "join":
                node = fed.nodes["province"]
                self.channels[caller.label] = _channel(node, None, node.join_port)
            else:
                self.channels[caller.label] = _channel(fed.nodes[caller.target], caller.files)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close(grace=None)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT_S * 3)

    async def invoke(
        self,
        caller: Caller,
        method: MethodDescriptor,
        payloads: Payload,
        metadata: tuple[tuple[str, str | bytes], ...],
    ) -> Outcome:
        channel = self.channels[caller.label]
        path = f"/{method.containing_service.full_name}/{method.name}"
        response_type = message_factory.GetMessageClass(method.output_type)
        kwargs: dict[str, Any] = {"timeout": CALL_TIMEOUT_S, "metadata": metadata}
        read = 0
        try:
            if not method.server_streaming:
                if method.client_streaming:
                    reply = await channel.stream_unary(path, None, None)(iter(payloads), **kwargs)
                else:
                    reply = await channel.unary_unary(path, None, None)(payloads[0], **kwargs)
                response_type.FromString(reply)  # the answer is a valid message
                return Outcome(grpc.StatusCode.OK, "", 1)
            call: Any
            if method.client_streaming:
                call = channel.stream_stream(path, None, None)(iter(payloads), **kwargs)
            else:
                call = channel.unary_stream(path, None, None)(payloads[0], **kwargs)
            wait = OPEN_WAIT_S if method.name in OPEN_ENDED else None
            try:
                while read < MAX_READS:
                    try:
                        message = await asyncio.wait_for(call.read(), wait)
                    except TimeoutError:
                        break
                    if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                        return Outcome(grpc.StatusCode.OK, "", read)
                    response_type.FromString(message)
                    read += 1
            finally:
                call.cancel()
            return Outcome(grpc.StatusCode.CANCELLED, "cancelled by the fuzzer", read)
        except grpc.aio.AioRpcError as exc:
            return Outcome(exc.code(), exc.details() or "", read)

    async def audited(self, target: str, request_id: str) -> set[str]:
        """The outcomes the node of ``target`` recorded for calls with ``request_id``."""
        node = self.fed.nodes["province" if target == "join" else target]
        return {r.outcome for r in await AuditLog(node.db).query(request_id=request_id)}

    async def healthy(self) -> dict[str, str]:
        """Each node's health as its agency sees it (SERVING expected)."""
        states = {}
        for caller in self.fed.callers:
            if caller.label not in ("provider agency", "福州 agency"):
                continue
            check = self.channels[caller.label].unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=_serialize,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            try:
                reply = await check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
                states[caller.target] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                    reply.status
                )
            except grpc.aio.AioRpcError as exc:
                states[caller.target] = f"{exc.code().name}: {exc.details()}"
        return states


# --- requests ----------------------------------------------------------------------------

NASTY = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "é",
    "第二页",
    "\u202e\ufeff",
    "😀" * 3,
    "\n\r\t",
    "-1",
    "0",
    "²",  # a digit to str.isdigit(), not to int()
    "٣",
    "9" * 40,
    "1e309",
    "NaN",
    "2025-02-30",
    "9999-12-31T23:59:59+08:00",
    "%s%n%x",
    "' OR 1=1 --",
    '{"a": [',
    "../../../etc/passwd",
    "\\",
    "^(a+)+$",
    "a" * 300,
    "é" * 5000,
    "x" * 100_000,
)
FOREIGN_TOKENS = (
    "第二页",
    "%%%%",
    "²",
    "YTE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OjA",
    "cTE6W1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tb",
    "bzotNQ",
    "v1.AAAA.AAAA",
    "A" * 20_000,
)
REGIONS = ("350000", "350100", "350200", "350900", "440100", "350102", "999999", "")
ITEM_NAMES = ("tyshxydm", "qymc", "fddbr", "sfzhm", "xm", "sjhm", "csrq", "ysr", "hyzk", "lxdh")
SMALL_INTS = (0, 1, 2, 3, 5, 100, 200, 500, 1000, 1001, 10_000, 10_001)


def _text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=40),
        st.sampled_from(NASTY),
    )


def _string(name: str, world: World) -> st.SearchStrategy[str]:
    """A value for a string field, by what its name says it holds."""
    known: tuple[str, ...] | list[str] = ()
    if name == "resource_code":
        known = [*world.codes, f"{PROVINCE}-3-999999", "350900-3-000001", "440100-3-000001"]
    elif name == "id" or (name.endswith("_id") and name != "request_id"):
        known = world.ids
    elif name in ("provider_code", "subject", "code"):
        known = (PUBLIC_SECURITY, CIVIL_AFFAIRS, FUZHOU_AGENCY, "91350100M000100Y3X")
    elif "region" in name:
        known = REGIONS
    elif name == "page_token":
        known = [*world.tokens, *FOREIGN_TOKENS]
    elif name == "resume_token":
        known = [*world.resume_tokens, *(t[:-2] + "AA" for t in world.resume_tokens)]
    elif "identity" in name or name in ("recipient", "caller"):
        known = world.identities
    elif name in ("items", "extra_items", "clear_text_items", "item", "name"):
        known = ITEM_NAMES
    elif "address" in name or "endpoint" in name:
        known = ("127.0.0.1:7443", "city.example:²", "city.example:٣", "[::1]:0", ":", "h:65536")
    elif name.endswith("_pem"):
        known = ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",)
    if known:
        return st.one_of(st.sampled_from(list(known)), _text())
    return _text()


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integer(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[kind]
    edges = sorted({low, high, high - 1, *(n for n in SMALL_INTS if low <= n <= high)})
    if low < 0:
        edges += [-1, low + 1]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _timestamp(world: World) -> st.SearchStrategy[Message]:
    from google.protobuf.timestamp_pb2 import Timestamp

    now = int(world.now.timestamp())
    seconds = st.one_of(
        st.integers(now - 400 * 86_400, now + 400 * 86_400),
        st.sampled_from([0, -62135596800, 253402300799, 253402300800, -62135596801]),
        st.integers(-(2**63), 2**63 - 1),
    )
    nanos = st.one_of(st.just(0), st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1))
    return st.builds(Timestamp, seconds=seconds, nanos=nanos)


class Requests:
    """Hypothesis strategies for a method's requests, built from its descriptor.

    Most requests are a valid one (a seed; for a method without one, the empty request) with
    one to three fields, at the top or nested, replaced by generated values: a single bad
    field in an otherwise good request is what reaches the deepest code. Others are generated
    whole, or a seed's encoding mutated byte by byte.
    """

    MAX_DEPTH = 3

    def __init__(self, world: World, seeds: dict[str, list[Message]]) -> None:
        self.world = world
        self.seeds = seeds
        self._cache: dict[tuple[str, int], st.SearchStrategy[Any]] = {}

    def value(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """One value of ``f`` (one element, for a repeated field)."""
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            assert f.message_type is not None
            if f.message_type.full_name == "google.protobuf.Timestamp":
                return _timestamp(self.world)
            return self.message(f.message_type, depth + 1)
        if f.type == FieldDescriptor.TYPE_STRING:
            return _string(f.name, self.world)
        if f.type == FieldDescriptor.TYPE_BYTES:
            return st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\xff" * 70_000]))
        if f.type == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if f.type == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None
            numbers = [v.number for v in f.enum_type.values]
            return st.one_of(st.sampled_from(numbers), _integer(FieldDescriptor.TYPE_INT32))
        if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(width=32 if f.type == FieldDescriptor.TYPE_FLOAT else 64)
        return _integer(f.type)

    def field_values(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """A whole field's value: a list for a repeated field, a dict for a map."""
        key = (f.full_name, depth)
        if key not in self._cache:
            self._cache[key] = self._field_values(f, depth)
        return self._cache[key]

    def _field_values(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if _is_map(f):
            assert f.message_type is not None
            key_f = f.message_type.fields_by_name["key"]
            value_f = f.message_type.fields_by_name["value"]
            keys = st.one_of(st.sampled_from(ITEM_NAMES), self.value(key_f, depth))
            entries = st.dictionaries(keys, self.value(value_f, depth), max_size=4)
            if depth:  # many entries only at the top, so that sizes do not multiply
                return entries
            crowded = st.builds(
                _many_keys, self.value(value_f, depth), st.sampled_from([100, 3000])
            )
            return _rarely(6, crowded, entries)
        if f.is_repeated:
            element = self.value(f, depth)
            if depth:
                return st.lists(element, max_size=4)
            many = st.builds(lambda x, n: [x] * n, element, st.sampled_from([50, 10_001]))
            return _rarely(6, many, st.lists(element, max_size=4))
        return self.value(f, depth)

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        """A message of ``descriptor`` generated whole (any of its fields set)."""
        key = (descriptor.full_name, -1 - depth)
        if key in self._cache:
            return self._cache[key]
        cls = message_factory.GetMessageClass(descriptor)
        if depth > self.MAX_DEPTH:
            return st.just(cls())
        self._cache[key] = st.deferred(
            lambda: st.builds(
                lambda chosen: _build(cls(), descriptor, chosen),
                st.fixed_dictionaries(
                    {}, optional={f.name: self.field_values(f, depth) for f in descriptor.fields}
                ),
            )
        )
        return self._cache[key]

    def changed(self, seeds: list[Message]) -> st.SearchStrategy[Message]:
        """A seed with one to three fields (top-level or nested) replaced."""

        @st.composite
        def change(draw: st.DrawFn) -> Message:
            msg = draw(st.sampled_from(seeds))
            out = type(msg)()
            out.CopyFrom(msg)
            targets = _targets(out, 0)
            if not targets:  # a request without fields
                return out
            for path in draw(st.lists(st.sampled_from(targets), min_size=1, max_size=3)):
                found = _follow(out, path)
                if found is not None:  # (an earlier change may have removed its parent)
                    parent, f = found
                    _build(parent, parent.DESCRIPTOR, {f.name: draw(self.field_values(f, 1))})
            return out

        return change()

    def requests(self, method: MethodDescriptor) -> st.SearchStrategy[Payload]:
        """One request's bytes (several, for a client stream): changed, whole or mutated."""
        empty = message_factory.GetMessageClass(method.input_type)()
        seeds = self.seeds.get(method.name) or [empty]
        built = _rarely(5, self.message(method.input_type), self.changed(seeds))
        encoded = built.map(_serialize)
        originals = st.sampled_from([_serialize(s) for s in seeds])
        mutated = st.builds(_mutate, originals, st.lists(_MUTATION, min_size=1, max_size=4))
        # One in four mutated, one in a hundred past the node's message limit.
        one = _rarely(100, encoded.map(_oversize), _rarely(4, mutated, encoded))
        if method.client_streaming:
            return st.lists(one, max_size=3).map(Payload)
        return one.map(lambda b: Payload([b]))


class Payload(tuple[bytes, ...]):
    """The request messages of one call, encoded; shown briefly in hypothesis' reports."""

    def __repr__(self) -> str:
        sizes = ", ".join(str(len(m)) for m in self)
        first = self[0][:160] if self else b""
        return f"Payload(bytes of {len(self)} message(s): {sizes}; first begins {first!r})"


def _many_keys(value: Any, n: int) -> dict[str, Any]:
    return {f"k{i}": value for i in range(n)}


def _is_map(f: Any) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


Path_ = tuple[str | int, ...]


def _targets(msg: Message, depth: int) -> list[Path_]:
    """Paths to every field of ``msg`` and of the messages it holds (a repeated field's
    first element), down to depth 2."""
    out: list[Path_] = []
    for f in msg.DESCRIPTOR.fields:
        out.append((f.name,))
        if depth >= 2 or f.type != FieldDescriptor.TYPE_MESSAGE or _is_map(f):
            continue
        value = getattr(msg, f.name)
        if f.is_repeated:
            if len(value):
                out += [(f.name, 0, *rest) for rest in _targets(value[0], depth + 1)]
        elif msg.HasField(f.name):
            out += [(f.name, *rest) for rest in _targets(value, depth + 1)]
    return out


def _follow(msg: Message, path: Path_) -> tuple[Message, Any] | None:
    """The message holding the field ``path`` ends at, and that field."""
    for step in path[:-1]:
        if isinstance(step, int):
            if len(msg) <= step:  # type: ignore[arg-type]
                return None
            msg = msg[step]  # type: ignore[index]
        else:
            msg = getattr(msg, step)
    name = path[-1]
    assert isinstance(name, str)
    return msg, msg.DESCRIPTOR.fields_by_name[name]


def _build(msg: Any, descriptor: Any, chosen: dict[str, Any]) -> Any:
    """``msg`` with the fields in ``chosen`` set to their values."""
    for name, value in chosen.items():
        f = descriptor.fields_by_name[name]
        target = getattr(msg, name)
        if _is_map(f):
            target.clear()
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif f.is_repeated:
            del target[:]
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


_MUTATION = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "varint"]),
    st.integers(0, 2**16),
    st.integers(0, 255),
)


def _mutate(raw: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(raw)
    for op, position, byte in steps:
        at = position % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << (byte % 8)
        elif op == "insert":
            data[at:at] = bytes([byte])
        elif op == "delete" and data:
            del data[at % len(data)]
        elif op == "truncate":
            del data[at:]
        elif op == "varint":  # a field tag with an enormous length prefix
            data[at:at] = bytes([(byte % 16 << 3) | 2, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
    return bytes(data)


def _oversize(raw: bytes) -> bytes:
    """``raw`` with an unknown field making it larger than the node's 4 MiB limit."""
    size = 4 * 1024 * 1024 + 16
    return raw + _varint((1000 << 3) | 2) + _varint(size) + b"x" * size


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _metadata() -> st.SearchStrategy[tuple[tuple[str, str | bytes], ...]]:
    """Mostly none; one call in eight carries a request id, a caller assertion of its own (an
    assertion from anyone but a node that forwards is refused) or a 授权开放 key, well formed
    or not (OpenDataService reads it)."""
    request_ids = st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80
    )
    well_formed_keys = st.from_regex(r"gok_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", fullmatch=True)
    pairs = st.lists(
        st.one_of(
            st.tuples(st.just(REQUEST_ID_KEY), request_ids),
            st.tuples(st.just(ASSERTION_KEY), st.binary(max_size=200)),
            st.tuples(st.just(OPEN_KEY), st.one_of(request_ids, well_formed_keys)),
        ),
        min_size=1,
        max_size=2,
    ).map(tuple)
    return _rarely(8, pairs, st.just(()))


def _rarely(
    one_in: int, rare: st.SearchStrategy[T], usual: st.SearchStrategy[T]
) -> st.SearchStrategy[T]:
    """``rare`` about once in ``one_in`` draws, else ``usual`` (hypothesis' own integers favour
    their bounds, so the choice comes from a seeded random instead)."""
    return st.randoms(use_true_random=False).flatmap(
        lambda r: rare if r.randrange(one_in) == 0 else usual
    )


def _seeds(world: World) -> dict[str, list[Message]]:
    """Valid requests to start from, by method name (methods without one are built from
    scratch)."""
    key = {"tyshxydm": ACME["tyshxydm"]}
    open_code, cond_code = OPEN.resource_code, COND.resource_code
    now = world.now
    change = catalog_pb2.CatalogChange(
        sequence=1000,
        kind=catalog_pb2.CATALOG_CHANGE_KIND_REGISTERED,
        entry=entry_to_proto(entry_of(FUZHOU, 6)),
        origin_region=FUZHOU,
    )
    change.entry.region, change.entry.version = FUZHOU, 1
    change.entry.status = common_pb2.RESOURCE_STATUS_ACTIVE
    for stamp in (change.at, change.entry.created_at, change.entry.updated_at):
        stamp.FromDatetime(now)
    temporary = sharing_pb2.TemporaryCollection(reason="应急", extra_items=["lxdh"])
    temporary.expires_at.FromDatetime(now + dt.timedelta(days=3))
    heartbeat = federation_pb2.HeartbeatRequest(node=federation_pb2.NodeInfo(region=FUZHOU))
    heartbeat.node.server_time.FromDatetime(now)
    return {
        "RegisterResource": [
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry_of(PROVINCE, 50))),
            catalog_pb2.RegisterResourceRequest(
                entry=entry_to_proto(
                    person_entry(51, PUBLIC_SECURITY, resource_code=f"{PROVINCE}-3-000051")
                )
            ),
        ],
        "UpdateResource": [
            catalog_pb2.UpdateResourceRequest(
                entry=entry_to_proto(COND), expected_version=1, reason="更新"
            )
        ],
        "Verify": [
            sharing_pb2.VerifyRequest(resource_code=open_code, key=key, claimed={"qymc": "x"}),
            sharing_pb2.VerifyRequest(
                resource_code=PEOPLE.resource_code, key={"sfzhm": ZHANG["sfzhm"]}, claimed=ZHANG
            ),
        ],
        "Compare": [
            sharing_pb2.CompareRequest(
                resource_code=open_code,
                records=[sharing_pb2.CompareRecord(ref="1", key=key, claimed={"qymc": "x"})],
            )
        ],
        "Query": [
            sharing_pb2.QueryRequest(resource_code=open_code, key=key),
            sharing_pb2.QueryRequest(
                resource_code=PEOPLE.resource_code,
                filters=[
                    sharing_pb2.QueryFilter(
                        item="csrq", op=sharing_pb2.QUERY_OPERATOR_RANGE, lower="1900-01-01"
                    )
                ],
            ),
        ],
        "Exchange": [
            sharing_pb2.ExchangeRequest(resource_code=open_code),
            *(
                sharing_pb2.ExchangeRequest(resource_code=open_code, resume_token=t)
                for t in world.resume_tokens[:1]
            ),
        ],
        "Subscribe": [sharing_pb2.SubscribeRequest(resource_code=open_code)],
        "Submit": [
            sharing_pb2.SubmitBatch(
                resource_code=cond_code, batch_id="fuzz", records=[common_pb2.Record(values=ACME)]
            ),
            sharing_pb2.SubmitBatch(
                resource_code=PEOPLE.resource_code,
                batch_id="fuzz-temp",
                records=[common_pb2.Record(values=dict(ZHANG, lxdh="1"))],
                temporary=temporary,
            ),
        ],
        "GetRecordHistory": [sharing_pb2.GetRecordHistoryRequest(resource_code=cond_code, key=key)],
        "Apply": [apply_request(cond_code)],
        "ReviewApplication": [approve(world.ids[2])],
        "RequestRecordChange": [
            access_pb2.RequestRecordChangeRequest(
                target=access_pb2.CHANGE_TARGET_RECORD,
                action=access_pb2.CHANGE_ACTION_UPDATE,
                resource_code=cond_code,
                key=key,
                record=common_pb2.Record(values=dict(ACME, qymc="新名称")),
                reason="更正",
            )
        ],
        "PublishCatalog": [change],
        "Heartbeat": [heartbeat],
        "QueryAudit": [audit_pb2.QueryAuditRequest(page_size=5)],
        # Everything right but the invitation (which no fuzzer can guess) and the CSRs.
        "Join": [
            federation_pb2.JoinRequest(
                invitation_token="gvi1_x",
                region="350900",
                name="宁德市",
                listen_address="127.0.0.1:7443",
                city_ca_csr_pem="-----BEGIN CERTIFICATE REQUEST-----\n",
                node_csr_pem="-----BEGIN CERTIFICATE REQUEST-----\n",
            )
        ],
    }


# --- the test ----------------------------------------------------------------------------


def _fuzz(wire: Wire, requests: Requests, method: MethodDescriptor, examples: int) -> int:
    """Fuzz ``method`` with ``examples`` examples (in hypothesis' thread); returns how many
    calls were made."""
    calls = 0
    callers = st.sampled_from([c for c in wire.fed.callers for _ in range(WEIGHTS[c.label])])
    payloads = requests.requests(method)
    metadata = _metadata()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
    )
    @given(caller=callers, sent=payloads, extra=metadata)
    def one(caller: Caller, sent: Payload, extra: tuple[tuple[str, str | bytes], ...]) -> None:
        nonlocal calls
        calls += 1
        # Every call carries a request id, so that the node's audit record of it can be found.
        request_id = next((str(v) for k, v in extra if k == REQUEST_ID_KEY), None)
        if request_id is None:
            request_id = f"fuzz-wire-{next(wire.numbers)}"
            extra = ((REQUEST_ID_KEY, request_id), *extra)
        outcome = wire.run(wire.invoke(caller, method, sent, extra))
        wire.seen[method.name, caller.label, outcome.code.name] += 1
        if outcome.code not in BUGS:
            return
        # The node's answer is what its audit log says it answered (the record is durable
        # before the status leaves). A client-side INTERNAL over an answer the node recorded
        # as something else is gRPC's (a client still streaming after the node answered
        # gets "Internal error from Core"): counted, not a node bug.
        answered = wire.run(wire.audited(caller.target, request_id))
        if answered and not answered & {code.name for code in BUGS}:
            wire.transport[method.name, outcome.details, ",".join(sorted(answered))] += 1
            return
        raise AssertionError(
            f"{method.full_name} as {caller.label} ({caller.target}): {outcome.code.name}: "
            f"{outcome.details[:300]} (audited as {sorted(answered) or 'nothing'}); "
            f"request {sent!r}"
        )

    one()
    return calls


def _methods() -> Iterator[MethodDescriptor]:
    for service in service_descriptors():
        yield from service.methods


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis caches its Unicode tables in a ``.hypothesis`` directory (the example
    database is off anyway); this test's go to tmp_path, so that it leaves nothing behind."""
    previous = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(tmp_path / "hypothesis")
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


@pytest.mark.usefixtures("hypothesis_home")
async def test_every_rpc_survives_generated_and_mutated_requests(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    fed = await _federation(tmp_path, db_urls)
    wire: Wire | None = None
    try:
        world = await _populate(fed)
        wire = Wire(asyncio.get_running_loop(), fed)
        requests = Requests(world, _seeds(world))
        began = time.monotonic()
        fuzzed: dict[str, int] = {}
        for method in _methods():
            # A method this node does not implement yet answers UNIMPLEMENTED to anything:
            # a few examples show that; the budget goes to the others.
            probe = await wire.invoke(fed.callers[0], method, Payload([b""]), ())
            assert probe.code not in BUGS, (method.full_name, probe)
            late = time.monotonic() - began > BUDGET_S
            if late or probe.code is grpc.StatusCode.UNIMPLEMENTED:
                examples = min(EXAMPLES, LATE_EXAMPLES)
            else:
                examples = EXAMPLES
            fuzzed[method.full_name] = await asyncio.to_thread(
                _fuzz, wire, requests, method, examples
            )
            states = await wire.healthy()
            assert set(states.values()) == {"SERVING"}, (method.full_name, states)
        assert len(fuzzed) == sum(len(s.methods) for s in service_descriptors())
        assert all(fuzzed.values()), fuzzed
        assert set((await wire.healthy()).values()) == {"SERVING"}
        # Shown with -s: what the fuzzer sent and what came back.
        print(f"fuzzed {sum(fuzzed.values())} calls in {time.monotonic() - began:.1f} s")
        for (name, who, code), n in sorted(wire.seen.items()):
            print(f"  {name:24} {who:20} {code:20} {n}")
        for (name, details, answered), n in sorted(wire.transport.items()):
            print(f"  client-side {name}: {details!r} (the node answered {answered}) x{n}")
    finally:
        if wire is not None:
            await wire.close()
        for name in ("fuzhou", "province"):
            await fed.nodes[name].stop(grace=0)
