"""Running the suite: every selected case in order, each bounded in time, probes cleaned up.

A case that fails, cannot set up, times out or raises anything unexpected becomes a FAILED
result with a readable reason; the run itself only stops early when it is cancelled. Probe
resources are withdrawn at the end whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Sequence

import grpc.aio
from cryptography.hazmat.primitives.serialization import Encoding

from conformance.cases import Case, Failed, NotRunnable
from conformance.model import CaseResult, Outcome, RunReport
from conformance.session import Options, Session, SetupFailed, load_bundle
from conformance.suite import all_cases
from conformance.wire import tls_probe
from gateway.identity import IdentityError, identity_of

#: Called before a case runs (result None) and after it (its result).
Progress = Callable[[int, int, Case, CaseResult | None], None]
CASE_TIMEOUT_S = 120.0


class SelectionError(ValueError):
    """--only names cases this suite does not have."""


def select(cases: Sequence[Case], only: Sequence[str] | None) -> set[str]:
    ids = {c.info.id for c in cases}
    if not only:
        return ids
    wanted = {i.strip().upper() for i in only if i.strip()}
    unknown = sorted(wanted - ids)
    if unknown:
        raise SelectionError(
            f"unknown case id(s) {', '.join(unknown)}; the suite has {', '.join(sorted(ids))}"
        )
    return wanted


async def run_case(case: Case, session: Session, limit_s: float = CASE_TIMEOUT_S) -> CaseResult:
    evidence: list[str] = []
    began = time.monotonic()
    try:
        reason = await asyncio.wait_for(case.run(session, evidence), limit_s)
        outcome = Outcome.PASSED
    except (Failed, SetupFailed) as exc:
        outcome, reason = Outcome.FAILED, str(exc)
    except NotRunnable as exc:
        outcome, reason = Outcome.SKIPPED, f"not runnable here: {exc}"
    except TimeoutError:
        outcome, reason = Outcome.FAILED, f"the case did not finish within {limit_s:.0f} s"
    except grpc.aio.AioRpcError as exc:
        outcome = Outcome.FAILED
        reason = f"unexpected gRPC error {exc.code().name}: {exc.details()}"
    except Exception as exc:  # a target that is not govnode at all must not crash the run
        outcome = Outcome.FAILED
        reason = f"the case could not complete: {type(exc).__name__}: {exc}"
    return CaseResult(case.info, outcome, reason, evidence, time.monotonic() - began)


def _node_identity(address: str, options: Options, session: Session) -> str:
    files = session.bundle.files
    out = tls_probe(
        address, root=files.root, cert=files.chain, key=files.key, timeout=options.call_timeout_s
    )
    if not out.chain:
        return ""
    try:
        return identity_of(out.chain[0]).uri
    except IdentityError:
        return ""


async def run(
    options: Options,
    *,
    only: Sequence[str] | None = None,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the suite (or the ``only`` cases) against ``options.target``; ``notice`` is told,
    line by line, when a case waits (e.g. for a revocation to reach the target).

    Raises ValueError (bad tester bundle) or :class:`SelectionError` before anything is sent.
    """
    bundle = load_bundle(options.tester, options.root)
    cases = all_cases()
    selected = select(cases, only)
    report = RunReport(
        province=options.province,
        target=options.target,
        tester_identity=bundle.identity.uri,
        started_at=dt.datetime.now(dt.UTC),
        selected=sorted(selected) if only else None,
        mandatory_ids=[c.info.id for c in cases if c.info.mandatory],
    )
    session = Session(options, bundle)
    if notice is not None:
        session.notice = notice
    session.province_identity = await asyncio.to_thread(
        _node_identity, options.province, options, session
    )
    try:
        for index, case in enumerate(cases, start=1):
            if case.info.id not in selected:
                report.results.append(
                    CaseResult(case.info, Outcome.SKIPPED, "not selected (--only)")
                )
                continue
            if progress:
                progress(index, len(cases), case, None)
            limit = CASE_TIMEOUT_S
            if case.waits_for_revocation:
                limit += options.revocation_timeout_s
            result = await run_case(case, session, limit)
            report.results.append(result)
            if progress:
                progress(index, len(cases), case, result)
    finally:
        # The clean-up case reports what was left behind; here it only must not crash the run.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.cleanup(), CASE_TIMEOUT_S)
        if not session.target_chain:
            out = await asyncio.to_thread(
                tls_probe,
                options.target,
                root=bundle.files.root,
                cert=bundle.files.chain,
                key=bundle.files.key,
                timeout=options.call_timeout_s,
            )
            session.target_chain = out.chain if out.handshake_ok else []
        await session.close()
    if session.target_chain:
        report.target_chain_pem = "".join(
            c.public_bytes(Encoding.PEM).decode() for c in session.target_chain
        )
        try:
            report.target_identity = identity_of(session.target_chain[0]).uri
        except IdentityError:
            report.target_identity = ""
    report.finished_at = dt.datetime.now(dt.UTC)
    return report
