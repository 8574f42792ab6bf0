"""govnode_client against a real province node on loopback, with the certificates
`govnode agency add` writes: a client from a bundle, typed calls, paging, refusals with the
node's message and request id, and retries that honour retry-after-ms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from govnode.v1 import catalog_pb2, sharing_pb2
from govnode_client import Bundle, BundleError, Client, Retry, errors

from node.app import RunningNode
from node.codes import make_credit_code
from node.servicers.convert import entry_to_proto
from tests.support.cli import govnode
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PUBLIC_SECURITY,
    ProvinceSetup,
    make_province,
    start,
    with_limits,
)
from tests.support.oracle import sensitive
from tests.support.sdk import company
from tests.support.sharing import COMPANIES, PEOPLE, agency

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Verify calls a minute per caller and resource: a burst of this many, then one a second.
VERIFY_PER_MINUTE = 60
#: The oracle-limited resource (level-3 personal data, Verify only).
LIMITED = sensitive(1)
COMPANY_COUNT = 30


class Node:
    def __init__(self, setup: ProvinceSetup, running: RunningNode) -> None:
        self.setup = setup
        self.running = running

    def bundle(self, code: str) -> Path:
        """The bundle directory of ``code`` (issued once), as `govnode agency add` writes it."""
        return agency(self.setup, code).key.parent

    def client(self, code: str) -> Client:
        return Client.from_bundle(self.bundle(code), endpoint=self.running.address)

    async def audited(self, request_id: str) -> list[str]:
        rows = await self.running.db.fetch_all(
            "SELECT outcome FROM audit_record WHERE request_id = :r ORDER BY sequence",
            {"r": request_id},
        )
        return [str(row[0]) for row in rows]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    """A province with the example companies resource (30 records, through the SDK's Submit)
    and a Verify-limited resource of level-3 personal data."""
    base = tmp_path_factory.mktemp("sdk")
    setup = make_province(base / "province", f"sqlite+aiosqlite:///{base / 'node.db'}")
    setup = with_limits(setup, verify_per_minute=VERIFY_PER_MINUTE)
    running = await start(setup)
    shared = Node(setup, running)
    try:
        async with shared.client(MARKET_REGULATION) as gn:
            await gn.catalog.register_resource(entry=entry_to_proto(COMPANIES))
            result = await gn.submit_records(
                COMPANIES.resource_code, (company(n) for n in range(COMPANY_COUNT)), batch_size=8
            )
            assert (result.accepted, len(result.acks), result.reconnects) == (COMPANY_COUNT, 4, 0)
        async with shared.client(PUBLIC_SECURITY) as gn:
            await gn.catalog.register_resource(entry=entry_to_proto(LIMITED))
            await gn.catalog.register_resource(entry=entry_to_proto(PEOPLE))
        yield shared
    finally:
        await running.stop(grace=0)


async def test_a_client_from_a_bundle_verifies_and_queries(node: Node) -> None:
    async with node.client(CIVIL_AFFAIRS) as gn:
        reply = await gn.sharing.verify(
            resource_code=COMPANIES.resource_code,
            key={"tyshxydm": company(3)["tyshxydm"]},
            claimed={"dwmc": company(3)["dwmc"], "djzt": "注销"},
        )
        assert isinstance(reply, sharing_pb2.VerifyResponse)
        assert reply.found and not reply.all_match
        assert {m.item: m.result for m in reply.matches} == {
            "dwmc": sharing_pb2.MATCH_RESULT_MATCH,
            "djzt": sharing_pb2.MATCH_RESULT_MISMATCH,
        }
        # The request message itself works as well as keyword fields.
        page = await gn.sharing.query(
            sharing_pb2.QueryRequest(
                resource_code=COMPANIES.resource_code, key={"tyshxydm": company(5)["tyshxydm"]}
            )
        )
        [row] = page.rows
        assert row.record.values["dwmc"] == company(5)["dwmc"]


async def test_compare_streams_a_result_per_record(node: Node) -> None:
    records = [
        sharing_pb2.CompareRecord(
            ref=str(n), key={"tyshxydm": company(n)["tyshxydm"]}, claimed={"fddbr": "王五"}
        )
        for n in (1, 2)
    ] + [sharing_pb2.CompareRecord(ref="nobody", key={"tyshxydm": company(99)["tyshxydm"]})]
    async with node.client(CIVIL_AFFAIRS) as gn:
        results = [
            r
            async for r in gn.sharing.compare(
                resource_code=COMPANIES.resource_code, records=records
            )
        ]
    assert [(r.ref, r.found, r.all_match) for r in results] == [
        ("1", True, True),
        ("2", True, True),
        ("nobody", False, False),
    ]


async def test_a_paged_list_is_iterated_to_its_end(node: Node) -> None:
    every = sharing_pb2.QueryRequest(
        resource_code=COMPANIES.resource_code,
        filters=[
            sharing_pb2.QueryFilter(item="djzt", op=sharing_pb2.QUERY_OPERATOR_EQ, value="存续")
        ],
        page_size=7,
    )
    async with node.client(CIVIL_AFFAIRS) as gn:
        rows = [row async for row in gn.sharing.query.all(every)]
        pages = [len(p.rows) async for p in gn.sharing.query.pages(every)]
        entries = [e.resource_code async for e in gn.catalog.list_resources.all(page_size=1)]
    names = sorted(row.record.values["dwmc"] for row in rows)
    assert names == sorted(company(n)["dwmc"] for n in range(COMPANY_COUNT))
    assert pages == [7, 7, 7, 7, 2]
    assert entries == sorted([COMPANIES.resource_code, LIMITED.resource_code, PEOPLE.resource_code])


async def test_a_refusal_carries_the_nodes_message_and_request_id(node: Node) -> None:
    async with node.client(CIVIL_AFFAIRS) as gn:
        with pytest.raises(errors.PermissionDenied) as refused:
            # 人口基础信息 is 有条件共享: no grant, no answer (第二十五条).
            await gn.sharing.query(resource_code=PEOPLE.resource_code, key={"gmsfhm": "1"})
    exc = refused.value
    assert isinstance(exc, errors.GovnodeError)
    assert exc.code is grpc.StatusCode.PERMISSION_DENIED
    assert PEOPLE.resource_code in exc.message
    assert exc.request_id and exc.request_id in str(exc)
    assert await node.audited(exc.request_id) == ["PERMISSION_DENIED"]


async def test_a_refusal_is_not_retried(node: Node) -> None:
    async with node.client(CIVIL_AFFAIRS) as gn:
        with pytest.raises(errors.NotFound) as refused:
            await gn.catalog.get_resource(resource_code="350000-3-999999")
    assert await node.audited(refused.value.request_id) == ["NOT_FOUND"]


async def test_resource_exhausted_is_retried_after_retry_after_ms(node: Node) -> None:
    """The rate limit's bucket is spent with plain calls; the SDK's next Verify is refused
    with retry-after-ms, waits that long and is answered: two attempts under one request id."""
    code = make_credit_code("11350000003591009")
    verify = sharing_pb2.VerifyRequest(
        resource_code=LIMITED.resource_code, key={"zjhm": "k"}, claimed={"xm": "张"}
    )
    async with node.client(code) as gn:
        # A machine slow enough to let a token come back between the refusal and the next
        # call has that call answered at once: then spend the bucket again (at most 3 times).
        for _ in range(3):
            await spend(gn, verify)
            # The default policy: the refusal is retried after its delay and then answered.
            reply = await gn.sharing.verify(verify)
            assert not reply.found
            [request_id] = await node.running.db.fetch_all(
                "SELECT request_id FROM audit_record WHERE method LIKE '%/Verify' "
                "ORDER BY sequence DESC LIMIT 1",
                {},
            )
            attempts = await node.audited(str(request_id[0]))
            if len(attempts) > 1:
                break
        # One call, its attempts under one request id: refused (a retry that came a
        # millisecond early is refused again), then answered.
        assert attempts[-1] == "OK"
        assert attempts[:-1] and set(attempts[:-1]) == {"RESOURCE_EXHAUSTED"}


async def spend(gn: Client, verify: sharing_pb2.VerifyRequest) -> None:
    """Verify without retries until the rate limit refuses."""
    for _ in range(10 * VERIFY_PER_MINUTE):  # it holds 60 calls and refills one a second
        try:
            await gn.sharing.verify(verify, retry=Retry(attempts=1))
        except errors.ResourceExhausted as exc:
            assert exc.retry_after is not None and 0 < exc.retry_after <= 1
            return
    raise AssertionError("the rate limit never refused")


async def test_a_bundle_names_its_endpoint_or_the_caller_does(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = govnode(
        "agency", "add", "--config", node.setup.config_path, "--code", PUBLIC_SECURITY,
        "--name", "福建省公安厅", "--out", out, "--endpoint", node.running.address,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "endpoint").read_text(encoding="ascii").strip() == node.running.address
    async with Client.from_bundle(out) as gn:
        reply = await gn.catalog.get_resource(resource_code=LIMITED.resource_code)
        assert isinstance(reply, catalog_pb2.GetResourceResponse)
        assert reply.entry.resource_code == LIMITED.resource_code
    (out / "endpoint").unlink()
    with pytest.raises(BundleError, match="no endpoint"):
        Bundle.read(out)
    with pytest.raises(BundleError, match=r"client\.key is missing"):
        Bundle.read(tmp_path, endpoint="127.0.0.1:1")
    bad = govnode(
        "agency", "add", "--config", node.setup.config_path, "--code", PUBLIC_SECURITY,
        "--name", "x", "--out", tmp_path / "b2", "--endpoint", "not an endpoint",
    )  # fmt: skip
    assert bad.returncode == 2 and "--endpoint" in bad.stderr


async def test_a_node_that_cannot_be_reached_is_unavailable_after_bounded_retries(
    node: Node,
) -> None:
    from node.demo._main import free_port

    gn = Client.from_bundle(node.bundle(CIVIL_AFFAIRS), endpoint=f"127.0.0.1:{free_port()}")
    async with gn:
        with pytest.raises(errors.Unavailable) as down:
            await gn.catalog.get_resource(
                resource_code=COMPANIES.resource_code,
                retry=Retry(attempts=3, initial=0.01, maximum=0.05),
            )
    assert down.value.request_id  # the id the SDK sent: the node never saw the call


async def test_streams_are_async_iterators_and_their_refusals_are_errors(node: Node) -> None:
    async with node.client(CIVIL_AFFAIRS) as gn:
        chunks = [c async for c in gn.sharing.exchange(resource_code=COMPANIES.resource_code)]
        assert chunks[-1].last
        assert sum(len(c.records) for c in chunks) == COMPANY_COUNT
        with pytest.raises(errors.PermissionDenied) as refused:
            async for _ in gn.sharing.subscribe(resource_code=PEOPLE.resource_code):
                pytest.fail("a change of 人口基础信息 reached a caller without a grant")
    assert refused.value.request_id
    assert await node.audited(refused.value.request_id) == ["PERMISSION_DENIED"]
