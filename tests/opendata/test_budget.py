"""Budgets per member of the public (node.opendata._budget) with an injected clock: a recipient
spends its burst, then waits for tokens at its rate, told how long; a download costs more; a
key's holder gets the keys' rate; a rate of 0 is no limit; recipients are remembered up to a
bound, the least recently seen forgotten first."""

from __future__ import annotations

import pytest

from gateway.ratelimit import KeyedBuckets, TokenBucket
from node.errors import ResourceExhausted
from node.opendata import BudgetLimits, PublicBudgets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LIMITS = BudgetLimits(
    public_requests_per_minute=60,  # one a second
    public_burst=5,
    key_requests_per_minute=600,
    key_burst=20,
    download_cost=3,
    max_recipients=3,
)


def budgets(limits: BudgetLimits = LIMITS) -> tuple[PublicBudgets, Clock]:
    clock = Clock()
    return PublicBudgets(limits, clock=clock), clock


def refusal(budgets: PublicBudgets, recipient: str, *, download: bool = False) -> ResourceExhausted:
    with pytest.raises(ResourceExhausted) as caught:
        budgets.spend(recipient, download=download)
    return caught.value


def test_a_recipient_spends_its_burst_then_waits_for_its_rate() -> None:
    spent, clock = budgets()
    for _ in range(5):
        spent.spend("ip:203.0.113.9")
    refused = refusal(spent, "ip:203.0.113.9")
    assert refused.retry_after_s == pytest.approx(1.0)
    assert "'ip:203.0.113.9'" in refused.message
    assert "60 requests a minute, bursts of 5" in refused.message
    assert "public_requests_per_minute" in refused.message
    # Another member of the public has a budget of their own.
    spent.spend("ip:198.51.100.7")
    clock.now += 0.5
    assert refusal(spent, "ip:203.0.113.9").retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    spent.spend("ip:203.0.113.9")  # one token came back
    refusal(spent, "ip:203.0.113.9")
    clock.now += 60
    for _ in range(5):  # refilled to the burst, no further
        spent.spend("ip:203.0.113.9")
    refusal(spent, "ip:203.0.113.9")


def test_a_download_costs_download_cost_and_a_refusal_takes_nothing() -> None:
    spent, clock = budgets()
    spent.spend("ip:203.0.113.9", download=True)  # 3 of 5
    refused = refusal(spent, "ip:203.0.113.9", download=True)  # 2 left, 3 needed
    assert refused.retry_after_s == pytest.approx(1.0)
    assert "a download costs 3 requests" in refused.message
    spent.spend("ip:203.0.113.9")
    spent.spend("ip:203.0.113.9")  # the refused download took nothing
    refusal(spent, "ip:203.0.113.9")
    clock.now += 3
    spent.spend("ip:203.0.113.9", download=True)


def test_a_keys_holder_has_the_keys_rate_and_a_zero_rate_is_no_limit() -> None:
    spent, _ = budgets()
    for _ in range(20):
        spent.spend("key:ab12cd34")
    refused = refusal(spent, "key:ab12cd34")
    assert refused.retry_after_s == pytest.approx(0.1)
    assert "600 requests a minute, bursts of 20" in refused.message
    assert "key_requests_per_minute" in refused.message
    off, _ = budgets(BudgetLimits(public_requests_per_minute=0, public_burst=1, download_cost=1))
    for _ in range(1000):
        off.spend("ip:203.0.113.9", download=True)
    assert off.tracked == 0


def test_recipients_are_bounded_the_least_recently_seen_forgotten_first() -> None:
    spent, _ = budgets()
    for _ in range(5):
        spent.spend("ip:10.0.0.1")
    spent.spend("ip:10.0.0.2")
    spent.spend("ip:10.0.0.3")
    refusal(spent, "ip:10.0.0.1")  # seen again: now the most recent
    spent.spend("ip:10.0.0.4")  # forgets 10.0.0.2, the least recently seen
    assert spent.tracked == 3
    refusal(spent, "ip:10.0.0.1")  # still remembered, still empty


def test_the_buckets_underneath() -> None:
    bucket = TokenBucket(capacity=10, tokens=10, at=0.0, per_minute=120)
    assert bucket.take(0.0, cost=10) == 0.0
    assert bucket.take(0.0, cost=4) == pytest.approx(2.0)
    assert bucket.take(2.0, cost=4) == 0.0
    # A cost above the burst is capped at it, so it is never refused for ever.
    assert bucket.take(100.0, cost=50) == 0.0
    clock = Clock()
    keyed = KeyedBuckets(max_keys=1, clock=clock)
    assert keyed.take("a", burst=1, per_minute=1) == 0.0
    assert keyed.take("a", burst=1, per_minute=1) == pytest.approx(60.0)
    assert keyed.take("b", burst=1, per_minute=1) == 0.0  # forgets a
    assert keyed.take("a", burst=1, per_minute=1) == 0.0
    with pytest.raises(ValueError):
        KeyedBuckets(max_keys=0)
