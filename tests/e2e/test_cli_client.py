"""The CLI's questions to a running server (``recloop weights``, ``algorithms``,
``experiments``, ``models``, ``users show``, ``suspects``), against a real embedded
``recloop serve``, through ``recloop-client``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from recloop_client import Client, Metric, PerformanceRecord, Variant
from typer.testing import CliRunner

from recloop.cli import app as cli
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else result.stdout


def test_cli_answers_the_everyday_questions(server_factory: type[Server], tmp_path: Path) -> None:
    server = server_factory(tmp_path, {"RECLOOP_VECTORS__DIM": "8"})
    server.start(timeout=120)  # imports are slow on a loaded machine
    root = f"http://127.0.0.1:{server.port}"
    with Client(root) as client:
        client.create_experiment(
            "xp-cli",
            "CLI test",
            [Variant("control", 0.5), Variant("treatment", 0.5, {"epsilon": 0.2})],
            [Metric("likes", "binomial", event="like")],
        )
        client.start_experiment("xp-cli")
        client.put_item("song-1", attributes={"genre": "jazz"})
        for i in range(3):
            client.feedback("cli-u1", "song-1", "like", event_id=f"cli-e{i}")
        client.report_performance(
            PerformanceRecord("popularity", 500, 50, segment="new"), report_id="r-1"
        )
        deadline = time.monotonic() + 30
        while client.preferences("cli-u1").interactions < 3:  # applied after the 202
            assert time.monotonic() < deadline
            time.sleep(0.05)

    weights = _run("weights", "--url", root, "--json")
    assert set(weights) >= {"new", "regular", "power", "inactive"}
    assert sum(weights["new"].values()) == pytest.approx(1.0, abs=1e-6)
    table = _run("weights", "--segment", "new", "--url", root)
    assert "popularity" in table and "regular" not in table
    assert "popularity" in _run("weights", env={"RECLOOP_URL": root})  # the URL from env

    algorithms = _run("algorithms", "--url", root, "--json")
    reported = [
        a for a in algorithms["algorithms"]
        if (a["segment"], a["algorithm"]) == ("new", "popularity")
    ]  # fmt: skip
    assert [(a["impressions"], a["clicks"]) for a in reported] == [(500, 50)]
    # whole counts: their effective sample size is their impressions
    assert [a["effective_impressions"] for a in reported] == [500]
    table = _run("algorithms", "--url", root)
    assert "posterior" in table and "effective" in table

    listed = _run("experiments", "list", "--url", root, "--json")
    assert [(e["experiment_id"], e["status"]) for e in listed] == [("xp-cli", "running")]
    shown = _run("experiments", "show", "xp-cli", "--url", root)
    assert "CLI test" in shown and "treatment" in shown
    results = _run("experiments", "results", "xp-cli", "--url", root, "--json")
    assert [m["name"] for m in results["metrics"]] == ["likes"]
    assert "sample ratio" in _run("experiments", "results", "xp-cli", "--url", root)

    assert _run("models", "list", "--url", root, "--json") == []
    missing = CliRunner().invoke(cli, ["models", "show", "m-none", "--url", root])
    assert missing.exit_code == 1
    assert "m-none" in missing.output

    user = _run("users", "show", "cli-u1", "--url", root, "--json")
    assert user["strategy"]["segment"] == "new"
    assert user["preferences"]["interactions"] == 3
    assert user["reliability"]["status"] == "trusted"
    assert "interactions" in _run("users", "show", "cli-u1", "--url", root)
    nobody = _run("users", "show", "cli-nobody", "--url", root, "--json")
    assert nobody["preferences"] is None
    # users show looks (?expose=false): nobody asked for a strategy, so nobody is exposed;
    # the product's own strategy call is what exposes
    exposed = _run("experiments", "results", "xp-cli", "--url", root, "--json")["srm"]
    assert sum(exposed["observed"].values()) == 0
    with Client(root) as client:
        client.strategy("cli-u1")
    exposed = _run("experiments", "results", "xp-cli", "--url", root, "--json")["srm"]
    assert sum(exposed["observed"].values()) == 1

    assert isinstance(_run("suspects", "--url", root, "--json"), list)


def test_cli_says_when_no_server_answers() -> None:
    result = CliRunner().invoke(cli, ["algorithms", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "cannot reach the server at http://127.0.0.1:9" in result.output
