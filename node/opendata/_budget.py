"""Budgets per member of the public (第三十条: the open data portal serves the public), kept by
the node, so that they hold however many portal processes call it.

Every call a portal makes to the open data RPCs spends from a token bucket of the member of the
public it names: the recipient (``ip:203.0.113.9``, or ``key:<key id>`` for the holder of a
授权开放 key), or, for a call that names nobody, a bucket the portal shares with itself (its
SPIFFE ID). A recipient of kind ``key`` gets the keys' rate, any other the public's. A download
costs ``download_cost`` tokens, any other call one. Over budget, the call is refused with
RESOURCE_EXHAUSTED naming the recipient and the limit, and when to try again.

Which process's memory: the node's. Two portal processes calling one node process share the
budgets; several node processes behind one balancer each keep their own (a member of the public
then gets at most that many times the limit). At most ``max_recipients`` recipients are
remembered, the least recently seen forgotten first (a forgotten one starts with a full bucket).

A rate of 0 turns that limit off. Pure: no grpc, no storage; the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.quote import quote
from gateway.ratelimit import KeyedBuckets
from node.errors import ResourceExhausted


@dataclass(frozen=True)
class BudgetLimits:
    """``[opendata]`` public_requests_per_minute, public_burst, key_requests_per_minute,
    key_burst, download_cost, max_recipients."""

    public_requests_per_minute: int = 120
    public_burst: int = 60
    key_requests_per_minute: int = 600
    key_burst: int = 300
    download_cost: int = 10
    max_recipients: int = 100_000


class PublicBudgets:
    """The node's token buckets per member of the public (see the module docs)."""

    def __init__(
        self, limits: BudgetLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._buckets = KeyedBuckets(max_keys=limits.max_recipients, clock=clock)

    @property
    def tracked(self) -> int:
        return self._buckets.tracked

    def spend(self, recipient: str, *, download: bool = False) -> None:
        """Spend one call's tokens (a download's ``download_cost``) from ``recipient``'s
        bucket; ResourceExhausted, with when to try again, when it does not hold them."""
        limits = self.limits
        if recipient.startswith("key:"):
            per_minute, burst, kind = limits.key_requests_per_minute, limits.key_burst, "key"
        else:
            per_minute, burst, kind = (
                limits.public_requests_per_minute,
                limits.public_burst,
                "public",
            )
        if per_minute == 0:
            return
        cost = limits.download_cost if download else 1
        wait = self._buckets.take(recipient, burst=burst, per_minute=per_minute, cost=cost)
        if wait == 0.0:
            return
        what = f"a download costs {cost} requests" if download else "a call is one request"
        raise ResourceExhausted(
            f"{quote(recipient, 100)} is over the node's open data budget: {per_minute} requests "
            f"a minute, bursts of {burst} ([opendata] {kind}_requests_per_minute, {kind}_burst; "
            f"{what}); try again in {max(1, round(wait))} s",
            retry_after_s=wait,
        )
