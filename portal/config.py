"""The portal's configuration: one TOML file, ``[portal]``, written by ``govnode portal init``.

Relative paths are read from the file's own directory, as the node's configuration does.

```toml
[portal]
listen = "127.0.0.1:8443"               # where the public connects (HTTPS)
base_url = "https://opendata.example"   # the address the public uses; links and IRIs
node = "127.0.0.1:7443"                 # the node's gRPC address (mutual TLS)
node_name = ""                          # the name in the node's certificate, if the address
                                        # is not it (e.g. a load balancer's address)
credentials = "portal"                  # client.key, client.crt, ca.crt from
                                        # `govnode certs issue-portal`
server_cert = "server.crt"              # the portal's own HTTPS certificate chain and key
server_key = "server.key"

[tracing]                               # optional: as the node's [tracing] (README, Tracing)
exporter = "none"
```
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.tls import TlsFiles
from gateway.tracing_setup import TracingSection

#: The portal's defaults, in one place (the README's table repeats them).
DEFAULT_LISTEN = "127.0.0.1:8443"


class PortalConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the file."""


def split_address(value: str) -> tuple[str, int]:
    """HOST:PORT (``[v6]:PORT`` for IPv6) -> (host, port); ValueError naming the problem."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    return host, int(port)


class PortalSection(BaseModel):
    """``[portal]``; every limit bounds what one member of the public can make the portal do.
    The request budgets themselves are the node's (``[opendata] public_requests_per_minute``),
    so that they hold across every portal process in front of one node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = DEFAULT_LISTEN
    base_url: str = ""
    node: str
    node_name: str = ""
    credentials: Path
    server_cert: Path
    server_key: Path
    #: Requests in flight at once from one address (a download counts until its last byte).
    max_concurrent_per_address: int = Field(default=8, ge=1, le=1000)
    #: Requests in flight at once from everyone; more are answered 503 at once.
    max_concurrent: int = Field(default=512, ge=1, le=100_000)
    #: A download's whole duration; then the connection is closed (resume with Range).
    download_seconds: float = Field(default=3600.0, gt=0, le=86_400)
    #: How long one write to a client may wait for it to read (a slow reader's limit): the
    #: portal holds at most one chunk (256 KiB) and the socket's buffer for it meanwhile.
    write_stall_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: Deadline of each call to the node other than a download.
    node_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("listen", "node")
    @classmethod
    def _address(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: an https:// address with no query or fragment")
        return value.rstrip("/")


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    portal: PortalSection
    tracing: TracingSection = TracingSection()


@dataclass(frozen=True)
class PortalConfig:
    """A loaded configuration, paths made absolute."""

    section: PortalSection
    base_dir: Path
    #: ``[tracing]``, the node's keys (gateway.tracing_setup); the default service name is
    #: govnode-portal.
    tracing: TracingSection = field(default_factory=TracingSection)

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else (self.base_dir / value).resolve()

    @property
    def listen(self) -> tuple[str, int]:
        return split_address(self.section.listen)

    @property
    def base_url(self) -> str:
        """The public address; by default the listen address itself (trials)."""
        if self.section.base_url:
            return self.section.base_url
        host, port = self.listen
        shown = f"[{host}]" if ":" in host else host
        return f"https://{shown}:{port}"

    @property
    def node_tls(self) -> TlsFiles:
        bundle = self.path(self.section.credentials)
        return TlsFiles(
            key=bundle / "client.key", chain=bundle / "client.crt", root=bundle / "ca.crt"
        )

    @property
    def server_cert(self) -> Path:
        return self.path(self.section.server_cert)

    @property
    def server_key(self) -> Path:
        return self.path(self.section.server_key)


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known key"
        lines.append(f"{loc}: {msg}")
    return f"{path}: " + "; ".join(lines)


def load_portal_config(path: Path) -> PortalConfig:
    """Read and validate a portal's TOML configuration; PortalConfigError naming the key."""
    path = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PortalConfigError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PortalConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        parsed = _File(**data)
    except ValidationError as exc:
        raise PortalConfigError(_describe(path, exc)) from None
    config = PortalConfig(
        section=parsed.portal, base_dir=path.resolve().parent, tracing=parsed.tracing
    )
    missing = [
        str(p)
        for p in (*config.node_tls.__dict__.values(), config.server_cert, config.server_key)
        if not p.is_file()
    ]
    if missing:
        raise PortalConfigError(f"{path}: file(s) not found: {', '.join(missing)}")
    return config
