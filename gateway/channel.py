"""The one place an outbound gRPC channel is built.

Every outbound call gets a deadline: calls made without one get ``default_timeout`` through
:class:`DefaultDeadline`, so a stuck peer can never hang a node or an agency system. The one
exception is a channel built with ``streaming_timeout=None``, whose user sets every streaming
call's deadline itself: the forwarder (gateway.forward), which passes on the deadline of the
call it forwards, and none for an open-ended stream (Exchange, Subscribe) whose caller set none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from gateway.tls import TlsFiles, channel_credentials

DEFAULT_TIMEOUT_S = 10.0


class DefaultDeadline(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Give calls made without a timeout the channel's default one (streaming calls none when
    ``streaming_timeout`` is None)."""

    def __init__(self, timeout: float, streaming_timeout: float | None) -> None:
        self._timeout = timeout
        self._streaming_timeout = streaming_timeout

    def _with_deadline(self, details: Any, timeout: float | None) -> Any:
        if details.timeout is not None or timeout is None:
            return details
        return details._replace(timeout=timeout)

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_deadline(client_call_details, self._timeout), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        details = self._with_deadline(client_call_details, self._streaming_timeout)
        return await continuation(details, request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        details = self._with_deadline(client_call_details, self._streaming_timeout)
        return await continuation(details, request_iterator)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        details = self._with_deadline(client_call_details, self._streaming_timeout)
        return await continuation(details, request_iterator)


def channel_options(max_message_bytes: int = 4 * 1024 * 1024) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.enable_retries", 0),  # retries are ours (tenacity), bounded by the deadline
    ]


def secure_channel(
    target: str,
    files: TlsFiles,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    streaming_timeout: float | None = 300.0,
    max_message_bytes: int = 4 * 1024 * 1024,
    extra_options: Sequence[tuple[str, int | str]] = (),
    default_deadline: bool = True,
) -> grpc.aio.Channel:
    """A mutual-TLS channel to ``target`` (HOST:PORT) using our key, chain and root;
    ``extra_options`` are further grpc channel arguments (e.g. reconnection backoff).
    ``streaming_timeout=None``: streaming calls made without a timeout keep none.

    ``default_deadline=False``: no default timeout at all (``timeout`` and
    ``streaming_timeout`` are ignored), for a caller that sets every call's own, such as the
    forwarder: without the interceptor that adds it, gRPC makes each call without the
    interceptor machinery (a task and wrappers per call)."""
    return grpc.aio.secure_channel(
        target,
        channel_credentials(files),
        options=[*channel_options(max_message_bytes), *extra_options],
        interceptors=(
            [DefaultDeadline(timeout, streaming_timeout)]  # type: ignore[list-item]
            if default_deadline
            else None
        ),
    )
