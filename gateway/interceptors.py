"""The guard every call passes through before it reaches a servicer.

For each RPC, whatever its streaming shape, the guard:

1. authenticates the caller from the verified TLS peer (UNAUTHENTICATED otherwise);
2. parses request messages itself, so that bytes which are not a valid message get
   INVALID_ARGUMENT naming the method, rather than gRPC's generic INTERNAL;
3. binds the caller and a request id to the context for the servicer and the logs;
4. turns any unexpected exception into INTERNAL with the request id, never a stack trace.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import structlog

from gateway.auth import AuthenticationError, Authenticator, reset_current_peer, set_current_peer

log = structlog.get_logger("govnode.gateway")

REQUEST_ID_KEY = "govnode-request-id"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("govnode_request_id", default="")


def current_request_id() -> str:
    return _request_id.get()


def _metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, str):
            return value
    return None


Deserializer = Callable[[bytes], Any]


class GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap(handler, handler_call_details.method, self._auth)


def _wrap(handler: Any, method: str, auth: Authenticator) -> Any:
    deserialize: Deserializer = handler.request_deserializer or (lambda b: b)
    serializer = handler.response_serializer

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:
            raise _BadMessage(
                f"{method}: the request is not a valid message for this method ({exc})"
            ) from None

    async def enter(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, Any]:
        request_id = _metadata_value(context, REQUEST_ID_KEY) or uuid.uuid4().hex
        rid_token = _request_id.set(request_id)
        try:
            peer = await auth.authenticate(context.auth_context())
        except AuthenticationError as exc:
            log.warning("call_refused", method=method, reason=str(exc), request_id=request_id)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        structlog.contextvars.bind_contextvars(request_id=request_id, caller=str(peer.identity))
        return rid_token, set_current_peer(peer)

    def leave(tokens: tuple[Any, Any]) -> None:
        reset_current_peer(tokens[1])
        _request_id.reset(tokens[0])
        structlog.contextvars.unbind_contextvars("request_id", "caller")

    async def fail(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
        if isinstance(exc, _BadMessage):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.exception("call_failed", method=method)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error in {method} (request id {current_request_id()}); see the node log",
        )

    async def parse_stream(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for raw in requests:
            yield parse(raw)

    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            tokens = await enter(context)
            try:
                return await inner_uu(parse(raw), context)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                await fail(context, exc)
            finally:
                leave(tokens)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=None, response_serializer=serializer
        )

    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(
            raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            tokens = await enter(context)
            try:
                async for item in _responses(inner_us(parse(raw), context)):
                    yield item
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                await fail(context, exc)
            finally:
                leave(tokens)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=None, response_serializer=serializer
        )

    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(
            raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            tokens = await enter(context)
            try:
                return await inner_su(parse_stream(raws), context)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                await fail(context, exc)
            finally:
                leave(tokens)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, request_deserializer=None, response_serializer=serializer
        )

    inner_ss = handler.stream_stream

    async def stream_stream(
        raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        tokens = await enter(context)
        try:
            async for item in _responses(inner_ss(parse_stream(raws), context)):
                yield item
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            await fail(context, exc)
        finally:
            leave(tokens)

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, request_deserializer=None, response_serializer=serializer
    )


class _BadMessage(Exception):
    pass


async def _responses(result: Any) -> AsyncIterator[Any]:
    """Iterate a streaming behaviour, whether it yields or writes through the context."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


# Raised by context.abort() and by cancellation: they must reach gRPC untouched.
_PASS_THROUGH: tuple[type[BaseException], ...] = (grpc.aio.AbortError,)
