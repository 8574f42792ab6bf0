"""Translation between govnode.v1 messages and catalog domain types.

Enums map by name: ``SHARE_TYPE_NOT_SHARED`` <-> ``ShareType.NOT_SHARED``. An enum left
UNSPECIFIED becomes the domain default where there is a sensible one, and a refusal naming the
field where there is not; a number the contract does not define is always refused.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import common_pb2

from node.catalog import (
    Classification,
    DataItem,
    DataType,
    Generalization,
    MaskingKind,
    MaskingRule,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
    ResourceStatus,
    ShareMethod,
    ShareType,
    UpdateCycle,
    ValidationKind,
    ValidationRule,
)
from node.errors import InvalidArgument

E = TypeVar("E", bound=enum.StrEnum)

# Proto enum type -> (name prefix, domain enum, what UNSPECIFIED means: a default or None).
_ENUMS: dict[str, tuple[str, type[enum.StrEnum], enum.StrEnum | None]] = {
    "ShareType": ("SHARE_TYPE_", ShareType, None),
    "ShareMethod": ("SHARE_METHOD_", ShareMethod, None),
    "OpenType": ("OPEN_TYPE_", OpenType, OpenType.NOT_OPEN),
    "Classification": ("CLASSIFICATION_", Classification, None),
    "DataType": ("DATA_TYPE_", DataType, None),
    "UpdateCycle": ("UPDATE_CYCLE_", UpdateCycle, UpdateCycle.IRREGULAR),
    "ValidationKind": ("VALIDATION_KIND_", ValidationKind, ValidationKind.NONE),
    "MaskingKind": ("MASKING_KIND_", MaskingKind, MaskingKind.NONE),
    # UNSPECIFIED is "not published": the safe default, and the only wire form of DROP.
    "OpenTreatmentKind": ("OPEN_TREATMENT_KIND_", OpenTreatmentKind, OpenTreatmentKind.DROP),
    "Generalization": ("GENERALIZATION_", Generalization, Generalization.NONE),
    "ResourceStatus": ("RESOURCE_STATUS_", ResourceStatus, None),
}


#: Enums whose domain default has no value of its own on the wire: UNSPECIFIED is it.
_DEFAULT_IS_ZERO = frozenset(
    {"ValidationKind", "MaskingKind", "OpenTreatmentKind", "Generalization"}
)


def _enum_in(proto_enum: str, number: int, field: str, domain: type[E]) -> E:
    prefix, _, default = _ENUMS[proto_enum]
    descriptor = common_pb2.DESCRIPTOR.enum_types_by_name[proto_enum]
    value = descriptor.values_by_number.get(number)
    if value is None:
        raise InvalidArgument(f"{field}: {number} is not a valid {proto_enum}")
    if number == 0:
        if default is None:
            choices = ", ".join(v.name for v in descriptor.values if v.number)
            raise InvalidArgument(f"{field} is required (one of {choices})")
        return domain(default.value)
    return domain(value.name.removeprefix(prefix).lower())


def _enum_out(proto_enum: str, value: enum.StrEnum) -> int:
    prefix, _, default = _ENUMS[proto_enum]
    if default is not None and value == default and proto_enum in _DEFAULT_IS_ZERO:
        return 0
    descriptor = common_pb2.DESCRIPTOR.enum_types_by_name[proto_enum]
    return int(descriptor.values_by_name[prefix + value.value.upper()].number)


#: What google.protobuf.Timestamp allows (RFC 3339: 0001-01-01T00:00:00Z to
#: 9999-12-31T23:59:59.999999999Z); the protobuf runtime raises ValueError outside it.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
_NANOS_PER_SECOND = 1_000_000_000


def time_from_proto(value: Timestamp, field: str) -> dt.datetime:
    """The instant ``value`` holds, in UTC; a value google.protobuf.Timestamp does not allow
    is refused naming ``field`` (the request's path to it, e.g. ``temporary.expires_at``).

    Every Timestamp a caller sends goes through here (or :func:`optional_time`), so that an
    out-of-range value is INVALID_ARGUMENT, never the runtime's ValueError (INTERNAL).
    Microseconds are kept; a datetime has no nanoseconds.
    """
    if not TIMESTAMP_MIN_SECONDS <= value.seconds <= TIMESTAMP_MAX_SECONDS:
        raise InvalidArgument(
            f"{field}: seconds out of range (must be between 0001-01-01 and 9999-12-31), "
            f"got {value.seconds}"
        )
    if not 0 <= value.nanos < _NANOS_PER_SECOND:
        raise InvalidArgument(
            f"{field}: nanos out of range (must be between 0 and 999,999,999), got {value.nanos}"
        )
    return value.ToDatetime(dt.UTC)


def optional_time(message: Any, name: str, field: str | None = None) -> dt.datetime | None:
    """``message.<name>`` as an instant (:func:`time_from_proto`), or None when it is unset;
    ``field`` names it in a refusal (default: ``name``)."""
    if not message.HasField(name):
        return None
    return time_from_proto(getattr(message, name), field or name)


def _ts(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def item_from_proto(msg: common_pb2.DataItem, path: str) -> DataItem:
    return DataItem(
        name=msg.name,
        title=msg.title,
        data_type=_enum_in("DataType", msg.data_type, f"{path}.data_type", DataType),
        required=msg.required,
        key=msg.key,
        sensitivity_level=msg.sensitivity_level,
        validation=ValidationRule(
            kind=_enum_in(
                "ValidationKind", msg.validation.kind, f"{path}.validation.kind", ValidationKind
            ),
            enum_values=tuple(msg.validation.enum_values),
            pattern=msg.validation.pattern,
            max_length=msg.validation.max_length,
        ),
        masking=MaskingRule(
            kind=_enum_in("MaskingKind", msg.masking.kind, f"{path}.masking.kind", MaskingKind),
            keep_first=msg.masking.keep_first,
            keep_last=msg.masking.keep_last,
        ),
        standard_element=msg.standard_element,
        authoritative_source=msg.authoritative_source,
        description=msg.description,
        open=_open_from_proto(msg.open, f"{path}.open"),
        quasi_identifier=msg.quasi_identifier,
    )


def _open_from_proto(msg: common_pb2.OpenTreatment, path: str) -> OpenTreatment:
    return OpenTreatment(
        kind=_enum_in("OpenTreatmentKind", msg.kind, f"{path}.kind", OpenTreatmentKind),
        keep_first=msg.keep_first,
        keep_last=msg.keep_last,
        generalize=_enum_in("Generalization", msg.generalize, f"{path}.generalize", Generalization),
        prefix_length=msg.prefix_length,
        range_width=msg.range_width,
    )


def entry_from_proto(msg: common_pb2.ResourceEntry, path: str = "entry") -> ResourceEntry:
    """A domain entry from a request; node-owned fields (region, version, times) are ignored."""
    return ResourceEntry(
        resource_code=msg.resource_code,
        name=msg.name,
        provider_name=msg.provider_name,
        provider_code=msg.provider_code,
        classification=_enum_in(
            "Classification", msg.classification, f"{path}.classification", Classification
        ),
        industry_category=msg.industry_category,
        summary=msg.summary,
        format=msg.format,
        items=tuple(item_from_proto(it, f"{path}.items[{i}]") for i, it in enumerate(msg.items)),
        share_type=_enum_in("ShareType", msg.share_type, f"{path}.share_type", ShareType),
        share_conditions=msg.share_conditions,
        legal_basis=msg.legal_basis,
        share_methods=tuple(
            _enum_in("ShareMethod", m, f"{path}.share_methods[{i}]", ShareMethod)
            for i, m in enumerate(msg.share_methods)
        ),
        open_type=_enum_in("OpenType", msg.open_type, f"{path}.open_type", OpenType),
        open_conditions=msg.open_conditions,
        update_cycle=_enum_in("UpdateCycle", msg.update_cycle, f"{path}.update_cycle", UpdateCycle),
        publish_date=msg.publish_date,
        probe=msg.probe,
    )


def item_to_proto(item: DataItem) -> common_pb2.DataItem:
    return common_pb2.DataItem(
        name=item.name,
        title=item.title,
        data_type=_enum_out("DataType", item.data_type),  # type: ignore[arg-type]
        required=item.required,
        key=item.key,
        sensitivity_level=item.sensitivity_level,
        validation=common_pb2.ValidationRule(
            kind=_enum_out("ValidationKind", item.validation.kind),  # type: ignore[arg-type]
            enum_values=list(item.validation.enum_values),
            pattern=item.validation.pattern,
            max_length=item.validation.max_length,
        ),
        masking=common_pb2.MaskingRule(
            kind=_enum_out("MaskingKind", item.masking.kind),  # type: ignore[arg-type]
            keep_first=item.masking.keep_first,
            keep_last=item.masking.keep_last,
        ),
        standard_element=item.standard_element,
        authoritative_source=item.authoritative_source,
        description=item.description,
        open=common_pb2.OpenTreatment(
            kind=_enum_out("OpenTreatmentKind", item.open.kind),  # type: ignore[arg-type]
            keep_first=item.open.keep_first,
            keep_last=item.open.keep_last,
            generalize=_enum_out("Generalization", item.open.generalize),  # type: ignore[arg-type]
            prefix_length=item.open.prefix_length,
            range_width=item.open.range_width,
        ),
        quasi_identifier=item.quasi_identifier,
    )


def entry_to_proto(entry: ResourceEntry) -> common_pb2.ResourceEntry:
    kwargs: dict[str, Any] = {}
    if entry.created_at is not None:
        kwargs["created_at"] = _ts(entry.created_at)
    if entry.updated_at is not None:
        kwargs["updated_at"] = _ts(entry.updated_at)
    return common_pb2.ResourceEntry(
        resource_code=entry.resource_code,
        name=entry.name,
        provider_name=entry.provider_name,
        provider_code=entry.provider_code,
        region=entry.region,
        classification=_enum_out("Classification", entry.classification),  # type: ignore[arg-type]
        industry_category=entry.industry_category,
        summary=entry.summary,
        format=entry.format,
        items=[item_to_proto(i) for i in entry.items],
        share_type=_enum_out("ShareType", entry.share_type),  # type: ignore[arg-type]
        share_conditions=entry.share_conditions,
        legal_basis=entry.legal_basis,
        share_methods=[_enum_out("ShareMethod", m) for m in entry.share_methods],  # type: ignore[misc]
        open_type=_enum_out("OpenType", entry.open_type),  # type: ignore[arg-type]
        open_conditions=entry.open_conditions,
        update_cycle=_enum_out("UpdateCycle", entry.update_cycle),  # type: ignore[arg-type]
        publish_date=entry.publish_date,
        version=entry.version,
        status=_enum_out("ResourceStatus", entry.status),  # type: ignore[arg-type]
        probe=entry.probe,
        **kwargs,
    )
