"""Delivering notifications to the node of their recipient's region (store and forward over the
star; the domain side, outbox and inbox, is node.federation._notices).

A background task of every node. Each round it looks for regions other than its own that have
notifications here (a bounded DISTINCT over the ids not looked at yet), then delivers each
region's notifications after its cursor, in id order, a page (≤ 200, ≤ 64 KiB) at a time, with
FederationService.DeliverNotifications made as the node itself (gateway.forward
``own_unary``: the forwarder's channel, breaker and deadline):

- a city sends everything for other regions to its province;
- the province sends a city's notifications to that city (``[federation] peers``, or the
  endpoint it gave when it joined), and keeps its own region's (delivered to it).

The cursor moves once the next node acknowledged the page: at least once over the wire, and
the receiver stores each once. A destination that fails backs off (jittered, doubling from
``notice_delivery_seconds`` up to :data:`BACKOFF_ROUNDS` of it) without holding up the
others, which are delivered concurrently; one with no node (a city that never joined) is
skipped with a warning, its cursor unmoved, and tried again after its backoff. A round starts
when a notification is committed in this process, and at least every
``notice_delivery_seconds``. Errors are logged, never raised into the node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time

import grpc
import structlog
from govnode.v1 import federation_pb2

from gateway.refusal import Refusal
from node.codes import Region
from node.config import Mode, NodeConfig
from node.errors import DomainError, NotFound
from node.federation import MAX_BATCH, NoticeOutbox, Router
from node.servicers.notices import delivery_proto
from node.sharing import Notifications
from node.tasks import BackgroundJob

log = structlog.get_logger("govnode.notice_delivery")

METHOD = "/govnode.v1.FederationService/DeliverNotifications"
#: A delivery's request stays well under the receiver's default request limit (256 KiB).
MAX_BATCH_BYTES = 64 * 1024
#: One delivery call must finish within this (seconds).
CALL_TIMEOUT_S = 10.0
#: Pages one destination is sent in one round, so a long backlog yields to new rounds.
MAX_PAGES_PER_ROUND = 50
#: A failing destination's backoff doubles up to this many delivery periods (bounded).
BACKOFF_ROUNDS = 30
#: Most destination regions remembered (a province has a handful of cities).
MAX_DESTINATIONS = 200
#: PostgreSQL: a round delivers up to the newest id seen at least this long ago (seconds), so
#: that a transaction holding a lower id has committed (see NoticeDelivery._horizon).
SETTLE_S = 1.0
#: PostgreSQL: the newest id is noted at most this often (seconds), bounding what is kept.
OBSERVE_GAP_S = 0.05


class _Backoff:
    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        self.next_at = 0.0

    def failed(self) -> float:
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        delay = random.uniform(delay / 2, delay)
        self.next_at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0


class NoticeDelivery(BackgroundJob):
    """Runs the delivery rounds of one node until :meth:`stop`."""

    task_name = "notice_delivery"

    def __init__(
        self,
        config: NodeConfig,
        outbox: NoticeOutbox,
        router: Router,
        notifications: Notifications,
    ) -> None:
        self._config = config
        self._outbox = outbox
        self._router = router
        self._notifications = notifications
        self._every = config.federation.notice_delivery_seconds
        self._scanned = 0
        self._destinations: set[str] = set()
        self._backoff: dict[str, _Backoff] = {}
        self._backend = outbox.backend
        #: PostgreSQL: (when, newest id) seen in the last SETTLE_S, and the settled horizon.
        self._observed: collections.deque[tuple[float, int]] = collections.deque()
        self._settled = 0

    async def _forever(self) -> None:
        while True:
            # Taken before the round, so a notification committed during it starts the next.
            changed = self._notifications.changed()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never into the node: the next round tries again
                log.warning("notice_delivery_round_failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=self._every)

    async def _horizon(self) -> int:
        """The highest id a round may deliver up to. On SQLite, writes are serialised, so ids
        commit in order: the newest. On PostgreSQL a transaction that drew a lower id may
        commit after a higher one is visible, so the round stops at the newest id seen at
        least :data:`SETTLE_S` ago, and a cursor never passes a notification still being
        written."""
        last = await self._outbox.last_id()
        if self._backend != "postgresql":
            return last
        now = time.monotonic()
        if not self._observed or now - self._observed[-1][0] >= OBSERVE_GAP_S:
            self._observed.append((now, last))
        while self._observed and now - self._observed[0][0] >= SETTLE_S:
            self._settled = max(self._settled, self._observed.popleft()[1])
        return self._settled

    async def run_once(self) -> None:
        """One round: find new destination regions, deliver to each that is not backing off."""
        upto = await self._horizon()
        if upto > self._scanned:
            found = await self._outbox.destinations(self._scanned, upto)
            for region in found:
                if len(self._destinations) < MAX_DESTINATIONS:
                    self._destinations.add(region)
            self._scanned = upto
        now = time.monotonic()
        due = [
            region
            for region in sorted(self._destinations)
            if self._backoff_of(region).next_at <= now
        ]
        if due:
            await asyncio.gather(*(self._deliver(region, upto) for region in due))

    def _backoff_of(self, region: str) -> _Backoff:
        backoff = self._backoff.get(region)
        if backoff is None:
            backoff = self._backoff[region] = _Backoff(self._every, self._every * BACKOFF_ROUNDS)
        return backoff

    async def _next_hop(self, destination: str) -> tuple[str, str] | None:
        """Where ``destination``'s notifications go next: (endpoint, region of that node), or
        None when no node of the province serves it."""
        fed = self._config.federation
        own = self._config.node.region
        province = Region(own).province_code
        if not Region(province).contains(destination) or destination == own:
            return None
        if self._config.node.mode is Mode.CITY:
            assert fed.province_endpoint and fed.province_region, "a city names its province"
            return fed.province_endpoint, fed.province_region
        return await self._router.endpoint_for(destination)

    async def _deliver(self, destination: str, upto: int) -> None:
        backoff = self._backoff_of(destination)
        try:
            hop = await self._next_hop(destination)
            if hop is None:
                raise _NoNode(f"region {destination} is not a node region of this province")
            endpoint, node_region = hop
            for _ in range(MAX_PAGES_PER_ROUND):
                after, page = await self._outbox.pending(destination, upto=upto, limit=MAX_BATCH)
                if not page:
                    if upto > after:  # none for it up to there: the next scan starts there
                        await self._outbox.delivered(destination, upto)
                    break
                request = federation_pb2.DeliverNotificationsRequest()
                size = 0
                last = 0
                for n in page:
                    msg = delivery_proto(n)
                    size += msg.ByteSize()
                    if last and size > MAX_BATCH_BYTES:
                        break
                    request.notifications.append(msg)
                    last = n.id
                reply = await self._router.forwarder.own_unary(
                    endpoint,
                    node_region,
                    METHOD,
                    request,
                    federation_pb2.DeliverNotificationsResponse,
                    within_s=CALL_TIMEOUT_S,
                )
                complete = len(request.notifications) == len(page) < MAX_BATCH
                await self._outbox.delivered(destination, upto if complete else last)
                log.info(
                    "notices_delivered",
                    destination=destination,
                    via=node_region,
                    sent=len(request.notifications),
                    stored=reply.stored,
                    already_held=reply.already_held,
                    last_id=last,
                )
                if complete:
                    break
        except _NoNode as exc:
            self._skip(destination, backoff, str(exc))
            return
        except Refusal as exc:
            if exc.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                self._skip(destination, backoff, exc.message)
            else:
                delay = backoff.failed()
                log.warning(
                    "notice_delivery_failed",
                    destination=destination,
                    code=exc.code.name,
                    error=exc.message[:300],
                    retry_in_s=round(delay, 2),
                )
            return
        except NotFound as exc:
            self._skip(destination, backoff, str(exc))
            return
        except DomainError as exc:  # no endpoint known yet, the database away
            delay = backoff.failed()
            log.warning(
                "notice_delivery_failed",
                destination=destination,
                code=type(exc).__name__,
                error=str(exc)[:300],
                retry_in_s=round(delay, 2),
            )
            return
        backoff.succeeded()

    @staticmethod
    def _skip(destination: str, backoff: _Backoff, why: str) -> None:
        delay = backoff.failed()
        log.warning(
            "notice_destination_without_node",
            destination=destination,
            error=why[:300],
            retry_in_s=round(delay, 2),
        )


class _NoNode(Exception):
    """No node of the province serves the destination region."""
