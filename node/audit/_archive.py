"""Sealing the audit log into archive segments (第三十九条: kept at least three years).

The log is cut into segments of ``S = [audit] segment_records`` records (a power of two, 256 or
more): segment ``k`` holds records ``k·S + 1`` to ``(k + 1)·S``. Because ``S`` is a power of two,
a segment's leaves are one complete subtree of the RFC 6962 tree (level ``log2 S``, index ``k``):
its root is recomputed from its records alone, and an inclusion proof of that subtree node leads
to the root of any checkpoint that covers it. A segment is *closed* once a checkpoint a witness
cosigned covers it entirely; only closed segments are sealed.

An archive is a directory; each sealed segment is two files (the format is written down in the
README, "Retention and archive"):

- ``segment-00000k.records.jsonl.gz``: one JSON object per record, in sequence order,
  ``{"content": ..., "hash": ..., "prev_hash": ...}`` (the content as the chain hash covers
  it), compact, keys sorted, gzip with no timestamp, so sealing again gives the same bytes;
- ``segment-00000k.json``: ``manifest`` (a signed note by the node key, key name
  ``<host>/node``, whose text is :class:`Manifest`: the range, first ``prev_hash``, last
  ``hash``, the segment root, the SHA-256 of the uncompressed records, the time range and the
  covering checkpoint's size and root), ``checkpoint`` (that checkpoint's note with its
  witnesses' cosignatures), ``subtree_proof`` (hex hashes from the segment's subtree to the
  checkpoint root) and ``signers`` (the node's certificate chain, then each cosigning witness's
  chain and witness key statement, as in proof files, node.audit._prooffile).

Everything in the JSON file is checked before it is believed (node.audit._archive_check), with
nothing but the province root certificate.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from node.audit._checkpoints import CosignerKeys, StoredCheckpoint
from node.audit._log import AuditLog, hashed_content
from node.models import AuditRecordRow
from node.storage import Database
from node.tlog import Signer, leaf_hash, parse_note, root_of, sign_note

FORMAT = "govnode audit segment v1"
RECORDS_SUFFIX = ".records.jsonl.gz"
MANIFEST_SUFFIX = ".json"
_READ_PAGE = 5000

_table = SQLModel.metadata.tables[str(AuditRecordRow.__tablename__)]
_c = _table.c


class ArchiveError(ValueError):
    """An archive that cannot be written or read as asked; the message says why."""


def segment_level(segment_records: int) -> int:
    """The tree level a segment's subtree sits at (log2 of its size)."""
    if segment_records < 256 or segment_records & (segment_records - 1):
        raise ArchiveError(f"{segment_records} records per segment: not a power of two ≥ 256")
    return segment_records.bit_length() - 1


def segment_sequences(k: int, segment_records: int) -> tuple[int, int]:
    """The first and last sequence of segment ``k``."""
    return k * segment_records + 1, (k + 1) * segment_records


def segment_stem(k: int) -> str:
    return f"segment-{k:06d}"


def archived_segments(directory: Path) -> list[int]:
    """The segments sealed in ``directory`` (those whose manifest file is there), in order."""
    found = []
    for path in directory.glob(f"segment-*{MANIFEST_SUFFIX}"):
        number = path.name.removeprefix("segment-").removesuffix(MANIFEST_SUFFIX)
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


@dataclass(frozen=True)
class Manifest:
    """What the node signs about a segment: the text of the manifest's signed note."""

    origin: str
    segment: int
    segment_records: int
    first_prev_hash: str
    last_hash: str
    root: bytes
    records_sha256: str
    first_at: str
    last_at: str
    checkpoint_size: int
    checkpoint_root: bytes

    @property
    def first(self) -> int:
        return self.segment * self.segment_records + 1

    @property
    def last(self) -> int:
        return (self.segment + 1) * self.segment_records

    def text(self) -> str:
        return (
            f"{FORMAT}\n"
            f"origin {self.origin}\n"
            f"segment {self.segment} of {self.segment_records} records\n"
            f"records {self.first} {self.last}\n"
            f"first_prev_hash {self.first_prev_hash}\n"
            f"last_hash {self.last_hash}\n"
            f"root {self.root.hex()}\n"
            f"records_sha256 {self.records_sha256}\n"
            f"time {self.first_at} {self.last_at}\n"
            f"checkpoint {self.checkpoint_size} {self.checkpoint_root.hex()}\n"
        )


def parse_manifest(text: str) -> Manifest:
    """The manifest in a signed note's text; ValueError if it is not one."""
    lines = text.split("\n")
    if len(lines) != 11 or lines[0] != FORMAT or lines[10] != "":
        raise ValueError(f"not a {FORMAT!r} manifest")
    fields: dict[str, list[str]] = {}
    for line in lines[1:10]:
        key, _, rest = line.partition(" ")
        fields[key] = rest.split(" ")
    segment = fields["segment"]
    if len(segment) != 4 or segment[1] != "of" or segment[3] != "records":
        raise ValueError("the segment line is not 'segment K of S records'")
    manifest = Manifest(
        origin=" ".join(fields["origin"]),
        segment=int(segment[0]),
        segment_records=int(segment[2]),
        first_prev_hash=fields["first_prev_hash"][0],
        last_hash=fields["last_hash"][0],
        root=bytes.fromhex(fields["root"][0]),
        records_sha256=fields["records_sha256"][0],
        first_at=fields["time"][0],
        last_at=fields["time"][1],
        checkpoint_size=int(fields["checkpoint"][0]),
        checkpoint_root=bytes.fromhex(fields["checkpoint"][1]),
    )
    if manifest.text() != text:
        raise ValueError("the manifest is not in its canonical form")
    return manifest


def record_line(content: dict[str, Any], prev_hash: str, chain_hash: str) -> bytes:
    data = {"content": content, "hash": chain_hash, "prev_hash": prev_hash}
    return (
        json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    ).encode("utf-8")


async def _records(db: Database, first: int, last: int) -> list[bytes]:
    lines: list[bytes] = []
    after = first - 1
    while after < last:

        async def txn(session: AsyncSession, after: int = after) -> list[Any]:
            connection = await session.connection()
            result = await connection.execute(
                select(_table)
                .where(_c.sequence > after, _c.sequence <= last)
                .order_by(_c.sequence)
                .limit(_READ_PAGE)
            )
            return list(result)

        rows = await db.read("audit.archive_read", txn)
        if not rows:
            break
        for row in rows:
            if row.sequence != after + 1:
                raise ArchiveError(f"record #{after + 1} is missing from the live log")
            lines.append(record_line(hashed_content(row), str(row.prev_hash), str(row.hash)))
            after = row.sequence
    if after != last:
        raise ArchiveError(f"records #{after + 1} to #{last} are missing from the live log")
    return lines


def _prepare(out: Path, segment_records: int) -> set[int]:
    """Make ``out`` if need be; the segments it holds (refused if of another size)."""
    out.mkdir(parents=True, exist_ok=True)
    present = archived_segments(out)
    for k in present[:1]:
        try:
            found = json.loads((out / f"{segment_stem(k)}{MANIFEST_SUFFIX}").read_text("utf-8"))
            existing = parse_manifest(parse_note(found["manifest"].encode()).text)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if existing.segment_records != segment_records:
            raise ArchiveError(
                f"{out} holds segments of {existing.segment_records} records, and "
                f"[audit] segment_records is {segment_records}: use another directory"
            )
    return set(present)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".partial")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


async def seal_segment(
    *,
    db: Database,
    audit: AuditLog,
    k: int,
    segment_records: int,
    origin: str,
    checkpoint: StoredCheckpoint,
    node_signer: Signer,
    log_chain_pem: str,
    cosigners: Sequence[CosignerKeys],
    out: Path,
) -> Manifest:
    """Write segment ``k``'s two files into ``out`` (records first, the manifest last: a
    manifest present means a whole segment). ``checkpoint`` must be witnessed and cover it."""
    level = segment_level(segment_records)
    first, last = segment_sequences(k, segment_records)
    if checkpoint.size < last:
        raise ArchiveError(f"segment {k}: the checkpoint of {checkpoint.size} does not cover it")
    lines = await _records(db, first, last)
    raw = b"".join(lines)
    records = [json.loads(line) for line in (lines[0], lines[-1])]
    root = root_of([leaf_hash(bytes.fromhex(json.loads(line)["hash"])) for line in lines])
    _, leaf_proof = await audit.inclusion_proof(first, checkpoint.size)
    manifest = Manifest(
        origin=origin,
        segment=k,
        segment_records=segment_records,
        first_prev_hash=records[0]["prev_hash"],
        last_hash=records[-1]["hash"],
        root=root,
        records_sha256=hashlib.sha256(raw).hexdigest(),
        first_at=records[0]["content"]["at"],
        last_at=records[-1]["content"]["at"],
        checkpoint_size=checkpoint.size,
        checkpoint_root=checkpoint.root,
    )
    evidence = {
        "format": FORMAT,
        "manifest": sign_note(manifest.text(), node_signer).decode(),
        "checkpoint": checkpoint.note.decode(),
        # The leaf's path without its first `level` hashes, which lie inside the segment.
        "subtree_proof": [h.hex() for h in leaf_proof[level:]],
        "signers": [{"chain_pem": log_chain_pem}]
        + [
            {"identity": c.identity, "chain_pem": c.chain_pem, "statement": c.statement.decode()}
            for c in cosigners
            if c.identity in checkpoint.cosigned_by
        ],
    }
    stem = segment_stem(k)
    await asyncio.to_thread(
        _write_atomically, out / f"{stem}{RECORDS_SUFFIX}", gzip.compress(raw, mtime=0)
    )
    await asyncio.to_thread(
        _write_atomically,
        out / f"{stem}{MANIFEST_SUFFIX}",
        json.dumps(evidence, ensure_ascii=False, indent=1, sort_keys=True).encode() + b"\n",
    )
    return manifest


async def seal_closed(
    *,
    db: Database,
    audit: AuditLog,
    segment_records: int,
    origin: str,
    checkpoint: StoredCheckpoint,
    node_signer: Signer,
    log_chain_pem: str,
    cosigners: Sequence[CosignerKeys],
    out: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> list[int]:
    """Seal every closed segment (covered by ``checkpoint``) not yet in ``out`` and still in
    the live log; returns the segments sealed now."""
    segment_level(segment_records)
    present = await asyncio.to_thread(_prepare, out, segment_records)
    mark = await audit.pruned()
    start = 0 if mark is None else mark.segments
    sealed = []
    for k in range(start, checkpoint.size // segment_records):
        if k in present:
            continue
        first, last = segment_sequences(k, segment_records)
        seal = await seal_segment(
            db=db,
            audit=audit,
            k=k,
            segment_records=segment_records,
            origin=origin,
            checkpoint=checkpoint,
            node_signer=node_signer,
            log_chain_pem=log_chain_pem,
            cosigners=cosigners,
            out=out,
        )
        progress(f"sealed segment {k}: records #{first} to #{last}, root {seal.root.hex()[:16]}…")
        sealed.append(k)
    return sealed
