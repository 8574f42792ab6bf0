"""Conformance probe resources (第三十一条): what a tester may do, and nothing else.

A tester (``spiffe://<region>.<trust-domain>/tester/<name>``, issued by the province with
``govnode certs issue-tester``) checks a node from outside, calling it as an agency system
would, but only on resources of its own making: probe resources (``ResourceEntry.probe``).
For this purpose only:

- only testers register, update and withdraw probe resources, and testers nothing else; an
  entry never becomes or stops being a probe (:meth:`node.catalog.Catalog.update`);
- only testers submit records into probe resources (probe records), and into nothing else;
- testers Verify, Compare and Query probe resources only, and are never their provider: share
  type, share method and masking apply to them exactly as to any other agency
  (node.sharing._decision);
- probe resources are never counted in aggregation status.

Catalog reads and GetNodeInfo are open to testers as to every caller. A probe's provider_code
is checked like any other (a valid code of the node's region) but need not be the tester's.

Each check returns True when the probe rules settle the call (a tester on a probe: no provider
check follows) and False when the usual provider rule still applies; a refusal raises
:class:`PermissionDenied`. Pure domain: no database, no grpc.
"""

from __future__ import annotations

from gateway.identity import Identity, Role
from node.catalog._types import ResourceEntry
from node.errors import PermissionDenied

#: The rule every tester refusal on a resource states.
TESTERS_USE_PROBES_ONLY = "tester identities may use only probe resources (第三十一条)"


def is_tester(caller: Identity) -> bool:
    return caller.role is Role.TESTER


def check_catalog_write(caller: Identity, code: str, *, probe: bool, action: str) -> bool:
    """The probe rules for a catalog write on entry ``code``, which is (or, registering, would
    be) a probe when ``probe``; ``action`` is "register", "change" or "withdraw"."""
    if is_tester(caller):
        if not probe:
            raise PermissionDenied(
                f"tester {caller.uri} may not {action} resource {code}: testers may only "
                f"{action} probe resources (ResourceEntry.probe = true, 第三十一条)"
            )
        return True
    if not probe:
        return False
    if action == "register":
        raise PermissionDenied(
            f"{_who(caller)} may not register resource {code} as a probe: probe resources are "
            "registered by conformance testers only (第三十一条)"
        )
    raise PermissionDenied(
        f"{_who(caller)} may not {action} resource {code}: it is a conformance probe, and "
        "probe resources are registered, changed and withdrawn by conformance testers only "
        "(第三十一条)"
    )


def check_submitter(caller: Identity, entry: ResourceEntry) -> bool:
    """The probe rules for submitting records into ``entry`` (汇聚)."""
    code = entry.resource_code
    if is_tester(caller):
        if not entry.probe:
            raise PermissionDenied(
                f"{TESTERS_USE_PROBES_ONLY}: resource {code} is not a probe resource, so "
                f"tester {caller.uri} may not submit records to it"
            )
        return True
    if entry.probe:
        raise PermissionDenied(
            f"{_who(caller)} may not submit records of resource {code}: it is a conformance "
            "probe, and its records are probe records, submitted by conformance testers only "
            "(第三十一条)"
        )
    return False


def check_tester_use(caller: Identity, entry: ResourceEntry) -> None:
    """Refuse a tester's Verify, Compare or Query on anything but a probe resource."""
    if is_tester(caller) and not entry.probe:
        raise PermissionDenied(
            f"{TESTERS_USE_PROBES_ONLY}: resource {entry.resource_code} ({entry.name}) is not "
            f"a probe resource, so tester {caller.uri} may not use it"
        )


def _who(caller: Identity) -> str:
    if caller.role is Role.AGENCY:
        return f"agency {caller.subject}"
    return f"{caller.role.value} {caller.uri}"
