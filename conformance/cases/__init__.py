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


def case(
    registry: list[Case], id: str, title: str, *, article: str, checks: str, mandatory: bool = True
) -> Callable[[CaseFn], CaseFn]:
    """Register ``fn`` as the case ``id`` in ``registry``."""

    def register(fn: CaseFn) -> CaseFn:
        registry.append(Case(CaseInfo(id, title, mandatory, article, checks), fn))
        return fn

    return register
