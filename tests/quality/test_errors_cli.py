"""`govnode quality errors list|show|resolve`, the operator's desk for error reports (纠错,
第十六条), run as a subprocess against a real serving node's database (SQLite and PostgreSQL): the
authority confirms one report's stored value and asks for another's correction, which `govnode
changes approve` applies; the consumers hear of both through the node."""

from __future__ import annotations

import json

import pytest
from govnode.v1 import quality_pb2 as S

from tests.quality.test_errors import quality, report
from tests.support.access import (
    ACME,
    KIND,
    OPEN,
    Province,
    notifications,
    query,
    register,
    sharing,
    submit,
    verify,
)
from tests.support.cli import assert_one_line_error, cli, govnode
from tests.support.nodes import CIVIL_AFFAIRS, PUBLIC_SECURITY

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_the_authority_confirms_and_corrects_at_the_desk(province: Province) -> None:
    setup, node = province
    config = setup.config_path
    provider = setup.agency(PUBLIC_SECURITY)
    civil = setup.agency(CIVIL_AFFAIRS)
    await register(node, provider, OPEN)
    await submit(node, provider, OPEN.resource_code, [ACME])
    await sharing(node, civil, "Query", query(OPEN.resource_code))
    name = await report(node, civil)
    whole = await report(node, civil, item="", description="法定代表人已变更")

    code, out, errors = await cli("quality", "errors", "list", "--config", config)
    assert code == 0, errors
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [whole.id, name.id]
    assert "open" in lines[0] and "(record)" in lines[0]
    code, out, errors = await cli("quality", "errors", "show", name.id, "--config", config)
    assert code == 0, errors
    assert out.startswith(f"{name.id}  open  {OPEN.resource_code}  item qymc")
    assert "企业名称已于2026年变更" in out

    # Confirm the first: the reporter is told, that mark is gone.
    code, out, errors = await cli(
        "quality", "errors", "resolve", name.id, "--config", config, "--confirm",
        "--note", "名称经核对无误",
    )  # fmt: skip
    assert code == 0, errors
    assert out.startswith(f"{name.id}  rejected")
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, qymc=ACME["qymc"]))
    assert list(answer.dispute.report_ids) == [whole.id]

    # Correct the second through a change request, then approve it.
    code, out, errors = await cli(
        "quality", "errors", "resolve", whole.id, "--config", config,
        "--correct", "fddbr=赵六", "--note", "依变更登记更正法定代表人", "--json",
    )  # fmt: skip
    assert code == 0, errors
    asked = json.loads(out)
    assert asked["status"] == "correction_requested"
    change_id = asked["change_request_id"]
    assert change_id.startswith("350000-C-")
    code, out, errors = await cli("changes", "approve", "--config", config, change_id)
    assert code == 0, errors
    got = (await quality(node, civil, "GetDataError", S.GetDataErrorRequest(id=whole.id))).report
    assert got.status == S.DATA_ERROR_STATUS_CORRECTED and got.corrected_version == 2
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, fddbr="赵六"))
    assert answer.all_match and not answer.HasField("dispute")
    kinds = [n.kind for n in await notifications(node, civil)]
    assert kinds.count(KIND.NOTIFICATION_KIND_DATA_ERROR_RESOLVED) == 2
    # 民政 verified while the record was disputed: it is told of the correction.
    assert kinds.count(KIND.NOTIFICATION_KIND_DATA_CORRECTED) == 1

    # Refusals are one line.
    result = govnode("quality", "errors", "resolve", whole.id, "--config", config, "--note", "x")
    assert_one_line_error(result, "give --confirm, or --correct ITEM=VALUE")
    result = govnode(
        "quality", "errors", "resolve", whole.id, "--config", config, "--confirm", "--note", "x"
    )
    assert_one_line_error(result, f"error report {whole.id} is corrected, not open")
    # The resolutions are in the audit log, the refused one too.
    cli_records = [r for r in await node.audit.query(limit=1000) if r.method.startswith("cli:")]
    named = [r.detail.get("data_error") or r.detail["change_request"] for r in cli_records]
    assert [(r.method, r.outcome, n) for r, n in zip(cli_records, named, strict=True)] == [
        ("cli:quality-errors/confirm", "OK", name.id),
        ("cli:quality-errors/correct", "OK", whole.id),
        ("cli:changes/approve", "OK", change_id),
        ("cli:quality-errors/confirm", "FAILED_PRECONDITION", whole.id),
    ]
    result = govnode("quality", "errors", "show", "350000-E-00", "--config", config)
    assert_one_line_error(result, "error report '350000-E-00' does not exist at this node")
    result = govnode("quality", "errors", "list", "--config", config, "--status", "nope")
    assert_one_line_error(result, "--status: 'nope' is not one of open")
    result = govnode(
        "quality", "errors", "resolve", name.id, "--config", config, "--correct", "x", "--note", "y"
    )
    assert_one_line_error(result, "--correct: 'x' is not ITEM=VALUE")
