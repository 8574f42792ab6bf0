"""The operator console: the node's web pages for its operators, in Chinese, on a listener of
its own (``[console] listen``), HTTPS with mutual TLS and operator certificates
(``govnode certs issue-operator``).

An edge of the node like node.servicers: it calls the same service layer the gRPC servicers
and the CLI call and has no logic of its own; every change it makes is audited
(node.console._actions). No domain package imports it.

Pages: overview (with the maintenance switch), certificates (issue, list, revoke), audit
(search, a record with its inclusion proof, chain verification), system (the effective
configuration), backups (list, make, verify), and part B's desks, catalog, federation,
quality and compliance.
"""

from __future__ import annotations

from gateway.server import HealthReporter
from node.audit import AuditLog
from node.console._app import Console, serve, tls_context
from node.console._identity import Operators
from node.console._state import ConsoleState
from node.maintenance import MaintenanceWatch
from node.pki import Revocations, load_certs, load_or_create_secret
from node.servicers import Services

__all__ = ["Console", "ConsoleError", "start_console"]


class ConsoleError(Exception):
    """The console cannot start; the message names the config key."""


async def start_console(
    services: Services,
    *,
    audit: AuditLog,
    health: HealthReporter,
    revocations: Revocations,
    maintenance: MaintenanceWatch,
) -> Console:
    """Start the console where ``[console] listen`` says; returns once it is listening."""
    config = services.config
    listen = config.console.listen
    if listen is None:
        raise ConsoleError("console.listen: not set; the console is off")
    try:
        secret = load_or_create_secret(config.path(config.console.secret))
    except Exception as exc:
        raise ConsoleError(f"console.secret: {exc}") from None
    ca_path = config.path(config.tls.ca_cert)
    region_ca = load_certs(ca_path)[0]
    tls = tls_context(
        config.path(config.tls.cert),
        config.path(config.tls.key),
        [config.path(config.tls.root), ca_path],
    )
    state = ConsoleState(
        services=services,
        audit=audit,
        health=health,
        revocations=revocations,
        maintenance=maintenance,
        region_ca=region_ca,
        operators=Operators(
            region_ca,
            region=config.node.region,
            trust_domain=config.node.trust_domain,
            is_revoked=revocations.reason_for,
        ),
        secret=secret,
    )
    try:
        return await serve(state, listen, tls)
    except OSError as exc:
        raise ConsoleError(f"console.listen: cannot listen on {listen}: {exc}") from None
