"""Which methods a role may call at all, checked by the guard for every call.

Most roles reach every method and the servicers decide (an agency's grants, the authority's
reviews, a tester's probe resources: node.catalog._probe). A role confined to a few methods is
listed here, and the guard refuses it everything else with PERMISSION_DENIED before any
servicer runs, so that a new method is closed to it until it is added here on purpose:

- ``portal``: the public open data portal (开放平台, 第三十条) calls its node for members of the
  public; it lists the open catalog and reads one resource of it, fetches the catalog's
  DCAT-AP pages for harvesters, downloads 普遍开放 data and reads its rows through the row
  API's filters (and, with the portal, applies for 授权开放 data on an applicant's behalf).
  Health checking is open to it, as to every caller: it serves no data, and the portal's
  readiness depends on it.
- ``operator``: a person at the node's web console (node.console). The console is the only
  place an operator certificate is for; on the gRPC port it may call nothing but health, so a
  stolen operator certificate is no agency or authority.

A method only nodes call, whatever the servicer checks besides, is listed in
:data:`NODE_METHODS`: every other role is refused it here (an agency or authority must not be
able to inject notifications into another node's store).
"""

from __future__ import annotations

from gateway.identity import Identity, Role

#: Methods every authenticated caller may call whatever its role.
ANY_ROLE_PREFIXES = ("/grpc.health.v1.Health/",)

#: The only methods a portal may call.
PORTAL_METHODS: frozenset[str] = frozenset(
    {
        "/govnode.v1.OpenDataService/ListOpenResources",
        "/govnode.v1.OpenDataService/GetOpenResource",
        "/govnode.v1.OpenDataService/GetOpenCatalogDocument",
        "/govnode.v1.OpenDataService/Download",
        "/govnode.v1.OpenDataService/ApplyOpenAccess",
        "/govnode.v1.OpenDataService/GetOpenApplication",
        "/govnode.v1.OpenDataService/FileUseReport",
        "/govnode.v1.OpenDataService/QueryOpenRows",
    }
)

#: Methods only govnode nodes call (node to node), with what they are for.
NODE_METHODS: dict[str, str] = {
    "/govnode.v1.FederationService/DeliverNotifications": (
        "nodes deliver the notifications they made for other regions' recipients to each other"
    ),
    "/govnode.v1.FederationService/PublishSupervisionSummary": (
        "a city's node sends the province its signed supervision summary (province roll-up)"
    ),
}

#: Roles confined to a set of methods, with what they are for (said in the refusal).
CONFINED: dict[Role, tuple[frozenset[str], str]] = {
    Role.PORTAL: (
        PORTAL_METHODS,
        "the open data portal lists the open catalog, downloads open data, queries its rows "
        "and files 授权开放 applications and use reports for the public (第三十至三十五条)",
    ),
    Role.OPERATOR: (
        frozenset(),
        "an operator certificate is for the node's web console ([console] listen), not for "
        "the gRPC API",
    ),
}


def method_refusal(caller: Identity, method: str) -> str | None:
    """Why ``caller``'s role may not call ``method`` at all, or None when it may."""
    node_only = NODE_METHODS.get(method)
    if node_only is not None and caller.role is not Role.NODE:
        return (
            f"{caller} has the {caller.role.value} role; only govnode nodes may call "
            f"{method.rsplit('/', 1)[-1]}: {node_only}"
        )
    confined = CONFINED.get(caller.role)
    if confined is None or method.startswith(ANY_ROLE_PREFIXES):
        return None
    allowed, purpose = confined
    if method in allowed:
        return None
    names = ", ".join(sorted(m.rsplit("/", 1)[-1] for m in allowed))
    if not names:
        return f"{caller} has the {caller.role.value} role, which may call no method: {purpose}"
    return (
        f"{caller} has the {caller.role.value} role, which may call only {names}: {purpose}; "
        f"not {method}"
    )
