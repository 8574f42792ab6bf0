"""``govnode demo``: the demo's steps (``_main`` and the parts it runs) and the example catalog
(``data/catalog-province.toml``, read by ``_examples``).
"""

from __future__ import annotations

from node.demo._examples import EXAMPLES_DIR, load_example_catalog
from node.demo._main import run_demo

__all__ = ["EXAMPLES_DIR", "load_example_catalog", "run_demo"]
