"""WitnessService (第三十九条; C2SP tlog-witness over gRPC): AddCheckpoint, protobuf in, the
domain witness (node.audit.Witness), protobuf out.

Only nodes call it, each for its own log: the caller's identity must be a node's, and the
checkpoint's origin and the certificate chain sent with it must both be the caller's. Which
logs this node witnesses follows the federation: the province witnesses every city, a city
witnesses its province.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from govnode.v1 import audit_pb2, witness_pb2

from gateway.auth import current_peer
from gateway.identity import Identity, Role
from gateway.quote import quote
from node.audit import (
    MAX_BODY_BYTES,
    KeyStatementError,
    SizeConflict,
    Witness,
    claimed_origin,
    log_origin,
    origin_epoch,
    read_log_signer,
)
from node.config import Mode, NodeConfig
from node.errors import Aborted, InvalidArgument, NotFound, PermissionDenied

WITNESS_SIZE_KEY = "witness-size"


class WitnessServicer:
    def __init__(
        self,
        config: NodeConfig,
        witness: Witness,
        root: x509.Certificate,
        statement: bytes,
        chain_pem: str,
        identity: Identity,
    ) -> None:
        self._config = config
        self._witness = witness
        self._root = root
        self._me = audit_pb2.CheckpointSigner(
            identity=identity.uri, certificate_chain_pem=chain_pem, witness_key_statement=statement
        )

    def _may_witness(self, caller: Identity) -> bool:
        if caller.role is not Role.NODE:
            return False
        if self._config.node.mode is Mode.PROVINCE:
            return caller.region != self._config.node.region
        return caller.region == self._config.federation.province_region

    async def AddCheckpoint(
        self, request: witness_pb2.AddCheckpointRequest, context: Any
    ) -> witness_pb2.AddCheckpointResponse:
        caller = current_peer().identity
        if not self._may_witness(caller):
            who = (
                "the cities' nodes"
                if self._config.node.mode is Mode.PROVINCE
                else "its province's node"
            )
            raise PermissionDenied(
                f"{caller} may not ask this node to witness a log: it witnesses the audit logs "
                f"of {who} only"
            )
        origin = claimed_origin(_checkpoint_of(request.body))
        try:
            signer_identity, verifier = read_log_signer(
                request.log_certificate_chain_pem,
                self._root,
                self._config.node.trust_domain,
                _checkpoint_of(request.body),
            )
        except KeyStatementError as exc:
            raise InvalidArgument(f"log_certificate_chain_pem: {exc}") from None
        if signer_identity != caller:
            raise PermissionDenied(
                f"log_certificate_chain_pem is {signer_identity}'s, but the caller is {caller}: "
                "a node sends its own log's checkpoints"
            )
        if origin_epoch(origin, caller.host) is None:
            origin = log_origin(caller.host)  # the witness refuses the note: not this log's
        try:
            cosignature = await self._witness.add_checkpoint(request.body, origin, verifier)
        except SizeConflict as exc:
            raise Aborted(
                f"{exc}; send a consistency proof from size {exc.size} (trailing metadata "
                f"{WITNESS_SIZE_KEY})",
                ((WITNESS_SIZE_KEY, str(exc.size)),),
            ) from None
        return witness_pb2.AddCheckpointResponse(cosignature=cosignature, witness=self._me)

    async def GetWitnessed(
        self, request: witness_pb2.GetWitnessedRequest, context: Any
    ) -> witness_pb2.GetWitnessedResponse:
        caller = current_peer().identity
        if caller.role is not Role.NODE:
            raise PermissionDenied(
                f"{caller} may not read what this node witnessed: node certificates only"
            )
        if len(request.origin) > 300:
            raise InvalidArgument(f"origin: {quote(request.origin)} is not a log's origin")
        found = await self._witness.latest(request.origin)
        if found is None:
            raise NotFound(f"origin: this node witnesses no log {quote(request.origin)}")
        note, at = found
        reply = witness_pb2.GetWitnessedResponse(signed_note=note, witness=self._me)
        reply.cosigned_at.FromDatetime(at.astimezone(dt.UTC))
        return reply


def _checkpoint_of(body: bytes) -> bytes:
    """The signed checkpoint in an add-checkpoint body (after its first blank line), unchecked:
    which of the caller's log origins it claims."""
    _, _, checkpoint = body[:MAX_BODY_BYTES].partition(b"\n\n")
    return checkpoint
