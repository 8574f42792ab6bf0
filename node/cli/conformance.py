"""``govnode conformance``: run the black-box suite against a city sub-platform (第三十一条).

The suite lives in the ``conformance`` package and talks to the target over the wire only;
this module parses options, prints progress and the summary, and writes the reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from cryptography import x509

from conformance.cases import Case
from conformance.model import CaseResult, Outcome, RunReport
from conformance.report import write_reports
from conformance.runner import SelectionError, run
from conformance.session import Options, ReceiptCheck
from conformance.suite import all_cases
from conformance.web import portal_address
from gateway.identity import IdentityError, identity_of
from node.cli._common import UserError
from node.opendata import FileDigest, check_receipt

app = typer.Typer(
    help="The conformance suite a city sub-platform must pass (第三十一条).", no_args_is_help=True
)

_MARK = {Outcome.PASSED: "PASS", Outcome.FAILED: "FAIL", Outcome.SKIPPED: "SKIP"}


def _progress(index: int, total: int, case: Case, result: CaseResult | None) -> None:
    label = f"[{index:2d}/{total}] {case.info.id} {case.info.title}"
    if result is None:
        print(f"{label} ...", flush=True)
        return
    kind = "mandatory" if case.info.mandatory else "optional"
    print(
        f"    {_MARK[result.outcome]} ({kind}, {result.duration_s:.2f} s): {result.reason}",
        flush=True,
    )


def _notice(line: str) -> None:
    print(f"    {line}", flush=True)


def print_summary(report: RunReport, paths: list[Path]) -> None:
    counts = report.counts()
    print()
    print(
        f"target {report.target} ({report.target_identity or 'identity unknown'}), "
        f"tester {report.tester_identity}"
    )
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    for result in report.results:
        if result.case.mandatory and result.outcome is Outcome.FAILED:
            print(f"  FAILED {result.case.id} {result.case.title}: {result.reason}")
    if report.missing_mandatory:
        print(f"  not run: {', '.join(report.missing_mandatory)} (a partial run never passes)")
    verdict = "PASSED: every mandatory case passed" if report.passed else "NOT PASSED"
    print(verdict)
    for path in paths:
        print(f"  report: {path}")


def receipt_checker(root: Path, tester: Path) -> ReceiptCheck:
    """The node's offline receipt check for OPEN-03 (the suite may not import it): against the
    province root, in the trust domain of the tester's own certificate."""
    try:
        anchor = x509.load_pem_x509_certificate(root.read_bytes())
        own = x509.load_pem_x509_certificates((tester / "tester.crt").read_bytes())[0]
        trust_domain = identity_of(own).trust_domain
    except (OSError, ValueError, IdentityError) as exc:
        raise UserError(f"--root/--tester: {exc}") from None

    def check(receipt: bytes, sha256: str, size: int) -> Mapping[str, Any]:
        # ReceiptError is a ValueError naming the check that failed, as the suite expects.
        stated = check_receipt(receipt, anchor, trust_domain, file_digest=FileDigest(sha256, size))
        return dataclasses.asdict(stated)

    return check


def _ids(only: str | None) -> list[str] | None:
    return [i for i in only.split(",") if i.strip()] if only else None


@app.command("run")
def run_command(
    province: str = typer.Option(..., "--province", help="The province node, HOST:PORT."),
    target: str = typer.Option(..., "--target", help="The city node under test, HOST:PORT."),
    root: Path = typer.Option(..., "--root", help="The province root certificate (root.pem)."),
    tester: Path = typer.Option(
        ..., "--tester", help="The tester bundle from `govnode certs issue-tester`."
    ),
    report_dir: Path = typer.Option(
        Path("conformance-report"), "--report-dir", help="Where report.json/.xml/.html go."
    ),
    only: str | None = typer.Option(
        None, "--only", help="Comma-separated case ids (e.g. SEC-01,SEC-07); see `list`."
    ),
    region: str = typer.Option(
        "", "--region", help="The city the target must be (default: from its certificate)."
    ),
    sync_timeout: float = typer.Option(
        30.0, "--sync-timeout", min=1, max=600, help="Bound for catalog propagation, seconds."
    ),
    revocation_timeout: float = typer.Option(
        30.0,
        "--revocation-timeout",
        min=0,
        max=900,
        help=(
            "Seconds SEC-04 waits for the province's revocation of the tester's revoked "
            "certificate to reach the target (cities learn it on their heartbeat), before "
            "judging. 0: judge at once."
        ),
    ),
    max_message_bytes: int = typer.Option(
        4 * 1024 * 1024,
        "--max-message-bytes",
        min=1024,
        max=64 * 1024 * 1024,
        help="The target's message size limit (the platform default is 4 MiB).",
    ),
    verify_per_minute: int = typer.Option(
        600,
        "--verify-per-minute",
        min=1,
        max=100_000,
        help="The target's Verify rate limit per caller and resource ([oracle]; default 600).",
    ),
    portal: str = typer.Option(
        "",
        "--portal",
        help=(
            "The city's public open data portal, an https:// base URL (e.g. "
            "https://opendata.fuzhou.example). Without it the open data cases (OPEN-nn) are "
            "skipped, saying so."
        ),
    ),
    portal_requests: int = typer.Option(
        400,
        "--portal-requests",
        min=10,
        max=100_000,
        help="At most this many requests (and 60 s) for the portal's limit to answer 429 "
        "(OPEN-07).",
    ),
) -> None:
    """Run the suite against --target and write signed reports. Exit status 0 only when
    every mandatory case ran and passed."""
    options = Options(
        province=province,
        target=target,
        root=root,
        tester=tester,
        region=region,
        sync_timeout_s=sync_timeout,
        revocation_timeout_s=revocation_timeout,
        max_message_bytes=max_message_bytes,
        verify_per_minute=verify_per_minute,
        portal=portal,
        portal_request_bound=portal_requests,
        check_receipt=receipt_checker(root, tester) if portal else None,
    )
    if portal:
        try:
            portal_address(portal)
        except ValueError as exc:
            raise UserError(f"--portal: {exc}") from None
    try:
        report = asyncio.run(run(options, only=_ids(only), progress=_progress, notice=_notice))
    except (SelectionError, ValueError) as exc:
        raise UserError(str(exc)) from None
    bundle_key = (tester / "tester.key").read_bytes()
    bundle_chain = (tester / "tester.crt").read_bytes()
    paths = write_reports(report, report_dir, key_pem=bundle_key, chain_pem=bundle_chain)
    print_summary(report, [paths.json, paths.junit, paths.html])
    sys.exit(0 if report.passed else 1)


@app.command("list")
def list_command() -> None:
    """List the cases: id, mandatory or optional, article, title, and what each checks."""
    for case in all_cases():
        kind = "mandatory" if case.info.mandatory else "optional "
        print(f"{case.info.id}  {kind}  {case.info.title}  ({case.info.article})")
        print(f"         {case.info.checks}")
