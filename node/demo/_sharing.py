"""The data path part of ``govnode demo``: 汇聚, 比对, 查询 and the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from govnode.v1 import common_pb2, sharing_pb2, sharing_pb2_grpc

from gateway.channel import secure_channel
from node.audit import AuditLog
from node.catalog import ResourceEntry
from node.codes import make_citizen_id, make_credit_code
from node.terminal import format_record

if TYPE_CHECKING:
    from node.app import RunningNode
    from node.demo._main import Demo

PEOPLE = [
    ("35010219900307123", "张三", "男", "1990-03-07", "13812345678"),
    ("35020319851111002", "欧阳丽", "女", "1985-11-11", "13900001111"),
    ("35050219781230451", "林小明", "男", "1978-12-30", ""),
    ("35060219950615282", "陈静", "女", "1995-06-15", "15005912345"),
]
COMPANIES = [
    ("91350000000000001", "福州某某科技有限公司", "王五", "存续"),
    ("91350000000000002", "厦门某某贸易有限公司", "赵六", "注销"),
    ("91350000000000003", "泉州某某制造有限公司", "孙七", "存续"),
    ("91350000000000004", "漳州某某农业合作社", "周八", "吊销"),
]


def _people() -> list[dict[str, str]]:
    rows = []
    for first17, name, sex, birth, phone in PEOPLE:
        row = {"gmsfhm": make_citizen_id(first17), "xm": name, "xb": sex, "csrq": birth}
        if phone:
            row["sjhm"] = phone
        rows.append(row)
    return rows


def _companies() -> list[dict[str, str]]:
    return [
        {"tyshxydm": make_credit_code(code), "dwmc": name, "fddbr": rep, "djzt": state}
        for code, name, rep, state in COMPANIES
    ]


async def submit_batch(
    demo: Demo, node: RunningNode, provider: str, batch: sharing_pb2.SubmitBatch
) -> sharing_pb2.SubmitAck:
    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield batch

    async with secure_channel(node.address, demo.agency_files(provider), timeout=10) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(requests())]
    return acks[0]


async def _call(demo: Demo, node: RunningNode, code: str, method: str, request: Any) -> Any:
    async with secure_channel(node.address, demo.agency_files(code), timeout=10) as ch:
        result = getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(request)
        if method == "Compare":
            return [r async for r in result]
        return await result


def _match(result: int) -> str:
    return {1: "一致", 2: "不一致", 3: "无此项"}.get(result, "?")


async def show_data_path(demo: Demo, node: RunningNode, resources: Sequence[ResourceEntry]) -> None:
    say = demo.say
    people, companies, marriage, petitions = resources
    civil = marriage.provider_code
    say("[7] 汇聚 (Submit, 第十二、十五、二十一条): providers submit records; each is checked")
    rows = _people()
    bad_id = dict(rows[0], gmsfhm=rows[0]["gmsfhm"][:-1] + "0", xm="错号")
    undeclared = dict(rows[1], gmsfhm=make_citizen_id("35010220000101001"), hjdz="福州市鼓楼区")
    batch = sharing_pb2.SubmitBatch(
        resource_code=people.resource_code,
        batch_id="demo-people-1",
        records=[common_pb2.Record(values=r) for r in [*rows, bad_id, undeclared]],
    )
    ack = await submit_batch(demo, node, people.provider_code, batch)
    say(
        f"  ✓ {demo.names[people.provider_code]}: batch {ack.batch_id}: "
        f"{ack.accepted} accepted, {ack.rejected} refused"
    )
    for r in ack.rejections:
        say(f"      ✗ record {r.index}, item {r.item}: {r.reason}")
    again = await submit_batch(demo, node, people.provider_code, batch)
    say(f"  ✓ the same batch sent again: duplicate={again.duplicate}, nothing applied twice")
    ack = await submit_batch(
        demo,
        node,
        companies.provider_code,
        sharing_pb2.SubmitBatch(
            resource_code=companies.resource_code,
            batch_id="demo-companies-1",
            records=[common_pb2.Record(values=r) for r in _companies()],
        ),
    )
    say(f"  ✓ {demo.names[companies.provider_code]}: batch {ack.batch_id}: {ack.accepted} accepted")
    say("")

    say("[8] 比对验证 and 检索查询 (第二十六条) by 福建省民政厅, another agency")
    acme = make_credit_code(COMPANIES[0][0])
    reply = await _call(
        demo,
        node,
        civil,
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=companies.resource_code,
            key={"tyshxydm": acme},
            claimed={"dwmc": "福州某某科技有限公司", "djzt": "注销"},
        ),
    )
    say(
        f"  ✓ Verify {acme}: "
        + ", ".join(f"{m.item} {_match(m.result)}" for m in reply.matches)
        + " (no stored value is ever returned)"
    )
    results = await _call(
        demo,
        node,
        civil,
        "Compare",
        sharing_pb2.CompareRequest(
            resource_code=companies.resource_code,
            records=[
                sharing_pb2.CompareRecord(
                    ref=str(i), key={"tyshxydm": make_credit_code(code)}, claimed={"djzt": "存续"}
                )
                for i, (code, *_) in enumerate(COMPANIES)
            ],
        ),
    )
    say(
        "  ✓ Compare 4 companies against 登记状态=存续: "
        + " ".join(f"#{r.ref}:{'一致' if r.all_match else '不一致'}" for r in results)
    )
    page = await _call(
        demo,
        node,
        civil,
        "Query",
        sharing_pb2.QueryRequest(
            resource_code=companies.resource_code,
            filters=[
                sharing_pb2.QueryFilter(item="djzt", op=sharing_pb2.QUERY_OPERATOR_EQ, value="存续")
            ],
        ),
    )
    say(f"  ✓ Query 登记状态=存续: {len(page.rows)} rows; 法定代表人 masked for other agencies:")
    for row in page.rows:
        v = row.record.values
        masked = ", ".join(row.masked_items)
        say(f"      {v['tyshxydm']}  {v['dwmc']}  {v['fddbr']}  (masked: {masked})")
    mine = await _call(
        demo,
        node,
        people.provider_code,
        "Query",
        sharing_pb2.QueryRequest(
            resource_code=people.resource_code,
            key={"gmsfhm": rows[0]["gmsfhm"]},
        ),
    )
    v = mine.rows[0].record.values
    say(
        f"  ✓ the provider 公安厅 queries its own record in clear: {v['xm']} {v['gmsfhm']} "
        f"{v.get('sjhm', '')}"
    )
    for title, code, method, request in (
        (
            "民政厅 verifies a person in 人口基础信息 (有条件共享)",
            civil,
            "Verify",
            sharing_pb2.VerifyRequest(
                resource_code=people.resource_code,
                key={"gmsfhm": rows[0]["gmsfhm"]},
                claimed={"xm": "张三"},
            ),
        ),
        (
            "民政厅 queries 信访事项信息 (暂不共享)",
            civil,
            "Query",
            sharing_pb2.QueryRequest(resource_code=petitions.resource_code, key={"xfjbh": "X1"}),
        ),
    ):
        try:
            await _call(demo, node, code, method, request)
            raise RuntimeError(f"demo expected a refusal for: {title}")
        except grpc.aio.AioRpcError as exc:
            say(f"  ✗ {title}")
            say(f"      → {exc.code().name}: {exc.details()}")
    say("")

    log = AuditLog(node.db)
    records = await log.query(limit=1000)
    check = await log.verify_chain()
    say(
        f"[9] Audit log (第三十九条): {len(records)} records, every call accepted or refused; "
        f"hash chain {'intact' if check.ok else 'BROKEN'}. The last five:"
    )
    for record in records[-5:]:
        say("    " + format_record(record))
    say("    (see them all with: govnode audit tail --config <node>/govnode.toml)")
