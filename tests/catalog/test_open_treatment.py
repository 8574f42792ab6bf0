"""What an entry declares about its open data (脱密脱敏, 第二十九条): the rules of each item's
open treatment, its wire form, and entries stored before items had one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.catalog import (
    Catalog,
    DataType,
    Generalization,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
    entry_from_json,
    entry_to_json,
    validate_entry,
)
from node.catalog._open_treatment import open_treatment_problems
from node.errors import InvalidArgument
from node.servicers.convert import entry_from_proto, entry_to_proto
from node.storage import Database
from tests.support.entries import NODE_REGION, OPEN_ENTRY, agency, agency_code, make_entry

KIND, HOW = OpenTreatmentKind, Generalization
ART = "(脱密脱敏, 第二十九条)"
#: The items of OPEN_ENTRY by name: their index in it.
XM, CSRQ, XB, HJQH, FFJE, JBR = 1, 2, 3, 4, 5, 7


def allowance(**fields: Any) -> ResourceEntry:
    """The 普遍开放 allowance list (tests.support.entries.open_items), with ``fields``."""
    return make_entry(1, **(OPEN_ENTRY | fields))


def changing(index: int, **changes: Any) -> ResourceEntry:
    """The allowance list with item ``index`` changed."""
    items = list(allowance().items)
    items[index] = items[index].model_copy(update=changes)
    return allowance(items=tuple(items))


def treated(index: int, **treatment: Any) -> ResourceEntry:
    """The allowance list with item ``index`` treated as ``treatment`` says."""
    return changing(index, open=OpenTreatment(**treatment))


# --- rules ---------------------------------------------------------------------------------


def test_a_realistic_open_treatment_set_is_valid() -> None:
    # A dropped quasi-identifier (lxdh) included: it records that the item was identified as
    # one and withheld (node.catalog._open_treatment).
    entry = allowance()
    assert entry.items[8].quasi_identifier and entry.items[8].open.kind is KIND.DROP
    validate_entry(entry, node_region=NODE_REGION)


@pytest.mark.parametrize("level", [3, 4])
def test_items_of_level_3_and_4_never_open(level: int) -> None:
    entry = changing(XM, sensitivity_level=level)
    assert open_treatment_problems(entry) == [
        f"entry.items[{XM}].open.kind: pseudonymize is not allowed: the item has sensitivity "
        f"level {level}, and level 3 and 4 items are never opened; leave it unset (drop) "
        "(分级管理, 第三十七条)"
    ]
    # Dropped, such an item is fine (the resource's open type is the grading's business).
    dropped = changing(XM, sensitivity_level=level, open=OpenTreatment())
    assert open_treatment_problems(dropped) == []


def test_nothing_of_a_not_open_resource_opens() -> None:
    found = open_treatment_problems(allowance(open_type=OpenType.NOT_OPEN))
    opened = [i for i, item in enumerate(allowance().items) if item.open.kind is not KIND.DROP]
    assert found == [
        f"entry.items[{i}].open.kind: {allowance().items[i].open.kind.value} is not allowed: "
        "entry.open_type is 不予开放 (not_open), so no item opens; leave it unset (drop) "
        "(第二十九条)"
        for i in opened
    ]
    dropped = allowance(open_type=OpenType.NOT_OPEN, items=make_entry(1).items)
    validate_entry(dropped, node_region=NODE_REGION)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            treated(CSRQ, kind=KIND.GENERALIZE),
            f"entry.items[{CSRQ}].open.generalize: kind generalize needs a generalization "
            f"(month, year, prefix or range) {ART}",
        ),
        (
            treated(HJQH, kind=KIND.GENERALIZE, generalize=HOW.MONTH),
            f"entry.items[{HJQH}].open.generalize: month applies to date or datetime items, "
            f"not string {ART}",
        ),
        (
            treated(FFJE, kind=KIND.GENERALIZE, generalize=HOW.YEAR),
            f"entry.items[{FFJE}].open.generalize: year applies to date or datetime items, "
            f"not decimal {ART}",
        ),
        (
            treated(HJQH, kind=KIND.GENERALIZE, generalize=HOW.RANGE, range_width=10),
            f"entry.items[{HJQH}].open.generalize: range applies to decimal or integer items, "
            f"not string {ART}",
        ),
        (
            treated(CSRQ, kind=KIND.GENERALIZE, generalize=HOW.PREFIX, prefix_length=4),
            f"entry.items[{CSRQ}].open.generalize: prefix applies to enum, integer or string "
            f"items, not date {ART}",
        ),
        (
            treated(FFJE, kind=KIND.GENERALIZE, generalize=HOW.RANGE),
            f"entry.items[{FFJE}].open.range_width: generalization range needs 1 to "
            f"1,000,000,000,000, got 0 {ART}",
        ),
        (
            treated(FFJE, kind=KIND.GENERALIZE, generalize=HOW.RANGE, range_width=10**12 + 1),
            f"entry.items[{FFJE}].open.range_width: generalization range needs 1 to "
            f"1,000,000,000,000, got 1000000000001 {ART}",
        ),
        (
            treated(HJQH, kind=KIND.GENERALIZE, generalize=HOW.PREFIX),
            f"entry.items[{HJQH}].open.prefix_length: generalization prefix needs 1 to 64, "
            f"got 0 {ART}",
        ),
        (
            treated(HJQH, kind=KIND.GENERALIZE, generalize=HOW.PREFIX, prefix_length=-4),
            f"entry.items[{HJQH}].open.prefix_length: generalization prefix needs 1 to 64, "
            f"got -4 {ART}",
        ),
        (
            treated(HJQH, kind=KIND.GENERALIZE, generalize=HOW.PREFIX, prefix_length=65),
            f"entry.items[{HJQH}].open.prefix_length: generalization prefix needs 1 to 64, "
            f"got 65 {ART}",
        ),
        (
            treated(JBR, kind=KIND.MASK, keep_first=-1),
            f"entry.items[{JBR}].open.keep_first: must be 0 to 64, got -1 {ART}",
        ),
        (
            treated(JBR, kind=KIND.MASK, keep_last=4_000_000_000),
            f"entry.items[{JBR}].open.keep_last: must be 0 to 64, got 4000000000 {ART}",
        ),
        (
            treated(CSRQ, kind=KIND.GENERALIZE, generalize=HOW.YEAR, keep_first=1),
            f"entry.items[{CSRQ}].open.keep_first: only for kind mask, not generalize {ART}",
        ),
        (
            treated(JBR, kind=KIND.MASK, keep_first=1, generalize=HOW.YEAR),
            f"entry.items[{JBR}].open.generalize: only for kind generalize, not mask {ART}",
        ),
        (
            treated(CSRQ, kind=KIND.GENERALIZE, generalize=HOW.YEAR, prefix_length=4),
            f"entry.items[{CSRQ}].open.prefix_length: only for generalization prefix {ART}",
        ),
        (
            treated(
                HJQH, kind=KIND.GENERALIZE, generalize=HOW.PREFIX, prefix_length=4, range_width=9
            ),
            f"entry.items[{HJQH}].open.range_width: only for generalization range {ART}",
        ),
        (
            treated(0, keep_last=2),
            f"entry.items[0].open.keep_last: only for kind mask, not drop {ART}",
        ),
        (
            treated(XB, kind=KIND.AS_STORED, prefix_length=2),
            f"entry.items[{XB}].open.prefix_length: only for generalization prefix {ART}",
        ),
    ],
)
def test_a_treatment_states_what_its_kind_needs_and_nothing_else(
    entry: ResourceEntry, expected: str
) -> None:
    assert open_treatment_problems(entry) == [expected]
    with pytest.raises(InvalidArgument) as caught:
        validate_entry(entry, node_region=NODE_REGION)
    assert expected in caught.value.message


def test_generalizations_fit_the_types_they_coarsen() -> None:
    for data_type, how, parameter in [
        (DataType.DATETIME, HOW.MONTH, {}),
        (DataType.DATE, HOW.YEAR, {}),
        (DataType.INTEGER, HOW.RANGE, {"range_width": 10**12}),
        (DataType.INTEGER, HOW.PREFIX, {"prefix_length": 64}),
        (DataType.ENUM, HOW.PREFIX, {"prefix_length": 1}),
    ]:
        item = changing(
            FFJE,
            data_type=data_type,
            validation=allowance().items[XB].validation,  # an ENUM needs its values
            open=OpenTreatment(kind=KIND.GENERALIZE, generalize=how, **parameter),
        )
        assert open_treatment_problems(item) == [], (data_type, how)


# --- the wire ------------------------------------------------------------------------------


def test_the_wire_form_round_trips_and_unspecified_is_drop() -> None:
    entry = allowance()
    wire = entry_to_proto(entry)
    assert entry_from_proto(wire) == entry
    dropped = wire.items[0]
    assert (dropped.open.kind, dropped.quasi_identifier) == (0, False)
    assert wire.items[CSRQ].quasi_identifier
    # An item sent without a treatment is dropped, never published.
    wire.items[XM].ClearField("open")
    assert entry_from_proto(wire).items[XM].open == OpenTreatment()


@pytest.mark.parametrize(
    ("field", "proto_enum"), [("kind", "OpenTreatmentKind"), ("generalize", "Generalization")]
)
def test_an_undefined_enum_number_is_refused_naming_the_field(field: str, proto_enum: str) -> None:
    wire = entry_to_proto(allowance())
    setattr(wire.items[XM].open, field, 99)
    with pytest.raises(InvalidArgument) as caught:
        entry_from_proto(wire)
    assert caught.value.message == f"entry.items[{XM}].open.{field}: 99 is not a valid {proto_enum}"


# --- stored entries --------------------------------------------------------------------------


def test_entries_stored_before_open_treatments_keep_their_text_and_read_as_dropped() -> None:
    """An item's treatment and flag are written only when set, so an entry without them has the
    text an older release wrote (catalog digests agree across nodes), and that text reads back
    with the defaults: dropped, not a quasi-identifier."""
    entry = make_entry(1)
    old = entry.model_dump(mode="json")
    for item in old["items"]:
        del item["open"], item["quasi_identifier"]
    del old["probe"]
    old_text = json.dumps(old, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert entry_to_json(entry) == old_text
    back = entry_from_json(old_text)
    assert back == entry
    assert all(i.open.kind is KIND.DROP and not i.quasi_identifier for i in back.items)
    # Set, they are part of the text (and so of the catalog digest).
    text = entry_to_json(allowance())
    assert '"kind":"pseudonymize"' in text and '"quasi_identifier":true' in text
    assert entry_from_json(text) == allowance()


async def test_the_registry_stores_reads_and_digests_the_treatments(database: Database) -> None:
    catalog = Catalog(database, NODE_REGION)
    provider = agency(agency_code(1))
    plain = await catalog.register(provider, make_entry(1))
    opened = await catalog.register(provider, make_entry(2, **OPEN_ENTRY))
    assert (await catalog.get(opened.resource_code)).items == allowance().items
    assert all(i.open == OpenTreatment() for i in (await catalog.get(plain.resource_code)).items)
    rows = await database.fetch_all(
        "SELECT resource_code, body FROM catalog_entry ORDER BY resource_code", {}
    )
    plain_body, opened_body = (row[1] for row in rows)
    assert '"open"' not in plain_body and '"quasi_identifier"' not in plain_body
    assert '"generalize":"prefix"' in opened_body  # what the digest hashes


async def test_an_update_changing_only_a_treatment_is_a_new_version(database: Database) -> None:
    catalog = Catalog(database, NODE_REGION)
    provider = agency(agency_code(1))
    await catalog.register(provider, make_entry(1, **OPEN_ENTRY))
    dropped = treated(XM)
    new = await catalog.update(provider, dropped, expected_version=1)
    assert new.version == 2 and new.items[XM].open.kind is KIND.DROP
    history = await catalog.history(new.resource_code)
    assert [v.items[XM].open.kind for v in history] == [KIND.PSEUDONYMIZE, KIND.DROP]
