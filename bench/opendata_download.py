"""CSV download throughput through the public portal (第三十二条), against a bare aiohttp HTTPS
server streaming the same bytes, in the same run.

    python -m bench.opendata_download [--records 100000] [--rounds 3] [--seconds 2]
                                      [--downloads 4] [--concurrency 4]

It provisions a province node in a temporary directory with its per-recipient budgets
(``[opendata] public_requests_per_minute``, ``public_burst``) set high enough never to refuse
the bench, and before the node starts, on its SQLite file, registers a 普遍开放 variant of
:mod:`bench.opendata_publish`'s health follow-up records (its items up to level 2), submits
``--records`` of them through ``Records.submit`` and publishes them once (de-identified and
checked for k-anonymity, as ``govnode opendata publish`` does). Then, each a process of its own:

- the node, ``govnode serve``, SQLite, the audit log on as always;
- the portal, ``govnode portal serve``, HTTPS with a self-signed certificate
  (:func:`portal.server.self_signed`), calling the node over mutual TLS;
- the baseline, ``python -m bench.bare_http``: aiohttp with the portal's own TLS settings and
  certificate, streaming the CSV file (fetched once from the portal, its SHA-256 checked against
  the ``Repr-Digest`` header) from memory in 64 KiB chunks: nothing else.

The load is this process, one aiohttp client (the same code for both servers): in each round
it downloads the whole CSV from each server, ``--concurrency`` at a time over kept-alive
connections, again and again until at least ``--downloads`` downloads are done and ``--seconds``
have passed (the bare server's download is too short to time alone), checking every download's
byte count; the rounds alternate which server goes first, so that drift on the shared machine
hits both alike. The first download from each
server, before the rounds, is not timed, and its SHA-256 is checked. Reported: MB/s (10^6 bytes)
of the best round of each server, their ratio (target: the portal at least 0.5 of the bare
server), and CPU seconds per MB, over all rounds, of the portal process, of the node process and
of the bare server (user + system, from ``/proc/<pid>/stat``), and of this client
(``time.process_time``). The machines are shared and noisy: the ratio and the CPU per MB are the
figures that matter.

The last line is one JSON object with every figure. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import signal
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import opendata_publish
from bench import province as province_mod
from bench.procs import Child, child, cpu_seconds, python_command
from node.catalog import Catalog, OpenType, ResourceEntry
from node.config import NodeConfig, load_config
from node.logging import configure_logging
from node.opendata import OpenData, Report, open_data_gate
from node.pki import issue_portal
from node.ports import free_port
from node.storage import Database
from portal.server import self_signed, write_config

CODE = opendata_publish.CODE
MB = 1_000_000
#: What the node's [opendata] budgets are set to: a budget per member of the public that the
#: bench, all of whose downloads come from 127.0.0.1, never runs out of (the most allowed).
ROOMY_BUDGET = 1_000_000
#: Bounds: the portal's start, one download, one side of one round.
START_TIMEOUT_S = 60.0
DOWNLOAD_TIMEOUT_S = 300.0
ROUND_TIMEOUT_S = 900.0
#: Downloads in one round of one server, at most.
MAX_DOWNLOADS = 10_000


def universal_entry() -> ResourceEntry:
    """:func:`bench.opendata_publish.entry` as 普遍开放: its items up to level 2 (its level-3
    citizen ID would allow no more than 授权开放, 第三十七条)."""
    entry = opendata_publish.entry()
    return entry.model_copy(
        update={
            "name": "老年人健康随访记录（开放）",
            "summary": "65岁以上老年人健康随访记录，去标识化后普遍开放",
            "items": tuple(item for item in entry.items if item.sensitivity_level <= 2),
            "open_type": OpenType.UNIVERSAL,
        }
    )


# --- setting up --------------------------------------------------------------------------------


def provision(base: Path) -> tuple[province_mod.Province, Path]:
    """A province node directory with roomy public budgets, and its portal's ``portal.toml``
    (a portal certificate from the node's CA, a self-signed HTTPS certificate)."""
    province = province_mod.provision(base / "province")
    path = province.config_path
    text = path.read_text(encoding="utf-8")
    for key in ("public_requests_per_minute", "public_burst"):
        line = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
        text = text.replace(line, f"{key} = {ROOMY_BUDGET}")
    path.write_text(text, encoding="utf-8")
    province = dataclasses.replace(province, config=load_config(path))
    portal_dir = base / "portal"
    _, paths = issue_portal(province.config, name="bench", out=portal_dir / "credentials")
    self_signed(portal_dir, "127.0.0.1")
    config = write_config(
        portal_dir,
        node=province.target,
        credentials=paths["key"].parent,
        listen=f"127.0.0.1:{free_port()}",
    )
    return province, config


async def load_and_publish(config: NodeConfig, records: int) -> tuple[Report, float]:
    """On the node's database, before it serves: the 普遍开放 entry, ``records`` records and
    their publication; the report and the seconds it all took."""
    started = time.perf_counter()
    db = await Database.open(config.database_url)
    try:
        await db.migrate()
        await opendata_publish.load(db, records, universal_entry())
        region = config.node.region
        opendata = OpenData(
            db,
            Catalog(db, node_region=region),
            node_region=region,
            min_k=config.opendata.min_k,
            max_suppressed=config.opendata.max_suppressed,
            may_open=open_data_gate(db, province=True),
        )
        report = await opendata.publish(CODE, opendata_publish.BY)
    finally:
        await db.close()
    return report, time.perf_counter() - started


@dataclass(frozen=True)
class Target:
    """A server the client downloads the file from, and the processes that serve it."""

    name: str
    url: str
    #: Process name -> pid, whose CPU time is read around each round.
    pids: dict[str, int]


def client(cafile: Path, concurrency: int) -> aiohttp.ClientSession:
    """The public's client: HTTPS, the self-signed certificate trusted, no client certificate,
    at most ``concurrency`` connections, kept alive between downloads."""
    tls = ssl.create_default_context(cafile=str(cafile))
    connector = aiohttp.TCPConnector(ssl=tls, limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def fetch(
    session: aiohttp.ClientSession, url: str, *, digest: bool = False
) -> tuple[int, str, dict[str, str]]:
    """One whole download: (bytes, SHA-256 hex if ``digest`` else "", the headers)."""
    sha = hashlib.sha256() if digest else None
    got = 0
    async with session.get(url) as response:
        if response.status != 200:
            body = (await response.content.read(500)).decode("utf-8", errors="replace")
            raise RuntimeError(f"GET {url}: {response.status} {body}")
        async for piece in response.content.iter_any():
            got += len(piece)
            if sha is not None:
                sha.update(piece)
        headers = dict(response.headers)
    return got, sha.hexdigest() if sha is not None else "", headers


async def wait_healthy(session: aiohttp.ClientSession, url: str, portal: Child) -> None:
    """Until the portal answers /healthz 200 (its node SERVING)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if portal.process.returncode is not None:
            raise portal.failure(f"exited with code {portal.process.returncode} while starting")
        try:
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
                last = f"{response.status}: {await response.text()}"
        except aiohttp.ClientError as exc:
            last = str(exc) or type(exc).__name__
        await asyncio.sleep(0.2)
    raise portal.failure(f"/healthz not 200 within {START_TIMEOUT_S:.0f} s (last: {last})")


async def first_download(session: aiohttp.ClientSession, url: str) -> tuple[bytes, str]:
    """The file, once, through the portal, checked against its Content-Length and Repr-Digest;
    (its bytes, its SHA-256 hex)."""
    async with session.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status} {await response.text()}")
        data = await response.read()
        length, stated = response.headers["Content-Length"], response.headers["Repr-Digest"]
    digest = hashlib.sha256(data)
    if int(length) != len(data):
        raise RuntimeError(f"the portal sent {len(data)} bytes, Content-Length {length}")
    if stated != f"sha-256=:{base64.b64encode(digest.digest()).decode()}:":
        raise RuntimeError(f"the portal's file does not match its Repr-Digest {stated}")
    return data, digest.hexdigest()


# --- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundFigures:
    seconds: float
    bytes: int
    #: CPU seconds during the round: each of the target's processes, and "client".
    cpu: dict[str, float]

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds > 0 else 0.0


async def download_round(
    session: aiohttp.ClientSession,
    target: Target,
    size: int,
    *,
    downloads: int,
    seconds: float,
    concurrency: int,
) -> RoundFigures:
    """Whole downloads from ``target``, ``concurrency`` at a time, until at least ``downloads``
    are done and ``seconds`` have passed (a fast server's round is too short to time
    otherwise), at most :data:`MAX_DOWNLOADS`."""
    started_downloads = 0

    def more() -> bool:
        if started_downloads >= MAX_DOWNLOADS:
            return False
        return started_downloads < downloads or time.perf_counter() - started < seconds

    async def worker() -> int:
        nonlocal started_downloads
        got = 0
        while more():
            started_downloads += 1
            n, _, _ = await fetch(session, target.url)
            if n != size:
                raise RuntimeError(f"{target.name}: a download gave {n} bytes of {size}")
            got += n
        return got

    before = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    client_before = time.process_time()
    started = time.perf_counter()
    async with asyncio.timeout(ROUND_TIMEOUT_S):
        got = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
    elapsed = time.perf_counter() - started
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in target.pids.items()}
    cpu["client"] = time.process_time() - client_before
    return RoundFigures(elapsed, got, cpu)


@dataclass
class Side:
    target: Target
    rounds: list[RoundFigures] = field(default_factory=list)

    def best(self) -> RoundFigures:
        return max(self.rounds, key=lambda r: r.mb_per_s)

    def cpu_per_mb(self) -> dict[str, float]:
        """CPU seconds per MB over every round, per process."""
        mb = sum(r.bytes for r in self.rounds) / MB
        names = self.rounds[0].cpu
        return {name: round(sum(r.cpu[name] for r in self.rounds) / mb, 4) for name in names}


async def run(
    base: Path, records: int, rounds: int, downloads: int, seconds: float, concurrency: int
) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM (from python -m bench stopping this child) ends the run like Ctrl-C: cancelled,
    # the node, portal and baseline stopped, the directory removed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    logs = base / "logs"
    logs.mkdir()
    _progress("provisioning a province node and its portal (PKI, configs)")
    province, portal_toml = await asyncio.to_thread(provision, base)
    _progress(f"submitting {records:,} records of a 普遍开放 resource and publishing them")
    report, setup_s = await load_and_publish(province.config, records)
    _progress(
        f"published {report.rows_published:,} rows ({report.rows_suppressed} left out, k "
        f"{report.k_reached}) in {setup_s:.1f} s; starting the node, then the portal"
    )
    portal_dir = portal_toml.parent
    listen = next(
        line.split('"')[1]
        for line in portal_toml.read_text(encoding="utf-8").splitlines()
        if line.startswith("listen = ")
    )
    portal_url = f"https://{listen}"
    portal_command = python_command(
        "-c", "from node.cli import main; main()", "portal", "serve", "--config", str(portal_toml)
    )
    quiet = {"GOVNODE_LOG__FORMAT": "json", "GOVNODE_LOG__LEVEL": "warning"}
    async with (
        province_mod.serve(province, logs) as node,
        child("portal", portal_command, logs=logs, env=quiet) as portal,
        client(portal_dir / "server.crt", concurrency) as session,
    ):
        await wait_healthy(session, portal_url, portal)
        csv_url = f"{portal_url}/api/v1/datasets/{CODE}/data.csv"
        data, sha256 = await first_download(session, csv_url)
        size = len(data)
        file = base / "data.csv"
        file.write_bytes(data)
        del data
        _progress(f"the CSV through the portal: {size:,} bytes, SHA-256 {sha256[:16]}…")
        port = free_port()
        bare_command = python_command(
            "-m", "bench.bare_http", "--port", str(port), "--config", str(portal_toml),
            "--file", str(file),
        )  # fmt: skip
        async with child("bare-http", bare_command, logs=logs) as bare:
            if (line := await bare.read_line(within=30.0)) != "ready":
                raise bare.failure(f"said {line!r} instead of 'ready'")
            bare_url = f"https://127.0.0.1:{port}/data.csv"
            n, digest, _ = await fetch(session, bare_url, digest=True)
            if (n, digest) != (size, sha256):
                raise RuntimeError(f"the bare server sent {n} bytes with SHA-256 {digest}")
            await fetch(session, csv_url)  # untimed, as the bare server's first
            sides = {
                "portal": Side(
                    Target(
                        "portal",
                        csv_url,
                        {"portal": portal.process.pid, "node": node.process.pid},
                    )
                ),
                "bare": Side(Target("bare", bare_url, {"bare": bare.process.pid})),
            }
            for r in range(1, rounds + 1):
                order = ("portal", "bare") if r % 2 else ("bare", "portal")
                for name in order:
                    side = sides[name]
                    figures = await download_round(
                        session,
                        side.target,
                        size,
                        downloads=downloads,
                        seconds=seconds,
                        concurrency=concurrency,
                    )
                    side.rounds.append(figures)
                    _progress(_round_line(name, r, rounds, figures))
            for process in (node, portal, bare):
                if process.process.returncode is not None:
                    raise process.failure(f"exited with code {process.process.returncode}")
    return figures_of(records, report, size, sides, rounds, seconds, concurrency)


def figures_of(
    records: int,
    report: Report,
    size: int,
    sides: dict[str, Side],
    rounds: int,
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    portal, bare = sides["portal"], sides["bare"]
    p_best, b_best = portal.best(), bare.best()
    return {
        "records": records,
        "rows_published": report.rows_published,
        "file_bytes": size,
        "rounds": rounds,
        "round_s": seconds,
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
        "portal_mb_per_s": round(p_best.mb_per_s, 2),
        "bare_mb_per_s": round(b_best.mb_per_s, 2),
        "download_ratio": round(p_best.mb_per_s / b_best.mb_per_s, 3) if b_best.mb_per_s else None,
        "portal_rounds_mb_per_s": [round(r.mb_per_s, 2) for r in portal.rounds],
        "bare_rounds_mb_per_s": [round(r.mb_per_s, 2) for r in bare.rounds],
        "portal_downloads": sum(r.bytes for r in portal.rounds) // size,
        "bare_downloads": sum(r.bytes for r in bare.rounds) // size,
        "cpu_s_per_mb": {
            "portal": portal.cpu_per_mb()["portal"],
            "node": portal.cpu_per_mb()["node"],
            "client_of_portal": portal.cpu_per_mb()["client"],
            "bare": bare.cpu_per_mb()["bare"],
            "client_of_bare": bare.cpu_per_mb()["client"],
        },
    }


def describe(data: dict[str, Any]) -> str:
    cpu = data["cpu_s_per_mb"]
    return "\n".join(
        [
            f"{data['records']:,} records ({data['rows_published']:,} rows published), CSV "
            f"{data['file_bytes'] / MB:.1f} MB; {data['rounds']} rounds of at least "
            f"{data['round_s']:g} s per server, {data['concurrency']} downloads at a time "
            f"({data['portal_downloads']} through the portal, {data['bare_downloads']} from the "
            f"bare server); {data['cpus']} CPUs",
            "",
            f"{'server':<34} {'MB/s (best)':>12} {'rounds':>24}",
            f"{'bare aiohttp HTTPS (baseline)':<34} {data['bare_mb_per_s']:>12.1f} "
            f"{_list(data['bare_rounds_mb_per_s']):>24}",
            f"{'portal (govnode portal serve)':<34} {data['portal_mb_per_s']:>12.1f} "
            f"{_list(data['portal_rounds_mb_per_s']):>24}",
            f"portal / bare: {data['download_ratio']} (target >= 0.5)",
            "",
            "CPU s per MB (all rounds): "
            f"portal {cpu['portal']:.4f} + node {cpu['node']:.4f} "
            f"(client {cpu['client_of_portal']:.4f}); bare {cpu['bare']:.4f} "
            f"(client {cpu['client_of_bare']:.4f})",
        ]
    )


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _round_line(name: str, r: int, rounds: int, figures: RoundFigures) -> str:
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in figures.cpu.items())
    return (
        f"{name} round {r}/{rounds}: {figures.bytes / MB:.1f} MB in {figures.seconds:.2f} s = "
        f"{figures.mb_per_s:.1f} MB/s; CPU s: {cpu}"
    )


def _progress(message: str) -> None:
    print(f"[opendata-download] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records",
        type=int,
        default=100_000,
        help="records published (default 100,000, a CSV of about 9 MB; below about 20,000 the "
        "~700 classes of its quasi-identifiers are too small and publication is refused)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (default 3)")
    parser.add_argument(
        "--downloads",
        type=int,
        default=4,
        help="whole downloads per server per round, at least (4)",
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="seconds per server per round, at least (2)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="downloads at once (4)")
    args = parser.parse_args(argv)
    if min(args.records, args.rounds, args.downloads, args.concurrency) < 1:
        raise SystemExit("--records, --rounds, --downloads and --concurrency must be at least 1")
    if args.seconds < 0:
        raise SystemExit("--seconds must not be negative")
    configure_logging("console", "warning")
    with tempfile.TemporaryDirectory(prefix="govnode-bench-download-") as base:
        data = asyncio.run(
            run(
                Path(base),
                args.records,
                args.rounds,
                args.downloads,
                args.seconds,
                args.concurrency,
            )
        )
    print(describe(data))
    print(json.dumps(data, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
