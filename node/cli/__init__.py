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

import typer

from node.cli import (
    access,
    agency,
    audit,
    audit_archive,
    backup,
    certs,
    changes,
    conformance,
    demo,
    federation,
    init,
    maintenance,
    opendata,
    opendata_admin,
    opendata_apps,
    portal,
    quality,
    serve,
    status,
    supervision,
)

app = typer.Typer(
    name="govnode",
    help=(
        "govnode: the node software of a province's government data sharing platform "
        "(福建省政务数据管理办法). Province and city nodes talk over mutual-TLS gRPC.\n\n"
        "Start with `govnode demo`, or `govnode init province --help`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
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


app.add_typer(init.app, name="init")
app.add_typer(certs.app, name="certs")
app.add_typer(agency.app, name="agency")
audit_archive.register(audit.app)
app.add_typer(audit.app, name="audit")
app.add_typer(federation.app, name="federation")
app.add_typer(conformance.app, name="conformance")
app.add_typer(access.app, name="access")
app.add_typer(changes.app, name="changes")
app.add_typer(backup.app, name="backup")
app.add_typer(maintenance.app, name="maintenance")
opendata_admin.register(opendata.app)
opendata_apps.register(opendata.app)
app.add_typer(opendata.app, name="opendata")
app.add_typer(portal.app, name="portal")
app.add_typer(quality.app, name="quality")
app.add_typer(supervision.app, name="supervision")
serve.register(app)
demo.register(app)
federation.register(app)
status.register(app)


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
        app(args=global_options_first(sys.argv[1:]))
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
