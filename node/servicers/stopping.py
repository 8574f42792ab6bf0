"""Ending the streams peers hold open when the node stops.

A city keeps two streams open to its province, idle between catalog changes: WatchCatalog
(the province's feed, down) and PublishCatalog (the city's changes, up). grpc's graceful stop
waits for every call in flight until the grace period ends, so a province with a connected
city always waited its whole grace period. These streams watch the node's ``stopping`` event
while they wait and end at once with UNAVAILABLE, which a city treats like any lost
connection: it reconnects with backoff and resumes the feed where it ended (nothing is lost,
each stream resumes from a sequence the receiver applied).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from node.errors import Unavailable

T = TypeVar("T")

STOPPING_MESSAGE = (
    "this node is stopping; reconnect in a few seconds (the feed resumes where it ended)"
)


async def wait_or_stop(event: asyncio.Event, stopping: asyncio.Event, *, within_s: float) -> None:
    """Wait until ``event`` is set or ``within_s`` seconds pass; raise :class:`Unavailable` if
    the node stops first (or has stopped)."""
    if not stopping.is_set():
        waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopping.wait())}
        try:
            await asyncio.wait(waits, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
    if stopping.is_set():
        raise Unavailable(STOPPING_MESSAGE)


async def until_stopping(items: AsyncIterator[T], stopping: asyncio.Event) -> AsyncIterator[T]:
    """``items`` as they come; :class:`Unavailable` as soon as the node stops while the
    stream waits for the next one."""
    stopped = asyncio.ensure_future(stopping.wait())
    following: asyncio.Future[T] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                raise Unavailable(STOPPING_MESSAGE)
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stopped.cancel()
        # Cancelled while waiting (the call was cancelled, the peer went away): the read in
        # flight is ours to end too, or its StopAsyncIteration is logged as never retrieved.
        if following is not None:
            following.cancel()
