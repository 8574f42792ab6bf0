"""Usage logs for providers (使用日志推送给相应的数据生产应用单位, 第三十九条), over real mutual
TLS: a provider streams the records about its own resources, each with a proof that checks
offline, and the node's signed statements that nothing was left out; it resumes with no gap and
no duplicate; nobody else reads them; the bundle CLI writes and checks the same offline; and a
withheld record is found by the verifier."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from govnode.v1 import audit_pb2, audit_pb2_grpc, catalog_pb2, catalog_pb2_grpc

from gateway.tls import TlsFiles
from node.audit import check_proof_file, check_usage
from node.servicers.convert import entry_to_proto
from tests.support.cli import govnode
from tests.support.databases import NewDatabaseUrl, sqlite_urls
from tests.support.entries import agency_code, make_entry
from tests.support.nodes import FUZHOU, Member, channel, entry_of, federation

TRUST_DOMAIN = "fujian.gov.cn"
WAIT_S = 15.0
OTHER = agency_code(2, FUZHOU)  # another provider of 福州


def root_of(member: Member) -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        member.setup.config.path(member.setup.config.tls.root).read_bytes()
    )


async def look_up(member: Member, files: TlsFiles, code: str, times: int) -> None:
    """``times`` calls of GetResource on ``code``: records about that resource."""
    async with channel(member.running, files) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        for _ in range(times):
            await stub.GetResource(catalog_pb2.GetResourceRequest(resource_code=code))


class Received:
    """What a provider kept from its streams: records by sequence, statements in order."""

    def __init__(self) -> None:
        self.records: dict[int, audit_pb2.UsageRecord] = {}
        self.statements: list[audit_pb2.UsageStatement] = []
        self.duplicates: list[int] = []

    def take(self, message: audit_pb2.UsageLogMessage) -> None:
        if message.WhichOneof("message") == "record":
            sequence = message.record.record.sequence
            if sequence in self.records:
                self.duplicates.append(sequence)
            self.records[sequence] = message.record
        else:
            self.statements.append(message.statement)

    @property
    def covered(self) -> int:
        return self.statements[-1].last_sequence if self.statements else 0

    def check(self, root: x509.Certificate, leave_out: int = 0) -> Any:
        return check_usage(
            [r.proof for s, r in self.records.items() if s != leave_out],
            [(s.signed_note, s.certificate_chain_pem, list(s.sequences)) for s in self.statements],
            root,
            TRUST_DOMAIN,
        )


async def read_until(
    call: Any, received: Received, done: Any, what: str, within: float = WAIT_S
) -> None:
    """Read messages (each read bounded) until ``done(received)`` holds, for at most
    ``within`` seconds and 10,000 messages."""
    deadline = time.monotonic() + within
    for _ in range(10_000):
        if done(received):
            return
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            message = await asyncio.wait_for(call.read(), timeout=left)
        except TimeoutError:
            break
        assert isinstance(message, audit_pb2.UsageLogMessage), "the stream ended"
        received.take(message)
    pytest.fail(f"not within {within} s: {what}")


async def refused(member: Member, files: TlsFiles, **fields: Any) -> grpc.aio.AioRpcError:
    async with channel(member.running, files) as ch:
        call = audit_pb2_grpc.AuditServiceStub(ch).StreamUsageLog(
            audit_pb2.StreamUsageLogRequest(**fields)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), timeout=WAIT_S)
        return err.value


async def test_a_provider_streams_its_usage_with_proofs_and_statements(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path / "fed", db_urls, checkpoint_seconds=0.3) as fed:
        fuzhou = fed.fuzhou
        mine, theirs = entry_of(FUZHOU, 1), make_entry(2, OTHER, provider_name="另一单位")
        await fuzhou.register(mine)
        other = fuzhou.setup.agency(OTHER)
        async with channel(fuzhou.running, other) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(theirs))
            )
        await look_up(fuzhou, other, mine.resource_code, 3)  # about mine
        await look_up(fuzhou, fuzhou.agency(), theirs.resource_code, 2)  # about theirs
        head, _ = await fuzhou.running.audit.head()
        root = root_of(fuzhou)

        # The provider streams from the start: its records, with proofs, then a statement.
        first = Received()
        async with channel(fuzhou.running, fuzhou.agency()) as ch:
            call = audit_pb2_grpc.AuditServiceStub(ch).StreamUsageLog(
                audit_pb2.StreamUsageLogRequest()
            )
            await read_until(
                call, first, lambda r: r.covered >= head, "a statement past the calls made"
            )
            mine_seen = [s for s, r in first.records.items() if r.record.resource_code]
            assert {r.record.resource_code for r in first.records.values()} == {
                mine.resource_code
            }, "a record about another provider's resource never appears"
            assert len(mine_seen) == 3  # the GetResource calls
            for sequence, record in first.records.items():
                checked = check_proof_file(record.proof, root, TRUST_DOMAIN)
                assert checked.sequence == sequence and checked.record["resource_code"] == (
                    mine.resource_code
                )
            assert first.check(root).ok, first.check(root).problems
            assert first.check(root).covered == [(1, first.covered)]

            # Live: a record written now arrives after the next cosigned checkpoint.
            before = max(first.records)
            await look_up(fuzhou, other, mine.resource_code, 1)
            began = time.monotonic()
            await read_until(call, first, lambda r: max(r.records) > before, "a live record")
            live_s = time.monotonic() - began
            await read_until(
                call, first, lambda r: r.covered >= max(r.records), "the live record's statement"
            )
            call.cancel()
        assert not first.duplicates
        assert first.check(root).ok, first.check(root).problems
        assert live_s < 5.0, f"a live record took {live_s:.1f} s (checkpoints every 0.3 s)"

        # Resuming from the second record (the statements it had ended before it): the rest
        # come once each, and the statements still cover every sequence, with no gap.
        sequences = sorted(first.records)
        resumed = Received()
        for sequence in sequences[:2]:
            resumed.records[sequence] = first.records[sequence]
        async with channel(fuzhou.running, fuzhou.agency()) as ch:
            call = audit_pb2_grpc.AuditServiceStub(ch).StreamUsageLog(
                audit_pb2.StreamUsageLogRequest(after_sequence=sequences[1], statement_after=0)
            )
            await read_until(
                call, resumed, lambda r: r.covered >= first.covered, "the resumed statements"
            )
            call.cancel()
        assert not resumed.duplicates
        assert sorted(resumed.records) == sequences
        assert resumed.check(root).ok, resumed.check(root).problems
        assert resumed.statements[0].first_sequence == 1
        assert sequences[0] in resumed.statements[0].sequences  # listed, not sent again

        # A withheld record is found: the statement lists it, the provider lacks it.
        withheld = first.check(root, leave_out=sequences[2])
        assert not withheld.ok
        assert f"record #{sequences[2]} is listed by the statement of" in withheld.problems[0]
        assert "withheld" in withheld.problems[0]

        # Nor does an altered statement pass, or a list of sequences it does not sign.
        statement = next(s for s in first.statements if s.sequences)
        note = statement.signed_note.replace(b"\ncount ", b"\ncount 0", 1)
        forged = check_usage(
            [r.proof for r in first.records.values()],
            [(note, statement.certificate_chain_pem, list(statement.sequences))],
            root,
            TRUST_DOMAIN,
        )
        assert any("a statement does not check" in p for p in forged.problems), forged.problems
        shorter = check_usage(
            [r.proof for r in first.records.values()],
            [(statement.signed_note, statement.certificate_chain_pem, statement.sequences[1:])],
            root,
            TRUST_DOMAIN,
        )
        assert any("are not the" in p and "it signs" in p for p in shorter.problems)
        unstated = check_usage([r.proof for r in first.records.values()], [], root, TRUST_DOMAIN)
        assert unstated.problems[0].endswith("is covered by no statement")

        # Nobody else reads them.
        denied = await refused(fuzhou, other, resource_code=mine.resource_code)
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "is not the provider of" in (denied.details() or "")
        denied = await refused(fuzhou, fuzhou.setup.authority())
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        stranger = fuzhou.setup.agency(agency_code(9, FUZHOU))
        denied = await refused(fuzhou, stranger)
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        bad = await refused(fuzhou, fuzhou.agency(), after_sequence=10**9)
        assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT

        # The other provider sees only its own.
        theirs_seen = Received()
        async with channel(fuzhou.running, other) as ch:
            call = audit_pb2_grpc.AuditServiceStub(ch).StreamUsageLog(
                audit_pb2.StreamUsageLogRequest()
            )
            await read_until(call, theirs_seen, lambda r: r.covered >= head, "its statement")
            call.cancel()
        assert {r.record.resource_code for r in theirs_seen.records.values()} == {
            theirs.resource_code
        }
        assert not set(theirs_seen.records) & set(first.records)


async def test_a_provider_reads_its_usage_at_other_nodes_and_a_stopping_node_ends_the_stream(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path / "fed", db_urls, checkpoint_seconds=0.3) as fed:
        fuzhou = fed.fuzhou
        mine = entry_of(FUZHOU, 1)
        await fuzhou.register(mine)

        # The catalog is province-wide: the province's log about 福州's resource is the
        # provider's to read there too.
        await fed.converged(1)
        await look_up(fed.province, fed.xiamen.agency(), mine.resource_code, 2)
        province_head, _ = await fed.province.running.audit.head()
        at_province = Received()
        async with channel(fed.province.running, fuzhou.agency()) as ch:
            call = audit_pb2_grpc.AuditServiceStub(ch).StreamUsageLog(
                audit_pb2.StreamUsageLogRequest()
            )
            await read_until(
                call, at_province, lambda r: r.covered >= province_head, "the province's"
            )
            call.cancel()
        assert len(at_province.records) == 2
        assert at_province.check(root_of(fuzhou)).log == "350000.fujian.gov.cn/audit"
        assert at_province.check(root_of(fuzhou)).ok

        head, _ = await fuzhou.running.audit.head()
        received = Received()
        async with channel(fuzhou.running, fuzhou.agency()) as ch:
            call = audit_pb2_grpc.AuditServiceStub(ch).StreamUsageLog(
                audit_pb2.StreamUsageLogRequest()
            )
            await read_until(call, received, lambda r: r.covered >= head, "a statement")
            # A grace period, as a real stop has: the waiting stream must not hold it.
            await asyncio.wait_for(fuzhou.running.stop(grace=30), WAIT_S)
            fuzhou.node = None
            with pytest.raises(grpc.aio.AioRpcError) as err:
                for _ in range(1000):
                    message = await asyncio.wait_for(call.read(), timeout=WAIT_S)
                    assert isinstance(message, audit_pb2.UsageLogMessage)
                    received.take(message)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "this node is stopping" in (err.value.details() or "")
    assert "statement_after" in (err.value.details() or "")


async def test_the_usage_bundle_is_written_and_checked_offline(tmp_path: Path) -> None:
    # Files checked offline: the backend does not matter (the stream tests cover both).
    urls = sqlite_urls(tmp_path)
    async with federation(tmp_path / "fed", urls, checkpoint_seconds=0.3) as fed:
        fuzhou = fed.fuzhou
        mine = entry_of(FUZHOU, 1)
        await fuzhou.register(mine)
        await look_up(fuzhou, fuzhou.setup.agency(OTHER), mine.resource_code, 3)
        head, _ = await fuzhou.running.audit.head()
        assert fuzhou.running.checkpoints is not None
        for _ in range(int(WAIT_S / 0.1)):
            cosigned = await fuzhou.running.checkpoints.newest_cosigned()
            if cosigned is not None and cosigned.size >= head:
                break
            await asyncio.sleep(0.1)
        bundle = tmp_path / "bundle"
        made = await asyncio.to_thread(
            govnode,
            "audit", "usage", "--config", fuzhou.setup.config_path,
            "--agency", agency_code(1, FUZHOU), "--since", "2000-01-01", "--out", bundle,
        )  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        assert "wrote" in made.stdout and "3 records" in made.stdout
        root = fuzhou.setup.config.path(fuzhou.setup.config.tls.root)

    # The nodes are gone: the bundle and the root certificate are enough.
    checked = await asyncio.to_thread(govnode, "audit", "check-usage", bundle, "--root", root)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("usage OK: 3 records of the audit log 350100.fujian.gov.cn")

    lines = (bundle / "records.jsonl").read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line)["content"]["resource_code"] == mine.resource_code for line in lines)
    gone = json.loads(lines[1])["content"]["sequence"]
    withheld = tmp_path / "withheld"
    shutil.copytree(bundle, withheld)
    (withheld / "proofs" / f"{gone}.tlog-proof").unlink()
    (withheld / "records.jsonl").write_text(
        "".join(line + "\n" for line in lines if line != lines[1]), encoding="utf-8"
    )
    checked = await asyncio.to_thread(govnode, "audit", "check-usage", withheld, "--root", root)
    assert checked.returncode == 1
    assert f"record #{gone} is listed by the statement of" in checked.stdout
