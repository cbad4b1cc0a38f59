"""The monitoring assets in deploy/: Prometheus alert rules and the Grafana dashboard.

- ``promtool check rules`` (Debian's ``prometheus`` package; ``make test`` installs it)
  passes on the rules, and on a rules file made of every dashboard query, and
  ``promtool test rules`` on the rules' unit tests (alerts_test.yaml);
- every metric they name is served at ``/metrics`` by a running server (the memory
  backend, through ASGI) or by a running worker (Kafka-protocol broker and PostgreSQL);
- the dashboard is well formed (unique ids, panels on the 24-column grid without
  overlapping, a datasource and a query per target);
- every alert has a summary, a description and a runbook link to a section of
  docs/operations.md that exists.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from recloop.adapters.kafka import KafkaEventLog
from recloop.config import Settings
from recloop.container import kafka_config
from recloop.core.events import Event
from recloop.core.items import make_item
from tests.conftest import eventually, make_settings, service_unavailable, start_app
from tests.integration.test_worker_ops import get, serving
from tests.integration.test_worker_ops import settings as worker_settings  # noqa: F401
from tests.kafka_broker import kafka_broker  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "recloop.json"
OPERATIONS = ROOT / "docs" / "operations.md"

# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*"}

pytestmark = pytest.mark.timeout(180)

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    """The recloop metrics an expression reads (label values, quoted, left out)."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\brecloop_[a-zA-Z0-9_]+", unquoted))


def exposed(text: str) -> set[str]:
    """Every sample name an exposition declares (a family without samples yet included)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        service_unavailable("promtool", "install Debian's prometheus package (make test does)")
        raise AssertionError("unreachable")
    return found


def check_rules(promtool: str, path: Path) -> None:
    run = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_the_alert_rules_pass_promtool(promtool: str) -> None:
    check_rules(promtool, RULES)


def test_the_alerts_fire_on_their_unit_tests(promtool: str) -> None:
    """deploy/prometheus/alerts_test.yaml: series in, which alerts fire (labels and
    rendered annotations), and which stay quiet."""
    run = subprocess.run(
        [promtool, "test", "rules", TESTS.name],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    rules = []
    for n, (title, expr) in enumerate(queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{title}: a variable the test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check_rules(promtool, path)
    # promtool is not fooled into passing garbage
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "r", "expr": "rate(x[5m]"}]}]}
        )
    )
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=60)
    assert run.returncode != 0


def test_the_dashboard_is_well_formed() -> None:
    d = dashboard()
    assert d["uid"] and d["title"]
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in d["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert metric_names(target["expr"]), f"{panel['title']}: no recloop metric"
    # What the issue asks the dashboard to cover, by the metrics that show it.
    used = set().union(*(metric_names(expr) for _, expr in queries()))
    for metric in (
        "recloop_events_total",  # ingest
        "recloop_event_log_lag",  # apply lag
        "recloop_http_request_duration_seconds_bucket",  # latency per route
        "recloop_breaker_open",  # breakers
        "recloop_worker_partitions",  # workers
        "recloop_experiment_exposures",  # experiments
        "recloop_model_canary_fraction",  # canary
    ):
        assert metric in used, metric


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_links_its_runbook() -> None:
    anchors = {
        slug(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    rules = alerts()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: its own runbook section"
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {page}"
    # What the issue asks the rules to cover.
    named = {r["alert"] for r in rules}
    assert {
        "RecloopLagGrowing",
        "RecloopDeadLetters",
        "RecloopBreakerOpen",
        "RecloopCanaryRolledBack",
        "RecloopSrmDetected",
        "RecloopErrorRate",
        "RecloopFeedbackSlow",
        "RecloopWeightsSlow",
        "RecloopStrategySlow",
        "RecloopAssignmentSlow",
    } <= named


async def server_metrics(tmp_path: Path) -> set[str]:
    running, close = await start_app(make_settings(tmp_path, "memory"))
    try:
        client = running.client
        experiment = {
            "experiment_id": "exp",
            "name": "blend",
            "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
            "metrics": [{"name": "clicks", "type": "binomial", "event": "click"}],
        }
        assert (await client.post("/experiments", json=experiment)).status_code == 201
        assert (await client.post("/experiments/exp/start")).status_code == 200
        for i in range(4):
            assert (await client.get(f"/experiments/exp/assignment/u{i}")).status_code == 200
        event = {"user_id": "u1", "item_id": "i", "type": "like"}
        assert (await client.post("/feedback", json=event)).status_code == 202
        r = await client.get("http://recloop/metrics")
        assert r.status_code == 200
        return exposed(r.text)
    finally:
        await close()


async def test_every_metric_used_is_served(
    tmp_path: Path,
    worker_settings: Settings,  # noqa: F811
) -> None:
    used: dict[str, set[str]] = {}
    for rule in alerts():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for title, expr in queries():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"panel {title!r}")

    served = await server_metrics(tmp_path)
    async with serving(worker_settings) as (worker, container, metrics):
        await container.store.put_items([make_item("i1", [1.0] * 8, None, 8, 0.0)])

        async def owns_partitions() -> bool:
            return bool(worker.progress())

        await eventually(owns_partitions, within=60)
        event = Event(event_id="e1", user_id="u1", item_id="i1", type="like", timestamp=1.0)
        async with KafkaEventLog(kafka_config(worker_settings)) as log:
            await log.append([event])

        async def applied() -> bool:
            return worker.applied == 1

        await eventually(applied, within=60)
        r = await get(metrics, "/metrics")
        assert r.status_code == 200, r.text
        from_worker = exposed(r.text)
    assert "recloop_worker_partitions" in from_worker  # the worker's own, not the server's
    missing = {
        name: sorted(where) for name, where in used.items() if name not in served | from_worker
    }
    assert not missing, f"not served by a server nor a worker: {missing}"
