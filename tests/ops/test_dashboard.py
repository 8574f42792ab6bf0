"""The Grafana dashboard (ops/grafana/govnode.json) and the alert rules
(ops/prometheus/alerts.yml) ask only for series a running node exposes: every metric name in
their PromQL is on a node's /metrics, so neither can drift from what the node exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from node.app import start_node
from tests.support.databases import sqlite_urls
from tests.support.metrics import scrape
from tests.support.nodes import make_province, with_metrics

OPS = Path(__file__).resolve().parents[2] / "ops"
DASHBOARD = OPS / "grafana" / "govnode.json"
ALERTS = OPS / "prometheus" / "alerts.yml"

#: What PromQL writes besides metric names: functions, aggregations, keywords, durations.
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_FOLLOWS = re.compile(r"\s*\(")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers,
    groupings, strings and ranges that are not followed by '(' (functions, aggregations)."""
    text = re.sub(r'"[^"]*"', '""', expr)  # legend strings, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = _GROUPING.sub("", text)
    names = set()
    for match in _NAME.finditer(text):
        if _FOLLOWS.match(text, match.end()):
            continue
        if match.group().startswith(("grpc_", "govnode_", "process_", "python_")):
            names.add(match.group())
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def alert_exprs() -> list[str]:
    return [
        line.split("expr:", 1)[1].strip()
        for line in ALERTS.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("expr:")
    ]


def test_the_readme_names_every_alert() -> None:
    """The operations chapter's "what to watch" table names the alerts an operator will see."""
    readme = (OPS.parent / "README.md").read_text(encoding="utf-8")
    chapter = readme.split("\n## Operations\n", 1)[1].split("\n## ", 1)[0]
    names = [
        line.split("alert:", 1)[1].strip()
        for line in ALERTS.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("- alert:")
    ]
    assert len(names) >= 9
    missing = [name for name in names if f"`{name}`" not in chapter]
    assert not missing, f"README's Operations chapter does not name: {missing}"


def test_the_name_extraction_finds_names_and_skips_functions_and_labels() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_"
        'bucket{job=~"$job", grpc_code!="OK"}[5m]))) / time() - govnode_peer_up'
    )
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket", "govnode_peer_up"}


async def test_every_series_the_dashboard_and_alerts_use_is_exported(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    alerts = alert_exprs()
    assert len(exprs) >= 20 and len(alerts) >= 6  # both files were read
    wanted = {name for expr in [*exprs, *alerts] for name in metric_names(expr)}
    # The alerts the README promises are there.
    for name in (
        "govnode_witnessed_checkpoint_timestamp_seconds",
        "govnode_certificate_expiry_timestamp_seconds",
        "govnode_peer_up",
        "govnode_event_loop_lag_seconds",
        "govnode_aggregation_overdue_resources",
    ):
        assert any(name in expr for expr in alerts), name

    setup = with_metrics(make_province(tmp_path, await sqlite_urls(tmp_path)()))
    node = await start_node(setup.config)
    try:
        text = await scrape(node)
    finally:
        await node.stop(grace=0)
    exposed: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
    }
    for family in text_string_to_metric_families(text):
        exposed.add(family.name)
        exposed.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    missing = sorted(wanted - exposed)
    assert not missing, f"the dashboard or alerts use series no node exports: {missing}"
