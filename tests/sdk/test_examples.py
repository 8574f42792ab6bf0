"""The agency examples (examples/python, examples/node with grpc-js, examples/java with
grpc-java) call Verify and Query on a real node, started with `govnode serve`, with an agency
bundle, and print the same lines; a refusal prints the node's message and request id.

`make examples` (scripts/install_examples.sh, run by `make test`) installs node, npm, the Node
example's pinned packages and Debian's grpc-java. Without them these tests fail, saying so;
only outside CI, with GOVNODE_EXAMPLES_OPTIONAL=1, are they skipped instead."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from govnode_client import Client

from node.servicers.convert import entry_to_proto
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PUBLIC_SECURITY,
    make_province,
    serve_process,
    wait_serving,
)
from tests.support.sdk import company
from tests.support.sharing import COMPANIES, PEOPLE, agency

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES = REPOSITORY / "examples"
OPTIONAL_ENV = "GOVNODE_EXAMPLES_OPTIONAL"


def require(what: str, present: bool) -> None:
    if present:
        return
    message = f"{what} is missing: run `make examples` (scripts/install_examples.sh)"
    if os.environ.get(OPTIONAL_ENV) == "1" and not os.environ.get("CI"):
        pytest.skip(f"{message}; skipped because {OPTIONAL_ENV}=1")
    pytest.fail(message)


@dataclass
class Served:
    address: str
    bundle: Path  # a consumer's (福建省民政厅)
    provider: Path  # 法人单位基础信息's provider's (福建省市场监督管理局)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`govnode serve` with 法人单位基础信息 (two companies) and 人口基础信息 registered."""
    base = tmp_path_factory.mktemp("examples")
    setup = make_province(base / "province", f"sqlite+aiosqlite:///{base / 'node.db'}")
    address = setup.config.node.listen
    proc = serve_process(setup.config_path, stderr=subprocess.DEVNULL)
    try:
        bundle = agency(setup, CIVIL_AFFAIRS).key.parent
        wait_serving(address, bundle, proc)

        async def load() -> None:
            provider = agency(setup, MARKET_REGULATION).key.parent
            async with Client.from_bundle(provider, endpoint=address) as gn:
                await gn.catalog.register_resource(entry=entry_to_proto(COMPANIES))
                await gn.submit_records(COMPANIES.resource_code, [company(1), company(2)])
            police = agency(setup, PUBLIC_SECURITY).key.parent
            async with Client.from_bundle(police, endpoint=address) as gn:
                await gn.catalog.register_resource(entry=entry_to_proto(PEOPLE))

        asyncio.run(load())
        yield Served(address, bundle, agency(setup, MARKET_REGULATION).key.parent)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def python_example() -> list[str]:
    return [sys.executable, str(EXAMPLES / "python" / "verify_and_query.py")]


def node_example() -> list[str]:
    require("node", shutil.which("node") is not None)
    modules = EXAMPLES / "node" / "node_modules" / "@grpc" / "grpc-js"
    require("examples/node/node_modules (npm ci)", modules.is_dir())
    return ["node", str(EXAMPLES / "node" / "verify_query.js")]


@pytest.fixture(scope="module")
def java_example() -> list[str]:
    """The Java example, built once for the module with protoc and javac (build.sh)."""
    require("javac", shutil.which("javac") is not None)
    require("protoc", shutil.which("protoc") is not None)
    require("Debian's grpc-java", Path("/usr/share/java/grpc-netty.jar").is_file())
    built = subprocess.run(
        [EXAMPLES / "java" / "build.sh"], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr
    return [str(EXAMPLES / "java" / "run.sh")]


def run(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    # This checkout's SDK for the Python example, whatever the environment installed.
    path = os.pathsep.join(
        filter(None, [str(REPOSITORY / "sdk/python"), os.environ.get("PYTHONPATH")])
    )
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": path},
    )


def verify_and_query(command: list[str], served: Served) -> list[str]:
    acme = company(1)
    result = run(
        command,
        str(served.bundle),
        served.address,
        COMPANIES.resource_code,
        f"tyshxydm={acme['tyshxydm']}",
        f"dwmc={acme['dwmc']}",
        "djzt=注销",
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


EXPECTED_VERIFY = [
    "verify found=true all_match=false",
    "verify dwmc MATCH_RESULT_MATCH",
    "verify djzt MATCH_RESULT_MISMATCH",
]


def check(lines: list[str]) -> None:
    verify = [line for line in lines if line.startswith("verify ")]
    assert verify[0] == EXPECTED_VERIFY[0] and sorted(verify) == sorted(EXPECTED_VERIFY)
    # The record, masked where the caller has no clear text (法定代表人: 王*).
    assert lines[-2:] == [
        f"query djzt=存续 dwmc={company(1)['dwmc']} fddbr=王* tyshxydm={company(1)['tyshxydm']}",
        "query rows=1",
    ]


def refused(command: list[str], served: Served) -> str:
    """人口基础信息 is 有条件共享 and the caller has no grant: the refusal as printed."""
    result = run(
        command, str(served.bundle), served.address, PEOPLE.resource_code, "gmsfhm=1", "xm=张三"
    )
    assert result.returncode == 1, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stderr.strip().splitlines()[-1]


REFUSAL = re.compile(
    r"refused PERMISSION_DENIED: .*"
    + re.escape(PEOPLE.resource_code)
    + r".* \(request id [0-9a-f]{32}\)"
)


def test_the_python_example(served: Served) -> None:
    check(verify_and_query(python_example(), served))
    assert REFUSAL.fullmatch(refused(python_example(), served))


def test_the_node_example_with_grpc_js(served: Served) -> None:
    lines = verify_and_query(node_example(), served)
    check(lines)
    assert lines == verify_and_query(python_example(), served)
    assert REFUSAL.fullmatch(refused(node_example(), served))


def test_the_java_example_with_grpc_java(served: Served, java_example: list[str]) -> None:
    lines = verify_and_query(java_example, served)
    check(lines)
    assert lines == verify_and_query(python_example(), served)
    assert REFUSAL.fullmatch(refused(java_example, served))


# --- the SDK's guide: every snippet of sdk/python/README.md runs ------------------------------

GUIDE = REPOSITORY / "sdk" / "python" / "README.md"


def guide_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)


def test_every_snippet_of_the_sdk_guide_runs(served: Served) -> None:
    """The first snippet is a program (run as one, against the served node); each other one
    runs as the body of a coroutine given ``gn`` (a provider's client) and ``request``."""
    program, *fragments = guide_snippets()
    assert "asyncio.run(main())" in program and len(fragments) >= 6
    program = program.replace('"fzga/"', repr(str(served.provider)))
    program = program.replace('"node.fz.example:7443"', repr(served.address))
    result = run([sys.executable, "-c", program])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == COMPANIES.name

    async def body() -> None:
        from govnode.v1 import sharing_pb2

        request = sharing_pb2.VerifyRequest(
            resource_code=COMPANIES.resource_code, key={"tyshxydm": company(1)["tyshxydm"]}
        )
        async with Client.from_bundle(served.provider, endpoint=served.address) as gn:
            for n, fragment in enumerate(fragments):
                source = "async def snippet(gn, request):\n" + textwrap.indent(fragment, "    ")
                scope: dict[str, object] = {}
                exec(compile(source, f"{GUIDE}:snippet {n + 2}", "exec"), scope)
                await scope["snippet"](gn, request)  # type: ignore[operator]

    asyncio.run(body())
