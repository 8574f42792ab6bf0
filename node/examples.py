"""The example catalog in ``config/``: agencies and their resource entries, for the demo."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from node.catalog_types import ResourceEntry

#: The repository's config/ folder (the demo and tests read the example catalog from it);
#: GOVNODE_EXAMPLES points elsewhere, e.g. in the Docker image.
EXAMPLES_DIR = Path(
    os.environ.get("GOVNODE_EXAMPLES") or Path(__file__).resolve().parent.parent / "config"
)


@dataclass(frozen=True)
class ExampleAgency:
    code: str
    name: str


@dataclass(frozen=True)
class ExampleCatalog:
    agencies: list[ExampleAgency]
    resources: list[ResourceEntry]


def load_example_catalog(path: Path) -> ExampleCatalog:
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    agencies = [ExampleAgency(a["code"], a["name"]) for a in data.get("agencies", [])]
    resources = []
    for i, raw in enumerate(data.get("resources", [])):
        try:
            resources.append(ResourceEntry.model_validate(raw))
        except pydantic.ValidationError as exc:
            raise ValueError(f"{path}: resources[{i}]: {exc}") from None
    return ExampleCatalog(agencies, resources)
