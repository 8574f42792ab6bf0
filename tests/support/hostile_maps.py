"""Requests whose one map costs the node's protobuf parser seconds
(tests/hostile/test_request_limits.py).

protobuf's upb parser stores a map in a hash table that grows as entries arrive. Entries that
arrive in the order of that table's own hash (the order in which the same process serialises
the map) collide more and more as it grows: 600,000 entries of a few bytes (4 MB, under the
default 4 MiB message limit) take about 3 s to parse instead of 0.15 s, with the GIL held, so
every call to the node waits. The hash is seeded per process (from a memory address), so a
caller must learn the node's seed to build such a map. The test gives itself that knowledge
the simplest way: the node's own process writes the requests before it starts serving
(:func:`write_requests`, called by the test's launcher), and the test sends them.

Only the wire format is used here (no .proto change, no generated parser): a map entry is a
length-delimited field holding the key as field 1 (and the value as field 2, left out: it
defaults to "", which keeps 600,000 entries under 4 MiB).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from govnode.v1 import common_pb2

#: Entries of the hostile map: with keys of one to three ASCII characters, about 4.18 MB.
ENTRIES = 600_000
#: The files :func:`write_requests` writes, one request message each.
VERIFY, SUBMIT, COMPARE = "verify.bin", "submit.bin", "compare.bin"

_ALPHABET = [chr(c) for c in range(1, 128)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, message, map entry)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _keys(count: int) -> list[str]:
    words = (
        "".join(letters)
        for length in (1, 2, 3)
        for letters in itertools.product(_ALPHABET, repeat=length)
    )
    return list(itertools.islice(words, count))


def _entries_in_hash_order(count: int) -> Iterator[bytes]:
    """The bodies of ``count`` map entries (key only), in this process's hash order."""
    data = common_pb2.Record(values=dict.fromkeys(_keys(count), "")).SerializeToString()
    position = 0
    while position < len(data):
        position += 1  # the tag of Record.values (field 1, length-delimited): one byte
        length, position = _read_varint(data, position)
        body = data[position : position + length]
        position += length
        key_length, start = _read_varint(body, 1)  # body: 0x0a, key length, key, 0x12 0x00
        yield body[: start + key_length]


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


def write_requests(directory: str | Path, resource_code: str, count: int = ENTRIES) -> None:
    """Write a VerifyRequest whose ``claimed``, a SubmitBatch whose ``records[0].values`` and a
    CompareRequest whose ``records[0].claimed`` hold the same ``count`` entries, in this
    process's hash order."""
    entries = list(_entries_in_hash_order(count))

    def as_map(number: int) -> bytes:
        return b"".join(_field(number, entry) for entry in entries)

    code = _field(1, resource_code.encode())
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # VerifyRequest: resource_code = 1, claimed = 3.
    (out / VERIFY).write_bytes(code + as_map(3))
    # SubmitBatch: resource_code = 1, batch_id = 2, records = 3; Record: values = 1.
    (out / SUBMIT).write_bytes(code + _field(2, b"hostile") + _field(3, as_map(1)))
    # CompareRequest: resource_code = 1, records = 2; CompareRecord: ref = 1, claimed = 3.
    (out / COMPARE).write_bytes(code + _field(2, _field(1, b"r") + as_map(3)))
