"""The `govnode` command line, run as an operator would run it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from node.demo._main import free_port
from tests.support.cli import (
    assert_one_line_error,
    govnode,
)
from tests.support.nodes import enable_join, make_province


def test_every_command_has_help() -> None:
    for args in (
        [],
        ["init", "province"],
        ["init", "city"],
        ["certs", "sign-city"],
        ["certs", "install"],
        ["certs", "revoke"],
        ["agency", "add"],
        ["serve"],
        ["demo"],
        ["changes", "approve"],
        ["access", "approve"],
    ):
        result = govnode(*args, "--help")
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout


def test_province_city_and_agency_set_up_by_files(tmp_path: Path) -> None:
    province, city = tmp_path / "province", tmp_path / "fuzhou"
    result = govnode(
        "init",
        "province",
        "--region",
        "350000",
        "--name",
        "福建省",
        "--dir",
        province,
        "--listen",
        f"127.0.0.1:{free_port()}",
    )
    assert result.returncode == 0, result.stderr
    fingerprint = next(
        line.split()[-1] for line in result.stdout.splitlines() if "root fingerprint" in line
    )
    for key in ("root.key", "ca.key", "node.key"):
        assert stat.S_IMODE((province / "tls" / key).stat().st_mode) == 0o600

    result = govnode(
        "init",
        "city",
        "--region",
        "350100",
        "--name",
        "福州市",
        "--dir",
        city,
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--province-endpoint",
        "127.0.0.1:7443",
    )
    assert result.returncode == 0, result.stderr
    assert (city / "tls" / "ca.csr").exists() and not (city / "tls" / "node.crt").exists()

    bundle = tmp_path / "bundle"
    result = govnode(
        "certs",
        "sign-city",
        "--config",
        province / "govnode.toml",
        "--csr",
        city / "tls" / "ca.csr",
        "--region",
        "350100",
        "--name",
        "福州市",
        "--out",
        bundle,
    )
    assert result.returncode == 0, result.stderr
    assert not (bundle / "ca.key").exists()  # no key crosses between the machines

    wrong = "SHA256:" + ":".join(["00"] * 32)
    result = govnode(
        "certs",
        "install",
        "--config",
        city / "govnode.toml",
        "--bundle",
        bundle,
        "--fingerprint",
        wrong,
    )
    assert_one_line_error(result, "refusing to trust it")

    result = govnode(
        "certs",
        "install",
        "--config",
        city / "govnode.toml",
        "--bundle",
        bundle,
        "--fingerprint",
        fingerprint,
    )
    assert result.returncode == 0, result.stderr
    shown = govnode("certs", "show", city / "tls" / "node.crt")
    assert "spiffe://350100.fujian.gov.cn/node" in shown.stdout
    assert "CA for 350100.fujian.gov.cn" in shown.stdout

    agency = tmp_path / "agency"
    result = govnode(
        "agency",
        "add",
        "--config",
        city / "govnode.toml",
        "--code",
        "11350100003592001G",
        "--name",
        "福州市公安局",
        "--out",
        agency,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((agency / "client.key").stat().st_mode) == 0o600
    assert (agency / "client.crt").read_text().count("BEGIN CERTIFICATE") == 2
    assert (
        "spiffe://350100.fujian.gov.cn/agency/11350100003592001G"
        in govnode("certs", "show", agency / "client.crt").stdout
    )

    # Issuing again into the same directory never overwrites a key.
    again = govnode(
        "agency",
        "add",
        "--config",
        city / "govnode.toml",
        "--code",
        "11350100003592001G",
        "--name",
        "福州市公安局",
        "--out",
        agency,
    )
    assert_one_line_error(again, "client.key")


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("11350000003591001X", "GB 32100 requires"),
        ("1135000000359100", "must be 18 characters"),
        ("11350200003593001W", "own region's node"),
    ],
)
def test_agency_add_refuses_bad_codes_in_one_line(tmp_path: Path, code: str, needle: str) -> None:
    province = tmp_path / "province"
    assert (
        govnode(
            "init", "province", "--region", "350000", "--name", "福建省", "--dir", province
        ).returncode
        == 0
    )
    result = govnode(
        "agency",
        "add",
        "--config",
        province / "govnode.toml",
        "--code",
        code,
        "--name",
        "某单位",
        "--out",
        tmp_path / "a",
    )
    assert_one_line_error(result, needle)
    assert not (tmp_path / "a" / "client.key").exists()


def test_init_refuses_a_county_and_an_existing_node(tmp_path: Path) -> None:
    result = govnode(
        "init",
        "city",
        "--region",
        "350102",
        "--name",
        "鼓楼区",
        "--dir",
        tmp_path / "c",
        "--province-endpoint",
        "127.0.0.1:7443",
    )
    assert_one_line_error(result, "county-level", "第十九条")
    ok = govnode(
        "init", "province", "--region", "350000", "--name", "福建省", "--dir", tmp_path / "p"
    )
    assert ok.returncode == 0
    again = govnode(
        "init", "province", "--region", "350000", "--name", "福建省", "--dir", tmp_path / "p"
    )
    assert_one_line_error(again, "exists already")


def test_serve_with_a_broken_config_names_the_key(tmp_path: Path) -> None:
    province = tmp_path / "p"
    govnode("init", "province", "--region", "350000", "--name", "福建省", "--dir", province)
    config = province / "govnode.toml"
    config.write_text(config.read_text().replace('region = "350000"', 'region = "35"'))
    assert_one_line_error(govnode("serve", "--config", config), "node.region")


def test_an_unknown_command_is_refused_in_one_line_quoting_a_prefix() -> None:
    for name, shown in (("serv", "'serv'"), ("x" * 100_000, "… (100000 characters)")):
        result = govnode(name, "--config", "govnode.toml")
        assert_one_line_error(result, "no such command", shown, "serve, health")
        assert len(result.stderr) < 400, result.stderr[:400]


#: A structlog event line, as rendered for a terminal or as JSON.
LOG_EVENT = re.compile(r"\[(debug|info|warning) *\]|\"level\": \"(debug|info|warning)\"")


def test_commands_print_only_what_was_asked_unless_verbose(tmp_path: Path) -> None:
    setup = enable_join(make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"))
    config = setup.config_path
    invited = govnode("federation", "invite", "--config", config, "--region", "350100")
    assert invited.returncode == 0, invited.stderr
    assert invited.stdout.startswith("Invitation for 福州市 (350100)"), invited.stdout
    assert not LOG_EVENT.search(invited.stdout) and invited.stderr == "", invited
    commands: list[tuple[list[str | Path], str]] = [
        (["certs", "revoke", "--config", config, "--serial", "51be07"], "Revoked certificate"),
        (["changes", "list", "--config", config], ""),
        (["access", "list", "--config", config], ""),
    ]
    for args, first in commands:
        result = govnode(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith(first), (args, result.stdout)
        assert not LOG_EVENT.search(result.stdout) and result.stderr == "", (args, result)

    # --verbose (-v) shows the node's log events too: on stderr, never mixed into stdout. It is
    # a global option, also taken after the command.
    invite: list[str | Path] = ["federation", "invite", "--config", config, "--region", "350200"]
    for args in (["-v", *invite], [*invite, "--verbose"]):
        verbose = govnode(*args)
        assert verbose.returncode == 0, verbose.stderr
        assert verbose.stdout.startswith("Invitation for 厦门市 (350200)"), verbose.stdout
        assert not LOG_EVENT.search(verbose.stdout), verbose.stdout
        assert '"event": "storage.opened"' in verbose.stderr, verbose.stderr
