"""What `make bench` prints for a ratio below its target (what limits it, and what was tried),
and which targets a `bench --scale` run met."""

from __future__ import annotations

from bench.report import table
from bench.scale import verdicts
from bench.scenarios import Outcome, Rate, Ratio


def outcome(value: float | None) -> Outcome:
    return Outcome(
        rows=[Rate("govnode Verify", 1000.0, "calls/s"), Ratio("Verify / echo", value, 0.6)],
        limits=["Verify / echo: the audit log's commit, measured"],
    )


def test_a_ratio_below_its_target_is_printed_with_what_limits_it() -> None:
    printed = table([("verify", outcome(0.45))])
    assert "(target >= 0.60: BELOW target)" in printed
    assert printed.endswith(
        "Below target: what limits it, and what was tried:\n"
        "  - Verify / echo: the audit log's commit, measured"
    )


def test_a_ratio_that_meets_its_target_or_was_not_measured_prints_no_limits() -> None:
    for value in (0.6, 0.9, None):
        printed = table([("verify", outcome(value))])
        assert "Below target" not in printed
        assert "the audit log's commit" not in printed


def test_the_scale_run_says_which_targets_it_met() -> None:
    figures = {
        "light": {
            "100000": {"verify": {"p99_ms": 4.0}, "query": {"p99_ms": 14.0}},
            "10000000": {"verify": {"p99_ms": 4.5}, "query": {"p99_ms": 30.0}},
        },
        "compare": {
            "size": 10_000,
            "rounds": [
                {"results_per_message": 1000, "wall_s": 0.38},
                {"results_per_message": 1, "wall_s": 1.8},
                {"results_per_message": 1000, "wall_s": 0.36},
            ],
        },
        "catalog": {"entries": 100_000, "same_digest_s": 13.5},
    }
    not_met = "not met (what limits it, measured: README, Province scale)"
    assert verdicts(figures) == [
        "verify p99 under 5 ms at 10,000,000: 4.5 ms, met",
        "verify p99 at 10,000,000 within 2x of at 100,000: 1.12x, met",
        f"query p99 under 5 ms at 10,000,000: 30.0 ms, {not_met}",
        f"query p99 at 10,000,000 within 2x of at 100,000: 2.14x, {not_met}",
        "compare of 10,000 under 1 s, 1000 a message: 0.36 s, met",
        f"compare of 10,000 under 1 s, 1 a message: 1.8 s, {not_met}",
        f"catalog of 100,000 to a new city under 5 s: 13.5 s, {not_met}",
    ]
    assert verdicts({"catalog": {"entries": 10, "gave_up_after_s": 1800.0}}) == [
        f"catalog of 10 to a new city under 5 s: never the same digest, {not_met}"
    ]
    assert verdicts({}) == []
