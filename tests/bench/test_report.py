"""What `make bench` prints for a ratio below its target: what limits it, and what was tried."""

from __future__ import annotations

from bench.report import table
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
