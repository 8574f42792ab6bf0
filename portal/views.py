"""What the public sees of the open catalog, as JSON-ready dicts: the REST API returns them and
the pages render them, so the two never disagree."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from govnode.v1 import common_pb2, opendata_pb2

OPEN_TYPES: dict[int, tuple[str, str]] = {
    common_pb2.OPEN_TYPE_UNIVERSAL: ("universal", "普遍开放"),
    common_pb2.OPEN_TYPE_AUTHORIZED: ("authorized", "授权开放"),
}
#: ?open_type= in the API -> the enum.
OPEN_TYPE_NAMES = {name: number for number, (name, _) in OPEN_TYPES.items()}

UPDATE_CYCLES = {
    common_pb2.UPDATE_CYCLE_REALTIME: "实时",
    common_pb2.UPDATE_CYCLE_DAILY: "每日",
    common_pb2.UPDATE_CYCLE_WEEKLY: "每周",
    common_pb2.UPDATE_CYCLE_MONTHLY: "每月",
    common_pb2.UPDATE_CYCLE_QUARTERLY: "每季度",
    common_pb2.UPDATE_CYCLE_YEARLY: "每年",
    common_pb2.UPDATE_CYCLE_IRREGULAR: "不定期",
}

DATA_TYPES = {
    common_pb2.DATA_TYPE_STRING: "string",
    common_pb2.DATA_TYPE_INTEGER: "integer",
    common_pb2.DATA_TYPE_DECIMAL: "decimal",
    common_pb2.DATA_TYPE_DATE: "date",
    common_pb2.DATA_TYPE_DATETIME: "datetime",
    common_pb2.DATA_TYPE_BOOLEAN: "boolean",
    common_pb2.DATA_TYPE_ENUM: "enum",
}

#: Download formats: path suffix -> (media type, what the page calls it).
FORMATS = {
    "csv": ("text/csv; charset=utf-8; header=present", "CSV"),
    "jsonl": ("application/jsonl; charset=utf-8", "JSON Lines"),
}


def treatment(open_: common_pb2.OpenTreatment) -> tuple[str, str]:
    """(machine name, 中文) of how an item was de-identified before opening (第二十九条)."""
    kind = open_.kind
    if kind == common_pb2.OPEN_TREATMENT_KIND_MASK:
        return "mask", f"脱敏（保留前 {open_.keep_first} 位、后 {open_.keep_last} 位）"
    if kind == common_pb2.OPEN_TREATMENT_KIND_PSEUDONYMIZE:
        return "pseudonymize", "假名化（同一版本内同一对象假名相同）"
    if kind == common_pb2.OPEN_TREATMENT_KIND_AS_STORED:
        return "as_stored", "原值"
    if kind == common_pb2.OPEN_TREATMENT_KIND_GENERALIZE:
        if open_.generalize == common_pb2.GENERALIZATION_MONTH:
            return "generalize_month", "泛化到月"
        if open_.generalize == common_pb2.GENERALIZATION_YEAR:
            return "generalize_year", "泛化到年"
        if open_.generalize == common_pb2.GENERALIZATION_PREFIX:
            return "generalize_prefix", f"泛化（保留前 {open_.prefix_length} 位）"
        return "generalize_range", f"泛化为区间（宽 {open_.range_width}）"
    return "drop", "不开放"


def dataset_path(code: str) -> str:
    return f"/dataset/{quote(code, safe='')}"


def api_path(code: str) -> str:
    return f"/api/v1/datasets/{quote(code, safe='')}"


def dataset_view(resource: opendata_pb2.OpenResource, base_url: str) -> dict[str, Any]:
    """One open dataset as the API returns it (and the pages show it)."""
    entry = resource.entry
    access, access_zh = OPEN_TYPES.get(entry.open_type, ("unknown", "未知"))
    api = api_path(entry.resource_code)
    universal = entry.open_type == common_pb2.OPEN_TYPE_UNIVERSAL
    return {
        "resource_code": entry.resource_code,
        "name": entry.name,
        "summary": entry.summary,
        "provider": {"name": entry.provider_name, "code": entry.provider_code},
        "region": entry.region,
        "open_type": access,
        "open_type_zh": access_zh,
        "open_conditions": entry.open_conditions,
        "update_cycle": UPDATE_CYCLES.get(entry.update_cycle, ""),
        "items": [
            {
                "name": item.name,
                "title": item.title,
                "data_type": DATA_TYPES.get(item.data_type, ""),
                "treatment": treatment(item.open)[0],
                "treatment_zh": treatment(item.open)[1],
            }
            for item in entry.items
        ],
        "version": resource.version,
        "rows": resource.rows,
        "source": resource.source,
        "acquired_at": resource.acquired_at.ToJsonString(),
        "dataset_iri": resource.dataset_iri,
        "page": base_url + dataset_path(entry.resource_code),
        "rows_api": base_url + api + "/rows",
        # 授权开放 downloads need a key (sent in the X-API-Key header), the links are the same.
        "downloads": {
            fmt: {
                "url": f"{base_url}{api}/data.{fmt}",
                "metadata": f"{base_url}{api}/data.{fmt}-metadata.json",
                "media_type": media.split(";")[0],
            }
            for fmt, (media, _) in FORMATS.items()
            if fmt in resource.formats
        },
        "needs_key": not universal,
        "cite": cite_text(resource),
    }


def cite_text(resource: opendata_pb2.OpenResource) -> str:
    """How to cite a dataset (第三十五条: 注明数据来源和获取日期)."""
    acquired = resource.acquired_at.ToDatetime().strftime("%Y-%m-%d")
    return (
        f"数据来源：{resource.source}；数据集 {resource.dataset_iri}，第 {resource.version} 版；"
        f"获取日期：{acquired}"
    )


def application_view(app: opendata_pb2.OpenApplication) -> dict[str, Any]:
    status = {
        opendata_pb2.OPEN_APPLICATION_STATUS_PENDING: ("pending", "待审核"),
        opendata_pb2.OPEN_APPLICATION_STATUS_APPROVED: ("approved", "已批准"),
        opendata_pb2.OPEN_APPLICATION_STATUS_REJECTED: ("rejected", "未批准"),
    }.get(app.status, ("unknown", "未知"))
    return {
        "id": app.id,
        "status": status[0],
        "status_zh": status[1],
        "resource_code": app.resource_code,
        "entity_code": app.entity_code,
        "entity_name": app.entity_name,
        "entity_type": ENTITY_TYPE_NAMES.get(app.entity_type, ""),
        "use": USE_NAMES.get(app.use, ""),
        "purpose": app.purpose,
        "created_at": app.created_at.ToJsonString() if app.HasField("created_at") else None,
        "reviewed_at": app.reviewed_at.ToJsonString() if app.HasField("reviewed_at") else None,
        "review_comment": app.review_comment,
        "not_after": app.not_after.ToJsonString() if app.HasField("not_after") else None,
        "items": list(app.items),
        "to_confirm": app.to_confirm,
        "key_id": app.key_id,
        "key_revoked": app.key_revoked,
    }


ENTITY_TYPES = {
    "domestic_enterprise": (
        opendata_pb2.APPLICANT_ENTITY_TYPE_DOMESTIC_ENTERPRISE,
        "内资控股法人企业",
    ),
    "university": (opendata_pb2.APPLICANT_ENTITY_TYPE_UNIVERSITY, "高校"),
    "research_institute": (opendata_pb2.APPLICANT_ENTITY_TYPE_RESEARCH_INSTITUTE, "科研院所"),
}
ENTITY_TYPE_NAMES = {number: name for name, (number, _) in ENTITY_TYPES.items()}
USES = {
    "research": (opendata_pb2.OPEN_DATA_USE_RESEARCH, "科学研究"),
    "education": (opendata_pb2.OPEN_DATA_USE_EDUCATION, "教育教学"),
    "public_welfare": (opendata_pb2.OPEN_DATA_USE_PUBLIC_WELFARE, "公益事业"),
    "commercial": (opendata_pb2.OPEN_DATA_USE_COMMERCIAL, "商业开发"),
}
USE_NAMES = {number: name for name, (number, _) in USES.items()}


def use_report_view(report: opendata_pb2.UseReport) -> dict[str, Any]:
    return {
        "key_id": report.key_id,
        "application_id": report.application_id,
        "resource_code": report.resource_code,
        "period": report.period,
        "period_start": report.period_start.ToJsonString(),
        "period_end": report.period_end.ToJsonString(),
        "filed_at": report.filed_at.ToJsonString(),
    }
