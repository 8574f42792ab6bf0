"""Signed caller assertions: a forwarded call names its original caller, and the owning node
refuses forged, altered, replayed and misapplied assertions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from govnode.v1 import common_pb2, sharing_pb2

from gateway.assertion import AssertionVerifier, UntrustedAssertion, make_assertion
from gateway.identity import Identity, Role, make_identity
from node.codes import make_credit_code
from node.pki import load_keypair, provision_province
from node.pki._ca import create_intermediate, create_root_ca, generate_key, issue_leaf

TD = "fujian.gov.cn"


def now() -> dt.datetime:
    """Now, when the test runs (not when the module was collected: a long run comes first)."""
    return dt.datetime.now(dt.UTC)


RESOURCE = "350100-1-000001"
REQUEST = sharing_pb2.VerifyRequest(resource_code=RESOURCE, key={"k": "v"}).SerializeToString()
FUZHOU_AGENCY = make_identity("350100", TD, Role.AGENCY, make_credit_code("11350100003592001"))


class Fixture:
    def __init__(self, base: Path) -> None:
        made = provision_province(
            base,
            region="350000",
            name="福建省",
            listen="127.0.0.1:7443",
            trust_domain=TD,
            hosts=["127.0.0.1"],
        )
        tls = made.config_path.parent / "tls"
        self.root = load_keypair(tls / "root.key", tls / "root.crt")
        self.fuzhou_ca = create_intermediate(self.root, "350100", "福州市", TD)
        self.fuzhou_node = issue_leaf(
            self.fuzhou_ca,
            make_identity("350100", TD, Role.NODE),
            common_name="福州 node",
            hosts=["127.0.0.1"],
        )
        self.province_node_identity = make_identity("350000", TD, Role.NODE)
        self.seen: set[bytes] = set()

    async def remember(self, nonce: bytes, expires_at: dt.datetime) -> bool:
        if nonce in self.seen:
            return False
        self.seen.add(nonce)
        return True

    def verifier(self) -> AssertionVerifier:
        return AssertionVerifier(self.root.cert, TD, self.remember)

    def chain(self) -> list[x509.Certificate]:
        return [self.fuzhou_node.cert, self.fuzhou_ca.cert]

    def assertion(
        self, *, caller: Identity = FUZHOU_AGENCY, key: object = None, **kw: object
    ) -> bytes:
        args: dict[str, object] = {
            "caller": caller,
            "node_key": key or self.fuzhou_node.key,
            "node_chain": self.chain(),
            "resource_code": RESOURCE,
            "request_bytes": REQUEST,
            "deadline": now() + dt.timedelta(seconds=10),
            "request_id": "req-1",
        }
        args.update(kw)
        return make_assertion(**args)  # type: ignore[arg-type]


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path / "province")


async def verify(fx: Fixture, blob: bytes, **kw: object) -> object:
    args: dict[str, object] = {
        "forwarder": fx.province_node_identity,
        "resource_code": RESOURCE,
        "request_bytes": REQUEST,
    }
    args.update(kw)
    return await fx.verifier().verify(blob, **args)  # type: ignore[arg-type]


async def test_a_valid_assertion_names_the_original_caller(fx: Fixture) -> None:
    verified = await verify(fx, fx.assertion())
    assert verified.caller == FUZHOU_AGENCY  # type: ignore[attr-defined]
    assert verified.origin_node == make_identity("350100", TD, Role.NODE)  # type: ignore[attr-defined]
    assert verified.request_id == "req-1"  # type: ignore[attr-defined]


async def test_a_replayed_assertion_is_refused(fx: Fixture) -> None:
    blob = fx.assertion()
    await verify(fx, blob)
    with pytest.raises(UntrustedAssertion, match="replay"):
        await verify(fx, blob)


async def test_an_altered_assertion_is_refused(fx: Fixture) -> None:
    signed = common_pb2.SignedCallerAssertion.FromString(fx.assertion())
    body = common_pb2.CallerAssertion.FromString(signed.assertion)
    body.caller_identity = make_identity(
        "350100", TD, Role.AGENCY, make_credit_code("11350100003592002")
    ).uri
    signed.assertion = body.SerializeToString()
    with pytest.raises(UntrustedAssertion, match="signature does not verify"):
        await verify(fx, signed.SerializeToString())


async def test_an_assertion_signed_with_another_key_is_refused(fx: Fixture) -> None:
    with pytest.raises(UntrustedAssertion, match="signature does not verify"):
        await verify(fx, fx.assertion(key=generate_key()))


async def test_an_assertion_from_a_foreign_pki_is_refused(fx: Fixture) -> None:
    foreign_root = create_root_ca("350000", "福建省", TD)
    foreign_ca = create_intermediate(foreign_root, "350100", "福州市", TD)
    node = issue_leaf(foreign_ca, make_identity("350100", TD, Role.NODE), common_name="fake")
    blob = fx.assertion(key=node.key, node_chain=[node.cert, foreign_ca.cert])
    with pytest.raises(UntrustedAssertion, match="does not chain to the province root"):
        await verify(fx, blob)


async def test_only_nodes_sign_and_forward_assertions(fx: Fixture) -> None:
    agency = issue_leaf(fx.fuzhou_ca, FUZHOU_AGENCY, common_name="福州市公安局")
    blob = fx.assertion(key=agency.key, node_chain=[agency.cert, fx.fuzhou_ca.cert])
    with pytest.raises(UntrustedAssertion, match="not by a node"):
        await verify(fx, blob)
    with pytest.raises(UntrustedAssertion, match="is not a node"):
        await verify(fx, fx.assertion(), forwarder=FUZHOU_AGENCY)


async def test_a_node_vouches_only_for_callers_of_its_own_region(fx: Fixture) -> None:
    xiamen_agency = make_identity("350200", TD, Role.AGENCY, make_credit_code("11350200003593001"))
    with pytest.raises(UntrustedAssertion, match="only vouch for callers of its own region"):
        await verify(fx, fx.assertion(caller=xiamen_agency))


async def test_an_assertion_is_bound_to_its_resource_and_request(fx: Fixture) -> None:
    with pytest.raises(UntrustedAssertion, match="is for resource"):
        await verify(fx, fx.assertion(), resource_code="350100-1-000002")
    other = sharing_pb2.VerifyRequest(resource_code=RESOURCE, key={"k": "w"}).SerializeToString()
    with pytest.raises(UntrustedAssertion, match="different request"):
        await verify(fx, fx.assertion(), request_bytes=other)


async def test_expired_and_skewed_assertions_are_refused(fx: Fixture) -> None:
    with pytest.raises(UntrustedAssertion, match="expired"):
        await verify(fx, fx.assertion(deadline=now() - dt.timedelta(seconds=1)))
    late = fx.assertion(
        now=now() - dt.timedelta(minutes=10), deadline=now() + dt.timedelta(seconds=10)
    )
    with pytest.raises(UntrustedAssertion, match="from this node's clock"):
        await verify(fx, late)


async def test_garbage_is_refused_clearly(fx: Fixture) -> None:
    with pytest.raises(UntrustedAssertion, match=r"malformed|no signer"):
        await verify(fx, b"\x0a\x03abc")
