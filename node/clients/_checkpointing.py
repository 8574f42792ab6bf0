"""Signing checkpoints of this node's audit log on schedule, and having its witnesses cosign
them (第三十九条; C2SP tlog-checkpoint and tlog-witness).

Every ``[audit] checkpoint_seconds`` when records were added, and as soon as
``checkpoint_records`` were added, the node signs a checkpoint (node.audit.Checkpoints) and sends
it to each witness: a city to its province, the province to every city it knows. A witness
answers with its cosignature, which is checked (its key statement against its certificate
chain and the province root) and stored with the checkpoint. Appends never wait for any of
this; only the checkpoint's cosignatures lag.

A witness that says it has cosigned a size other than the one sent from (ABORTED, trailing
metadata witness-size) gets the request again with a proof from its size. If that size is
larger than this node's newest checkpoint, this node's log lost records it had shown: the
request still goes, so the witness keeps it as evidence, and the node logs the fact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import grpc
import structlog
from cryptography import x509
from govnode.v1 import witness_pb2, witness_pb2_grpc

from gateway.channel import secure_channel
from gateway.identity import Identity, Role, make_identity
from gateway.tls import TlsFiles
from node.audit import (
    AuditLog,
    Checkpoints,
    Cosigned,
    CosignerKeys,
    KeyStatementError,
    LogDiverged,
    StoredCheckpoint,
    Witnessed,
    WitnessedError,
    WitnessRule,
    federation_rule,
    log_origin,
    lost_history,
    origin_parts,
    pending_restore,
    read_log_signer,
    read_witness_statement,
    remember_cosigner,
    restart,
    settle_restores,
    witnessed_note,
)
from node.config import Mode, NodeConfig
from node.errors import DomainError
from node.storage import Database
from node.tasks import BackgroundJob
from node.tlog import AddCheckpoint, EcdsaVerifier, NoteError, format_add_checkpoint, open_note

log = structlog.get_logger("govnode.audit")

WITNESS_SIZE_KEY = "witness-size"
#: Deadline of one AddCheckpoint call.
CALL_TIMEOUT_S = 10.0
#: A witness that failed is tried again after this long at first, doubling to the cap.
RETRY_FIRST_S = 2.0
RETRY_CAP_S = 300.0

#: How many origins past the one it knows a restored node asks a witness about.
MAX_EPOCHS_ASKED = 16

#: Where this node's witnesses are: (endpoint HOST:PORT, region) of each.
WitnessList = Callable[[], Awaitable[list[tuple[str, str]]]]


def witness_endpoints(config: NodeConfig, db: Database) -> WitnessList:
    """Where this node's log is witnessed: a city's by its province, the province's by every
    city it knows (joined with an endpoint, or named in [federation] peers)."""

    async def listed() -> list[tuple[str, str]]:
        fed = config.federation
        if config.node.mode is Mode.CITY:
            assert fed.province_endpoint and fed.province_region
            return [(fed.province_endpoint, fed.province_region)]
        found = dict(fed.peers)
        for region, endpoint in await db.fetch_all(
            "SELECT region, endpoint FROM federation_member WHERE endpoint <> ''", {}
        ):
            found.setdefault(str(region), str(endpoint))
        return [(endpoint, region) for region, endpoint in sorted(found.items())]

    return listed


def witness_rule(
    config: NodeConfig, identity: Identity, db: Database
) -> Callable[[], Awaitable[WitnessRule]]:
    """The rule this node's checkpoints are witnessed by (node.audit._policy), with the
    federation as it is now: a city's needs its province; the province's, most of its cities
    (those it can reach: joined with an endpoint, or in [federation] peers)."""
    listed = witness_endpoints(config, db)

    async def rule() -> WitnessRule:
        if config.node.mode is Mode.CITY:
            return federation_rule(identity)
        return federation_rule(identity, [region for _, region in await listed()])

    return rule


async def fetch_witnessed(
    *,
    endpoint: str,
    region: str,
    identity: Identity,
    tls: TlsFiles,
    root: x509.Certificate,
    log: EcdsaVerifier,
    epoch: int = 0,
) -> Witnessed:
    """What the witness of ``region`` at ``endpoint`` cosigned of this node's log (of its
    origin for ``epoch``), checked: its key statement against the root, its cosignature, and
    this log's own signature (``log``: the node key's verifier)."""
    expected = make_identity(region, identity.trust_domain, Role.NODE)
    origin = log_origin(identity.host, epoch)
    async with secure_channel(endpoint, tls, timeout=CALL_TIMEOUT_S) as channel:
        reply = await witness_pb2_grpc.WitnessServiceStub(channel).GetWitnessed(
            witness_pb2.GetWitnessedRequest(origin=origin), timeout=CALL_TIMEOUT_S
        )
    try:
        cosigner = read_witness_statement(
            reply.witness.witness_key_statement,
            reply.witness.certificate_chain_pem,
            root,
            identity.trust_domain,
        )
    except KeyStatementError as exc:
        raise WitnessedError(f"witness {region}: {exc}") from None
    if cosigner.identity != expected:
        raise WitnessedError(f"the witness at {endpoint} is {cosigner.identity}, not {expected}")
    at = reply.cosigned_at.ToDatetime(dt.UTC) if reply.HasField("cosigned_at") else None
    return witnessed_note(
        reply.signed_note, origin, EcdsaVerifier(origin, log.public_key), cosigner, at
    )


async def newest_witnessed(
    *,
    endpoint: str,
    region: str,
    identity: Identity,
    tls: TlsFiles,
    root: x509.Certificate,
    log: EcdsaVerifier,
    from_epoch: int = 0,
) -> Witnessed | None:
    """What the witness of ``region`` cosigned of the newest origin of this node's log it
    knows, from ``from_epoch`` on (None if it cosigned none): a restored database may not
    know of the origins its log went on under since."""
    found = None
    for epoch in range(from_epoch, from_epoch + MAX_EPOCHS_ASKED):
        try:
            found = await fetch_witnessed(
                endpoint=endpoint,
                region=region,
                identity=identity,
                tls=tls,
                root=root,
                log=log,
                epoch=epoch,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            break
    return found


@dataclass
class WitnessStatus:
    """What the operator sees of one witness (govnode status)."""

    region: str
    endpoint: str
    cosigned_size: int = 0
    cosigned_at: dt.datetime | None = None
    last_error: str = ""
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class PublisherStatus:
    newest_size: int = 0
    diverged: str = ""
    #: Set while checkpoints wait for the witnesses of a restored database to answer.
    restore_waiting: str = ""
    witnesses: dict[str, WitnessStatus] = field(default_factory=dict)


class CheckpointPublisher(BackgroundJob):
    """Signs checkpoints on schedule and gathers cosignatures, until :meth:`stop`."""

    task_name = "audit.checkpoints"

    def __init__(
        self,
        *,
        db: Database,
        audit: AuditLog,
        checkpoints: Checkpoints,
        identity: Identity,
        tls: TlsFiles,
        root: x509.Certificate,
        chain_pem: str,
        witnesses: WitnessList,
        every_seconds: float,
        every_records: int,
    ) -> None:
        self._db = db
        self._audit = audit
        self._checkpoints = checkpoints
        self._identity = identity
        self._tls = tls
        self._root = root
        self._chain_pem = chain_pem
        self._witnesses = witnesses
        self._every_s = every_seconds
        self._every_records = every_records
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.status = PublisherStatus()
        self._log = log.bind(origin=checkpoints.origin)
        self._settled = False  # whether a restore of the database (if any) was checked
        self._settle_retry_at = 0.0
        self._settle_failures = 0

    async def stop(self) -> None:
        await super().stop()
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

    async def _forever(self) -> None:
        tick = min(1.0, self._every_s)
        last_made = time.monotonic()
        signed = -1  # the newest checkpoint's size as last read (-1: not read yet)
        while True:
            await asyncio.sleep(tick)
            try:
                if not self._settled:
                    if time.monotonic() < self._settle_retry_at:
                        continue
                    self._settled = await self.settle_restore()
                    if not self._settled:
                        continue
                if signed < 0:
                    newest = await self._checkpoints.newest()
                    signed = newest.size if newest is not None else 0
                # One cheap read a tick (the log's head); the checkpoints table only when due.
                head, _ = await self._audit.head()
                due = time.monotonic() - last_made >= self._every_s
                if head > signed and (due or head - signed >= self._every_records):
                    last_made = time.monotonic()
                    made = await self.publish()
                    signed = made.size if made is not None else -1
                elif due:
                    last_made = time.monotonic()
                    newest = await self._checkpoints.newest()
                    signed = newest.size if newest is not None else 0
                    await self.witness(newest)
            except asyncio.CancelledError:
                raise
            except DomainError as exc:
                signed = -1
                self._log.warning("audit.checkpoint_failed", error=exc.message)
            except Exception:
                signed = -1
                self._log.exception("audit.checkpoint_error")

    async def settle_restore(self) -> bool:
        """If the database was restored from a backup, ask the witnesses what they cosigned
        of this log before signing anything (node.audit._restart); True once checkpoints may
        be signed. Without an answer from any witness, False: try again later."""
        pending = await pending_restore(self._db)
        if pending is None:
            return True
        await self._checkpoints.refresh_origin()
        current = self._checkpoints.origin
        targets = await self._witnesses()
        if not targets:
            await settle_restores(self._db, f"no witness to ask; {current} goes on")
            return True
        _, log_key = read_log_signer(self._chain_pem, self._root, self._identity.trust_domain)
        answers: list[Witnessed] = []
        errors: list[str] = []
        for endpoint, region in targets:
            try:
                found = await newest_witnessed(
                    endpoint=endpoint,
                    region=region,
                    identity=self._identity,
                    tls=self._tls,
                    root=self._root,
                    log=log_key,
                    from_epoch=origin_parts(current)[1],
                )
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{region}: {exc.code().name}: {exc.details()}")
                continue
            except WitnessedError as exc:
                errors.append(f"{region}: {exc}")
                continue
            if found is not None:
                answers.append(found)
            else:
                answers.append(Witnessed(0, b"", region, origin=current))
        if len(errors) == len(targets):
            self._settle_failures += 1
            delay = min(RETRY_CAP_S, RETRY_FIRST_S * 2 ** (self._settle_failures - 1))
            self._settle_retry_at = time.monotonic() + delay
            self.status.restore_waiting = (
                f"this database was restored from a backup of {pending.tree_size} records: no "
                f"checkpoint is signed until a witness says what it cosigned ({errors[0]})"
            )
            self._log.warning("audit.restore_unchecked", error=self.status.restore_waiting)
            return False
        lost = []
        for witnessed in answers:
            cosigned = Cosigned(
                witnessed.origin, witnessed.size, witnessed.root, witnessed.note, witnessed.by
            )
            if witnessed.size and await lost_history(self._audit, cosigned, current):
                lost.append(cosigned)
        if lost:
            newest = max(lost, key=lambda c: (origin_parts(c.origin)[1], c.size))
            epoch = await restart(
                self._db, self._audit, self._identity.host, newest, pending.tree_size
            )
            await self._checkpoints.refresh_origin()
            self._log = log.bind(origin=self._checkpoints.origin)
            outcome = f"went on as {epoch.origin}: {epoch.gap}"
        else:
            sizes = ", ".join(f"{w.by} {w.size}" for w in answers)
            outcome = f"the witnesses cosigned nothing this database lacks ({sizes}); {current}"
            outcome += " goes on"
        await settle_restores(self._db, outcome)
        self.status.restore_waiting = ""
        self._log.info("audit.restore_checked", outcome=outcome)
        return True

    async def publish(self) -> StoredCheckpoint | None:
        """Sign a checkpoint now if the log grew, then gather cosignatures for the newest."""
        try:
            await self._checkpoints.make()
        except LogDiverged as exc:
            if self.status.diverged != str(exc):
                self._log.error("audit.log_diverged", error=str(exc))
            self.status.diverged = str(exc)
            return None
        self.status.diverged = ""
        newest = await self._checkpoints.newest()
        await self.witness(newest)
        return newest

    async def witness(self, newest: StoredCheckpoint | None) -> None:
        """Send ``newest`` to every witness that has not cosigned it, concurrently."""
        if newest is None:
            return
        self.status.newest_size = newest.size
        targets = await self._witnesses()
        now = time.monotonic()
        calls = []
        for endpoint, region in targets:
            state = self.status.witnesses.setdefault(endpoint, WitnessStatus(region, endpoint))
            identity = make_identity(region, self._identity.trust_domain, Role.NODE).uri
            if identity in newest.cosigned_by or state.retry_at > now:
                continue
            calls.append(self._witness_one(newest, state))
        if calls:
            await asyncio.gather(*calls)

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = secure_channel(
                endpoint, self._tls, timeout=CALL_TIMEOUT_S
            )
        return channel

    async def _witness_one(self, checkpoint: StoredCheckpoint, state: WitnessStatus) -> None:
        try:
            await self._submit(checkpoint, state)
            state.failures = 0
            state.last_error = ""
            state.retry_at = 0.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.failures += 1
            delay = min(RETRY_CAP_S, RETRY_FIRST_S * 2 ** (state.failures - 1))
            state.retry_at = time.monotonic() + delay
            if isinstance(exc, grpc.aio.AioRpcError):
                state.last_error = f"{exc.code().name}: {exc.details()}"
            else:
                state.last_error = f"{type(exc).__name__}: {exc}"
            self._log.warning(
                "audit.witness_failed",
                witness=state.region,
                error=state.last_error,
                retry_in_s=round(delay, 1),
            )

    async def _submit(self, checkpoint: StoredCheckpoint, state: WitnessStatus) -> None:
        stub = witness_pb2_grpc.WitnessServiceStub(self._channel(state.endpoint))
        old = min(state.cosigned_size, checkpoint.size)
        for _ in range(2):  # the second time from the size the witness said it has
            proof = (
                await self._audit.consistency_proof(old, checkpoint.size)
                if 0 < old < checkpoint.size
                else []
            )
            body = format_add_checkpoint(AddCheckpoint(old, tuple(proof), checkpoint.note))
            try:
                reply = await stub.AddCheckpoint(
                    witness_pb2.AddCheckpointRequest(
                        body=body, log_certificate_chain_pem=self._chain_pem
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as exc:
                size = _witness_size(exc)
                if exc.code() is not grpc.StatusCode.ABORTED or size is None:
                    raise
                if size > checkpoint.size:
                    self._log.error(
                        "audit.witness_has_more",
                        witness=state.region,
                        witness_size=size,
                        newest_size=checkpoint.size,
                        error=(
                            f"witness {state.region} cosigned {size} records of this log, but "
                            f"its newest checkpoint has {checkpoint.size}: records were lost"
                        ),
                    )
                old = size
                continue
            await self._accept(checkpoint, state, reply)
            return
        raise RuntimeError(f"witness {state.region} kept changing its size")

    async def _accept(
        self,
        checkpoint: StoredCheckpoint,
        state: WitnessStatus,
        reply: witness_pb2.AddCheckpointResponse,
    ) -> None:
        expected = make_identity(state.region, self._identity.trust_domain, Role.NODE)
        try:
            cosigner = read_witness_statement(
                reply.witness.witness_key_statement,
                reply.witness.certificate_chain_pem,
                self._root,
                self._identity.trust_domain,
            )
        except KeyStatementError as exc:
            raise RuntimeError(f"witness {state.region}: {exc}") from None
        if cosigner.identity != expected:
            raise RuntimeError(
                f"the witness at {state.endpoint} is {cosigner.identity}, not {expected}"
            )
        try:
            _, verified = open_note(checkpoint.note + reply.cosignature, [cosigner.verifier])
        except NoteError as exc:
            raise RuntimeError(f"witness {state.region}'s cosignature: {exc}") from None
        await remember_cosigner(
            self._db,
            CosignerKeys(
                identity=expected.uri,
                witness_name=cosigner.verifier.name,
                chain_pem=reply.witness.certificate_chain_pem,
                statement=reply.witness.witness_key_statement,
                updated_at=dt.datetime.now(dt.UTC),
            ),
        )
        await self._checkpoints.add_cosignatures(
            checkpoint.size, [(expected.uri, sig) for sig in verified]
        )
        state.cosigned_size = checkpoint.size
        state.cosigned_at = dt.datetime.now(dt.UTC)
        self._log.info("audit.checkpoint_cosigned", witness=state.region, size=checkpoint.size)


def _witness_size(exc: grpc.aio.AioRpcError) -> int | None:
    # (grpc.aio's Metadata yields (key, value) pairs; the stubs type it otherwise.)
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    for key, value in pairs:
        if key == WITNESS_SIZE_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return int(text) if text.isdigit() else None
    return None
