"""The agency SDK as a distribution of its own: `pip wheel sdk/python` builds govnode-client,
which carries the generated govnode.v1 messages and imports without the node's packages."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
#: What only the node needs: none of it may be imported by the SDK.
SERVER_ONLY = ("node", "gateway", "conformance", "portal", "sqlalchemy", "typer", "structlog")


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    # Without PYTHONPATH: what is imported comes from the venv and the wheel in it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_sdk_wheel_imports_without_the_server_package(tmp_path: Path) -> None:
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "--quiet"]
    # Offline, as the node's own wheel is built (hatchling is a dev dependency).
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, REPOSITORY / "sdk/python")
    [wheel] = dist.glob("govnode_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "govnode_client/__init__.py" in names and "govnode/v1/sharing_pb2.py" in names
    assert not [n for n in names if n.split("/")[0] in SERVER_ONLY]
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = [
        line.split(" ", 1)[1]
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert sorted(r.split(">")[0] for r in requires) == ["grpcio", "grpcio-status", "protobuf"]
    # A venv with only the wheel; grpcio and protobuf come from this interpreter's
    # site-packages as a plain path (its .pth files, the editable checkout's among them, are
    # not read), so no govnode file comes from the checkout.
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    )
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    check = (
        "import sys, govnode_client, govnode.v1.sharing_pb2 as s\n"
        "from govnode_client import Client, errors\n"
        "print(govnode_client.__file__)\n"
        "print(s.__file__)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(SERVER_ONLY)!r}))\n"
    )
    sdk_file, stubs_file, server = _run(python, "-c", check, cwd=tmp_path).splitlines()
    assert Path(sdk_file).is_relative_to(site) and Path(stubs_file).is_relative_to(site)
    assert server == "[]"
