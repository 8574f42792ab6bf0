"""`govnode certs issue-authority` and `govnode access` (第二十五条), run as an operator runs
them: the authority's bundle for a province and a city, and the review desk on a node's
database while the node serves, its notifications reaching the parties' streams."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import grpc
import pytest
from govnode.v1 import access_pb2, access_pb2_grpc

from node.app import RunningNode
from tests.support.access import (
    ACME,
    COND,
    KIND,
    access,
    apply_request,
    next_note,
    notifications,
    query,
    refused,
    sharing,
)
from tests.support.cli import (
    assert_one_line_error,
    cli,
    govnode,
)
from tests.support.nodes import CIVIL_AFFAIRS, PUBLIC_SECURITY, ProvinceSetup, channel, make_city

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Province = tuple[ProvinceSetup, RunningNode]


def test_issue_authority_for_a_province_and_a_city(tmp_path: Path) -> None:
    from tests.support.nodes import make_province

    province = make_province(tmp_path / "province", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    city = make_city(tmp_path / "fuzhou", f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", province)
    for setup, region in ((province, "350000"), (city, "350100")):
        out = tmp_path / f"authority-{region}"
        result = govnode("certs", "issue-authority", "--config", setup.config_path, "--out", out)
        assert result.returncode == 0, result.stderr
        identity = f"spiffe://{region}.fujian.gov.cn/authority"
        assert identity in result.stdout
        assert stat.S_IMODE((out / "client.key").stat().st_mode) == 0o600
        shown = govnode("certs", "show", out / "client.crt")
        assert identity in shown.stdout
    again = govnode(
        "certs",
        "issue-authority",
        "--config",
        province.config_path,
        "--out",
        tmp_path / "authority-350000",
    )
    assert_one_line_error(again, "refusing to overwrite")


async def test_the_review_desk_on_a_serving_node(province: Province) -> None:
    from tests.support.access import register, submit

    setup, node = province
    config = setup.config_path
    provider, civil = setup.agency(PUBLIC_SECURITY), setup.agency(CIVIL_AFFAIRS)
    await register(node, provider, COND)
    await submit(node, provider, COND.resource_code, [ACME])
    first = (await access(node, civil, "Apply", apply_request())).application
    second = (await access(node, civil, "Apply", apply_request(items=("qymc",)))).application

    code, out, err = await cli("access", "list", "--config", config, "--status", "pending")
    assert code == 0, err
    assert first.id in out and second.id in out and "pending" in out
    code, out, err = await cli("access", "show", "--config", config, first.id)
    assert code == 0, err
    assert "核验企业登记信息" in out and CIVIL_AFFAIRS in out

    # The applicant's stream is open while the operator approves at the command line.
    async with channel(node, civil) as ch:
        stream = access_pb2_grpc.AccessServiceStub(ch).WatchNotifications(
            access_pb2.WatchNotificationsRequest(), timeout=30
        )
        code, out, err = await cli(
            "access",
            "approve",
            "--config",
            config,
            first.id,
            "--items",
            "tyshxydm,fddbr",
            "--methods",
            "query",
        )
        assert code == 0, err
        grant_id = next(w for w in out.split() if "-G-" in w)
        note = await asyncio.wait_for(next_note(stream), timeout=10)
        assert note.kind == KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED
        assert note.grant_id == grant_id
        stream.cancel()
    [row] = (await sharing(node, civil, "Query", query())).rows
    assert dict(row.record.values) == {"tyshxydm": ACME["tyshxydm"], "fddbr": "王*"}

    # Refusals come back as one line naming the rule.
    code, _, err = await cli("access", "approve", "--config", config, second.id, "--items", "fddbr")
    assert code == 2 and "only narrow the items" in err and "Traceback" not in err
    code, _, err = await cli("access", "reject", "--config", config, second.id, "--comment", " ")
    assert code == 2 and "comment: required" in err
    code, out, err = await cli(
        "access", "reject", "--config", config, second.id, "--comment", "用途不明确"
    )
    assert code == 0 and "用途不明确" in out, err
    code, out, err = await cli("access", "list", "--config", config, "--grants", "--json")
    assert code == 0 and grant_id in out, err

    code, out, err = await cli(
        "access", "revoke", "--config", config, grant_id, "--reason", "用途变更"
    )
    assert code == 0, err
    denied = await refused(sharing(node, civil, "Query", query()))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED and "revoked" in (
        denied.details() or ""
    )
    kinds = [n.kind for n in await notifications(node, provider)]
    assert kinds == [
        KIND.NOTIFICATION_KIND_APPLICATION_RECEIVED,
        KIND.NOTIFICATION_KIND_APPLICATION_RECEIVED,
        KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED,
        KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED,
        KIND.NOTIFICATION_KIND_GRANT_REVOKED,
    ]
    code, out, err = await cli("access", "show", "--config", config, grant_id)
    assert code == 0 and "revoked" in out and "用途变更" in out, err

    # Every decision made at the command line is in the audit log, the refused ones too.
    cli_records = [r for r in await node.audit.query(limit=1000) if r.method.startswith("cli:")]
    assert [(r.method, r.outcome) for r in cli_records] == [
        ("cli:access/approve", "OK"),
        ("cli:access/approve", "INVALID_ARGUMENT"),
        ("cli:access/reject", "INVALID_ARGUMENT"),
        ("cli:access/reject", "OK"),
        ("cli:access/revoke", "OK"),
    ]
    assert cli_records[-1].detail["grant"] == grant_id
    assert all(r.detail["auth"] == "cli" for r in cli_records)
