"""The stored files of a published version (node.opendata._files), on each backend: written at
publication, they are the bytes a rendering of the rows makes; a download of the full item set
streams them, at any offset and length, the csv with a byte order mark being the mark and the
csv's bytes; a version without them (published before they were stored) is rendered and is the
same file; they go with their version; bytes that do not match the digest fail the download
and are dropped. Small stored chunks here, so that a file of a few hundred rows spans many."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from node.errors import Aborted, DataLoss
from node.opendata import (
    CHUNK_BYTES,
    DownloadFile,
    OpenCatalog,
    OpenData,
    Served,
    _download,
    _files,
    open_data_gate,
)
from node.opendata._encode import BOM
from node.storage import Database
from tests.opendata.test_publish import BY, PUBLISHER, open_entry, opendata, person, setup

#: Stored chunks of this size (a download's chunks stay 256 KiB), read this many bytes a query.
SMALL_CHUNK = 1000
SMALL_READ = 3500


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "STORED_CHUNK_BYTES", SMALL_CHUNK)
    monkeypatch.setattr(_files, "READ_BYTES", SMALL_READ)


async def published(db: Database, n: int = 400) -> tuple[OpenData, Served]:
    rows = [
        person(i, 1980 + i % 4, ("350102", "350103")[i % 2], note=f'备注, "{i}"\n第二行')
        for i in range(n)
    ]
    entry = open_entry()
    catalog = await setup(db, rows, entry)
    data = opendata(db, catalog)
    await data.publish(entry.resource_code, BY)
    public = OpenCatalog(db, data, open_data_gate(db, province=True), PUBLISHER)
    return data, await public.get(entry.resource_code)


async def whole(file: DownloadFile, offset: int = 0, length: int = 0) -> bytes:
    return b"".join([c.data async for c in file.chunks(offset, length)])


async def rendered(data: OpenData, served: Served, fmt: str, bom: bool = False) -> bytes:
    file = DownloadFile(data, served, fmt, bom=bom, whole=False)
    made = await whole(file)
    assert not file.stored and file.rows == served.rows
    return made


async def stored(db: Database, code: str, version: int, fmt: str) -> list[tuple[int, bytes]]:
    rows = await db.fetch_all(
        "SELECT seq, data FROM open_file_chunk WHERE resource_code = :code AND "
        "version = :version AND format = :format ORDER BY seq",
        {"code": code, "version": version, "format": fmt},
    )
    return [(int(r[0]), bytes(r[1])) for r in rows]


async def execute(db: Database, sql: str, **params: object) -> None:
    async def txn(session: AsyncSession) -> None:
        await (await session.connection()).execute(text(sql), params)

    await db.write("test.execute", txn)


async def test_the_stored_files_are_the_rendered_bytes_and_serve_any_range(
    database: Database,
) -> None:
    data, served = await published(database)
    code = served.entry.resource_code
    for fmt in ("csv", "jsonl"):
        chunks = await stored(database, code, 1, fmt)
        made = await rendered(data, served, fmt)
        assert [seq for seq, _ in chunks] == list(range(len(chunks))) and len(chunks) > 10
        assert all(len(c) == SMALL_CHUNK for _, c in chunks[:-1])
        assert b"".join(c for _, c in chunks) == made
        digest = await data.digests.get(code, 1, fmt, False, served.columns)
        assert digest is not None and digest.sha256 == hashlib.sha256(made).hexdigest()

        # A whole download streams them, in download chunks, nothing rendered.
        file = DownloadFile(data, served, fmt, whole=True)
        sent = [c async for c in file.chunks()]
        assert file.stored and file.rows == 0
        assert b"".join(c.data for c in sent) == made and sent[-1].last
        assert all(len(c.data) <= CHUNK_BYTES for c in sent)

        # Ranges: across stored chunks' edges, a query's edge, the end, one byte, nothing.
        size = len(made)
        edges = (0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, SMALL_READ, size // 2)
        for offset, length in itertools.product((*edges, size - 1, size), (0, 1, 999, 4321)):
            file = DownloadFile(data, served, fmt, whole=True)
            got = await whole(file, offset, length)
            end = size if not length else offset + length
            assert got == made[offset:end], (fmt, offset, length)
            assert file.stored or offset == size

    # The byte order mark: 3 bytes and the csv's chunks, stored once.
    plain = await rendered(data, served, "csv")
    with_bom = await rendered(data, served, "csv", bom=True)
    assert with_bom == BOM + plain
    for offset, length in ((0, 0), (0, 2), (1, 5), (2, 1), (3, 0), (4, SMALL_CHUNK + 7)):
        file = DownloadFile(data, served, "csv", bom=True, whole=True)
        end = len(with_bom) if not length else offset + length
        assert await whole(file, offset, length) == with_bom[offset:end], (offset, length)
        assert file.stored
    formats = await database.fetch_all(
        "SELECT DISTINCT format FROM open_file_chunk WHERE resource_code = :code", {"code": code}
    )
    assert sorted(str(r[0]) for r in formats) == ["csv", "jsonl"]


async def test_a_version_without_stored_files_is_rendered_and_is_the_same_file(
    database: Database,
) -> None:
    data, served = await published(database)
    code = served.entry.resource_code
    files = {fmt: await whole(DownloadFile(data, served, fmt, whole=True)) for fmt in ("csv",)}
    files["jsonl"] = await whole(DownloadFile(data, served, "jsonl", whole=True))
    # As if published before files were stored.
    await execute(database, "DELETE FROM open_file_chunk WHERE resource_code = :c", c=code)
    for fmt, made in files.items():
        file = DownloadFile(data, served, fmt, whole=True)
        assert await whole(file) == made and not file.stored and file.rows == served.rows
        file = DownloadFile(data, served, fmt, whole=True)
        assert await whole(file, 1234, 567) == made[1234:1801] and not file.stored
    file = DownloadFile(data, served, "csv", bom=True, whole=True)
    assert await whole(file) == BOM + files["csv"]
    # A stored file whose size is not the digest's is not trusted either.
    await data.publish(code, BY)
    public = OpenCatalog(database, data, open_data_gate(database, province=True), PUBLISHER)
    served = await public.get(code)
    made = await rendered(data, served, "csv")
    await execute(
        database,
        "DELETE FROM open_file_chunk WHERE resource_code = :c AND version = 2 AND seq = 3",
        c=code,
    )
    file = DownloadFile(data, served, "csv", whole=True)
    assert await whole(file) == made and not file.stored


async def test_bytes_that_do_not_match_the_digest_fail_and_are_made_again(
    database: Database,
) -> None:
    data, served = await published(database)
    code = served.entry.resource_code
    made = await rendered(data, served, "csv")
    first = (await stored(database, code, 1, "csv"))[2][1]
    await execute(
        database,
        "UPDATE open_file_chunk SET data = :bad WHERE resource_code = :c AND format = 'csv' "
        "AND seq = 2",
        bad=first.replace(b"3501", b"3502"),
        c=code,
    )
    # A range is sent as stored (its digest is the whole file's); the whole file is checked.
    file = DownloadFile(data, served, "csv", whole=True)
    with pytest.raises(DataLoss, match="download again"):
        await whole(file)
    # Its digest and stored file are dropped: the next download renders and states it anew.
    assert await stored(database, code, 1, "csv") == []
    assert await data.digests.get(code, 1, "csv", False, served.columns) is None
    file = DownloadFile(data, served, "csv", whole=True)
    assert await whole(file) == made and not file.stored
    # The jsonl file is untouched.
    assert await stored(database, code, 1, "jsonl")


async def test_stored_files_go_with_their_version(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_download, "CHUNK_BYTES", 64 * 1024)  # several download chunks
    data, served = await published(database, 1500)  # a jsonl file of several download chunks
    code = served.entry.resource_code

    async def versions() -> set[int]:
        rows = await database.fetch_all(
            "SELECT DISTINCT version FROM open_file_chunk WHERE resource_code = :c", {"c": code}
        )
        return {int(r[0]) for r in rows}

    assert await versions() == {1}
    await data.publish(code, BY)  # version 1 stays for downloads in flight
    assert await versions() == {1, 2}
    # A download of version 1 that began before version 3 replaced it ends ABORTED, not short.
    file = DownloadFile(data, served, "jsonl", whole=True)
    chunks = file.chunks()
    await anext(chunks)
    await data.publish(code, BY)
    assert await versions() == {2, 3}
    with pytest.raises(Aborted, match="download it again"):
        async for _ in chunks:
            pass


async def test_a_publication_that_fails_while_storing_its_files_leaves_none(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "WRITE_BYTES", 2 * SMALL_CHUNK)  # written as the pass goes
    rows = [person(i, 1980 + i % 4, ("350102", "350103")[i % 2]) for i in range(400)]
    entry = open_entry()
    data = opendata(database, await setup(database, rows, entry))
    written: list[int] = []
    flush = _files.FileWriter.flush

    async def broken_close(self: _files.FileWriter) -> None:
        await flush(self)
        written.append(len(await stored(database, entry.resource_code, 1, "csv")))
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(_files.FileWriter, "close", broken_close)
    with pytest.raises(RuntimeError, match="disk"):
        await data.publish(entry.resource_code, BY)
    assert written and written[0] > 2  # chunks were written before it failed ...
    left = await database.fetch_all("SELECT COUNT(*) FROM open_file_chunk", {})
    assert int(left[0][0]) == 0  # ... and went with the abandoned version
