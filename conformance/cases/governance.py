"""Governance cases (SEC-15..18): grants bound what a grantee sees and how long (第二十五条,
第三十七条), and Verify is rate-limited against use as an oracle.

The tester manages its probes end to end: it applies for the 有条件共享 probe, reviews its own
application (a node lets testers review and revoke only on probe resources) and uses the
grant, so the cases need no authority at the target.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import access_pb2, common_pb2, sharing_pb2
from grpc_health.v1 import health_pb2

from conformance.cases import Case, Failed, case
from conformance.probes import probe_entry
from conformance.session import Session, SetupFailed, rpc

CASES: list[Case] = []
RETRY_AFTER_KEY = "retry-after-ms"
GRANTED_ITEMS = ("probe_key", "xm")


def _ts(when: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def _grant(
    s: Session,
    *,
    items: tuple[str, ...],
    methods: tuple[common_pb2.ShareMethod.ValueType, ...],
    lasting: dt.timedelta,
) -> tuple[str, dt.datetime]:
    """Apply for the 有条件共享 probe and approve it (narrowed to ``items``/``methods``);
    returns the grant id and its end."""
    probes = await s.probes()
    code = probes.target["conditional"]
    not_after = dt.datetime.now(dt.UTC) + lasting
    applied = await s.call(
        "target",
        rpc("AccessService", "Apply"),
        access_pb2.ApplyRequest(
            resource_code=code,
            items=["probe_key", "xm", "sfzhm", "sjhm"],
            share_methods=[common_pb2.SHARE_METHOD_QUERY, common_pb2.SHARE_METHOD_VERIFY],
            purpose="符合性测试 (conformance run)",
            legal_basis="第三十一条",
            not_after=_ts(not_after),
            request_id=s.new_request_id(),
        ),
        access_pb2.ApplyResponse,
    )
    if not applied.ok:
        raise SetupFailed(f"applying for the 有条件共享 probe failed: {applied.describe()}")
    reviewed = await s.call(
        "target",
        rpc("AccessService", "ReviewApplication"),
        access_pb2.ReviewApplicationRequest(
            application_id=applied.response.application.id,
            decision=common_pb2.REVIEW_DECISION_APPROVE,
            items=list(items),
            share_methods=list(methods),
            comment="conformance probe grant",
            request_id=s.new_request_id(),
        ),
        access_pb2.ReviewApplicationResponse,
    )
    if not reviewed.ok:
        raise SetupFailed(f"approving the probe application failed: {reviewed.describe()}")
    grant_id: str = reviewed.response.grant.id
    return grant_id, not_after


async def _query(s: Session, items: tuple[str, ...] = ()) -> sharing_pb2.QueryResponse | str:
    """Query the 有条件共享 probe by its key: the response, or the refusal as text."""
    probes = await s.probes()
    assert probes.record is not None
    out = await s.call(
        "target",
        rpc("SharingService", "Query"),
        sharing_pb2.QueryRequest(
            resource_code=probes.target["conditional"],
            key={"probe_key": probes.record.key},
            items=list(items),
        ),
        sharing_pb2.QueryResponse,
    )
    if out.ok:
        response: sharing_pb2.QueryResponse = out.response
        return response
    if out.code is not grpc.StatusCode.PERMISSION_DENIED:
        raise Failed(f"Query got {out.describe()}, expected OK or PERMISSION_DENIED")
    return out.describe()


@case(
    CASES,
    "SEC-15",
    "A grant bounds the items and methods",
    article="第二十五条, 第三十七条",
    checks=(
        "Under a grant narrowed to two items and Query only, Query returns just those items "
        "(sensitive ones masked), asking for an ungranted item and using Verify are refused "
        "with PERMISSION_DENIED (越权使用)."
    ),
)
async def grant_scope(s: Session, ev: list[str]) -> str:
    grant_id, _ = await _grant(
        s,
        items=GRANTED_ITEMS,
        methods=(common_pb2.SHARE_METHOD_QUERY,),
        lasting=dt.timedelta(minutes=10),
    )
    ev.append(f"grant {grant_id}: items {', '.join(GRANTED_ITEMS)}, Query only")
    try:
        return await _check_scope(s, ev)
    finally:  # the next cases must not find this grant still in force
        await _revoke(s, grant_id, "conformance: scope check done")


async def _revoke(s: Session, grant_id: str, reason: str) -> str:
    out = await s.call(
        "target",
        rpc("AccessService", "RevokeGrant"),
        access_pb2.RevokeGrantRequest(
            grant_id=grant_id, reason=reason, request_id=s.new_request_id()
        ),
        access_pb2.RevokeGrantResponse,
    )
    return out.describe()


async def _check_scope(s: Session, ev: list[str]) -> str:
    got = await _query(s)
    if isinstance(got, str):
        raise Failed(f"Query under the grant was refused: {got}")
    if len(got.rows) != 1:
        raise Failed(f"Query under the grant returned {len(got.rows)} rows, not 1")
    values = dict(got.rows[0].record.values)
    ev.append(f"Query returned items {sorted(values)}")
    extra = sorted(set(values) - set(GRANTED_ITEMS))
    if extra:
        raise Failed(f"items outside the grant were returned: {', '.join(extra)}")
    probes = await s.probes()
    assert probes.record is not None
    if values.get("xm") == probes.record.name:
        raise Failed("the name came back in clear although the grant has no clear-text items")
    refused = await _query(s, ("sfzhm",))
    ev.append(f"Query for sfzhm (not granted): {refused if isinstance(refused, str) else 'OK'}")
    if not isinstance(refused, str):
        raise Failed("Query for an item outside the grant was answered")
    verify = await s.call(
        "target",
        rpc("SharingService", "Verify"),
        sharing_pb2.VerifyRequest(
            resource_code=probes.target["conditional"],
            key={"probe_key": probes.record.key},
            claimed={"xm": probes.record.name},
        ),
        sharing_pb2.VerifyResponse,
    )
    ev.append(f"Verify (method not granted): {verify.describe()}")
    if verify.code is not grpc.StatusCode.PERMISSION_DENIED:
        raise Failed(f"Verify outside the grant's methods got {verify.code.name}")
    return "only granted items, masked; other items and methods refused"


@case(
    CASES,
    "SEC-16",
    "A revoked grant stops the next call",
    article="第二十五条, 第三十七条",
    checks="After RevokeGrant, the grantee's next Query is refused with PERMISSION_DENIED.",
)
async def grant_revocation(s: Session, ev: list[str]) -> str:
    grant_id, _ = await _grant(
        s,
        items=GRANTED_ITEMS,
        methods=(common_pb2.SHARE_METHOD_QUERY,),
        lasting=dt.timedelta(minutes=10),
    )
    before = await _query(s)
    if isinstance(before, str):
        raise Failed(f"Query under a fresh grant was refused: {before}")
    revoked = await _revoke(s, grant_id, "conformance: revocation check")
    if revoked != "OK":
        raise SetupFailed(f"revoking the probe grant failed: {revoked}")
    after = await _query(s)
    ev.append(f"before revocation: OK; after: {after if isinstance(after, str) else 'OK'}")
    if not isinstance(after, str):
        raise Failed(f"Query under revoked grant {grant_id} was still answered")
    return "refused on the next call"


@case(
    CASES,
    "SEC-17",
    "An expired grant stops",
    article="第二十五条, 第三十七条",
    checks=(
        "A grant that ends a few seconds after approval serves Query until then and refuses it "
        "with PERMISSION_DENIED once it has ended (polled, bounded)."
    ),
)
async def grant_expiry(s: Session, ev: list[str]) -> str:
    lasting = dt.timedelta(seconds=6)
    grant_id, not_after = await _grant(
        s, items=GRANTED_ITEMS, methods=(common_pb2.SHARE_METHOD_QUERY,), lasting=lasting
    )
    before = await _query(s)
    if isinstance(before, str):
        raise Failed(f"Query under a grant still in force was refused: {before}")
    limit = time.monotonic() + lasting.total_seconds() + 2 * s.options.max_clock_skew_s + 5
    while time.monotonic() < limit:
        got = await _query(s)
        if isinstance(got, str):
            late = (dt.datetime.now(dt.UTC) - not_after).total_seconds()
            ev.append(f"refused {late:+.1f} s after the grant's end: {got}")
            if late < -s.options.max_clock_skew_s:
                raise Failed(f"grant {grant_id} was refused {-late:.1f} s before it ended")
            return f"refused {late:+.1f} s after its end"
        await asyncio.sleep(0.5)
    raise Failed(f"grant {grant_id} still served Query well after it ended")


@case(
    CASES,
    "SEC-18",
    "Verify is rate-limited",
    article="第三十七条",
    checks=(
        "A burst of Verify calls on one sensitive resource beyond the per-minute limit "
        "(--verify-per-minute, the platform default 600) gets RESOURCE_EXHAUSTED with "
        "retry-after-ms, never more successes than the limit allows; the target stays healthy."
    ),
)
async def verify_rate_limit(s: Session, ev: list[str]) -> str:
    probes = await s.probes()
    assert probes.record is not None
    region = probes.target["unconditional"][:6]
    code = await s.register_probe("target", probe_entry("unconditional", region, s.run_id))
    limit = s.options.verify_per_minute
    # Bounded in count (twice the limit, enough to outrun its refill even on a slow target),
    # in time (60 s), and it stops once the limit has clearly answered.
    cap = 2 * limit + 100
    request = sharing_pb2.VerifyRequest(
        resource_code=code, key={"probe_key": probes.record.key}, claimed={"bz": "x"}
    )
    ok = exhausted = 0
    retry_after: set[str] = set()
    other: list[str] = []
    began = time.monotonic()
    stop_at = began + 60.0
    remaining = cap

    async def worker() -> None:
        nonlocal ok, exhausted, remaining
        while remaining > 0 and exhausted < 10 and time.monotonic() < stop_at:
            remaining -= 1
            out = await s.call(
                "target", rpc("SharingService", "Verify"), request, sharing_pb2.VerifyResponse
            )
            if out.ok:
                ok += 1
            elif out.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                exhausted += 1
                if RETRY_AFTER_KEY in out.trailing:
                    retry_after.add(out.trailing[RETRY_AFTER_KEY])
            else:
                other.append(out.describe())

    await asyncio.gather(*(worker() for _ in range(16)))
    elapsed = time.monotonic() - began
    refill = math.ceil(elapsed * limit / 60) + 1
    ev.append(
        f"{cap - remaining} calls in {elapsed:.1f} s: {ok} OK, {exhausted} RESOURCE_EXHAUSTED, "
        f"{len(other)} other; retry-after-ms {sorted(retry_after)[:3]}"
    )
    if other:
        raise Failed(f"{len(other)} calls failed otherwise, first: {other[0]}")
    if not exhausted:
        raise Failed(
            f"{ok} Verify calls in {elapsed:.1f} s were all answered: no rate limit "
            f"at {limit} per minute (see --verify-per-minute)"
        )
    if ok > limit + refill:
        raise Failed(f"{ok} calls succeeded, more than the limit {limit} (+{refill} refilled)")
    if not retry_after:
        raise Failed("RESOURCE_EXHAUSTED came without retry-after-ms trailing metadata")
    health = await s.call(
        "target",
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest(),
        health_pb2.HealthCheckResponse,
        record=False,
    )
    if not health.ok:
        raise Failed(f"the target is not healthy after the burst: {health.describe()}")
    # A token bucket refills while the burst runs: say so, or "619 OK" at a limit of 600
    # reads like a leak.
    refilled = f", {ok - limit} of them refilled during the burst" if ok > limit else ""
    return (
        f"{ok} OK (limit {limit} per minute{refilled}) then RESOURCE_EXHAUSTED with retry-after-ms"
    )
