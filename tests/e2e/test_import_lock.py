"""An embedded ``recloop import`` refuses while ``recloop serve`` writes the same database
(and the server refuses to start while an import does): the writer lock of
``adapters.sql.writer_lock``."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from recloop.adapters.sql.writer_lock import WriterLock
from recloop.cli import app as cli

pytestmark = pytest.mark.e2e


def _serve(tmp_path: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECLOOP_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "recloop", "serve", "--config", str(config), "--port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_import_refuses_beside_a_running_server_and_works_once_it_stopped(
    tmp_path: Path,
) -> None:
    database = tmp_path / "recloop.db"
    config = tmp_path / "recloop.yaml"
    config.write_text(
        yaml.safe_dump(
            {"storage": {"url": f"sqlite+aiosqlite:///{database}"}, "vectors": {"dim": 8}}
        )
    )
    history = tmp_path / "h.jsonl"
    row = {"user_id": "u", "item_id": "i", "type": "like", "timestamp": time.time() - 3600}
    history.write_text(json.dumps(row) + "\n")
    log = tmp_path / "serve.log"
    proc = _serve(tmp_path, config, log)
    try:
        deadline = time.monotonic() + 60
        while re.search(r"listening at http://", log.read_text()) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start (status {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.05)

        refused = CliRunner().invoke(cli, ["import", str(history), "--config", str(config)])
        assert refused.exit_code == 2, refused.output
        text = " ".join(refused.output.split())
        assert re.search(rf"recloop serve \(pid {proc.pid}, since .*\) is writing", text), text
        assert "Stop the server" in text and "event_log.kind: kafka" in text
        assert "Nothing was imported" in text
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert not (tmp_path / "h.jsonl.rejected.jsonl").exists()
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()

    done = CliRunner().invoke(cli, ["import", str(history), "--config", str(config), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["accepted"] == 1


def test_the_server_refuses_to_start_while_an_import_writes_its_database(tmp_path: Path) -> None:
    database = tmp_path / "recloop.db"
    config = tmp_path / "recloop.yaml"
    config.write_text(
        yaml.safe_dump(
            {"storage": {"url": f"sqlite+aiosqlite:///{database}"}, "vectors": {"dim": 8}}
        )
    )
    importing = WriterLock(database, "recloop import")
    importing.acquire()
    log = tmp_path / "serve.log"
    try:
        proc = _serve(tmp_path, config, log)
        try:
            assert proc.wait(60) == 3, log.read_text()
        finally:
            _stop(proc)
    finally:
        importing.release()
    text = log.read_text()
    assert f"error: recloop import (pid {os.getpid()}" in text, text
    assert "listening at" not in text
