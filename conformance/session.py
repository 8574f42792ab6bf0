"""One conformance run's connection to the province and the target, and what it created.

The session owns the tester's mutual-TLS channels, makes every gRPC call of the run (each with
its own request id, remembered so the audit case can look for it in the target's log), and
sets up and removes the probe resources lazily: cases that need them share one set.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from google.protobuf.message import Message
from govnode.v1 import catalog_pb2, common_pb2, federation_pb2, sharing_pb2

from conformance.probes import ProbeRecord, new_probe_record, probe_entry
from conformance.wire import TlsOutcome
from gateway.channel import secure_channel
from gateway.identity import Identity, IdentityError, Role, identity_of
from gateway.tls import TlsFiles

REQUEST_ID_KEY = "govnode-request-id"
M = TypeVar("M", bound=Message)

NEGATIVE_CERTS = ("expired", "revoked", "wrong-region")

#: Checks a download receipt offline against the province root: ``(receipt, sha256 hex, size)``
#: -> what the receipt states; raises ValueError naming the check that failed. The suite cannot
#: import the node's checker (layers), so ``govnode conformance run`` passes it in.
ReceiptCheck = Callable[[bytes, str, int], Mapping[str, Any]]


class SetupFailed(Exception):
    """A precondition of a case (probe resources, a channel) could not be established."""


@dataclass(frozen=True)
class Options:
    province: str
    target: str
    root: Path
    tester: Path
    region: str = ""  # expected target region; by default read from its certificate
    sync_timeout_s: float = 30.0
    #: How long SEC-04 waits for the province's revocation of the tester's revoked certificate
    #: to take effect at the target: a city learns revocations on its heartbeat (5 s by
    #: default), so a run started right after `govnode certs issue-tester` may get there first.
    revocation_timeout_s: float = 30.0
    call_timeout_s: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024  # the platform's default message limit
    latency_calls: int = 200
    latency_concurrency: int = 4
    latency_budget_s: float = 15.0
    latency_p50_ms: float = 200.0
    latency_p99_ms: float = 1000.0
    max_clock_skew_s: float = 5.0
    min_cert_days: int = 7
    verify_per_minute: int = 600  # the target's Verify rate limit (the platform default)
    #: The city's open data portal, an https:// base URL; "" skips the open data cases.
    portal: str = ""
    #: At most this many requests, and seconds, for the portal's limit to answer 429 (OPEN-07).
    portal_request_bound: int = 400
    portal_request_seconds: float = 60.0
    check_receipt: ReceiptCheck | None = None


@dataclass(frozen=True)
class TesterBundle:
    """The files ``govnode certs issue-tester`` writes, found by their fixed names."""

    directory: Path
    files: TlsFiles
    identity: Identity
    chain: list[x509.Certificate]

    def negative(self, name: str) -> tuple[Path, Path]:
        """(certificate chain, key) of a negative certificate: expired, revoked, wrong-region."""
        cert = self.directory / "negative" / f"{name}.crt"
        key = self.directory / "negative" / f"{name}.key"
        if not cert.is_file() or not key.is_file():
            raise SetupFailed(
                f"the tester bundle has no {name} certificate ({cert}); issue the bundle with "
                "`govnode certs issue-tester` at the province"
            )
        return cert, key


def load_bundle(directory: Path, root: Path) -> TesterBundle:
    """Load and check a tester bundle; ValueError names what is wrong with it."""
    cert, key = directory / "tester.crt", directory / "tester.key"
    for path in (cert, key, root):
        if not path.is_file():
            raise ValueError(f"{path} not found (a tester bundle holds tester.crt and tester.key)")
    chain = x509.load_pem_x509_certificates(cert.read_bytes())
    try:
        identity = identity_of(chain[0])
    except IdentityError as exc:
        raise ValueError(f"{cert}: {exc}") from None
    if identity.role is not Role.TESTER:
        raise ValueError(f"{cert} carries {identity}, which is not a tester identity")
    return TesterBundle(directory, TlsFiles(key, cert, root), identity, chain)


@dataclass
class CallOutcome:
    code: grpc.StatusCode
    details: str
    response: Any
    request_id: str
    elapsed_s: float
    trailing: dict[str, str] = field(default_factory=dict)  # trailing metadata (text values)

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    def describe(self) -> str:
        return f"{self.code.name}: {self.details}" if not self.ok else "OK"


@dataclass(frozen=True)
class ProbeCall:
    """A call the run made to the target with the tester certificate."""

    request_id: str
    method: str
    outcome: str
    routed: bool = False  # made at the province, forwarded to the target


@dataclass
class Probes:
    """What the run registered: resource codes by kind, at the target and at the province."""

    run_id: str
    target: dict[str, str] = field(default_factory=dict)
    province: dict[str, str] = field(default_factory=dict)
    record: ProbeRecord | None = None
    found_active: set[str] = field(default_factory=set)  # the target's active codes before
    registered_at: dict[str, float] = field(default_factory=dict)  # code -> monotonic time


def _text_metadata(metadata: Any) -> dict[str, str]:
    """Text entries of gRPC metadata (pairs of key and value) as a dict."""
    out: dict[str, str] = {}
    for item in metadata or ():
        key, value = tuple(item)
        if isinstance(value, str):
            out[str(key)] = value
    return out


def rpc(service: str, method: str) -> str:
    return f"/govnode.v1.{service}/{method}"


class Session:
    def __init__(self, options: Options, bundle: TesterBundle) -> None:
        self.options = options
        self.bundle = bundle
        self.run_id = secrets.token_hex(4)
        self.started_at = dt.datetime.now(dt.UTC)
        self.calls: list[ProbeCall] = []
        self.target_chain: list[x509.Certificate] = []
        self.province_identity = ""
        self.control: TlsOutcome | None = None  # the valid handshake refusal cases compare with
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._probes: Probes | None = None
        self._probe_error: str = ""
        self._probe_lock = asyncio.Lock()
        self._cleaned = False
        self._counter = 0
        #: Tells the person running the suite what it is waiting for (one line at a time).
        self.notice: Callable[[str], None] = lambda line: None
        #: Run by :meth:`cleanup` before the probe entries are withdrawn (e.g. unpublishing).
        self.before_cleanup: list[Callable[[], Awaitable[list[str]]]] = []
        #: What cases share beyond the probes (e.g. the open data probes), by name.
        self.shared: dict[str, Any] = {}

    # --- channels and calls ---------------------------------------------------------------

    def channel(self, node: str) -> grpc.aio.Channel:
        if node not in self._channels:
            address = self.options.target if node == "target" else self.options.province
            self._channels[node] = secure_channel(
                address,
                self.bundle.files,
                timeout=self.options.call_timeout_s,
                streaming_timeout=self.options.call_timeout_s * 3,
                max_message_bytes=64 * 1024 * 1024 + 1024 * 1024,
            )
        return self._channels[node]

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(grace=None)
        self._channels.clear()

    def new_request_id(self) -> str:
        self._counter += 1
        return f"conformance-{self.run_id}-{self._counter:05d}"

    async def call(
        self,
        node: str,
        method: str,
        request: Message,
        response_cls: type[M],
        *,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        raw: bytes | None = None,
        record: bool = True,
    ) -> CallOutcome:
        """One unary call as the tester; ``raw`` sends those bytes instead of ``request``."""
        request_id = self.new_request_id()
        stub = self.channel(node).unary_unary(
            method,
            request_serializer=lambda m: raw if raw is not None else m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        began = asyncio.get_running_loop().time()
        try:
            response = await stub(
                request,
                metadata=((REQUEST_ID_KEY, request_id), *metadata),
                timeout=self.options.call_timeout_s,
            )
            code, details = grpc.StatusCode.OK, ""
            trailing: dict[str, str] = {}
        except grpc.aio.AioRpcError as exc:
            response, code, details = None, exc.code(), exc.details() or ""
            trailing = _text_metadata(exc.trailing_metadata())
        elapsed = asyncio.get_running_loop().time() - began
        reached = code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        sharing = method.endswith(("/Verify", "/Query", "/Compare"))
        if record and reached and (node == "target" or sharing):
            self.calls.append(ProbeCall(request_id, method, code.name, routed=node != "target"))
        return CallOutcome(code, details, response, request_id, elapsed, trailing)

    async def node_info(self, node: str) -> federation_pb2.NodeInfo:
        out = await self.call(
            node,
            rpc("FederationService", "GetNodeInfo"),
            federation_pb2.GetNodeInfoRequest(),
            federation_pb2.GetNodeInfoResponse,
        )
        if not out.ok:
            raise SetupFailed(f"GetNodeInfo at the {node} failed: {out.describe()}")
        info: federation_pb2.NodeInfo = out.response.node
        return info

    # --- probe resources --------------------------------------------------------------------

    async def target_region(self) -> str:
        if self.options.region:
            return self.options.region
        info = await self.node_info("target")
        return info.region

    async def probes(self) -> Probes:
        """Register the probe resources (once) and feed each target probe one record."""
        async with self._probe_lock:
            if self._probe_error:
                raise SetupFailed(self._probe_error)
            if self._probes is None:
                try:
                    self._probes = await self._set_up()
                except SetupFailed as exc:
                    self._probe_error = f"probe resources could not be set up: {exc}"
                    raise SetupFailed(self._probe_error) from None
            return self._probes

    async def _set_up(self) -> Probes:
        probes = Probes(self.run_id)
        self._probes = probes  # so that cleanup withdraws whatever registered before a failure
        probes.found_active = await self.active_codes("target")
        region = await self.target_region()
        province_region = (await self.node_info("province")).region
        for kind in ("unconditional", "not_shared", "conditional"):
            probes.target[kind] = await self._register(
                "target", probe_entry(kind, region, self.run_id)
            )
        probes.province["unconditional"] = await self._register(
            "province", probe_entry("unconditional", province_region, self.run_id)
        )
        probes.record = new_probe_record(self.run_id)
        for code in probes.target.values():
            await self._submit(code, probes.record)
        return probes

    async def register_probe(self, node: str, entry: common_pb2.ResourceEntry) -> str:
        """Register one more probe entry (withdrawn with the others at the end)."""
        probes = await self.probes()
        code = await self._register(node, entry)
        (probes.target if node == "target" else probes.province)[f"extra-{code}"] = code
        return code

    async def _register(self, node: str, entry: common_pb2.ResourceEntry) -> str:
        for _ in range(5):  # a random code may already be taken
            out = await self.call(
                node,
                rpc("CatalogService", "RegisterResource"),
                catalog_pb2.RegisterResourceRequest(entry=entry, request_id=self.new_request_id()),
                catalog_pb2.RegisterResourceResponse,
            )
            if out.ok:
                code: str = out.response.entry.resource_code
                if self._probes is not None:
                    self._probes.registered_at[code] = time.monotonic()
                return code
            if out.code is not grpc.StatusCode.ALREADY_EXISTS:
                raise SetupFailed(f"registering a probe entry at the {node}: {out.describe()}")
            fresh = probe_entry("unconditional", entry.resource_code[:6], self.run_id)
            entry.resource_code = fresh.resource_code
        raise SetupFailed(f"no free probe resource code at the {node} after 5 attempts")

    async def _submit(self, code: str, record: ProbeRecord) -> None:
        await self.submit_records(code, [record.values()])

    async def submit_records(self, code: str, rows: Sequence[Mapping[str, str]]) -> None:
        """Submit ``rows`` into the probe resource ``code`` in one batch, all accepted."""
        request_id = self.new_request_id()
        batch = sharing_pb2.SubmitBatch(
            resource_code=code,
            batch_id=f"probe-{self.run_id}-{code}",
            records=[common_pb2.Record(values=dict(r)) for r in rows],
        )

        async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            yield batch

        stream = self.channel("target").stream_stream(
            rpc("SharingService", "Submit"),
            request_serializer=sharing_pb2.SubmitBatch.SerializeToString,
            response_deserializer=sharing_pb2.SubmitAck.FromString,
        )
        try:
            acks = [
                ack
                async for ack in stream(
                    batches(),
                    metadata=((REQUEST_ID_KEY, request_id),),
                    timeout=self.options.call_timeout_s,
                )
            ]
        except grpc.aio.AioRpcError as exc:
            self.calls.append(
                ProbeCall(request_id, rpc("SharingService", "Submit"), exc.code().name)
            )
            raise SetupFailed(
                f"submitting the probe record to {code}: {exc.code().name}: {exc.details()}"
            ) from None
        self.calls.append(ProbeCall(request_id, rpc("SharingService", "Submit"), "OK"))
        if not acks or acks[0].accepted != len(rows):
            raise SetupFailed(f"the probe records for {code} were not all accepted: {acks}")

    async def active_codes(self, node: str) -> set[str]:
        codes: set[str] = set()
        token = ""
        for _ in range(1000):  # bounded: 1000 pages
            out = await self.call(
                node,
                rpc("CatalogService", "ListResources"),
                catalog_pb2.ListResourcesRequest(page_size=500, page_token=token),
                catalog_pb2.ListResourcesResponse,
            )
            if not out.ok:
                raise SetupFailed(f"ListResources at the {node}: {out.describe()}")
            codes.update(
                e.resource_code
                for e in out.response.entries
                if e.status == common_pb2.RESOURCE_STATUS_ACTIVE
            )
            token = out.response.next_page_token
            if not token:
                break
        return codes

    async def cleanup(self) -> list[str]:
        """Withdraw every probe entry the run registered (once); returns what it did."""
        if self._cleaned or self._probes is None:
            return []
        self._cleaned = True
        done = []
        for step in self.before_cleanup:
            try:
                done.extend(await step())
            except Exception as exc:  # the withdrawals below must still happen
                done.append(f"a clean-up step failed: {type(exc).__name__}: {exc}")
        for node, codes in (("target", self._probes.target), ("province", self._probes.province)):
            for code in codes.values():
                out = await self.call(
                    node,
                    rpc("CatalogService", "WithdrawResource"),
                    catalog_pb2.WithdrawResourceRequest(
                        resource_code=code,
                        reason=f"conformance run {self.run_id} finished",
                        request_id=self.new_request_id(),
                    ),
                    catalog_pb2.WithdrawResourceResponse,
                )
                done.append(f"withdrew {code} at the {node}: {out.describe()}")
        return done
