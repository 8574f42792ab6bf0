"""The console's vendored files: htmx is the pinned version whose checksum VERSION records, and
the templates and static files ship in the wheel (the console works from `pip install .`)."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from node.console._app import static_dir

ROOT = Path(__file__).resolve().parents[2]


def test_htmx_is_the_pinned_version_with_the_recorded_checksum() -> None:
    recorded = (static_dir() / "VERSION").read_text(encoding="utf-8")
    version = re.search(r"htmx\.org (2\.0\.\d+) \(npm\)", recorded)
    checksum = re.search(r"^sha256 ([0-9a-f]{64})$", recorded, re.MULTILINE)
    assert version is not None and checksum is not None, recorded
    data = (static_dir() / "htmx.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == checksum.group(1)
    assert f'version:"{version.group(1)}"' in data.decode(), "the file says its own version"


def test_templates_and_static_files_are_package_data() -> None:
    package = resources.files("node.console")
    for name in ("base.html", "overview.html", "certificates.html", "audit.html"):
        assert (package / "templates" / name).is_file(), name
    for name in ("htmx.min.js", "console.css", "VERSION"):
        assert (package / "static" / name).is_file(), name
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"node"' in pyproject.split("[tool.hatch.build.targets.wheel]", 1)[1].split("\n[", 1)[0]
