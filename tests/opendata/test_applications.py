"""授权开放 (第三十二至三十五条) on a real database of each backend: who may apply and for what
use, the authority's review and what it may narrow, the key shown once and kept only as a
keyed hash, what a key authorizes (and when it stops), and the use reports whose absence
suspends it."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import text

from gateway.identity import Identity, Role, provider_identity
from node.catalog import Catalog, OpenType
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.opendata import (
    ApplicantType,
    OpenApplications,
    OpenApplicationStatus,
    OpenDraft,
    OpenKeys,
    OpenReview,
    OpenUse,
)
from node.sharing import NotificationKind, Notifications
from node.storage import Database
from tests.opendata.test_eligibility import (
    COOPERATIVE,
    DECLARED,
    ENTERPRISE,
    GOVERNMENT,
    PRIVATE_NON_ENTERPRISE,
    PUBLIC_INSTITUTION,
    SOCIETY,
    SOLE_TRADER,
)
from tests.opendata.test_publish import BY, PROVIDER, open_entry, opendata, person, setup
from tests.support.entries import NODE_REGION, TRUST_DOMAIN, agency, make_entry

AUTHORITY = Identity(NODE_REGION, TRUST_DOMAIN, Role.AUTHORITY)
# The portal submits for the public; the domain does not look at who submits (the servicer
# does), so the node's own identity stands in for it here.
PORTAL = Identity(NODE_REGION, TRUST_DOMAIN, Role.NODE)
SECRET = bytes(range(32))
START = dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@dataclasses.dataclass
class Platform:
    db: Database
    catalog: Catalog
    applications: OpenApplications
    keys: OpenKeys
    notifications: Notifications
    clock: Clock
    code: str


async def platform(db: Database, n: int = 40, **entry_fields: object) -> Platform:
    entry = open_entry(n, **entry_fields)
    catalog = await setup(db, [person(i, 1980 + i % 3) for i in range(60)], entry)
    data = opendata(db, catalog)
    await data.publish(entry.resource_code, BY)
    clock = Clock()
    notifications = Notifications(db)
    keys = OpenKeys(
        db,
        notifications,
        AUTHORITY,
        key_secret=SECRET,
        use_report_days=90,
        use_report_grace_days=30,
        clock=clock,
    )
    applications = OpenApplications(
        db, catalog, data, notifications, keys, AUTHORITY, max_grant_days=365, clock=clock
    )
    return Platform(db, catalog, applications, keys, notifications, clock, entry.resource_code)


def draft(code: str, **fields: object) -> OpenDraft:
    values: dict[str, object] = {
        "resource_code": code,
        "entity_type": ApplicantType.DOMESTIC_ENTERPRISE,
        "entity_code": ENTERPRISE,
        "entity_name": "福州数智科技有限公司",
        "contact": "林工 0591-87654321",
        "use": OpenUse.PUBLIC_WELFARE,
        "purpose": "人口结构公益研究",
        **DECLARED,
    } | fields
    return OpenDraft(**values)  # type: ignore[arg-type]


def university(code: str, use: OpenUse) -> OpenDraft:
    return draft(
        code,
        entity_type=ApplicantType.UNIVERSITY,
        entity_code=PUBLIC_INSTITUTION,
        entity_name="福州大学",
        use=use,
        domestic_control_declared=False,
        evidence_reference="",
    )


async def approved(p: Platform, **review: object) -> tuple[str, str]:
    """(application id, key) of an approved application of the default draft."""
    app = await p.applications.apply(PORTAL, draft(p.code))
    approval = await p.applications.review(AUTHORITY, app.id, OpenReview(approve=True, **review))  # type: ignore[arg-type]
    assert approval.key
    return app.id, approval.key


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"entity_code": SOLE_TRADER}, "not a legal person"),
        ({"entity_code": COOPERATIVE}, "not an enterprise"),
        ({"entity_code": GOVERNMENT}, "by sharing"),
        ({"entity_code": SOCIETY}, "社会团体"),
        ({"entity_code": ENTERPRISE[:-1] + "0"}, "not valid"),
        ({"domestic_control_declared": False}, "does not declare domestic control"),
        ({"evidence_reference": ""}, "without naming its evidence"),
        (
            {"entity_type": ApplicantType.RESEARCH_INSTITUTE, "entity_code": ENTERPRISE},
            "applies as 内资控股法人企业",
        ),
    ],
)
async def test_an_ineligible_applicant_is_refused_naming_article_32(
    database: Database, fields: dict[str, object], why: str
) -> None:
    p = await platform(database)
    with pytest.raises(PermissionDenied) as refused:
        await p.applications.apply(PORTAL, draft(p.code, **fields))
    assert refused.value.message.startswith("第三十二条: ")
    assert why in refused.value.message
    assert await p.applications.list_applications() == ([], "")


async def test_a_university_may_not_apply_for_commercial_use_and_is_approved_for_research(
    database: Database,
) -> None:
    p = await platform(database)
    with pytest.raises(PermissionDenied, match="第三十三条: a 高校 may use 授权开放 data only"):
        await p.applications.apply(PORTAL, university(p.code, OpenUse.COMMERCIAL))
    app = await p.applications.apply(PORTAL, university(p.code, OpenUse.RESEARCH))
    assert app.status is OpenApplicationStatus.PENDING
    assert "高校" in app.to_confirm  # what the authority confirms before it authorizes
    approval = await p.applications.review(AUTHORITY, app.id, OpenReview(approve=True))
    assert approval.application.status is OpenApplicationStatus.APPROVED
    scope = await p.keys.authorize(approval.key, p.code)
    assert scope.use is OpenUse.RESEARCH and scope.entity_code == PUBLIC_INSTITUTION
    # A 民办 university registers as a 民办非企业单位 (52): eligible as well.
    private = dataclasses.replace(
        university(p.code, OpenUse.EDUCATION), entity_code=PRIVATE_NON_ENTERPRISE
    )
    assert (await p.applications.apply(PORTAL, private)).entity_code == PRIVATE_NON_ENTERPRISE


async def test_commercial_use_is_approved_only_with_the_competitive_selection_reference(
    database: Database,
) -> None:
    p = await platform(database)
    app = await p.applications.apply(PORTAL, draft(p.code, use=OpenUse.COMMERCIAL))
    with pytest.raises(InvalidArgument) as refused:
        await p.applications.review(AUTHORITY, app.id, OpenReview(approve=True))
    assert "competitive_selection_ref: required" in refused.value.message
    assert "公开招标等竞争性方式 (第三十三、三十四条)" in refused.value.message
    assert (await p.applications.get(app.id)).status is OpenApplicationStatus.PENDING
    reference = "闽数招〔2026〕7号 公开招标"
    approval = await p.applications.review(
        AUTHORITY, app.id, OpenReview(approve=True, competitive_selection_ref=reference)
    )
    assert approval.application.competitive_selection_ref == reference
    assert (await p.keys.authorize(approval.key, p.code)).use is OpenUse.COMMERCIAL


async def test_the_authority_narrows_items_and_period_within_the_published_items_and_maximum(
    database: Database,
) -> None:
    p = await platform(database)
    app = await p.applications.apply(PORTAL, draft(p.code))
    for review, message in [
        (OpenReview(approve=True, items=("sfzhm",)), "not published items"),  # dropped
        (OpenReview(approve=True, items=("nope",)), "not published items"),
        (OpenReview(approve=True, not_after=START + 400 * DAY), "max_grant_days"),
        (OpenReview(approve=True, not_after=START - DAY), "not in the future"),
        (OpenReview(approve=False), "comment: required"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            await p.applications.review(AUTHORITY, app.id, review)
    end = START + 30 * DAY
    approval = await p.applications.review(
        AUTHORITY, app.id, OpenReview(approve=True, items=("csrq", "qh"), not_after=end)
    )
    key = approval.application.key
    assert key is not None and key.scope.items == ("csrq", "qh") and key.scope.not_after == end
    with pytest.raises(FailedPrecondition, match="already approved"):
        await p.applications.review(AUTHORITY, app.id, OpenReview(approve=False, comment="x"))
    # Without narrowing: every published item (the level-3 sfzhm never is), for the longest.
    other = await p.applications.apply(PORTAL, draft(p.code))
    full = await p.applications.review(AUTHORITY, other.id, OpenReview(approve=True))
    assert full.application.key is not None
    assert full.application.key.scope.items == ("bh", "csrq", "qh", "bz")
    assert full.application.key.scope.not_after == START + 365 * DAY


async def test_only_the_node_authority_reviews_and_a_rejection_says_why(
    database: Database,
) -> None:
    p = await platform(database)
    app = await p.applications.apply(PORTAL, draft(p.code))
    for stranger in (PORTAL, Identity("350200", TRUST_DOMAIN, Role.AUTHORITY)):
        with pytest.raises(PermissionDenied, match="only this node's data management authority"):
            await p.applications.review(stranger, app.id, OpenReview(approve=True))
    rejected = await p.applications.review(
        AUTHORITY, app.id, OpenReview(approve=False, comment="内资控股证明不足")
    )
    assert rejected.key == "" and rejected.application.key is None
    assert rejected.application.status is OpenApplicationStatus.REJECTED
    assert rejected.application.review_comment == "内资控股证明不足"
    with pytest.raises(NotFound):
        await p.applications.get("350100-OA-0000000000000000")


async def test_only_served_authorized_resources_are_applied_for_and_applying_is_idempotent(
    database: Database,
) -> None:
    p = await platform(database)
    universal = make_entry(41, provider=PROVIDER, open_type=OpenType.UNIVERSAL)
    await p.catalog.register(agency(PROVIDER), universal)
    with pytest.raises(FailedPrecondition, match="普遍开放: anyone downloads it"):
        await p.applications.apply(PORTAL, draft(universal.resource_code))
    closed = make_entry(42, provider=PROVIDER)
    await p.catalog.register(agency(PROVIDER), closed)
    with pytest.raises(FailedPrecondition, match="only 授权开放 resources"):
        await p.applications.apply(PORTAL, draft(closed.resource_code))
    unpublished = open_entry(43)
    await p.catalog.register(agency(PROVIDER), unpublished)
    with pytest.raises(FailedPrecondition, match="never published"):
        await p.applications.apply(PORTAL, draft(unpublished.resource_code))
    with pytest.raises(NotFound):
        await p.applications.apply(PORTAL, draft("350100-3-000999"))
    with pytest.raises(InvalidArgument, match="contact: required"):
        await p.applications.apply(PORTAL, draft(p.code, contact=" "))
    with pytest.raises(InvalidArgument, match="purpose: at most 2000"):
        await p.applications.apply(PORTAL, draft(p.code, purpose="x" * 2001))
    first = await p.applications.apply(PORTAL, draft(p.code, request_id="r-1"))
    again = await p.applications.apply(PORTAL, draft(p.code, request_id="r-1"))
    assert again.id == first.id
    assert len((await p.applications.list_applications())[0]) == 1


async def test_the_key_is_shown_once_and_the_table_holds_only_its_keyed_hash(
    database: Database,
) -> None:
    p = await platform(database)
    app = await p.applications.apply(PORTAL, draft(p.code))
    review = OpenReview(approve=True, request_id="review-1")
    approval = await p.applications.review(AUTHORITY, app.id, review)
    key = approval.key
    assert key.startswith("gok_") and len(key) > 60
    assert approval.application.key is not None
    assert key.split("_")[1] == approval.application.key.key_id  # the visible part
    # A retry gets the outcome, not the key again: it is not stored anywhere.
    retried = await p.applications.review(AUTHORITY, app.id, review)
    assert retried.key == "" and retried.application.status is OpenApplicationStatus.APPROVED
    secret_part = key.split("_", 2)[2][-40:]  # gok_<key id>_<secret>; the secret may hold "_"
    for table in ("open_key", "open_application", "request_log", "notification"):
        async with database.engine.connect() as connection:
            rows = (await connection.execute(text(f"SELECT * FROM {table}"))).all()
        dumped = repr(rows)
        assert key not in dumped and secret_part not in dumped, table
    # Another node secret recognises none of this node's keys.
    other = OpenKeys(p.db, p.notifications, AUTHORITY, key_secret=bytes(32), clock=p.clock)
    with pytest.raises(PermissionDenied, match="unknown"):
        await other.authorize(key, p.code)


async def test_a_key_authorizes_its_resource_until_revoked_or_expired(database: Database) -> None:
    p = await platform(database)
    _, key = await approved(p, not_after=START + 60 * DAY)
    scope = await p.keys.authorize(key, p.code)
    assert scope.resource_code == p.code and scope.use is OpenUse.PUBLIC_WELFARE
    with pytest.raises(PermissionDenied, match=f"authorizes resource {p.code}, not"):
        await p.keys.authorize(key, "350100-3-000041")
    for forged in ("", "gok_", key[:-1] + ("A" if key[-1] != "A" else "B"), key + "x"):
        with pytest.raises(PermissionDenied, match="unknown"):
            await p.keys.authorize(forged, p.code)
    p.clock.now = START + 60 * DAY
    with pytest.raises(PermissionDenied, match="expired at 2026-03-06 10:00 CST"):
        await p.keys.authorize(key, p.code)

    p.clock.now = START
    application_id, second = await approved(p)
    key_id = second.split("_")[1]
    with pytest.raises(PermissionDenied, match="only this node's data management authority"):
        await p.keys.revoke(PORTAL, key_id, "misuse")
    with pytest.raises(InvalidArgument, match="reason: required"):
        await p.keys.revoke(AUTHORITY, key_id, "")
    revoked = await p.keys.revoke(AUTHORITY, key_id, "超出授权用途使用")
    assert revoked.revoked and revoked.scope.application_id == application_id
    with pytest.raises(PermissionDenied, match="revoked by the data management authority: 超出"):
        await p.keys.authorize(second, p.code)
    with pytest.raises(FailedPrecondition, match="already revoked"):
        await p.keys.revoke(AUTHORITY, key_id, "again")


async def test_an_overdue_use_report_suspends_the_key_until_it_arrives(database: Database) -> None:
    p = await platform(database)
    application_id, key = await approved(p)
    # Period 1 ends after 90 days; its report is due then, with 30 days' grace.
    p.clock.now = START + 119 * DAY
    await p.keys.authorize(key, p.code)
    p.clock.now = START + 120 * DAY
    with pytest.raises(PermissionDenied) as suspended:
        await p.keys.authorize(key, p.code)
    assert "suspended: the use report for period 1 (2026-01-05 to 2026-04-05 CST) is overdue " in (
        suspended.value.message
    )
    assert "(第三十五条)" in suspended.value.message
    with pytest.raises(InvalidArgument, match="text: required"):
        await p.keys.file_report(PORTAL, " ", key=key)
    with pytest.raises(PermissionDenied, match="unknown"):
        await p.keys.file_report(PORTAL, "报告", key=key[:-2] + "zz")
    report = await p.keys.file_report(PORTAL, "开发人口结构分析产品一项", key=key)
    assert report.period.number == 1 and report.filed_by == PORTAL.uri
    assert (await p.keys.authorize(key, p.code)).key_id == key.split("_")[1]
    # The next report (period 2, the one under way) may be filed early; not twice.
    second = await p.keys.file_report(PORTAL, "季度报告", key=key, request_id="q2")
    assert second.period.number == 2
    retried = await p.keys.file_report(PORTAL, "季度报告", key=key, request_id="q2")
    assert retried.period.number == 2
    with pytest.raises(FailedPrecondition, match=r"period 3 .* has not begun"):
        await p.keys.file_report(PORTAL, "太早", key=key)
    with pytest.raises(FailedPrecondition, match="filed already"):
        await p.keys.file_report(PORTAL, "again", key=key, period=1)
    # The authority records a report it received on paper, named by the application.
    p.clock.now = START + 181 * DAY
    by_authority = await p.keys.file_report(AUTHORITY, "书面报告", application_id=application_id)
    assert by_authority.period.number == 3
    with pytest.raises(PermissionDenied):
        await p.keys.file_report(PORTAL, "x", application_id=application_id)
    reports, token = await p.keys.reports(key_id=key.split("_")[1])
    assert [r.period.number for r in reports] == [3, 2, 1] and token == ""
    schedule = await p.keys.schedule(key.split("_")[1])
    assert [s.number for s in schedule] == [1, 2, 3, 4, 5]  # 365 days in 90-day periods
    assert schedule[-1].end == START + 365 * DAY


async def test_the_provider_is_told_of_each_authorization_and_revocation(
    database: Database,
) -> None:
    p = await platform(database)
    application_id, key = await approved(p, items=("csrq", "qh"))
    provider = provider_identity(NODE_REGION, TRUST_DOMAIN, PROVIDER)
    [told] = await p.notifications.list_for(provider)
    assert told.kind is NotificationKind.OPEN_APPLICATION_REVIEWED
    assert (told.resource_code, told.application_id) == (p.code, application_id)
    assert "福州数智科技有限公司" in told.message and "数据项 csrq, qh" in told.message
    assert "第三十三条" in told.message
    await p.keys.revoke(AUTHORITY, key.split("_")[1], "协议终止")
    revoked = await p.notifications.list_for(provider, after_id=told.id)
    assert [n.kind for n in revoked] == [NotificationKind.GRANT_REVOKED]
    assert "协议终止" in revoked[0].message
    # A rejection is not an authorization: nothing to tell.
    app = await p.applications.apply(PORTAL, draft(p.code))
    await p.applications.review(AUTHORITY, app.id, OpenReview(approve=False, comment="材料不全"))
    assert len(await p.notifications.list_for(provider)) == 2
