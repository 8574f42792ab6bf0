"""The import rules of the layout (scripts/check_layers.py, run by `make layers` and `make check`):
the real tree keeps them, and a small tree that breaks one is refused with a line naming it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType


def repository_root() -> Path:
    """The directory with pyproject.toml above this file (wherever the test file moves to)."""
    here = Path(__file__).resolve().parent
    return next(d for d in (here, *here.parents) if (d / "pyproject.toml").is_file())


CHECKER = repository_root() / "scripts" / "check_layers.py"


def check(root: Path | None = None) -> tuple[int, list[str]]:
    """Run the checker as `make layers` does; its exit code and the lines it printed."""
    args = [] if root is None else [str(root)]
    result = subprocess.run(
        [sys.executable, str(CHECKER), *args], capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout.splitlines()


def tree(root: Path, files: dict[str, str]) -> Path:
    """A small source tree: each path gets its text, and every package directory on the way an
    empty ``__init__.py`` unless the files give it one."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for name in files:
        parent = (root / name).parent
        while parent != root:
            (parent / "__init__.py").touch(exist_ok=True)
            parent = parent.parent
    return root


def test_the_repository_keeps_the_rules() -> None:
    code, lines = check()
    assert lines == []
    assert code == 0


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proto/govnode/v1/common_pb2.py": "",
            "gateway/identity.py": "from govnode.v1 import common_pb2\n",
            "conformance/runner.py": "import gateway.identity\n",
            "node/catalog/__init__.py": """\
                from node.catalog._registry import Catalog

                __all__ = ["Catalog"]
                """,
            "node/catalog/_registry.py": "from ._types import Entry\nclass Catalog: ...\n",
            "node/catalog/_types.py": "class Entry: ...\n",
            "node/federation/_sync.py": "from node.catalog import Catalog\nimport gateway\n",
            "node/cli/serve.py": "import grpc\nimport conformance.runner\nfrom node import app",
            "node/app.py": "from node.catalog import Catalog\n",
            "bench/run.py": "from node.catalog import Catalog\nimport conformance.runner\n",
        },
    )
    assert check(root) == (0, [])


def test_layers_point_one_way(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proto/govnode/v1/common_pb2.py": "import gateway\n",
            "gateway/auth.py": """\
                def peer():
                    from node.catalog import Catalog
                    return Catalog
                """,
            "conformance/cases.py": "import node.app\nfrom gateway import auth\n",
            "node/app.py": "",
            "node/catalog/__init__.py": "import conformance.cases\n",
            "node/cli/run.py": "import conformance.cases\nimport bench\n",
            "bench/__init__.py": "",
        },
    )
    code, lines = check(root)
    assert code == 1
    assert lines == [
        "conformance/cases.py:1: layers: conformance.cases imports node.app",
        "gateway/auth.py:2: layers: gateway.auth imports node.catalog.Catalog",
        "node/catalog/__init__.py:1: layers: node.catalog imports conformance.cases"
        " (only node.cli, node.demo, node.approval use the suite)",
        "node/cli/run.py:2: layers: node.cli.run imports bench",
        "proto/govnode/v1/common_pb2.py:1: layers: govnode.v1.common_pb2 imports gateway",
    ]


def test_domain_packages_import_no_grpc_and_no_edges(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proto/govnode/v1/sharing_pb2_grpc.py": "",
            "node/servicers/status.py": "",
            "node/records/_store.py": """\
                from __future__ import annotations

                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from node.servicers import status


                def serve() -> None:
                    import grpc_health.v1
                    from govnode.v1 import sharing_pb2_grpc
                """,
            "node/pki/_ca.py": "import grpc\nfrom node import demo\n",
            "node/demo/__init__.py": "",
            # What the cli and the demo share is an edge too.
            "node/audit/_log.py": "from node.terminal import format_record\n",
            "node/terminal.py": "def format_record() -> None: ...\n",
            # The edges themselves may use gRPC.
            "node/clients/_join.py": "import grpc\n",
        },
    )
    code, lines = check(root)
    assert code == 1
    assert lines == [
        "node/audit/_log.py:1: domain: node.audit._log imports node.terminal.format_record",
        "node/pki/_ca.py:1: domain: node.pki._ca imports grpc",
        "node/pki/_ca.py:2: domain: node.pki._ca imports node.demo",
        "node/records/_store.py:6: domain: node.records._store imports node.servicers.status",
        "node/records/_store.py:10: domain: node.records._store imports grpc_health.v1",
        "node/records/_store.py:11: domain: node.records._store imports"
        " govnode.v1.sharing_pb2_grpc",
    ]


def test_other_packages_import_only_the_public_face(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "node/catalog/__init__.py": """\
                from node.catalog._registry import Catalog, store_entry_row

                __all__ = ["Catalog", "store_entry_row"]
                """,
            # Inside the package, private modules and names are fine, relative or absolute.
            "node/catalog/_registry.py": """\
                from node.catalog._types import _columns
                from ._types import Entry

                class Catalog: ...
                def store_entry_row() -> None: ...
                def _helper() -> None: ...
                """,
            "node/catalog/_types.py": "class Entry: ...\ndef _columns() -> None: ...\n",
            "node/federation/_sync.py": """\
                from node.catalog import Catalog, store_entry_row
                from node.catalog._registry import store_entry_row as again
                from node.catalog import _types
                import node.catalog._types
                from node.catalog import Entry
                """,
            "gateway/quote.py": "def _clip() -> None: ...\n",
            "node/audit/_log.py": """\
                def log():
                    from gateway.quote import _clip
                """,
            "bench/load.py": "from node.catalog._registry import Catalog\n",
            # An __all__ that is computed cannot be read without running it: any public name.
            "node/pki/__init__.py": """\
                from node.pki._ca import Authority

                __all__ = [name for name in dir() if not name.startswith("_")]
                """,
            "node/pki/_ca.py": "class Authority: ...\n",
            "node/records/_store.py": "from node.pki import Authority, annotations\n",
        },
    )
    code, lines = check(root)
    assert code == 1
    assert lines == [
        "bench/load.py:1: public: bench.load imports node.catalog._registry.Catalog"
        " (private to node.catalog)",
        "node/audit/_log.py:2: public: node.audit._log imports gateway.quote._clip"
        " (private to gateway)",
        "node/federation/_sync.py:2: public: node.federation._sync imports node.catalog._registry"
        ".store_entry_row (private to node.catalog)",
        "node/federation/_sync.py:3: public: node.federation._sync imports node.catalog._types"
        " (private to node.catalog)",
        "node/federation/_sync.py:4: public: node.federation._sync imports node.catalog._types"
        " (private to node.catalog)",
        "node/federation/_sync.py:5: public: node.federation._sync imports node.catalog.Entry"
        " (not in node.catalog.__all__)",
    ]


def test_no_cycles_between_nodes_packages(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "node/cli/demo.py": """\
                def demo():
                    from node.demo import run_demo
                """,
            "node/demo/__init__.py": "from node.demo._main import run_demo\n",
            "node/demo/_main.py": "from node.terminal import lines\ndef run_demo(): ...\n",
            "node/terminal.py": "from node.cli import status\ndef lines(): ...\n",
            "node/cli/status.py": "",
            # Within a package modules may import each other both ways.
            "node/records/_a.py": "from node.records import _b\n",
            "node/records/_b.py": "from node.records import _a\n",
        },
    )
    code, lines = check(root)
    assert code == 1
    assert lines == [
        "node/cli/demo.py:2: cycles: node.cli -> node.demo -> node.terminal -> node.cli"
        " (node/cli/demo.py:2 node.cli.demo imports node.demo.run_demo;"
        " node/demo/_main.py:1 node.demo._main imports node.terminal.lines;"
        " node/terminal.py:1 node.terminal imports node.cli.status)",
    ]


def load_checker() -> ModuleType:
    """scripts/check_layers.py as a module, to call its check() with an allow-list of our own."""
    spec = importlib.util.spec_from_file_location("check_layers", CHECKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_an_allowed_exception_is_removed_once_it_is_gone(tmp_path: Path) -> None:
    # An ALLOWED entry lets one import break a rule until it is gone (the real list is empty
    # now: node.governance._changes paged with node.sharing._applications' private helpers
    # until they moved to node.paging); once the import is gone, the entry itself is reported.
    checker = load_checker()
    reason = "change requests page like applications until the helpers move"
    allowed = {
        ("public", "node.governance._changes", "node.sharing._applications._page"): reason,
        ("public", "node.governance._changes", "node.sharing._applications._token"): reason,
    }

    def lines(root: Path) -> list[str]:
        return [str(v) for v in checker.check(root, allowed)]

    private_import = "from node.sharing._applications import _page, _token\n"
    root = tree(
        tmp_path,
        {
            "node/sharing/_applications.py": "def _page(): ...\ndef _token(): ...\n",
            "node/governance/_changes.py": private_import,
        },
    )
    assert lines(root) == []
    # Without the allowance, the same tree breaks the public-face rule.
    assert [v.rule for v in checker.check(root, {})] == ["public", "public"]

    (root / "node/governance/_changes.py").write_text("from node import paging\n")
    (root / "node/paging.py").write_text("")
    assert [line.split(" (")[0] for line in lines(root)] == [
        "node/governance/_changes.py:1: allowed: node.governance._changes no longer imports"
        " node.sharing._applications._page against public: remove its entry from ALLOWED in"
        " scripts/check_layers.py",
        "node/governance/_changes.py:1: allowed: node.governance._changes no longer imports"
        " node.sharing._applications._token against public: remove its entry from ALLOWED in"
        " scripts/check_layers.py",
    ]
