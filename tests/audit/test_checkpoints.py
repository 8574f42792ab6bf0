"""Signed checkpoints of the audit log and this node as a witness (第三十九条; C2SP
tlog-checkpoint, tlog-witness), on a real database: a node signs only trees that extend what it
signed; a witness cosigns only checkpoints consistent with what it cosigned, and keeps the
evidence of a rollback or a fork."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import text

from gateway.identity import Role, make_identity
from node.audit import (
    RESTART_ACTION,
    AuditLog,
    ChainCheck,
    Checkpoints,
    Cosigned,
    LogDiverged,
    SizeConflict,
    Witness,
    Witnessed,
    current_epoch,
    epochs,
    federation_rule,
    lost_history,
    mark_restored,
    pending_restore,
    problems,
    restart,
    settle_restores,
)
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.storage import Database
from node.tlog import (
    AddCheckpoint,
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    EcdsaSigner,
    EcdsaVerifier,
    format_add_checkpoint,
    open_note,
    parse_checkpoint,
    sign_note,
    verify_consistency,
)
from tests.support.audit import append_many, rewrite, truncate

ORIGIN = "350100.fujian.gov.cn/audit"
KEY = ec.generate_private_key(ec.SECP256R1())


async def started(db: Database) -> AuditLog:
    log = AuditLog(db)
    await log.start()
    return log


async def test_a_checkpoint_is_the_signed_tree_and_is_made_only_when_the_log_grew(
    database: Database,
) -> None:
    log = await started(database)
    try:
        checkpoints = Checkpoints(database, log, ORIGIN, EcdsaSigner(ORIGIN, KEY))
        assert await checkpoints.make() is None  # an empty log: nothing to sign
        await append_many(log, 0, 300)
        first = await checkpoints.make()
        assert first is not None
        note, signatures = open_note(first.note, [EcdsaVerifier(ORIGIN, KEY.public_key())])
        signed = parse_checkpoint(note.text)
        head = await log.tree_head()
        assert (signed.origin, signed.size, signed.root) == (ORIGIN, 300, head.root)
        assert len(signatures) == 1
        assert await checkpoints.make() is None  # nothing added
        await append_many(log, 300, 20)
        second = await checkpoints.make()
        assert second is not None and second.size == 320
        proof = await log.consistency_proof(300, 320)
        verify_consistency(300, 320, proof, first.root, second.root)
        assert (await checkpoints.newest()) == second
        assert (await checkpoints.at_size(300)) == first
    finally:
        await log.close()


async def test_a_log_whose_newest_records_were_deleted_is_not_signed_again(
    database: Database,
) -> None:
    log = await started(database)
    await append_many(log, 0, 300)
    checkpoints = Checkpoints(database, log, ORIGIN, EcdsaSigner(ORIGIN, KEY))
    assert await checkpoints.make() is not None
    await log.close()
    await truncate(database, 280)
    log = await started(database)
    try:
        checkpoints = Checkpoints(database, log, ORIGIN, EcdsaSigner(ORIGIN, KEY))
        with pytest.raises(LogDiverged, match="holds 280 records, fewer than the 300"):
            await checkpoints.make()
        await append_many(log, 1000, 40)  # growing past 300 does not hide it
        with pytest.raises(LogDiverged, match="does not extend the checkpoint of 300"):
            await checkpoints.make()
    finally:
        await log.close()


async def test_a_log_whose_past_was_rewritten_is_not_signed_again(database: Database) -> None:
    log = await started(database)
    await append_many(log, 0, 300)
    checkpoints = Checkpoints(database, log, ORIGIN, EcdsaSigner(ORIGIN, KEY))
    assert await checkpoints.make() is not None
    await log.close()
    await rewrite(database, 17, "nothing happened here")
    log = await started(database)
    try:
        assert (await log.verify_chain()).ok  # the chain alone cannot tell
        checkpoints = Checkpoints(database, log, ORIGIN, EcdsaSigner(ORIGIN, KEY))
        with pytest.raises(LogDiverged, match="records were rewritten"):
            await checkpoints.make()
    finally:
        await log.close()


# --- the witness ---------------------------------------------------------------------------


class Alarms:
    def __init__(self) -> None:
        self.raised: list[tuple[str, str]] = []

    async def __call__(self, origin: str, message: str) -> None:
        self.raised.append((origin, message))


WITNESS_KEY = ed25519.Ed25519PrivateKey.generate()
WITNESS = "350000.fujian.gov.cn/witness"


def signed(size: int, root: bytes, key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    return sign_note(Checkpoint(ORIGIN, size, root).body(), EcdsaSigner(ORIGIN, key))


def body(old: int, proof: list[bytes], note: bytes) -> bytes:
    return format_add_checkpoint(AddCheckpoint(old, tuple(proof), note))


async def evidence_kinds(db: Database) -> list[str]:
    async with db.engine.connect() as connection:
        rows = await connection.execute(text("SELECT kind FROM witness_evidence ORDER BY id"))
        return [str(r[0]) for r in rows]


async def test_a_witness_cosigns_what_extends_its_state_and_keeps_evidence_of_the_rest(
    database: Database,
) -> None:
    log = await started(database)  # the log being witnessed (its tables are not the witness's)
    alarms = Alarms()
    witness = Witness(database, CosignatureSigner(WITNESS, WITNESS_KEY), alarms)
    verifier = EcdsaVerifier(ORIGIN, KEY.public_key())
    cosigner = CosignatureVerifier(WITNESS, WITNESS_KEY.public_key())
    try:
        await append_many(log, 0, 100)
        at100 = (await log.tree_head()).root
        note = signed(100, at100)
        lines = await witness.add_checkpoint(body(0, [], note), ORIGIN, verifier)
        _, cosigs = open_note(note + lines, [cosigner])
        assert [s.name for s in cosigs] == [WITNESS]
        assert (await witness.state(ORIGIN)).size == 100  # type: ignore[union-attr]

        await append_many(log, 100, 50)
        at150 = (await log.tree_head()).root
        # A log that thinks the witness has nothing yet is told what it has.
        with pytest.raises(SizeConflict) as conflict:
            await witness.add_checkpoint(body(0, [], signed(150, at150)), ORIGIN, verifier)
        assert conflict.value.size == 100
        proof = await log.consistency_proof(100, 150)
        await witness.add_checkpoint(body(100, proof, signed(150, at150)), ORIGIN, verifier)
        assert (await witness.state(ORIGIN)).size == 150  # type: ignore[union-attr]

        # Not the log's key: refused, and not evidence of anything.
        other = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(PermissionDenied):
            await witness.add_checkpoint(body(150, [], signed(150, at150, other)), ORIGIN, verifier)
        with pytest.raises(InvalidArgument):
            await witness.add_checkpoint(b"old x\n\n" + note, ORIGIN, verifier)
        assert await evidence_kinds(database) == []

        # A fork: another root at the size the witness cosigned.
        with pytest.raises(FailedPrecondition, match="inconsistent"):
            await witness.add_checkpoint(body(150, [], signed(150, b"\1" * 32)), ORIGIN, verifier)
        # A rollback: the log knows the witness has 150 and signs 120.
        at120 = (await log.tree_head(120)).root
        with pytest.raises(FailedPrecondition, match="were removed"):
            await witness.add_checkpoint(body(150, [], signed(120, at120)), ORIGIN, verifier)
        # A wrong proof for a larger tree is a fork too.
        await append_many(log, 150, 10)
        at160 = (await log.tree_head()).root
        bad = [b"\2" * 32 for _ in await log.consistency_proof(150, 160)]
        with pytest.raises(FailedPrecondition):
            await witness.add_checkpoint(body(150, bad, signed(160, at160)), ORIGIN, verifier)
        assert await evidence_kinds(database) == ["fork", "rollback", "fork"]
        assert [origin for origin, _ in alarms.raised] == [ORIGIN] * 3
        assert (await witness.state(ORIGIN)).size == 150  # type: ignore[union-attr]
        assert len(await witness.evidence()) == 3
    finally:
        await log.close()


async def test_two_racing_requests_move_the_witness_state_once(database: Database) -> None:
    log = await started(database)
    witness = Witness(database, CosignatureSigner(WITNESS, WITNESS_KEY))
    verifier = EcdsaVerifier(ORIGIN, KEY.public_key())
    try:
        await append_many(log, 0, 100)
        await witness.add_checkpoint(
            body(0, [], signed(100, (await log.tree_head()).root)), ORIGIN, verifier
        )
        await append_many(log, 100, 60)
        requests = [
            body(100, await log.consistency_proof(100, size), signed(size, root))
            for size, root in [
                (150, (await log.tree_head(150)).root),
                (160, (await log.tree_head(160)).root),
            ]
        ]
        outcomes = await asyncio.gather(
            *(witness.add_checkpoint(r, ORIGIN, verifier) for r in requests),
            return_exceptions=True,
        )
        assert sum(isinstance(o, bytes) for o in outcomes) == 1
        lost = next(o for o in outcomes if not isinstance(o, bytes))
        assert isinstance(lost, SizeConflict)
        state = await witness.state(ORIGIN)
        assert state is not None and state.size == lost.size and state.size in (150, 160)
    finally:
        await log.close()


def test_what_the_records_contradict_of_a_witnessed_checkpoint_is_named() -> None:
    root = b"\7" * 32
    witnessed = [Witnessed(300, root, "spiffe://350000.fujian.gov.cn/node")]
    short = ChainCheck(True, 280, roots={280: b"\1" * 32})
    assert problems(short, witnessed) == [
        "records #281 to #300 are missing: spiffe://350000.fujian.gov.cn/node cosigned a "
        "checkpoint of 300 records, and the log holds 280"
    ]
    altered = ChainCheck(True, 320, roots={300: b"\1" * 32, 320: b"\2" * 32})
    assert problems(altered, witnessed)[0].startswith(
        "the first 300 records are not the ones spiffe://350000.fujian.gov.cn/node cosigned"
    )
    whole = ChainCheck(True, 320, roots={300: root, 320: b"\2" * 32})
    assert problems(whole, witnessed) == []


def test_the_federation_rule_is_the_province_for_a_city_and_most_cities_for_the_province() -> None:
    fuzhou = make_identity("350100", "fujian.gov.cn", Role.NODE)
    province = make_identity("350000", "fujian.gov.cn", Role.NODE)
    p, fz, xm, qz = (
        f"spiffe://{r}.fujian.gov.cn/node" for r in ("350000", "350100", "350200", "350500")
    )
    city_rule = federation_rule(fuzhou)
    assert city_rule.satisfied([p]) and not city_rule.satisfied([xm])
    assert city_rule.missing([xm]) == f"the cosignature of {p}"
    rule = federation_rule(province, ["350100", "350200", "350500"])
    assert (rule.at_least, len(rule.any_of)) == (2, 3)
    assert not rule.satisfied([fz]) and rule.satisfied([fz, qz])
    assert rule.missing([fz]) == "2 of the 3 cities' cosignatures (has 1)"
    assert not federation_rule(province).satisfied([])  # no cosignature is never witnessed
    text = rule.policy_text(
        "350000.fujian.gov.cn/audit+00000000+AA==",
        {fz: "350100.fujian.gov.cn/witness+1+x", qz: "350500.fujian.gov.cn/witness+2+y"},
    )
    assert "group cities 2 350100.fujian.gov.cn 350500.fujian.gov.cn" in text
    assert "# witness 350200.fujian.gov.cn: key not known yet" in text
    assert text.endswith("quorum cities\n")


async def test_after_a_lost_stretch_the_log_goes_on_under_a_new_origin_the_witness_follows(
    database: Database,
) -> None:
    log = await started(database)
    host = ORIGIN.removesuffix("/audit")
    alarms = Alarms()
    witness = Witness(database, CosignatureSigner(WITNESS, WITNESS_KEY), alarms)
    try:
        checkpoints = Checkpoints(database, log, ORIGIN, EcdsaSigner(ORIGIN, KEY))
        await append_many(log, 0, 10)
        first = await checkpoints.make()
        assert first is not None
        await witness.add_checkpoint(body(0, [], first.note), ORIGIN, first_verifier())
        # The database comes back from a backup of 10 records; the witness had cosigned 15.
        await mark_restored(database, 10)
        pending = await pending_restore(database)
        assert pending is not None and pending.tree_size == 10
        lost = Cosigned(ORIGIN, 15, b"\1" * 32, b"(the witnessed note)", WITNESS)
        assert await lost_history(log, lost, ORIGIN)
        assert not await lost_history(log, Cosigned(ORIGIN, 10, first.root, b"", WITNESS), ORIGIN)
        other = Cosigned(ORIGIN, 10, b"\2" * 32, b"", WITNESS)
        assert await lost_history(log, other, ORIGIN)  # same size, another history
        epoch = await restart(database, log, host, lost, 10)
        await settle_restores(database, f"went on as {epoch.origin}")
        assert await pending_restore(database) is None
        assert (epoch.epoch, epoch.origin, epoch.first_sequence) == (1, f"{ORIGIN}/1", 11)
        assert "records #11 to #15 of" in epoch.gap
        assert await current_epoch(database) == 1
        assert [e.origin for e in await epochs(database)] == [f"{ORIGIN}/1"]
        [record] = await log.query(after_sequence=10, limit=1)
        assert record.method == RESTART_ACTION and record.detail["previous_size"] == 15

        # The next checkpoint is of the new origin, signed by the same key under its name.
        made = await checkpoints.make()
        assert made is not None and made.size == 11
        new = EcdsaVerifier(f"{ORIGIN}/1", KEY.public_key())
        assert parse_checkpoint(open_note(made.note, [new])[0].text).origin == f"{ORIGIN}/1"
        # The witness cosigns it from nothing, records the restart and raises the alarm ...
        await witness.add_checkpoint(body(0, [], made.note), f"{ORIGIN}/1", new)
        assert "restarted" in await evidence_kinds(database)
        assert alarms.raised and alarms.raised[-1][0] == f"{ORIGIN}/1"
        # ... and cosigns the old origin no more.
        with pytest.raises(FailedPrecondition, match=f"went on as {ORIGIN}/1"):
            await witness.add_checkpoint(
                body(10, [], signed(10, first.root)), ORIGIN, first_verifier()
            )
    finally:
        await log.close()


def first_verifier() -> EcdsaVerifier:
    return EcdsaVerifier(ORIGIN, KEY.public_key())
