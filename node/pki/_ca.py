"""The platform's PKI (DESIGN.md, "Identity and PKI"); ECDSA P-256 and SHA-256 everywhere.

- province root CA: self-signed, pathlen 1, no name constraints, ~20 years;
- one intermediate CA per region, the province (350000) included: pathlen 0, critical
  NameConstraints permitting only the URI host ``<region>.<trust-domain>``, ~10 years. Only URIs
  are constrained, so node certificates' DNS and IP SANs stay free (RFC 5280 applies a
  constraint only to names of its own type);
- leaves (node, agency, authority, tester), ~1 year.

A CA's CSR asks for ``spiffe://<region>.<trust-domain>``: a SPIFFE ID without a path, which SPIFFE
reads as the trust domain itself, never a workload, so it cannot pass for a caller's identity.
The root still takes the constraints from the ``region`` it was told, never from the CSR.
Files (PEM, key modes, client bundles) live in :mod:`node.pki._files`.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import overload

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.identity import (
    Identity,
    IdentityError,
    Role,
    check_chain,
    make_identity,
    permitted_uri_hosts,
    validate_trust_domain,
)
from gateway.quote import quote
from node.codes import credit_code_problem, region_problem

ROOT_DAYS = 7300
INTERMEDIATE_DAYS = 3650
LEAF_DAYS = 365
#: Backdating of not_valid_before, so a peer whose clock runs a little slow accepts a fresh cert.
CLOCK_SKEW = dt.timedelta(minutes=5)

_HASH = hashes.SHA256()
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DNS_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class PkiError(ValueError):
    """A certificate, key or request the PKI refuses to use or to produce."""


@dataclass(frozen=True)
class KeyPair:
    """A private key and the certificate for its public key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def __post_init__(self) -> None:
        if self.key.public_key() != self.cert.public_key():
            raise PkiError(
                f"private key does not belong to certificate {self.cert.subject.rfc4514_string()}"
            )


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    # The database stores UTC; SQLite hands it back naive, so naive means UTC here.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _require_p256(public_key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise PkiError(f"{what} must use an ECDSA P-256 key")
    return public_key


def _require_ca(ca: KeyPair) -> None:
    try:
        is_ca = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PkiError(f"{ca.cert.subject.rfc4514_string()} is not a CA certificate")


def _subject(common_name: str, organization: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _organization(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else None


def region_ca_uri(region: str, trust_domain: str) -> str:
    """The URI a region's CA requests in its CSR: ``spiffe://<region>.<trust-domain>``."""
    return f"spiffe://{region}.{validate_trust_domain(trust_domain)}"


def host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """DNS and IP SANs for the hosts a node serves: IP literals become IPAddress, names DNSName."""
    names: list[x509.GeneralName] = []
    for raw in hosts:
        host = raw.strip().strip("[]")
        name: x509.GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            if not _DNS_RE.match(host.lower()):
                raise PkiError(f"host {raw!r} is neither an IP address nor a DNS name") from None
            name = x509.DNSName(host.lower())
        if name not in names:
            names.append(name)
    return names


# --- CA certificates ----------------------------------------------------------------------


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    # CAs sign certificates and CRLs; leaves only sign (ECDHE handshakes, caller assertions).
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())  # 159 random bits
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, public_key: ec.EllipticCurvePublicKey, path_length: int
) -> x509.CertificateBuilder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def create_root_ca(
    region: str, region_name: str, trust_domain: str, *, days: int = ROOT_DAYS
) -> KeyPair:
    """The province's self-signed root CA (pathlen 1, no name constraints)."""
    problem = region_problem(region)
    if problem is not None or not region.endswith("0000"):
        raise PkiError(problem or f"only a province holds the root CA, {region} is a city")
    validate_trust_domain(trust_domain)
    key = generate_key()
    name = _subject(f"{region_name} govnode root CA", region_name)
    now = _now()
    builder = _builder(
        name, name, key.public_key(), now - CLOCK_SKEW, now + dt.timedelta(days=days)
    )
    return KeyPair(key, _ca_extensions(builder, key.public_key(), 1).sign(key, _HASH))


def create_csr(
    key: ec.EllipticCurvePrivateKey,
    identity: Identity,
    *,
    common_name: str,
    is_ca: bool,
    hosts: Sequence[str] = (),
    organization: str | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR for a region's CA (``is_ca``) or for a leaf such as the city's node certificate.

    For a CA only the identity's host counts: the CSR requests ``spiffe://<identity.host>``
    (see the module docstring), so pass any identity of the region, e.g. its node identity.
    For a leaf the CSR requests the identity itself plus DNS/IP SANs for ``hosts``.
    """
    if is_ca and hosts:
        raise PkiError("a CA certificate request carries no DNS or IP names")
    uri = f"spiffe://{identity.host}" if is_ca else identity.uri
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri), *host_names(hosts)]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(common_name, organization))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .sign(key, _HASH)
    )


def _csr_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    if not csr.is_signature_valid:
        raise PkiError("certificate request signature is invalid (tampered or corrupted)")
    _require_p256(csr.public_key(), "certificate request")
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        raise PkiError("certificate request carries no subject alternative name") from None


def _requested_uri(sans: list[x509.GeneralName]) -> str:
    uris = [n.value for n in sans if isinstance(n, x509.UniformResourceIdentifier)]
    if len(uris) != 1:
        raise PkiError(f"certificate request must carry exactly one URI, found {len(uris)}")
    return str(uris[0])


def check_ca_csr(
    csr: x509.CertificateSigningRequest, *, region: str, trust_domain: str
) -> ec.EllipticCurvePublicKey:
    """Check a region CA's CSR (signature, P-256, exactly ``spiffe://<region>.<td>``); its key."""
    problem = region_problem(region)
    if problem is not None:
        raise PkiError(problem)
    expected = region_ca_uri(region, trust_domain)
    sans = _csr_sans(csr)
    requested = _requested_uri(sans)
    if requested != expected or len(sans) != 1:
        raise PkiError(
            f"certificate request asks for {quote(requested)} (with {len(sans)} names); "
            f"a CA for region {region} must ask for exactly {expected}"
        )
    return _require_p256(csr.public_key(), "certificate request")


def sign_intermediate(
    root: KeyPair,
    csr: x509.CertificateSigningRequest,
    *,
    region: str,
    region_name: str,
    trust_domain: str,
    days: int = INTERMEDIATE_DAYS,
) -> x509.Certificate:
    """Sign a region's CA. Constraints and subject come from ``region``, never from the CSR."""
    _require_ca(root)
    public_key = check_ca_csr(csr, region=region, trust_domain=trust_domain)
    expected = region_ca_uri(region, trust_domain)
    constraint = x509.NameConstraints(
        [x509.UniformResourceIdentifier(f"{region}.{trust_domain}")], None
    )
    now = _now()
    builder = _builder(
        _subject(f"{region_name} govnode CA", region_name),
        root.cert.subject,
        public_key,
        now - CLOCK_SKEW,
        min(now + dt.timedelta(days=days), root.cert.not_valid_after_utc),
    )
    builder = (
        _ca_extensions(builder, public_key, 0)
        .add_extension(constraint, critical=True)
        .add_extension(_aki(root), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(expected)]), critical=False
        )
    )
    return builder.sign(root.key, _HASH)


def create_intermediate(
    root: KeyPair,
    region: str,
    region_name: str,
    trust_domain: str,
    *,
    days: int = INTERMEDIATE_DAYS,
) -> KeyPair:
    """Key, CSR and signature in one go (province init, where root and CA share a machine)."""
    key = generate_key()
    ident = make_identity(region, trust_domain, Role.NODE)
    csr = create_csr(key, ident, common_name=f"{region_name} govnode CA", is_ca=True)
    cert = sign_intermediate(
        root, csr, region=region, region_name=region_name, trust_domain=trust_domain, days=days
    )
    return KeyPair(key, cert)


def _aki(ca: KeyPair) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# --- leaf certificates --------------------------------------------------------------------


def _build_leaf(
    ca: KeyPair,
    identity: Identity,
    public_key: ec.EllipticCurvePublicKey,
    *,
    common_name: str,
    hosts: Sequence[str] = (),
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """Sign a leaf with no policy checks at all. TEST-ONLY: use :func:`issue_leaf`.

    Exists so tests can mint deliberately bad certificates (an identity outside the CA's
    region, an expired validity) and prove that the other layers refuse them.
    """
    # Nodes serve, and act as clients when they forward; everyone else is a client only.
    eku = [ExtendedKeyUsageOID.SERVER_AUTH] if identity.role is Role.NODE else []
    eku.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    sans = [x509.UniformResourceIdentifier(identity.uri), *host_names(hosts)]
    subject = _subject(common_name, _organization(ca.cert))
    return (
        _builder(subject, ca.cert.subject, public_key, _utc(not_before), _utc(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(ca), critical=False)
        .sign(ca.key, _HASH)
    )


@overload
def issue_leaf(
    ca: KeyPair,
    identity: Identity,
    *,
    common_name: str,
    public_key: None = None,
    hosts: Sequence[str] = ...,
    days: int = ...,
    not_before: dt.datetime | None = ...,
    not_after: dt.datetime | None = ...,
) -> KeyPair: ...
@overload
def issue_leaf(
    ca: KeyPair,
    identity: Identity,
    *,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    hosts: Sequence[str] = ...,
    days: int = ...,
    not_before: dt.datetime | None = ...,
    not_after: dt.datetime | None = ...,
) -> x509.Certificate: ...
def issue_leaf(
    ca: KeyPair,
    identity: Identity,
    *,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey | None = None,
    hosts: Sequence[str] = (),
    days: int = LEAF_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> KeyPair | x509.Certificate:
    """Issue a node, agency, authority or tester certificate from a region's CA.

    Without ``public_key`` a fresh key is generated and a :class:`KeyPair` returned; with one
    (from a CSR) only the certificate. Refuses identities the CA's name constraints do not
    permit, so a bad certificate is never minted by accident. ``not_before``/``not_after``
    override the validity (tests mint expired certificates with them); otherwise the cert is
    valid from now minus :data:`CLOCK_SKEW` for ``days``, capped at the CA's own expiry.
    """
    _require_ca(ca)
    try:  # an Identity can be built without checks; issuing re-checks every part
        identity = make_identity(
            identity.region, identity.trust_domain, identity.role, identity.subject
        )
    except IdentityError as exc:
        raise PkiError(str(exc)) from None
    if identity.role is Role.AGENCY and (problem := credit_code_problem(identity.subject)):
        raise PkiError(f"agency identity {identity}: 统一社会信用代码 {problem}")
    if hosts and identity.role is not Role.NODE:
        raise PkiError(f"only node certificates carry DNS/IP names, not {identity.role.value}")
    permitted = permitted_uri_hosts(ca.cert)
    if permitted is None or identity.host not in permitted:
        raise PkiError(
            f"CA {ca.cert.subject.rfc4514_string()} may only vouch for "
            f"{', '.join(permitted or ['nobody (it has no region constraint)'])}, "
            f"not for {identity}"
        )
    key = generate_key() if public_key is None else None
    leaf_public = _require_p256(key.public_key() if key else public_key, "leaf key")
    now = _now()
    start = _utc(not_before) if not_before else now - CLOCK_SKEW
    end = (
        _utc(not_after)
        if not_after
        else min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    )
    if end <= start:
        raise PkiError(f"certificate would expire ({end:%Y-%m-%d %H:%M}) before it starts")
    cert = _build_leaf(
        ca,
        identity,
        leaf_public,
        common_name=common_name,
        hosts=hosts,
        not_before=start,
        not_after=end,
    )
    try:  # the same rule peers apply, so what we mint is what they accept
        check_chain([cert, ca.cert], identity.trust_domain)
    except IdentityError as exc:
        raise PkiError(str(exc)) from None
    return KeyPair(key, cert) if key else cert


def issue_out_of_region_probe(
    ca: KeyPair, identity: Identity, *, common_name: str, days: int
) -> KeyPair:
    """A negative certificate for conformance testing (第三十一条): signed by ``ca`` but
    carrying an identity outside what ``ca``'s name constraints let it vouch for, which every
    peer must refuse (BoringSSL at the handshake, then :func:`check_chain`).

    :func:`issue_leaf` refuses to mint such a thing, and should; this is the one deliberate way
    around it, and it mints nothing else: an identity the CA may vouch for is refused here, and
    the result is checked to fail the peers' rule before it is returned.
    """
    _require_ca(ca)
    permitted = permitted_uri_hosts(ca.cert) or []
    if identity.host in permitted:
        raise PkiError(
            f"{identity} is within what CA {ca.cert.subject.rfc4514_string()} may vouch for: "
            "issue it with issue_leaf, not as an out-of-region probe"
        )
    key = generate_key()
    now = _now()
    cert = _build_leaf(
        ca,
        identity,
        key.public_key(),
        common_name=common_name,
        not_before=now - CLOCK_SKEW,
        not_after=min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc),
    )
    try:
        check_chain([cert, ca.cert], identity.trust_domain)
    except IdentityError:
        return KeyPair(key, cert)
    raise PkiError(f"{identity} from {ca.cert.subject.rfc4514_string()} would be accepted")


def check_node_csr(
    csr: x509.CertificateSigningRequest, *, region: str, trust_domain: str
) -> list[str]:
    """Check a node CSR asks for exactly the region's node identity (plus DNS/IP names only);
    returns those host names."""
    expected = make_identity(region, trust_domain, Role.NODE)
    sans = _csr_sans(csr)
    requested = _requested_uri(sans)
    if requested != expected.uri:
        raise PkiError(f"node certificate request asks for {quote(requested)}, expected {expected}")
    hosts = [str(n.value) for n in sans if isinstance(n, x509.DNSName | x509.IPAddress)]
    if len(hosts) != len(sans) - 1:
        raise PkiError("node certificate request may carry only its URI and DNS/IP names")
    _require_p256(csr.public_key(), "certificate request")
    return hosts


def sign_node_csr(
    ca: KeyPair,
    csr: x509.CertificateSigningRequest,
    *,
    region: str,
    trust_domain: str,
    days: int = LEAF_DAYS,
) -> x509.Certificate:
    """Sign a region's node certificate from its CSR, keeping the CSR's DNS/IP names.

    The CSR must ask for exactly the region's node identity; the subject comes from the CA.
    """
    expected = make_identity(region, trust_domain, Role.NODE)
    hosts = check_node_csr(csr, region=region, trust_domain=trust_domain)
    return issue_leaf(
        ca,
        expected,
        common_name=f"{_organization(ca.cert) or region} govnode node",
        public_key=_require_p256(csr.public_key(), "certificate request"),
        hosts=hosts,
        days=days,
    )


# --- fingerprints, serials, revocation ----------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as ``SHA256:AB:CD:...`` (32 upper-case hex pairs)."""
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def parse_fingerprint(text: str) -> bytes:
    """The digest a fingerprint names, accepting any case, with or without ``SHA256:``/colons."""
    cleaned = text.strip()
    if cleaned[:7].upper() == "SHA256:":
        cleaned = cleaned[7:]
    cleaned = cleaned.replace(":", "").replace(" ", "")
    if len(cleaned) != 64:
        raise PkiError(f"fingerprint {text!r} must be 64 hex digits (SHA-256)")
    try:
        return binascii.unhexlify(cleaned)
    except binascii.Error:
        raise PkiError(f"fingerprint {text!r} is not hexadecimal") from None


def fingerprint_matches(cert: x509.Certificate, text: str) -> bool:
    """Whether ``text`` (any accepted fingerprint form) names ``cert``; constant time."""
    return hmac.compare_digest(
        hashlib.sha256(cert.public_bytes(Encoding.DER)).digest(), parse_fingerprint(text)
    )


def serial_hex(cert: x509.Certificate | int) -> str:
    """Lower-case hex serial without ``0x``: the form the revocation table stores."""
    serial = cert if isinstance(cert, int) else cert.serial_number
    return f"{serial:x}"


def _reason(reason: str) -> x509.ReasonFlags:
    for flag in x509.ReasonFlags:
        if reason in (flag.value, flag.name):
            return flag
    choices = ", ".join(f.value for f in x509.ReasonFlags)
    raise PkiError(f"revocation reason {reason!r} is not one of {choices}")


def create_crl(
    ca: KeyPair,
    revoked: Iterable[tuple[int, dt.datetime, str]],
    *,
    next_update_days: int = 7,
    crl_number: int | None = None,
) -> x509.CertificateRevocationList:
    """The CA's signed revocation list for ``(serial, revoked_at, reason)`` rows.

    The database is the source of truth; the CRL is the signed artefact that travels to other
    nodes. ``crl_number`` defaults to the current Unix time, which only ever grows. Naive
    datetimes are taken as UTC. Reason ``unspecified`` is left out, as RFC 5280 asks.
    """
    _require_ca(ca)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + dt.timedelta(days=next_update_days))
        .add_extension(_aki(ca), critical=False)
    )
    number = int(now.timestamp()) if crl_number is None else crl_number
    builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for serial, revoked_at, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial)
        entry = entry.revocation_date(_utc(revoked_at))
        flag = _reason(reason)
        if flag is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, _HASH)
