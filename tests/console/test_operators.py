"""Operator certificates and the console's configuration: `govnode certs issue-operator`
(with the PKCS#12 a browser imports), `govnode certs list`, the strict operator identity, the
system page's masked secrets, `[console] listen`, and a city's console."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.identity import ConsoleRole, IdentityError, Role, make_identity, parse_spiffe
from node.config import load_config
from node.console._pages_system import MASK, effective_config
from node.pki import load_certs
from tests.support.cli import assert_one_line_error, govnode
from tests.support.console import operator, session, with_console
from tests.support.nodes import make_city, make_province, start


def test_issue_operator_writes_a_bundle_and_a_pkcs12_and_lists_it(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    out = tmp_path / "op"
    result = govnode(
        "certs",
        "issue-operator",
        "--config",
        setup.config_path,
        "--name",
        "li-ming",
        "--role",
        "security",
        "--out",
        out,
        "--p12",
        "--p12-password",
        "pw-1",
    )
    assert result.returncode == 0, result.stderr
    assert "spiffe://350000.fujian.gov.cn/operator/security.li-ming" in result.stdout
    key, cert, chain = pkcs12.load_key_and_certificates(
        (out / "operator.p12").read_bytes(), b"pw-1"
    )
    assert key is not None and cert == load_certs(out / "client.crt")[0] and len(chain) == 1
    assert (out / "operator.p12").stat().st_mode & 0o777 == 0o600

    listed = govnode("certs", "list", "--config", setup.config_path)
    assert listed.returncode == 0, listed.stderr
    assert "operator" in listed.stdout and "security.li-ming" in listed.stdout
    assert format(cert.serial_number, "x") in listed.stdout and "valid" in listed.stdout

    # Issuing and revoking at the command line are in the audit log, as at the console.
    serial = format(cert.serial_number, "x")
    revoked = govnode("certs", "revoke", "--config", setup.config_path, "--serial", serial)
    assert revoked.returncode == 0, revoked.stderr
    tail = govnode("audit", "tail", "--config", setup.config_path, "--json")
    assert tail.returncode == 0, tail.stderr
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    said = [(r["method"], r["outcome"], r["detail"]["subject"]) for r in records]
    operator_uri = "spiffe://350000.fujian.gov.cn/operator/security.li-ming"
    assert said == [
        ("cli:certs/issue", "OK", operator_uri),
        ("cli:certs/revoke", "OK", ""),
    ]
    assert records[1]["detail"]["serial"] == serial
    assert records[0]["caller"] == "spiffe://350000.fujian.gov.cn/node"

    for args, needle in (
        (("--name", "li ming", "--role", "system"), "operator name"),
        (("--name", "x" * 49, "--role", "system"), "operator name"),
    ):
        refused = govnode(
            "certs",
            "issue-operator",
            "--config",
            setup.config_path,
            *args,
            "--out",
            tmp_path / "refused",
        )
        assert_one_line_error(refused, needle)
    bad_role = govnode(
        "certs",
        "issue-operator",
        "--config",
        setup.config_path,
        "--name",
        "a",
        "--role",
        "root",
        "--out",
        tmp_path / "refused",
    )
    assert bad_role.returncode == 2 and "root" in bad_role.stderr


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://350000.fujian.gov.cn/operator",
        "spiffe://350000.fujian.gov.cn/operator/li",
        "spiffe://350000.fujian.gov.cn/operator/admin.li",
        "spiffe://350000.fujian.gov.cn/operator/system.",
        "spiffe://350000.fujian.gov.cn/operator/system.li.extra",
        "spiffe://350000.fujian.gov.cn/operator/system/li",
    ],
)
def test_operator_identities_are_parsed_strictly(uri: str) -> None:
    with pytest.raises(IdentityError):
        parse_spiffe(uri)


def test_an_operator_identity_carries_its_role() -> None:
    identity = make_identity("350100", "fujian.gov.cn", Role.OPERATOR, "observer.wang_1")
    assert identity.uri == "spiffe://350100.fujian.gov.cn/operator/observer.wang_1"
    assert parse_spiffe(identity.uri) == identity
    assert {r.value for r in ConsoleRole} == {"observer", "service", "security", "system"}


def test_the_effective_config_never_shows_a_password(tmp_path: Path, sqlite_url: str) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    config = setup.config.model_copy(
        update={
            "storage": setup.config.storage.model_copy(
                update={"url": "postgresql+asyncpg://govnode:hunter2@db:5432/govnode"}
            )
        }
    )
    shown = effective_config(config)
    assert "hunter2" not in str(shown)
    assert shown["storage"]["url"] == "postgresql+asyncpg://govnode:***@db:5432/govnode"
    assert MASK not in str(shown), "no other value needed masking"


def test_console_listen_must_be_host_port_and_not_the_nodes_port(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    text = setup.config_path.read_text(encoding="utf-8")
    for value, needle in (("7444", "HOST:PORT"), (setup.config.node.listen, "must differ")):
        setup.config_path.write_text(
            text.replace('# listen = "127.0.0.1:7444"', f'listen = "{value}"'), encoding="utf-8"
        )
        with pytest.raises(Exception, match=needle):
            load_config(setup.config_path)


async def test_the_system_page_and_a_citys_console(tmp_path: Path, sqlite_url: str) -> None:
    province = make_province(tmp_path / "province", sqlite_url)
    city = with_console(
        make_city(tmp_path / "city", sqlite_url.replace("node.db", "city.db"), province)
    )
    node = await start(city)
    try:
        assert node.console is not None
        who = operator(city, "observer")
        root = city.config.path(city.config.tls.root)
        async with session(who, root) as http:
            async with http.get(node.console.url + "/") as response:
                page = await response.text()
            assert response.status == 200
            assert "福州市" in page and "市级节点" in page
            assert "<td>350000</td>" in page, "a city lists its province link"
            async with http.get(node.console.url + "/system") as response:
                system = await response.text()
            assert response.status == 200
            assert "[console]" in system and "console.secret" in system
        # The province's operators are not the city's: another CA issued them.
        async with (
            session(operator(province, "system"), root) as http,
            http.get(node.console.url + "/") as response,
        ):
            assert response.status == 403
            assert "不是本节点的 CA 签发的" in await response.text()
    finally:
        await node.stop(grace=0)
