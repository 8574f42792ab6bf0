"""Conformance cases: how one is declared and how it reports its verdict.

A case is an async function taking the run's :class:`~conformance.session.Session` and a list
it appends evidence lines to. It returns a one-line reason when the target conforms and raises
:class:`Failed` (or :class:`~conformance.session.SetupFailed`) when it does not; anything else
it raises is reported as a failure of that case, never a crash of the run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from conformance.model import CaseInfo
from conformance.session import Session

CaseFn = Callable[[Session, list[str]], Awaitable[str]]


class Failed(Exception):
    """The target does not conform; the message says how, in one line."""


class NotRunnable(Exception):
    """The case cannot be run from this machine (reported as skipped, never as passed)."""


@dataclass(frozen=True)
class Case:
    info: CaseInfo
    run: CaseFn
    #: The case may wait up to Options.revocation_timeout_s for a revocation to reach the
    #: target, on top of the runner's time limit for a case.
    waits_for_revocation: bool = False


def case(
    registry: list[Case],
    id: str,
    title: str,
    *,
    article: str,
    checks: str,
    mandatory: bool = True,
    waits_for_revocation: bool = False,
) -> Callable[[CaseFn], CaseFn]:
    """Register ``fn`` as the case ``id`` in ``registry``."""

    def register(fn: CaseFn) -> CaseFn:
        info = CaseInfo(id, title, mandatory, article, checks)
        registry.append(Case(info, fn, waits_for_revocation))
        return fn

    return register
