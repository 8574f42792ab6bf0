"""The OpenAPI 3.1 document of the public API (``GET /openapi.json``). The tests check that
every route the portal serves under ``/api/`` and the catalog documents are described here,
and that every path described is served."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_LIMITED = {"$ref": "#/components/responses/TooManyRequests"}
_CODE = {
    "name": "code",
    "in": "path",
    "required": True,
    "description": "资源代码 (resource code), e.g. 350000-1-000001",
    "schema": {"type": "string", "maxLength": 15},
}
_KEY = {
    "name": "X-API-Key",
    "in": "header",
    "required": False,
    "description": "授权开放: the key of an approved application (never in the URL)",
    "schema": {"type": "string", "maxLength": 200},
}


def _ok(description: str, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {}}}}


def openapi_document(base_url: str) -> dict[str, Any]:
    download = {
        "get": {
            "summary": "下载数据文件 (download the served version as a file)",
            "description": (
                "Streamed; resumable with a single Range (206). Headers carry the provenance "
                "(第三十五条): Link rel=cite-as, Govnode-Source, Govnode-Acquired-At, "
                "Govnode-Version, Repr-Digest and Govnode-Receipt (the node's signed receipt, "
                "base64url)."
            ),
            "parameters": [
                _CODE,
                {
                    "name": "bom",
                    "in": "query",
                    "description": "csv only: start with a UTF-8 byte order mark (Excel)",
                    "schema": {"type": "string", "enum": ["0", "1"]},
                },
                {"name": "Range", "in": "header", "schema": {"type": "string"}},
                _KEY,
            ],
            "responses": {
                "200": _ok("the file", "text/csv"),
                "206": _ok("the requested bytes", "text/csv"),
                "403": _ERROR,
                "404": _ERROR,
                "416": _ERROR,
                "429": _LIMITED,
            },
        }
    }
    sidecar = {
        "get": {
            "summary": "下载文件的元数据 (CSVW metadata sidecar with provenance)",
            "parameters": [_CODE],
            "responses": {"200": _ok("CSVW metadata", "application/csvm+json"), "404": _ERROR},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "政务数据开放平台 API",
            "version": "1",
            "description": (
                "The open data of this platform (福建省政务数据管理办法 第二十九至三十六条). "
                "普遍开放 data needs no key; 授权开放 data needs the key of an approved "
                "application in X-API-Key. Requests are limited per client address and per "
                "key: 429 with Retry-After. Cite the source and date of any data you use "
                "(第三十五条)."
            ),
        },
        "servers": [{"url": base_url}],
        "paths": {
            "/api/v1/datasets": {
                "get": {
                    "summary": "开放目录 (the open catalog), searchable in Chinese",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": 100},
                        },
                        {
                            "name": "open_type",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["universal", "authorized"]},
                        },
                        {"name": "region", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "page_size",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                        },
                        {"name": "page_token", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": _ok("a page of datasets"), "400": _ERROR, "429": _LIMITED},
                }
            },
            "/api/v1/datasets/{code}": {
                "get": {
                    "summary": "数据集元数据 (one dataset's metadata and provenance)",
                    "parameters": [_CODE],
                    "responses": {"200": _ok("the dataset"), "404": _ERROR, "429": _LIMITED},
                }
            },
            "/api/v1/datasets/{code}/rows": {
                "get": {
                    "summary": "按条件查询数据行 (rows that pass filters)",
                    "description": (
                        "Filters are query parameters <item>__<op>=value, combined with AND; "
                        "op is one of exact, differs, in, notin, contains, notcontains, less, "
                        "greater, strictly_less, strictly_greater, isnull, isnotnull. At most "
                        "10 filters; never SQL. Rows come in published order; the JSON "
                        "envelope's metadata carries the source and dates (第三十五条)."
                    ),
                    "parameters": [
                        _CODE,
                        {
                            "name": "page_size",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        {"name": "page_token", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "items",
                            "in": "query",
                            "description": "comma-separated item names (a projection)",
                            "schema": {"type": "string"},
                        },
                        _KEY,
                    ],
                    "responses": {
                        "200": _ok("a page of rows"),
                        "400": _ERROR,
                        "403": _ERROR,
                        "404": _ERROR,
                        "429": _LIMITED,
                    },
                }
            },
            "/api/v1/datasets/{code}/data.csv": download,
            "/api/v1/datasets/{code}/data.jsonl": download,
            "/api/v1/datasets/{code}/data.csv-metadata.json": sidecar,
            "/api/v1/datasets/{code}/data.jsonl-metadata.json": sidecar,
            "/api/v1/applications": {
                "post": {
                    "summary": "申请授权开放数据 (apply for 授权开放 data, 第三十二条)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Application"}
                            }
                        },
                    },
                    "responses": {"201": _ok("the application, pending"), "400": _ERROR},
                }
            },
            "/api/v1/applications/{id}": {
                "get": {
                    "summary": "申请状态 (an application's status)",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": _ok("the application"), "404": _ERROR},
                }
            },
            "/api/v1/use-reports": {
                "post": {
                    "summary": "报送开发利用情况 (file a use report, 第三十五条)",
                    "parameters": [{**_KEY, "required": True}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["text"],
                                    "properties": {
                                        "period": {"type": "integer", "minimum": 0},
                                        "text": {"type": "string", "maxLength": 20000},
                                        "request_id": {"type": "string", "maxLength": 64},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"201": _ok("the report as filed"), "401": _ERROR, "403": _ERROR},
                }
            },
            "/api/v1/receipts/check": {
                "post": {
                    "summary": "核验下载回执 (check a download receipt offline)",
                    "parameters": [
                        {"name": "sha256", "in": "query", "schema": {"type": "string"}},
                        {"name": "size", "in": "query", "schema": {"type": "integer"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {}},
                            "text/plain": {"schema": {}},
                        },
                    },
                    "responses": {"200": _ok("valid"), "422": _ok("not valid"), "400": _ERROR},
                }
            },
            "/catalog.jsonld": {
                "get": {
                    "summary": "DCAT-AP 3 catalog, JSON-LD with Hydra paging",
                    "parameters": [{"name": "page", "in": "query", "schema": {"type": "integer"}}],
                    "responses": {"200": _ok("a page", "application/ld+json")},
                }
            },
            "/catalog.ttl": {
                "get": {
                    "summary": "DCAT-AP 3 catalog, Turtle",
                    "parameters": [{"name": "page", "in": "query", "schema": {"type": "integer"}}],
                    "responses": {"200": _ok("a page", "text/turtle")},
                }
            },
        },
        "components": {
            "schemas": {
                "Application": {
                    "type": "object",
                    "required": [
                        "resource_code",
                        "entity_type",
                        "entity_code",
                        "entity_name",
                        "use",
                        "purpose",
                    ],
                    "properties": {
                        "resource_code": {"type": "string"},
                        "entity_type": {
                            "type": "string",
                            "enum": ["domestic_enterprise", "university", "research_institute"],
                        },
                        "entity_code": {
                            "type": "string",
                            "description": "统一社会信用代码 (GB 32100)",
                        },
                        "entity_name": {"type": "string"},
                        "use": {
                            "type": "string",
                            "enum": ["research", "education", "public_welfare", "commercial"],
                        },
                        "purpose": {"type": "string", "maxLength": 2000},
                        "domestic_control_declared": {"type": "boolean"},
                        "evidence_reference": {"type": "string"},
                        "contact": {"type": "string"},
                        "request_id": {"type": "string", "maxLength": 64},
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "integer"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
            "responses": {
                "Error": {
                    "description": "refused, with the reason",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
                "TooManyRequests": {
                    "description": "over the limit for this address or key; see Retry-After",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        },
    }
