"""The Merkle tree over the audit log (第三十九条), kept in the database with every batch: its
root is the RFC 6962 root of the records' chain hashes, at every size; its proofs verify with
node.tlog alone; it survives restarts, several writers and a log written before it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from node.audit import AuditLog, record_leaf
from node.errors import InvalidArgument
from node.storage import Database
from node.tlog import ProofError, root_of, verify_consistency, verify_inclusion
from tests.support.audit import append_many


async def leaves(db: Database) -> list[bytes]:
    async with db.engine.connect() as connection:
        rows = await connection.execute(text("SELECT hash FROM audit_record ORDER BY sequence"))
        return [record_leaf(str(r[0])) for r in rows]


async def stored_subtrees(db: Database) -> list[tuple[int, int]]:
    async with db.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT level, idx FROM audit_subtree ORDER BY level, idx")
        )
        return [(int(r[0]), int(r[1])) for r in rows]


async def test_the_root_is_the_rfc6962_root_of_the_chain_hashes_at_every_size(
    database: Database,
) -> None:
    log = AuditLog(database, max_batch=37)
    await log.start()
    try:
        empty = await log.tree_head()
        assert (empty.size, empty.root) == (0, root_of([]))
        await append_many(log, 0, 600)
        all_leaves = await leaves(database)
        head = await log.tree_head()
        assert (head.size, head.root) == (600, root_of(all_leaves))
        for size in (1, 2, 3, 255, 256, 257, 511, 512, 513, 599):
            assert (await log.tree_head(size)).root == root_of(all_leaves[:size])
        # Complete subtrees of 256 records and up are kept: two of 256, one of 512.
        assert await stored_subtrees(database) == [(8, 0), (8, 1), (9, 0)]
        assert log.records_written == 600 and log.batches_written > 600 // 37
    finally:
        await log.close()


async def test_proofs_verify_against_the_roots_and_fail_for_another_record(
    database: Database,
) -> None:
    log = AuditLog(database)
    await log.start()
    try:
        await append_many(log, 0, 530)
        all_leaves = await leaves(database)
        for size in (1, 7, 256, 300, 512, 530):
            root = (await log.tree_head(size)).root
            for sequence in sorted({1, min(2, size), size // 2 + 1, size}):
                leaf, proof = await log.inclusion_proof(sequence, size)
                assert leaf == all_leaves[sequence - 1]
                verify_inclusion(leaf, sequence - 1, size, proof, root)
                if size > 1:  # the same proof does not vouch for another record
                    other = all_leaves[sequence % size]
                    with pytest.raises(ProofError):
                        verify_inclusion(other, sequence - 1, size, proof, root)
        for size1, size2 in ((1, 530), (255, 256), (256, 513), (300, 530), (529, 530), (7, 7)):
            proof = await log.consistency_proof(size1, size2)
            verify_consistency(
                size1,
                size2,
                proof,
                (await log.tree_head(size1)).root,
                (await log.tree_head(size2)).root,
            )
        with pytest.raises(InvalidArgument, match="sequence: 531 is not in a tree of 530 records"):
            await log.inclusion_proof(531, 530)
        with pytest.raises(InvalidArgument, match="the audit tree covers 530 records, not 600"):
            await log.inclusion_proof(5, 600)
        with pytest.raises(InvalidArgument, match="no consistency proof from 0 to 5 records"):
            await log.consistency_proof(0, 5)
    finally:
        await log.close()


async def test_a_restart_and_a_second_writer_keep_one_tree(database: Database) -> None:
    first, second = AuditLog(database), AuditLog(database)
    await first.start()
    await second.start()
    try:
        # Interleaved writers: each must take the other's records into the tree.
        for round_ in range(6):
            await append_many(first if round_ % 2 else second, round_ * 60, 60)
    finally:
        await first.close()
        await second.close()
    again = AuditLog(database)
    await again.start()
    try:
        await append_many(again, 360, 10)
        assert (await again.tree_head()).root == root_of(await leaves(database))
        assert (await again.tree_head()).size == 370
    finally:
        await again.close()


async def test_a_log_written_before_the_tree_is_taken_into_it_at_start(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(database)
    await log.start()
    await append_many(log, 0, 700)
    await log.close()
    # As a node upgraded past migration 0016 finds it: records, and no tree.
    async with database.engine.begin() as connection:
        await connection.execute(text("DELETE FROM audit_subtree"))
        await connection.execute(text("DELETE FROM audit_tree"))
    monkeypatch.setattr("node.audit._log.CATCH_UP_STEP", 300)  # in three steps
    upgraded = AuditLog(database)
    await upgraded.start()
    try:
        head = await upgraded.tree_head()
        assert (head.size, head.root) == (700, root_of(await leaves(database)))
        assert await stored_subtrees(database) == [(8, 0), (8, 1), (9, 0)]
        leaf, proof = await upgraded.inclusion_proof(600, 700)
        verify_inclusion(leaf, 599, 700, proof, head.root)
    finally:
        await upgraded.close()


async def test_deleting_the_newest_records_changes_the_root(database: Database) -> None:
    """Truncation leaves a valid shorter chain (the chain cannot tell); the tree's root at the
    size a checkpoint signed can no longer be shown, which is what a witness will catch."""
    log = AuditLog(database)
    await log.start()
    await append_many(log, 0, 300)
    signed = await log.tree_head()
    await log.close()
    async with database.engine.begin() as connection:
        await connection.execute(text("DELETE FROM audit_record WHERE sequence > 290"))
    again = AuditLog(database)
    await again.start()
    try:
        await append_many(again, 1000, 20)
        head = await again.tree_head()
        assert head.size == 310 and head.root == root_of(await leaves(database))
        assert (await again.tree_head(300)).root != signed.root
    finally:
        await again.close()
