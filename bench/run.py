"""``python -m bench`` (``make bench``): start a province node, run the scenarios, print the
table and, as the last line, one JSON object with the figures and the ratios.

Exit status 0 when every scenario measured what it should (whatever the ratios: timings are
never a failure), 1 when something failed, 130 on Ctrl-C. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import tempfile
import time
from pathlib import Path

import grpc.aio

from bench import observability
from bench import province as province_mod
from bench.procs import ChildFailed
from bench.report import json_line, summary, table
from bench.scenarios import SCENARIOS, Bench, Options, Outcome, say


def build_parser() -> argparse.ArgumentParser:
    names = [s.name for s in SCENARIOS]
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="govnode benchmarks: figures next to baselines measured in the same run.",
    )
    p.add_argument("--quick", action="store_true", help="small counts, one round (smoke test)")
    p.add_argument("--duration", type=float, help="seconds per measurement, at most")
    p.add_argument("--rounds", type=int, help="rounds per scenario (best round is reported)")
    p.add_argument("--concurrency", type=int, help="calls in flight in total")
    p.add_argument("--channels", type=int, help="mTLS connections the callers share")
    p.add_argument("--max-calls", type=int, help="measured calls per run, at most")
    p.add_argument("--batches", type=int, help="Submit batches per round")
    p.add_argument("--batch-size", type=int, help="records per Submit batch")
    p.add_argument(
        "--unread-streams", type=int, help="unread-streams: Subscribe streams opened, never read"
    )
    p.add_argument(
        "--publish-records", type=int, help="opendata-publish: records published (100,000)"
    )
    p.add_argument(
        "--download-records",
        type=int,
        help="opendata-download: records in the downloaded CSV (50,000; at least ~20,000)",
    )
    p.add_argument(
        "--quality-records",
        type=int,
        help="quality-check: records in the checked resource (1,000,000)",
    )
    p.add_argument(
        "--observe",
        action="append",
        choices=sorted(observability.FEATURES),
        help="observability: what the observed node enables (repeatable; default: metrics)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=names,
        help=f"run only this scenario (repeatable; default: all of {', '.join(names)})",
    )
    return p


_OVERRIDABLE = (
    "duration",
    "rounds",
    "concurrency",
    "channels",
    "max_calls",
    "batches",
    "batch_size",
    "unread_streams",
    "publish_records",
    "download_records",
    "quality_records",
)


def options_from(args: argparse.Namespace) -> Options:
    options = Options.quick() if args.quick else Options()
    overrides = {name: value for name in _OVERRIDABLE if (value := getattr(args, name)) is not None}
    if args.observe:
        overrides["observe"] = tuple(dict.fromkeys(args.observe))
    options = dataclasses.replace(options, **overrides, scenarios=tuple(args.scenario or ()))
    if min(options.rounds, options.channels, options.batches, options.batch_size) < 1:
        raise SystemExit("--rounds, --channels, --batches and --batch-size must be at least 1")
    if options.concurrency < options.channels:
        raise SystemExit("--concurrency must be at least --channels")
    if options.duration <= 0:
        raise SystemExit("--duration must be positive")
    return options


async def run(options: Options) -> list[tuple[str, Outcome]]:
    # SIGTERM ends the run like Ctrl-C does: cancelled, children stopped, directory removed.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    selected = [s for s in SCENARIOS if not options.scenarios or s.name in options.scenarios]
    results: list[tuple[str, Outcome]] = []
    with tempfile.TemporaryDirectory(prefix="govnode-bench-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        say("provisioning a province node (PKI, config, agency certificates)")
        province = await asyncio.to_thread(province_mod.provision, workdir / "province")
        say(f"starting govnode serve on {province.target}")
        async with province_mod.serve(province, logs) as node:
            await province_mod.register_resource(province)
            say("registered 350000-1-000002 法人单位基础信息 as its provider")
            bench = Bench(options, province, workdir, logs, node_pid=node.process.pid)
            for scenario in selected:
                say(f"scenario {scenario.name}: {scenario.title}")
                started = time.monotonic()
                try:
                    outcome = await scenario.run(bench)
                except (ChildFailed, grpc.aio.AioRpcError, RuntimeError) as exc:
                    if main_task.cancelling():
                        # Ctrl-C or SIGTERM: grpc may surface the cancellation as a failed
                        # call; it must still end the run.
                        raise asyncio.CancelledError from exc
                    outcome = Outcome(
                        targets=dict(scenario.targets),
                        problems=[f"{scenario.name} failed: {_describe(exc)}"],
                    )
                if node.process.returncode is not None:
                    raise node.failure(f"exited with code {node.process.returncode} mid-run")
                say(f"scenario {scenario.name} done in {time.monotonic() - started:.0f} s")
                results.append((scenario.name, outcome))
        # After the node stopped, so every audit entry it accepted is in the file.
        audited = province_mod.audit_counts(province)
        results.append(("audit", _audit_outcome(audited)))
    return results


def _audit_outcome(audited: dict[str, int] | None) -> Outcome:
    if audited is None:
        return Outcome(notes=["audit log: could not read the node's audit_record table"])
    audited = dict(audited)
    checkpoints = audited.pop("(checkpoints signed)", 0)
    entries = ", ".join(f"{n} {method}" for method, n in sorted(audited.items()))
    return Outcome(
        figures={"audit_entries": audited, "audit_checkpoints": checkpoints},
        notes=[
            f"audit log on: the node wrote {sum(audited.values())} entries ({entries}) and "
            f"signed {checkpoints} checkpoints of it"
        ],
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    options = options_from(build_parser().parse_args(argv))
    try:
        results = asyncio.run(run(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; processes stopped and temporary files removed")
        return 130
    except (ChildFailed, grpc.aio.AioRpcError, OSError) as exc:
        say(f"failed: {_describe(exc)}")
        results = [("setup", Outcome(problems=[f"setup failed: {_describe(exc)}"]))]
    print(table(results))
    data = summary(results, options)
    print(json_line(data), flush=True)
    return 1 if data["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
