"""The node's audit sink: what each RPC means under 第三十九条, written to the audit log."""

from __future__ import annotations

import datetime as dt

from gateway.audit import CallRecord
from node.audit._log import AuditEntry, AuditLog, Operation

_OPERATIONS: dict[str, Operation] = {
    "CatalogService/RegisterResource": Operation.MAINTAIN,
    "CatalogService/UpdateResource": Operation.MAINTAIN,
    "CatalogService/WithdrawResource": Operation.MAINTAIN,
    "SharingService/Submit": Operation.AGGREGATE,
    "SharingService/Verify": Operation.COMPARE,
    "SharingService/Compare": Operation.COMPARE,
    "SharingService/Query": Operation.QUERY,
    "SharingService/GetRecordHistory": Operation.QUERY,
    "SharingService/Exchange": Operation.SHARE,
    "SharingService/Subscribe": Operation.SHARE,
    "OpenDataService/Download": Operation.DOWNLOAD,
    "OpenDataService/QueryOpenRows": Operation.QUERY,
    "QualityService/GetQualityReport": Operation.ANALYZE,
    "SupervisionService/GetComplianceReport": Operation.ANALYZE,
    "AccessService/ReviewApplication": Operation.MAINTAIN,
    "AccessService/RevokeGrant": Operation.MAINTAIN,
    "AccessService/RequestRecordChange": Operation.MAINTAIN,
    "AccessService/ReviewChangeRequest": Operation.MAINTAIN,
    "OpenDataService/ReviewOpenApplication": Operation.MAINTAIN,
    "OpenDataService/RevokeOpenKey": Operation.MAINTAIN,
    "SupervisionService/IssueRectificationNotice": Operation.MAINTAIN,
}


def operation_of(method: str) -> Operation:
    """汇聚, 共享, 查询, 比对, 下载, 分析, 更新维护; anything else is 访问 (ACCESS)."""
    # "/govnode.v1.SharingService/Verify" -> "SharingService/Verify"
    short = method.rsplit(".", 1)[-1]
    return _OPERATIONS.get(short, Operation.ACCESS)


class NodeAuditSink:
    def __init__(self, log: AuditLog) -> None:
        self._log = log

    async def record(self, call: CallRecord) -> None:
        await self._log.append(
            AuditEntry(
                caller=call.caller,
                origin_node=call.origin_node,
                method=call.method,
                operation=operation_of(call.method),
                resource_code=call.resource_code,
                outcome=call.outcome,
                message=call.message,
                request_digest=call.request_digest,
                request_id=call.request_id,
                detail=dict(call.detail),
                at=dt.datetime.now(dt.UTC),
            )
        )
