"""Generate the govnode.v1 stubs from proto/govnode/v1/*.proto, or check they have not drifted.

    python scripts/gen_protos.py            regenerate the committed stubs in place
    python scripts/gen_protos.py --check    exit 1, listing every stub that differs from a fresh
                                            generation (or is missing or extra); 0 otherwise

Stubs are generated next to their .proto files (`-I proto`, so they import each other as
`from govnode.v1 import common_pb2`): *_pb2.py by protoc, *_pb2_grpc.py by the gRPC plugin, and
their *.pyi type stubs by mypy-protobuf. Everything runs in-process through grpc_tools.protoc
(mypy-protobuf's plugins are run from the interpreter's own bin directory), so the output
depends only on the .proto sources and the pinned tool versions, never on a system protoc.
Generation always goes to a scratch directory first: a failed run leaves the tree untouched.
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]  # ships no type information

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROTO_ROOT = REPO_ROOT / "proto"
# The package the stubs live in, relative to the proto root (the import path govnode.v1).
PACKAGE = Path("govnode") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# Plugins mypy-protobuf installs as console scripts; "quiet" stops them printing each file.
PLUGINS = {"mypy": "protoc-gen-mypy", "mypy_grpc": "protoc-gen-mypy_grpc"}


class GenerationError(Exception):
    """protoc or a plugin failed; protoc has already printed why on stderr."""


def proto_sources(proto_root: Path) -> list[Path]:
    """The .proto files of the package, relative to proto_root, in a stable order."""
    return sorted(p.relative_to(proto_root) for p in (proto_root / PACKAGE).glob("*.proto"))


def _plugin(executable: str) -> Path:
    # Next to sys.executable, unresolved: in a venv that is .venv/bin, where pip put the
    # plugin; resolving the symlink would lead to the base interpreter's directory instead.
    candidate = Path(sys.executable).parent / executable
    if candidate.is_file():
        return candidate
    found = shutil.which(executable)
    if found is None:
        raise GenerationError(
            f"{executable} not found next to {sys.executable} or on PATH; "
            "install the dev extra (mypy-protobuf)"
        )
    return Path(found)


def generate(proto_root: Path, out_dir: Path) -> None:
    """Run protoc and its plugins over every .proto under proto_root, writing into out_dir."""
    sources = proto_sources(proto_root)
    if not sources:
        raise GenerationError(f"no .proto files in {proto_root / PACKAGE}")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *(f"--plugin={name}={_plugin(name)}" for name in PLUGINS.values()),
        *(source.as_posix() for source in sources),
    ]
    status = int(protoc.main(args))
    if status != 0:
        raise GenerationError(f"protoc failed with exit status {status}")


def generated_files(root: Path) -> dict[str, bytes]:
    """Generated stubs under root's package directory: path relative to root -> content."""
    package_dir = root / PACKAGE
    if not package_dir.is_dir():
        return {}
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(package_dir.iterdir())
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def drift(expected: dict[str, bytes], actual: dict[str, bytes]) -> list[str]:
    """One line per stub that a fresh generation would change, sorted by path."""
    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            problems.append(f"missing: {name}")
        elif name not in expected:
            problems.append(f"extra: {name}")
        elif expected[name] != actual[name]:
            problems.append(f"differs: {name}")
    return problems


def fresh_stubs(proto_root: Path) -> dict[str, bytes]:
    """What the stubs should be for the .proto files under proto_root."""
    with tempfile.TemporaryDirectory(prefix="govnode-protos-") as scratch:
        generate(proto_root, Path(scratch))
        return generated_files(Path(scratch))


def write_stubs(proto_root: Path, stubs: dict[str, bytes]) -> list[str]:
    """Make the stubs under proto_root exactly `stubs`; returns what changed, one line each."""
    current = generated_files(proto_root)
    changes = []
    for name in sorted(current.keys() | stubs.keys()):
        if name not in stubs:
            (proto_root / name).unlink()
            changes.append(f"removed: {name}")
        elif current.get(name) != stubs[name]:
            (proto_root / name).write_bytes(stubs[name])
            changes.append(f"wrote: {name}")
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 listing every stub that drifted from the .proto sources",
    )
    parser.add_argument(
        "--proto-root",
        type=Path,
        default=DEFAULT_PROTO_ROOT,
        help="the -I root holding govnode/v1/*.proto and its stubs (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    proto_root: Path = args.proto_root.resolve()

    try:
        stubs = fresh_stubs(proto_root)
    except GenerationError as exc:
        print(f"gen_protos: {exc}", file=sys.stderr)
        return 2

    if args.check:
        problems = drift(stubs, generated_files(proto_root))
        if problems:
            print(
                f"gen_protos: generated stubs under {proto_root} are out of date "
                "(run `python scripts/gen_protos.py`):",
                file=sys.stderr,
            )
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(f"gen_protos: {len(stubs)} stubs up to date")
        return 0

    changes = write_stubs(proto_root, stubs)
    for line in changes:
        print(line)
    print(f"gen_protos: {len(stubs)} stubs generated, {len(changes)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
