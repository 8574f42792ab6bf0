"""The guard every call passes through before it reaches a servicer.

For each RPC, whatever its streaming shape, the guard:

1. authenticates the caller from the verified TLS peer (UNAUTHENTICATED otherwise), except
   for the methods in :data:`TOKEN_AUTHORISED_METHODS` (only Join), authorised by a token; a
   guard with a limiter (the join port's: its callers have no certificate) first admits the
   call by the caller's network address (RESOURCE_EXHAUSTED with retry-after-ms otherwise);
   then refuses a caller whose role may not call the method at all (PERMISSION_DENIED:
   gateway.roles, e.g. the portal);
2. parses request messages itself, so that bytes which are not a valid message get
   INVALID_ARGUMENT naming the method, rather than gRPC's generic INTERNAL (and so does text
   holding U+0000, naming the field: gateway.wellformed); before parsing, checks the method's
   size limit and counts the entries of large messages' maps (with
   :class:`~gateway.request_limits.RequestChecks`: the parser takes seconds over some maps);
3. binds the caller and a request id to the context for the servicer (and names them in
   every log event it writes), in the call's trace span (gateway.tracing: continuing the
   caller's W3C trace context, ended after the audit record, naming the final status);
4. turns any unexpected exception into INTERNAL with the request id, never a stack trace,
   unless the node's ``translate`` knows it (a fault of the node's database is UNAVAILABLE);
5. hands every outcome, accepted or refused, to the audit sink and waits until it is durable
   before the response or status leaves the node;
6. for streaming calls (with a :class:`~gateway.streams.StreamGate`): admits them within the
   caps on open streams, writes each response message itself, in its caller's turn, ends
   a stream whose consumer stops reading, and ends waiting streams when the node stops (see
   gateway.streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import structlog

from gateway.assertion import ASSERTION_KEY, AssertionVerifier, UntrustedAssertion
from gateway.audit import UNAUDITED_PREFIXES, AuditSink, CallRecord, bounded
from gateway.auth import (
    AuthenticationError,
    Authenticator,
    Forwarded,
    Peer,
    reset_current_forwarded,
    reset_current_peer,
    set_current_forwarded,
    set_current_peer,
)
from gateway.identity import Role
from gateway.metrics import GrpcMetrics, GrpcType, MethodMetrics, metered
from gateway.quote import clip_message
from gateway.ratelimit import Admission, AnonymousLimiter, address_of
from gateway.refusal import Refusal, retry_after
from gateway.request_limits import Check, RequestChecks
from gateway.roles import method_refusal
from gateway.streams import Slot, Stalled, Stopping, StreamGate
from gateway.tracing import ServerSpan, Tracing
from gateway.wellformed import nul_field

log = structlog.get_logger("govnode.gateway")

REQUEST_ID_KEY = "govnode-request-id"

#: The standard gRPC health service (grpc.health.v1), served on every node.
HEALTH_PREFIX = "/grpc.health.v1.Health/"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("govnode_request_id", default="")
_detail: contextvars.ContextVar[dict[str, str | int] | None] = contextvars.ContextVar(
    "govnode_audit_detail", default=None
)

Context = grpc.aio.ServicerContext[Any, Any]

#: The node's own mapping of exceptions the guard does not know to a refusal, or None for a bug
#: (INTERNAL). It covers what fails outside the servicers' mapping: the caller's revocation
#: check, a forwarded call's assertion nonce, an audit record a servicer writes itself.
Translate = Callable[[Exception], Refusal | None]

#: The only methods the guard lets through WITHOUT a verified client certificate: a city that
#: joins has no certificate yet, so FederationService/Join is authorised by the one-time
#: invitation token in the request, checked by its servicer. The call still gets a request id
#: and is audited (caller "joining:<region from the request>"); no peer is bound, so
#: ``current_peer()`` raises inside it. Every other method requires the client certificate,
#: on every port: on the province's join port (no client certificate) they get UNAUTHENTICATED.
TOKEN_AUTHORISED_METHODS: frozenset[str] = frozenset({"/govnode.v1.FederationService/Join"})

#: The calls a node may forward for a caller, with a signed caller assertion
#: (gateway.assertion): the owning node then authorises the original caller, never the
#: forwarding node. A node calling these WITHOUT an assertion is refused: nodes call on behalf
#: of someone or not at all. Every other method refuses an assertion. Applications live at the
#: node owning the resource (第二十五条): Apply is routed by its resource, and the calls naming
#: an application or grant by id by the region the id starts with. Exchange and Subscribe
#: (第二十六、二十七条) are routed streams: the assertion is checked once, when they start.
#: The province forwards the public's reads of an approved city's open data (第三十一条) to
#: the city: a dataset's page, its download and its rows. Error reports (纠错, 第十六条) live at
#: the node owning the record: ReportDataError is routed by its resource, GetDataError and
#: ResolveDataError by the region the report id starts with. The province asks a city for an
#: agency's compliance report (GetComplianceReport naming the city's region; province roll-up).
ROUTED_METHODS: frozenset[str] = frozenset(
    {
        "/govnode.v1.SharingService/Verify",
        "/govnode.v1.SharingService/Compare",
        "/govnode.v1.SharingService/Query",
        "/govnode.v1.SharingService/Exchange",
        "/govnode.v1.SharingService/Subscribe",
        "/govnode.v1.AccessService/Apply",
        "/govnode.v1.AccessService/GetApplication",
        "/govnode.v1.AccessService/WithdrawApplication",
        "/govnode.v1.AccessService/GetGrant",
        "/govnode.v1.OpenDataService/GetOpenResource",
        "/govnode.v1.OpenDataService/Download",
        "/govnode.v1.OpenDataService/QueryOpenRows",
        "/govnode.v1.QualityService/ReportDataError",
        "/govnode.v1.QualityService/GetDataError",
        "/govnode.v1.QualityService/ResolveDataError",
        "/govnode.v1.SupervisionService/GetComplianceReport",
    }
)


def current_request_id() -> str:
    return _request_id.get()


#: A request id a caller sends (``govnode-request-id``: a UUID, a forwarding node's id, an
#: SDK's one id for every attempt of a call) is kept when it is this short and printable ASCII
#: without spaces; any other gets a fresh one, since the id goes into the audit log and back
#: to the caller.
_REQUEST_ID_MAX = 128
_REQUEST_ID_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


def _request_id_of(context: Context) -> str:
    sent = _metadata_value(context, REQUEST_ID_KEY)
    if sent and len(sent) <= _REQUEST_ID_MAX and _REQUEST_ID_CHARS.issuperset(sent):
        return sent
    return os.urandom(16).hex()


def _request_id_metadata() -> tuple[tuple[str, str], ...]:
    """The call's request id as trailing metadata: every refusal carries it, so that a caller
    can name the call to the operator (the audit log and the node log file it under it)."""
    request_id = current_request_id()
    return ((REQUEST_ID_KEY, request_id),) if request_id else ()


def add_audit_detail(**facts: str | int) -> None:
    """Let a servicer attach small facts (counts, ids) to the call's audit record."""
    detail = _detail.get()
    if detail is not None:
        detail.update(facts)


def _metadata_value(context: Context, key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, str):
            return value
    return None


def _metadata_bytes(context: Context, key: str) -> bytes | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, bytes):
            return value
    return None


def _doing(slot: Slot | None, what: str) -> None:
    """Note what a counted stream's handler is doing (see Slot.doing)."""
    if slot is not None:
        slot.doing = what


class _BadMessage(Exception):
    pass


class _AuditFailed(Exception):
    """The audit sink could not record the call: the caller must not get its result."""


CANCELLED_MESSAGE = "the call ended early: cancelled by the caller, its deadline, or a shutdown"

AUDIT_FAILED_MESSAGE = (
    "the node could not record this call in its audit log (第三十九条), so it returns no "
    "result; try again later"
)


class _Call:
    """What the guard knows about one RPC while it runs."""

    def __init__(
        self, method: str, deserialize: Callable[[bytes], Any], check: Check | None = None
    ) -> None:
        self.method = method
        self.deserialize = deserialize
        self.check = check
        self.digest = hashlib.sha256()
        self.resource_code = ""
        self.peer: Peer | None = None
        #: A forwarded call: the forwarding node (audited as origin_node) and its assertion.
        self.origin_node = ""
        self.assertion: bytes | None = None
        self.forwarded_token: contextvars.Token[Forwarded | None] | None = None
        self.detail: dict[str, str | int] = {}
        self.tokens: list[Any] = []
        #: How the audit names a caller without a peer (see TOKEN_AUTHORISED_METHODS).
        self.anonymous_caller = "unauthenticated"
        #: The call's trace span (gateway.tracing), and its final status once known.
        self.span: ServerSpan | None = None
        self.code: grpc.StatusCode | None = None

    def parse(self, raw: bytes) -> Any:
        self.digest.update(raw)
        if self.check is not None:
            self.check(raw)  # the size limit, and the maps of a large message (Refusal)
        try:
            message = self.deserialize(raw)
        except Exception as exc:
            raise _BadMessage(
                f"{self.method}: the request is not a valid message for this method ({exc})"
            ) from None
        if (field := nul_field(message, raw)) is not None:
            raise _BadMessage(
                f"{field}: holds the character U+0000 (NUL), which no text may hold ({self.method})"
            )
        if not self.resource_code:
            self.resource_code = str(getattr(message, "resource_code", "") or "")
        if self.method in TOKEN_AUTHORISED_METHODS:
            region = str(getattr(message, "region", "") or "")
            self.anonymous_caller = f"joining:{region if region.isdigit() else '?'}"[:16]
        return message


class GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """``verifier`` checks the caller assertions of forwarded calls (see ROUTED_METHODS);
    without one, the node accepts no forwarded call. ``limiter`` admits every call by its
    network address before anything else (the join port's guard: see gateway.ratelimit).
    ``translate``: see :data:`Translate`. ``tracing``: the node's spans (gateway.tracing);
    None: tracing off (a caller's trace context is still passed on).

    One guard per server: it keeps each method's guarded handler, which is the server's own."""

    def __init__(
        self,
        authenticator: Authenticator,
        audit: AuditSink | None = None,
        verifier: AssertionVerifier | None = None,
        limiter: AnonymousLimiter | None = None,
        translate: Translate | None = None,
        streams: StreamGate | None = None,
        requests: RequestChecks | None = None,
        metrics: GrpcMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._auth = authenticator
        self._audit = audit
        self._verifier = verifier
        self._limiter = limiter
        self._translate = translate
        #: Caps, turns and stall timeouts of streaming calls; None: none of them.
        self.streams = streams
        #: Size limits and map-entry bounds of request messages; None: only the transport's.
        self.requests = requests
        #: The node's grpc_server_* series (gateway.metrics); None: calls are not counted.
        self.metrics = metrics
        self.tracing = tracing if tracing is not None else Tracing()
        # Method -> guarded handler. The server's handlers are fixed once it starts, so each
        # method's guard is built on its first call and reused (not rebuilt on every call).
        self._guarded: dict[str, Any] = {}
        self._inflight: set[asyncio.Task[Any]] = set()

    def instrument(self, metrics: GrpcMetrics | None, tracing: Tracing | None) -> None:
        """Count calls with ``metrics`` and trace them with ``tracing`` from the next call on
        (None: not counted; tracing off, a caller's context still passed on). Calls in
        progress finish as they began. bench.tracing_cost switches one node this way, so that
        instrumented and plain calls are timed in the same process."""
        self.metrics = metrics
        self.tracing = tracing if tracing is not None else Tracing()
        self._guarded.clear()  # each method's guard is rebuilt with them on its next call

    async def drain(self, within_s: float) -> int:
        """Wait (at most ``within_s`` seconds) until every call in progress has finished; returns
        how many were still running. A stopping node calls this after ``server.stop()``, which
        cancels calls without waiting for them, and before it closes its database, so that no
        handler is left awaiting a connection that is gone."""
        current = asyncio.current_task()
        pending = [t for t in self._inflight if t is not current and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=within_s)
        return sum(not t.done() for t in pending)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            guarded = self._guarded[method] = _Guarded(
                self._auth,
                self._audit,
                method,
                self._verifier,
                self._inflight,
                self._limiter,
                self._translate,
                self.streams,
                self.requests,
                self.metrics,
                self.tracing,
            ).wrap(handler)
        return guarded


class _Guarded:
    def __init__(
        self,
        auth: Authenticator,
        audit: AuditSink | None,
        method: str,
        verifier: AssertionVerifier | None = None,
        inflight: set[asyncio.Task[Any]] | None = None,
        limiter: AnonymousLimiter | None = None,
        translate: Translate | None = None,
        streams: StreamGate | None = None,
        requests: RequestChecks | None = None,
        metrics: GrpcMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.auth = auth
        self.audit = None if method.startswith(UNAUDITED_PREFIXES) else audit
        self.method = method
        self.verifier = verifier
        self.inflight = inflight
        self.limiter = limiter
        self.translate = translate
        self.streams = streams if streams is not None and streams.counts(method) else None
        self.check = requests.for_method(method) if requests is not None else None
        self.metrics = metrics
        #: This method's series, once :meth:`wrap` knows its shape.
        self.metered: MethodMetrics | None = None
        self.tracing = tracing if tracing is not None else Tracing()

    async def enter(self, call: _Call, context: Context) -> None:
        try:
            await self._enter(call, context)
        except BaseException:
            self.leave(call)  # refused before the handler: the wrappers' finally does not run
            raise

    async def _enter(self, call: _Call, context: Context) -> None:
        task = asyncio.current_task()
        if self.inflight is not None and task is not None:
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        request_id = _request_id_of(context)
        call.tokens = [_request_id.set(request_id), _detail.set(call.detail)]
        call.span = self.tracing.server_span(self.method, context.invocation_metadata(), request_id)
        if self.limiter is not None:
            peer = str(context.peer() or "")
            call.detail["address"] = address_of(peer)
            admission = self.limiter.admit(peer)
            if not admission.allowed:
                await self.throttle(call, context, admission)
        if self.method in TOKEN_AUTHORISED_METHODS:
            return  # authorised by the servicer from the request's token; no peer is bound
        try:
            call.peer = await self.auth.authenticate(context.auth_context())
        except AuthenticationError as exc:
            reason = clip_message(str(exc))
            log.warning("call_refused", method=self.method, reason=reason, request_id=request_id)
            trailing = _request_id_metadata()
            try:
                await self.finish(call, grpc.StatusCode.UNAUTHENTICATED, reason)
            except _AuditFailed:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, AUDIT_FAILED_MESSAGE, trailing_metadata=trailing
                )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason, trailing_metadata=trailing)
        except Exception as exc:
            # Authentication could not be decided: the revocation list is in a database that
            # is down. The health service still answers (NOT_SERVING, which is what load
            # balancers and `govnode health` need to hear) to a certificate the handshake
            # verified; it serves no data. Every other call is refused like any failure
            # (UNAVAILABLE for a database fault), never UNKNOWN.
            if self.method.startswith(HEALTH_PREFIX):
                log.warning(
                    "health_answered_without_revocation_check",
                    request_id=request_id,
                    error=repr(exc)[:200],
                )
                return  # no peer bound: the health service needs none
            await self.refused(call, context, exc)
        assert call.peer is not None
        call.tokens.append(set_current_peer(call.peer))
        call.assertion = _metadata_bytes(context, ASSERTION_KEY)

    async def throttle(self, call: _Call, context: Context, admission: Admission) -> None:
        """Refuse a call over the limiter's rate: RESOURCE_EXHAUSTED with retry-after-ms.
        Audited only when the limiter says so (the first refusal of an address in a window),
        so that a flood does not grow the audit log; the record counts the others."""
        assert self.limiter is not None
        limiter = self.limiter
        message = (
            f"too many {limiter.what}: this port admits {limiter.per_address_per_minute} a "
            f"minute from one address and {limiter.total_per_minute} from all; retry after "
            f"{math.ceil(admission.retry_after_s)} s"
        )
        if admission.audit:
            if admission.unaudited:
                call.detail["refusals_not_audited"] = admission.unaudited
            log.warning(
                "call_rate_limited",
                method=self.method,
                address=call.detail.get("address", ""),
                refusals_not_audited=admission.unaudited,
                request_id=current_request_id(),
            )
            try:
                await self.finish(call, grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            except _AuditFailed:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    AUDIT_FAILED_MESSAGE,
                    trailing_metadata=_request_id_metadata(),
                )
        retry_ms = math.ceil(admission.retry_after_s * 1000)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            message,
            trailing_metadata=(*retry_after(retry_ms), *_request_id_metadata()),
        )

    async def vouch(self, call: _Call, raw: bytes | None) -> None:
        """For a call a node forwards: verify its caller assertion over the request bytes
        (``raw``: the first request message; None for client-streaming methods) and make the
        original caller the current peer. Then refuse a caller whose role may not call the
        method at all (gateway.roles). Raises :class:`Refusal`."""
        await self._vouch(call, raw)
        if call.peer is not None and (problem := method_refusal(call.peer.identity, self.method)):
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED, problem)

    async def _vouch(self, call: _Call, raw: bytes | None) -> None:
        peer = call.peer
        if peer is None:
            return
        if call.assertion is None:
            if self.method in ROUTED_METHODS and peer.identity.role is Role.NODE:
                raise Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{peer.identity} is a node: nodes call {self.method} only on behalf of a "
                    "caller, with a signed caller assertion",
                )
            return
        if self.method not in ROUTED_METHODS or raw is None:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{self.method} is not forwarded between nodes; it takes no caller assertion",
            )
        if self.verifier is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED, "this node does not accept forwarded calls"
            )
        try:
            verified = await self.verifier.verify(
                call.assertion,
                forwarder=peer.identity,
                resource_code=call.resource_code,
                request_bytes=raw,
            )
        except UntrustedAssertion as exc:
            log.warning(
                "assertion_refused",
                method=self.method,
                forwarder=str(peer.identity),
                reason=str(exc),
                request_id=current_request_id(),
            )
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        call.origin_node = str(peer.identity)
        call.detail["assertion_origin"] = str(verified.origin_node)
        call.forwarded_token = set_current_forwarded(
            Forwarded(peer, verified.origin_node, call.assertion)
        )
        call.peer = Peer(identity=verified.caller, serial_hex="", not_after_iso="")
        set_current_peer(call.peer)  # undone by leave(), which restores the value before enter

    def admit(self, call: _Call) -> Slot | None:
        """A slot among the open streams for a streaming call (after :meth:`vouch`: a forwarded
        call counts for its original caller and for the node it was forwarded for)."""
        if self.streams is None:
            return None
        caller = str(call.peer.identity) if call.peer else call.anonymous_caller
        origin = str(call.detail.get("assertion_origin", "")) if call.origin_node else ""
        slot = self.streams.admit(caller, origin, self.method)
        slot.enter()
        return slot

    async def respond(self, result: Any, context: Context, slot: Slot | None) -> None:
        """Send a streaming behaviour's messages, each written only once the previous one is
        taken (flow control), in the caller's turn and within the stall timeout, until the node
        stops (UNAVAILABLE, saying where to resume: gateway.streams); the behaviour is closed
        however this ends, so its own clean-up runs before the call is audited."""
        if not hasattr(result, "__aiter__"):
            await result  # it writes through the context itself (health Watch)
            return
        first = True
        messages = aiter(result)
        try:
            while True:
                if slot is not None:
                    slot.between_messages()
                    slot.doing = "making its next message"
                try:
                    item = await anext(messages)
                except StopAsyncIteration:
                    return
                try:
                    if slot is None:
                        await context.write(item)
                        if self.metered is not None and self.metered.sent is not None:
                            self.metered.sent.inc()
                        continue
                    slot.doing = "writing a message"
                    if first:
                        # Headers on their own first: a stream that stalls on its first
                        # message can then still be ended with a status.
                        await context.send_initial_metadata(())
                        first = False
                    await slot.gate.write(context, item, slot)
                    if self.metered is not None and self.metered.sent is not None:
                        self.metered.sent.inc()
                except Stalled as stalled:
                    assert slot is not None
                    slot.mark_stalled()
                    raise slot.gate.stalled(self.method, stalled.pending) from None
                except grpc.aio.InternalError as exc:
                    # The write failed in gRPC's core: the call ended under it (the client
                    # cancelled or went away). Audited as an interrupted call, like a cancel.
                    raise asyncio.CancelledError("the call ended while writing") from exc
        except Stopping:
            assert slot is not None
            raise slot.gate.stopped(self.method, slot) from None
        except asyncio.CancelledError:
            if slot is not None and slot.stopped_by_gate():
                raise slot.gate.stopped(self.method, slot) from None
            raise
        finally:
            if slot is not None:
                slot.doing = "closing its messages"
            aclose = getattr(result, "aclose", None)
            if aclose is not None:
                await aclose()

    def leave(self, call: _Call) -> None:
        if call.forwarded_token is not None:
            reset_current_forwarded(call.forwarded_token)
        if len(call.tokens) == 3:
            reset_current_peer(call.tokens[2])
        if call.tokens:
            _detail.reset(call.tokens[1])
            _request_id.reset(call.tokens[0])
        self.tracing.end(
            call.span,
            call.code,
            role=call.peer.identity.role.value if call.peer else "",
            forwarded=bool(call.origin_node),
        )
        call.span = None

    async def finish(self, call: _Call, code: grpc.StatusCode, message: str) -> None:
        peer, metered = call.peer, self.metered
        if metered is not None and peer is not None and peer.identity.role is Role.PORTAL:
            metered.portal_call(code)
        call.code = code
        if self.audit is None:
            return
        try:
            await self._record(call, code, message)
        except Exception as exc:
            log.error(
                "audit_failed", method=self.method, request_id=current_request_id(), error=repr(exc)
            )
            raise _AuditFailed() from exc

    async def _record(self, call: _Call, code: grpc.StatusCode, message: str) -> None:
        assert self.audit is not None
        await self.audit.record(
            bounded(
                CallRecord(
                    method=self.method,
                    caller=str(call.peer.identity) if call.peer else call.anonymous_caller,
                    origin_node=call.origin_node,
                    resource_code=call.resource_code[:15],
                    outcome=code.name,
                    message=message,
                    request_digest=call.digest.hexdigest(),
                    request_id=current_request_id(),
                    detail=dict(call.detail),
                )
            )
        )

    async def interrupted(self, call: _Call) -> None:
        """Audit a call that ended without a status of ours: the caller cancelled it, its
        deadline passed, or the server is stopping. Every Subscribe ends this way. The record is
        written although the handler is being cancelled (shielded); a failure is only logged,
        since there is no caller left to refuse."""
        try:
            await asyncio.shield(self.finish(call, grpc.StatusCode.CANCELLED, CANCELLED_MESSAGE))
        except (Exception, asyncio.CancelledError) as exc:
            log.warning(
                "audit_of_cancelled_call_failed",
                method=self.method,
                request_id=current_request_id(),
                error=repr(exc),
            )

    def _translated(self, exc: BaseException) -> Refusal | None:
        if self.translate is None or not isinstance(exc, Exception):
            return None
        return self.translate(exc)

    async def refused(self, call: _Call, context: Context, exc: BaseException) -> None:
        """Audit a refusal or failure, then let the status leave.

        A servicer that called ``context.abort()`` itself (health, reflection) has already sent
        its status; it is audited right after. Ours raise :class:`Refusal`, audited before. If
        the audit log cannot record the call, the caller gets UNAVAILABLE and no result.
        """
        if isinstance(exc, _AuditFailed):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                AUDIT_FAILED_MESSAGE,
                trailing_metadata=_request_id_metadata(),
            )
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            status = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            with contextlib.suppress(_AuditFailed):  # the status has left already
                await self.finish(call, status, clip_message(str(context.details() or "")))
            raise exc
        trailing: tuple[tuple[str, str], ...] = ()
        if isinstance(exc, Refusal):
            code, message, trailing = exc.code, exc.message, exc.trailing_metadata
        elif isinstance(exc, _BadMessage):
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        elif (known := self._translated(exc)) is not None:
            code, message, trailing = known.code, known.message, known.trailing_metadata
        else:
            log.error(
                "call_failed",
                method=self.method,
                request_id=current_request_id(),
                caller=str(call.peer.identity) if call.peer else "",
                exc_info=exc,
            )
            code = grpc.StatusCode.INTERNAL
            message = (
                f"internal error in {self.method} (request id {current_request_id()}); "
                "see the node log"
            )
        # The backstop of gateway.quote: whatever a message quotes, it fits in a status (gRPC
        # clients refuse a grpc-message over 16 KiB) and in the audit log.
        message = clip_message(message)
        try:
            await self.finish(call, code, message)
        except _AuditFailed:
            # Nothing leaves unrecorded: the caller is told to come back. A call that was
            # already UNAVAILABLE (the database is down, and the audit log with it) keeps its
            # own message, which names the cause.
            if code is not grpc.StatusCode.UNAVAILABLE:
                code, message = grpc.StatusCode.UNAVAILABLE, AUDIT_FAILED_MESSAGE
            call.code = code
            trailing = ()
        # Retry information (retry-after-ms) and the like travel as trailing metadata, with the
        # request id (a forwarded refusal's own is dropped: the id is the same, ours).
        trailing = (*(kv for kv in trailing if kv[0] != REQUEST_ID_KEY), *_request_id_metadata())
        await context.abort(code, message, trailing_metadata=trailing)

    def wrap(self, handler: Any) -> Any:
        """The guarded handler of ``handler``'s shape (counted, with metrics: see
        gateway.metrics)."""
        shape: GrpcType = (
            "unary"
            if handler.unary_unary
            else "server_stream"
            if handler.unary_stream
            else "client_stream"
            if handler.stream_unary
            else "bidi_stream"
        )
        if self.metrics is None:
            return self._wrap(handler, lambda behaviour: behaviour)
        self.metered = self.metrics.method(self.method, shape)
        count = self.metered
        return self._wrap(handler, lambda behaviour: metered(behaviour, count))

    def _wrap(self, handler: Any, counted: Callable[[Any], Any]) -> Any:
        deserialize: Callable[[bytes], Any] = handler.request_deserializer or (lambda b: b)
        serializer = handler.response_serializer

        async def parse_stream(
            call: _Call, raws: AsyncIterator[bytes], slot: Slot | None = None
        ) -> AsyncIterator[Any]:
            received = self.metered.received if self.metered is not None else None
            if slot is None:
                async for raw in raws:
                    if received is not None:
                        received.inc()
                    yield call.parse(raw)
                return
            # Waiting for the caller's next message, the stream ends at once if the node stops.
            requests = aiter(raws)
            while True:
                slot.doing = "waiting for its caller's next message"
                with slot.waiting():
                    try:
                        raw = await anext(requests)
                    except StopAsyncIteration:
                        return
                if received is not None:
                    received.inc()
                yield call.parse(raw)

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(raw: bytes, context: Context) -> Any:
                call = _Call(self.method, deserialize, self.check)
                await self.enter(call, context)
                try:
                    request = call.parse(raw)
                    await self.vouch(call, raw)
                    response = await inner_uu(request, context)
                    await self.finish(call, grpc.StatusCode.OK, "")
                    return response
                except (asyncio.CancelledError, GeneratorExit):
                    await self.interrupted(call)
                    raise
                except Exception as exc:
                    await self.refused(call, context, exc)
                finally:
                    self.leave(call)

            return grpc.unary_unary_rpc_method_handler(
                counted(unary_unary), request_deserializer=None, response_serializer=serializer
            )

        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(raw: bytes, context: Context) -> None:
                call = _Call(self.method, deserialize, self.check)
                await self.enter(call, context)
                slot: Slot | None = None
                try:
                    request = call.parse(raw)
                    await self.vouch(call, raw)
                    slot = self.admit(call)
                    await self.respond(inner_us(request, context), context, slot)
                    _doing(slot, "recording its end in the audit log")
                    await self.finish(call, grpc.StatusCode.OK, "")
                except asyncio.CancelledError:
                    _doing(slot, "recording its end in the audit log")
                    await self.interrupted(call)
                    raise
                except Exception as exc:
                    _doing(slot, "recording and sending its status")
                    await self.refused(call, context, exc)
                finally:
                    if slot is not None:
                        slot.release()
                    self.leave(call)

            return grpc.unary_stream_rpc_method_handler(
                counted(unary_stream), request_deserializer=None, response_serializer=serializer
            )

        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(raws: AsyncIterator[bytes], context: Context) -> Any:
                call = _Call(self.method, deserialize, self.check)
                await self.enter(call, context)
                slot: Slot | None = None
                try:
                    await self.vouch(call, None)
                    slot = self.admit(call)
                    response = await inner_su(parse_stream(call, raws), context)
                    _doing(slot, "recording its end in the audit log")
                    await self.finish(call, grpc.StatusCode.OK, "")
                    return response
                except (asyncio.CancelledError, GeneratorExit):
                    _doing(slot, "recording its end in the audit log")
                    await self.interrupted(call)
                    raise
                except Exception as exc:
                    _doing(slot, "recording and sending its status")
                    await self.refused(call, context, exc)
                finally:
                    if slot is not None:
                        slot.release()
                    self.leave(call)

            return grpc.stream_unary_rpc_method_handler(
                counted(stream_unary), request_deserializer=None, response_serializer=serializer
            )

        inner_ss = handler.stream_stream

        async def stream_stream(raws: AsyncIterator[bytes], context: Context) -> None:
            call = _Call(self.method, deserialize, self.check)
            await self.enter(call, context)
            slot: Slot | None = None
            try:
                await self.vouch(call, None)
                slot = self.admit(call)
                requests = parse_stream(call, raws, slot)
                await self.respond(inner_ss(requests, context), context, slot)
                _doing(slot, "recording its end in the audit log")
                await self.finish(call, grpc.StatusCode.OK, "")
            except asyncio.CancelledError:
                _doing(slot, "recording its end in the audit log")
                await self.interrupted(call)
                raise
            except Exception as exc:
                _doing(slot, "recording and sending its status")
                await self.refused(call, context, exc)
            finally:
                if slot is not None:
                    slot.release()
                self.leave(call)

        return grpc.stream_stream_rpc_method_handler(
            counted(stream_stream), request_deserializer=None, response_serializer=serializer
        )
