"""A rate limit for callers the node cannot name: those of the province's join port.

On the join port (TLS without a client certificate) anyone who can reach the port may call,
so the only handle on a caller is its network address. :class:`AnonymousLimiter` keeps a token
bucket per address and one for all addresses together: an address gets at most
``per_address_per_minute`` attempts a minute, and all of them together at most
``total_per_minute`` (which also holds back a caller with many addresses). A refused attempt
learns when it may try again.

Refusals are not all audited: every refusal would be an audit record kept for years, which is
the growth the limit is there to stop. The first refusal of an address in a window is audited
(with the count of those not audited since its last audited one), and refusals audited for
all addresses together are capped at ``total_per_minute`` a minute too; the rest are counted.
So a flood of any size writes at most about ``2 * total_per_minute`` audit records a minute.

The state is in this process's memory, not in the database (unlike the Verify oracle's
budgets): it protects the process that holds it, and joining is rare enough that several
processes each allowing the limit is harmless. It is bounded: at most ``max_addresses``
addresses are tracked, the least recently seen forgotten first (a forgotten address starts
again with a full bucket, still within the total).

The same token buckets, keyed by any name and bounded alike (:class:`KeyedBuckets`), hold the
node's budgets per member of the public for its open data portals (node.opendata._budget).
"""

from __future__ import annotations

import ipaddress
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "AnonymousLimiter", "KeyedBuckets", "TokenBucket", "address_of"]

#: How long after an audited refusal of an address its next refusal is audited again.
AUDIT_WINDOW_S = 60.0
#: IPv6 callers are limited by their /64: one host usually holds a whole /64.
IPV6_PREFIX = 64
_MAX_KEY = 64


def address_of(peer: str) -> str:
    """The address a gRPC peer string (``ipv4:10.1.2.3:5501``, ``ipv6:[2001:db8::1]:5501``)
    is limited by: the IPv4 address, or the /64 of an IPv6 one; anything else as it is, cut
    to 64 characters."""
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6"):
        host = urllib.parse.unquote(rest).rpartition(":")[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return peer[:_MAX_KEY]
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
        return str(ip)
    return peer[:_MAX_KEY]


@dataclass
class TokenBucket:
    """Up to ``capacity`` tokens (the burst), refilled at ``per_minute`` a minute (``capacity``
    a minute when not given)."""

    capacity: float
    tokens: float
    at: float
    per_minute: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens (at most ``capacity``): 0.0 if there were that many, else the
        seconds until there are, and nothing is taken."""
        rate = (self.per_minute or self.capacity) / 60.0
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * rate)
        self.at = now
        cost = min(cost, self.capacity)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / rate


@dataclass
class _Address:
    bucket: TokenBucket
    audited_at: float = float("-inf")
    unaudited: int = 0


@dataclass(frozen=True)
class Admission:
    """Whether an attempt may go on; for a refusal, when to retry and whether to audit it."""

    allowed: bool
    retry_after_s: float = 0.0
    #: Audit this refusal (the first of its address in a window); the others are counted.
    audit: bool = True
    #: Refusals of this address not audited since its last audited one.
    unaudited: int = 0


class AnonymousLimiter:
    """Token buckets per address and in all, in memory (see the module docs)."""

    def __init__(
        self,
        per_address_per_minute: int,
        total_per_minute: int,
        *,
        max_addresses: int = 4096,
        what: str = "attempts",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``what`` names the attempts in a refusal ("too many join attempts: ...")."""
        if per_address_per_minute < 1 or total_per_minute < 1 or max_addresses < 1:
            raise ValueError("rate limits and max_addresses must be at least 1")
        self.per_address_per_minute = per_address_per_minute
        self.total_per_minute = total_per_minute
        self.what = what
        self._max_addresses = max_addresses
        self._clock = clock
        now = clock()
        self._total = TokenBucket(total_per_minute, total_per_minute, now)
        self._refusal_audits = TokenBucket(total_per_minute, total_per_minute, now)
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    @property
    def tracked(self) -> int:
        """How many addresses the limiter remembers now."""
        return len(self._addresses)

    def admit(self, peer: str) -> Admission:
        """Count an attempt from ``peer`` (a gRPC peer string): allowed, or refused."""
        now = self._clock()
        key = address_of(peer)
        state = self._addresses.get(key)
        if state is None:
            per_address = self.per_address_per_minute
            state = self._addresses[key] = _Address(TokenBucket(per_address, per_address, now))
            if len(self._addresses) > self._max_addresses:
                self._addresses.popitem(last=False)
        else:
            self._addresses.move_to_end(key)
        wait = state.bucket.take(now)
        if wait == 0.0:
            wait = self._total.take(now)
            if wait == 0.0:
                return Admission(True)
            state.bucket.tokens += 1.0  # the address's own allowance was not used
        if now - state.audited_at >= AUDIT_WINDOW_S and self._refusal_audits.take(now) == 0.0:
            unaudited, state.unaudited, state.audited_at = state.unaudited, 0, now
            return Admission(False, wait, audit=True, unaudited=unaudited)
        state.unaudited += 1
        return Admission(False, wait, audit=False, unaudited=state.unaudited)


class KeyedBuckets:
    """A token bucket per key, in memory: at most ``max_keys`` keys, the least recently used
    forgotten first (a forgotten key starts again with a full bucket). Each :meth:`take` says
    the bucket's size and rate, so that keys of different kinds share one bound."""

    def __init__(self, *, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def tracked(self) -> int:
        """How many keys are remembered now."""
        return len(self._buckets)

    def take(self, key: str, *, burst: float, per_minute: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket (``burst`` tokens, refilled at
        ``per_minute``): 0.0 if it held them, else the seconds until it will."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(burst, burst, now, per_minute)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.capacity, bucket.per_minute = burst, per_minute
        return bucket.take(now, cost)
