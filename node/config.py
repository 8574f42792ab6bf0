"""Node configuration: TOML on disk, environment overrides, validated at start-up.

Each section is a pydantic model; :func:`load_config` reads the file, applies
``GOVNODE_<SECTION>__<KEY>`` environment variables on top (``GOVNODE_NODE__LISTEN=...``), and
turns every validation problem into a :class:`ConfigError` that names the file and the exact
key path, e.g. ``node.region: 350102 is a county-level division ...``.

Relative paths in the file are relative to the file's own directory, so a node directory can
be moved as a whole.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.identity import IdentityError, validate_trust_domain
from gateway.tracing_setup import TracingSection
from node.codes import FUJIAN_DIVISIONS, Region, region_problem


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


class Mode(enum.StrEnum):
    PROVINCE = "province"  # 省级平台: the central node, exactly one per province
    CITY = "city"  # 设区市子平台: a sub-node for one prefecture-level city


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} must be HOST:PORT, e.g. 127.0.0.1:7443")
    return value


class NodeSection(_Section):
    mode: Mode
    region: str = Field(description="GB/T 2260 code of the province or city this node serves")
    name: str = Field(min_length=1, max_length=64)
    trust_domain: str = "fujian.gov.cn"
    listen: str = "127.0.0.1:7443"
    #: Extra DNS names / IPs written into the node certificate's SANs at init.
    advertise_hosts: tuple[str, ...] = ()
    #: Let several `govnode serve` processes of this node listen on the same address (and join
    #: port), the kernel spreading connections among them (SO_REUSEPORT). PostgreSQL only:
    #: everything the processes share lives in its database. Off, a second process on the
    #: address fails to start.
    reuse_port: bool = False

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        problem = region_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, value: str) -> str:
        try:
            return validate_trust_domain(value)
        except IdentityError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _check_hostport(value)

    @model_validator(mode="after")
    def _mode_matches_region(self) -> Self:
        region = Region(self.region)
        if self.mode is Mode.PROVINCE and not region.is_province:
            raise ValueError(f"mode is province but region {self.region} is a city")
        if self.mode is Mode.CITY and region.is_province:
            raise ValueError(f"mode is city but region {self.region} is a province")
        known = FUJIAN_DIVISIONS.get(self.region)
        if known is not None and known != self.name:
            raise ValueError(f"region {self.region} is {known}, but name says {self.name!r}")
        return self


class TlsSection(_Section):
    cert: Path = Path("tls/node.crt")  # node certificate chain, leaf first
    key: Path = Path("tls/node.key")  # node private key (0600)
    root: Path = Path("tls/root.crt")  # province root CA: the only trust anchor
    ca_cert: Path = Path("tls/ca.crt")  # this region's intermediate CA (issues agencies)
    ca_key: Path = Path("tls/ca.key")
    root_key: Path | None = None  # province only: signs city intermediates
    #: Ed25519 key this node cosigns other nodes' audit checkpoints with (tlog-cosignature,
    #: node.audit witnessing); made at init, or at the first start of a node made before it.
    witness_key: Path = Path("tls/witness.key")


class StorageSection(_Section):
    url: str = "sqlite+aiosqlite:///node.db"
    #: How often the node test-writes its database for its gRPC health status (NOT_SERVING
    #: while it cannot write; node.storage._health). A write that fails turns it NOT_SERVING
    #: at once; a probe that commits turns it SERVING again.
    health_probe_seconds: float = Field(default=5.0, ge=0.1, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite:///", "postgresql+asyncpg://")):
            raise ValueError(
                "must be sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB"
            )
        return value


class FederationSection(_Section):
    province_region: str | None = None  # city only: the province it belongs to
    province_endpoint: str | None = None  # city only: HOST:PORT of the province node
    #: Province only: HOST:PORT of the join port, where cities without a certificate yet call
    #: FederationService/Join (TLS, no client certificate; every other method is refused).
    join_listen: str | None = None
    #: City: how often it heartbeats the province (and catches up on revocations). Province:
    #: the period it expects, for peer health (healthy when heard from within 3 periods).
    heartbeat_seconds: float = Field(default=5.0, gt=0, le=300)
    #: How often this node delivers the notifications it holds for other regions' recipients
    #: (a city to the province, the province to each city; node.clients._notice_delivery). A
    #: new notification is delivered at once; this is the period of the look for others (made
    #: by another process of this node) and of retries.
    notice_delivery_seconds: float = Field(default=2.0, gt=0, le=300)

    #: The join port (above): the largest message it takes, in bytes (a Join request is about
    #: 1.2 KB; larger ones get RESOURCE_EXHAUSTED before they reach the node), and how many
    #: attempts it admits a minute from one network address (an IPv6 /64) and from all of them
    #: together; more get RESOURCE_EXHAUSTED with trailing metadata retry-after-ms.
    join_max_message_bytes: int = Field(default=64 * 1024, ge=4096, le=4 * 1024 * 1024)
    join_per_minute_per_address: int = Field(default=10, ge=1, le=10_000)
    join_per_minute_total: int = Field(default=60, ge=1, le=100_000)

    #: Direct peer links for routed sharing calls: owner region -> "HOST:PORT" of its node,
    #: e.g. ``peers = { "350200" = "10.0.2.7:7443" }``. A city forwards calls on other
    #: regions' resources to the province unless a direct link is configured here; the
    #: province uses these before the endpoints cities gave when they joined.
    peers: dict[str, str] = Field(default_factory=dict)

    @field_validator("province_endpoint", "join_listen")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _check_hostport(value)

    @field_validator("peers")
    @classmethod
    def _peers(cls, value: dict[str, str]) -> dict[str, str]:
        for region, endpoint in value.items():
            if not (len(region) == 6 and region.isdigit()):
                raise ValueError(f"{region!r} must be a 6-digit region code")
            _check_hostport(endpoint)
        return value


class GovernanceSection(_Section):
    """Approved change and deletion (未经批准不得更改和删除政务数据, 第四十一条)."""

    #: What Submit does with a record whose key is already stored with other values:
    #: "approve" holds it as a pending change request for the node's authority; "apply" writes
    #: it at once as the record's next version (the authority's standing approval of the
    #: aggregation updates arriving from providers' source systems). Versions are kept either
    #: way. Catalog updates and withdrawals, and record deletions, always need approval.
    submit_updates: Literal["approve", "apply"] = "approve"


class SupervisionSection(_Section):
    """Supervision (监督检查, 第八、四十二条): how often the node looks at its open rectification
    notices, closing those whose figure recovered and escalating those past their deadline to
    the published criticisms (通报批评)."""

    notice_check_seconds: float = Field(default=300.0, ge=0.05, le=86_400.0)
    #: Project acceptance certificates (第九、二十二条, ``govnode supervision certify``): the
    #: lowest quality grade of a resource certified, the oldest newest check accepted, the days
    #: without a published criticism (通报批评), and how long a certificate is valid.
    certify_min_grade: Literal["A", "B", "C", "D", "E"] = "C"
    certify_max_check_age_days: int = Field(default=7, ge=1, le=3660)
    certify_criticism_days: int = Field(default=365, ge=1, le=3660)
    certificate_days: int = Field(default=90, ge=1, le=3660)
    #: How often the node computes its region's supervision summary (province roll-up, issue
    #: 15 item 6): a city signs it and sends it to the province, the province keeps its own.
    #: The first one is made soon after start. A summary older than twice this is shown stale.
    summary_seconds: float = Field(default=3600.0, ge=0.05, le=7 * 86_400.0)
    #: Agencies one summary carries at most (by 统一社会信用代码 order); the others are counted
    #: in the summary's agencies_total only, and read by a routed compliance report.
    summary_max_agencies: int = Field(default=500, ge=1, le=5000)
    #: New compliance reports (GetComplianceReport without report_id) one caller may have
    #: counted an hour, each process of the node (0: no limit), and how many the node counts at
    #: once; beyond either the call is refused RESOURCE_EXHAUSTED with retry-after-ms
    #: (node.supervision._admission). The CLI's reports are not limited.
    reports_per_caller_per_hour: int = Field(default=60, ge=0, le=100_000)
    reports_at_once: int = Field(default=2, ge=1, le=64)


class LimitsSection(_Section):
    #: At least 2 MiB: a Submit ack may take up to about 1.9 MB (node.records._rejections).
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=2 * 1024 * 1024, le=64 * 1024 * 1024)
    #: The largest request message of every method but the bulk ones (Submit, Compare,
    #: RegisterResource, UpdateResource, RequestRecordChange, PublishCatalog: those take up to
    #: max_message_bytes); a larger one is refused RESOURCE_EXHAUSTED before it is parsed
    #: (gateway.request_limits). At most max_message_bytes in effect.
    max_request_bytes: int = Field(default=256 * 1024, ge=16 * 1024, le=64 * 1024 * 1024)
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=300)
    #: A connection (on every port) that has not finished its TLS handshake within this long
    #: is closed.
    handshake_timeout_seconds: float = Field(default=10.0, ge=0.1, le=300)
    #: Open streaming calls (Subscribe, Exchange, Submit, Compare, the Watch calls, ...) one
    #: caller may have on this node process at a time; a forwarded call counts for its
    #: original caller (gateway.streams).
    streams_per_caller: int = Field(default=16, ge=1, le=10_000)
    #: Open streams forwarded on behalf of the callers of one other node (the origin node of
    #: their caller assertions).
    streams_per_origin_node: int = Field(default=256, ge=1, le=100_000)
    #: Open streams on this node process altogether.
    streams_total: int = Field(default=1024, ge=1, le=1_000_000)
    #: A stream whose consumer takes no message for this long is ended with ABORTED, saying
    #: where to resume.
    stream_stall_seconds: float = Field(default=60.0, ge=0.5, le=86_400)


class OracleSection(_Section):
    """Verify oracle protection (node.sharing._oracle, 第三十七条): limits per caller and resource,
    kept in the node's database (tables oracle_budget and oracle_key), so they hold across
    restarts and are shared by every process of the node behind one load balancer. 0 turns a
    limit off.

    Every process of one node must use the same values: each admission applies the limits of
    the process that answers it to the shared budget."""

    #: Verify calls per minute (a token bucket: bursts up to this many, refilled evenly by the
    #: wall clock; see node.sharing._oracle on clocks).
    verify_per_minute: int = Field(default=600, ge=0, le=1_000_000)
    #: Verify calls per day (China Standard Time day, reset at 00:00).
    verify_per_day: int = Field(default=20_000, ge=0, le=100_000_000)
    #: A caller asking about this many different keys of one resource within
    #: enumeration_window_seconds is flagged as possible enumeration, once per window. The
    #: database keeps at most this many key digests per (caller, resource), for the window.
    enumeration_window_seconds: float = Field(default=600.0, gt=0, le=7 * 86400)
    enumeration_distinct_keys: int = Field(default=500, ge=0, le=1_000_000)
    #: Only resources holding an item of at least this sensitivity level are limited (public
    #: and internal data answer no question worth guarding).
    min_sensitivity_level: int = Field(default=3, ge=1, le=4)

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        # max_tracked bounded the in-memory budgets of govnode before migration 0012; the
        # database now bounds itself (node.sharing._budgets). Files `govnode init` wrote then still
        # carry it: accept and ignore it, so an upgraded node starts with its old config.
        if isinstance(data, dict) and "max_tracked" in data:
            data = {k: v for k, v in data.items() if k != "max_tracked"}
        return data


class AuditSection(_Section):
    """The audit log's evidence (第三十九条): signed checkpoints of its Merkle tree, and how long
    its records are kept."""

    #: A signed checkpoint (C2SP tlog-checkpoint) of the log's tree is made this often when
    #: records were added since the last one ...
    checkpoint_seconds: float = Field(default=60.0, ge=0.1, le=86_400)
    #: ... and as soon as this many records were added since the last one.
    checkpoint_records: int = Field(default=10_000, ge=1, le=100_000_000)
    #: Days audit records are kept at least: 第三十九条 asks for no less than three years.
    retention_days: int = Field(default=1095, le=36_500)
    #: Records per archive segment (govnode audit archive): a power of two, at least 256, so
    #: that each segment is a complete subtree of the Merkle tree and verifies on its own.
    segment_records: int = Field(default=65_536, ge=256, le=2**30)

    @field_validator("retention_days")
    @classmethod
    def _three_years(cls, value: int) -> int:
        if value < 1095:
            raise ValueError(
                f"{value} days is less than the three years (1095 days) 第三十九条 requires "
                "audit logs to be kept"
            )
        return value

    @field_validator("segment_records")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(
                f"{value} is not a power of two: a segment must be a complete subtree of the "
                "audit log's Merkle tree (256, 1024, 65536, ...)"
            )
        return value


#: Characters of ``[opendata] base_url``: a dataset IRI (at most 500 in a receipt) adds
#: ``/dataset/`` and a resource code.
MAX_BASE_URL = 200


class OpenDataSection(_Section):
    """Open data (第二十九至三十五条): how strict the de-identification check before publication
    is; how 授权开放 keys are kept and how long they last; when use reports are due."""

    #: The published table must be k-anonymous over the entry's quasi-identifiers (GB/T 37964):
    #: every combination of their published values is shared by at least this many rows.
    min_k: int = Field(default=5, ge=2, le=1000)
    #: Rows in classes smaller than min_k are left out, up to this share of the rows; past
    #: it the publication is refused, naming the quasi-identifiers to generalise further.
    max_suppressed: float = Field(default=0.05, ge=0.0, le=0.5)
    #: How often the node looks for published datasets due again on their entry's update
    #: cycle (and whose data changed since) and publishes them.
    republish_check_seconds: float = Field(default=300.0, ge=1.0, le=86_400)
    #: Where the public finds this node's open data (its portal): dataset IRIs, cited as the
    #: source in every download receipt (第三十五条), are ``<base_url>/dataset/<resource code>``.
    #: Empty: ``https://opendata.<trust domain>``.
    base_url: str = Field(default="", max_length=MAX_BASE_URL)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if (
            parts.scheme != "https"
            or not parts.hostname
            or parts.username is not None
            or parts.query
            or parts.fragment
            or not value.isascii()
            or any(c.isspace() or not c.isprintable() for c in value)
        ):
            raise ValueError(
                f"{value[:80]!r} must be an https URL without query, fragment or user, e.g. "
                "https://opendata.fujian.gov.cn"
            )
        return value.rstrip("/")

    #: 授权开放 keys (第三十三条) are stored only as HMAC-SHA256 under this secret: a file of
    #: random bytes (0600), made at the first start that needs it. Every process of one node
    #: reads the same file; losing it makes every key issued so far unknown.
    key_secret: Path = Path("tls/opendata.secret")
    #: The longest authorization the authority may approve, in days from the approval.
    max_grant_days: int = Field(default=365, ge=1, le=3650)
    #: An authorized developer reports its development and use (第三十五条) for every period
    #: of this many days after the approval ...
    use_report_days: int = Field(default=90, ge=1, le=3650)
    #: ... within this many days after the period ends; past that its key is suspended until
    #: the report arrives.
    use_report_grace_days: int = Field(default=30, ge=0, le=3650)
    #: Budgets per member of the public (node.opendata._budget): every call a portal makes for
    #: a recipient (govnode-recipient, ip:...) spends from that recipient's token bucket, kept
    #: by the node so that it holds across portal processes; 0 turns the limit off.
    public_requests_per_minute: int = Field(default=120, ge=0, le=1_000_000)
    #: The most a recipient spends at once (a full bucket).
    public_burst: int = Field(default=60, ge=1, le=1_000_000)
    #: The same for the holder of a 授权开放 key (key:<key id>).
    key_requests_per_minute: int = Field(default=600, ge=0, le=1_000_000)
    key_burst: int = Field(default=300, ge=1, le=1_000_000)
    #: Requests a Download spends (a file costs more than a page of the catalog).
    download_cost: int = Field(default=10, ge=1, le=10_000)
    #: Recipients whose budgets are remembered at once; the least recently seen is forgotten
    #: first (and starts again with a full bucket).
    max_recipients: int = Field(default=100_000, ge=1, le=10_000_000)
    #: The province lists its approved city sub-platforms' open datasets beside its own
    #: (第三十一条; node.opendata._cities): it asks a city for its open catalog again when the
    #: listing it has is older than this ...
    city_catalog_seconds: float = Field(default=300.0, ge=1.0, le=86_400)
    #: ... keeps listing a city that does not answer for this long after it last answered
    #: (at least city_catalog_seconds), then leaves it out until it answers again ...
    city_catalog_keep_seconds: float = Field(default=1800.0, ge=1.0, le=7 * 86_400)
    #: ... and holds a public listing at most this long for a city it has not listed yet.
    city_catalog_wait_seconds: float = Field(default=1.0, ge=0.0, le=10.0)

    @model_validator(mode="after")
    def _city_catalog_kept(self) -> OpenDataSection:
        if self.city_catalog_keep_seconds < self.city_catalog_seconds:
            raise ValueError(
                f"city_catalog_keep_seconds {self.city_catalog_keep_seconds} is less than "
                f"city_catalog_seconds {self.city_catalog_seconds}: a city's listing must be "
                "kept at least until it is asked for again"
            )
        return self

    @model_validator(mode="after")
    def _download_fits(self) -> OpenDataSection:
        for burst in ("public_burst", "key_burst"):
            if self.download_cost > getattr(self, burst):
                raise ValueError(
                    f"download_cost {self.download_cost} is more than {burst} "
                    f"{getattr(self, burst)}: a download must fit in a full bucket"
                )
        return self


#: Resources ``[quality.resources]`` may set thresholds for (one table each).
MAX_QUALITY_OVERRIDES = 10_000
_CHECK_TIME_LEN = 5
#: As node.catalog's RESOURCE_CODE_RE (the config does not import the catalog).
_RESOURCE_CODE_RE = re.compile(r"^\d{6}-[123]-\d{6}$")


class QualityThresholdsSection(_Section):
    """A score (0-100) below ``warn_below`` warns; below ``critical_below`` it is critical."""

    warn_below: float = Field(default=80.0, ge=0.0, le=100.0)
    critical_below: float = Field(default=60.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.critical_below > self.warn_below:
            raise ValueError(
                f"critical_below {self.critical_below:g} is above warn_below "
                f"{self.warn_below:g}: a critical score is below the warning line"
            )
        return self


class QualitySection(QualityThresholdsSection):
    """Data quality checks (质量管控, 第十五、十六条): when they run by themselves, the window
    they count, the thresholds scores are held against and when a drop is flagged."""

    #: When the node recomputes every resource's quality each day, HH:MM China Standard Time.
    check_time: str = "02:30"
    #: Submissions and share calls of the last this many days are counted.
    window_days: int = Field(default=30, ge=1, le=366)
    #: A score more than this many points below the mean of the resource's previous
    #: ``history_checks`` checks is flagged as a drop.
    drop_points: float = Field(default=10.0, gt=0.0, le=100.0)
    history_checks: int = Field(default=7, ge=1, le=100)
    #: A check counts every record at least every this many days; in between it counts only
    #: the records written since the previous check (incremental).
    full_count_days: int = Field(default=7, ge=1, le=366)
    #: 一致性: records of a resource sampled per item whose standard data element another
    #: resource is the authoritative source of, checked against it by key (one Compare call
    #: at most: 10,000).
    consistency_sample: int = Field(default=200, ge=1, le=10_000)
    #: A consumer may report an error (纠错, 第十六条) on a resource it received data from (an
    #: OK share call in the audit log) within this many days.
    report_lookback_days: int = Field(default=90, ge=1, le=3660)
    #: The provider should resolve an error report within this many days (its due time).
    correction_days: int = Field(default=7, ge=1, le=366)
    #: When a correction is applied, the callers of Exchange and Subscribe on the resource in
    #: this many days before the report (they hold bulk copies) are sent a correction notice
    #: too, beside every caller that received the record while it was disputed.
    correction_lookback_days: int = Field(default=30, ge=0, le=3660)
    #: Thresholds of single resources, by resource code: ``[quality.resources."350000-1-000001"]``
    #: with ``warn_below`` and ``critical_below``.
    resources: dict[str, QualityThresholdsSection] = Field(
        default_factory=dict, max_length=MAX_QUALITY_OVERRIDES
    )

    @field_validator("check_time")
    @classmethod
    def _check_time(cls, value: str) -> str:
        hours, sep, minutes = value.partition(":")
        if (
            len(value) != _CHECK_TIME_LEN
            or not sep
            or not (hours.isdigit() and minutes.isdigit())
            or not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59)
        ):
            raise ValueError(f"{value[:20]!r} must be HH:MM, China Standard Time, e.g. 02:30")
        return value

    @field_validator("resources")
    @classmethod
    def _resource_codes(
        cls, value: dict[str, QualityThresholdsSection]
    ) -> dict[str, QualityThresholdsSection]:
        for code in value:
            if not _RESOURCE_CODE_RE.fullmatch(code):
                raise ValueError(
                    f"{code[:20]!r} is not a resource code (RRRRRR-C-NNNNNN, e.g. 350000-1-000001)"
                )
        return value


class MetricsSection(_Section):
    """The node's Prometheus listener (``/metrics`` and ``/healthz``, node.ops): off unless
    ``listen`` is set. What it exposes (peers, call volumes, certificate dates) maps the
    platform, so it listens on a loopback address unless ``tls`` is on: then it requires
    mutual TLS, with a client certificate chained to the province root that names this trust
    domain's data management authority (数据管理机构) or a node."""

    #: HOST:PORT, e.g. "127.0.0.1:9464"; None: no listener.
    listen: str | None = None
    #: Serve HTTPS with the node certificate and require a client certificate (see above).
    tls: bool = False
    #: How often the values read from the database (peers, witnessed checkpoint, quality
    #: grades, issued certificates) are refreshed, in seconds; a scrape never queries.
    refresh_seconds: float = Field(default=15.0, ge=0.05, le=3600)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if value is None else _check_hostport(value)

    @model_validator(mode="after")
    def _loopback_or_tls(self) -> Self:
        if self.listen is not None and not self.tls and not is_loopback(self.listen):
            raise ValueError(
                f"listen: {self.listen} is not a loopback address; metrics map the platform, "
                "so serve them on 127.0.0.1 or set tls = true (mutual TLS)"
            )
        return self


def is_loopback(hostport: str) -> bool:
    """Whether HOST:PORT names a loopback host (127.0.0.0/8, ::1 or localhost)."""
    host = hostport.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConsoleSection(_Section):
    """The operator web console (node.console): HTTPS with mutual TLS on a listener of its own.

    Off unless ``listen`` is set. Loopback is the default to choose (operators reach it through
    an SSH tunnel); another address is allowed, since every connection must present an
    operator certificate of this node's region, but then a firewall should limit who may try.
    """

    #: HOST:PORT of the console, e.g. 127.0.0.1:7444; None: no console.
    listen: str | None = None
    #: The node-local secret the console's form tokens are keyed with (made at first start,
    #: 0600); a new secret only invalidates forms open in a browser.
    secret: Path = Path("tls/console.secret")
    #: Certificates (the node's and the ones it issued) are shown as expiring this many days
    #: ahead.
    expiry_warning_days: int = Field(default=30, ge=1, le=365)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if value is None else _check_hostport(value)


class BackupSection(_Section):
    """Where the operator console keeps the backups it makes and lists (node.console's
    backups page); `govnode backup create --out` writes wherever it is told."""

    #: The directory of backups, one directory each (relative to the config file); the
    #: console lists it and creates new backups in it, named by UTC time.
    dir: Path = Path("backups")
    #: The longest a backup or a verification started at the console may run before it is
    #: stopped (seconds).
    timeout_seconds: float = Field(default=3600.0, ge=10, le=86400)


class LogSection(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class NodeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GOVNODE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    node: NodeSection
    tls: TlsSection = TlsSection()
    storage: StorageSection = StorageSection()
    federation: FederationSection = FederationSection()
    limits: LimitsSection = LimitsSection()
    oracle: OracleSection = OracleSection()
    audit: AuditSection = AuditSection()
    opendata: OpenDataSection = OpenDataSection()
    quality: QualitySection = QualitySection()
    supervision: SupervisionSection = SupervisionSection()
    log: LogSection = LogSection()
    metrics: MetricsSection = MetricsSection()
    governance: GovernanceSection = GovernanceSection()
    #: Spans of the calls this node serves and forwards (gateway.tracing_setup).
    tracing: TracingSection = TracingSection()
    console: ConsoleSection = ConsoleSection()
    backup: BackupSection = BackupSection()
    #: Directory the file was read from; relative paths resolve against it.
    base_dir: Path = Path()
    #: The file itself (set by :func:`load_config`; None for a config built in code): what
    #: the console passes to `govnode backup create --config`.
    config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed in as init values).
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _city_needs_province(self) -> Self:
        if self.node.mode is Mode.CITY:
            fed = self.federation
            if not fed.province_region:
                raise ValueError("federation.province_region: a city must name its province")
            if not Region(fed.province_region).is_province:
                raise ValueError(
                    f"federation.province_region: {fed.province_region} is not a province"
                )
            if not Region(fed.province_region).contains(self.node.region):
                raise ValueError(
                    f"node.region: {self.node.region} is not a city of province "
                    f"{fed.province_region} (第十九条)"
                )
            if not fed.province_endpoint:
                raise ValueError(
                    "federation.province_endpoint: a city needs its province's endpoint"
                )
        elif self.tls.root_key is None:
            raise ValueError("tls.root_key: the province node needs the root CA key")
        join = self.federation.join_listen
        if join is not None and self.node.mode is not Mode.PROVINCE:
            raise ValueError("federation.join_listen: only the province node lets cities join")
        if join is not None and join == self.node.listen:
            raise ValueError("federation.join_listen: must differ from node.listen")
        if self.node.reuse_port and not self.storage.url.startswith("postgresql"):
            raise ValueError(
                "node.reuse_port: several processes of one node need PostgreSQL "
                "(storage.url postgresql+asyncpg://...); SQLite has one writer per file"
            )
        console = self.console.listen
        if console is not None and console in (self.node.listen, join):
            raise ValueError("console.listen: must differ from node.listen and join_listen")
        return self

    def path(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def database_url(self) -> str:
        url = self.storage.url
        prefix = "sqlite+aiosqlite:///"
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
            return prefix + str((self.base_dir / url[len(prefix) :]).resolve())
        return url

    @property
    def open_data_base_url(self) -> str:
        """``[opendata] base_url``, or its default ``https://opendata.<trust domain>``."""
        return self.opendata.base_url or f"https://opendata.{self.node.trust_domain}"

    @property
    def region(self) -> Region:
        return Region(self.node.region)


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known key"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"{path}: " + "; ".join(lines)


def load_config(path: Path) -> NodeConfig:
    """Read, override from the environment, and validate a node's TOML configuration."""
    path = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    data["base_dir"] = path.resolve().parent
    data["config_file"] = path.resolve()
    try:
        return NodeConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None
