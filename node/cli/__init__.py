"""The ``govnode`` command line: one module per command group.

User errors print one clear line and exit with status 2; nothing prints a traceback unless
GOVNODE_DEBUG=1 is set.
"""

from __future__ import annotations

import os
import sys

# gRPC core logs every refused TLS handshake at INFO on stderr; an operator's terminal (and
# the demo, which shows refusals on purpose) wants errors only. GRPC_VERBOSITY set by the
# operator wins. Set before anything starts gRPC.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import typer

_HELP = (
    "govnode: the node software of a province's government data sharing platform "
    "(福建省政务数据管理办法). Province and city nodes talk over mutual-TLS gRPC.\n\n"
    "Start with `govnode demo`, or `govnode init province --help`."
)


def _group(name: str, *extra: str) -> Callable[[typer.Typer], None]:
    """The command group ``name`` (node.cli.<name>'s ``app``), with the commands the modules
    ``extra`` add to it (their ``register``)."""

    def add(root: typer.Typer) -> None:
        group = _module(name).app
        for module in extra:
            _module(module).register(group)
        root.add_typer(group, name=name)

    return add


def _commands(module: str) -> Callable[[typer.Typer], None]:
    """The top-level commands node.cli.<module> adds (its ``register``)."""
    return lambda root: _module(module).register(root)


def _module(name: str) -> Any:
    module: ModuleType = importlib.import_module(f"node.cli.{name}")
    return module


_SERVE = _commands("serve")  # serve and health: one register() adds both

#: Each top-level command, and what adds it. A command line names one, and only its module
#: is imported: each imports what its commands need, which for most is much of the node, but
#: none needs all of it (about 0.5 s of the 1.4 s the whole set takes to import).
_COMMANDS: dict[str, Callable[[typer.Typer], None]] = {
    "init": _group("init"),
    "certs": _group("certs"),
    "agency": _group("agency"),
    "audit": _group("audit", "audit_archive"),
    "federation": _group("federation"),
    "conformance": _group("conformance"),
    "access": _group("access"),
    "changes": _group("changes"),
    "backup": _group("backup"),
    "maintenance": _group("maintenance"),
    "opendata": _group("opendata", "opendata_admin", "opendata_apps"),
    "portal": _group("portal"),
    "quality": _group("quality"),
    "supervision": _group("supervision"),
    "serve": _SERVE,
    "health": _SERVE,
    "demo": _commands("demo"),
    "join": lambda root: root.command("join")(_module("federation").join),
    "status": _commands("status"),
}


def _options(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help=(
            "Also print the node's log events (debug and up), on stderr. Without it a command "
            "prints only its output, and warnings and errors; `govnode serve` logs at its "
            "configured log.level."
        ),
    ),
) -> None:
    from node.cli._common import set_verbose

    set_verbose(verbose)


def build_app(command: str | None = None) -> typer.Typer:
    """The ``govnode`` application: every command, or only ``command`` (one of the top-level
    commands) when a command line names it."""
    root = typer.Typer(
        name="govnode",
        help=_HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    root.callback()(_options)
    if command in _COMMANDS:
        _COMMANDS[command](root)
        return root
    for add in dict.fromkeys(_COMMANDS.values()):  # each once (serve and health share one)
        add(root)
    return root


_WHOLE: list[typer.Typer] = []


def __getattr__(name: str) -> Any:
    """``node.cli.app``: the whole application (built on first use, for in-process callers)."""
    if name == "app":
        if not _WHOLE:
            _WHOLE.append(build_app())
        return _WHOLE[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_VERBOSE = ("--verbose", "-v")


def global_options_first(args: list[str]) -> list[str]:
    """``args`` with --verbose/-v moved before the command: it is a global option, and
    operators tend to add it at the end of the command line (up to a lone ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    head = args[:end]
    flags = [a for a in head if a in _VERBOSE]
    return flags[:1] + [a for a in head if a not in _VERBOSE] + args[end:]


def main() -> None:
    from node.cli._common import UserError, describe_error

    try:
        args = global_options_first(sys.argv[1:])
        named = next((a for a in args if not a.startswith("-")), None)
        if named is not None and named not in _COMMANDS:
            # Click would quote the whole name, however long (a 100,000-character argument
            # made a 100,000-character message): a short prefix, as every refusal quotes.
            from gateway.quote import quote

            print(
                f"error: no such command {quote(named)}; the commands are "
                f"{', '.join(_COMMANDS)} (govnode --help)",
                file=sys.stderr,
            )
            sys.exit(2)
        build_app(named)(args=args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("GOVNODE_DEBUG") == "1":
            raise
        message = describe_error(exc)
        if message is None:
            message = f"unexpected {type(exc).__name__}: {exc} (set GOVNODE_DEBUG=1 for details)"
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, UserError) or message else 1)
