"""What the bench measures: each scenario pairs a govnode figure with a baseline taken in the
same run, and reports both plus their ratio.

A scenario is anything with a ``name``, a one-line ``title`` and ``async run(bench)`` returning
an :class:`Outcome`; :data:`SCENARIOS` lists them in the order they run. Routed Verify
(city → province → city) runs last, on a federation of its own.

Each pair is measured ``rounds`` times, alternating baseline and govnode so that a noisy spell
on the shared machine hits both sides alike, and the best round of each side is reported (as
``timeit`` does: noise only ever makes a run slower). Every round is logged on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench import federation, observability, processes, tracing_cost, unread
from bench import province as province_mod
from bench.databases import fresh_postgres_database
from bench.postgres_node import POSTGRES_ENV, postgres_url, serve_on_postgres
from bench.procs import Child, child, cpu_seconds, python_command
from bench.province import Province, SubmitFigures, submit
from bench.sqlite_baseline import insert_batches
from gateway.tls import TlsFiles
from node.ports import free_port


@dataclass(frozen=True)
class Options:
    duration: float = 8.0
    rounds: int = 3
    channels: int = 4
    concurrency: int = 64
    max_calls: int = 200_000
    warmup: int = 500
    batches: int = 50
    batch_size: int = 1000
    unread_streams: int = 200
    publish_records: int = 100_000
    download_records: int = 50_000
    quality_records: int = 1_000_000
    #: observability: what the observed node enables (bench.observability.FEATURES).
    observe: tuple[str, ...] = ("metrics",)
    scenarios: tuple[str, ...] = ()

    @classmethod
    def quick(cls) -> Options:
        return cls(
            duration=2.0,
            rounds=1,
            max_calls=5_000,
            warmup=200,
            batches=5,
            batch_size=500,
            publish_records=20_000,
            download_records=20_000,
            quality_records=20_000,
        )


@dataclass(frozen=True)
class Rate:
    """One measured row of the table."""

    label: str
    per_s: float | None
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    #: The server's CPU time (user + system, all its processes) per call or record, in µs.
    cpu_us: float | None = None


@dataclass(frozen=True)
class Ratio:
    label: str
    value: float | None
    target: float | None  # None: a figure to explain another, with no target of its own


@dataclass
class Outcome:
    rows: list[Rate | Ratio] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: For a ratio below its target: what limits it (from this run's figures and the README's
    #: measurements) and what was tried; printed only when one of the outcome's ratios is
    #: below its target.
    limits: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    """What the scenarios share: options, the running province node and its records."""

    options: Options
    province: Province
    workdir: Path
    logs: Path
    #: Records 0 .. records-1 are in the node (submitted by a scenario or ensure_records);
    #: Verify spreads its keys over them.
    records: int = 0
    #: The node's process id, for its CPU time (/proc); None when not known.
    node_pid: int | None = None

    async def ensure_records(self, count: int) -> None:
        """Submit (untimed) until the node holds at least ``count`` records."""
        missing = count - self.records
        if missing <= 0:
            return
        batch = self.options.batch_size
        batches = -(-missing // batch)
        say(f"seeding {batches * batch} records for Verify")
        figures = await submit(
            self.province.target,
            self.province.provider,
            first=self.records,
            batches=batches,
            batch_size=batch,
            duration=600.0,
        )
        if figures.accepted != batches * batch:
            raise RuntimeError(f"seeding accepted {figures.accepted} records of {batches * batch}")
        self.records += figures.accepted

    async def load(
        self,
        mode: str,
        target: str,
        files: TlsFiles,
        *extra: str,
        cpu_pids: Sequence[int] = (),
        processes: int = 1,
    ) -> dict[str, Any]:
        """One run of the load generator in ``processes`` processes of its own (the callers
        and connections split among them); its JSON figures, added up over the processes.

        Over the measured calls (from the moment every load process measures to the moment
        every one has finished) it also reads the CPU time of the servers ``cpu_pids`` and of
        the load processes from /proc: ``server_cpu_us_per_call`` (one process only: with
        several, the window and the calls do not quite line up), ``server_cpu_per_s`` and
        ``load_cpu_per_s`` (CPU seconds per wall second: 1.0 is one core busy)."""
        o = self.options
        per = max(o.concurrency // processes, 1)
        channels = max(o.channels // processes, 1)

        def command(index: int) -> list[str]:
            return python_command(
                "-m", "bench.load", "--mode", mode, "--target", target,
                "--key", str(files.key), "--cert", str(files.chain), "--root", str(files.root),
                "--channels", str(channels), "--concurrency", str(per),
                "--duration", str(o.duration), "--max-calls", str(o.max_calls // processes),
                "--warmup", str(o.warmup // processes), "--seed", str(20160701 + index),
                "--marks", *extra,
            )  # fmt: skip

        async with contextlib.AsyncExitStack() as stack:
            loads = [
                await stack.enter_async_context(
                    child(f"load-{mode}-{i}", command(i), logs=self.logs)
                )
                for i in range(processes)
            ]
            for load in loads:
                await _expect(load, "measuring", within=60.0)
            t0, server0 = time.monotonic(), cpu_seconds(*cpu_pids)
            for load in loads:
                await _expect(load, "measured", within=o.duration + 60.0)
            wall = time.monotonic() - t0
            server = cpu_seconds(*cpu_pids) - server0
            runs = [json.loads(await load.read_line(within=60.0)) for load in loads]
        # Each load process reports its own CPU: one may have exited before another said
        # "measured", and /proc no longer has it.
        client = sum(float(r.get("load_cpu_s", 0.0)) for r in runs)
        result: dict[str, Any] = runs[0]
        if processes > 1:
            result = {
                **result,
                "calls": sum(r["calls"] for r in runs),
                "calls_per_s": round(sum(r["calls_per_s"] for r in runs), 1),
                "p50_ms": max(r["p50_ms"] for r in runs),
                "p99_ms": max(r["p99_ms"] for r in runs),
                "unexpected": sum(r["unexpected"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "first_error": next((r["first_error"] for r in runs if r["first_error"]), ""),
            }
        result["processes"] = processes
        result["load_cpu_per_s"] = round(client / wall, 2) if wall > 0 else None
        if cpu_pids:
            result["server_cpu_per_s"] = round(server / wall, 2) if wall > 0 else None
            result["server_cpu_us_per_call"] = (
                round(server / result["calls"] * 1e6, 1)
                if processes == 1 and result["calls"]
                else None
            )
        return result


async def _expect(load: Child, word: str, *, within: float) -> None:
    if (line := await load.read_line(within=within)) != word:
        raise load.failure(f"said {line[:80]!r} instead of {word!r}")


def _best(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return max(runs, key=lambda r: float(r[key]))


def _least(runs: list[dict[str, Any]], key: str) -> float | None:
    """The least of a figure over the rounds (noise only ever adds CPU), None if unmeasured."""
    values = [float(r[key]) for r in runs if r.get(key) is not None]
    return min(values) if values else None


def _calls_row(label: str, rate: float | None, run: dict[str, Any], cpu: float | None) -> Rate:
    """A row of calls/s with the latencies of the run it came from and the CPU per call."""
    return Rate(label, rate, "calls/s", run["p50_ms"], run["p99_ms"], cpu)


async def _seed(province: Province, o: Options) -> None:
    """Submit (untimed) ``o.batches`` x ``o.batch_size`` records into a fresh province."""
    records = o.batches * o.batch_size
    seeded = await submit(
        province.target,
        province.provider,
        first=0,
        batches=o.batches,
        batch_size=o.batch_size,
        duration=600.0,
    )
    if seeded.accepted != records:
        raise RuntimeError(f"seeding accepted {seeded.accepted} of {records} records")


def number(value: float | None, digits: int = 0) -> str:
    """``value`` with thousands separators and ``digits`` decimals; "-" when not measured."""
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _load_problem(name: str, run: dict[str, Any]) -> str | None:
    if run["errors"]:
        return f"{name}: {run['errors']} failed calls, first: {run['first_error']}"
    if run["unexpected"]:
        return f"{name}: {run['unexpected']} answers were not the expected ones"
    if not run["calls"]:
        return f"{name}: no call completed"
    return None


class VerifyScenario:
    """联机验证 Verify against a bare grpc.aio mutual-TLS echo server."""

    name = "verify"
    title = "Verify calls/s vs a bare grpc.aio mTLS echo server"
    targets: ClassVar[dict[str, float]] = {"verify_ratio": 0.6, "verify_cpu_ratio": 0.6}

    async def run(self, bench: Bench) -> Outcome:
        o, province = bench.options, bench.province
        await bench.ensure_records(o.batches * o.batch_size)
        port = free_port()
        files = province.node_files
        command = python_command(
            "-m", "bench.echo", "--port", str(port),
            "--key", str(files.key), "--cert", str(files.chain), "--root", str(files.root),
        )  # fmt: skip
        keys = ("--keys-start", "0", "--keys-count", str(bench.records))
        node = [bench.node_pid] if bench.node_pid else []
        echo_runs: list[dict[str, Any]] = []
        verify_runs: list[dict[str, Any]] = []
        async with child("echo", command, logs=bench.logs) as server:
            if (line := await server.read_line(within=30.0)) != "ready":
                raise server.failure(f"said {line!r} instead of 'ready'")
            echo_pid = [server.process.pid]
            for r in range(1, o.rounds + 1):
                run = await bench.load(
                    "echo", f"127.0.0.1:{port}", province.consumer, cpu_pids=echo_pid
                )
                say(_round_line("echo", r, o.rounds, run))
                echo_runs.append(run)
                run = await bench.load(
                    "verify", province.target, province.consumer, *keys, cpu_pids=node
                )
                say(_round_line("Verify", r, o.rounds, run))
                verify_runs.append(run)
            # Is the load generator what limits echo? The same callers split over two load
            # processes: if one process were the limit, two would serve echo faster.
            echo_two = await bench.load(
                "echo", f"127.0.0.1:{port}", province.consumer, cpu_pids=echo_pid, processes=2
            )
            say(_round_line("echo, 2 load processes", 1, 1, echo_two))
        outcome = Outcome(targets=self.targets)
        problems = [
            p
            for name, runs in (("echo", [*echo_runs, echo_two]), ("Verify", verify_runs))
            for run in runs
            if (p := _load_problem(name, run))
        ]
        outcome.problems.extend(dict.fromkeys(problems))
        echo = _best(echo_runs, "calls_per_s")
        verify = _best(verify_runs, "calls_per_s")
        # A run with failed or wrong answers measured nothing worth a figure.
        v_rate, v_p50, v_p99 = (
            (None, None, None)
            if problems
            else (verify["calls_per_s"], verify["p50_ms"], verify["p99_ms"])
        )
        echo_cpu = _least(echo_runs, "server_cpu_us_per_call")
        verify_cpu = None if problems else _least(verify_runs, "server_cpu_us_per_call")
        ratio = _ratio(v_rate, echo["calls_per_s"])
        cpu_ratio = _ratio(echo_cpu, verify_cpu)
        outcome.rows = [
            Rate(
                "bare grpc.aio mTLS echo (baseline)",
                echo["calls_per_s"],
                "calls/s",
                echo["p50_ms"],
                echo["p99_ms"],
                echo_cpu,
            ),
            Rate("govnode Verify", v_rate, "calls/s", v_p50, v_p99, verify_cpu),
            Ratio("Verify / echo", ratio, self.targets["verify_ratio"]),
            Ratio("Verify / echo, CPU per call", cpu_ratio, self.targets["verify_cpu_ratio"]),
            Rate("echo, 2 load processes (check)", echo_two["calls_per_s"], "calls/s"),
        ]
        outcome.figures = {
            "verify_calls_per_s": v_rate,
            "verify_p50_ms": v_p50,
            "verify_p99_ms": v_p99,
            "echo_calls_per_s": echo["calls_per_s"],
            "echo_p50_ms": echo["p50_ms"],
            "echo_p99_ms": echo["p99_ms"],
            "verify_ratio": ratio,
            "echo_cpu_us_per_call": echo_cpu,
            "verify_cpu_us_per_call": verify_cpu,
            "verify_cpu_ratio": cpu_ratio,
            "echo_server_cpu_per_s": echo["server_cpu_per_s"],
            "echo_load_cpu_per_s": echo["load_cpu_per_s"],
            "echo_two_loads_calls_per_s": echo_two["calls_per_s"],
            "echo_two_loads_server_cpu_per_s": echo_two["server_cpu_per_s"],
        }
        outcome.notes.append(
            f"Verify: {o.channels} mTLS connections x {o.concurrency // o.channels} calls in "
            f"flight from one load process, {o.duration:g} s or {o.max_calls} calls per side "
            f"per round, best of {o.rounds}; keys spread over {bench.records} records; same "
            "client, server options, certificates and payload size for both sides; CPU per "
            "call is the server process's user + system time from /proc over the measured "
            "calls, least of the rounds"
        )
        if echo_two["calls_per_s"] > echo["calls_per_s"] * 1.1:
            limit = "the load generator: two load processes served echo more than 10% faster"
        elif (echo["server_cpu_per_s"] or 0.0) >= 0.9:
            limit = "the echo server, about one core busy (two load processes: within 10%)"
        else:
            limit = "neither process alone: the machine's cores, shared by both"
        outcome.notes.append(
            f"echo's limit: in its best round the echo server used {echo['server_cpu_per_s']} "
            f"CPU s/s and the load process {echo['load_cpu_per_s']}; the same callers split over "
            f"two load processes got {echo_two['calls_per_s']:,.0f} calls/s against one's "
            f"{echo['calls_per_s']:,.0f} (server {echo_two['server_cpu_per_s']} CPU s/s, loads "
            f"{echo_two['load_cpu_per_s']}): what limits echo is {limit}"
        )
        outcome.limits.append(
            f"Verify / echo: a Verify cost the node {number(verify_cpu)} µs of CPU here against "
            f"{number(echo_cpu)} for a whole echo call. Measured by thread and with py-spy "
            "(README, Where Verify's time goes): gRPC's own per-call work in the node's event "
            "loop is about what the whole echo server spends; govnode's Python about 180 µs "
            "(revocation, catalog and record point reads, the access decision, the audit "
            "record); the audit log's durable group commit, which must end before the answer "
            "leaves, about 120 µs in its writer thread; gRPC's socket threads about 70. Tried, "
            "each measured: point reads instead of sessions, group commit, the audit rows "
            "through the driver with their hashes prepared outside the transaction, "
            "per-call allocations removed; with the audit write skipped altogether (not "
            "allowed: durable before the answer) Verify reached 0.64, so the target asks for "
            "a call cheaper than gRPC's Python server makes it."
        )
        return outcome


class SubmitScenario:
    """汇聚 Submit against raw sqlite3 executemany of the same rows; with a PostgreSQL server
    (bench.postgres_node), also the same node on PostgreSQL against the node on SQLite."""

    name = "submit"
    title = "Submit records/s vs raw sqlite3 executemany (and on PostgreSQL vs SQLite)"
    targets: ClassVar[dict[str, float]] = {"submit_ratio": 0.5, "submit_cpu_ratio": 0.5}
    #: Issue 17: Submit on PostgreSQL at least half of Submit on SQLite, same machine, same run.
    postgres_target = 0.5

    async def run(self, bench: Bench) -> Outcome:
        base_url = postgres_url()
        if base_url is None:
            return await self._run(bench, None)
        say("starting a second node on a fresh PostgreSQL database")
        async with serve_on_postgres(base_url, bench.workdir, bench.logs) as on_postgres:
            return await self._run(bench, on_postgres)

    async def _run(self, bench: Bench, on_postgres: Province | None) -> Outcome:
        o = bench.options
        baseline_db = bench.workdir / "baseline.db"
        sqlite_runs = []
        history_runs = []
        submit_runs: list[SubmitFigures] = []
        postgres_runs: list[SubmitFigures] = []
        first_round = bench.records
        # CPU µs per record: the node process's for Submit; sqlite3 runs in this process.
        cpu: dict[str, list[float]] = {"sqlite": [], "history": [], "submit": []}
        for r in range(1, o.rounds + 1):
            # The same records on every side: fresh keys, so all are first-time inserts.
            first = bench.records
            began = time.process_time()
            base = insert_batches(
                baseline_db,
                first=first,
                batches=o.batches,
                batch_size=o.batch_size,
                duration=o.duration,
            )
            say(f"sqlite3 round {r}/{o.rounds}: {base.rows} rows in {base.seconds:.3f} s "
                f"= {base.records_per_s:,.0f} records/s")  # fmt: skip
            sqlite_runs.append(base)
            if base.rows:
                cpu["sqlite"].append((time.process_time() - began) / base.rows * 1e6)
            # The same with each record's history row, as the node must write (a file of its
            # own, and keys of their own in it).
            began = time.process_time()
            kept = insert_batches(
                bench.workdir / "baseline-history.db",
                first=first,
                batches=o.batches,
                batch_size=o.batch_size,
                duration=o.duration,
                history=True,
            )
            say(f"sqlite3 with history round {r}/{o.rounds}: {kept.rows} records in "
                f"{kept.seconds:.3f} s = {kept.records_per_s:,.0f} records/s")  # fmt: skip
            history_runs.append(kept)
            if kept.rows:
                cpu["history"].append((time.process_time() - began) / kept.rows * 1e6)
            node_before = cpu_seconds(bench.node_pid) if bench.node_pid else 0.0
            figures = await self._submit(bench.province, first, o, f"Submit round {r}/{o.rounds}")
            submit_runs.append(figures)
            if bench.node_pid and figures.accepted:
                used = cpu_seconds(bench.node_pid) - node_before
                cpu["submit"].append(used / figures.accepted * 1e6)
            if on_postgres is not None:
                postgres_runs.append(
                    await self._submit(on_postgres, first, o, f"PostgreSQL round {r}/{o.rounds}")
                )
            if figures.rejected or any(f.rejected for f in postgres_runs):
                break
            bench.records += figures.batches * o.batch_size
        # Changes of the records the first round stored: every one held for approval.
        held = await self._submit(
            bench.province, first_round, o, "changed records", changed=submit_runs[0].batches
        )
        held_postgres = (
            None
            if on_postgres is None
            else await self._submit(
                on_postgres,
                first_round,
                o,
                "changed records, PostgreSQL",
                changed=postgres_runs[0].batches,
            )
        )
        outcome = Outcome(targets=dict(self.targets))
        for figures in [
            *submit_runs,
            *postgres_runs,
            held,
            *([held_postgres] if held_postgres else []),
        ]:
            if figures.rejected:
                outcome.problems.append(
                    f"Submit: {figures.rejected} records rejected, first: {figures.first_problem}"
                )
                break
        base = max(sqlite_runs, key=lambda f: f.records_per_s)
        best = max(submit_runs, key=lambda f: f.records_per_s)
        rate = None if outcome.problems or not best.accepted else round(best.records_per_s, 1)
        ratio = _ratio(rate, base.records_per_s)
        held_rate = None if outcome.problems or not held.held else round(held.held_per_s, 1)
        kept = max(history_runs, key=lambda f: f.records_per_s)
        history_cpu = round(min(cpu["history"]), 2) if cpu["history"] else None
        sqlite_cpu = round(min(cpu["sqlite"]), 2) if cpu["sqlite"] else None
        submit_cpu = round(min(cpu["submit"]), 2) if cpu["submit"] and rate else None
        cpu_ratio = _ratio(sqlite_cpu, submit_cpu)
        outcome.rows = [
            Rate(
                "raw sqlite3 executemany (baseline)",
                round(base.records_per_s, 1),
                "records/s",
                cpu_us=sqlite_cpu,
            ),
            Rate("govnode Submit", rate, "records/s", cpu_us=submit_cpu),
            Ratio("Submit / sqlite3", ratio, self.targets["submit_ratio"]),
            Ratio("Submit / sqlite3, CPU per record", cpu_ratio, self.targets["submit_cpu_ratio"]),
            Rate(
                "sqlite3 with each record's history row",
                round(kept.records_per_s, 1),
                "records/s",
                cpu_us=history_cpu,
            ),
            Ratio(
                "  it / sqlite3: the most Submit could reach",
                _ratio(kept.records_per_s, base.records_per_s),
                None,
            ),
            Ratio("  Submit / it", _ratio(rate, kept.records_per_s), None),
            Ratio("  Submit / it, CPU per record", _ratio(history_cpu, submit_cpu), None),
            Rate("Submit of changes, held for approval", held_rate, "records/s"),
        ]
        outcome.figures = {
            "submit_records_per_s": rate,
            "sqlite_records_per_s": round(base.records_per_s, 1),
            "submit_ratio": ratio,
            "submit_held_records_per_s": held_rate,
            "submit_held_ratio": _ratio(held_rate, base.records_per_s),
            "sqlite_cpu_us_per_record": sqlite_cpu,
            "submit_cpu_us_per_record": submit_cpu,
            "submit_cpu_ratio": cpu_ratio,
            "sqlite_history_records_per_s": round(kept.records_per_s, 1),
            "sqlite_history_cpu_us_per_record": history_cpu,
            "sqlite_history_ratio": _ratio(kept.records_per_s, base.records_per_s),
            "submit_history_ratio": _ratio(rate, kept.records_per_s),
            "submit_history_cpu_ratio": _ratio(history_cpu, submit_cpu),
        }
        outcome.notes.append(
            f"Submit: {o.batches} batches x {o.batch_size} records per round over one mTLS "
            f"stream (at most 4 batches unacked; timed first send to last ack), best of "
            f"{o.rounds}; sqlite3 inserts the same rows with the node's pragmas (WAL, "
            "synchronous=NORMAL, busy_timeout, foreign_keys), BEGIN IMMEDIATE and one commit "
            "per batch; CPU per record: the node process's from /proc over the stream, and "
            "this process's for sqlite3 (in process), least of the rounds. Changes held for "
            "approval: the first round's records resent once with another legal "
            "representative, each held as a change request (第四十一条)"
        )
        outcome.limits.append(
            f"Submit / sqlite3: Submit cost the node {number(submit_cpu, 1)} µs of CPU a record "
            f"here against sqlite3's {number(sqlite_cpu, 1)}. The node keeps each record's "
            "history (第四十一条), a second row and index: sqlite3 writing that row too reached "
            f"{number(_ratio(kept.records_per_s, base.records_per_s), 2)} of itself in this run, "
            "the most Submit could reach. The rest is spread, per py-spy (README, Submit against "
            "raw sqlite3): the protobuf record to a dict about 1.7 µs, the JSON of its values "
            "1.5, the batch digest 0.8, the check against the catalog entry, the audit record "
            "and the acknowledgement, none of them large enough alone. Tried, each measured: "
            "the batch's constants converted once, the rows through the driver's executemany, "
            "the checker's CPU clock read only past its wall-clock budget."
        )
        if on_postgres is not None:
            self._postgres_rows(outcome, postgres_runs, held_postgres, rate)
        return outcome

    def _postgres_rows(
        self,
        outcome: Outcome,
        runs: list[SubmitFigures],
        held: SubmitFigures | None,
        on_sqlite: float | None,
    ) -> None:
        best = max(runs, key=lambda f: f.records_per_s)
        rate = None if outcome.problems or not best.accepted else round(best.records_per_s, 1)
        ratio = _ratio(rate, on_sqlite)
        held_rate = None if outcome.problems or held is None else round(held.held_per_s, 1)
        outcome.targets["submit_postgres_ratio"] = self.postgres_target
        outcome.rows += [
            Rate("govnode Submit on PostgreSQL", rate, "records/s"),
            Ratio("Submit PostgreSQL / SQLite", ratio, self.postgres_target),
            Rate("changes held, on PostgreSQL", held_rate, "records/s"),
        ]
        outcome.figures.update(
            submit_postgres_records_per_s=rate,
            submit_postgres_ratio=ratio,
            submit_postgres_held_records_per_s=held_rate,
        )
        outcome.notes.append(
            "Submit on PostgreSQL: the same node, configuration and batches, served on a fresh "
            f"PostgreSQL database ({POSTGRES_ENV}) never analysed during the run, each round "
            "right after the SQLite node's; ratio against the SQLite node's best round"
        )

    @staticmethod
    async def _submit(
        province: Province, first: int, o: Options, label: str, *, changed: int = 0
    ) -> SubmitFigures:
        """Submit ``o.batches`` batches of new records from ``first``; with ``changed``, that
        many batches of changes of the stored records from ``first`` instead."""
        figures = await submit(
            province.target,
            province.provider,
            first=first,
            batches=changed or o.batches,
            batch_size=o.batch_size,
            duration=o.duration,
            changed=bool(changed),
        )
        done = figures.held if changed else figures.accepted
        say(f"{label}: {done} records in {figures.seconds:.3f} s = "
            f"{done / figures.seconds if figures.seconds else 0:,.0f} records/s")  # fmt: skip
        return figures


class RoutedVerifyScenario:
    """Routed 联机验证: a 厦门 agency asks 厦门 about a 福州 resource (厦门 → province → 福州),
    against single-node Verify (a 福州 agency asking 福州) in the same federation and run."""

    name = "routed-verify"
    title = "routed Verify (city → province → city) calls/s vs single-node Verify"
    targets: ClassVar[dict[str, float]] = {"routed_ratio": 0.3, "routed_cpu_ratio": 0.3}

    async def run(self, bench: Bench) -> Outcome:
        o = bench.options
        say("provisioning a federation: province, 福州 350100, 厦门 350200 (file-admitted)")
        fed = await asyncio.to_thread(federation.provision, bench.workdir / "federation")
        async with federation.serve(fed, bench.logs) as nodes:
            say(f"federation SERVING: province {fed.province.target}, 福州 {fed.fuzhou.target}, "
                f"厦门 {fed.xiamen.target}")  # fmt: skip
            spread = await federation.register_and_spread(fed)
            say(f"福州 registered {federation.RESOURCE_CODE}; it reached 厦门 in {spread:.1f} s")
            records = o.batches * o.batch_size
            say(f"seeding {records} records on 福州")
            seeded = await submit(
                fed.fuzhou.target,
                fed.fuzhou.agency,
                first=0,
                batches=o.batches,
                batch_size=o.batch_size,
                duration=600.0,
                resource_code=federation.RESOURCE_CODE,
            )
            if seeded.accepted != records:
                raise RuntimeError(
                    f"seeding 福州 accepted {seeded.accepted} records of {records}"
                    + (f", first problem: {seeded.first_problem}" if seeded.first_problem else "")
                )
            await federation.routed_ready(fed)
            keys = (
                "--keys-start", "0", "--keys-count", str(records),
                "--resource-code", federation.RESOURCE_CODE,
            )  # fmt: skip
            single_runs: list[dict[str, Any]] = []
            routed_runs: list[dict[str, Any]] = []
            # CPU per call: 福州's alone for single-node, all three nodes' for a routed call.
            fuzhou = [nodes[fed.members.index(fed.fuzhou)].process.pid]
            every = [node.process.pid for node in nodes]
            for r in range(1, o.rounds + 1):
                run = await bench.load(
                    "verify", fed.fuzhou.target, fed.fuzhou.agency, *keys, cpu_pids=fuzhou
                )
                say(_round_line("single-node Verify", r, o.rounds, run))
                single_runs.append(run)
                run = await bench.load(
                    "verify", fed.xiamen.target, fed.xiamen.agency, *keys, cpu_pids=every
                )
                say(_round_line("routed Verify", r, o.rounds, run))
                routed_runs.append(run)
            for node in nodes:
                if node.process.returncode is not None:
                    raise node.failure(f"exited with code {node.process.returncode} mid-run")
        outcome = Outcome(targets=self.targets)
        problems = [
            p
            for name, runs in (("single-node Verify", single_runs), ("routed Verify", routed_runs))
            for run in runs
            if (p := _load_problem(name, run))
        ]
        outcome.problems.extend(dict.fromkeys(problems))
        single = _best(single_runs, "calls_per_s")
        routed = _best(routed_runs, "calls_per_s")

        def figures(run: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
            # A run with failed or wrong answers measured nothing worth a figure.
            if problems:
                return None, None, None
            return run["calls_per_s"], run["p50_ms"], run["p99_ms"]

        s_rate, s_p50, s_p99 = figures(single)
        r_rate, r_p50, r_p99 = figures(routed)
        ratio = _ratio(r_rate, s_rate)
        s_cpu = None if problems else _least(single_runs, "server_cpu_us_per_call")
        r_cpu = None if problems else _least(routed_runs, "server_cpu_us_per_call")
        cpu_ratio = _ratio(s_cpu, r_cpu)
        outcome.rows = [
            Rate("single-node Verify (350100 itself)", s_rate, "calls/s", s_p50, s_p99, s_cpu),
            Rate("routed Verify 350200>350000>350100", r_rate, "calls/s", r_p50, r_p99, r_cpu),
            Ratio("routed / single-node Verify", ratio, self.targets["routed_ratio"]),
            Ratio(
                "routed / single-node, CPU per call", cpu_ratio, self.targets["routed_cpu_ratio"]
            ),
        ]
        outcome.figures = {
            "routed_verify_calls_per_s": r_rate,
            "routed_verify_p50_ms": r_p50,
            "routed_verify_p99_ms": r_p99,
            "single_verify_calls_per_s": s_rate,
            "single_verify_p50_ms": s_p50,
            "single_verify_p99_ms": s_p99,
            "routed_ratio": ratio,
            "single_verify_cpu_us_per_call": s_cpu,
            "routed_verify_cpu_us_per_call": r_cpu,
            "routed_cpu_ratio": cpu_ratio,
        }
        outcome.notes.append(
            f"routed Verify: three govnode processes (province, 福州, 厦门; cities admitted by "
            f"file, province peers in its config); {records} records of "
            f"{federation.RESOURCE_CODE} (法人单位基础信息, unconditional) on 福州; a 厦门 agency "
            "calls 厦门, which forwards to the province, which forwards to 福州; the baseline is "
            f"a 福州 agency calling 福州 with the same keys; {o.channels} connections x "
            f"{o.concurrency // o.channels} calls in flight, {o.duration:g} s or {o.max_calls} "
            f"calls per side per round, best of {o.rounds}; CPU per call: 福州's process "
            "for single-node, the three processes' added up for routed, least of the rounds"
        )
        outcome.limits.append(
            f"routed / single-node: a routed Verify cost the three nodes {number(r_cpu)} µs of "
            f"CPU here against {number(s_cpu)} for a single-node one: three gRPC server calls "
            "and two client calls in three Python processes that share this machine's cores "
            "with the load generator, each node authenticating, checking the assertion and "
            "auditing the call, none of the parts more than a fifth of the whole (README, "
            "Where routed Verify's time goes). Tried, each measured: the assertion nonce "
            "recorded at the serving node only and group-committed with the audit writer, "
            "the forwarding channel reused; closing the gap would take a relay that does not "
            "end the call in Python, or direct city-to-city calls: changes of the "
            "federation's design, not made."
        )
        return outcome


class UnreadStreamsScenario:
    """主动推送 Subscribe: a subscriber that reads, and Verify, while another agency holds many
    Subscribe streams it never reads; the baseline is the same phase without them, same run."""

    name = "unread-streams"
    title = "a reading subscriber and Verify with N unread Subscribe streams vs none"
    targets: ClassVar[dict[str, float]] = {"unread_reader_ratio": 0.5, "unread_verify_ratio": 0.5}

    async def run(self, bench: Bench) -> Outcome:
        o, province = bench.options, bench.province
        # A backlog for every subscriber: the reader's rate is then the node's to give, not the
        # Submit load's.
        await bench.ensure_records(max(o.batches * o.batch_size, 20_000))
        phase_s = max(o.duration, 2.0)

        async def phase(label: str) -> unread.PhaseFigures:
            load = unread.paced_submit(
                province.target, province.provider, first=bench.records, batch_size=100,
                interval=0.05,
            )  # fmt: skip
            figures = await unread.measure_phase(
                target=province.target,
                reader=province.consumer,
                verifier=province.consumer,
                keys=bench.records,
                duration=phase_s,
                node_pid=bench.node_pid,
                submit_load=load,
            )
            bench.records += figures.submitted
            ended = f", reader ended: {figures.reader_error}" if figures.reader_error else ""
            say(
                f"{label}: reader {figures.reader_per_s:,.0f} changes/s, Verify p50 "
                f"{figures.verify_p50_ms} ms over {figures.verify_calls} calls, submitted "
                f"{figures.submitted}, node CPU {figures.node_cpu_per_s} s/s{ended}"
            )
            return figures

        alone = await phase("no unread streams")
        files = province.idle_consumer
        command = python_command(
            "-m", "bench.unread", "--target", province.target, "--key", str(files.key),
            "--cert", str(files.chain), "--root", str(files.root),
            "--streams", str(o.unread_streams),
        )  # fmt: skip
        async with child("unread", command, logs=bench.logs) as holder:
            held: dict[str, Any] = json.loads(await holder.read_line(within=120.0))
            say(f"{o.unread_streams} Subscribe streams asked for, never read: {held}")
            crowded = await phase(f"{held['open']} unread streams open")
            idle = await unread.idle_cpu(bench.node_pid, phase_s) if bench.node_pid else None
            say(f"node CPU with the unread streams open and no new data: {idle} s/s")
        outcome = Outcome(targets=self.targets)
        for label, f in (("alone", alone), ("crowded", crowded)):
            if f.reader_error:
                outcome.problems.append(f"unread-streams ({label}): reader: {f.reader_error}")
        reader_ratio = _ratio(crowded.reader_per_s, alone.reader_per_s)
        verify_ratio = _ratio(alone.verify_p50_ms, crowded.verify_p50_ms)
        outcome.rows = [
            Rate("reading subscriber, no unread streams", round(alone.reader_per_s, 1),
                 "changes/s"),
            Rate(f"reading subscriber, {held['open']} unread open", round(crowded.reader_per_s, 1),
                 "changes/s"),
            Ratio("reader: with / without", reader_ratio, self.targets["unread_reader_ratio"]),
            Rate("Verify, no unread streams", alone.verify_calls / alone.seconds, "calls/s",
                 alone.verify_p50_ms),
            Rate(f"Verify, {held['open']} unread open", crowded.verify_calls / crowded.seconds,
                 "calls/s", crowded.verify_p50_ms),
            Ratio("Verify p50: without / with", verify_ratio,
                  self.targets["unread_verify_ratio"]),
        ]  # fmt: skip
        outcome.figures = {
            "unread_streams_asked": o.unread_streams,
            "unread_streams_open": held["open"],
            "unread_streams_refused": held["refused"],
            "unread_first_refusal": held["first_refusal"],
            "unread_reader_alone_per_s": round(alone.reader_per_s, 1),
            "unread_reader_crowded_per_s": round(crowded.reader_per_s, 1),
            "unread_reader_ratio": reader_ratio,
            "unread_verify_alone_p50_ms": alone.verify_p50_ms,
            "unread_verify_crowded_p50_ms": crowded.verify_p50_ms,
            "unread_verify_ratio": verify_ratio,
            "unread_node_cpu_alone": alone.node_cpu_per_s,
            "unread_node_cpu_crowded": crowded.node_cpu_per_s,
            "unread_node_cpu_idle": idle,
        }
        outcome.notes.append(
            f"unread-streams: a 福建省民政厅 process opens {o.unread_streams} Subscribe streams "
            "from sequence 0 and never reads them; meanwhile, as in the baseline phase before "
            "it, 福建省公安厅 subscribes from sequence 0 and reads, calls Verify one call at a "
            f"time (10 ms apart), and the provider submits 100 records every 50 ms; {phase_s:g} s "
            "per phase, one round; node CPU from /proc; then the node's CPU with the streams "
            "still open and nothing submitted"
        )
        return outcome


def _round_line(name: str, r: int, rounds: int, run: dict[str, Any]) -> str:
    line = (
        f"{name} round {r}/{rounds}: {run['calls']} calls in {run['seconds']:.2f} s = "
        f"{run['calls_per_s']:,.0f} calls/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms"
    )
    if run["errors"]:
        line += f", {run['errors']} errors ({run['first_error']})"
    return line


class OpenDataPublishScenario:
    """开放 publication with its de-identification and k-anonymity check, in-process on a fresh
    SQLite database of its own (``python -m bench.opendata_publish``, a child process), against
    reading the same records in the same pages."""

    name = "opendata-publish"
    title = "OpenData.publish records/s vs SELECT of the same records in the same pages"
    #: Provisional: a little under what SQLite does today (0.20-0.22), to catch regressions.
    targets: ClassVar[dict[str, float]] = {"publish_ratio": 0.15}

    async def run(self, bench: Bench) -> Outcome:
        records = bench.options.publish_records
        command = python_command("-m", "bench.opendata_publish", "--records", str(records))
        async with child("opendata-publish", command, logs=bench.logs) as publish:
            line = ""
            while not line.startswith("{"):
                line = await publish.read_line(within=900.0)
        data: dict[str, Any] = json.loads(line)
        outcome = Outcome(targets=self.targets)
        if data["cut_short"]:
            outcome.problems.append(f"opendata-publish: publication {data['cut_short']}")
        publish_rate = None if data["cut_short"] else data["publish_rows_per_s"]
        ratio = _ratio(publish_rate, data["select_rows_per_s"])
        phases = data["phases"]
        outcome.rows = [
            Rate("SELECT all, same pages (baseline)", data["select_rows_per_s"], "records/s"),
            Rate("OpenData.publish", publish_rate, "records/s"),
            Ratio("publish / SELECT", ratio, self.targets["publish_ratio"]),
        ]
        outcome.figures = {
            "publish_records_per_s": publish_rate,
            "publish_select_records_per_s": data["select_rows_per_s"],
            "publish_ratio": ratio,
            "publish_k_sql_s": phases["k"]["wall_s"],
            "publish_bytes_per_row": data["file_growth_bytes_per_row"],
        }
        outcome.notes.append(
            f"opendata-publish: {records:,} records submitted through Records.submit into a "
            f"fresh SQLite file, then published once ({data['rows_published']:,} rows, k "
            f"{data['k_reached']}): build {phases['build']['wall_s']:.1f} s (reading "
            f"{phases['build.read_pages']['wall_s']:.1f}, treat + scan "
            f"{phases['build.treat_scan_key']['wall_s']:.1f}, writing "
            f"{phases['build.write_rows']['wall_s']:.1f}), k-anonymity SQL "
            f"{phases['k']['wall_s']:.2f} s; {data['file_growth_bytes_per_row']} B/row on disk"
        )
        return outcome


class OpenDataDownloadScenario:
    """普遍开放 downloads (第三十二条): the CSV through ``govnode portal serve`` and its node,
    against a bare aiohttp HTTPS server streaming the same bytes (``python -m
    bench.opendata_download``, a child process with a node, a portal and a baseline of its
    own)."""

    name = "opendata-download"
    title = "CSV download MB/s through the portal vs a bare aiohttp HTTPS server"
    targets: ClassVar[dict[str, float]] = {"download_ratio": 0.5}

    async def run(self, bench: Bench) -> Outcome:
        o = bench.options
        seconds = min(o.duration, 2.0)
        command = python_command(
            "-m", "bench.opendata_download", "--records", str(o.download_records),
            "--rounds", str(o.rounds), "--seconds", f"{seconds:g}",
        )  # fmt: skip
        async with child("opendata-download", command, logs=bench.logs) as download:
            line = ""
            while not line.startswith("{"):
                line = await download.read_line(within=600.0)
        data: dict[str, Any] = json.loads(line)
        cpu = data["cpu_s_per_mb"]
        outcome = Outcome(targets=self.targets)
        outcome.rows = [
            Rate("bare aiohttp HTTPS, same bytes (baseline)", data["bare_mb_per_s"], "MB/s"),
            Rate("portal download (portal + node)", data["portal_mb_per_s"], "MB/s"),
            Ratio("portal / bare", data["download_ratio"], self.targets["download_ratio"]),
        ]
        outcome.figures = {
            "download_portal_mb_per_s": data["portal_mb_per_s"],
            "download_bare_mb_per_s": data["bare_mb_per_s"],
            "download_ratio": data["download_ratio"],
            "download_cpu_s_per_mb": cpu,
        }
        outcome.notes.append(
            f"opendata-download: a 普遍开放 CSV of {data['rows_published']:,} rows "
            f"({data['file_bytes'] / 1e6:.1f} MB) downloaded whole, {data['concurrency']} at a "
            f"time, by one aiohttp client from govnode portal serve (HTTPS, self-signed) in front "
            f"of its node, and from a bare aiohttp server with the portal's TLS streaming the "
            f"same bytes from memory; {data['rounds']} alternating rounds of at least "
            f"{data['round_s']:g} s each, best of each; CPU s per MB: portal {cpu['portal']}, "
            f"node {cpu['node']}, bare server {cpu['bare']}"
        )
        return outcome


class QualityCheckScenario:
    """A quality check (第十五、十六条) of one resource of ``--quality-records`` records
    (``python -m bench.quality_check``, a child process on a fresh SQLite file), against a raw
    SQL count that reads the same rows, in the same run; then the incremental check after 1%
    more records."""

    name = "quality-check"
    title = "Quality.check of one resource vs a raw SQL count of its rows"
    #: Issue 15: the check at most 3x the count's time, i.e. count / check at least 1/3.
    targets: ClassVar[dict[str, float]] = {"quality_count_over_check": 0.333}

    async def run(self, bench: Bench) -> Outcome:
        records = bench.options.quality_records
        rounds = str(max(bench.options.rounds, 1))
        command = python_command(
            "-m", "bench.quality_check", "--records", str(records), "--rounds", rounds
        )
        async with child("quality-check", command, logs=bench.logs) as check:
            line = ""
            while not line.startswith("{"):
                line = await check.read_line(within=1800.0)
        data: dict[str, Any] = json.loads(line)
        wall = data["wall_s"]
        ratio = _ratio(wall["rows"], wall["check"])
        outcome = Outcome(targets=self.targets)
        outcome.rows = [
            Rate("count(*) reading every row (baseline)", records / wall["rows"], "records/s"),
            Rate("Quality.check, every record counted", records / wall["check"], "records/s"),
            Ratio("count / check", ratio, self.targets["quality_count_over_check"]),
        ]
        outcome.figures = {
            "quality_check_s": wall["check"],
            "quality_count_s": wall["rows"],
            "quality_index_count_s": wall["index"],
            "quality_incremental_s": wall["incremental"],
            "quality_count_over_check": ratio,
            "quality_peak_rss_mb": data["rss_peak_mb"],
        }
        if not data["incremental_matches_full"]:
            outcome.problems.append("quality-check: the incremental check differs from a full one")
        outcome.notes.append(
            f"quality-check: {records:,} records; the check {wall['check']:.2f} s (CPU "
            f"{data['cpu_s']['check']:.2f} s), a count reading every row {wall['rows']:.2f} s, "
            f"from the index {wall['index']:.2f} s; after {data['incremental_added']:,} more "
            f"records the daily (incremental) check {wall['incremental']:.3f} s; peak RSS of "
            f"the checking process {data['rss_peak_mb']} MB ({data['rss_open_mb']} MB before)"
        )
        return outcome


class ObservabilityScenario:
    """Verify on a node with its metrics (``--observe``: bench.observability) on, against an
    alike node with them off, in the same run; the node's CPU per call from /proc."""

    name = "observability"
    title = "Verify calls/s and node CPU per call with metrics on vs off"
    #: Metrics may cost Verify less than 5% of its throughput (issue 16).
    targets: ClassVar[dict[str, float]] = {"observed_verify_ratio": 0.95}

    async def run(self, bench: Bench) -> Outcome:
        o = bench.options
        observed = observability.observed(o.observe)
        say(f"provisioning two province nodes: plain, and with {', '.join(o.observe)} on")
        base = bench.workdir / "observability"
        plain = await asyncio.to_thread(province_mod.provision, base / "plain")
        seen = await asyncio.to_thread(province_mod.provision, base / "observed")
        records = o.batches * o.batch_size
        keys = ("--keys-start", "0", "--keys-count", str(records))
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "observed": []}
        cpu: dict[str, list[float]] = {"plain": [], "observed": []}
        counted = 0.0
        async with (
            province_mod.serve_node(
                "govnode-plain", plain.config_path, plain.target, plain.consumer, bench.logs
            ) as plain_node,
            province_mod.serve_node(
                "govnode-observed",
                seen.config_path,
                seen.target,
                seen.consumer,
                bench.logs,
                env=observed.env,
            ) as seen_node,
        ):
            for province in (plain, seen):
                await province_mod.register_resource(province)
                await _seed(province, o)
            sides = (("plain", plain, plain_node), ("observed", seen, seen_node))
            for r in range(1, o.rounds + 1):
                # Each side goes first in every other round: whichever runs right after the
                # other's load finds the machine busier.
                for label, province, node in sides if r % 2 else sides[::-1]:
                    before = cpu_seconds(node.process.pid)
                    run = await bench.load("verify", province.target, province.consumer, *keys)
                    used = cpu_seconds(node.process.pid) - before
                    say(_round_line(f"Verify, {label}", r, o.rounds, run))
                    runs[label].append(run)
                    cpu[label].append(used / run["calls"] * 1e6 if run["calls"] else 0.0)
            if observed.metrics_port is not None:
                counted = await observability.verify_calls_counted(observed.metrics_port)
        outcome = Outcome(targets=self.targets)
        problems = [
            p
            for label, side in runs.items()
            for run in side
            if (p := _load_problem(f"Verify, {label}", run))
        ]
        if observed.metrics_port is not None and counted < sum(
            run["calls"] for run in runs["observed"]
        ):
            problems.append(
                f"observability: the observed node's /metrics counted {counted:.0f} Verify "
                "calls, fewer than were made: were its metrics on?"
            )
        outcome.problems.extend(dict.fromkeys(problems))
        best = {label: _best(side, "calls_per_s") for label, side in runs.items()}
        # CPU per call: the least of the rounds, as for throughput (noise only adds).
        cpu_us = {label: round(min(values), 1) for label, values in cpu.items()}
        rate = {
            label: None if problems else float(run["calls_per_s"]) for label, run in best.items()
        }
        ratio = _ratio(rate["observed"], rate["plain"])
        cpu_ratio = _ratio(cpu_us["observed"], cpu_us["plain"])
        counting = (
            await asyncio.to_thread(observability.counting_us) if "metrics" in o.observe else None
        )
        on = "+".join(o.observe)
        outcome.rows = [
            _calls_row("Verify, plain node", rate["plain"], best["plain"], cpu_us["plain"]),
            _calls_row(f"Verify, {on} on", rate["observed"], best["observed"], cpu_us["observed"]),
            Ratio(f"Verify with {on} / plain", ratio, self.targets["observed_verify_ratio"]),
        ]
        outcome.figures = {
            "observed": list(o.observe),
            "plain_verify_calls_per_s": rate["plain"],
            "observed_verify_calls_per_s": rate["observed"],
            "plain_node_cpu_us_per_call": cpu_us["plain"],
            "observed_node_cpu_us_per_call": cpu_us["observed"],
            "observed_verify_ratio": ratio,
            "observed_cpu_ratio": cpu_ratio,
            "metrics_counting_us_per_call": counting,
        }
        outcome.notes.append(
            f"observability: two fresh province nodes with {records} records each, the second "
            f"with {on} on ({', '.join(sorted(observed.env))}); Verify alternating between "
            f"them, best of {o.rounds}; node CPU per call {cpu_us['plain']} µs plain, "
            f"{cpu_us['observed']} µs with {on} (ratio {cpu_ratio}); two alike plain nodes "
            "differ by up to 15% in either figure on a shared 2-core machine"
        )
        if counting is not None and cpu_us["plain"]:
            share = counting / cpu_us["plain"] * 100
            outcome.notes.append(
                f"observability: the guard's counting of one call, timed in process: {counting} "
                f"µs, {share:.2f}% of the plain node's CPU per Verify"
            )
        return outcome


class TracingCostScenario:
    """What metrics and tracing together cost Verify (issue 16): the same node with both off,
    and with its metrics listener on and every trace recorded, or one in ten (the recommended
    ratio); spans batched into an exporter that drops them. See bench.tracing_cost."""

    name = "tracing-cost"
    title = "Verify calls/s and node CPU per call, metrics + tracing on vs off"
    targets: ClassVar[dict[str, float]] = {
        "observed_10pct_ratio": 0.95,
        "observed_all_ratio": 0.95,
        "observed_10pct_cpu_ratio": 0.95,
        "observed_all_cpu_ratio": 0.95,
    }

    async def run(self, bench: Bench) -> Outcome:
        o = bench.options
        say("provisioning a province of its own for metrics + tracing on/off")
        province = await asyncio.to_thread(province_mod.provision, bench.workdir / "tracing")
        records = o.batches * o.batch_size
        async with tracing_cost.serve(province, bench.logs):
            await province_mod.register_resource(province)
            await _seed(province, o)
        keys = ("--keys-start", "0", "--keys-count", str(records))
        # One node, switched between the three: both off; metrics on and every trace
        # recorded; metrics on and one trace in ten. Each round runs the three, led by another
        # each time (every call adds to the audit log: a side always run first would always
        # find the smallest log), twice as many rounds as the others' since each is one load.
        sides = tuple(tracing_cost.MODES)
        rounds = 2 * o.rounds
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        metrics_port = free_port()
        async with tracing_cost.serve(province, bench.logs, metrics_port=metrics_port) as node:
            # Its start-up work done first (bench.tracing_cost.settled); what it then uses
            # idle (the metrics sampler's rounds) is by time, not by call.
            idle = await tracing_cost.settled(node)
            for r in range(1, rounds + 1):
                lead = (r - 1) % len(sides)
                for side in sides[lead:] + sides[:lead]:
                    await tracing_cost.switch(node, side)
                    run = await bench.load(
                        "verify",
                        province.target,
                        province.consumer,
                        *keys,
                        cpu_pids=(node.process.pid,),
                    )
                    say(_round_line(f"Verify, metrics + tracing {side}", r, rounds, run))
                    runs[side].append(run)
            counted = await observability.verify_calls_counted(metrics_port)
            spans = await tracing_cost.dropped_spans(node)
        problems = [
            p
            for side, measured in runs.items()
            for run in measured
            if (p := _load_problem(f"Verify (metrics + tracing {side})", run))
        ]
        on_calls = sum(run["calls"] for side in ("all", "10pct") for run in runs[side])
        if counted < on_calls:
            problems.append(
                f"tracing-cost: /metrics counted {counted:.0f} Verify calls of at least "
                f"{on_calls} made with the metrics on: they were not on"
            )
        if not spans:
            problems.append(f"tracing-cost: the node recorded no spans ({spans}): tracing was off")
        outcome = Outcome(targets=self.targets)
        outcome.problems.extend(dict.fromkeys(problems))
        best = {s: _best(runs[s], "calls_per_s") for s in sides}
        cpu_us = {s: _least(runs[s], "server_cpu_us_per_call") for s in sides}

        def paired(side: str, key: str, on_over_off: bool) -> float | None:
            """The median over the rounds of on/off (calls/s) or off/on (CPU per call) within
            each round: the two sides of one round ran a few seconds apart."""
            pairs = [
                (
                    float(on[key]) / float(off[key])
                    if on_over_off
                    else float(off[key]) / float(on[key])
                )
                for on, off in zip(runs[side], runs["off"], strict=True)
                if on.get(key) and off.get(key)
            ]
            return None if problems or not pairs else round(statistics.median(pairs), 3)

        ratios = {
            s: (paired(s, "calls_per_s", True), paired(s, "server_cpu_us_per_call", False))
            for s in ("all", "10pct")
        }
        rate = {s: None if problems else best[s]["calls_per_s"] for s in sides}
        in_process = await asyncio.to_thread(_in_process_us)
        labels = {
            "off": "metrics + tracing off",
            "all": "metrics + tracing on, every trace",
            "10pct": "metrics + tracing on, 1 trace in 10",
        }
        outcome.rows = [
            *(
                Rate(f"Verify, {labels[s]}", rate[s], "calls/s", b["p50_ms"], b["p99_ms"])
                for s, b in best.items()
            ),
            Ratio(
                "metrics + tracing on / off (10%, recommended)",
                ratios["10pct"][0],
                self.targets["observed_10pct_ratio"],
            ),
            Ratio(
                "metrics + tracing on / off (every trace)",
                ratios["all"][0],
                self.targets["observed_all_ratio"],
            ),
            Ratio(
                "  calls per node CPU s, on / off (10%)",
                ratios["10pct"][1],
                self.targets["observed_10pct_cpu_ratio"],
            ),
            Ratio(
                "  calls per node CPU s, on / off (every trace)",
                ratios["all"][1],
                self.targets["observed_all_cpu_ratio"],
            ),
        ]
        off_us = cpu_us["off"] or 0.0
        estimate = {
            s: round(off_us / (off_us + in_process["counting"] + in_process[s]), 3)
            if off_us
            else None
            for s in ("all", "10pct")
        }
        outcome.figures = {
            "observed_off_calls_per_s": rate["off"],
            "observed_all_calls_per_s": rate["all"],
            "observed_10pct_calls_per_s": rate["10pct"],
            "observed_10pct_ratio": ratios["10pct"][0],
            "observed_all_ratio": ratios["all"][0],
            "observed_10pct_cpu_ratio": ratios["10pct"][1],
            "observed_all_cpu_ratio": ratios["all"][1],
            "observed_node_cpu_us_per_call": cpu_us,
            "observed_rounds": {
                s: [[r["calls_per_s"], r.get("server_cpu_us_per_call")] for r in runs[s]]
                for s in sides
            },
            "observed_in_process_us": in_process,
            "observed_in_process_ratio": estimate,
            "tracing_spans_dropped": spans,
            "observed_idle_cpu_share": round(idle, 3),
        }
        outcome.notes.append(
            "tracing-cost: one node switched between the three for each load "
            f"(bench.tracing_cost), {rounds} rounds, each led by another; ratios are the "
            "median over the rounds of on/off within a round. The node's CPU per Verify (least "
            f"of the rounds): {cpu_us['off']} µs with metrics and tracing off, {cpu_us['all']} "
            f"µs with every trace recorded, {cpu_us['10pct']} µs with one in ten; {spans} spans "
            f"built and dropped; {records} records; idle after start-up, with its metrics "
            f"listener and sampler, the node used {idle * 100:.1f}% of a core"
        )
        outcome.notes.append(
            f"tracing-cost, timed in process (bench.tracing_cost.span_us, "
            f"bench.observability.counting_us): the guard's span {in_process['all']} µs a call "
            f"recorded, {in_process['10pct']} µs a call at 1 in 10, {in_process['off']} µs "
            f"off; its counting {in_process['counting']} µs; against the off node's "
            f"{cpu_us['off']} µs a call: on/off {estimate['all']} (every trace), "
            f"{estimate['10pct']} (1 in 10)"
        )
        return outcome


def _in_process_us() -> dict[str, float]:
    """The guard's own cost per call, timed in this process (deterministic where the
    end-to-end ratios are at the mercy of a shared machine)."""
    return {
        "off": tracing_cost.span_us(None),
        "10pct": tracing_cost.span_us(0.1),
        "all": tracing_cost.span_us(1.0),
        "counting": observability.counting_us(),
    }


class ProcessesScenario:
    """Verify through two ``govnode serve`` processes of one node on one PostgreSQL, sharing
    the address (``[node] reuse_port``), against one process alone (issue 17 item 6); see
    bench.processes."""

    name = "processes"
    title = "Verify calls/s, two processes of one node vs one (PostgreSQL)"
    targets: ClassVar[dict[str, float]] = {"two_processes_ratio": processes.TARGET}

    async def run(self, bench: Bench) -> Outcome:
        o = bench.options
        outcome = Outcome(targets=self.targets)
        base_url = postgres_url()
        if base_url is None:
            outcome.notes.append(f"processes: skipped, {POSTGRES_ENV} is not set")
            return outcome
        records = o.batches * o.batch_size
        keys = ("--keys-start", "0", "--keys-count", str(records))
        spread = ("--channels", str(processes.CONNECTIONS))
        runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
        cpu: dict[str, list[float]] = {"one": [], "two": []}
        served: list[list[float]] = []
        async with fresh_postgres_database(base_url) as url:
            province = await asyncio.to_thread(province_mod.provision, bench.workdir / "processes")
            processes.share_the_port(province.config_path, url)
            ports = [free_port(), free_port()]

            @contextlib.asynccontextmanager
            async def serve(n: int) -> AsyncIterator[Child]:
                async with province_mod.serve_node(
                    f"govnode-{n + 1}",
                    province.config_path,
                    province.target,
                    province.consumer,
                    bench.logs,
                    env={"GOVNODE_METRICS__LISTEN": f"127.0.0.1:{ports[n]}"},
                ) as node:
                    await processes.wait_healthy(ports[n], node)
                    yield node

            async with serve(0) as first:
                await province_mod.register_resource(province)
                await _seed(province, o)
                for r in range(1, o.rounds + 1):
                    async with serve(1) as second:
                        pids = [first.process.pid, second.process.pid]
                        before, counted = processes.cpu_of(pids), await processes.answered(ports)
                        run = await bench.load(
                            "verify", province.target, province.consumer, *keys, *spread
                        )
                        used = processes.cpu_of(pids) - before
                        after = await processes.answered(ports)
                        served.append([a - b for a, b in zip(after, counted, strict=True)])
                    say(_round_line("Verify, two processes", r, o.rounds, run))
                    runs["two"].append(run)
                    # Per call answered (warm-up included, as the CPU time is), by /metrics.
                    cpu["two"].append(used / max(sum(served[-1]), 1) * 1e6)
                    before = processes.cpu_of([first.process.pid])
                    [counted_one] = await processes.answered(ports[:1])
                    run = await bench.load(
                        "verify", province.target, province.consumer, *keys, *spread
                    )
                    used = processes.cpu_of([first.process.pid]) - before
                    [answered_one] = await processes.answered(ports[:1])
                    say(_round_line("Verify, one process", r, o.rounds, run))
                    runs["one"].append(run)
                    cpu["one"].append(used / max(answered_one - counted_one, 1) * 1e6)
        problems = [
            p
            for label, side in runs.items()
            for run in side
            if (p := _load_problem(f"Verify, {label} process(es)", run))
        ]
        if any(min(split) == 0 for split in served):
            problems.append(f"processes: a process answered no call in some round: {served}")
        outcome.problems.extend(dict.fromkeys(problems))
        best = {label: _best(side, "calls_per_s") for label, side in runs.items()}
        rate = {
            label: None if problems else float(run["calls_per_s"]) for label, run in best.items()
        }
        cpu_us = {label: round(min(values), 1) for label, values in cpu.items()}
        ratio = _ratio(rate["two"], rate["one"])
        outcome.rows = [
            _calls_row("Verify, one process", rate["one"], best["one"], cpu_us["one"]),
            _calls_row("Verify, two processes", rate["two"], best["two"], cpu_us["two"]),
            Ratio("two processes / one", ratio, self.targets["two_processes_ratio"]),
        ]
        outcome.figures = {
            "one_process_calls_per_s": rate["one"],
            "two_processes_calls_per_s": rate["two"],
            "one_process_cpu_us_per_call": cpu_us["one"],
            "two_processes_cpu_us_per_call": cpu_us["two"],
            "two_processes_ratio": ratio,
            "calls_per_process": served,
            "cores": processes.cores(),
        }
        outcome.notes.append(
            f"processes: one province node on a fresh PostgreSQL database with {records} "
            f"records; {processes.CONNECTIONS} connections x "
            f"{o.concurrency // processes.CONNECTIONS} calls in flight from one load process; "
            f"rounds alternate two processes and one, best of {o.rounds}; servers' CPU per call "
            f"{cpu_us['one']} µs with one, {cpu_us['two']} µs with two (all processes); calls "
            f"each process answered per round: {served}; {processes.cores()} cores for the "
            "node's processes, the load generator and PostgreSQL together"
        )
        outcome.limits.append(
            f"two processes / one: {processes.cores()} cores here for both node processes, "
            "PostgreSQL's backends and the load generator, and a Verify on PostgreSQL cost "
            f"the node {number(cpu_us['one'])} µs of CPU with one process, PostgreSQL's own "
            "CPU besides: a second process gains only where a core is free for it. The "
            "kernel did spread the connections (calls per process above). On one host with "
            "N cores for the node, run at most N-1 processes (README, Several processes of "
            "one node)."
        )
        return outcome


class Scenario(Protocol):
    name: str
    title: str
    #: The ratios this scenario reports and the least each should reach.
    targets: ClassVar[dict[str, float]]

    async def run(self, bench: Bench) -> Outcome: ...


#: In running order: Submit first, so Verify finds the records it submitted.
SCENARIOS: list[Scenario] = [
    SubmitScenario(),
    VerifyScenario(),
    UnreadStreamsScenario(),
    OpenDataPublishScenario(),
    OpenDataDownloadScenario(),
    QualityCheckScenario(),
    ObservabilityScenario(),
    RoutedVerifyScenario(),
    TracingCostScenario(),
    ProcessesScenario(),
]
