"""A process that has imported the govnode command once and forks a child for each command a
test runs, so that each run does not pay the second or so of imports again.

Each command still runs in a process of its own: the child takes the test's arguments,
environment and working directory, writes to files of the test's as its standard output and
error, reads nothing from standard input, and ends as the ``govnode`` process would (its exit
status, atexit handlers, threads joined). Only the imports are shared, made before any command
ran: the zygote starts no thread, opens no connection and reads no configuration. This is how
``multiprocessing``'s forkserver starts its workers.

Protocol, one JSON object a line: a request ``{"args", "env", "cwd", "stdout", "stderr"}`` on
the zygote's standard input; the replies ``{"pid": N}`` once the child is forked, then
``{"status": N}`` when it has ended (its exit status, or minus the signal that ended it).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

#: Imported before the first fork: every command module (node.cli.build_app) and what the
#: commands import as they run.
WARM = (
    "node.app",
    "node.approval",
    "node.demo",
    "conformance.runner",
    "portal.app",
)


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the command's process and run it; never returns."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.close(devnull)
    sys.argv = ["govnode", *request["args"]]
    from node.cli import main

    main()
    sys.exit(0)


def serve() -> None:
    from node.cli import build_app

    build_app()
    for name in WARM:
        importlib.import_module(name)
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        replies.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)  # ends the child's interpreter as a govnode process would end
        print(json.dumps({"pid": pid}), file=replies, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), file=replies, flush=True)


if __name__ == "__main__":
    serve()
