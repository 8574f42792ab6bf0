"""The installed govnode's version, as heartbeats, the console, backups and the node log give it.

Read from the package's metadata once per process: a heartbeat asks for it every few seconds,
and reading it parses the installed distribution's METADATA file each time.
"""

from __future__ import annotations

import functools
import importlib.metadata


@functools.cache
def software_version() -> str:
    """The version of the installed ``govnode`` distribution; "unknown" when it is not
    installed (run from a source tree without ``pip install``)."""
    try:
        return importlib.metadata.version("govnode")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
