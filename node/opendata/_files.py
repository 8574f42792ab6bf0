"""The stored bytes of each published version's full files (第三十二条), so that a download
streams them rather than rendering the rows again.

A published version is immutable, so its files are too: at publication the one pass that
computes the files' digests (node.opendata._digests) also writes the csv and the jsonl of every
published item into ``open_file_chunk``, in chunks of :data:`STORED_CHUNK_BYTES` numbered from
0, while the version is still ``building``; the version is served only after that pass, so a
served version has its files. The csv with a byte order mark is the mark followed by the csv's
bytes: served as 3 bytes and the csv's chunks, never stored a third time.

A byte range is a seek: the chunk holding a byte is its offset divided by the chunk size, so a
download resumed near the end of a large file reads only the chunks it sends, a few per query
(:data:`READ_BYTES`). The chunk size is read back from a file's chunks (all but the last are
equally large), so files written with another size stay readable.

What is not stored (a 授权开放 key's narrowed items; versions published before the table
existed) is rendered as before (node.opendata._download). A version's chunks are deleted with
its rows (node.opendata._publish). No grpc.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert
from sqlmodel.ext.asyncio.session import AsyncSession

from node.models import OpenFileChunkRow
from node.storage import Database

#: Size of a stored chunk: a download's chunk. 64 KiB, 256 KiB and 1 MiB chunks read alike
#: (``python -m bench.opendata_file_chunks``, 64 MB: SQLite 1.6-2.8 GB/s, PostgreSQL about
#: 300 MB/s, far above what a download sends), and the smallest seeks closest to a range.
STORED_CHUNK_BYTES = 64 * 1024
#: Bytes of chunks read by one query when a file is streamed (at least one chunk).
READ_BYTES = 1024 * 1024
#: Bytes of chunks written by one transaction at publication.
WRITE_BYTES = 8 * 1024 * 1024
#: The formats stored: the csv (its BOM variant is derived) and the jsonl.
STORED_FORMATS = ("csv", "jsonl")

_c = OpenFileChunkRow.__table__  # type: ignore[attr-defined]


class FileMissing(Exception):
    """A stored file's chunks are gone or short (its version was deleted meanwhile)."""


@dataclass(frozen=True)
class StoredFile:
    """Where a stored file is: its size and the size of its chunks."""

    code: str
    version: int
    format: str
    size: int
    chunk_bytes: int


class FileWriter:
    """The chunks of one version's files as they are rendered: :meth:`add` each piece, in file
    order, then :meth:`close`. Full chunks go to the database in transactions of about
    :data:`WRITE_BYTES`, so memory holds at most that much and one partial chunk per format,
    and no transaction holds SQLite's write lock for the whole pass (as ``open_row`` is written
    in batches): the version is not served before the pass ends, and an abandoned one's chunks
    are deleted with its rows."""

    def __init__(
        self, db: Database, code: str, version: int, chunk_bytes: int = STORED_CHUNK_BYTES
    ) -> None:
        self._db = db
        self._code = code
        self._version = version
        self._chunk = chunk_bytes
        self._buffers = {fmt: bytearray() for fmt in STORED_FORMATS}
        self._seq = dict.fromkeys(STORED_FORMATS, 0)
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0

    @property
    def full(self) -> bool:
        """Enough chunks wait to be written: call :meth:`flush`."""
        return self._pending_bytes >= WRITE_BYTES

    def add(self, fmt: str, data: bytes) -> None:
        buffer = self._buffers[fmt]
        buffer += data
        while len(buffer) >= self._chunk:
            self._take(fmt, bytes(buffer[: self._chunk]))
            del buffer[: self._chunk]

    def _take(self, fmt: str, data: bytes) -> None:
        self._pending.append(
            {
                "resource_code": self._code,
                "version": self._version,
                "format": fmt,
                "seq": self._seq[fmt],
                "data": data,
            }
        )
        self._seq[fmt] += 1
        self._pending_bytes += len(data)

    async def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending, self._pending_bytes = self._pending, [], 0

        async def txn(session: AsyncSession) -> None:
            await (await session.connection()).execute(insert(OpenFileChunkRow), rows)

        await self._db.write("opendata.file_chunks", txn)

    async def close(self) -> None:
        """Write what is left: each format's last, partial chunk."""
        for fmt, buffer in self._buffers.items():
            if buffer:
                self._take(fmt, bytes(buffer))
                buffer.clear()
        await self.flush()


class StoredFiles:
    """The files kept in ``open_file_chunk``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def writer(self, code: str, version: int) -> FileWriter:
        return FileWriter(self._db, code, version, STORED_CHUNK_BYTES)

    async def find(self, code: str, version: int, fmt: str) -> StoredFile | None:
        """The stored file of ``fmt`` (``csv`` or ``jsonl``), or None when none is stored."""
        found = await self._db.fetch_one(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0), COALESCE(MAX(LENGTH(data)), 0) "
            "FROM open_file_chunk WHERE resource_code = :code AND version = :version AND "
            "format = :format",
            {"code": code, "version": version, "format": fmt},
        )
        if found is None or not int(found[0]):
            return None
        return StoredFile(code, version, fmt, int(found[1]), int(found[2]))

    async def read(self, file: StoredFile, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of ``file``, a few chunks per query; FileMissing when its
        chunks are gone or short."""
        size = file.chunk_bytes
        per_query = max(1, READ_BYTES // size)
        at = start
        while at < end:
            first = at // size
            last = min((end - 1) // size, first + per_query - 1)
            rows = await self._db.fetch_all(
                "SELECT seq, data FROM open_file_chunk WHERE resource_code = :code AND "
                "version = :version AND format = :format AND seq >= :first AND seq <= :last "
                "ORDER BY seq",
                {
                    "code": file.code,
                    "version": file.version,
                    "format": file.format,
                    "first": first,
                    "last": last,
                },
            )
            if [int(r[0]) for r in rows] != list(range(first, last + 1)):
                raise FileMissing(f"chunks {first}-{last} of {file}")
            for seq, data in rows:
                begin = int(seq) * size
                piece = bytes(data)[max(0, at - begin) : end - begin]
                if not piece:
                    raise FileMissing(f"chunk {seq} of {file} is short")
                at += len(piece)
                yield piece

    async def forget(self, code: str, version: int, fmt: str) -> None:
        """Drop a stored file found wrong: downloads render it again."""

        async def txn(session: AsyncSession) -> None:
            await (await session.connection()).execute(
                delete(OpenFileChunkRow).where(
                    _c.c.resource_code == code, _c.c.version == version, _c.c.format == fmt
                )
            )

        await self._db.write("opendata.forget_file", txn)
