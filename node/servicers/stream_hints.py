"""How a consumer resumes a stream the node ended because it was not read (gateway.streams).

Each hint gets the message whose write was waiting when the stream stalled: it reaches a
consumer that reads again, just before the ABORTED status, so it is the last message that
consumer has, and the hint can name the position right after it.
"""

from __future__ import annotations

from typing import Any

from gateway.streams import ResumeHint


def _subscribe(change: Any) -> str:
    return (
        f"subscribe again with after_sequence={change.sequence} (the last change sent) to "
        "resume with no gap and no duplicate"
    )


def _exchange(chunk: Any) -> str:
    return (
        "call Exchange again with the same request and the resume_token of the last chunk "
        "received to resume with nothing missing or repeated"
    )


def _notifications(notice: Any) -> str:
    return f"watch again with after_id={notice.id} (the last notification sent)"


def _catalog(change: Any) -> str:
    return f"watch again with after_sequence={change.sequence} (the last change sent)"


def _snapshot(part: Any) -> str:
    return "call GetCatalogSnapshot again (a snapshot is taken whole, from its start)"


def _submit(ack: Any) -> str:
    return (
        "read the acknowledgements, then resend on a new stream every batch not acknowledged "
        "(a batch_id is never applied twice)"
    )


def _compare(result: Any) -> str:
    return "call Compare again (for the records whose results were not received)"


def _usage(message: Any) -> str:
    if message.WhichOneof("message") == "statement":
        last = message.statement.last_sequence
        return (
            f"call StreamUsageLog again with after_sequence={last} and statement_after={last} "
            "(the end of the last statement sent) to resume with no gap and no duplicate"
        )
    return (
        f"call StreamUsageLog again with after_sequence={message.record.record.sequence} (the "
        "last record sent) and statement_after = the last_sequence of the last statement you "
        "received, to resume with no gap and no duplicate"
    )


RESUME_HINTS: dict[str, ResumeHint] = {
    "/govnode.v1.AuditService/StreamUsageLog": _usage,
    "/govnode.v1.SharingService/Subscribe": _subscribe,
    "/govnode.v1.SharingService/Exchange": _exchange,
    "/govnode.v1.SharingService/Submit": _submit,
    "/govnode.v1.SharingService/Compare": _compare,
    "/govnode.v1.AccessService/WatchNotifications": _notifications,
    "/govnode.v1.CatalogService/WatchCatalog": _catalog,
    "/govnode.v1.FederationService/GetCatalogSnapshot": _snapshot,
}
