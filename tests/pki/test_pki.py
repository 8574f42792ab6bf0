"""The platform PKI, with real keys and real signatures.

Chains are checked three ways: link by link with ``cryptography``, by
:func:`gateway.identity.check_chain` (the node's own rule), and by a real mutual-TLS handshake
through OpenSSL (Python's ``ssl`` over memory BIOs), which enforces URI name constraints the
way BoringSSL under gRPC does. ``cryptography``'s own ``x509.verification`` cannot be used:
it supports only DNS and IP name constraints and refuses any chain with a URI constraint.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from gateway.identity import (
    IdentityError,
    Role,
    check_chain,
    identity_of,
    make_identity,
    permitted_uri_hosts,
)
from node.codes import make_credit_code
from node.pki import _ca as pki
from node.pki import load_certs, load_chain_pem, load_keypair, verify_chain, write_pem
from node.pki._files import write_client_bundle, write_private_key

TD = "fujian.gov.cn"
AGENCY_CODE = make_credit_code("11350100M00010010")  # a 福州 agency
XM_AGENCY_CODE = make_credit_code("11350200M00020020")  # a 厦门 agency


@dataclass(frozen=True)
class Platform:
    root: pki.KeyPair
    province: pki.KeyPair  # the province's own intermediate (region 350000)
    fuzhou: pki.KeyPair
    xiamen: pki.KeyPair


@pytest.fixture(scope="module")
def platform() -> Platform:
    root = pki.create_root_ca("350000", "福建省", TD)
    return Platform(
        root=root,
        province=pki.create_intermediate(root, "350000", "福建省", TD),
        fuzhou=pki.create_intermediate(root, "350100", "福州市", TD),
        xiamen=pki.create_intermediate(root, "350200", "厦门市", TD),
    )


def _agency(ca: pki.KeyPair, region: str = "350100", code: str = AGENCY_CODE) -> pki.KeyPair:
    ident = make_identity(region, TD, Role.AGENCY, code)
    return pki.issue_leaf(ca, ident, common_name="福州市测试局")


def _node(ca: pki.KeyPair, region: str) -> pki.KeyPair:
    ident = make_identity(region, TD, Role.NODE)
    return pki.issue_leaf(ca, ident, common_name="node", hosts=["127.0.0.1", "localhost"])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _mtls_handshake(
    tmp_path: Path,
    root: x509.Certificate,
    server: pki.KeyPair,
    server_chain: list[x509.Certificate],
    client: pki.KeyPair,
    client_chain: list[x509.Certificate],
) -> None:
    """A full mutual-TLS handshake through OpenSSL over memory BIOs; raises ssl.SSLError."""
    files = {}
    for name, kp, chain in (("server", server, server_chain), ("client", client, client_chain)):
        files[name] = (
            write_pem(tmp_path / f"{name}.crt", kp.cert, *chain),
            write_private_key(tmp_path / f"{name}.key", kp.key, overwrite=True),
        )
    ca_file = write_pem(tmp_path / "ca.crt", root)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*files["server"])
    server_ctx.load_verify_locations(ca_file)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(*files["client"])
    client_ctx.load_verify_locations(ca_file)

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, conn in (("c", c), ("s", s)):
            if not done[key]:
                try:
                    conn.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server checks the client's certificate after the client finishes;
            # reading application data surfaces a refusal on either side.
            c.write(b"ping")
            s_in.write(c_out.read())
            assert s.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


# --- hierarchy ----------------------------------------------------------------------------


def test_root_province_and_city_cas_form_a_chain_that_vouches_for_an_agency(
    platform: Platform,
) -> None:
    agency = _agency(platform.fuzhou)
    agency.cert.verify_directly_issued_by(platform.fuzhou.cert)
    for ca in (platform.province, platform.fuzhou):
        ca.cert.verify_directly_issued_by(platform.root.cert)
        bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca and bc.path_length == 0
    platform.root.cert.verify_directly_issued_by(platform.root.cert)
    root_bc = platform.root.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.value.path_length == 1
    assert permitted_uri_hosts(platform.root.cert) is None
    ident = check_chain([agency.cert, platform.fuzhou.cert, platform.root.cert], TD)
    assert ident == make_identity("350100", TD, Role.AGENCY, AGENCY_CODE)


def test_a_nodes_chain_is_handed_to_verifiers_without_the_root(
    platform: Platform, tmp_path: Path
) -> None:
    """A node's tls.cert may end with the root; what it hands a verifier with its signatures
    (proof files, checkpoints, usage statements) is the chain below it, which the verifier
    checks against the root it holds itself."""
    node = _node(platform.fuzhou, "350100")
    cert = write_pem(tmp_path / "node.crt", node.cert, platform.fuzhou.cert, platform.root.cert)
    chain_pem = load_chain_pem(cert, platform.root.cert)
    assert x509.load_pem_x509_certificates(chain_pem.encode()) == [node.cert, platform.fuzhou.cert]
    identity, leaf = verify_chain(chain_pem, platform.root.cert, TD)
    assert leaf == node.cert and identity == make_identity("350100", TD, Role.NODE)


def test_openssl_accepts_mutual_tls_between_province_node_and_city_agency(
    platform: Platform, tmp_path: Path
) -> None:
    _mtls_handshake(
        tmp_path,
        platform.root.cert,
        _node(platform.province, "350000"),
        [platform.province.cert],
        _agency(platform.fuzhou),
        [platform.fuzhou.cert],
    )


def test_cryptography_verifier_cannot_check_uri_name_constraints(platform: Platform) -> None:
    # Why the handshake above goes through OpenSSL: pyca's verifier refuses the constraint
    # type rather than ignoring it. If this starts passing, use the verifier in these tests.
    verifier = PolicyBuilder().store(Store([platform.root.cert])).build_client_verifier()
    with pytest.raises(VerificationError, match="unsupported name constraint"):
        verifier.verify(_agency(platform.fuzhou).cert, [platform.fuzhou.cert])


def test_city_ca_is_constrained_to_its_own_region_uri_host_only(platform: Platform) -> None:
    ext = platform.fuzhou.cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert ext.value.permitted_subtrees == [x509.UniformResourceIdentifier(f"350100.{TD}")]
    assert ext.value.excluded_subtrees is None
    assert permitted_uri_hosts(platform.province.cert) == [f"350000.{TD}"]


def test_issue_leaf_refuses_an_identity_of_another_region(platform: Platform) -> None:
    with pytest.raises(pki.PkiError, match=f"350100.{TD}"):
        _agency(platform.fuzhou, region="350200", code=XM_AGENCY_CODE)
    with pytest.raises(pki.PkiError, match="vouch"):
        _node(platform.province, "350100")  # the province CA cannot mint a city node either


def test_issue_leaf_refuses_an_agency_without_a_valid_credit_code(platform: Platform) -> None:
    bad = AGENCY_CODE[:-1] + ("0" if AGENCY_CODE[-1] != "0" else "1")
    with pytest.raises(pki.PkiError, match="统一社会信用代码"):
        _agency(platform.fuzhou, code=bad)


def _forged_xiamen_node(platform: Platform) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return pki._build_leaf(
        platform.fuzhou,
        make_identity("350200", TD, Role.NODE),
        pki.generate_key().public_key(),
        common_name="forged",
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )


def test_a_forged_identity_from_the_test_only_path_is_refused_by_check_chain(
    platform: Platform,
) -> None:
    forged = _forged_xiamen_node(platform)
    assert identity_of(forged) == make_identity("350200", TD, Role.NODE)
    with pytest.raises(IdentityError, match=rf"350200\.{re.escape(TD)}.*350100\.{TD}"):
        check_chain([forged, platform.fuzhou.cert, platform.root.cert], TD)


def test_a_forged_identity_is_refused_by_openssl_during_the_handshake(
    platform: Platform, tmp_path: Path
) -> None:
    forged_key = pki.generate_key()
    now = dt.datetime.now(dt.UTC)
    forged = pki._build_leaf(
        platform.fuzhou,
        make_identity("350200", TD, Role.AGENCY, XM_AGENCY_CODE),
        forged_key.public_key(),
        common_name="forged",
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )
    with pytest.raises(ssl.SSLError, match="permitted subtree violation"):
        _mtls_handshake(
            tmp_path,
            platform.root.cert,
            _node(platform.province, "350000"),
            [platform.province.cert],
            pki.KeyPair(forged_key, forged),
            [platform.fuzhou.cert],
        )


def test_an_expired_certificate_can_be_minted_for_tests(platform: Platform) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = pki.issue_leaf(
        platform.fuzhou,
        make_identity("350100", TD, Role.TESTER, "lab-1"),
        common_name="lab",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    assert expired.cert.not_valid_after_utc < now
    with pytest.raises(pki.PkiError, match="before it starts"):
        pki.issue_leaf(
            platform.fuzhou,
            make_identity("350100", TD, Role.AUTHORITY),
            common_name="x",
            not_after=now - dt.timedelta(days=1),
        )


def test_root_ca_belongs_to_a_province_only() -> None:
    with pytest.raises(pki.PkiError, match="province"):
        pki.create_root_ca("350100", "福州市", TD)


# --- node certificates and CSRs -----------------------------------------------------------


def _assert_node_cert(cert: x509.Certificate) -> None:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca


def test_node_certificate_serves_loopback_and_acts_as_client_too(platform: Platform) -> None:
    _assert_node_cert(_node(platform.fuzhou, "350100").cert)
    agency = _agency(platform.fuzhou).cert
    eku = agency.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not agency.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)


def test_ipv6_loopback_becomes_an_ip_address_san(platform: Platform) -> None:
    node = pki.issue_leaf(
        platform.fuzhou,
        make_identity("350100", TD, Role.NODE),
        common_name="n",
        hosts=["::1", "node.example", "LOCALHOST"],
    )
    san = node.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]
    assert san.get_values_for_type(x509.DNSName) == ["node.example", "localhost"]


def test_city_csrs_round_trip_into_its_ca_and_node_certificates(platform: Platform) -> None:
    ca_key, node_key = pki.generate_key(), pki.generate_key()
    node_ident = make_identity("350400", TD, Role.NODE)
    # The subject claims another city; only the region argument (the invitation) counts.
    ca_csr = pki.create_csr(
        ca_key, node_ident, common_name="厦门市 govnode CA", is_ca=True, organization="厦门市"
    )
    ca_cert = pki.sign_intermediate(
        platform.root, ca_csr, region="350400", region_name="三明市", trust_domain=TD
    )
    assert permitted_uri_hosts(ca_cert) == [f"350400.{TD}"]
    assert ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "三明市"
    ca = pki.KeyPair(ca_key, ca_cert)

    node_csr = pki.create_csr(
        node_key,
        node_ident,
        common_name="三明市 node",
        is_ca=False,
        hosts=["127.0.0.1", "localhost"],
    )
    node_cert = pki.sign_node_csr(ca, node_csr, region="350400", trust_domain=TD, days=30)
    assert node_cert.public_key() == node_key.public_key()
    _assert_node_cert(node_cert)
    assert check_chain([node_cert, ca_cert], TD) == node_ident


def test_ca_csr_for_another_region_is_refused(platform: Platform) -> None:
    csr = pki.create_csr(
        pki.generate_key(), make_identity("350200", TD, Role.NODE), common_name="x", is_ca=True
    )
    with pytest.raises(pki.PkiError, match=r"spiffe://350200\..*region 350500"):
        pki.sign_intermediate(
            platform.root, csr, region="350500", region_name="泉州市", trust_domain=TD
        )


def test_a_leaf_identity_in_a_ca_csr_is_refused(platform: Platform) -> None:
    csr = pki.create_csr(
        pki.generate_key(), make_identity("350500", TD, Role.NODE), common_name="x", is_ca=False
    )
    with pytest.raises(pki.PkiError, match="must ask for exactly"):
        pki.sign_intermediate(
            platform.root, csr, region="350500", region_name="泉州市", trust_domain=TD
        )


def test_a_tampered_csr_is_refused(platform: Platform) -> None:
    csr = pki.create_csr(
        pki.generate_key(),
        make_identity("350500", TD, Role.NODE),
        common_name="govnode CA",
        is_ca=True,
    )
    der = csr.public_bytes(Encoding.DER)
    tampered = x509.load_der_x509_csr(der.replace(b"govnode CA", b"govnode CB"))
    with pytest.raises(pki.PkiError, match="signature is invalid"):
        pki.sign_intermediate(
            platform.root, tampered, region="350500", region_name="泉州市", trust_domain=TD
        )


def test_node_csr_must_ask_for_exactly_the_region_node_identity(platform: Platform) -> None:
    csr = pki.create_csr(
        pki.generate_key(),
        make_identity("350100", TD, Role.AUTHORITY),
        common_name="x",
        is_ca=False,
    )
    with pytest.raises(pki.PkiError, match="expected spiffe://350100"):
        pki.sign_node_csr(platform.fuzhou, csr, region="350100", trust_domain=TD)


# --- fingerprints, serials, revocation ----------------------------------------------------


def test_fingerprint_format_round_trips(platform: Platform) -> None:
    fp = pki.fingerprint(platform.root.cert)
    assert re.fullmatch(r"SHA256:([0-9A-F]{2}:){31}[0-9A-F]{2}", fp)
    bare = fp.removeprefix("SHA256:").replace(":", "")
    for form in (fp, fp.lower(), bare, bare.lower(), f"  sha256:{bare}  "):
        assert pki.fingerprint_matches(platform.root.cert, form)
    assert not pki.fingerprint_matches(platform.fuzhou.cert, fp)
    with pytest.raises(pki.PkiError, match="64 hex digits"):
        pki.parse_fingerprint("SHA256:AB:CD")
    with pytest.raises(pki.PkiError, match="not hexadecimal"):
        pki.parse_fingerprint("Z" * 64)


def test_crl_lists_revoked_serials_and_is_signed_by_the_ca(platform: Platform) -> None:
    a, b = _agency(platform.fuzhou).cert, _node(platform.fuzhou, "350100").cert
    when = dt.datetime(2026, 1, 2, 3, 4, 5)  # naive, as SQLite returns it: UTC
    crl = pki.create_crl(
        platform.fuzhou,
        [(a.serial_number, when, "keyCompromise"), (b.serial_number, when, "unspecified")],
    )
    assert crl.is_signature_valid(platform.fuzhou.key.public_key())
    assert not crl.is_signature_valid(platform.xiamen.key.public_key())
    assert crl.issuer == platform.fuzhou.cert.subject
    revoked = crl.get_revoked_certificate_by_serial_number(a.serial_number)
    assert revoked is not None
    assert revoked.revocation_date_utc == when.replace(tzinfo=dt.UTC)
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(b.serial_number) is not None
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
    with pytest.raises(pki.PkiError, match="revocation reason"):
        pki.create_crl(platform.fuzhou, [(a.serial_number, when, "bored")])


def test_serial_hex_is_lower_case_hex_without_prefix(platform: Platform) -> None:
    cert = _agency(platform.fuzhou).cert
    text = pki.serial_hex(cert)
    assert re.fullmatch(r"[0-9a-f]+", text)
    assert int(text, 16) == cert.serial_number
    assert cert.serial_number.bit_length() <= 159


# --- files --------------------------------------------------------------------------------


def test_key_files_are_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.key"
    old_umask = os.umask(0)  # even a careless umask cannot widen the key's mode
    try:
        write_private_key(path, pki.generate_key())
    finally:
        os.umask(old_umask)
    assert _mode(path) == 0o600
    before = path.read_bytes()
    with pytest.raises(pki.PkiError, match="refusing to overwrite"):
        write_private_key(path, pki.generate_key())
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["node.key"]  # no temp left over


def test_keypair_round_trips_through_files(platform: Platform, tmp_path: Path) -> None:
    node = _node(platform.fuzhou, "350100")
    key_path = write_private_key(tmp_path / "node.key", node.key)
    cert_path = write_pem(tmp_path / "node.crt", node.cert, platform.fuzhou.cert)
    assert _mode(cert_path) == 0o644
    assert load_certs(cert_path) == [node.cert, platform.fuzhou.cert]
    loaded = load_keypair(key_path, cert_path)
    assert loaded.cert == node.cert
    other = write_private_key(tmp_path / "other.key", pki.generate_key())
    with pytest.raises(pki.PkiError, match="does not belong"):
        load_keypair(other, cert_path)


def test_client_bundle_holds_what_grpcurl_needs(platform: Platform, tmp_path: Path) -> None:
    agency = _agency(platform.fuzhou)
    out = tmp_path / "bundle"
    paths = write_client_bundle(out, agency, [platform.fuzhou.cert], platform.root.cert)
    assert {p.name for p in paths.values()} == {"client.key", "client.crt", "ca.crt", "README.txt"}
    assert _mode(paths["key"]) == 0o600
    assert load_certs(paths["cert"]) == [agency.cert, platform.fuzhou.cert]
    assert load_certs(paths["ca"]) == [platform.root.cert]
    readme = paths["readme"].read_text()
    assert "grpcurl -cacert ca.crt -cert client.crt -key client.key HOST:PORT list" in readme
    assert AGENCY_CODE in readme

    key_before = paths["key"].read_bytes()
    with pytest.raises(pki.PkiError, match=r"client\.key exists"):
        write_client_bundle(
            out, _agency(platform.fuzhou), [platform.fuzhou.cert], platform.root.cert
        )
    assert paths["key"].read_bytes() == key_before
    assert load_certs(paths["cert"])[0] == agency.cert


def test_client_bundle_refuses_a_chain_that_did_not_issue_the_leaf(
    platform: Platform, tmp_path: Path
) -> None:
    with pytest.raises(pki.PkiError, match="did not issue"):
        write_client_bundle(
            tmp_path, _agency(platform.fuzhou), [platform.xiamen.cert], platform.root.cert
        )
    assert not (tmp_path / "client.key").exists()
