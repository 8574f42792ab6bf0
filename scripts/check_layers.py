"""Check the import rules of the layout (README, Layout) over every import in the source tree.

    python scripts/check_layers.py [ROOT]   one line per violation, ``file:line: rule: what``,
                                            and exit 1; exit 0 when the tree keeps the rules

Every ``import`` and ``from ... import`` counts: at module level, inside functions, and under
``if TYPE_CHECKING:`` (a type-only import still ties the layers together). The rules:

- ``layers``: proto <- gateway <- node, proto <- gateway <- conformance and proto <- gateway
  <- portal; proto <- govnode_client (the agency SDK, sdk/python), which nothing but tests,
  bench and the examples imports; bench sits on top of all of them and nothing imports it.
  Inside node, only the edges that put the suite and the node together (``node.cli``,
  ``node.demo``) import conformance, and only ``node.cli`` and ``node.demo`` import the portal.
- ``domain``: node's domain packages import no grpc (nor grpc_health, generated ``*_pb2_grpc``
  ...) and none of the edges: servicers, cli, app, demo, clients, and what the cli and the
  demo share (approval, terminal).
- ``public``: from outside a package, only its public face: never a ``_private`` module or
  name, and from a package whose ``__init__`` declares ``__all__``, only the names in it.
- ``cycles``: no import cycle between node's packages (each top-level module of node counts
  as a package of its own).

Only the standard library is used, so the check runs before anything is installed. Why not
import-linter: the public-face rule (private modules, ``__all__``, "fine inside the package")
is a few lines of ast here and not a contract import-linter has.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Where the modules live: a directory relative to the repository root, and its import name.
SOURCES = (
    ("proto/govnode", "govnode"),
    ("gateway", "gateway"),
    ("conformance", "conformance"),
    ("portal", "portal"),
    ("node", "node"),
    ("bench", "bench"),
    ("sdk/python/govnode_client", "govnode_client"),
)
# The top-level packages each one may import, besides itself (third-party imports are free).
LAYERS: dict[str, frozenset[str]] = {
    "govnode": frozenset(),
    "gateway": frozenset({"govnode"}),
    "conformance": frozenset({"govnode", "gateway"}),
    "portal": frozenset({"govnode", "gateway"}),
    "node": frozenset({"govnode", "gateway", "conformance", "portal"}),
    "bench": frozenset({"govnode", "gateway", "conformance", "portal", "node", "govnode_client"}),
    # The agency SDK: a distribution of its own, on the generated messages alone; nothing of
    # the node imports it (only tests, bench and the examples).
    "govnode_client": frozenset({"govnode"}),
}
# Inside node, the edges that may import the conformance suite.
CONFORMANCE_USERS = ("node.cli", "node.demo", "node.approval")
# Inside node, the edges that start the portal (its own process) or drive it in the demo.
PORTAL_USERS = ("node.cli", "node.demo")
DOMAIN = tuple(
    f"node.{name}"
    for name in (
        "catalog",
        "records",
        "sharing",
        "governance",
        "audit",
        "federation",
        "pki",
        "tlog",
        "backup",
        "opendata",
        "supervision",
        "quality",
    )
)
# What a domain package never imports: gRPC itself, and the edges of node that use gRPC or
# put the node together.
GRPC = ("grpc", "grpc_health", "grpc_reflection", "grpc_status", "grpc_tools")
EDGES = (
    "node.servicers",
    "node.cli",
    "node.app",
    "node.demo",
    "node.clients",
    # What the cli and the demo share (neither may import the other).
    "node.approval",
    "node.terminal",
    # The node's metrics, their listener and the samplers that read the domain for them.
    "node.ops",
    "node.console",
)

# Exceptions that exist today, each with the reason and who removes it:
# (rule, importing module, imported module or module.name) -> reason.
# An entry that no longer matches an import of a module that still exists is reported, so the
# list only shrinks.
ALLOWED: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path  # relative to the root
    is_package: bool


@dataclass(frozen=True)
class Import:
    importer: Module
    line: int
    target: str  # the module imported (a package's name when names are imported from it)
    name: str | None  # the name imported from target, when it is not a submodule

    @property
    def what(self) -> str:
        return self.target if self.name is None else f"{self.target}.{self.name}"


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path.as_posix()}:{self.line}: {self.rule}: {self.message}"


def find_root(start: Path) -> Path:
    """The repository root: the nearest directory at or above start with a pyproject.toml."""
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory
    raise FileNotFoundError(f"no pyproject.toml at or above {start}")


def discover(root: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for directory, prefix in SOURCES:
        base = root / directory
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = [prefix, *path.relative_to(base).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            modules[name] = Module(name, path.relative_to(root), is_package)
    return modules


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def within_any(module: str, packages: Iterable[str]) -> bool:
    return any(within(module, package) for package in packages)


def is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def imports_of(module: Module, tree: ast.AST, modules: dict[str, Module]) -> Iterator[Import]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: from the importer's package, up level - 1 more.
                package = module.name.split(".")
                if not module.is_package:
                    package.pop()
                if node.level > 1:
                    package = package[: -(node.level - 1)]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    yield Import(module, node.lineno, submodule, None)
                else:
                    yield Import(module, node.lineno, base, alias.name)


def declared_all(tree: ast.Module) -> frozenset[str] | None:
    """The names in a module's ``__all__``, or None when it declares none that can be read
    without running it (then any public name may be imported from it)."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and value:
            try:
                names = ast.literal_eval(value)
            except ValueError:
                return None
            return frozenset(str(name) for name in names)
    return None


def check_import(
    imp: Import, modules: dict[str, Module], faces: dict[str, frozenset[str] | None]
) -> Iterator[tuple[str, str]]:
    """(rule, what) for each rule one import breaks."""
    importer, target = imp.importer.name, imp.target
    here, there = importer.split(".")[0], target.split(".")[0]
    says = f"{importer} imports {imp.what}"

    if there in LAYERS and there != here and there not in LAYERS[here]:
        yield "layers", says
    if here == "node" and there == "conformance" and not within_any(importer, CONFORMANCE_USERS):
        yield "layers", f"{says} (only {', '.join(CONFORMANCE_USERS)} use the suite)"
    if here == "node" and there == "portal" and not within_any(importer, PORTAL_USERS):
        yield "layers", f"{says} (only {', '.join(PORTAL_USERS)} start the portal)"

    if within_any(importer, DOMAIN) and (
        there in GRPC or target.endswith("_pb2_grpc") or within_any(target, EDGES)
    ):
        yield "domain", says

    if there in LAYERS and (why := behind_the_face(imp, modules, faces)):
        yield "public", f"{says} ({why})"


def behind_the_face(
    imp: Import, modules: dict[str, Module], faces: dict[str, frozenset[str] | None]
) -> str | None:
    """Why an import reaches behind the public face of another package, or None."""
    importer, target = imp.importer.name, imp.target
    parts = target.split(".")
    for index, part in enumerate(parts):
        owner = ".".join(parts[:index])
        if is_private(part) and not within(importer, owner):
            return f"private to {owner}"
    if imp.name is None or imp.name == "*":
        return None
    module = modules.get(target)
    is_package = module is None or module.is_package
    package = target if is_package else target.rpartition(".")[0]
    if within(importer, package):
        return None
    if is_private(imp.name):
        return f"private to {package}"
    face = faces.get(target) if is_package else None
    if face is not None and imp.name not in face:
        return f"not in {target}.__all__"
    return None


def unit(module: str) -> str | None:
    """The package of node a module belongs to, for the cycle rule (None: not in node)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "node" and len(parts) > 1 else None


def find_cycles(edges: dict[tuple[str, str], Import]) -> Iterator[list[str]]:
    """One cycle (a path that ends where it starts) per strongly connected group of packages."""
    graph: dict[str, set[str]] = {}
    for source, dest in edges:
        graph.setdefault(source, set()).add(dest)
        graph.setdefault(dest, set())

    # Tarjan's algorithm, iterative so a deep graph cannot hit the recursion limit.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            vertex, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[vertex] = min(low[vertex], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[vertex])
                if low[vertex] == index[vertex]:
                    group: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == vertex:
                            break
                    if len(group) > 1:
                        groups.append(group)

    for group in sorted(groups, key=min):
        yield shortest_cycle(graph, group)


def shortest_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way from the group's first package back to itself (breadth first)."""
    first = min(group)
    paths = {first: [first]}
    frontier = [first]
    while frontier:
        following: list[str] = []
        for vertex in frontier:
            for successor in sorted(graph[vertex] & group):
                if successor == first:
                    return [*paths[vertex], first]
                if successor not in paths:
                    paths[successor] = [*paths[vertex], successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{sorted(group)} is strongly connected, so it has a cycle")


def check(root: Path, allowed: dict[tuple[str, str, str], str] | None = None) -> list[Violation]:
    allowed = ALLOWED if allowed is None else allowed
    modules = discover(root)
    violations: list[Violation] = []
    used: set[tuple[str, str, str]] = set()
    edges: dict[tuple[str, str], Import] = {}
    trees: dict[str, ast.Module] = {}
    for module in modules.values():
        source = (root / module.path).read_text(encoding="utf-8")
        try:
            trees[module.name] = ast.parse(source, str(module.path))
        except SyntaxError as exc:
            violations.append(Violation(module.path, exc.lineno or 0, "syntax", str(exc.msg)))
    # What each package's __init__ offers to other packages.
    faces = {name: declared_all(tree) for name, tree in trees.items() if modules[name].is_package}

    for name, tree in trees.items():
        module = modules[name]
        for imp in imports_of(module, tree, modules):
            for rule, message in check_import(imp, modules, faces):
                key = (rule, module.name, imp.what)
                if key in allowed:
                    used.add(key)
                else:
                    violations.append(Violation(module.path, imp.line, rule, message))
            source_unit, dest_unit = unit(module.name), unit(imp.target)
            if source_unit and dest_unit and source_unit != dest_unit:
                edges.setdefault((source_unit, dest_unit), imp)

    for cycle in find_cycles(edges):
        first = edges[(cycle[0], cycle[1])]
        steps = "; ".join(
            f"{edges[pair].importer.path.as_posix()}:{edges[pair].line} "
            f"{edges[pair].importer.name} imports {edges[pair].what}"
            for pair in itertools.pairwise(cycle)
        )
        violations.append(
            Violation(first.importer.path, first.line, "cycles", f"{' -> '.join(cycle)} ({steps})")
        )

    for key, reason in allowed.items():
        rule, importer, what = key
        if key not in used and importer in modules:
            violations.append(
                Violation(
                    modules[importer].path,
                    1,
                    "allowed",
                    f"{importer} no longer imports {what} against {rule}: remove its entry"
                    f" from ALLOWED in scripts/check_layers.py ({reason})",
                )
            )
    return sorted(violations, key=lambda v: (v.path.as_posix(), v.line, v.rule, v.message))


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else find_root(Path(__file__).resolve().parent)
    violations = check(root)
    for violation in violations:
        print(violation)
    if violations:
        print(
            f"{len(violations)} import rule violation(s): see scripts/check_layers.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
