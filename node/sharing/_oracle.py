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
item of at least ``min_sensitivity_level`` (node.catalog._grading). Probe resources (第三十一条)
count like any other. Routed calls are limited by the node that owns the resource, for the
original caller. Calls nobody limits never touch the database here. The admission runs inside
the access decision (node.sharing._decision), after the request's items have been allowed.

The budgets live in the node's database (node.sharing._budgets), not in process memory: a restart
forgets nothing, and every process of a node behind one load balancer spends from the same
budget. Each admission is one write transaction whose decision is a single atomic statement, so
concurrent callers, in one process or many, never overspend a budget.

Clocks: the token bucket is refilled by **wall-clock** time (:func:`wall_clock`, epoch seconds),
not a monotonic clock, because its state is shared: a monotonic reading means nothing to another
process or after a restart. What a wall clock can do wrong is bounded: the stored refill instant
and day never move back (a process whose clock lags refills nothing until its clock passes the
last refill, and counts against the newer day), so a step back gives no tokens, and clocks
skewed by *s* seconds between processes give at most *s* × ``verify_per_minute`` / 60 extra
tokens, once. Keep the node's hosts on NTP, as TLS needs anyway. :func:`monotonic` only paces
the pruning of rows that no longer matter.

Pure domain and storage: no grpc.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping

import structlog

from gateway.identity import Identity, authority_identity, provider_identity
from node.catalog import ResourceEntry, highest_level
from node.config import OracleSection
from node.errors import ResourceExhausted
from node.sharing._budgets import PRUNE_SECONDS, Decision, OracleBudgets, available_tokens
from node.sharing._grants import is_provider
from node.sharing._notifications import NotificationKind, Notifications
from node.storage import Database
from node.times import CST

log = structlog.get_logger("govnode.oracle")


def monotonic() -> float:
    """Seconds on a clock that never goes back, for pacing this process's pruning (tests
    replace it)."""
    return time.monotonic()


def wall_clock() -> dt.datetime:
    """The current time, timezone-aware: the budgets' clock (tests replace it)."""
    return dt.datetime.now(dt.UTC)


def key_digest(key: Mapping[str, str]) -> bytes:
    """A short digest of a record key, the same for the same items whatever their order."""
    text = json.dumps(sorted(key.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).digest()


def _day_number(day: dt.date) -> int:
    """A day as the integer YYYYMMDD: how ``oracle_budget.day`` stores it, ordered like days."""
    return day.year * 10_000 + day.month * 100 + day.day


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


#: Why the oracle guard refuses a call: the per-minute rate, or the daily quota.
ORACLE_REFUSALS = ("rate_minute", "quota_day")


class OracleGuard:
    """Quotas, rate limits and the enumeration watch for Verify (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        config: OracleSection,
        notifications: Notifications | None,
        trust_domain: str,
    ) -> None:
        self._config = config
        self._notifications = notifications
        self._trust_domain = trust_domain
        self._budgets = OracleBudgets(db, config)
        self._last_prune = float("-inf")
        #: Told each refusal's reason (one of :data:`ORACLE_REFUSALS`) and each suspected
        #: enumeration (``"enumeration"``): the node's metrics (node.ops); None: nobody.
        self.observer: Callable[[str], None] | None = None

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
        wall = wall_clock()
        now, today = wall.timestamp(), wall.astimezone(CST)
        tick = monotonic()
        prune = tick - self._last_prune >= PRUNE_SECONDS
        if prune:  # decided before the await: one pruning per period, however many calls
            self._last_prune = tick
        watching = self._config.enumeration_distinct_keys > 0
        decision = await self._budgets.admit(
            str(caller),
            entry.resource_code,
            [key_digest(key).hex() for key in keys] if watching else [],
            rows=len(keys),
            now=now,
            day=_day_number(today.date()),
            prune=prune,
        )
        if not decision.admitted:
            refusal, reason = self._refusal(decision, now, today, caller, entry, method)
            if self.observer is not None:
                self.observer(reason)
            raise refusal
        if decision.flagged:
            if self.observer is not None:
                self.observer("enumeration")
            await self._notify(caller, entry, method, request_id)
        return decision.flagged

    def _refusal(
        self,
        decision: Decision,
        now: float,
        today: dt.datetime,
        caller: Identity,
        entry: ResourceEntry,
        method: str,
    ) -> tuple[ResourceExhausted, str]:
        """Which limit refused the call (and its name in :data:`ORACLE_REFUSALS`), and when to
        retry, from the budget as it stood."""
        per_minute, per_day = self._config.verify_per_minute, self._config.verify_per_day
        where = f"{caller} on resource {entry.resource_code} ({entry.name})"
        if per_minute:
            tokens = available_tokens(self._config, decision.tokens, decision.refilled_at, now)
            if tokens < 1.0:
                wait = (1.0 - tokens) / (per_minute / 60.0)
                return ResourceExhausted(
                    f"{method} rate limit exceeded: {per_minute} Verify calls per minute for "
                    f"{where} (oracle protection, 第三十七条); retry after {_seconds_text(wait)}",
                    retry_after_s=wait,
                ), "rate_minute"
        # Not the bucket, so today's count: the stored day is today's or, from a process whose
        # clock runs ahead, a later one, which counts as today (see the module docstring).
        used = decision.used_today if decision.day >= _day_number(today.date()) else 0
        midnight = dt.datetime.combine(today.date() + dt.timedelta(days=1), dt.time(), CST)
        wait = (midnight - today).total_seconds()
        return ResourceExhausted(
            f"{method} daily quota exhausted: {per_day} Verify calls per day for {where}, "
            f"{used} used today (oracle protection, 第三十七条); retry after "
            f"00:00 China Standard Time, in {_seconds_text(wait)}",
            retry_after_s=wait,
        ), "quota_day"

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
        for recipient in (
            provider_identity(entry.region, self._trust_domain, entry.provider_code),
            authority_identity(entry.region, self._trust_domain),
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
