"""What the console's desks act through: the node's own domain objects.

The console has no logic of its own (the issue: "every console action goes through the same
service layer as the gRPC/CLI path"). :func:`desks_of` takes the :class:`Services` the gRPC
servicers are built from and hands the desks the very same objects: the node's
:class:`Notifications` (so watchers wake on a console decision as on an RPC), its error report
desk, its rectifications, its 授权开放 applications; change requests are built by the one
function AccessService uses (:func:`node.servicers.change_requests_of`), so an approved
correction closes its error reports here too.

The desks act as this region's data management authority (数据管理机构), as ``govnode access``
and the authority's certificate do: the domain's checks and messages are the authority's, and
the audit record of each action names the operator (node.console._actions).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.identity import Identity, Role, make_identity
from node.catalog import Catalog
from node.config import Mode, NodeConfig
from node.governance import ChangeRequests
from node.opendata import OpenApplications, OpenKeys
from node.quality import DataErrors, Quality
from node.servicers import Services, change_requests_of
from node.sharing import Applications, Notifications
from node.storage import Database
from node.supervision import Rectifications, Supervision


@dataclass(frozen=True)
class Desks:
    config: NodeConfig
    db: Database
    #: Who the desks act as: this region's data management authority.
    authority: Identity
    catalog: Catalog
    applications: Applications
    changes: ChangeRequests
    open_applications: OpenApplications | None
    open_keys: OpenKeys | None
    data_errors: DataErrors | None
    rectifications: Rectifications | None
    supervision: Supervision | None
    quality: Quality | None

    @property
    def province(self) -> bool:
        return self.config.node.mode is Mode.PROVINCE


def desks_of(services: Services) -> Desks:
    """The desks over the node's services (see the module docstring)."""
    notifications = services.notifications or Notifications(services.db)
    node = services.config.node
    rectifications = services.rectifications
    if rectifications is None and services.supervision is not None:
        rectifications = Rectifications(services.supervision, notifications)
    return Desks(
        config=services.config,
        db=services.db,
        authority=make_identity(node.region, node.trust_domain, Role.AUTHORITY),
        catalog=services.catalog,
        applications=Applications(services.db, notifications, services.identity),
        changes=change_requests_of(services, notifications),
        open_applications=services.open_applications,
        open_keys=services.open_keys,
        data_errors=services.data_errors,
        rectifications=rectifications,
        supervision=services.supervision,
        quality=services.quality,
    )
