"""What a conformance run is made of: cases, their results, and the run's report.

Plain data, no I/O: the runner fills it in, :mod:`conformance.report` writes and signs it, and
the province reads it back when it approves a city's sub-platform (第三十一条).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

SUITE_NAME = "govnode-conformance"
#: Bumped whenever a case is added, removed or changes what it checks; the approving province
#: compares a report's mandatory cases with its own suite's.
SUITE_VERSION = "3"  # 2: grant and rate-limit cases (SEC-15..18); 3: open data (OPEN-01..07)


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run: not selected, or a case it needs could not set up


@dataclass(frozen=True)
class CaseInfo:
    """One conformance case: a stable id (CONN-nn, SEC-nn, OPEN-nn), what it checks, and why."""

    id: str
    title: str
    mandatory: bool
    article: str
    checks: str

    @property
    def group(self) -> str:
        if self.id.startswith("CONN"):
            return "connectivity"
        return "opendata" if self.id.startswith("OPEN") else "security"


@dataclass
class CaseResult:
    case: CaseInfo
    outcome: Outcome
    reason: str  # one readable line: why it passed, failed or was skipped
    evidence: list[str] = field(default_factory=list)  # what was observed, line by line
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "title": self.case.title,
            "group": self.case.group,
            "mandatory": self.case.mandatory,
            "article": self.case.article,
            "checks": self.case.checks,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "evidence": list(self.evidence),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class RunReport:
    """Everything a tester hands to the province: who tested what, and what happened."""

    province: str  # HOST:PORT as given
    target: str  # HOST:PORT as given
    tester_identity: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    target_identity: str = ""  # from the target's server certificate, when the handshake worked
    target_chain_pem: str = ""  # the target's server certificate chain as presented
    selected: list[str] | None = None  # --only, or None for the whole suite
    mandatory_ids: list[str] = field(default_factory=list)  # every mandatory case of the suite
    results: list[CaseResult] = field(default_factory=list)

    @property
    def failed_mandatory(self) -> list[str]:
        return [
            r.case.id for r in self.results if r.case.mandatory and r.outcome is not Outcome.PASSED
        ]

    @property
    def missing_mandatory(self) -> list[str]:
        ran = {r.case.id for r in self.results if r.outcome is not Outcome.SKIPPED}
        return [i for i in self.mandatory_ids if i not in ran]

    @property
    def passed(self) -> bool:
        """Every mandatory case of the suite ran and passed (the exit status and approval)."""
        return not self.failed_mandatory and not self.missing_mandatory

    def counts(self) -> dict[str, int]:
        out = {o.value: 0 for o in Outcome}
        for r in self.results:
            out[r.outcome.value] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": SUITE_NAME,
            "suite_version": SUITE_VERSION,
            "province": self.province,
            "target": self.target,
            "target_identity": self.target_identity,
            "target_chain_pem": self.target_chain_pem,
            "tester_identity": self.tester_identity,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else "",
            "selected": self.selected,
            "mandatory_ids": list(self.mandatory_ids),
            "passed": self.passed,
            "failed_mandatory": self.failed_mandatory,
            "missing_mandatory": self.missing_mandatory,
            "counts": self.counts(),
            "results": [r.to_json() for r in self.results],
        }
