"""The wire contract (proto/govnode/v1): stubs in step with the .proto sources, every element
documented, and the domain enums and fields the node maps fixed at the numbers agreed."""

from __future__ import annotations

import importlib
import importlib.resources
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from grpc_tools import protoc  # type: ignore[import-untyped]  # ships no type information

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "govnode" / "v1"
GEN_PROTOS = REPO_ROOT / "scripts" / "gen_protos.py"

SERVICES = {
    "catalog": "CatalogService",
    "sharing": "SharingService",
    "quality": "QualityService",
    "access": "AccessService",
    "audit": "AuditService",
    "federation": "FederationService",
    "opendata": "OpenDataService",
    "supervision": "SupervisionService",
    "witness": "WitnessService",
}

# FileDescriptorProto / DescriptorProto / EnumDescriptorProto / ServiceDescriptorProto field
# numbers, as used in SourceCodeInfo.Location.path.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE = 2
SERVICE_METHOD = 2


def run_gen_protos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN_PROTOS), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def copy_proto_root(tmp_path: Path) -> Path:
    root = tmp_path / "proto"
    shutil.copytree(PROTO_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


# --- generated stubs are in step with the sources ---------------------------------------------


def test_committed_stubs_match_the_proto_sources() -> None:
    result = run_gen_protos("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_names_the_stubs_a_changed_comment_makes_stale(tmp_path: Path) -> None:
    root = copy_proto_root(tmp_path)
    quality = root / "govnode" / "v1" / "quality.proto"
    text = quality.read_text(encoding="utf-8")
    old = "// Returns the newest quality check of one resource"
    assert old in text
    quality.write_text(text.replace(old, "// Returns the latest check of one resource"), "utf-8")

    result = run_gen_protos("--check", "--proto-root", str(root))

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "differs: govnode/v1/quality_pb2_grpc.py" in output
    assert "catalog" not in output


def test_check_reports_missing_and_extra_stubs(tmp_path: Path) -> None:
    root = copy_proto_root(tmp_path)
    (root / "govnode" / "v1" / "audit_pb2.pyi").unlink()
    (root / "govnode" / "v1" / "retired_pb2.py").write_text("# left over\n", encoding="utf-8")

    result = run_gen_protos("--check", "--proto-root", str(root))

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "missing: govnode/v1/audit_pb2.pyi" in output
    assert "extra: govnode/v1/retired_pb2.py" in output


def test_regenerating_repairs_drift(tmp_path: Path) -> None:
    root = copy_proto_root(tmp_path)
    (root / "govnode" / "v1" / "sharing_pb2.py").write_text("# edited by hand\n", "utf-8")
    (root / "govnode" / "v1" / "retired_pb2_grpc.py").write_text("# left over\n", "utf-8")

    assert run_gen_protos("--proto-root", str(root)).returncode == 0

    assert not (root / "govnode" / "v1" / "retired_pb2_grpc.py").exists()
    result = run_gen_protos("--check", "--proto-root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "govnode" / "v1" / "sharing_pb2.py").read_bytes() == (
        PACKAGE_DIR / "sharing_pb2.py"
    ).read_bytes()


# --- every element of the contract is documented ----------------------------------------------


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path_factory.mktemp("descriptors") / "govnode.v1.pb"
    sources = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PACKAGE_DIR.glob("*.proto"))
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--descriptor_set_out={out}",
            "--include_source_info",
            *sources,
        ]
    )
    assert status == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


Element = tuple[str, tuple[int, ...]]


def _message_elements(
    message: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...]
) -> Iterator[Element]:
    if message.options.map_entry:  # synthesized for map<,> fields; documented by the field
        return
    yield f"message {name}", path
    for i, field in enumerate(message.field):
        yield f"field {name}.{field.name}", (*path, MESSAGE_FIELD, i)
    for i, oneof in enumerate(message.oneof_decl):
        if not oneof.name.startswith("_"):  # synthetic oneofs of proto3 `optional`
            yield f"oneof {name}.{oneof.name}", (*path, MESSAGE_ONEOF, i)
    for i, nested in enumerate(message.nested_type):
        yield from _message_elements(nested, f"{name}.{nested.name}", (*path, MESSAGE_NESTED, i))
    for i, enum in enumerate(message.enum_type):
        yield from _enum_elements(enum, f"{name}.{enum.name}", (*path, MESSAGE_ENUM, i))


def _enum_elements(
    enum: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...]
) -> Iterator[Element]:
    yield f"enum {name}", path
    for i, value in enumerate(enum.value):
        yield f"enum value {name}.{value.name}", (*path, ENUM_VALUE, i)


def _file_elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[Element]:
    for i, message in enumerate(file.message_type):
        yield from _message_elements(message, message.name, (FILE_MESSAGE, i))
    for i, enum in enumerate(file.enum_type):
        yield from _enum_elements(enum, enum.name, (FILE_ENUM, i))
    for i, service in enumerate(file.service):
        yield f"service {service.name}", (FILE_SERVICE, i)
        for j, method in enumerate(service.method):
            yield f"rpc {service.name}.{method.name}", (FILE_SERVICE, i, SERVICE_METHOD, j)


def test_every_message_field_enum_service_and_rpc_has_a_leading_comment(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    assert {f.name for f in descriptor_set.file} == {
        f"govnode/v1/{p.name}" for p in PACKAGE_DIR.glob("*.proto")
    }
    assert {(f.package, f.syntax) for f in descriptor_set.file} == {("govnode.v1", "proto3")}
    undocumented = []
    checked = 0
    for file in descriptor_set.file:
        comments = {
            tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location
        }
        for what, path in _file_elements(file):
            checked += 1
            if not comments.get(path):
                undocumented.append(f"{file.name}: {what}")
    assert checked > 400  # the walk really visited the whole contract
    assert undocumented == []


def test_every_service_is_in_its_own_file_and_importable() -> None:
    for module_name, service_name in SERVICES.items():
        pb2 = importlib.import_module(f"govnode.v1.{module_name}_pb2")
        pb2_grpc = importlib.import_module(f"govnode.v1.{module_name}_pb2_grpc")
        assert list(pb2.DESCRIPTOR.services_by_name) == [service_name]
        assert hasattr(pb2_grpc, f"add_{service_name}Servicer_to_server")
        assert hasattr(pb2_grpc, f"{service_name}Stub")
        assert pb2.DESCRIPTOR.package == "govnode.v1"


# --- the names and numbers the node maps --------------------------------------------------------

COMMON_ENUMS: dict[str, dict[str, int]] = {
    "ShareType": {
        "SHARE_TYPE_UNSPECIFIED": 0,
        "SHARE_TYPE_UNCONDITIONAL": 1,
        "SHARE_TYPE_CONDITIONAL": 2,
        "SHARE_TYPE_NOT_SHARED": 3,
    },
    "ShareMethod": {
        "SHARE_METHOD_UNSPECIFIED": 0,
        "SHARE_METHOD_VERIFY": 1,
        "SHARE_METHOD_COMPARE": 2,
        "SHARE_METHOD_QUERY": 3,
        "SHARE_METHOD_EXCHANGE": 4,
        "SHARE_METHOD_SUBSCRIBE": 5,
    },
    "OpenType": {
        "OPEN_TYPE_UNSPECIFIED": 0,
        "OPEN_TYPE_UNIVERSAL": 1,
        "OPEN_TYPE_AUTHORIZED": 2,
        "OPEN_TYPE_NOT_OPEN": 3,
    },
    "Classification": {
        "CLASSIFICATION_UNSPECIFIED": 0,
        "CLASSIFICATION_BASIC": 1,
        "CLASSIFICATION_THEMATIC": 2,
        "CLASSIFICATION_DEPARTMENTAL": 3,
    },
    "DataType": {
        "DATA_TYPE_UNSPECIFIED": 0,
        "DATA_TYPE_STRING": 1,
        "DATA_TYPE_INTEGER": 2,
        "DATA_TYPE_DECIMAL": 3,
        "DATA_TYPE_DATE": 4,
        "DATA_TYPE_DATETIME": 5,
        "DATA_TYPE_BOOLEAN": 6,
        "DATA_TYPE_ENUM": 7,
    },
    "UpdateCycle": {
        "UPDATE_CYCLE_UNSPECIFIED": 0,
        "UPDATE_CYCLE_REALTIME": 1,
        "UPDATE_CYCLE_DAILY": 2,
        "UPDATE_CYCLE_WEEKLY": 3,
        "UPDATE_CYCLE_MONTHLY": 4,
        "UPDATE_CYCLE_QUARTERLY": 5,
        "UPDATE_CYCLE_YEARLY": 6,
        "UPDATE_CYCLE_IRREGULAR": 7,
    },
    "ValidationKind": {
        "VALIDATION_KIND_UNSPECIFIED": 0,
        "VALIDATION_KIND_CITIZEN_ID": 1,
        "VALIDATION_KIND_CREDIT_CODE": 2,
        "VALIDATION_KIND_DATE": 3,
        "VALIDATION_KIND_ENUM": 4,
        "VALIDATION_KIND_PATTERN": 5,
        "VALIDATION_KIND_PHONE": 6,
    },
    "MaskingKind": {
        "MASKING_KIND_UNSPECIFIED": 0,
        "MASKING_KIND_CITIZEN_ID": 1,
        "MASKING_KIND_PHONE": 2,
        "MASKING_KIND_NAME": 3,
        "MASKING_KIND_KEEP_EDGES": 4,
        "MASKING_KIND_FULL": 5,
    },
    "OpenTreatmentKind": {
        "OPEN_TREATMENT_KIND_UNSPECIFIED": 0,
        "OPEN_TREATMENT_KIND_MASK": 1,
        "OPEN_TREATMENT_KIND_GENERALIZE": 2,
        "OPEN_TREATMENT_KIND_PSEUDONYMIZE": 3,
        "OPEN_TREATMENT_KIND_AS_STORED": 4,
    },
    "Generalization": {
        "GENERALIZATION_UNSPECIFIED": 0,
        "GENERALIZATION_MONTH": 1,
        "GENERALIZATION_YEAR": 2,
        "GENERALIZATION_PREFIX": 3,
        "GENERALIZATION_RANGE": 4,
    },
    "ResourceStatus": {
        "RESOURCE_STATUS_UNSPECIFIED": 0,
        "RESOURCE_STATUS_ACTIVE": 1,
        "RESOURCE_STATUS_WITHDRAWN": 2,
    },
}

COMMON_MESSAGES: dict[str, dict[str, int]] = {
    "ValidationRule": {"kind": 1, "enum_values": 2, "pattern": 3, "max_length": 4},
    "MaskingRule": {"kind": 1, "keep_first": 2, "keep_last": 3},
    "OpenTreatment": {
        "kind": 1,
        "keep_first": 2,
        "keep_last": 3,
        "generalize": 4,
        "prefix_length": 5,
        "range_width": 6,
    },
    "DataItem": {
        "name": 1,
        "title": 2,
        "data_type": 3,
        "required": 4,
        "key": 5,
        "sensitivity_level": 6,
        "validation": 7,
        "masking": 8,
        "standard_element": 9,
        "authoritative_source": 10,
        "description": 11,
        "open": 12,
        "quasi_identifier": 13,
    },
    "ResourceEntry": {
        "resource_code": 1,
        "name": 2,
        "provider_name": 3,
        "provider_code": 4,
        "region": 5,
        "classification": 6,
        "industry_category": 7,
        "summary": 8,
        "format": 9,
        "items": 10,
        "share_type": 11,
        "share_conditions": 12,
        "legal_basis": 13,
        "share_methods": 14,
        "open_type": 15,
        "open_conditions": 16,
        "update_cycle": 17,
        "publish_date": 18,
        "version": 19,
        "status": 20,
        "created_at": 21,
        "updated_at": 22,
        "probe": 23,
    },
    "Record": {"values": 1},
    "Caller": {"identity": 1, "region": 2, "role": 3, "subject": 4},
    "CallerAssertion": {
        "caller_identity": 1,
        "origin_node": 2,
        "resource_code": 3,
        "request_digest": 4,
        "deadline": 5,
        "nonce": 6,
        "request_id": 7,
        "issued_at": 8,
    },
    "SignedCallerAssertion": {"assertion": 1, "signature": 2, "signer_chain_der": 3},
}

CATALOG_MESSAGES: dict[str, dict[str, int]] = {
    "UpdateResourceRequest": {"entry": 1, "expected_version": 2, "request_id": 3, "reason": 4},
    "GetResourceRequest": {"resource_code": 1, "version": 2},
    "ListResourcesRequest": {
        "provider_code": 1,
        "region": 2,
        "classification": 3,
        "share_type": 4,
        "industry_category": 5,
        "include_withdrawn": 6,
        "page_size": 7,
        "page_token": 8,
    },
    "ListResourcesResponse": {"entries": 1, "next_page_token": 2},
    "GetResourceHistoryResponse": {"versions": 1},
    "WithdrawResourceRequest": {"resource_code": 1, "reason": 2, "request_id": 3},
    "WatchCatalogRequest": {"after_sequence": 1, "origin_region": 2},
    "CatalogChange": {"sequence": 1, "kind": 2, "entry": 3, "origin_region": 4, "at": 5},
    "GetCatalogDigestResponse": {"digest": 1, "entries": 2, "last_sequence": 3},
}


def _enum_numbers(enum: EnumDescriptor) -> dict[str, int]:
    return {value.name: value.number for value in enum.values}


def _field_numbers(message: Descriptor) -> dict[str, int]:
    return {field.name: field.number for field in message.fields}


@pytest.mark.parametrize("enum_name", sorted(COMMON_ENUMS))
def test_common_enum_values_have_the_agreed_numbers(enum_name: str) -> None:
    from govnode.v1 import common_pb2

    enum = common_pb2.DESCRIPTOR.enum_types_by_name[enum_name]
    assert _enum_numbers(enum) == COMMON_ENUMS[enum_name]


def test_catalog_change_kinds_have_the_agreed_numbers() -> None:
    from govnode.v1 import catalog_pb2

    enum = catalog_pb2.DESCRIPTOR.enum_types_by_name["CatalogChangeKind"]
    assert _enum_numbers(enum) == {
        "CATALOG_CHANGE_KIND_UNSPECIFIED": 0,
        "CATALOG_CHANGE_KIND_REGISTERED": 1,
        "CATALOG_CHANGE_KIND_UPDATED": 2,
        "CATALOG_CHANGE_KIND_WITHDRAWN": 3,
    }


@pytest.mark.parametrize(
    ("module_name", "message_name"),
    [("common", name) for name in sorted(COMMON_MESSAGES)]
    + [("catalog", name) for name in sorted(CATALOG_MESSAGES)],
)
def test_shared_messages_have_the_agreed_field_numbers(module_name: str, message_name: str) -> None:
    module = importlib.import_module(f"govnode.v1.{module_name}_pb2")
    expected = {**COMMON_MESSAGES, **CATALOG_MESSAGES}[message_name]
    assert _field_numbers(module.DESCRIPTOR.message_types_by_name[message_name]) == expected


def test_every_enum_starts_with_an_unspecified_zero(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    def enums(
        file: descriptor_pb2.FileDescriptorProto,
    ) -> Iterator[descriptor_pb2.EnumDescriptorProto]:
        yield from file.enum_type
        pending = list(file.message_type)
        while pending:
            message = pending.pop()
            yield from message.enum_type
            pending.extend(message.nested_type)

    for file in descriptor_set.file:
        for enum in enums(file):
            first = enum.value[0]
            assert first.number == 0, enum.name
            assert first.name.endswith("_UNSPECIFIED"), enum.name


def test_instants_are_timestamps(descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    # Fields named like instants must be google.protobuf.Timestamp, never strings or integers.
    instant_suffixes = ("_at", "_time", "deadline", "not_before", "not_after", "last_seen")
    for file in descriptor_set.file:
        for message in file.message_type:
            for field in message.field:
                if field.name == "at" or field.name.endswith(instant_suffixes):
                    assert field.type_name == ".google.protobuf.Timestamp", (
                        f"{file.name}: {message.name}.{field.name}"
                    )
