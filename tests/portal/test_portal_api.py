"""The public portal's REST/JSON API, downloads and catalog documents, as the public meets them:
``govnode portal serve`` as a process of its own in front of a real province node (mutual TLS
with a portal certificate), reached over HTTPS with no client certificate (第三十至三十五条).

What a member of the public sees is what the node serves: the catalog with a search that works
on Chinese text, a dataset's metadata and provenance, rows through the filter grammar, files
whose headers carry the source, version, digest and a signed receipt naming the client's
address, resumable with Range; 授权开放 data refused without a key; the DCAT-AP catalog in
JSON-LD and Turtle; and refusals with a status and a message that says why."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import aiohttp
from rdflib import Graph, URIRef
from rdflib.namespace import DCAT, RDF

from node.opendata import check_receipt
from node.pki import load_certs
from tests.opendata.test_download_api import AUTHORIZED, TD, UNIVERSAL, publish
from tests.support.nodes import make_province, start
from tests.support.portal import ROOMY, client, portal_config, run_portal, with_budget

SECURITY = ("Strict-Transport-Security", "X-Content-Type-Options", "Content-Security-Policy")


async def get_json(session: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with session.get(url) as response:
        body = await response.json(content_type=None)
        assert response.status == status, body
        return body


def receipt_of(response: aiohttp.ClientResponse) -> bytes:
    header = response.headers["Govnode-Receipt"]
    return base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))


async def test_the_public_lists_reads_and_downloads_open_data_through_the_portal(
    tmp_path: Path, db_url: str
) -> None:
    setup = with_budget(make_province(tmp_path / "province", db_url), **ROOMY)
    node = await start(setup)
    try:
        await publish(node, setup, UNIVERSAL, 400)
        await publish(node, setup, AUTHORIZED, 30)
        u, a = UNIVERSAL.resource_code, AUTHORIZED.resource_code
        root = load_certs(setup.config.path(setup.config.tls.root))[0]
        config = portal_config(setup, node, tmp_path / "portal")
        async with run_portal(config) as portal, client() as web:
            api = f"{portal.url}/api/v1"

            # --- the catalog, searched in Chinese, each dataset with its provenance -------
            listed = await get_json(web, f"{api}/datasets")
            assert [d["resource_code"] for d in listed["datasets"]] == [a, u]
            found = await get_json(web, f"{api}/datasets?q=授权")
            assert [d["resource_code"] for d in found["datasets"]] == [a]
            found = await get_json(web, f"{api}/datasets?q=birth")
            assert [d["resource_code"] for d in found["datasets"]] == [u]
            assert (await get_json(web, f"{api}/datasets?q=民政厅"))["datasets"] == []
            only = await get_json(web, f"{api}/datasets?open_type=authorized")
            assert [d["resource_code"] for d in only["datasets"]] == [a]
            paged = await get_json(web, f"{api}/datasets?page_size=1")
            assert [d["resource_code"] for d in paged["datasets"]] == [a]
            rest = await get_json(web, portal.url + paged["next"])
            assert [d["resource_code"] for d in rest["datasets"]] == [u]

            dataset = await get_json(web, f"{api}/datasets/{u}")
            assert dataset["open_type"] == "universal" and dataset["open_type_zh"] == "普遍开放"
            assert dataset["version"] == 1 and dataset["rows"] == 400
            assert dataset["dataset_iri"] == f"https://opendata.{TD}/dataset/{u}"
            assert "福建省公安厅" in dataset["source"] and u in dataset["source"]
            assert [i["name"] for i in dataset["items"]] == ["bh", "csrq", "qh", "bz"]
            assert dataset["items"][0]["treatment"] == "pseudonymize"
            assert "获取日期" in dataset["cite"] and not dataset["needs_key"]
            missing = await get_json(web, f"{api}/datasets/350000-3-999999", 404)
            assert missing["error"]["code"] == "NOT_FOUND"

            # --- rows through the filter grammar, in an envelope with the source ----------
            first = await get_json(web, f"{api}/datasets/{u}/rows?page_size=5")
            assert [r["row"] for r in first["rows"]] == [1, 2, 3, 4, 5]
            meta = first["metadata"]
            assert meta["version"] == 1 and meta["dataset"] == dataset["dataset_iri"]
            assert meta["source"] == dataset["source"] and "获取日期" in meta["cite"]
            year = first["rows"][0]["values"]["csrq"]
            matched = await get_json(web, f"{api}/datasets/{u}/rows?csrq__exact={year}&items=csrq")
            assert matched["rows"] and {r["values"]["csrq"] for r in matched["rows"]} == {year}
            assert all(list(r["values"]) == ["csrq"] for r in matched["rows"])
            more = await get_json(web, portal.url + first["next"])
            assert more["rows"][0]["row"] == 6
            bad = await get_json(web, f"{api}/datasets/{u}/rows?csrq__like=1", 400)
            assert "csrq__like" in bad["error"]["message"]
            unknown = await get_json(web, f"{api}/datasets/{u}/rows?order=csrq", 400)
            assert "not a parameter of this API" in unknown["error"]["message"]
            sql = await get_json(web, f"{api}/datasets/{u}/rows?bh__exact=1' OR '1'='1", 200)
            assert sql["rows"] == []  # a value, compared as text: never SQL

            # --- a CSV download: its provenance in the headers, a receipt that verifies ---
            async with web.get(f"{api}/datasets/{u}/data.csv") as response:
                assert response.status == 200
                data = await response.read()
                headers = response.headers
                receipt_bytes = receipt_of(response)
            assert int(headers["Content-Length"]) == len(data)
            assert headers["Content-Type"].startswith("text/csv")
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            assert headers["Repr-Digest"] == f"sha-256=:{digest}:"
            assert f'<{dataset["dataset_iri"]}>; rel="cite-as"' in headers["Link"]
            assert f'filename="{u}-v1.csv"' in headers["Content-Disposition"]
            assert headers["Govnode-Version"] == "1" and headers["Accept-Ranges"] == "bytes"
            assert all(name in headers for name in SECURITY)
            lines = list(csv.reader(io.StringIO(data.decode(), newline="")))
            assert lines[0] == ["bh", "csrq", "qh", "bz"] and len(lines) == 401
            receipt = check_receipt(receipt_bytes, root, TD, file_bytes=data)
            assert receipt.recipient == "ip:127.0.0.1" and receipt.resource_code == u

            # the public receipt check: valid for this file, not for another size
            check = f"{portal.url}/api/v1/receipts/check"
            query = f"sha256={hashlib.sha256(data).hexdigest()}&size={len(data)}"
            async with web.post(f"{check}?{query}", data=receipt_bytes) as response:
                verdict = await response.json()
                assert response.status == 200 and verdict["valid"], verdict
                assert verdict["receipt"]["recipient"] == "ip:127.0.0.1"
            wrong = f"sha256={hashlib.sha256(data).hexdigest()}&size={len(data) + 1}"
            async with web.post(f"{check}?{wrong}", data=receipt_bytes) as response:
                verdict = await response.json()
                assert response.status == 422 and verdict["check"] == "data"

            # --- resuming with Range: exactly the bytes asked, the whole file's digest ----
            etag = headers["ETag"]
            async with web.get(
                f"{api}/datasets/{u}/data.csv", headers={"Range": "bytes=100-199"}
            ) as response:
                assert response.status == 206
                assert response.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
                assert await response.read() == data[100:200]
                assert response.headers["Repr-Digest"] == f"sha-256=:{digest}:"
            async with web.get(
                f"{api}/datasets/{u}/data.csv", headers={"Range": "bytes=1000-", "If-Range": etag}
            ) as response:
                assert response.status == 206 and await response.read() == data[1000:]
            async with web.get(
                f"{api}/datasets/{u}/data.csv",
                headers={"Range": "bytes=1000-", "If-Range": '"v0-stale"'},
            ) as response:
                assert response.status == 200 and await response.read() == data
            async with web.get(
                f"{api}/datasets/{u}/data.csv", headers={"Range": f"bytes={len(data) + 5}-"}
            ) as response:
                assert response.status == 416

            # --- JSON Lines, the BOM, and the sidecar that describes the file -------------
            async with web.get(f"{api}/datasets/{u}/data.jsonl") as response:
                rows = [json.loads(line) for line in (await response.text()).splitlines()]
                assert response.status == 200 and len(rows) == 400
                assert response.headers["Content-Type"].startswith("application/jsonl")
            async with web.get(f"{api}/datasets/{u}/data.csv?bom=1") as response:
                assert await response.read() == b"\xef\xbb\xbf" + data
            sidecar = await get_json(web, f"{api}/datasets/{u}/data.csv-metadata.json")
            assert [c["name"] for c in sidecar["tableSchema"]["columns"]] == lines[0]
            assert sidecar["dc:source"] == dataset["source"]
            assert sidecar["dc:identifier"] == dataset["dataset_iri"]

            # --- 授权开放: refused without a key, and a key never travels in the URL ------
            refused = await get_json(web, f"{api}/datasets/{a}/data.csv", 403)
            assert "第三十二条" in refused["error"]["message"]
            assert (await get_json(web, f"{api}/datasets/{a}/rows", 403))["error"]
            in_url = await get_json(web, f"{api}/datasets/{a}/data.csv?apikey=gok_x_y", 400)
            assert "X-API-Key" in in_url["error"]["message"]

            # --- the catalog for harvesters: DCAT-AP 3 in JSON-LD and Turtle --------------
            async with web.get(f"{portal.url}/catalog.jsonld") as response:
                assert response.headers["Content-Type"].startswith("application/ld+json")
                jsonld = await response.text()
            async with web.get(f"{portal.url}/catalog.ttl") as response:
                assert response.headers["Content-Type"].startswith("text/turtle")
                turtle = await response.text()
            with warnings.catch_warnings():
                # rdflib's own JSON-LD parser builds the ConjunctiveGraph rdflib deprecates.
                warnings.filterwarnings(
                    "ignore", "ConjunctiveGraph is deprecated", DeprecationWarning
                )
                from_jsonld = Graph().parse(data=jsonld, format="json-ld")
            for graph in (from_jsonld, Graph().parse(data=turtle)):
                datasets = set(graph.subjects(RDF.type, DCAT.Dataset))
                assert {URIRef(dataset["dataset_iri"])} <= datasets and len(datasets) == 2

            # --- refusals the portal makes itself -------------------------------------------
            long_query = await get_json(web, f"{api}/datasets?q={'查' * 600}", 414)
            assert long_query["error"]["code"] == "URI_TOO_LONG"
            async with web.get(f"{api}/datasets?q={'查' * 2000}") as response:
                assert response.status in (400, 414)  # past the parser's 8 KiB request line
            async with web.get(f"{portal.url}/healthz") as response:
                assert response.status == 200
            async with web.get(f"{portal.url}/no/such/page") as response:
                assert response.status == 404
                assert response.headers["Content-Type"].startswith("text/html")
                assert "未找到" in await response.text()
            assert (await get_json(web, f"{api}/no-such", 404))["error"]["status"] == 404
            big = {"Content-Type": "application/json"}
            async with web.post(f"{api}/applications", data=b"x" * 70_000, headers=big) as response:
                assert response.status == 413
            async with web.post(f"{api}/applications", data=b"[1]", headers=big) as response:
                assert response.status == 400
                assert "JSON object" in (await response.json())["error"]["message"]
        assert b"portal_request_failed" not in portal.stderr, portal.stderr.decode()[-2000:]
    finally:
        await node.stop(grace=0)
