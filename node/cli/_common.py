"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import typer

from gateway.identity import Identity, IdentityError
from node.audit import AuditLog, Checkpoints, log_origin, log_signer, read_log_signer
from node.config import ConfigError, NodeConfig, load_config
from node.errors import DomainError
from node.logging import configure_logging
from node.pki import PkiError, load_certs, load_chain_pem, load_private_key
from node.storage import Database

#: Set by the global --verbose option (see :func:`node.cli._options`).
_verbose = False


class UserError(Exception):
    """Something the operator can fix; printed as one line."""


def describe_error(exc: Exception) -> str | None:
    """The one-line message for an error the operator caused, or None for a bug."""
    from node.app import StartupError
    from node.approval import ReportRefused
    from node.backup import BackupError
    from node.pki import ProvisionError

    known = (
        UserError,
        ConfigError,
        PkiError,
        IdentityError,
        StartupError,
        ProvisionError,
        ReportRefused,
        BackupError,
    )
    if isinstance(exc, known):
        return str(exc)
    if isinstance(exc, DomainError):
        return exc.message
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
    return None


CONFIG_OPTION = typer.Option(
    ..., "--config", "-c", help="The node's govnode.toml (written by `govnode init`)."
)
JSON_OPTION = typer.Option(False, "--json", help="One JSON object per line.")


def set_verbose(verbose: bool) -> None:
    """Apply the global --verbose option: commands log at debug, else only warnings and errors."""
    global _verbose
    _verbose = verbose
    configure_logging("auto", log_level())


def log_level(default: str = "warning") -> str:
    """The level a command logs at: ``default``, or debug with --verbose.

    A command prints what the operator asked for on stdout; the node's own events (a database
    opened, migrations run) are not that, so they stay off the terminal unless asked for.
    """
    return "debug" if _verbose else default


def load(config: Path) -> NodeConfig:
    """Read and check the node's config; the command's logs take its [log] format."""
    cfg = load_config(config)
    configure_logging(cfg.log.format, log_level())
    return cfg


def split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{what}: {value!r} must be HOST:PORT, e.g. 127.0.0.1:7443")
    return host.strip("[]"), int(port)


def cert_hosts(listen: str, extra: list[str]) -> list[str]:
    """DNS/IP names for a node certificate: the listen host (unless a wildcard) plus extras."""
    host, _ = split_hostport(listen, "--listen")
    hosts: list[str] = []
    wildcard = host in ("0.0.0.0", "::", "")
    for h in ([] if wildcard else [host]) + extra:
        h = h.strip("[]")
        if h not in hosts:
            hosts.append(h)
    if not hosts:
        raise UserError(
            f"--listen {listen} is a wildcard address: name the host clients use with --host"
        )
    for h in hosts:
        try:
            ipaddress.ip_address(h)
        except ValueError:
            if not h.replace("-", "").replace(".", "").isalnum():
                raise UserError(f"--host {h!r} is neither an IP address nor a DNS name") from None
    return hosts


def echo(message: str) -> None:
    typer.echo(message)


@contextlib.asynccontextmanager
async def node_storage(cfg: NodeConfig) -> AsyncIterator[tuple[Database, AuditLog]]:
    """The node's database, migrated, and its audit log, started, for a command that acts on
    them while the node may be serving; the log is written out and both closed after."""
    db = await Database.open(cfg.database_url)
    audit = AuditLog(db)
    try:
        await db.migrate()
        await audit.start()
        yield db, audit
    finally:
        await audit.close()
        await db.close()


def node_checkpoints(
    cfg: NodeConfig, db: Database, audit: AuditLog
) -> tuple[Checkpoints, Identity, str]:
    """The node's signed checkpoints of ``audit`` as the serving node makes them (its log
    origin, signed with its own key), its identity and its certificate chain (PEM, without
    the root), read from ``cfg``'s files."""
    root = load_certs(cfg.path(cfg.tls.root))[0]
    chain_pem = load_chain_pem(cfg.path(cfg.tls.cert), root)
    identity, _ = read_log_signer(chain_pem, root, cfg.node.trust_domain)
    signer = log_signer(identity.host, load_private_key(cfg.path(cfg.tls.key)))
    return Checkpoints(db, audit, log_origin(identity.host), signer), identity, chain_pem
