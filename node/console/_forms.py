"""Protection against cross-site requests.

A browser presents its client certificate to any page that makes it send a request, just as
it sends cookies, so a certificate alone does not show that the operator meant the request.
Every unsafe request (anything but GET and HEAD) must therefore:

- come from the console itself: a ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``
  (typed, bookmarked) is refused, and so is an ``Origin`` other than the console's own
  (``Origin: null``, which chromium sends under ``Referrer-Policy: no-referrer``, only with
  ``Sec-Fetch-Site: same-origin``);
- carry the form token of :func:`form_token`: an HMAC of the operator certificate's
  fingerprint under a node-local secret (``[console] secret``). A page made for one operator
  cannot be replayed with another's certificate, and another site cannot read or forge it.

Stateless: nothing is stored per session, and the token needs no cookie.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from gateway.quote import quote
from node.console._identity import ConsoleRefusal, Operator

#: The form field and the header (htmx requests) that carry the token.
TOKEN_FIELD = "_token"  # noqa: S105 (a field name)
TOKEN_HEADER = "X-Console-Token"  # noqa: S105 (a header name)
SAFE_METHODS = frozenset({"GET", "HEAD"})
_ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
_CONTEXT = b"govnode console form token v1\0"


def form_token(secret: bytes, operator: Operator) -> str:
    """The token this operator's forms carry (the same on every page, until the secret or the
    certificate changes)."""
    return hmac.new(secret, _CONTEXT + operator.fingerprint.encode(), hashlib.sha256).hexdigest()


async def check_unsafe(request: web.Request, secret: bytes, operator: Operator) -> None:
    """Refuse (403) an unsafe request that another site could have made; see the module."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in _ALLOWED_FETCH_SITES:
        raise ConsoleRefusal(403, f"拒绝跨站请求（Sec-Fetch-Site: {quote(site, 20)}）")
    origin = request.headers.get("Origin")
    if origin == "null":
        # Referrer-Policy: no-referrer makes chromium send "Origin: null" even from the
        # console's own forms; then only the browser's own Sec-Fetch-Site (which no page can
        # set) may vouch for the request.
        if site != "same-origin":
            raise ConsoleRefusal(403, "拒绝跨站请求（Origin: null，且不是同源请求）")
    elif origin is not None and origin != f"{request.scheme}://{request.host}":
        raise ConsoleRefusal(403, f"拒绝跨站请求（Origin: {quote(origin, 60)}）")
    given = request.headers.get(TOKEN_HEADER, "")
    if not given and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get(TOKEN_FIELD, "")
        given = value if isinstance(value, str) else ""
    expected = form_token(secret, operator).encode()
    if not given or not hmac.compare_digest(given[:128].encode(errors="replace"), expected):
        raise ConsoleRefusal(403, "表单令牌缺失或无效：请从控制台页面重新提交")
