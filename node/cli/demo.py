"""``govnode demo``."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import typer

from node.cli._common import UserError, log_level
from node.logging import configure_logging


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        keep_running: bool = typer.Option(
            False, "--keep-running", help="Leave the node running for exploration (Ctrl-C ends)."
        ),
        dir: Path | None = typer.Option(
            None, "--dir", help="Work in this empty directory and keep it (default: a temp dir)."
        ),
    ) -> None:
        """Run a province node on loopback with fresh PKI and the example catalog."""
        from node.demo import run_demo

        configure_logging("console", log_level("error"))
        if dir is not None and dir.exists() and any(dir.iterdir()):
            raise UserError(f"--dir {dir} is not empty")
        base = dir or Path(tempfile.mkdtemp(prefix="govnode-demo-"))
        try:
            asyncio.run(run_demo(base, keep_running=keep_running))
        except KeyboardInterrupt:
            pass
        finally:
            if dir is None:
                shutil.rmtree(base, ignore_errors=True)
