"""The size and SHA-256 of each file a served version is downloaded as, known before the file
is sent (第三十二条、第三十五条): a download sends them, and the receipt that states them, with
its first chunk, and can resume at a byte offset of a file that stays the same bytes.

A file is one version in one format (csv, csv with a byte order mark, jsonl) over one item
set: the version's published items, or a 授权开放 key's approved ones (node.opendata._access),
told apart by :func:`node.opendata._encode.columns_id`. Its digest is computed by one pass of
the download's own encoder over the rows (constant memory; the bytes are hashed and dropped),
all three formats in the same pass, and kept in ``open_file_digest``:

- eagerly when a version is published, for its published items (node.opendata._publish, in
  the transaction that serves the version);
- lazily by the first download of a file whose digest is not kept (a key's narrowed items,
  versions published before the table existed), which then keeps it. Two first downloads at
  once may both compute it; the second insert finds the first and keeps it.

At publication the same pass also writes the version's full files (node.opendata._files).
A version's digests are deleted with its rows. No grpc.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from node.models import OpenFileDigestRow
from node.opendata._encode import BOM, Encoder, RowSource, columns_id, served_rows
from node.opendata._files import FileWriter
from node.opendata._receipt import FileDigest
from node.storage import Database

#: The files of one item set: (format, byte order mark).
VARIANTS: tuple[tuple[str, bool], ...] = (("csv", False), ("csv", True), ("jsonl", False))

Variant = tuple[str, bool]

_f = OpenFileDigestRow.__table__  # type: ignore[attr-defined]


async def compute_digests(
    source: RowSource,
    code: str,
    version: int,
    columns: Sequence[str],
    store: FileWriter | None = None,
) -> tuple[dict[Variant, FileDigest], int]:
    """The digest of every variant of the file of ``columns``, in one pass over the rows, and
    how many rows were read; with ``store``, the csv and jsonl bytes are written to it in the
    same pass (node.opendata._files: a version's full files, at publication)."""
    csv_encoder, jsonl_encoder = Encoder("csv", columns), Encoder("jsonl", columns)
    header = csv_encoder.header()
    plain, bom, jsonl = hashlib.sha256(header), hashlib.sha256(BOM + header), hashlib.sha256()
    sizes = {"csv": len(header), "jsonl": 0}
    if store is not None:
        store.add("csv", header)
    rows = 0
    async for _, values in served_rows(source, code, version):
        line = csv_encoder.row(values)
        plain.update(line)
        bom.update(line)
        sizes["csv"] += len(line)
        json_line = jsonl_encoder.row(values)
        jsonl.update(json_line)
        sizes["jsonl"] += len(json_line)
        rows += 1
        if store is not None:
            store.add("csv", line)
            store.add("jsonl", json_line)
            if store.full:
                await store.flush()
    if store is not None:
        await store.close()
    digests = {
        ("csv", False): FileDigest(plain.hexdigest(), sizes["csv"]),
        ("csv", True): FileDigest(bom.hexdigest(), sizes["csv"] + len(BOM)),
        ("jsonl", False): FileDigest(jsonl.hexdigest(), sizes["jsonl"]),
    }
    return digests, rows


def digest_rows(
    code: str, version: int, columns: Sequence[str], digests: Mapping[Variant, FileDigest]
) -> list[dict[str, Any]]:
    """The ``open_file_digest`` rows of ``digests``."""
    of = columns_id(columns)
    return [
        {
            "resource_code": code,
            "version": version,
            "format": fmt,
            "bom": bom,
            "columns": of,
            "size": digest.size,
            "sha256": digest.sha256,
        }
        for (fmt, bom), digest in digests.items()
    ]


class FileDigests:
    """The digests kept in ``open_file_digest``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(
        self, code: str, version: int, fmt: str, bom: bool, columns: Sequence[str]
    ) -> FileDigest | None:
        found = await self._db.fetch_one(
            "SELECT sha256, size FROM open_file_digest WHERE resource_code = :code AND "
            "version = :version AND format = :format AND bom = :bom AND columns = :columns",
            {
                "code": code,
                "version": version,
                "format": fmt,
                "bom": bom,
                "columns": columns_id(columns),
            },
        )
        return None if found is None else FileDigest(str(found[0]), int(found[1]))

    async def keep(
        self,
        code: str,
        version: int,
        columns: Sequence[str],
        digests: Mapping[Variant, FileDigest],
    ) -> None:
        """Keep ``digests``; one kept meanwhile (a concurrent first download) stays."""
        rows = digest_rows(code, version, columns, digests)

        async def txn(session: AsyncSession) -> None:
            connection = await session.connection()
            for row in rows:
                key = [_f.c[name] == row[name] for name in ("resource_code", "version", "format")]
                key += [_f.c.bom.is_(row["bom"]), _f.c.columns == row["columns"]]
                if (await connection.execute(sa_select(_f.c.size).where(*key))).first():
                    continue
                try:
                    async with connection.begin_nested():
                        await connection.execute(insert(OpenFileDigestRow).values(**row))
                except IntegrityError as error:  # kept by another download since the look
                    if not self._db.is_unique_violation(error):
                        raise

        await self._db.write("opendata.keep_digests", txn)

    async def forget(
        self, code: str, version: int, fmt: str, bom: bool, columns: Sequence[str]
    ) -> None:
        """Drop a digest found wrong, so that the next download computes it again."""

        async def txn(session: AsyncSession) -> None:
            await (await session.connection()).execute(
                delete(OpenFileDigestRow).where(
                    _f.c.resource_code == code,
                    _f.c.version == version,
                    _f.c.format == fmt,
                    _f.c.bom.is_(bom),
                    _f.c.columns == columns_id(columns),
                )
            )

        await self._db.write("opendata.forget_digest", txn)
