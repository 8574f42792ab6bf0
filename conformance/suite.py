"""The suite: every conformance case, in the order a run executes them."""

from __future__ import annotations

from conformance.cases import Case, connectivity, governance, opendata, opendata_access, security


def all_cases() -> list[Case]:
    connectivity_cases = connectivity.CASES
    # The clean-up case must come last: it withdraws the probes the others use, and the audit
    # case looks for every call made before it.
    cleanup = [c for c in connectivity_cases if c.info.id == connectivity.CLEANUP_ID]
    audit = [c for c in security.CASES if c.info.id == security.AUDIT_ID]
    # OPEN-07 spends the portal's budget: it comes after the other open data cases.
    open_data = opendata.CASES + opendata_access.CASES
    everything = connectivity_cases + security.CASES + governance.CASES + open_data
    rest = [c for c in everything if c not in cleanup + audit]
    return rest + audit + cleanup
