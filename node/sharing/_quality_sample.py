"""The data management authority's quality sample (一致性, 第十五条; 一数一源, 第十三条): one
narrow exception to the access decision, for Compare only.

A node measuring 一致性 checks a sample of a resource R's values against the resource S that is
the registered authoritative source of their standard data element, by key (node.quality). When
S is at another node, that node is asked with Compare as R's region's data management authority,
naming R in ``CompareRequest.quality_sample_for``. Such a call is not an agency's share call: it
needs no grant, and it is outside the Verify oracle's rate limit, quota and enumeration watch
(node.sharing._oracle), since the authority watches quality by duty, not use. What keeps it
narrow (:func:`check_quality_sample`, every rule a refusal):

- only an authority identity, and only for a resource of its own region (R's region; a node
  vouches in a caller assertion only for callers of its region, gateway.assertion);
- R is in this node's catalog, and S is the source of a standard data element R carries: an item
  of S marked ``authoritative_source`` with an element that an item of R carries, not as source;
- the call keys on S's key items and claims only those source items;
- neither R nor S is withdrawn or a probe resource.

Compare's answer is match / mismatch / not found, never a value, whoever asks. Pure: no grpc.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.identity import Identity, Role
from node.catalog import ResourceEntry, ResourceStatus
from node.errors import FailedPrecondition, PermissionDenied
from node.sharing._decision import Touches

__all__ = ["check_quality_sample", "sourced_items"]


def sourced_items(source: ResourceEntry, sampled: ResourceEntry) -> frozenset[str]:
    """The items of ``source`` that are the authoritative source of an element ``sampled``
    carries (not as a source itself)."""
    elements = {
        i.standard_element
        for i in sampled.items
        if i.standard_element and not i.authoritative_source
    }
    return frozenset(
        i.name for i in source.items if i.authoritative_source and i.standard_element in elements
    )


def _names(groups: Iterable[Iterable[str]]) -> set[str]:
    return {name for group in groups for name in group}


def check_quality_sample(
    caller: Identity, source: ResourceEntry, sampled: ResourceEntry, touches: Touches
) -> None:
    """Allow ``caller``'s Compare on ``source`` as a quality sample of ``sampled``, or raise
    the refusal naming the rule (see the module)."""
    what = (
        f"Compare on resource {source.resource_code} as a quality sample of resource "
        f"{sampled.resource_code} (一致性, 第十五条)"
    )
    if caller.role is not Role.AUTHORITY:
        raise PermissionDenied(
            f"{what}: quality samples are taken by the data management authority of the sampled "
            f"resource's region, and {caller} is not an authority; agencies compare under the "
            "resource's share type and their grants (leave quality_sample_for empty)"
        )
    if caller.region != sampled.region:
        raise PermissionDenied(
            f"{what}: resource {sampled.resource_code} belongs to region {sampled.region}; only "
            f"that region's data management authority samples it, not {caller}"
        )
    for entry in (source, sampled):
        if entry.status is ResourceStatus.WITHDRAWN:
            raise FailedPrecondition(f"{what}: resource {entry.resource_code} is withdrawn")
        if entry.probe:
            raise PermissionDenied(
                f"{what}: resource {entry.resource_code} is a probe resource (第三十一条), "
                "whose quality is not sampled"
            )
    allowed = sourced_items(source, sampled)
    if not allowed:
        raise PermissionDenied(
            f"{what}: resource {source.resource_code} is the authoritative source of no standard "
            f"data element that resource {sampled.resource_code} carries (一数一源)"
        )
    claimed = _names(touches.claimed) - allowed
    if claimed:
        raise PermissionDenied(
            f"{what}: claimed item {', '.join(sorted(claimed)[:5])} is not a source of an "
            f"element of {sampled.resource_code}; a quality sample claims only "
            f"{', '.join(sorted(allowed))}"
        )
    keys = {i.name for i in source.items if i.key}
    keyed = _names(touches.keys) - keys
    if keyed:
        raise PermissionDenied(
            f"{what}: key item {', '.join(sorted(keyed)[:5])} is not a key item of "
            f"{source.resource_code}; a quality sample keys only on {', '.join(sorted(keys))}"
        )
