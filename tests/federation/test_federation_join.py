"""Joining online: `govnode federation invite` at the province, `govnode join` at the city.

Real nodes on loopback with real certificates; the province runs on each storage backend.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from govnode.v1 import catalog_pb2, federation_pb2, federation_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.identity import Role, check_chain, identity_of, permitted_uri_hosts
from gateway.tls import TlsFiles
from node.app import RunningNode, start_node
from node.clients._join import build_join_request
from node.config import ConfigError, load_config
from node.demo._main import free_port
from node.errors import InvalidArgument
from node.federation import create_invitation, invitations
from node.federation._join import members
from node.pki import city_requests, fingerprint, issue_client, load_certs
from node.storage import Database
from tests.support.cli import assert_one_line_error, govnode
from tests.support.entries import agency_code
from tests.support.federation import (
    FUZHOU,
    TD,
    XIAMEN,
    invite,
    join_address,
    refused,
    request_for,
    root_pem,
    used_at,
)
from tests.support.nodes import PUBLIC_SECURITY, ProvinceSetup, channel, enable_join, make_province


@pytest.fixture
async def joinable(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[ProvinceSetup, RunningNode]]:
    """A province node with its join port open, on each backend."""
    setup = enable_join(make_province(tmp_path / "province", db_url))
    node = await start_node(setup.config)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


async def join_rpc(
    setup: ProvinceSetup, node: RunningNode, request: federation_pb2.JoinRequest
) -> federation_pb2.JoinResponse:
    """Join as a city does: TLS trusting only the root, no client certificate."""
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem(setup))
    async with grpc.aio.secure_channel(join_address(node), credentials) as ch:
        response: federation_pb2.JoinResponse = await federation_pb2_grpc.FederationServiceStub(
            ch
        ).Join(request, timeout=5)
        return response


def run_join(
    setup: ProvinceSetup,
    node: RunningNode,
    token: str,
    city: Path,
    fp: str | None = None,
    listen: str = "127.0.0.1:9443",
) -> Any:
    return asyncio.to_thread(
        govnode,
        "join",
        "--province",
        join_address(node),
        "--invitation",
        token,
        "--fingerprint",
        fp or fingerprint(load_certs(setup.config.path(setup.config.tls.root))[0]),
        "--region",
        FUZHOU,
        "--name",
        "福州市",
        "--dir",
        city,
        "--listen",
        listen,
        "--timeout",
        "5",
    )


def test_join_request_carries_only_csrs() -> None:
    requests = city_requests(FUZHOU, "福州市", TD, ["127.0.0.1"])
    request = build_join_request(
        requests, token="gvi1_x", region=FUZHOU, name="福州市", listen_address="127.0.0.1:9443"
    )
    wire = request.SerializeToString()
    assert b"PRIVATE KEY" not in wire
    assert b"PRIVATE" not in wire
    ca_csr = x509.load_pem_x509_csr(request.city_ca_csr_pem.encode())
    node_csr = x509.load_pem_x509_csr(request.node_csr_pem.encode())
    assert ca_csr.public_key() == requests.ca_key.public_key()
    assert node_csr.public_key() == requests.node_key.public_key()


def test_join_listen_config(tmp_path: Path) -> None:
    setup = make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    text = setup.config_path.read_text(encoding="utf-8")
    port = int(setup.config.node.listen.rpartition(":")[2])
    assert f'# join_listen = "127.0.0.1:{port + 1}"' in text  # commented: off until enabled
    assert setup.config.federation.join_listen is None
    assert enable_join(setup).config.federation.join_listen is not None
    bad = text.replace(f'# join_listen = "127.0.0.1:{port + 1}"', 'join_listen = "nope"')
    setup.config_path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"federation\.join_listen"):
        load_config(setup.config_path)


async def test_invitations_only_for_cities_of_the_province(database: Database) -> None:
    for region, needle in [
        ("350000", "not a city"),
        ("440100", "not a city of province 350000"),
        ("350102", "county-level"),
    ]:
        with pytest.raises(InvalidArgument, match=needle):
            await create_invitation(
                database, province_region="350000", region=region, created_by="t"
            )
    with pytest.raises(InvalidArgument, match="7 days"):
        await create_invitation(
            database,
            province_region="350000",
            region=FUZHOU,
            created_by="t",
            ttl=dt.timedelta(days=8),
        )
    with pytest.raises(InvalidArgument, match="福州市"):
        await create_invitation(
            database, province_region="350000", region=FUZHOU, name="厦门市", created_by="t"
        )
    made = await create_invitation(
        database, province_region="350000", region=FUZHOU, created_by="t"
    )
    assert made.token.startswith("gvi1_") and made.name == "福州市"
    assert await used_at(database, made.token) is None  # only the hash is stored
    # The operator console lists them newest first, a page at a time, without the token.
    later = await create_invitation(
        database,
        province_region="350000",
        region="350200",
        created_by="t",
        now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5),
    )
    listed, more = await invitations(database, limit=1)
    assert [(i.region, more) for i in listed] == [(later.region, True)]
    listed, more = await invitations(database, offset=1, limit=1)
    assert [(i.region, more) for i in listed] == [(FUZHOU, False)]
    assert made.token not in repr(listed)


async def test_city_joins_online_and_serves(
    tmp_path: Path, joinable: tuple[ProvinceSetup, RunningNode]
) -> None:
    setup, province = joinable
    invited = await asyncio.to_thread(
        govnode, "federation", "invite", "--config", setup.config_path, "--region", FUZHOU
    )
    assert invited.returncode == 0, invited.stderr
    token = next(line.split()[-1] for line in invited.stdout.splitlines() if "token:" in line)
    assert join_address(province) in invited.stdout and "CST" in invited.stdout

    city, city_listen = tmp_path / "fuzhou", f"127.0.0.1:{free_port()}"
    joined = await run_join(setup, province, token, city, listen=city_listen)
    assert joined.returncode == 0, joined.stderr
    assert "govnode serve --config" in joined.stdout

    # The city's certificates: node identity, chaining to the province root; CA confined.
    root = load_certs(setup.config.path(setup.config.tls.root))[0]
    node_chain = load_certs(city / "tls" / "node.crt")
    assert str(identity_of(node_chain[0])) == f"spiffe://{FUZHOU}.{TD}/node"
    assert check_chain(node_chain, TD).region == FUZHOU
    node_chain[-1].verify_directly_issued_by(root)
    assert permitted_uri_hosts(load_certs(city / "tls" / "ca.crt")[0]) == [f"{FUZHOU}.{TD}"]
    assert load_certs(city / "tls" / "root.crt")[0] == root
    config = load_config(city / "govnode.toml")
    assert config.federation.province_endpoint == province.address

    # The province recorded the city, and audited the join under the city's region.
    [member] = await members(province.db)
    assert (member.region, member.name, member.endpoint) == (FUZHOU, "福州市", city_listen)
    assert member.ca_serial_hex == format(load_certs(city / "tls" / "ca.crt")[0].serial_number, "x")
    audit = await province.audit.tail(10, caller=f"joining:{FUZHOU}")
    assert [r.outcome for r in audit] == ["OK"]
    assert await used_at(province.db, token) is not None

    # The same invitation again: refused in one line, nothing created.
    again = await run_join(setup, province, token, tmp_path / "again")
    assert_one_line_error(again, "FAILED_PRECONDITION", "already used")
    assert not (tmp_path / "again" / "govnode.toml").exists()

    # The city node starts from what join wrote and serves its own agencies over mTLS.
    city_node = await start_node(config)
    try:
        _, paths = issue_client(
            config,
            role=Role.AGENCY,
            subject=agency_code(1),
            name="福州市公安局",
            out=tmp_path / "agency",
        )
        files = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        async with channel(city_node, files) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # A city node answers Join with FAILED_PRECONDITION: only the province admits.
            error = await refused(
                federation_pb2_grpc.FederationServiceStub(ch).Join(request_for("gvi1_x"))
            )
            assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "city node" in (error.details() or "")
    finally:
        await city_node.stop(grace=0)


async def test_every_refused_join(
    tmp_path: Path, joinable: tuple[ProvinceSetup, RunningNode]
) -> None:
    setup, province = joinable

    # Wrong fingerprint: the CLI refuses before sending anything; the invitation stays unused.
    token = await invite(province)
    wrong = "SHA256:" + ":".join(["AB"] * 32)
    result = await run_join(setup, province, token, tmp_path / "c1", fp=wrong)
    assert_one_line_error(result, "fingerprint", "nothing was sent")
    assert not (tmp_path / "c1").exists()
    assert await used_at(province.db, token) is None

    # Unknown token.
    error = await refused(join_rpc(setup, province, request_for("gvi1_" + "A" * 43)))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "unknown invitation" in (error.details() or "")

    # Wrong region: an invitation for 厦门 used by 福州.
    xiamen = await invite(province, XIAMEN)
    error = await refused(join_rpc(setup, province, request_for(xiamen)))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert XIAMEN in (error.details() or "")
    assert await used_at(province.db, xiamen) is None

    # Expired.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    expired = await invite(province, now=past, ttl=dt.timedelta(hours=1))
    error = await refused(join_rpc(setup, province, request_for(expired)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "expired at" in (error.details() or "") and "CST" in (error.details() or "")

    # A bad CSR (a CA for 厦门 under a 福州 invitation) is refused and does not burn the token.
    bad = request_for(token)
    bad.city_ca_csr_pem = request_for(token, XIAMEN, "厦门市").city_ca_csr_pem
    error = await refused(join_rpc(setup, province, bad))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "city_ca_csr_pem" in (error.details() or "")
    assert await used_at(province.db, token) is None

    # The token still works once, then never again.
    response = await join_rpc(setup, province, request_for(token))
    ca = x509.load_pem_x509_certificate(response.city_ca_certificate_pem.encode())
    assert permitted_uri_hosts(ca) == [f"{FUZHOU}.{TD}"]
    assert response.node_certificate_pem == ""  # issued at the city, by the city's own CA
    assert response.province_endpoint == province.address and response.trust_domain == TD
    assert response.province_root_pem.encode() == load_certs(
        setup.config.path(setup.config.tls.root)
    )[0].public_bytes(Encoding.PEM)
    error = await refused(join_rpc(setup, province, request_for(token)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "already used" in (error.details() or "")

    # On the join port every other method needs the client certificate it cannot have.
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem(setup))
    async with grpc.aio.secure_channel(join_address(province), credentials) as ch:
        for call in (
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5),
            federation_pb2_grpc.FederationServiceStub(ch).GetNodeInfo(
                federation_pb2.GetNodeInfoRequest(), timeout=5
            ),
            ch.unary_unary(
                "/govnode.v1.CatalogService/GetResource",
                request_serializer=catalog_pb2.GetResourceRequest.SerializeToString,
                response_deserializer=catalog_pb2.GetResourceResponse.FromString,
            )(catalog_pb2.GetResourceRequest(), timeout=5),
        ):
            error = await refused(call)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error

    # The province stays healthy on its mutual-TLS port.
    async with channel(province, setup.agency(PUBLIC_SECURITY)) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    # Every Join reached the audit log under the region it claimed (the wrong fingerprint
    # sent nothing, so it is not there).
    joins = await province.audit.tail(20, caller=f"joining:{FUZHOU}")
    assert [r.outcome for r in joins] == [
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "INVALID_ARGUMENT",
        "OK",
        "FAILED_PRECONDITION",
    ]


def test_commands_have_help_and_invite_needs_a_join_port(tmp_path: Path) -> None:
    for args in (["join"], ["federation", "invite"]):
        result = govnode(*args, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, result.stderr
    setup = make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    result = govnode("federation", "invite", "--config", setup.config_path, "--region", FUZHOU)
    assert_one_line_error(result, "federation.join_listen is not set")


async def test_a_province_initialised_with_a_join_port_admits_a_city_online(
    tmp_path: Path,
) -> None:
    """init province --join-listen, serve, invite, join: nobody edits a config."""
    province_dir = tmp_path / "province"
    listen, join_listen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    init: list[str | Path] = [
        "init",
        "province",
        "--region",
        "350000",
        "--name",
        "福建省",
        "--dir",
        province_dir,
    ]
    for bad, needle in ((listen, "must differ from --listen"), ("7444", "HOST:PORT")):
        refused_init = await asyncio.to_thread(
            govnode, *init, "--listen", listen, "--join-listen", bad
        )
        assert_one_line_error(refused_init, "--join-listen", needle)
        assert not province_dir.exists()
    made = await asyncio.to_thread(govnode, *init, "--listen", listen, "--join-listen", join_listen)
    assert made.returncode == 0, made.stderr
    assert f"join port:         {join_listen}" in made.stdout
    config = load_config(province_dir / "govnode.toml")
    assert config.federation.join_listen == join_listen

    province = await start_node(config)
    try:
        assert province.join_port == int(join_listen.rpartition(":")[2])
        invited = await asyncio.to_thread(
            govnode,
            "federation",
            "invite",
            "--config",
            province_dir / "govnode.toml",
            "--region",
            FUZHOU,
        )
        assert invited.returncode == 0, invited.stderr
        command = next(line for line in invited.stdout.splitlines() if "govnode join" in line)
        assert f"--province {join_listen}" in command
        args = command.split()[2:]  # as printed, with the placeholders filled in
        city_dir = tmp_path / "fuzhou"
        args[args.index("DIR")] = str(city_dir)
        args[args.index("HOST:PORT")] = f"127.0.0.1:{free_port()}"
        joined = await asyncio.to_thread(govnode, "join", *args)
        assert joined.returncode == 0, joined.stderr
        [member] = await members(province.db)
        assert (member.region, member.name) == (FUZHOU, "福州市")
        assert load_config(city_dir / "govnode.toml").federation.province_endpoint == listen
    finally:
        await province.stop(grace=0)
