"""The bench's output: a table for people, then one JSON object as the very last line."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from bench.scenarios import Options, Outcome, Rate, Ratio, number

#: Keys every JSON line carries (null when not measured), in this order; scenarios may add more.
FIGURES = (
    "verify_calls_per_s",
    "verify_p50_ms",
    "verify_p99_ms",
    "echo_calls_per_s",
    "echo_p50_ms",
    "echo_p99_ms",
    "verify_ratio",
    "submit_records_per_s",
    "sqlite_records_per_s",
    "submit_ratio",
    "echo_cpu_us_per_call",
    "verify_cpu_us_per_call",
    "verify_cpu_ratio",
    "sqlite_cpu_us_per_record",
    "submit_cpu_us_per_record",
    "submit_cpu_ratio",
)


def table(results: Sequence[tuple[str, Outcome]]) -> str:
    w = max([9, *(len(name) for name, outcome in results if outcome.rows)])
    header = (
        f"{'scenario':<{w}} {'measurement':<37} {'throughput':>20} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU µs':>8}"
    )
    lines = [header, "-" * len(header)]
    notes: list[str] = []
    problems: list[str] = []
    limits: list[str] = []
    for name, outcome in results:
        for row in outcome.rows:
            if isinstance(row, Rate):
                rate = f"{number(row.per_s)} {row.unit}"
                p50, p99 = number(row.p50_ms, 2), number(row.p99_ms, 2)
                lines.append(
                    f"{name:<{w}} {row.label:<37} {rate:>20} "
                    f"{p50:>8} {p99:>8} {number(row.cpu_us, 1):>8}"
                )
            elif isinstance(row, Ratio) and row.target is None:
                lines.append(f"{name:<{w}} {row.label:<37} {number(row.value, 3):>20}")
            elif isinstance(row, Ratio):
                verdict = (
                    "not measured"
                    if row.value is None
                    else ("meets target" if row.value >= row.target else "BELOW target")
                )
                value = f"{number(row.value, 3)}"
                lines.append(
                    f"{name:<{w}} {row.label:<37} {value:>20}   "
                    f"(target >= {row.target:.2f}: {verdict})"
                )
        notes.extend(outcome.notes)
        problems.extend(outcome.problems)
        if any(_below(row) for row in outcome.rows):
            limits.extend(outcome.limits)
    lines.append("(CPU µs: the server's user + system CPU time per call or record, from /proc)")
    if notes:
        lines += ["", "How measured:", *(f"  - {n}" for n in notes)]
    if limits:
        lines += ["", "Below target: what limits it, and what was tried:"]
        lines += [f"  - {limit}" for limit in limits]
    if problems:
        lines += ["", "Problems:", *(f"  - {p}" for p in problems)]
    return "\n".join(lines)


def _below(row: Rate | Ratio) -> bool:
    return (
        isinstance(row, Ratio)
        and row.target is not None
        and row.value is not None
        and row.value < row.target
    )


def _cpus() -> dict[str, int | None]:
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = None
    return {"cpus": os.cpu_count(), "usable_cpus": usable}


def summary(results: Sequence[tuple[str, Outcome]], options: Options) -> dict[str, Any]:
    figures: dict[str, Any] = dict.fromkeys(FIGURES)
    targets: dict[str, float] = {}
    problems: list[str] = []
    for _, outcome in results:
        figures.update(outcome.figures)
        targets.update(outcome.targets)
        problems.extend(outcome.problems)
    return {
        **figures,
        "targets": targets,
        "machine": _cpus(),
        "settings": {
            "duration_s": options.duration,
            "rounds": options.rounds,
            "channels": options.channels,
            "concurrency": options.concurrency,
            "max_calls": options.max_calls,
            "batches": options.batches,
            "batch_size": options.batch_size,
        },
        "problems": problems,
    }


def json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))
