"""Open data (开放开发, 第二十九至三十六条).

- ``_receipt``: download receipts signed by the node, checked offline from the root
  certificate (注明来源和获取日期, 第三十五条).

Pure domain: no grpc.
"""

from __future__ import annotations

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
    "FileDigest",
    "Receipt",
    "ReceiptError",
    "check_receipt",
    "digest_of",
    "make_receipt",
    "parse_receipt_text",
    "sha256_of",
]
