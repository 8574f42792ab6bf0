"""Open data (开放开发, 第二十九至三十六条).

- ``_deid``: de-identification (脱密脱敏, 第二十九条): what each item of an entry becomes in the
  open data (:class:`Treater`), and the scan of the published rows for direct identifiers
  still in clear (:class:`IdentifierScan`, GB/T 37964);
- ``_publish``: the open catalog: publishing a resource's data as a checked, versioned,
  de-identified snapshot (k-anonymity in SQL), taking it out, what is served;
- ``_catalog``: the open catalog as the public sees it: the datasets served now, their source
  and acquisition date (第三十五条), listed with filters and a text query;
- ``_cities``: the province's cache of its approved city sub-platforms' open catalogs
  (第三十一条), merged into its own listing;
- ``_dcat``: the open catalog as DCAT-AP 3 for harvesters, JSON-LD with Hydra paging and
  Turtle (普遍开放/授权开放 as access rights and ODRL policies, 更新周期, the Measures);
- ``_encode``: the bytes of a CSV or JSON Lines file, a row at a time;
- ``_digests``: each file's size and SHA-256, kept from the publication on (or computed by a
  first download), so that a download states them first and resumes at a byte offset;
- ``_files``: the bytes of each published version's full files, stored at publication in
  chunks and streamed by downloads (a byte range is a seek);
- ``_download``: a served version as a CSV or JSON Lines file, in bounded chunks, or a byte
  range of it, and the receipt of the download;
- ``_filters``: the row API's filter grammar (``<item>__<op>=<value>``, after api-tabular),
  typed by what each published item holds; never SQL;
- ``_rows``: a page of a served dataset's rows through those filters, bounded in the rows
  one call reads;
- ``_access``: what a caller reads of a served dataset: 普遍开放 whole, 授权开放 only the
  items a key's approval names (第三十二条、第三十三条);
- ``_gate``: who may open data (第三十一条: the province, and approved city sub-platforms);
- ``_receipt``: download receipts signed by the node, checked offline from the root
  certificate (注明来源和获取日期, 第三十五条);
- ``_eligibility``: who may apply for 授权开放 data, checked from the applicant's
  统一社会信用代码 (第三十二条);
- ``_budget``: budgets per member of the public for the portal's calls, at the node;
- ``_applications``: 授权开放 applications, the authority's review, the keys approvals issue
  (``_keys``: stored only hashed) and the holders' use reports (第三十二至三十五条).

Domain: no grpc.
"""

from __future__ import annotations

from node.opendata._access import MAX_KEY_CHARS, Access, key_problem, needs_key, open_access
from node.opendata._applications import (
    Approval,
    OpenApplication,
    OpenApplications,
    OpenApplicationStatus,
    OpenDraft,
    OpenReview,
)
from node.opendata._budget import BudgetLimits, PublicBudgets
from node.opendata._catalog import (
    FORMATS,
    MAX_QUERY,
    SCAN_LIMIT,
    OpenCatalog,
    Publisher,
    Served,
    query_problem,
)
from node.opendata._cities import (
    MAX_CITY_BYTES,
    MAX_CITY_DATASETS,
    CityCatalogs,
    CityDataset,
    merge_page,
    text_matches,
)
from node.opendata._dcat import catalog_jsonld, catalog_turtle
from node.opendata._deid import (
    CITIZEN_ID,
    MAX_SCAN_CHARS,
    MOBILE,
    NAME_SAMPLE_SIZE,
    OLD_CITIZEN_ID,
    PERSON_NAME,
    PUBLISHED_LEVELS,
    Finding,
    IdentifierScan,
    Treater,
    TreatmentError,
    direct_identifier,
    embedded_identifiers,
    looks_like_person_names,
    opened_items,
)
from node.opendata._digests import FileDigests, Variant, compute_digests
from node.opendata._download import (
    CHUNK_BYTES,
    Chunk,
    DownloadFile,
    check_format,
    check_range,
    receipt_for,
    recipient_problem,
    sign_download,
)
from node.opendata._eligibility import (
    REGISTRATION_CATEGORIES,
    ApplicantType,
    Eligibility,
    Ineligible,
    check_eligibility,
    registration_of,
)
from node.opendata._encode import columns_id
from node.opendata._files import STORED_CHUNK_BYTES, FileWriter, StoredFile, StoredFiles
from node.opendata._filters import (
    MAX_FILTERS,
    MAX_IN_VALUES,
    MAX_VALUE_CHARS,
    FilterError,
    RowFilter,
    parse_filters,
    projection_problem,
)
from node.opendata._gate import NOT_APPROVED, open_data_gate
from node.opendata._keys import OpenKeys, ReportPeriod, UseReport
from node.opendata._open_terms import PUBLIC_INTEREST_USES, KeyScope, OpenKey, OpenUse
from node.opendata._publish import (
    Dataset,
    MayOpen,
    OpenData,
    PublicationRefused,
    Report,
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
from node.opendata._rows import (
    DEFAULT_PAGE_ROWS,
    MAX_PAGE_ROWS,
    SCAN_ROWS,
    RowPage,
    query_rows,
)
from node.opendata._schedule import Republisher

__all__ = [
    "CHUNK_BYTES",
    "CITIZEN_ID",
    "DEFAULT_PAGE_ROWS",
    "FORMATS",
    "MAX_CITY_BYTES",
    "MAX_CITY_DATASETS",
    "MAX_FILTERS",
    "MAX_IN_VALUES",
    "MAX_KEY_CHARS",
    "MAX_PAGE_ROWS",
    "MAX_QUERY",
    "MAX_RECEIPT_BYTES",
    "MAX_SCAN_CHARS",
    "MAX_VALUE_CHARS",
    "MOBILE",
    "NAME_SAMPLE_SIZE",
    "NOT_APPROVED",
    "OLD_CITIZEN_ID",
    "PERSON_NAME",
    "PUBLIC_INTEREST_USES",
    "PUBLISHED_LEVELS",
    "REGISTRATION_CATEGORIES",
    "SCAN_LIMIT",
    "SCAN_ROWS",
    "STORED_CHUNK_BYTES",
    "Access",
    "ApplicantType",
    "Approval",
    "BudgetLimits",
    "Chunk",
    "CityCatalogs",
    "CityDataset",
    "Dataset",
    "DownloadFile",
    "Eligibility",
    "FileDigest",
    "FileDigests",
    "FileWriter",
    "FilterError",
    "Finding",
    "IdentifierScan",
    "Ineligible",
    "KeyScope",
    "MayOpen",
    "OpenApplication",
    "OpenApplicationStatus",
    "OpenApplications",
    "OpenCatalog",
    "OpenData",
    "OpenDraft",
    "OpenKey",
    "OpenKeys",
    "OpenReview",
    "OpenUse",
    "PublicBudgets",
    "PublicationRefused",
    "Publisher",
    "Receipt",
    "ReceiptError",
    "Report",
    "ReportPeriod",
    "Republisher",
    "RowFilter",
    "RowPage",
    "Served",
    "StoredFile",
    "StoredFiles",
    "Treater",
    "TreatmentError",
    "UseReport",
    "Variant",
    "catalog_jsonld",
    "catalog_turtle",
    "check_eligibility",
    "check_format",
    "check_range",
    "check_receipt",
    "columns_id",
    "compute_digests",
    "digest_of",
    "direct_identifier",
    "embedded_identifiers",
    "key_problem",
    "looks_like_person_names",
    "make_receipt",
    "merge_page",
    "needs_key",
    "open_access",
    "open_data_gate",
    "opened_items",
    "parse_filters",
    "parse_receipt_text",
    "projection_problem",
    "query_problem",
    "query_rows",
    "receipt_for",
    "recipient_problem",
    "registration_of",
    "sha256_of",
    "sign_download",
    "text_matches",
]
