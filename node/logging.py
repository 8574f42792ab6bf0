"""Structured logs: key-value events, JSON in production, readable on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO, cast

import structlog

from gateway.tracing import log_ids


def add_trace_ids(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """``trace_id`` and ``span_id`` on every line written while a span is current (a call the
    node serves, traced or continuing a caller's trace), so a log line leads to its trace."""
    event.update(log_ids())
    return event


class _Stderr:
    """sys.stderr as it is when an event is written, not when logging was configured: a
    command run in-process (a test runner swaps sys.stderr for the run and closes it after)
    must not leave the process logging to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info"
) -> None:
    """Configure structlog once per process.

    ``auto`` renders for people when stderr is a terminal and as JSON lines otherwise, so the
    same binary logs well under systemd, in Docker and in an operator's shell.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )
