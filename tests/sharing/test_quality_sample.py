"""The authority's quality sample (一致性): the one exception to the access decision, and each
of its refusals (node.sharing.check_quality_sample)."""

from __future__ import annotations

import pytest

from gateway.identity import Identity, Role
from node.catalog import ResourceStatus
from node.errors import FailedPrecondition, PermissionDenied
from node.sharing import Touches, check_quality_sample
from tests.support.entries import (
    NODE_REGION,
    TRUST_DOMAIN,
    agency,
    agency_code,
    item,
    make_entry,
)

SOURCE = make_entry(
    41,
    agency_code(7),
    region=NODE_REGION,  # as the catalog stores it
    items=(
        item("sfzhm", key=True, required=True, standard_element="DE.GMSFHM"),
        item("xm", standard_element="DE.XM", authoritative_source=True),
        item("dz", standard_element="DE.DZ", authoritative_source=True),
        item("bz"),
    ),
)
SAMPLED = make_entry(
    42,
    agency_code(8),
    region=NODE_REGION,
    items=(
        item("bh", key=True, required=True),
        item("gmsfhm", standard_element="DE.GMSFHM"),
        item("xingming", standard_element="DE.XM"),
    ),
)
AUTHORITY = Identity(NODE_REGION, TRUST_DOMAIN, Role.AUTHORITY)
SAMPLE = Touches.compare([({"sfzhm": "P1"}, ("xm",))])


def test_the_sampled_resources_authority_may_sample_its_source() -> None:
    check_quality_sample(AUTHORITY, SOURCE, SAMPLED, SAMPLE)


@pytest.mark.parametrize(
    "caller",
    [agency(agency_code(8)), Identity(NODE_REGION, TRUST_DOMAIN, Role.NODE)],
    ids=["agency", "node"],
)
def test_only_an_authority_samples(caller: Identity) -> None:
    with pytest.raises(PermissionDenied) as err:
        check_quality_sample(caller, SOURCE, SAMPLED, SAMPLE)
    assert err.value.message == (
        f"Compare on resource {SOURCE.resource_code} as a quality sample of resource "
        f"{SAMPLED.resource_code} (一致性, 第十五条): quality samples are taken by the data "
        f"management authority of the sampled resource's region, and {caller} is not an "
        "authority; agencies compare under the resource's share type and their grants (leave "
        "quality_sample_for empty)"
    )


def test_another_regions_authority_is_refused() -> None:
    other = Identity("350200", TRUST_DOMAIN, Role.AUTHORITY)
    with pytest.raises(PermissionDenied) as err:
        check_quality_sample(other, SOURCE, SAMPLED, SAMPLE)
    assert f"resource {SAMPLED.resource_code} belongs to region {NODE_REGION}; only" in (
        err.value.message
    )


def test_a_resource_that_sources_nothing_the_sample_carries_is_refused() -> None:
    unrelated = SAMPLED.model_copy(update={"items": SAMPLED.items[:2]})
    with pytest.raises(PermissionDenied) as err:
        check_quality_sample(AUTHORITY, SOURCE, unrelated, SAMPLE)
    assert err.value.message.endswith(
        f"resource {SOURCE.resource_code} is the authoritative source of no standard data "
        f"element that resource {SAMPLED.resource_code} carries (一数一源)"
    )


def test_claims_beyond_the_sourced_items_and_keys_beyond_the_key_are_refused() -> None:
    # dz is a source, but of an element the sampled resource does not carry.
    for claims in (("dz",), ("bz",), ("sfzhm",)):
        touches = Touches.compare([({"sfzhm": "P1"}, ("xm", *claims))])
        with pytest.raises(PermissionDenied) as err:
            check_quality_sample(AUTHORITY, SOURCE, SAMPLED, touches)
        assert f"claimed item {claims[0]} is not a source of an element of" in err.value.message
        assert err.value.message.endswith("a quality sample claims only xm")
    touches = Touches.compare([({"sfzhm": "P1", "bz": "x"}, ("xm",))])
    with pytest.raises(PermissionDenied) as err:
        check_quality_sample(AUTHORITY, SOURCE, SAMPLED, touches)
    assert err.value.message.endswith(
        f"key item bz is not a key item of {SOURCE.resource_code}; a quality sample keys only "
        "on sfzhm"
    )


def test_withdrawn_and_probe_resources_are_not_sampled() -> None:
    withdrawn = SOURCE.model_copy(update={"status": ResourceStatus.WITHDRAWN})
    with pytest.raises(FailedPrecondition) as failed:
        check_quality_sample(AUTHORITY, withdrawn, SAMPLED, SAMPLE)
    assert failed.value.message.endswith(f"resource {SOURCE.resource_code} is withdrawn")
    probe = SAMPLED.model_copy(update={"probe": True})
    with pytest.raises(PermissionDenied) as denied:
        check_quality_sample(AUTHORITY, SOURCE, probe, SAMPLE)
    assert "is a probe resource (第三十一条), whose quality is not sampled" in denied.value.message
