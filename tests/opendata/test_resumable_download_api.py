"""Downloads that state their digest first and resume (第三十二条、第三十五条), over the wire: a
real province node over mutual TLS and its open data portal. The first chunk states the whole
file's size and SHA-256 and carries a receipt that verifies over the bytes; the digests are
kept from the publication on, computed and kept by a first download when missing (a key's
narrowed items, versions published before they were kept), and go with their version; a
download resumed at any offset, or cut to a length, is the same file's bytes; an offset past the
end is OUT_OF_RANGE; bytes that do not match the stated digest fail the download."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from govnode.v1 import opendata_pb2
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from node.app import RunningNode
from node.opendata import _download, check_receipt, columns_id
from node.pki import load_certs
from tests.opendata.test_download_api import (
    AGENCY,
    AUTHORIZED,
    TD,
    UNIVERSAL,
    checked,
    download,
    listing,
    publish,
    republish,
)
from tests.opendata.test_keyed_api import APPROVED, approved_key
from tests.support.access import refused
from tests.support.nodes import PUBLIC_SECURITY, make_province, start

IP = "ip:203.0.113.9"
#: The download chunk size this file's first test sets (node.opendata._download.CHUNK_BYTES).
CHUNK_BYTES = 64 * 1024


async def digests(node: RunningNode, code: str) -> dict[tuple[int, str, bool, str], str]:
    """(version, format, bom, columns id) -> sha256 of every digest kept for ``code``."""
    rows = await node.db.fetch_all(
        "SELECT version, format, bom, columns, sha256 FROM open_file_digest "
        "WHERE resource_code = :code",
        {"code": code},
    )
    return {(int(r[0]), str(r[1]), bool(r[2]), str(r[3])): str(r[4]) for r in rows}


async def execute(node: RunningNode, sql: str, params: dict[str, Any]) -> None:
    async def txn(session: AsyncSession) -> None:
        await (await session.connection()).execute(text(sql), params)

    await node.db.write("test.execute", txn)


def joined(chunks: list[opendata_pb2.DownloadChunk]) -> bytes:
    return b"".join(c.data for c in chunks)


async def test_the_digest_comes_first_and_a_download_resumes_at_any_offset(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 64 KiB (the node's are 256 KiB), so that a modest file spans several.
    monkeypatch.setattr(_download, "CHUNK_BYTES", CHUNK_BYTES)
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        # An agency downloads: a portal's calls spend budgets (test_open_budgets_api).
        portal = setup.agency(PUBLIC_SECURITY)
        await publish(node, setup, UNIVERSAL, 1500)
        u = UNIVERSAL.resource_code
        listed = (await listing(node, portal)).resources[0]
        root = load_certs(setup.config.path(setup.config.tls.root))[0]

        # --- kept at the publication, all three files, and they are the files' digests --------
        kept = await digests(node, u)
        everything = columns_id(["bh", "csrq", "qh", "bz"])
        assert set(kept) == {(1, f, b, everything) for f, b in [("csv", False), ("csv", True)]} | {
            (1, "jsonl", False, everything)
        }
        files: dict[tuple[str, bool], bytes] = {}
        for fmt, bom in [("csv", False), ("csv", True), ("jsonl", False)]:
            chunks = await download(node, portal, u, fmt, IP, bom=bom)
            data = checked(chunks, listed)
            assert hashlib.sha256(data).hexdigest() == kept[(1, fmt, bom, everything)]
            receipt = check_receipt(chunks[0].receipt, root, TD, file_bytes=data)
            assert (receipt.sha256, receipt.size, receipt.recipient) == (
                chunks[0].sha256,
                len(data),
                AGENCY,
            )
            files[(fmt, bom)] = data
        data = files[("csv", False)]
        size = len(data)
        assert size > 3 * CHUNK_BYTES

        # --- resumed at several offsets: the rest of the same file --------------------------
        for offset in (1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, size // 2, size - 1):
            chunks = await download(node, portal, u, "csv", IP, offset=offset)
            assert joined(chunks) == data[offset:], offset
            assert chunks[0].offset == offset and chunks[-1].last
            assert (chunks[0].size, chunks[0].sha256) == (size, hashlib.sha256(data).hexdigest())
            assert all(len(c.data) <= CHUNK_BYTES for c in chunks)
            for before, after in itertools.pairwise(chunks):
                assert after.offset == before.offset + len(before.data)
            # The receipt is the whole file's, whatever was resent.
            assert check_receipt(chunks[0].receipt, root, TD, file_bytes=data).size == size
        # Pieces from several resumed downloads make up the file.
        cuts = [0, 7, CHUNK_BYTES + 3, 2 * CHUNK_BYTES, size - 2, size]
        pieces = [
            joined(await download(node, portal, u, "csv", IP, offset=lo, length=hi - lo))
            for lo, hi in itertools.pairwise(cuts)
        ]
        assert b"".join(pieces) == data
        # At the end: one empty chunk, still stating the file.
        (end,) = await download(node, portal, u, "csv", IP, offset=size)
        assert (end.data, end.offset, end.last, end.size) == (b"", size, True, size)
        assert end.sha256 == hashlib.sha256(data).hexdigest() and end.receipt

        # --- lengths: at most that many bytes; past the end, to the end ----------------------
        for offset, length in (
            (0, 1),
            (10, 100),
            (CHUNK_BYTES - 3, CHUNK_BYTES + 7),
            (size - 5, 99),
        ):
            chunks = await download(node, portal, u, "csv", IP, offset=offset, length=length)
            assert joined(chunks) == data[offset : offset + length], (offset, length)
            assert chunks[-1].last and all(len(c.data) <= CHUNK_BYTES for c in chunks)
        with_bom = files[("csv", True)]
        chunks = await download(node, portal, u, "csv", IP, bom=True, offset=1, length=5)
        assert joined(chunks) == with_bom[1:6]

        # --- out of range ------------------------------------------------------------------
        for offset, length, name in ((size + 1, 0, "offset"), (-1, 0, "offset"), (0, -1, "length")):
            asked = download(node, portal, u, "csv", IP, offset=offset, length=length)
            status = await refused(asked)
            assert status.code() is grpc.StatusCode.OUT_OF_RANGE, name
            assert (status.details() or "").startswith(f"{name}: "), status.details()
        past = await refused(download(node, portal, u, "csv", IP, offset=size + 1))
        assert f"({size} bytes)" in (past.details() or "")

        # --- the audit log names the digest and the range as asked ---------------------------
        records = await node.db.fetch_all(
            "SELECT outcome, detail FROM audit_record WHERE method = "
            "'/govnode.v1.OpenDataService/Download' ORDER BY sequence",
            {},
        )
        details = [json.loads(r[1]) for r in records if str(r[0]) == "OK"]
        ranged = [d for d in details if d.get("offset") == 10 and d.get("length") == 100]
        assert len(ranged) == 1
        assert ranged[0]["sha256"] == hashlib.sha256(data).hexdigest()
        assert ranged[0]["size"] == size
        assert [str(r[0]) for r in records].count("OUT_OF_RANGE") == 4
    finally:
        await node.stop(grace=0)


async def test_digests_are_computed_when_missing_and_go_with_their_version(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        # An agency downloads: a portal's calls spend budgets (test_open_budgets_api).
        portal = setup.agency(PUBLIC_SECURITY)
        await publish(node, setup, UNIVERSAL, 200)
        u = UNIVERSAL.resource_code
        listed = (await listing(node, portal)).resources[0]
        data = checked(await download(node, portal, u, "jsonl", IP), listed)

        # --- a version published before digests were kept: the first downloads compute them,
        # at once, and keep them once (the second insert finds the first) ---------------------
        await execute(node, "DELETE FROM open_file_digest", {})
        assert await digests(node, u) == {}
        together = await asyncio.gather(
            *(download(node, portal, u, "jsonl", f"ip:203.0.113.{n}") for n in range(4))
        )
        for chunks in together:
            assert checked(chunks, listed) == data
        kept = await digests(node, u)
        assert len(kept) == 3 and hashlib.sha256(data).hexdigest() in kept.values()

        # --- a digest that does not match the bytes fails a whole download, and is dropped ----
        await execute(
            node,
            "UPDATE open_file_digest SET sha256 = :bad WHERE format = 'jsonl'",
            {"bad": "0" * 64},
        )
        lost = await refused(download(node, portal, u, "jsonl", IP))
        assert lost.code() is grpc.StatusCode.DATA_LOSS
        assert "download again" in (lost.details() or "")
        assert checked(await download(node, portal, u, "jsonl", IP), listed) == data

        # --- the digests go with their version's rows ----------------------------------------
        await republish(node, setup, u)  # version 2; version 1 stays for downloads in flight
        assert {v for v, *_ in await digests(node, u)} == {1, 2}
        await republish(node, setup, u)  # version 3: version 1's rows and digests are gone
        assert {v for v, *_ in await digests(node, u)} == {2, 3}
        rows = await node.db.fetch_all(
            "SELECT COUNT(*) FROM open_row WHERE resource_code = :code AND version = 1",
            {"code": u},
        )
        assert int(rows[0][0]) == 0
    finally:
        await node.stop(grace=0)


async def test_a_keys_narrowed_file_has_its_own_digest_kept_at_its_first_download(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        portal = setup.portal()
        await publish(node, setup, AUTHORIZED, 300)
        a = AUTHORIZED.resource_code
        key_id, key = await approved_key(setup, node, a)
        root = load_certs(setup.config.path(setup.config.tls.root))[0]
        everything = columns_id(["bh", "csrq", "qh", "bz"])
        narrowed = columns_id(APPROVED)
        assert {c for *_, c in await digests(node, a)} == {everything}

        chunks = await download(node, portal, a, "csv", key=key)
        data = joined(chunks)
        assert data.startswith(b"csrq,qh\r\n")
        assert chunks[0].sha256 == hashlib.sha256(data).hexdigest()
        assert chunks[0].size == len(data)
        receipt = check_receipt(chunks[0].receipt, root, TD, file_bytes=data)
        assert receipt.recipient == f"key:{key_id}"
        kept = await digests(node, a)
        assert kept[(1, "csv", False, narrowed)] == chunks[0].sha256
        assert kept[(1, "csv", False, everything)] != chunks[0].sha256
        assert {(f, b) for (_, f, b, c) in kept if c == narrowed} == {
            ("csv", False),
            ("csv", True),
            ("jsonl", False),
        }
        # Kept: the next one (resumed) states the same digest without computing it again.
        resumed = await download(node, portal, a, "csv", key=key, offset=9)
        assert joined(resumed) == data[9:] and resumed[0].sha256 == chunks[0].sha256
    finally:
        await node.stop(grace=0)
