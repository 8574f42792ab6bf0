"""Connectivity cases (CONN-nn): the target is reachable, speaks the contract, is who it
claims to be, takes part in the federation, answers fast enough and keeps time (第三十一条)."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections.abc import AsyncIterator

from cryptography import x509
from google.protobuf import descriptor_pb2
from govnode.v1 import (
    access_pb2,
    audit_pb2,
    catalog_pb2,
    common_pb2,
    federation_pb2,
    opendata_pb2,
    quality_pb2,
    sharing_pb2,
    supervision_pb2,
)
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from conformance.cases import Case, Failed, case
from conformance.session import Session, SetupFailed, rpc
from conformance.wire import tcp_connect, tls_probe
from gateway.identity import IdentityError, Role, check_chain, identity_of

CASES: list[Case] = []
CLEANUP_ID = "CONN-11"
ARTICLE = "第三十一条"
CONTRACT_MODULES = (
    access_pb2,
    audit_pb2,
    catalog_pb2,
    federation_pb2,
    opendata_pb2,
    quality_pb2,
    sharing_pb2,
    supervision_pb2,
)


def required_methods() -> dict[str, set[str]]:
    """Every govnode.v1 service and its methods, from the contract this suite was built with."""
    return {
        svc.full_name: {m.name for m in svc.methods}
        for mod in CONTRACT_MODULES
        for svc in mod.DESCRIPTOR.services_by_name.values()
    }


@case(
    CASES,
    "CONN-01",
    "TCP reachability",
    article=ARTICLE,
    checks="A TCP connection to the target and to the province opens within the call timeout.",
)
async def tcp_reachability(s: Session, ev: list[str]) -> str:
    for name, address in (("target", s.options.target), ("province", s.options.province)):
        try:
            took = await asyncio.to_thread(tcp_connect, address, s.options.call_timeout_s)
        except (OSError, ValueError) as exc:
            raise Failed(f"the {name} at {address} is not reachable over TCP: {exc}") from None
        ev.append(f"{name} {address}: connected in {took * 1000:.1f} ms")
    return "the target and the province accept TCP connections"


_AEAD_TLS12 = (
    "ECDHE-ECDSA-AES128-GCM",
    "ECDHE-ECDSA-AES256-GCM",
    "ECDHE-ECDSA-CHACHA20",
    "ECDHE-RSA-AES128-GCM",
    "ECDHE-RSA-AES256-GCM",
    "ECDHE-RSA-CHACHA20",
)


async def target_handshake(s: Session, ev: list[str]) -> list[x509.Certificate]:
    """A full handshake as the tester; remembers the target's chain for the report."""
    files = s.bundle.files
    out = await asyncio.to_thread(
        tls_probe, s.options.target, root=files.root, cert=files.chain, key=files.key
    )
    if not out.handshake_ok or not out.served_http2:
        raise Failed(
            f"a TLS handshake with the tester certificate and the province root failed: {out.error}"
        )
    ev.append(f"negotiated {out.version}, cipher {out.cipher}, ALPN {out.alpn or '(none)'}")
    s.target_chain = out.chain
    return out.chain


@case(
    CASES,
    "CONN-02",
    "TLS handshake with a valid client certificate",
    article=ARTICLE,
    checks=(
        "Mutual TLS with the tester certificate succeeds, the server verifies against the "
        "province root, TLS 1.2 or 1.3 is negotiated with an AEAD, forward-secret cipher suite, "
        "and HTTP/2 is selected by ALPN."
    ),
)
async def tls_handshake(s: Session, ev: list[str]) -> str:
    files = s.bundle.files
    out = await asyncio.to_thread(
        tls_probe, s.options.target, root=files.root, cert=files.chain, key=files.key
    )
    if not out.handshake_ok:
        raise Failed(f"the handshake failed: {out.error}")
    ev.append(f"negotiated {out.version}, cipher {out.cipher}, ALPN {out.alpn or '(none)'}")
    s.target_chain = out.chain
    if out.version not in ("TLSv1.2", "TLSv1.3"):
        raise Failed(f"the target negotiated {out.version}; TLS 1.2 or newer is required")
    if out.version == "TLSv1.2" and not out.cipher.startswith(_AEAD_TLS12):
        raise Failed(f"cipher suite {out.cipher} is not an ECDHE AEAD suite")
    if out.alpn != "h2":
        raise Failed(f"ALPN selected {out.alpn or 'nothing'}, gRPC needs h2")
    if not out.served_http2:
        raise Failed(f"the target did not speak HTTP/2 after the handshake: {out.error}")
    return f"{out.version} with {out.cipher}"


@case(
    CASES,
    "CONN-03",
    "Health SERVING",
    article=ARTICLE,
    checks="grpc.health.v1.Health/Check for the whole server answers SERVING.",
)
async def health_serving(s: Session, ev: list[str]) -> str:
    out = await s.call(
        "target",
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest(),
        health_pb2.HealthCheckResponse,
        record=False,
    )
    if not out.ok:
        raise Failed(f"the health check failed: {out.describe()}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(out.response.status)
    ev.append(f"status {status} in {out.elapsed_s * 1000:.1f} ms")
    if out.response.status != health_pb2.HealthCheckResponse.SERVING:
        raise Failed(f"the target reports {status}")
    return "SERVING"


async def _reflect(
    s: Session, requests: list[reflection_pb2.ServerReflectionRequest]
) -> list[reflection_pb2.ServerReflectionResponse]:
    stream = s.channel("target").stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def send() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        for r in requests:
            yield r

    return [r async for r in stream(send(), timeout=s.options.call_timeout_s)]


@case(
    CASES,
    "CONN-04",
    "Reflection lists every govnode.v1 service and method",
    article=ARTICLE,
    checks=(
        "Server reflection lists every service of the govnode.v1 contract, and each service's "
        "descriptor has every method of the contract."
    ),
)
async def reflection_complete(s: Session, ev: list[str]) -> str:
    import grpc.aio

    required = required_methods()
    try:
        listed = await _reflect(s, [reflection_pb2.ServerReflectionRequest(list_services="")])
    except grpc.aio.AioRpcError as exc:
        raise Failed(
            f"server reflection is not available: {exc.code().name}: {exc.details()}"
        ) from None
    names = {svc.name for svc in listed[0].list_services_response.service} if listed else set()
    missing_services = sorted(set(required) - names)
    if missing_services:
        raise Failed(f"reflection does not list {', '.join(missing_services)}")
    responses = await _reflect(
        s, [reflection_pb2.ServerReflectionRequest(file_containing_symbol=n) for n in required]
    )
    found: dict[str, set[str]] = {}
    for response in responses:
        for raw in response.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for svc in fd.service:
                found[f"{fd.package}.{svc.name}"] = {m.name for m in svc.method}
    missing = [
        f"{svc}/{m}"
        for svc, methods in required.items()
        for m in sorted(methods)
        if m not in found.get(svc, set())
    ]
    if missing:
        raise Failed(f"{len(missing)} method(s) missing from reflection: {', '.join(missing[:8])}")
    count = sum(len(m) for m in required.values())
    ev.append(f"{len(required)} services, {count} methods listed")
    return f"all {len(required)} services and {count} methods are listed"


def _is_city(region: str, province_region: str) -> bool:
    return (
        len(region) == 6
        and region.endswith("00")
        and not region.endswith("0000")
        and region[:2] == province_region[:2]
    )


@case(
    CASES,
    "CONN-05",
    "Server certificate: chain, identity and validity",
    article=ARTICLE,
    checks=(
        "The target's certificate chains to the province root, carries exactly one identity, "
        "spiffe://<city>.<trust domain>/node, for a city of this province (the expected region "
        "when one is given) within its CA's name constraints, and is valid now with at least "
        "the minimum number of days left."
    ),
)
async def server_certificate(s: Session, ev: list[str]) -> str:
    chain = s.target_chain or await target_handshake(s, [])
    if not chain:
        raise Failed("the target presented no certificate")
    root = x509.load_pem_x509_certificate(s.bundle.files.root.read_bytes())
    full = [c for c in chain if c != root]
    for child, parent in zip(full, [*full[1:], root], strict=True):
        try:
            child.verify_directly_issued_by(parent)
        except Exception as exc:  # InvalidSignature, ValueError, TypeError
            raise Failed(
                f"{child.subject.rfc4514_string()} is not issued by "
                f"{parent.subject.rfc4514_string()}: {exc!r}"
            ) from None
    leaf = full[0]
    trust_domain = s.bundle.identity.trust_domain
    try:
        identity = check_chain(full, trust_domain)
    except IdentityError as exc:
        raise Failed(f"the target's identity is not acceptable: {exc}") from None
    ev.append(f"identity {identity}")
    province = s.bundle.identity.region
    if identity.role is not Role.NODE:
        raise Failed(f"{identity} is not a node identity")
    expected = s.options.region
    if expected and identity.region != expected:
        raise Failed(f"the target is {identity}, but region {expected} was expected")
    if not _is_city(identity.region, province):
        raise Failed(f"{identity} is not the node of a city (设区市) of province {province}")
    now = dt.datetime.now(dt.UTC)
    days_left = (leaf.not_valid_after_utc - now).total_seconds() / 86400
    ev.append(
        f"valid {leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d} "
        f"({days_left:.0f} days left)"
    )
    if leaf.not_valid_before_utc > now:
        raise Failed("the certificate is not valid yet")
    if days_left < s.options.min_cert_days:
        raise Failed(
            f"the certificate expires in {days_left:.1f} days; at least "
            f"{s.options.min_cert_days} are required"
        )
    return f"{identity}, {days_left:.0f} days left"


async def _wait_for(
    s: Session, node: str, code: str, *, withdrawn: bool = False, since: float | None = None
) -> float | None:
    """Seconds from ``since`` (default: now) until ``code`` is visible at ``node`` (withdrawn,
    if asked), or None when it is not within the synchronisation bound."""
    began = time.monotonic() if since is None else since
    deadline = time.monotonic() + s.options.sync_timeout_s
    while time.monotonic() < deadline:
        out = await s.call(
            node,
            rpc("CatalogService", "GetResource"),
            catalog_pb2.GetResourceRequest(resource_code=code),
            catalog_pb2.GetResourceResponse,
            record=False,
        )
        if out.ok:
            status = out.response.entry.status
            if not withdrawn or status == common_pb2.RESOURCE_STATUS_WITHDRAWN:
                return time.monotonic() - began
        await asyncio.sleep(0.2)
    return None


@case(
    CASES,
    "CONN-06",
    "Catalog round trip",
    article="第十七条, 第三十一条",
    checks=(
        "A probe entry registered at the target reaches the province, and one registered at the "
        "province reaches the target, each within the synchronisation bound."
    ),
)
async def catalog_round_trip(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    up_code, down_code = probes.target["unconditional"], probes.province["unconditional"]
    up = await _wait_for(s, "province", up_code, since=probes.registered_at.get(up_code))
    bound = s.options.sync_timeout_s
    if up is None:
        raise Failed(f"the target's probe entry did not reach the province within {bound:.0f} s")
    ev.append(f"target -> province: {up:.2f} s")
    down = await _wait_for(s, "target", down_code, since=probes.registered_at.get(down_code))
    if down is None:
        raise Failed(f"the province's probe entry did not reach the target within {bound:.0f} s")
    ev.append(f"province -> target: {down:.2f} s")
    return f"up in {up:.2f} s, down in {down:.2f} s (from registration)"


@case(
    CASES,
    "CONN-07",
    "Verify routed through the province",
    article="第二十六条",
    checks=(
        "Verify sent to the province for the target's probe resource is forwarded to the target "
        "and answered: the true claim matches, a false claim does not."
    ),
)
async def routed_verify(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    code, record = probes.target["unconditional"], probes.record
    assert record is not None
    if await _wait_for(s, "province", code) is None:
        raise Failed("the province does not know the target's probe resource")
    method = rpc("SharingService", "Verify")
    true_claim = sharing_pb2.VerifyRequest(
        resource_code=code, key={"probe_key": record.key}, claimed={"xm": record.name}
    )
    out = await s.call("province", method, true_claim, sharing_pb2.VerifyResponse)
    if not out.ok:
        raise Failed(f"the routed Verify failed: {out.describe()}")
    ev.append(
        f"true claim: found={out.response.found} all_match={out.response.all_match} "
        f"in {out.elapsed_s * 1000:.0f} ms"
    )
    if not (out.response.found and out.response.all_match):
        raise Failed("the routed Verify did not confirm the probe record's true value")
    false_claim = sharing_pb2.VerifyRequest(
        resource_code=code, key={"probe_key": record.key}, claimed={"xm": "不是这个名字"}
    )
    out = await s.call("province", method, false_claim, sharing_pb2.VerifyResponse)
    if not out.ok or out.response.all_match:
        raise Failed(f"a false claim was not refuted through the province: {out.describe()}")
    ev.append("false claim: mismatch")
    return "forwarded and answered both ways"


@case(
    CASES,
    "CONN-08",
    "Latency under light load",
    article=ARTICLE,
    checks=(
        "A bounded burst of Verify calls (count, concurrency and time all capped) all succeed, "
        "with p50 and p99 latency under the bounds."
    ),
)
async def latency(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    record = probes.record
    assert record is not None
    request = sharing_pb2.VerifyRequest(
        resource_code=probes.target["unconditional"],
        key={"probe_key": record.key},
        claimed={"bz": record.note},
    )
    opts = s.options
    stop_at = time.monotonic() + opts.latency_budget_s
    latencies: list[float] = []
    failures: list[str] = []
    remaining = opts.latency_calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < stop_at:
            remaining -= 1
            out = await s.call(
                "target", rpc("SharingService", "Verify"), request, sharing_pb2.VerifyResponse
            )
            if out.ok:
                latencies.append(out.elapsed_s * 1000)
            else:
                failures.append(out.describe())

    await asyncio.gather(*(worker() for _ in range(opts.latency_concurrency)))
    if failures:
        raise Failed(
            f"{len(failures)} of {len(failures) + len(latencies)} calls failed, "
            f"first: {failures[0]}"
        )
    if len(latencies) < 20:
        raise Failed(f"only {len(latencies)} calls completed in {opts.latency_budget_s:.0f} s")
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    ev.append(
        f"{len(latencies)} calls at concurrency {opts.latency_concurrency}: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (bounds {opts.latency_p50_ms:.0f} / "
        f"{opts.latency_p99_ms:.0f} ms)"
    )
    if p50 > opts.latency_p50_ms or p99 > opts.latency_p99_ms:
        raise Failed(f"p50 {p50:.0f} ms / p99 {p99:.0f} ms exceed the bounds")
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(latencies)} calls"


async def _skew(s: Session, node: str) -> tuple[float, float]:
    """(server clock minus ours, round trip) in seconds, from GetNodeInfo.server_time."""
    before = dt.datetime.now(dt.UTC)
    info = await s.node_info(node)
    after = dt.datetime.now(dt.UTC)
    if not info.HasField("server_time"):
        raise Failed(f"the {node}'s GetNodeInfo carries no server_time")
    midpoint = before + (after - before) / 2
    server = info.server_time.ToDatetime(tzinfo=dt.UTC)
    return (server - midpoint).total_seconds(), (after - before).total_seconds()


@case(
    CASES,
    "CONN-09",
    "Clock skew",
    article="第三十九条",
    checks=(
        "The target's clock (GetNodeInfo.server_time) is within the allowed skew of the "
        "tester's and of the province's: audit times and signed assertions depend on it."
    ),
)
async def clock_skew(s: Session, ev: list[str]) -> str:
    target, rtt_t = await _skew(s, "target")
    province, rtt_p = await _skew(s, "province")
    ev.append(
        f"target {target * 1000:+.0f} ms (round trip {rtt_t * 1000:.0f} ms), "
        f"province {province * 1000:+.0f} ms (round trip {rtt_p * 1000:.0f} ms)"
    )
    limit = s.options.max_clock_skew_s
    between = target - province
    if abs(target) > limit + rtt_t / 2:
        raise Failed(f"the target's clock is {target:+.1f} s off the tester's (limit {limit} s)")
    if abs(between) > limit + (rtt_t + rtt_p) / 2:
        raise Failed(f"the target's clock is {between:+.1f} s off the province's (limit {limit} s)")
    return f"target {target * 1000:+.0f} ms, target - province {between * 1000:+.0f} ms"


@case(
    CASES,
    "CONN-10",
    "TLS 1.3 offered",
    article=ARTICLE,
    mandatory=False,
    checks="A client offering TLS 1.3 gets TLS 1.3 (recommended; TLS 1.2 remains acceptable).",
)
async def tls13(s: Session, ev: list[str]) -> str:
    files = s.bundle.files
    out = await asyncio.to_thread(
        tls_probe, s.options.target, root=files.root, cert=files.chain, key=files.key
    )
    ev.append(f"negotiated {out.version or 'nothing'}")
    if out.version != "TLSv1.3":
        raise Failed(f"the target negotiated {out.version or 'nothing'}, not TLS 1.3")
    return "TLS 1.3"


@case(
    CASES,
    CLEANUP_ID,
    "Probes clean up after themselves",
    article=ARTICLE,
    checks=(
        "Every probe entry the run registered is withdrawn (its records stay with it, marked "
        "by the probe entry, never served again), the withdrawal of the province's probe reaches "
        "the target, and the target's active catalog is as the run found it."
    ),
)
async def cleanup(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    ev.extend(await s.cleanup())
    for code in probes.target.values():
        if await _wait_for(s, "target", code, withdrawn=True) is None:
            raise Failed(f"probe resource {code} is not withdrawn at the target")
    for code in probes.province.values():
        if await _wait_for(s, "target", code, withdrawn=True) is None:
            raise Failed(f"the withdrawal of the province's probe {code} did not reach the target")
    try:
        now_active = await s.active_codes("target")
    except SetupFailed as exc:
        raise Failed(str(exc)) from None
    left = sorted(now_active - probes.found_active)
    gone = sorted(probes.found_active - now_active)
    if any(code in left for code in [*probes.target.values(), *probes.province.values()]):
        raise Failed(f"probe resources are still active at the target: {', '.join(left)}")
    ev.append(f"{len(probes.found_active)} active resources before, {len(now_active)} after")
    if gone:
        ev.append(f"note: {len(gone)} resources were withdrawn by others during the run")
    return f"{len(probes.target) + len(probes.province)} probe entries withdrawn"


_ = identity_of  # re-exported for cases that name the peer
