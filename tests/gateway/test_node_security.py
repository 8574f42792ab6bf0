"""A node over real mutual TLS refuses every bad caller and bad message, and stays healthy."""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from govnode.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.auth import AuthenticationError, Authenticator
from gateway.identity import Role, make_identity
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.pki import KeyPair, Revocations, load_keypair
from node.pki._ca import _build_leaf, create_intermediate, create_root_ca, generate_key, issue_leaf
from tests.support.nodes import PUBLIC_SECURITY, ProvinceSetup, channel, make_province

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def details(err: grpc.aio.AioRpcError) -> str:
    return err.details() or ""


async def health_status(node: RunningNode, files: TlsFiles) -> str:
    async with channel(node, files) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def assert_healthy(setup: ProvinceSetup, node: RunningNode) -> None:
    assert await health_status(node, setup.agency(PUBLIC_SECURITY)) == "SERVING"


async def list_resources(node: RunningNode, files: TlsFiles) -> catalog_pb2.ListResourcesResponse:
    async with channel(node, files, timeout=3) as ch:
        return await catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
            catalog_pb2.ListResourcesRequest()
        )


async def test_a_registered_agency_is_served(province: tuple[ProvinceSetup, RunningNode]) -> None:
    setup, node = province
    reply = await list_resources(node, setup.agency(PUBLIC_SECURITY))
    assert list(reply.entries) == []


async def test_no_client_certificate_is_refused_at_the_handshake(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    root = setup.config.path(setup.config.tls.root).read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    async with grpc.aio.secure_channel(node.address, creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
                catalog_pb2.ListResourcesRequest(), timeout=3
            )
    # No TLS session exists to carry a status: gRPC reports the failed handshake.
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    await assert_healthy(setup, node)


async def test_plaintext_is_refused(province: tuple[ProvinceSetup, RunningNode]) -> None:
    setup, node = province
    async with grpc.aio.insecure_channel(node.address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    await assert_healthy(setup, node)


def test_tls_below_1_2_is_refused(province: tuple[ProvinceSetup, RunningNode]) -> None:
    setup, node = province
    files = setup.agency(PUBLIC_SECURITY)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.root)
    ctx.load_cert_chain(files.chain, files.key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is the point here
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    host, port = node.address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=3) as raw,
        pytest.raises(ssl.SSLError) as err,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.do_handshake()
    # The client did offer TLS 1.1 (it did not decline with NO_PROTOCOLS_AVAILABLE); the server
    # refused the version and hung up, with an alert or by closing the connection.
    message = str(err.value).upper()
    assert "NO_PROTOCOLS_AVAILABLE" not in message
    assert isinstance(err.value, ssl.SSLEOFError) or "PROTOCOL_VERSION" in message, err.value


def test_tls_1_2_with_a_valid_certificate_is_accepted(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    files = setup.agency(PUBLIC_SECURITY)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.root)
    ctx.load_cert_chain(files.chain, files.key)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    host, port = node.address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.2"


async def test_a_certificate_from_another_ca_is_refused(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    foreign_root = create_root_ca("350000", "福建省", "fujian.gov.cn")
    foreign_ca = create_intermediate(foreign_root, "350000", "福建省", "fujian.gov.cn")
    leaf = issue_leaf(
        foreign_ca,
        make_identity("350000", "fujian.gov.cn", Role.AGENCY, PUBLIC_SECURITY),
        common_name="冒充单位",
    )
    files = setup.custom_client("foreign", leaf, [foreign_ca.cert])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_resources(node, files)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    await assert_healthy(setup, node)


async def test_an_expired_certificate_is_refused(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_resources(node, setup.expired_agency(PUBLIC_SECURITY))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    await assert_healthy(setup, node)


async def test_a_revoked_certificate_is_refused_on_its_next_call(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    victim = setup.agency("11350000003591005G", "福建省示例局")
    bystander = setup.agency(PUBLIC_SECURITY)
    await list_resources(node, victim)  # accepted before revocation
    serial = load_keypair(victim.key, victim.chain).cert.serial_number
    await Revocations(node.db).revoke(
        serial_hex=format(serial, "x"),
        identity="",
        issuer_region="350000",
        reason="key_compromise",
        revoked_by="test",
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_resources(node, victim)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in details(err.value)
    assert format(serial, "x") in details(err.value)
    await list_resources(node, bystander)
    await assert_healthy(setup, node)


def _city_ca_with_foreign_leaf(setup: ProvinceSetup) -> tuple[KeyPair, KeyPair]:
    root = load_keypair(
        setup.config.path(setup.config.tls.root_key),  # type: ignore[arg-type]
        setup.config.path(setup.config.tls.root),
    )
    fuzhou = create_intermediate(root, "350100", "福州市", "fujian.gov.cn")
    key = generate_key()
    # The 福州 CA signs a 厦门 identity: only possible by going around issue_leaf's checks.
    xiamen = make_identity("350200", "fujian.gov.cn", Role.AGENCY, "11350200003593001W")
    cert = _build_leaf(
        fuzhou,
        xiamen,
        key.public_key(),
        common_name="越界单位",
        hosts=(),
        not_before=fuzhou.cert.not_valid_before_utc,
        not_after=fuzhou.cert.not_valid_after_utc,
    )
    return fuzhou, KeyPair(key, cert)


async def test_a_city_issued_identity_for_another_region_is_refused(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    fuzhou, leaf = _city_ca_with_foreign_leaf(setup)
    files = setup.custom_client("out-of-region", leaf, [fuzhou.cert])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_resources(node, files)
    # BoringSSL enforces the name constraint during the handshake ...
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    await assert_healthy(setup, node)


async def test_the_region_rule_is_checked_again_after_the_handshake(tmp_path: Path) -> None:
    # ... and the node checks the same rule from the chain in the auth context.
    setup = make_province(tmp_path / "p", "sqlite+aiosqlite:///" + str(tmp_path / "n.db"))
    fuzhou, leaf = _city_ca_with_foreign_leaf(setup)
    root = load_keypair(
        setup.config.path(setup.config.tls.root_key),  # type: ignore[arg-type]
        setup.config.path(setup.config.tls.root),
    )

    async def never_revoked(serial: str) -> None:
        return None

    auth = Authenticator(root.cert, "fujian.gov.cn", never_revoked)
    context = {
        "x509_pem_cert": [leaf.cert.public_bytes(Encoding.PEM)],
        "x509_pem_cert_chain": [fuzhou.cert.public_bytes(Encoding.PEM)],
    }
    with pytest.raises(AuthenticationError, match=r"350200\..*outside the region"):
        await auth.authenticate(context)


async def test_a_malformed_message_gets_invalid_argument(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        call = ch.unary_unary(
            "/govnode.v1.CatalogService/GetResource",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(b"\xff\xff\xff\xff\x0f", timeout=3)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "GetResource" in details(err.value)
    await assert_healthy(setup, node)


async def test_an_oversized_message_gets_resource_exhausted(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    huge = catalog_pb2.GetResourceRequest(resource_code="x" * (5 * 1024 * 1024))
    files = setup.agency(PUBLIC_SECURITY)
    creds = grpc.ssl_channel_credentials(
        root_certificates=files.root.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.chain.read_bytes(),
    )
    # A client willing to send 16 MiB, to a node that accepts 4 MiB.
    options = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
    async with grpc.aio.secure_channel(node.address, creds, options=options) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await catalog_pb2_grpc.CatalogServiceStub(ch).GetResource(huge, timeout=5)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_healthy(setup, node)


async def test_only_nodes_may_watch_the_catalog_feed(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        stream = catalog_pb2_grpc.CatalogServiceStub(ch).WatchCatalog(
            catalog_pb2.WatchCatalogRequest()
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stream:
                pass
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "nodes only" in details(err.value)
