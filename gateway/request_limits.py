"""How large a request message may be, and how many entries its maps may hold, checked on the
raw bytes before the guard parses the message (gateway.interceptors).

Why before: the guard parses each request on the event loop, and protobuf's parser (upb) has a
pathological cost on large maps. A ``map<string, string>`` is a hash table that grows as entries
arrive; entries that arrive in the order of the table's own hash collide more and more as it
grows: 600,000 entries of a few bytes (4 MB) took 3 to 4.5 s to parse instead of 0.15 s, with
the GIL held (a worker thread would not help), so every call on the node, health checks
included, waited that long, per message. The seed of that hash is per process, but it can be
learnt, for instance from the order of map entries in the node's responses.

So, for every request message:

1. **Size.** A method's request may be at most :attr:`RequestLimits.max_request_bytes`
   (256 KiB by default, the largest of them, a ReviewApplication naming 1,000 items twice, is
   under 150 KB), except the bulk methods of :data:`BULK_METHODS`, which carry records or
   catalog entries and may use the whole :attr:`RequestLimits.max_bulk_request_bytes` (the
   transport's own limit). Larger is RESOURCE_EXHAUSTED naming the method's limit: one
   comparison, before anything is parsed.
2. **Map entries.** A message larger than :data:`COUNT_MAPS_ABOVE_BYTES` whose type holds a map
   at any depth is first parsed as its *shadow*: the same message type with every map declared
   as the repeated message it is on the wire (``repeated KeyEntry``, key = 1, value = 2), which
   parses in linear time (600,000 entries: 8 to 15 ms). Each map's entry count, read from the
   shadow, must be at most :attr:`RequestLimits.max_map_entries`; more is INVALID_ARGUMENT naming
   the field (``records[3].values: at most 10,000 entries, got 300,000``), and the real parse
   never runs. The largest legitimate map is a record's values: at most 1,000 catalogued items
   and 1,000 temporary ones (第十二条); keys name key items only. 10,000 entries parse in 2 ms
   whatever their order, and a message under :data:`COUNT_MAPS_ABOVE_BYTES` cannot hold enough
   entries to matter (at least 5 bytes each: about 13,000, 6 ms at worst), so small messages,
   such as almost every Verify, are parsed once.

A map's entries are counted as they are on the wire, duplicates included (a real client never
repeats a key; protobuf keeps the last).

The shadow types are built once, when the node starts, from the services' own descriptors in
a private descriptor pool: nothing is generated, and a .proto change needs no change here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from gateway.refusal import Refusal

#: Methods whose requests carry bulk data (records, catalog entries), allowed
#: :attr:`RequestLimits.max_bulk_request_bytes`: Submit and Compare (10,000 records a message),
#: RegisterResource, UpdateResource and RequestRecordChange (an entry of 1,000 items whose ENUM
#: rules may list 10,000 values each), PublishCatalog (a city's catalog changes, each an entry),
#: PublishSupervisionSummary (a city's signed summary, up to 2 MiB: node.supervision).
BULK_METHODS: frozenset[str] = frozenset(
    {
        "/govnode.v1.SharingService/Submit",
        "/govnode.v1.SharingService/Compare",
        "/govnode.v1.CatalogService/RegisterResource",
        "/govnode.v1.CatalogService/UpdateResource",
        "/govnode.v1.AccessService/RequestRecordChange",
        "/govnode.v1.FederationService/PublishCatalog",
        "/govnode.v1.FederationService/PublishSupervisionSummary",
    }
)

#: Messages at most this large are parsed without counting their maps' entries first (see the
#: module docstring).
COUNT_MAPS_ABOVE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RequestLimits:
    #: The largest request message of a method not in BULK_METHODS, in bytes.
    max_request_bytes: int = 256 * 1024
    #: The largest request message of a bulk method, in bytes (the server's message limit).
    max_bulk_request_bytes: int = 4 * 1024 * 1024
    #: The most entries one map of a request may hold.
    max_map_entries: int = 10_000


#: Checks one raw request message of one method; raises :class:`Refusal`.
Check = Callable[[bytes], None]

# How a shadow message is walked: per message type, its fields that are maps, or that hold
# maps deeper down.
_Walk = list[tuple[str, bool, bool, Descriptor]]  # name, is a map, repeated, its type


class RequestChecks:
    """The size limit and the map-entry check of every method of ``services``; a method not
    among them (none the server serves, in practice) gets the non-bulk size limit only."""

    def __init__(
        self, services: Iterable[ServiceDescriptor], limits: RequestLimits | None = None
    ) -> None:
        self.limits = limits or RequestLimits()
        self._services = list(services)
        self._pool = _shadow_pool(s.file for s in self._services)
        self._walks: dict[str, _Walk] = {}
        self._shadows: dict[str, type[Any]] = {}
        self._checks: dict[str, Check] = {}
        for service in self._services:
            for method in service.methods:
                name = f"/{service.full_name}/{method.name}"
                self._checks[name] = self._check_for(name, method.input_type)

    def for_method(self, method: str) -> Check:
        check = self._checks.get(method)
        if check is None:
            check = self._checks[method] = self._check_for(method, None)
        return check

    def _check_for(self, method: str, request: Descriptor | None) -> Check:
        bulk = method in BULK_METHODS
        limit = self.limits.max_bulk_request_bytes if bulk else self.limits.max_request_bytes
        if request is None or not self._walk(request):

            def check_size(raw: bytes) -> None:
                if len(raw) > limit:
                    raise _too_large(method, len(raw), limit)

            return check_size
        descriptor = request

        def check(raw: bytes) -> None:
            if len(raw) > limit:
                raise _too_large(method, len(raw), limit)
            if len(raw) > COUNT_MAPS_ABOVE_BYTES:
                self._count(method, raw, descriptor, "")

        return check

    def _walk(self, descriptor: Descriptor, visiting: frozenset[str] = frozenset()) -> _Walk:
        """The fields of message type ``descriptor`` (a real one, whose map entries say they are)
        that are maps or lead to maps."""
        walk = self._walks.get(descriptor.full_name)
        if walk is not None:
            return walk
        walk = []
        for field in descriptor.fields:
            inner = field.message_type
            if inner is None:
                continue
            if inner.GetOptions().map_entry:
                walk.append((field.name, True, True, inner))
            elif inner.full_name not in visiting and self._walk(
                inner, visiting | {descriptor.full_name}
            ):
                walk.append((field.name, False, field.is_repeated, inner))
        if not visiting:  # a walk cut short by a recursive type is not kept
            self._walks[descriptor.full_name] = walk
        return walk

    def _count(self, method: str, raw: bytes, descriptor: Descriptor, path: str) -> None:
        """Count the entries of every map in ``raw``, a message of type ``descriptor``, parsed as
        its shadow: its message fields are kept as the bytes they are on the wire, and only
        those large enough to hold more than the bound are looked into."""
        bound = self.limits.max_map_entries
        try:
            message = self._shadow(descriptor.full_name).FromString(raw)
        except DecodeError as exc:
            # Refused here: the real parse would fail too, but only after its maps.
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method}: the request is not a valid message for this method ({exc})",
            ) from None
        for name, is_map, repeated, inner in self._walk(descriptor):
            parts = getattr(message, name)
            if is_map:
                if len(parts) > bound:
                    raise Refusal(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"{path}{name}: at most {bound:,} entries, got {len(parts):,}",
                    )
            elif repeated:
                if max(map(len, parts), default=0) > _fewest_bytes(bound):
                    for i, part in enumerate(parts):
                        if len(part) > _fewest_bytes(bound):
                            self._count(method, part, inner, f"{path}{name}[{i}].")
            else:
                # A singular message met more than once is merged, as its parts concatenated.
                whole = b"".join(parts)
                if len(whole) > _fewest_bytes(bound):
                    self._count(method, whole, inner, f"{path}{name}.")

    def _shadow(self, full_name: str) -> type[Any]:
        cls = self._shadows.get(full_name)
        if cls is None:
            descriptor = self._pool.FindMessageTypeByName(full_name)
            cls = self._shadows[full_name] = message_factory.GetMessageClass(descriptor)
        return cls


def _fewest_bytes(entries: int) -> int:
    """The fewest bytes that hold ``entries`` + 1 map entries: each takes at least two (its tag
    and its length), so a smaller message cannot hold a map over the bound."""
    return 2 * entries


def _too_large(method: str, size: int, limit: int) -> Refusal:
    return Refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{method}: the request is {size:,} bytes; this node takes at most {limit:,} bytes "
        f"({limit // 1024:,} KiB) for this method",
    )


def _shadow_pool(files: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """A private pool holding ``files`` and their dependencies, where every message-typed field
    (maps included) is a repeated ``bytes`` field of the same number: the same wire format
    (a length-delimited field), read without parsing what is inside. A map's entries are then
    its field's elements, and a singular message met several times on the wire (which protobuf
    merges) is all of its occurrences."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        for message in proto.message_type:
            _as_bytes(message)
        pool.Add(proto)
        added.add(file.name)

    for file in files:
        add(file)
    return pool


def _as_bytes(message: descriptor_pb2.DescriptorProto) -> None:
    kinds = descriptor_pb2.FieldDescriptorProto
    for field in message.field:
        if field.type == kinds.TYPE_MESSAGE:  # (proto3 has no groups, whose wire type differs)
            field.type = kinds.TYPE_BYTES
            field.ClearField("type_name")
            if not field.HasField("oneof_index"):  # a oneof member cannot be repeated
                field.label = kinds.LABEL_REPEATED
    for nested in message.nested_type:
        nested.options.ClearField("map_entry")  # a map entry type is now a plain message
        _as_bytes(nested)
