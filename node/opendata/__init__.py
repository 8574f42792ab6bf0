"""Open data (开放开发, 第二十九至三十六条).

- ``_receipt``: download receipts signed by the node, checked offline from the root
  certificate (注明来源和获取日期, 第三十五条);
- ``_eligibility``: who may apply for 授权开放 data, checked from the applicant's
  统一社会信用代码 (第三十二条).

Pure domain: no grpc.
"""

from __future__ import annotations

from node.opendata._eligibility import (
    REGISTRATION_CATEGORIES,
    ApplicantType,
    Eligibility,
    Ineligible,
    check_eligibility,
    registration_of,
)
from node.opendata._receipt import (
    MAX_RECEIPT_BYTES,
    FileDigest,
    Receipt,
    ReceiptError,
    check_receipt,
    digest_of,
    make_receipt,
    parse_receipt_text,
    sha256_of,
)

__all__ = [
    "MAX_RECEIPT_BYTES",
    "REGISTRATION_CATEGORIES",
    "ApplicantType",
    "Eligibility",
    "FileDigest",
    "Ineligible",
    "Receipt",
    "ReceiptError",
    "check_eligibility",
    "check_receipt",
    "digest_of",
    "make_receipt",
    "parse_receipt_text",
    "registration_of",
    "sha256_of",
]
