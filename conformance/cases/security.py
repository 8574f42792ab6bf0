"""Security cases (SEC-nn): who may connect, what is refused, and what is recorded.

Identity refusals (no certificate, unknown CA, expired, outside its CA's region) must happen in
the TLS handshake: an unauthenticated or misidentified party never reaches HTTP/2. A revoked
certificate may be refused in the handshake or on every call (revocation is usually checked
per call). Sharing refusals are checked on probe resources the run registers itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import tempfile
import time
from pathlib import Path

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from govnode.v1 import audit_pb2, catalog_pb2, common_pb2, federation_pb2, sharing_pb2
from grpc_health.v1 import health_pb2

from conformance.cases import Case, Failed, NotRunnable, case
from conformance.probes import CLEAR_ITEMS, MASKED_ITEMS, probe_provider_code
from conformance.session import Session, rpc
from conformance.wire import TlsOutcome, plaintext_probe, tls_probe
from gateway.assertion import ASSERTION_KEY, make_assertion
from gateway.channel import secure_channel
from gateway.identity import Role, make_identity
from gateway.tls import TlsFiles

CASES: list[Case] = []
AUDIT_ID = "SEC-12"
ARTICLE = "第三十一条, 第三十七条"
REFUSED_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_REVOCATION_POLL_S = 0.5  # how often SEC-04 asks whether a revocation reached the target


async def _control(s: Session) -> None:
    """The positive control of every refusal case: the same target accepts the tester's valid
    certificate. Without it, an unreachable or broken target would pass every refusal."""
    if s.control is None:
        files = s.bundle.files
        s.control = await asyncio.to_thread(
            tls_probe, s.options.target, root=files.root, cert=files.chain, key=files.key
        )
    if not s.control.served_http2:
        raise Failed(
            "the target does not accept the tester's valid certificate either, so a refusal "
            f"would prove nothing: {s.control.error}"
        )


async def _handshake_refused(
    s: Session, ev: list[str], what: str, cert: Path | None, key: Path | None
) -> str:
    await _control(s)
    out: TlsOutcome = await asyncio.to_thread(
        tls_probe, s.options.target, root=s.bundle.files.root, cert=cert, key=key
    )
    ev.append(
        f"handshake {'completed' if out.handshake_ok else 'failed'}; "
        f"HTTP/2 {'served' if out.served_http2 else 'not served'}; {out.error or ''}"
    )
    if out.served_http2:
        raise Failed(f"the target accepted a TLS connection with {what} and spoke HTTP/2 on it")
    return f"{what}: refused in the TLS handshake"


@case(
    CASES,
    "SEC-01",
    "No client certificate is refused",
    article=ARTICLE,
    checks="A TLS client presenting no certificate is refused in the handshake.",
)
async def no_certificate(s: Session, ev: list[str]) -> str:
    return await _handshake_refused(s, ev, "no client certificate", None, None)


def _foreign_bundle(directory: Path, s: Session) -> tuple[Path, Path]:
    """A CA nobody trusts and a leaf with a plausible identity, written to ``directory``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conformance foreign CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    identity = s.bundle.identity
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foreign tester")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "foreign.crt", directory / "foreign.key"
    pem = serialization.Encoding.PEM
    cert_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@case(
    CASES,
    "SEC-02",
    "A certificate from an unknown CA is refused",
    article=ARTICLE,
    checks=(
        "A client certificate with the tester's own identity but issued by a CA outside the "
        "province's PKI is refused in the handshake."
    ),
)
async def unknown_ca(s: Session, ev: list[str]) -> str:
    with tempfile.TemporaryDirectory(prefix="govnode-conformance-") as tmp:
        cert, key = _foreign_bundle(Path(tmp), s)
        return await _handshake_refused(s, ev, "a certificate from an unknown CA", cert, key)


@case(
    CASES,
    "SEC-03",
    "An expired certificate is refused",
    article=ARTICLE,
    checks="A tester certificate from the province's CA whose validity has ended is refused in "
    "the handshake.",
)
async def expired(s: Session, ev: list[str]) -> str:
    cert, key = s.bundle.negative("expired")
    return await _handshake_refused(s, ev, "an expired certificate", cert, key)


async def _serves_node_info(s: Session, files: TlsFiles) -> bool:
    """Whether the target answers GetNodeInfo to ``files`` right now (a fresh connection)."""
    async with secure_channel(s.options.target, files, timeout=s.options.call_timeout_s) as ch:
        call = ch.unary_unary(
            rpc("FederationService", "GetNodeInfo"),
            request_serializer=federation_pb2.GetNodeInfoRequest.SerializeToString,
            response_deserializer=federation_pb2.GetNodeInfoResponse.FromString,
        )
        try:
            await call(federation_pb2.GetNodeInfoRequest(), timeout=s.options.call_timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return True


async def _until_revoked(s: Session, ev: list[str], files: TlsFiles) -> float | None:
    """Wait (bounded by --revocation-timeout) until the target stops serving the revoked
    certificate; the seconds waited, or None when it refused at once.

    The province revoked the certificate when it issued the tester bundle, and a city learns
    the province's revocations on its heartbeat: a run started right after the bundle was
    issued can reach the target before the revocation does. That is propagation, not a
    defect, so the case waits a few heartbeats before judging; a target still serving the
    certificate after the bound fails.
    """
    bound = s.options.revocation_timeout_s
    began = time.monotonic()
    if not await _serves_node_info(s, files):
        return None
    serial = format(x509.load_pem_x509_certificates(files.chain.read_bytes())[0].serial_number, "x")
    line = (
        f"SEC-04: the target still serves the tester's revoked certificate {serial}; waiting up "
        f"to {bound:.0f} s (--revocation-timeout) for the province's revocation to reach it "
        "(a city learns revocations on its heartbeat)"
    )
    s.notice(line)
    ev.append(line)
    while (waited := time.monotonic() - began) < bound:
        await asyncio.sleep(min(_REVOCATION_POLL_S, bound - waited))
        if not await _serves_node_info(s, files):
            waited = time.monotonic() - began
            ev.append(f"the target refused it after {waited:.1f} s")
            return waited
    raise Failed(
        "the target served GetNodeInfo to a certificate the province revoked, still after "
        f"waiting {bound:.0f} s for the revocation to take effect (--revocation-timeout)"
    )


@case(
    CASES,
    "SEC-04",
    "A revoked certificate is refused",
    article=ARTICLE,
    checks=(
        "A tester certificate the province revoked is refused, in the handshake or with "
        "UNAUTHENTICATED / PERMISSION_DENIED on every call. Revocations reach cities on their "
        "heartbeat: the case first waits (bounded, --revocation-timeout, 30 s by default) until "
        "the target stops serving the certificate."
    ),
    waits_for_revocation=True,
)
async def revoked(s: Session, ev: list[str]) -> str:
    cert, key = s.bundle.negative("revoked")
    await _control(s)
    files = TlsFiles(key, cert, s.bundle.files.root)
    waited = await _until_revoked(s, ev, files)
    after = "" if waited is None else f", after waiting {waited:.1f} s for the revocation"
    out = await asyncio.to_thread(
        tls_probe, s.options.target, root=s.bundle.files.root, cert=cert, key=key
    )
    if not out.served_http2:
        ev.append(f"refused in the handshake: {out.error}")
        return f"refused in the TLS handshake{after}"
    async with secure_channel(s.options.target, files, timeout=s.options.call_timeout_s) as ch:
        for method, request, response in (
            (
                rpc("FederationService", "GetNodeInfo"),
                federation_pb2.GetNodeInfoRequest(),
                federation_pb2.GetNodeInfoResponse,
            ),
            (
                "/grpc.health.v1.Health/Check",
                health_pb2.HealthCheckRequest(),
                health_pb2.HealthCheckResponse,
            ),
        ):
            call = ch.unary_unary(
                method,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )
            try:
                await call(request, timeout=s.options.call_timeout_s)
            except grpc.aio.AioRpcError as exc:
                ev.append(f"{method}: {exc.code().name}: {exc.details()}")
                if exc.code() not in (*REFUSED_CODES, grpc.StatusCode.UNAVAILABLE):
                    raise Failed(f"{method} answered {exc.code().name}, not a refusal") from None
                continue
            if method.startswith("/govnode"):
                raise Failed(f"the target served {method} to a certificate the province revoked")
            ev.append(f"{method}: answered (health is not an authorised call)")
    return f"refused on every call{after}"


@case(
    CASES,
    "SEC-05",
    "Another region's identity is refused",
    article="第十九条, 第三十一条",
    checks=(
        "A certificate whose identity names a region its issuing CA may not vouch for (outside "
        "the CA's name constraints) is refused in the handshake."
    ),
)
async def wrong_region(s: Session, ev: list[str]) -> str:
    cert, key = s.bundle.negative("wrong-region")
    return await _handshake_refused(s, ev, "another region's identity", cert, key)


@case(
    CASES,
    "SEC-06",
    "TLS below 1.2 is refused",
    article=ARTICLE,
    checks="A client offering only TLS 1.0 and 1.1 (with a valid certificate) is refused.",
)
async def old_tls(s: Session, ev: list[str]) -> str:
    files = s.bundle.files
    await _control(s)
    out = await asyncio.to_thread(
        tls_probe,
        s.options.target,
        root=None,
        cert=files.chain,
        key=files.key,
        max_version=ssl.TLSVersion.TLSv1_1,
    )
    if "NO_PROTOCOLS_AVAILABLE" in out.error.upper():
        raise NotRunnable("this machine's TLS library cannot offer TLS 1.1")
    ev.append(
        f"handshake {'completed with ' + out.version if out.handshake_ok else 'failed'}; "
        f"{out.error}"
    )
    if out.handshake_ok and out.version in ("TLSv1", "TLSv1.1"):
        raise Failed(f"the target completed a {out.version} handshake")
    return "TLS 1.0/1.1 refused"


@case(
    CASES,
    "SEC-07",
    "Plaintext is refused",
    article=ARTICLE,
    checks="HTTP/2 and gRPC without TLS get no answer.",
)
async def plaintext(s: Session, ev: list[str]) -> str:
    await _control(s)
    served, what = await asyncio.to_thread(plaintext_probe, s.options.target)
    ev.append(what)
    if served:
        raise Failed("the target speaks HTTP/2 in plaintext")
    async with grpc.aio.insecure_channel(s.options.target) as ch:
        check = ch.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            await check(health_pb2.HealthCheckRequest(), timeout=s.options.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            ev.append(f"plaintext gRPC health check: {exc.code().name}")
            if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                raise Failed(
                    f"a plaintext gRPC call got a gRPC answer ({exc.code().name})"
                ) from None
            return "no plaintext HTTP/2 or gRPC"
    raise Failed("a plaintext gRPC health check was answered")


@case(
    CASES,
    "SEC-08",
    "A forged caller assertion is refused",
    article="第二十六条, 第三十七条",
    checks=(
        "Verify carrying a caller assertion that no node signed (one signed with the tester's "
        "own key, and one that is garbage) is refused with UNAUTHENTICATED or PERMISSION_DENIED."
    ),
)
async def forged_assertion(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    record = probes.record
    assert record is not None
    code = probes.target["unconditional"]
    request = sharing_pb2.VerifyRequest(
        resource_code=code, key={"probe_key": record.key}, claimed={"xm": record.name}
    )
    region = code[:6]
    # Claim to be the probe's own provider: accepted, it would be served anything.
    claimed_caller = make_identity(
        region, s.bundle.identity.trust_domain, Role.AGENCY, probe_provider_code(region)
    )
    key = serialization.load_pem_private_key(s.bundle.files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    forged = make_assertion(
        caller=claimed_caller,
        node_key=key,
        node_chain=s.bundle.chain,
        resource_code=code,
        request_bytes=request.SerializeToString(),
        deadline=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
        request_id=s.new_request_id(),
    )
    for label, blob in (
        ("signed by the tester, not a node", forged),
        ("garbage", b"\x0a\x04junk\x12\x02no"),
    ):
        out = await s.call(
            "target",
            rpc("SharingService", "Verify"),
            request,
            sharing_pb2.VerifyResponse,
            metadata=((ASSERTION_KEY, blob),),
        )
        ev.append(f"assertion {label}: {out.describe()}")
        if out.code not in REFUSED_CODES:
            raise Failed(f"a forged assertion ({label}) was answered {out.code.name}")
    return "both forged assertions refused"


async def _refused_everywhere(s: Session, ev: list[str], code: str, what: str) -> None:
    probes = await s.probes()
    record = probes.record
    assert record is not None
    calls = [
        (
            "target",
            "Verify",
            sharing_pb2.VerifyRequest(
                resource_code=code, key={"probe_key": record.key}, claimed={"xm": record.name}
            ),
            sharing_pb2.VerifyResponse,
        ),
        (
            "target",
            "Query",
            sharing_pb2.QueryRequest(resource_code=code, key={"probe_key": record.key}),
            sharing_pb2.QueryResponse,
        ),
        (
            "province",
            "Verify",
            sharing_pb2.VerifyRequest(
                resource_code=code, key={"probe_key": record.key}, claimed={"xm": record.name}
            ),
            sharing_pb2.VerifyResponse,
        ),
    ]
    for node, method, request, response in calls:
        out = await s.call(node, rpc("SharingService", method), request, response)
        ev.append(f"{method} at the {node}: {out.describe()}")
        if out.ok:
            raise Failed(
                f"{what} resource {code} was served to the tester by {method} (at the {node})"
            )
        if node == "target" and out.code is not grpc.StatusCode.PERMISSION_DENIED:
            raise Failed(
                f"{method} on {what} resource {code} got {out.code.name}, "
                "expected PERMISSION_DENIED"
            )


@case(
    CASES,
    "SEC-09",
    "暂不共享 is never served to others",
    article="第二十四条",
    checks=(
        "Verify and Query on a 暂不共享 probe resource holding a record are refused with "
        "PERMISSION_DENIED, directly and routed through the province."
    ),
)
async def not_shared(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    await _refused_everywhere(s, ev, probes.target["not_shared"], "暂不共享")
    return "refused directly and through the province"


@case(
    CASES,
    "SEC-10",
    "有条件共享 is refused without a grant",
    article="第二十五条",
    checks=(
        "Verify and Query on a 有条件共享 probe resource holding a record are refused with "
        "PERMISSION_DENIED when the caller has no grant, directly and through the province."
    ),
)
async def conditional(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    await _refused_everywhere(s, ev, probes.target["conditional"], "有条件共享")
    return "refused without a grant"


@case(
    CASES,
    "SEC-11",
    "Sensitive items are masked",
    article="第二十九条, 第三十七条",
    checks=(
        "Query on the 无条件共享 probe returns the citizen id, name and phone masked by their "
        "rules (the hidden part absent) and the clear items unchanged."
    ),
)
async def masking(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    record = probes.record
    assert record is not None
    out = await s.call(
        "target",
        rpc("SharingService", "Query"),
        sharing_pb2.QueryRequest(
            resource_code=probes.target["unconditional"], key={"probe_key": record.key}
        ),
        sharing_pb2.QueryResponse,
    )
    if not out.ok:
        raise Failed(f"Query on the 无条件共享 probe failed: {out.describe()}")
    if len(out.response.rows) != 1:
        raise Failed(f"Query returned {len(out.response.rows)} rows for the probe key, not 1")
    got = dict(out.response.rows[0].record.values)
    sent = record.values()
    rules = {"sfzhm": (6, 4), "xm": (1, 0), "sjhm": (3, 4)}
    for item in MASKED_ITEMS:
        value, clear = got.get(item, ""), sent[item]
        first, last = rules[item]
        hidden = clear[first : len(clear) - last]
        ev.append(f"{item}: sent {len(clear)} characters, got {value!r}")
        if not value or value == clear or hidden in value:
            raise Failed(f"item {item} is not masked: {value!r}")
        if value[:first] != clear[:first] or (last and value[-last:] != clear[-last:]):
            raise Failed(
                f"item {item} is not masked by its rule (keep {first} + {last}): {value!r}"
            )
    for item in CLEAR_ITEMS:
        if got.get(item) != sent[item]:
            raise Failed(f"clear item {item} came back as {got.get(item)!r}, not as submitted")
    return f"{', '.join(MASKED_ITEMS)} masked; {', '.join(CLEAR_ITEMS)} clear"


@case(
    CASES,
    "SEC-13",
    "Oversized messages are refused",
    article=ARTICLE,
    checks=(
        "A request larger than the message limit is refused with RESOURCE_EXHAUSTED, and the "
        "target is healthy and answers afterwards."
    ),
)
async def oversized(s: Session, ev: list[str]) -> str:
    size = s.options.max_message_bytes + 64 * 1024
    # A call that carries bulk data (a catalog entry): a target may well refuse far smaller
    # requests of the other calls (govnode: 256 KiB), which says nothing about its limit.
    request = catalog_pb2.RegisterResourceRequest(
        entry=common_pb2.ResourceEntry(resource_code="350000-3-000000", summary="x" * size)
    )
    out = await s.call(
        "target",
        rpc("CatalogService", "RegisterResource"),
        request,
        catalog_pb2.RegisterResourceResponse,
        record=False,
    )
    ev.append(f"{size} bytes: {out.describe()}")
    if out.code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        raise Failed(f"a {size}-byte request got {out.code.name}, expected RESOURCE_EXHAUSTED")
    await _still_healthy(s, ev)
    return f"{size}-byte request refused; still healthy"


@case(
    CASES,
    "SEC-14",
    "Malformed messages are refused",
    article=ARTICLE,
    checks=(
        "Bytes that are not a valid request message get INVALID_ARGUMENT (not INTERNAL or a "
        "crash), and the target is healthy and answers afterwards."
    ),
)
async def malformed(s: Session, ev: list[str]) -> str:
    for label, raw in (("a truncated field", b"\x0a\x20short"), ("an invalid tag", b"\xff" * 12)):
        out = await s.call(
            "target",
            rpc("SharingService", "Verify"),
            sharing_pb2.VerifyRequest(),
            sharing_pb2.VerifyResponse,
            raw=raw,
        )
        ev.append(f"{label}: {out.describe()}")
        if out.code is not grpc.StatusCode.INVALID_ARGUMENT:
            raise Failed(f"{label} got {out.code.name}, expected INVALID_ARGUMENT")
    await _still_healthy(s, ev)
    return "INVALID_ARGUMENT; still healthy"


async def _still_healthy(s: Session, ev: list[str]) -> None:
    health = await s.call(
        "target",
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest(),
        health_pb2.HealthCheckResponse,
        record=False,
    )
    if not health.ok or health.response.status != health_pb2.HealthCheckResponse.SERVING:
        raise Failed(f"the target is not healthy afterwards: {health.describe()}")
    info = await s.call(
        "target",
        rpc("FederationService", "GetNodeInfo"),
        federation_pb2.GetNodeInfoRequest(),
        federation_pb2.GetNodeInfoResponse,
    )
    if not info.ok:
        raise Failed(f"the target does not answer afterwards: {info.describe()}")
    ev.append("afterwards: SERVING, GetNodeInfo OK")


@case(
    CASES,
    AUDIT_ID,
    "Every probe call is in the target's audit log",
    article="第三十九条",
    checks=(
        "Every call this run made to the target with the tester certificate, accepted or "
        "refused, and every call routed to it through the province, is in the target's audit "
        "log (AuditService.QueryAudit) under its request id, with the tester as caller, the "
        "right method and outcome, and the province as origin of routed calls."
    ),
)
async def audit_complete(s: Session, ev: list[str]) -> str:
    wanted = {c.request_id: c for c in s.calls}
    if not wanted:
        await s.probes()
        wanted = {c.request_id: c for c in s.calls}
    seen: dict[str, audit_pb2.AuditRecord] = {}
    request = audit_pb2.QueryAuditRequest(caller_identity=s.bundle.identity.uri, page_size=1000)
    request.start_time.FromDatetime(s.started_at - dt.timedelta(seconds=5))
    for _ in range(100):  # bounded: 100 pages of 1000
        out = await s.call(
            "target",
            rpc("AuditService", "QueryAudit"),
            request,
            audit_pb2.QueryAuditResponse,
            record=False,
        )
        if not out.ok:
            raise Failed(f"QueryAudit at the target failed: {out.describe()}")
        for r in out.response.records:
            if r.request_id in wanted:
                seen[r.request_id] = r
        if not out.response.next_page_token:
            break
        request.page_token = out.response.next_page_token
    problems = []
    for request_id, call in wanted.items():
        record = seen.get(request_id)
        if record is None:
            if call.routed and call.outcome != "OK":
                continue  # refused before it was forwarded: the province's log has it
            problems.append(f"{call.method} {request_id} is missing")
            continue
        if record.caller_identity != s.bundle.identity.uri:
            problems.append(f"{request_id} names caller {record.caller_identity!r}")
        if record.rpc_method and record.rpc_method != call.method:
            problems.append(f"{request_id} names method {record.rpc_method}, not {call.method}")
        if record.outcome != call.outcome:
            problems.append(f"{request_id} records {record.outcome}, the call got {call.outcome}")
        if call.routed and s.province_identity and record.origin_node != s.province_identity:
            problems.append(f"routed {request_id} names origin {record.origin_node!r}")
    ev.append(f"{len(wanted)} calls made, {len(seen)} found in the target's audit log")
    if problems:
        ev.extend(problems[:20])
        raise Failed(f"{len(problems)} audit problem(s), first: {problems[0]}")
    return f"all {len(seen)} calls recorded with the tester as caller"
