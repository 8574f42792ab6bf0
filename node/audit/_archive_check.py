"""Checking an audit archive offline (govnode audit verify-archive, 第三十九条).

Each segment (node.audit._archive) is checked on its own, so segments are checked in parallel,
one process each (the chain is CPU-bound Python: canonical JSON and SHA-256 per record). With
nothing but the province root certificate, a segment passes when:

1. ``signers``: the node's certificate chain leads to the root;
2. ``manifest signature``: the node's key signed the manifest, which names this segment of
   this node's log;
3. ``records``: the records file is readable gzip of JSON lines;
4. ``chain``: the records are the segment's sequences, each hashes to its chain hash and
   links to the one before, from the manifest's first ``prev_hash`` to its last ``hash``
   (segment 0 from the genesis hash);
5. ``records digest``: the records are byte for byte what the manifest's SHA-256 names;
6. ``segment root``: the Merkle root of the records' leaves is the manifest's;
7. ``checkpoint signature``: the node signed the covering checkpoint, of its own log, the one
   the manifest names;
8. ``witness cosignature``: a witness (not the node itself) whose key statement verifies
   cosigned it;
9. ``subtree proof``: the segment's subtree is in the checkpoint's tree.

Then neighbours are linked: segment ``k + 1`` starts from segment ``k``'s last hash.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from node.audit._archive import (
    MANIFEST_SUFFIX,
    RECORDS_SUFFIX,
    parse_manifest,
    segment_stem,
)
from node.audit._keys import (
    KeyStatementError,
    log_origin,
    node_key_name,
    origin_epoch,
    read_log_signer,
    read_witness_statement,
)
from node.audit._log import GENESIS_HASH, content_hash
from node.pki import PkiError, verify_chain
from node.tlog import (
    EcdsaVerifier,
    NoteError,
    ProofError,
    leaf_hash,
    open_note,
    parse_checkpoint,
    root_of,
    verified_signatures,
    verify_inclusion,
)


@dataclass(frozen=True)
class SegmentCheck:
    """The outcome of checking one segment: ``check`` names the first check that failed."""

    segment: int
    ok: bool
    check: str = ""
    message: str = ""
    first: int = 0
    last: int = 0
    first_prev_hash: str = ""
    last_hash: str = ""
    root: str = ""
    checkpoint_size: int = 0
    witnesses: tuple[str, ...] = ()


class _Failed(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message


def check_segment(directory: str, k: int, root_pem: bytes, trust_domain: str) -> SegmentCheck:
    """Check segment ``k`` of the archive in ``directory`` (module docstring); never raises
    for a bad archive. Top-level and plain-typed, so a process pool can run it."""
    try:
        return _check(Path(directory), k, x509.load_pem_x509_certificate(root_pem), trust_domain)
    except _Failed as failed:
        return SegmentCheck(k, False, failed.check, failed.message)


def _check(directory: Path, k: int, root: x509.Certificate, trust_domain: str) -> SegmentCheck:
    stem = segment_stem(k)
    try:
        evidence = json.loads((directory / f"{stem}{MANIFEST_SUFFIX}").read_text("utf-8"))
        signers = evidence["signers"]
        chain_pem = str(signers[0]["chain_pem"])
        manifest_note = str(evidence["manifest"]).encode()
        checkpoint_note = str(evidence["checkpoint"]).encode()
        proof = [bytes.fromhex(h) for h in evidence["subtree_proof"]]
    except (OSError, UnicodeDecodeError) as exc:
        raise _Failed("files", f"{stem}{MANIFEST_SUFFIX}: {exc}") from None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _Failed(
            "files", f"{stem}{MANIFEST_SUFFIX} is not a segment manifest ({exc})"
        ) from None
    # 1, 2: who signed, and what.
    try:
        identity, leaf = verify_chain(chain_pem, root, trust_domain)
    except PkiError as exc:
        raise _Failed("signers", f"the node's certificate chain: {exc}") from None
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise _Failed("signers", f"the certificate of {identity} does not hold an ECDSA key")
    try:
        opened, _ = open_note(manifest_note, [EcdsaVerifier(node_key_name(identity.host), public)])
        manifest = parse_manifest(opened.text)
    except (NoteError, ValueError, KeyError, IndexError) as exc:
        raise _Failed("manifest signature", f"not signed by {identity}: {exc}") from None
    origin = log_origin(identity.host)
    if manifest.segment != k or origin_epoch(manifest.origin, identity.host) is None:
        raise _Failed(
            "manifest signature",
            f"the manifest is of segment {manifest.segment} of {manifest.origin[:80]!r}, not of "
            f"segment {k} of {origin}",
        )
    # 3, 4, 5, 6: the records themselves.
    try:
        raw = gzip.decompress((directory / f"{stem}{RECORDS_SUFFIX}").read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise _Failed("records", f"{stem}{RECORDS_SUFFIX} is not readable: {exc}") from None
    prev = manifest.first_prev_hash
    if k == 0 and prev != GENESIS_HASH:
        raise _Failed("chain", "segment 0 does not start from the genesis hash")
    expected = manifest.first
    leaves: list[bytes] = []
    for line in raw.split(b"\n")[:-1]:
        try:
            record = json.loads(line)
            content, prev_hash, chain_hash = record["content"], record["prev_hash"], record["hash"]
            sequence = content["sequence"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _Failed(
                "records", f"after record #{expected - 1}: not a record ({exc})"
            ) from None
        if sequence != expected:
            raise _Failed("chain", f"record #{expected} is missing (the next is #{sequence})")
        if prev_hash != prev:
            raise _Failed("chain", f"record #{expected} does not link to record #{expected - 1}")
        if content_hash(prev_hash, content) != chain_hash:
            raise _Failed("chain", f"record #{expected} was altered: it does not hash to its hash")
        leaves.append(leaf_hash(bytes.fromhex(chain_hash)))
        prev, expected = chain_hash, expected + 1
    if expected != manifest.last + 1:
        raise _Failed("chain", f"records #{expected} to #{manifest.last} are missing")
    if prev != manifest.last_hash:
        raise _Failed("chain", f"record #{manifest.last} is not the one the manifest names")
    if hashlib.sha256(raw).hexdigest() != manifest.records_sha256:
        raise _Failed("records digest", "the records are not the bytes the manifest names")
    root_k = root_of(leaves)
    if root_k != manifest.root:
        raise _Failed("segment root", "the records' Merkle root is not the manifest's")
    # 7, 8: the covering checkpoint and its witnesses.
    try:
        _, log_key = read_log_signer(chain_pem, root, trust_domain, checkpoint_note)
        note, _ = open_note(checkpoint_note, [log_key])
        checkpoint = parse_checkpoint(note.text)
    except (KeyStatementError, NoteError, ValueError) as exc:
        raise _Failed("checkpoint signature", f"the node's signature: {exc}") from None
    if origin_epoch(checkpoint.origin, identity.host) is None or (
        checkpoint.size,
        checkpoint.root,
    ) != (manifest.checkpoint_size, manifest.checkpoint_root):
        raise _Failed("checkpoint signature", "the checkpoint is not the one the manifest names")
    witnesses: list[str] = []
    for signer in signers[1:]:
        try:
            cosigner = read_witness_statement(
                str(signer["statement"]).encode(), str(signer["chain_pem"]), root, trust_domain
            )
        except (KeyStatementError, KeyError, TypeError):
            continue
        if cosigner.identity != identity and verified_signatures(note, [cosigner.verifier]):
            witnesses.append(cosigner.identity.uri)
    if not witnesses:
        raise _Failed("witness cosignature", "no witness's cosignature on the checkpoint verifies")
    # 9: the segment is in the witnessed tree.
    segments_in_tree = -(-checkpoint.size // manifest.segment_records)
    try:
        verify_inclusion(root_k, k, segments_in_tree, proof, checkpoint.root)
    except (ProofError, ValueError) as exc:
        raise _Failed("subtree proof", str(exc)) from None
    return SegmentCheck(
        k,
        True,
        first=manifest.first,
        last=manifest.last,
        first_prev_hash=manifest.first_prev_hash,
        last_hash=manifest.last_hash,
        root=root_k.hex(),
        checkpoint_size=checkpoint.size,
        witnesses=tuple(witnesses),
    )


def check_archive(
    directory: Path,
    segments: Sequence[int],
    root_pem: bytes,
    trust_domain: str,
    *,
    workers: int | None = None,
    start_method: str = "spawn",
    done: Callable[[SegmentCheck], None] = lambda _: None,
) -> list[SegmentCheck]:
    """Check ``segments`` of the archive in parallel (a pool of ``workers`` processes, the CPU
    count by default), then the links between neighbours; one result per segment, in order
    (a broken link fails the later segment, check ``chain link``).

    ``start_method`` is how the pool's processes start: "spawn" (the default) is safe in a
    process that holds threads and a database connection (prune) but each worker imports
    govnode first (about 2 s); a single-threaded command (verify-archive) may "fork"."""
    if not segments:
        return []
    jobs = min(workers or multiprocessing.cpu_count(), len(segments))
    results: dict[int, SegmentCheck] = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(start_method)) as pool:
        futures = [
            pool.submit(check_segment, str(directory), k, root_pem, trust_domain) for k in segments
        ]
        for future in futures:
            result = future.result()
            results[result.segment] = result
            done(result)
    for k in segments:
        before, current = results.get(k - 1), results[k]
        if before is None or not (before.ok and current.ok):
            continue
        if current.first_prev_hash != before.last_hash:
            message = f"segment {k} does not start from segment {k - 1}'s last hash"
            results[k] = SegmentCheck(k, False, "chain link", message)
    return [results[k] for k in segments]
