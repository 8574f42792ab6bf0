"""The example catalog: agencies and their resource entries, for the demo.

It ships inside the package (``node/demo/data/``), so ``govnode demo`` works from an installed wheel
as well as from a checkout.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import pydantic

from node.catalog import ResourceEntry

#: Where the demo, tests and benchmarks read ``catalog-province.toml``: the package's data
#: folder, or the folder GOVNODE_EXAMPLES names (to run the demo on a catalog of your own).
EXAMPLES_DIR: Traversable = (
    Path(os.environ["GOVNODE_EXAMPLES"])
    if os.environ.get("GOVNODE_EXAMPLES")
    else files("node.demo") / "data"
)


@dataclass(frozen=True)
class ExampleAgency:
    code: str
    name: str


@dataclass(frozen=True)
class ExampleCatalog:
    agencies: list[ExampleAgency]
    resources: list[ResourceEntry]


def load_example_catalog(path: Path | Traversable) -> ExampleCatalog:
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    agencies = [ExampleAgency(a["code"], a["name"]) for a in data.get("agencies", [])]
    resources = []
    for i, raw in enumerate(data.get("resources", [])):
        try:
            resources.append(ResourceEntry.model_validate(raw))
        except pydantic.ValidationError as exc:
            raise ValueError(f"{path}: resources[{i}]: {exc}") from None
    return ExampleCatalog(agencies, resources)
