"""Verify oracle protection (防止越权使用, 第三十七条).

联机验证 Verify answers only "match" or "mismatch", but asked often enough it reveals the data
anyway: try every birth date for one citizen id, or every id for one name. So each caller gets
a budget on each resource it verifies against:

- a **rate limit**, ``verify_per_minute``: a token bucket holding that many calls, refilled
  evenly over a minute, so bursts up to the limit pass and a steady stream is held to it;
- a **daily quota**, ``verify_per_day``: calls per China Standard Time day, reset at 00:00;
- an **enumeration watch**: a run of calls over ``enumeration_distinct_keys`` different keys
  within ``enumeration_window_seconds`` is flagged, once per window, on the call's audit record
  and to the provider agency and the data management authority of the resource's region.

A call over a limit is refused with :class:`~node.errors.ResourceExhausted`, whose message names
the limit and when to retry, and whose ``retry_after_s`` reaches the caller as the trailing
metadata ``retry-after-ms``. Refused calls are not answered, so they spend no budget.

Who is limited: any caller but the provider itself (it owns the data), on resources holding an
item of at least ``min_sensitivity_level`` (node.grading). Probe resources (第三十一条) count like
any other. Routed calls are limited by the node that owns the resource, for the original caller.

Limits are per node process and in memory: a restart forgets them, and N processes behind a
load balancer allow N times the budget. Each decision is made without an ``await`` between
reading and spending the budget, so concurrent calls in one event loop never overspend it (no
lock needed). Memory is bounded: at most ``max_tracked`` (caller, resource) pairs, the least
recently used forgotten first, and each remembers at most ``enumeration_distinct_keys`` key
digests.

Pure domain: no grpc.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from gateway.identity import Identity
from node.catalog_types import ResourceEntry
from node.config import OracleSection
from node.errors import ResourceExhausted
from node.grading import highest_level
from node.notifications import NotificationKind, Notifications
from node.policy import is_provider

log = structlog.get_logger("govnode.oracle")

#: China Standard Time: daily quotas reset at its midnight.
CST = dt.timezone(dt.timedelta(hours=8), "CST")


def monotonic() -> float:
    """Seconds on a clock that never goes back (the module's clock; tests replace it)."""
    return time.monotonic()


def wall_clock() -> dt.datetime:
    """The current time, timezone-aware (tests replace it)."""
    return dt.datetime.now(dt.UTC)


def key_digest(key: Mapping[str, str]) -> bytes:
    """A short digest of a record key, the same for the same items whatever their order."""
    text = json.dumps(sorted(key.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).digest()


@dataclass
class _Budget:
    """What one caller has used of one resource."""

    tokens: float
    refilled_at: float
    day: dt.date
    used_today: int = 0
    #: Digest of each key asked about in the current window -> when last asked.
    keys: OrderedDict[bytes, float] = field(default_factory=OrderedDict)
    #: After a flag, no other flag until this instant (once per window).
    quiet_until: float = float("-inf")


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class OracleGuard:
    """Quotas, rate limits and the enumeration watch for Verify (see the module docstring)."""

    def __init__(
        self, config: OracleSection, notifications: Notifications | None, trust_domain: str
    ) -> None:
        self._config = config
        self._notifications = notifications
        self._trust_domain = trust_domain
        self._budgets: OrderedDict[tuple[str, str], _Budget] = OrderedDict()

    def applies(self, caller: Identity, entry: ResourceEntry) -> bool:
        """Whether ``caller``'s calls on ``entry`` are limited at all."""
        return not is_provider(caller, entry) and (
            highest_level(entry) >= self._config.min_sensitivity_level
        )

    async def admit_verify(
        self,
        caller: Identity,
        entry: ResourceEntry,
        key: Mapping[str, str],
        *,
        request_id: str = "",
    ) -> bool:
        """Spend one Verify of ``caller`` on ``entry``, or raise ResourceExhausted naming the
        limit. Returns True when this call completes a suspected enumeration run (the caller's
        audit record should say so; the provider and authority have been notified)."""
        return await self._admit(caller, entry, [key], "Verify", request_id)

    async def admit_compare(
        self,
        caller: Identity,
        entry: ResourceEntry,
        keys: Iterable[Mapping[str, str]],
        *,
        request_id: str = "",
    ) -> bool:
        """As :meth:`admit_verify` for a 比对验证 Compare call: each row counts as one Verify
        against the daily quota and the enumeration watch. The per-minute bucket counts the call
        once, since one Compare may carry more rows than a minute's budget."""
        return await self._admit(caller, entry, list(keys), "Compare", request_id)

    async def _admit(
        self,
        caller: Identity,
        entry: ResourceEntry,
        keys: list[Mapping[str, str]],
        method: str,
        request_id: str,
    ) -> bool:
        if not self.applies(caller, entry):
            return False
        now = monotonic()
        budget = self._budget(str(caller), entry.resource_code, now)
        self._spend(budget, now, len(keys), caller, entry, method)
        flagged = self._watch(budget, now, keys)
        if flagged:
            await self._notify(caller, entry, method, request_id)
        return flagged

    def _budget(self, caller: str, resource_code: str, now: float) -> _Budget:
        pair = (caller, resource_code)
        budget = self._budgets.get(pair)
        if budget is None:
            budget = _Budget(
                tokens=float(self._config.verify_per_minute),
                refilled_at=now,
                day=wall_clock().astimezone(CST).date(),
            )
            self._budgets[pair] = budget
            while len(self._budgets) > self._config.max_tracked:
                self._budgets.popitem(last=False)
        else:
            self._budgets.move_to_end(pair)
        return budget

    def _spend(
        self,
        budget: _Budget,
        now: float,
        rows: int,
        caller: Identity,
        entry: ResourceEntry,
        method: str,
    ) -> None:
        """Check both limits first, then spend from both: a refused call spends nothing."""
        per_minute, per_day = self._config.verify_per_minute, self._config.verify_per_day
        where = f"{caller} on resource {entry.resource_code} ({entry.name})"
        if per_minute:
            rate = per_minute / 60.0
            budget.tokens = min(per_minute, budget.tokens + (now - budget.refilled_at) * rate)
            budget.refilled_at = now
            if budget.tokens < 1.0:
                wait = (1.0 - budget.tokens) / rate
                raise ResourceExhausted(
                    f"{method} rate limit exceeded: {per_minute} Verify calls per minute for "
                    f"{where} (oracle protection, 第三十七条); retry after {_seconds_text(wait)}",
                    retry_after_s=wait,
                )
        if per_day:
            today = wall_clock().astimezone(CST)
            if budget.day != today.date():
                budget.day, budget.used_today = today.date(), 0
            if budget.used_today + rows > per_day:
                midnight = dt.datetime.combine(today.date() + dt.timedelta(days=1), dt.time(), CST)
                wait = (midnight - today).total_seconds()
                raise ResourceExhausted(
                    f"{method} daily quota exhausted: {per_day} Verify calls per day for {where}, "
                    f"{budget.used_today} used today (oracle protection, 第三十七条); retry after "
                    f"00:00 China Standard Time, in {_seconds_text(wait)}",
                    retry_after_s=wait,
                )
        if per_minute:
            budget.tokens -= 1.0
        budget.used_today += rows

    def _watch(self, budget: _Budget, now: float, keys: list[Mapping[str, str]]) -> bool:
        """Remember the keys asked about; True when the run of different keys within the window
        reaches the threshold and no flag was raised in the last window."""
        threshold = self._config.enumeration_distinct_keys
        if not threshold:
            return False
        window = self._config.enumeration_window_seconds
        seen = budget.keys
        for key in keys:
            digest = key_digest(key)
            seen.pop(digest, None)
            seen[digest] = now  # most recently asked last: expiry pops from the front
            while seen and next(iter(seen.values())) <= now - window:
                seen.popitem(last=False)
            if len(seen) >= threshold and now >= budget.quiet_until:
                seen.clear()
                budget.quiet_until = now + window
                return True
            while len(seen) >= threshold:  # flagged in this window already: stay bounded
                seen.popitem(last=False)
        return False

    async def _notify(
        self, caller: Identity, entry: ResourceEntry, method: str, request_id: str
    ) -> None:
        config = self._config
        message = (
            f"possible enumeration (防止越权使用, 第三十七条): {caller} asked {method} about "
            f"{config.enumeration_distinct_keys} different keys of resource "
            f"{entry.resource_code} ({entry.name}) within "
            f"{config.enumeration_window_seconds:g} s; see the audit log"
            + (f", request id {request_id}" if request_id else "")
        )
        log.warning(
            "enumeration_suspected",
            caller=str(caller),
            resource_code=entry.resource_code,
            request_id=request_id,
        )
        if self._notifications is None:
            return
        host = f"{entry.region}.{self._trust_domain}"
        for recipient in (
            f"spiffe://{host}/agency/{entry.provider_code}",
            f"spiffe://{host}/authority",
        ):
            try:
                await self._notifications.notify(
                    recipient,
                    NotificationKind.ENUMERATION_SUSPECTED,
                    message,
                    resource_code=entry.resource_code,
                )
            except Exception as exc:  # the audit record still carries the flag
                log.error("enumeration_notice_failed", recipient=recipient, error=repr(exc))
