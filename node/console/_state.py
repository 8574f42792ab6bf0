"""What the console's handlers share: the node's service layer (the same objects the gRPC
servicers use, so the console has no logic of its own), its health reporter and revocation
list, and the console's own secret."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from aiohttp import web
from cryptography import x509

from gateway.server import HealthReporter
from node.audit import AuditLog
from node.config import NodeConfig
from node.console._backup_jobs import BackupJobs
from node.console._identity import Operators
from node.maintenance import MaintenanceWatch
from node.pki import Revocations
from node.servicers import Services


@dataclass
class ConsoleState:
    services: Services
    audit: AuditLog
    health: HealthReporter
    revocations: Revocations
    #: The maintenance switch, kept in the database and applied to :attr:`health`.
    maintenance: MaintenanceWatch
    #: This node's region CA: issues operator certificates and agencies' (and is the only
    #: issuer the console accepts operators from).
    region_ca: x509.Certificate
    operators: Operators
    #: Keys the form tokens (node.console._forms).
    secret: bytes
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: This node's catalog digest and when it was computed (monotonic seconds): hashing the
    #: whole catalog is the heartbeat's work; the overview reuses one for a while.
    digest: tuple[float, str] | None = None
    #: The backup made or verified from the backups page (one at a time).
    backup_jobs: BackupJobs = field(default_factory=BackupJobs)

    @property
    def config(self) -> NodeConfig:
        return self.services.config


STATE: web.AppKey[ConsoleState] = web.AppKey("govnode_console", ConsoleState)


def state_of(request: web.Request) -> ConsoleState:
    return request.app[STATE]
