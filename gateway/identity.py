"""Who is calling: SPIFFE identities carried in X.509 URI SANs.

An identity looks like ``spiffe://<region>.<trust-domain>/<role>[/<subject>]``::

    spiffe://350100.fujian.gov.cn/node
    spiffe://350100.fujian.gov.cn/agency/91350100M000100Y43
    spiffe://350000.fujian.gov.cn/authority
    spiffe://350000.fujian.gov.cn/tester/lab-1
    spiffe://350000.fujian.gov.cn/portal/opendata-1

The region sits in the host because X.509 URI name constraints apply to the host: a city CA
permitted only ``350100.<trust-domain>`` cannot mint a 厦门 identity that a peer accepts. The
TLS stack enforces that during the handshake; :func:`check_chain` enforces it again after the
handshake from the verified chain, so the rule never rests on one layer.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from cryptography import x509

from gateway.quote import quote


class Role(enum.StrEnum):
    NODE = "node"  # a govnode node (province or city)
    AGENCY = "agency"  # 政务部门: an agency system, subject = its 统一社会信用代码
    AUTHORITY = "authority"  # 数据管理机构: the data management authority of a region
    TESTER = "tester"  # a conformance tester (第三十一条)
    #: The public open data portal (开放平台, 第三十条), subject = its name: it serves the public
    #: over HTTPS and calls its node for them; it may call only the open data RPCs the public
    #: uses (gateway.roles).
    PORTAL = "portal"
    #: An operator of the node's web console (node.console), subject ``<console role>.<name>``
    #: (e.g. ``security.alice``): the console role after X-Road's model rides in the identity
    #: itself, so a certificate cannot be reused for another role. Operators call nothing on
    #: the gRPC port but health (gateway.roles.CONFINED).
    OPERATOR = "operator"


class ConsoleRole(enum.StrEnum):
    """What an operator may do in the console (X-Road's roles, node.console._identity)."""

    OBSERVER = "observer"  # reads every page, changes nothing
    SERVICE = "service"  # catalog, applications and change desks, open data and 纠错 desks
    SECURITY = "security"  # certificates: issue and revoke
    SYSTEM = "system"  # config view, maintenance mode, backups


_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_REGION_RE = re.compile(r"^[1-9][0-9]{5}$")
_OPERATOR_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


class IdentityError(ValueError):
    """A certificate or URI does not carry a valid govnode identity."""


@dataclass(frozen=True)
class Identity:
    region: str
    trust_domain: str
    role: Role
    subject: str = ""

    @property
    def host(self) -> str:
        return f"{self.region}.{self.trust_domain}"

    @property
    def uri(self) -> str:
        path = f"/{self.role.value}" + (f"/{self.subject}" if self.subject else "")
        return f"spiffe://{self.host}{path}"

    def __str__(self) -> str:
        return self.uri


def validate_trust_domain(trust_domain: str) -> str:
    if not _TRUST_DOMAIN_RE.match(trust_domain) or len(trust_domain) > 200:
        raise IdentityError(
            f"trust domain {quote(trust_domain)} must be a lower-case DNS name such as "
            "fujian.gov.cn"
        )
    return trust_domain


def make_identity(region: str, trust_domain: str, role: Role, subject: str = "") -> Identity:
    """Build an identity, checking every part (used when issuing certificates)."""
    if not _REGION_RE.match(region):
        raise IdentityError(f"region {quote(region)} is not a six-digit division code")
    validate_trust_domain(trust_domain)
    if role in (Role.AGENCY, Role.TESTER, Role.PORTAL):
        if not _SUBJECT_RE.match(subject):
            raise IdentityError(f"{role.value} identity needs a subject, got {quote(subject)}")
    elif role is Role.OPERATOR:
        operator_subject(subject)
    elif subject:
        raise IdentityError(f"{role.value} identity takes no subject, got {quote(subject)}")
    return Identity(region, trust_domain, role, subject)


def operator_subject(subject: str) -> tuple[ConsoleRole, str]:
    """The console role and name of an operator identity's subject ``<role>.<name>``."""
    role, dot, name = subject.partition(".")
    if not dot or role not in ConsoleRole.__members__.values():
        raise IdentityError(
            f"operator identity needs a subject <role>.<name> with role one of "
            f"{', '.join(ConsoleRole)}, got {quote(subject)}"
        )
    if not _OPERATOR_NAME_RE.match(name):
        raise IdentityError(
            f"operator name {quote(name)} must be 1-48 letters, digits, '-' or '_' "
            "(starting with a letter or digit)"
        )
    return ConsoleRole(role), name


def provider_identity(region: str, trust_domain: str, provider_code: str) -> str:
    """The SPIFFE ID of a resource's provider agency (where its notifications go)."""
    return f"spiffe://{region}.{trust_domain}/agency/{provider_code}"


def authority_identity(region: str, trust_domain: str) -> str:
    """The SPIFFE ID of a region's data management authority (数据管理机构)."""
    return f"spiffe://{region}.{trust_domain}/authority"


def parse_spiffe(uri: str) -> Identity:
    """Parse a SPIFFE URI into an :class:`Identity`, or raise :class:`IdentityError`."""
    if not uri.startswith("spiffe://"):
        raise IdentityError(f"{quote(uri)} is not a spiffe:// URI")
    rest = uri[len("spiffe://") :]
    host, _, path = rest.partition("/")
    region, _, trust_domain = host.partition(".")
    parts = path.split("/") if path else []
    if not parts:
        raise IdentityError(f"{quote(uri)} has no role in its path")
    try:
        role = Role(parts[0])
    except ValueError:
        raise IdentityError(f"{quote(uri)} has unknown role {quote(parts[0])}") from None
    if len(parts) > 2:
        raise IdentityError(f"{quote(uri)} has too many path segments")
    subject = parts[1] if len(parts) == 2 else ""
    identity = make_identity(region, trust_domain, role, subject)
    if identity.uri != uri:
        raise IdentityError(f"{quote(uri)} is not in canonical form ({identity.uri})")
    return identity


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [
        u
        for u in san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("spiffe://")
    ]


def identity_of(cert: x509.Certificate) -> Identity:
    """The one govnode identity a certificate carries."""
    uris = spiffe_uris(cert)
    if len(uris) != 1:
        raise IdentityError(
            f"certificate must carry exactly one spiffe:// URI SAN, found {len(uris)}"
        )
    return parse_spiffe(uris[0])


def permitted_uri_hosts(ca: x509.Certificate) -> list[str] | None:
    """The URI hosts a CA's NameConstraints permit, or None when it has no URI constraint."""
    try:
        nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    subtrees = nc.permitted_subtrees or []
    hosts = [n.value for n in subtrees if isinstance(n, x509.UniformResourceIdentifier)]
    return hosts or None


def _host_permitted(host: str, constraint: str) -> bool:
    # RFC 5280 4.2.1.10: a constraint starting with "." matches any subdomain; otherwise the
    # host must match exactly.
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def check_chain(chain: list[x509.Certificate], trust_domain: str) -> Identity:
    """Identity of the leaf of a verified chain (leaf first), after re-checking the rules.

    - the leaf carries exactly one valid identity in our trust domain;
    - the leaf's issuer is a CA whose URI NameConstraints permit the leaf's host, so every
      identity is vouched for by its own region's CA;
    - every constrained CA above the leaf permits the host too.
    """
    if not chain:
        raise IdentityError("no client certificate was presented")
    leaf = chain[0]
    ident = identity_of(leaf)
    if ident.trust_domain != trust_domain:
        raise IdentityError(
            f"identity {ident} belongs to trust domain {ident.trust_domain!r}, "
            f"this platform's is {trust_domain!r}"
        )
    if len(chain) < 2:
        raise IdentityError(f"identity {ident} was presented without its issuing CA")
    issuer_hosts = permitted_uri_hosts(chain[1])
    if issuer_hosts is None:
        raise IdentityError(
            f"identity {ident} is issued by a CA without a region constraint; "
            "only a region's CA may issue identities"
        )
    for ca in chain[1:]:
        hosts = permitted_uri_hosts(ca)
        if hosts is not None and not any(_host_permitted(ident.host, h) for h in hosts):
            raise IdentityError(
                f"identity {ident} is outside the region its CA may vouch for ({', '.join(hosts)})"
            )
    return ident
