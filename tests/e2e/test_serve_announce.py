"""``recloop serve`` says where it listens once it does: the URL and the API docs' URL,
with the port really bound (``--port 0`` picks a free one)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_serve_prints_its_url_and_docs_url_when_ready(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECLOOP_")}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recloop", "serve", "--port", "0"],
            cwd=tmp_path,
            env={**env, "RECLOOP_VECTORS__DIM": "8"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        pattern = re.compile(r"listening at (http://127\.0\.0\.1:(\d+)) \(API docs: (\S+)\)")
        deadline = time.monotonic() + 60
        while (found := pattern.search(log.read_text())) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no announcement (status {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.05)
        url, port, docs = found.groups()
        assert int(port) > 0
        assert docs == f"{url}/docs"
        assert httpx.get(f"{url}/api/v1/learning/health", timeout=5).status_code == 200
        assert httpx.get(docs, timeout=5).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
