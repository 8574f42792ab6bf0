"""Supervision (监督检查, 第八、四十二条): what each agency of this node did against the Measures
over a period, counted from the node's own tables, with the evidence to re-derive it.

- ``_types``: the kinds of figure (the items of 第四十二条, overdue corrections, the quality
  grade), figures with numerator, denominator and audit sequence range, findings, periods;
- ``_count``: how the audit log, the catalog and the quality checks are counted;
- ``_reports``: reports made, stored, paged, recounted (the chain verified first), and who may
  read them; ``_admission``: how many new reports a caller, and the node, may have counted;
- ``_summary``: the signed summary of a region a node sends its province (format, signing,
  checking), and ``_rollup``: computing it, and the province keeping the newest per region as
  one province-wide table (issue 15 item 6);
- ``_notices``: rectification notices (责令限期改正), closed when their figure recovers or
  escalated at their deadline to the published criticisms (通报批评), and the node's task that
  does it;
- ``_certificate``: the project acceptance certificate (第九、二十二条), its text and its
  offline check against the province root;
- ``_certify``: its five conditions evaluated over the node's tables, and its issuance.
"""

from __future__ import annotations

from node.supervision._admission import ReportAdmission
from node.supervision._certificate import (
    CERTIFICATE_HEADER,
    MAX_CERTIFICATE_BYTES,
    Certificate,
    CertificateError,
    CertifiedResource,
    check_certificate,
    make_certificate,
    parse_certificate_text,
)
from node.supervision._certify import CERTIFY_METHOD, Certifier, CertifySettings, NodeSigner
from node.supervision._count import classify
from node.supervision._notices import (
    MAX_NOTE,
    NOTICE_METHOD,
    Notice,
    NoticeStatus,
    NoticeWatch,
    Rectifications,
)
from node.supervision._reports import (
    REPORT_METHOD,
    ComplianceReport,
    Recount,
    Supervision,
    check_agency_code,
    check_report_reader,
)
from node.supervision._rollup import CityTable, Rollup, compute_summary, month_so_far
from node.supervision._summary import (
    MAX_SUMMARY_BYTES,
    SUMMARY_FORMAT,
    AgencyFigures,
    ResourceQuality,
    Summary,
    SummaryError,
    check_summary,
    sign_summary,
)
from node.supervision._types import (
    MAX_FINDINGS_PER_KIND,
    MAX_PERIOD_DAYS,
    UNMEASURED,
    Figure,
    Finding,
    Kind,
    OverdueCorrections,
    check_period,
    parse_period,
)

__all__ = [
    "CERTIFICATE_HEADER",
    "CERTIFY_METHOD",
    "MAX_CERTIFICATE_BYTES",
    "MAX_FINDINGS_PER_KIND",
    "MAX_NOTE",
    "MAX_PERIOD_DAYS",
    "MAX_SUMMARY_BYTES",
    "NOTICE_METHOD",
    "REPORT_METHOD",
    "SUMMARY_FORMAT",
    "UNMEASURED",
    "AgencyFigures",
    "Certificate",
    "CertificateError",
    "CertifiedResource",
    "Certifier",
    "CertifySettings",
    "CityTable",
    "ComplianceReport",
    "Figure",
    "Finding",
    "Kind",
    "NodeSigner",
    "Notice",
    "NoticeStatus",
    "NoticeWatch",
    "OverdueCorrections",
    "Recount",
    "Rectifications",
    "ReportAdmission",
    "ResourceQuality",
    "Rollup",
    "Summary",
    "SummaryError",
    "Supervision",
    "check_agency_code",
    "check_certificate",
    "check_period",
    "check_report_reader",
    "check_summary",
    "classify",
    "compute_summary",
    "make_certificate",
    "month_so_far",
    "parse_certificate_text",
    "parse_period",
    "sign_summary",
]
