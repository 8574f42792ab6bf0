"""An agency system calling its govnode node with govnode_client: one Verify (联机验证, 第十四条)
and one Query (检索查询, 第二十六条) over mutual TLS, with the bundle `govnode agency add` wrote.

    python verify_and_query.py BUNDLE_DIR HOST:PORT RESOURCE_CODE KEY_ITEM=VALUE [ITEM=CLAIMED ...]

e.g. python verify_and_query.py ./fzga 127.0.0.1:7443 350000-1-000002 \\
        tyshxydm=91350000000000001X dwmc=福州某某科技有限公司

Prints what the Node and Java examples print (examples/node, examples/java), line for line.
"""

from __future__ import annotations

import asyncio
import sys

from govnode.v1 import sharing_pb2
from govnode_client import Client, errors


def pairs(args: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) if "=" in arg else (arg, "") for arg in args)


async def main(bundle: str, endpoint: str, resource: str, key_arg: str, *claimed: str) -> int:
    key = pairs([key_arg])
    async with Client.from_bundle(bundle, endpoint=endpoint) as gn:
        try:
            # Deadlines (10 s) and retries (UNAVAILABLE, and RESOURCE_EXHAUSTED after the
            # node's retry-after-ms) are the SDK's defaults.
            verified = await gn.sharing.verify(
                resource_code=resource, key=key, claimed=pairs(list(claimed))
            )
            found, all_match = str(verified.found).lower(), str(verified.all_match).lower()
            print(f"verify found={found} all_match={all_match}")
            for m in verified.matches:
                print(f"verify {m.item} {sharing_pb2.MatchResult.Name(m.result)}")
            page = await gn.sharing.query(resource_code=resource, key=key)
            for row in page.rows:
                values = " ".join(f"{k}={v}" for k, v in sorted(row.record.values.items()))
                print(f"query {values}")
            print(f"query rows={len(page.rows)}")
        except errors.GovnodeError as exc:
            # The status, the node's message, and the request id to quote to the operator.
            refusal = f"refused {exc.code.name}: {exc.message} (request id {exc.request_id})"
            print(refusal, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(*sys.argv[1:])))
