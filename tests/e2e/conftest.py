"""Real ``recloop serve`` processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


class Server:
    """A ``recloop serve`` process on a free port, restartable on the same data."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/learning"

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recloop", "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server did not become healthy in {timeout}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def cleanup(self) -> None:
        """Kill the process if it still runs (a failed test's leftovers)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Worker:
    """A ``recloop worker`` process of the distributed deployment."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        self.workdir = workdir
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{name}.log"
        self._log_from = 0  # where this start's lines begin in the log

    def start(self) -> None:
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recloop", "worker"],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_assigned(self, timeout: float = 60.0) -> None:
        """Until this start of the worker has had its first assignment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log.read_text()}")
            # This start's own lines: an earlier start's rebalances logged assignments too.
            with self.log.open("rb") as log:
                log.seek(self._log_from)
                if b"assigned partitions" in log.read():
                    return
            time.sleep(0.1)
        pytest.fail(f"worker got no partitions in {timeout}s:\n{self.log.read_text()}")

    def partitions(self) -> frozenset[int]:
        """The partitions of this worker's latest assignment (empty before the first)."""
        found = re.findall(r"assigned partitions \[([\d, ]*)\]", self.log.read_text())
        if not found:
            return frozenset()
        return frozenset(int(p) for p in found[-1].split(",") if p.strip())

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_balanced(workers: list[Worker], partitions: int, timeout: float = 60.0) -> None:
    """Until every worker owns some partitions and together they own each exactly once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = [w.partitions() for w in workers]
        if all(owned) and sorted(p for o in owned for p in o) == list(range(partitions)):
            return
        time.sleep(0.2)
    pytest.fail(f"workers not balanced in {timeout}s: {[w.partitions() for w in workers]}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[Server]]:
    started: list[Server] = []

    class Tracked(Server):
        def start(self, timeout: float = 30.0) -> None:
            started.append(self)
            super().start(timeout)

    yield Tracked
    for s in started:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)
