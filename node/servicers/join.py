"""FederationService/Join: a city joins the province online (`govnode join`)."""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from govnode.v1 import federation_pb2

from gateway.interceptors import add_audit_detail
from node.config import Mode, NodeConfig
from node.errors import FailedPrecondition
from node.federation import JoinApplication, admit, reachable_address
from node.pki import load_keypair, serial_hex
from node.storage import Database


class JoinServicer:
    """Join, served only by the province node (a city answers FAILED_PRECONDITION).

    The guard lets Join through without a client certificate (it is the one method in
    ``gateway.interceptors.TOKEN_AUTHORISED_METHODS``): it is authorised here, by the one-time
    invitation, which :func:`node.federation.admit` redeems in the same transaction that
    signs the city's CA and records the member. The CA's name constraints come from the
    invitation's region, never from the CSR.

    ``node_certificate_pem`` stays EMPTY: the node certificate is issued at the city by the
    city's own CA from its node CSR (the city CA key never leaves the city, and the province
    does not hold it), as ``govnode certs install`` does; the province only checks that the
    node CSR asks for the right identity. ``revocation_list`` stays empty too: the city learns
    revocations through GetRevocationList once it serves.
    """

    def __init__(self, config: NodeConfig, db: Database) -> None:
        self._config = config
        self._db = db

    async def Join(
        self, request: federation_pb2.JoinRequest, context: Any
    ) -> federation_pb2.JoinResponse:
        config = self._config
        if config.node.mode is not Mode.PROVINCE or config.tls.root_key is None:
            raise FailedPrecondition(
                f"{config.node.name} is a city node: cities join the province node"
            )
        root = await asyncio.to_thread(
            load_keypair, config.path(config.tls.root_key), config.path(config.tls.root)
        )
        admission = await admit(
            self._db,
            JoinApplication(
                token=request.invitation_token,
                region=request.region,
                name=request.name,
                ca_csr_pem=request.city_ca_csr_pem,
                node_csr_pem=request.node_csr_pem,
                listen_address=request.listen_address,
            ),
            root=root,
            province_region=config.node.region,
            trust_domain=config.node.trust_domain,
        )
        add_audit_detail(region=admission.region, ca_serial=serial_hex(admission.ca_cert))
        return federation_pb2.JoinResponse(
            city_ca_certificate_pem=admission.ca_cert.public_bytes(Encoding.PEM).decode("ascii"),
            node_certificate_pem="",
            province_root_pem=root.cert.public_bytes(Encoding.PEM).decode("ascii"),
            province_endpoint=reachable_address(config.node.listen, config.node.advertise_hosts),
            trust_domain=config.node.trust_domain,
        )
