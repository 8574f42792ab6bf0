"""Joining the federation online (DESIGN.md, "Identity and PKI": Joining). Domain only, no grpc.

At the province, ops mint a one-time, expiring invitation for one city
(:func:`create_invitation`); only the SHA-256 of the token is stored, the token itself is shown
once and travels to the city operator out of band with the root fingerprint. The city then
calls FederationService/Join with the token and two CSRs; :func:`admit` checks the request,
redeems the invitation, signs the city's CA with the root (constrained to the *invited*
region, never to what the CSR says) and records the member, all in one write transaction:
a refused join (bad CSR, wrong region, ...) leaves the invitation unused, and a used invitation
always has its member row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.quote import quote
from node.codes import FUJIAN_DIVISIONS, Region, region_problem
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from node.models import FederationMemberRow, InvitationRow
from node.pki import KeyPair, PkiError, check_ca_csr, check_node_csr, serial_hex, sign_intermediate
from node.storage import Database
from node.times import CST

TOKEN_PREFIX = "gvi1_"  # noqa: S105 (a marker, not a secret)
DEFAULT_TTL = dt.timedelta(hours=24)
MAX_TTL = dt.timedelta(days=7)


def cst(moment: dt.datetime) -> str:
    """A stored (UTC) time as people read it: China Standard Time."""
    utc = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
    return f"{utc.astimezone(CST):%Y-%m-%d %H:%M} CST"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def city_problem(province_region: str, region: str) -> str | None:
    """Why ``region`` cannot join the province ``province_region``, or None when it can."""
    problem = region_problem(region)
    if problem is not None:
        return problem
    if Region(region).is_province or not Region(province_region).contains(region):
        return f"{region} is not a city of province {province_region} (第十九条)"
    return None


def reachable_address(address: str, advertise_hosts: tuple[str, ...]) -> str:
    """HOST:PORT others use to reach a listen address: a wildcard host (0.0.0.0, ::) is
    replaced by the first advertised host, when there is one."""
    host, _, port = address.rpartition(":")
    if host.strip("[]") in ("0.0.0.0", "::", "") and advertise_hosts:
        host = advertise_hosts[0]
    return f"{host}:{port}"


@dataclass(frozen=True)
class Invitation:
    """A freshly minted invitation: the token is shown once and never stored."""

    token: str
    region: str
    name: str
    expires_at: dt.datetime


async def create_invitation(
    db: Database,
    *,
    province_region: str,
    region: str,
    name: str | None = None,
    ttl: dt.timedelta = DEFAULT_TTL,
    created_by: str,
    now: dt.datetime | None = None,
) -> Invitation:
    """Mint a one-time invitation for the city ``region`` that expires after ``ttl``.

    ``now`` defaults to the current time (tests pass a past one to mint an expired invitation).
    """
    problem = city_problem(province_region, region)
    if problem is not None:
        raise InvalidArgument(f"region: {problem}")
    known = FUJIAN_DIVISIONS.get(region)
    if name is None or not name.strip():
        if known is None:
            raise InvalidArgument(f"name: region {region} is not in the division table; name it")
        name = known
    elif known is not None and known != name:
        raise InvalidArgument(f"name: region {region} is {known}, not {quote(name)}")
    if not dt.timedelta(minutes=1) <= ttl <= MAX_TTL:
        raise InvalidArgument("ttl: an invitation lives between 1 minute and 7 days")
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = created + ttl

    async def tx(session: AsyncSession) -> None:
        session.add(
            InvitationRow(
                token_hash=token_hash(token),
                region=region,
                name=name,
                created_at=created,
                expires_at=expires,
                created_by=created_by[:300],
            )
        )

    await db.write("create_invitation", tx)
    return Invitation(token, region, name, expires)


async def _redeem(
    session: AsyncSession, token: str, region: str, now: dt.datetime
) -> InvitationRow:
    statement = (
        select(InvitationRow).where(InvitationRow.token_hash == token_hash(token)).with_for_update()
    )
    row = (await session.exec(statement)).first()
    if row is None:
        raise Unauthenticated("unknown invitation: ask the province operator for a new one")
    if row.used_at is not None:
        raise FailedPrecondition(
            f"this invitation was already used at {cst(row.used_at)}; an invitation admits "
            "one city once: ask the province operator for a new one"
        )
    expires = (
        row.expires_at.replace(tzinfo=dt.UTC) if row.expires_at.tzinfo is None else row.expires_at
    )
    if expires <= now:
        raise FailedPrecondition(
            f"this invitation expired at {cst(expires)}: ask the province operator for a new one"
        )
    if row.region != region:
        raise PermissionDenied(
            f"this invitation is for region {row.region} ({row.name}), not {region}"
        )
    row.used_at = now
    session.add(row)
    return row


async def redeem(db: Database, token: str, region: str) -> InvitationRow:
    """Use up the invitation ``token`` for ``region`` (one write transaction)."""

    async def tx(session: AsyncSession) -> InvitationRow:
        return await _redeem(session, token, region, dt.datetime.now(dt.UTC))

    return await db.write("redeem_invitation", tx)


@dataclass(frozen=True)
class JoinApplication:
    """What a joining city sends (FederationService.JoinRequest): a token and CSRs, no keys."""

    token: str
    region: str
    name: str
    ca_csr_pem: str
    node_csr_pem: str
    listen_address: str


@dataclass(frozen=True)
class Admission:
    """The outcome of a successful join: the city's CA, signed by the province root."""

    region: str
    name: str
    ca_cert: x509.Certificate


_PEM_BEGIN = "-----BEGIN "
_PEM_END = re.compile(r"-----END [A-Z0-9 ]+-----")


def _load_csr(pem: str, what: str) -> x509.CertificateSigningRequest:
    """The one certificate request in ``pem``. The field must hold exactly one PEM block and
    nothing else but surrounding whitespace: the PEM reader would silently take the first of
    two blocks and skip text around it, so the province would sign something other than what
    the city operator saw in the field."""
    text = pem.strip()
    blocks = text.count(_PEM_BEGIN)
    end = _PEM_END.search(text)
    if blocks != 1 or not text.startswith(_PEM_BEGIN) or end is None or end.end() != len(text):
        found = "no" if blocks == 0 else str(blocks)
        raise InvalidArgument(
            f"{what}: must hold exactly one PEM block (a certificate request) and nothing "
            f"else; it holds {found} PEM block{'' if blocks == 1 else 's'}"
            + (" with other text around it" if blocks == 1 else "")
        )
    try:
        return x509.load_pem_x509_csr(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidArgument(f"{what}: not a PEM certificate request ({exc})") from None


def check_application(
    application: JoinApplication, *, province_region: str, trust_domain: str
) -> x509.CertificateSigningRequest:
    """Everything about a join request that needs no database; returns the CA's CSR."""
    if not application.token:
        raise Unauthenticated("invitation_token: a join needs the province's invitation")
    problem = city_problem(province_region, application.region)
    if problem is not None:
        raise InvalidArgument(f"region: {problem}")
    known = FUJIAN_DIVISIONS.get(application.region)
    if known is not None and known != application.name:
        raise InvalidArgument(
            f"name: region {application.region} is {known}, not {quote(application.name)}"
        )
    host, sep, port = application.listen_address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise InvalidArgument(
            f"listen_address: {quote(application.listen_address)} must be HOST:PORT where the "
            "city node serves"
        )
    ca_csr = _load_csr(application.ca_csr_pem, "city_ca_csr_pem")
    node_csr = _load_csr(application.node_csr_pem, "node_csr_pem")
    try:
        check_ca_csr(ca_csr, region=application.region, trust_domain=trust_domain)
    except PkiError as exc:
        raise InvalidArgument(f"city_ca_csr_pem: {exc}") from None
    try:
        check_node_csr(node_csr, region=application.region, trust_domain=trust_domain)
    except PkiError as exc:
        raise InvalidArgument(f"node_csr_pem: {exc}") from None
    return ca_csr


async def admit(
    db: Database,
    application: JoinApplication,
    *,
    root: KeyPair,
    province_region: str,
    trust_domain: str,
) -> Admission:
    """Check the application, then in ONE write transaction redeem its invitation, sign the
    city's CA (constrained to the invitation's region) and record the member.

    A city that joined before (re-invited, e.g. after losing its keys) is recorded again with
    its new CA and endpoint.
    """
    ca_csr = check_application(
        application, province_region=province_region, trust_domain=trust_domain
    )

    async def tx(session: AsyncSession) -> Admission:
        now = dt.datetime.now(dt.UTC)
        invitation = await _redeem(session, application.token, application.region, now)
        try:
            ca_cert = sign_intermediate(
                root,
                ca_csr,
                region=invitation.region,
                region_name=invitation.name,
                trust_domain=trust_domain,
            )
        except PkiError as exc:  # checked above; kept so a refusal never burns the token
            raise InvalidArgument(f"city_ca_csr_pem: {exc}") from None
        member = await session.get(FederationMemberRow, invitation.region, with_for_update=True)
        if member is None:
            member = FederationMemberRow(
                region=invitation.region,
                name=invitation.name,
                endpoint=application.listen_address[:300],
                ca_serial_hex=serial_hex(ca_cert),
                joined_at=now,
                approved_sub_platform=False,
            )
        else:
            member.name = invitation.name
            member.endpoint = application.listen_address[:300]
            member.ca_serial_hex = serial_hex(ca_cert)
            member.joined_at = now
        session.add(member)
        return Admission(invitation.region, invitation.name, ca_cert)

    return await db.write("admit_city", tx)


async def members(db: Database) -> list[FederationMemberRow]:
    """The cities that joined, by region."""

    async def tx(session: AsyncSession) -> list[FederationMemberRow]:
        rows = await session.exec(select(FederationMemberRow).order_by(FederationMemberRow.region))
        return list(rows.all())

    return await db.read("federation_members", tx)


#: Invitations one read lists at most (a page of the operator console).
MAX_INVITATIONS_PAGE = 100


async def invitations(
    db: Database, *, offset: int = 0, limit: int = 50
) -> tuple[list[InvitationRow], bool]:
    """One page of the invitations minted here, newest first (only their tokens' hashes are
    kept), and whether more follow."""
    limit = max(1, min(limit, MAX_INVITATIONS_PAGE))

    async def tx(session: AsyncSession) -> list[InvitationRow]:
        rows = await session.exec(
            select(InvitationRow)
            .order_by(col(InvitationRow.created_at).desc(), col(InvitationRow.token_hash))
            .offset(max(0, offset))
            .limit(limit + 1)
        )
        return list(rows.all())

    rows = await db.read("federation_invitations", tx)
    return rows[:limit], len(rows) > limit
