"""A real ``recloop serve`` for the client's tests: SQLite in a temporary directory,
a free port, started as a subprocess (as ``tests/e2e`` and ``benchmarks/servers.py`` do).

This directory is not a package (the repository's ``tests`` is one): its modules have
names of their own (``client_testing``, ``test_client_*``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from recloop_client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``recloop serve`` process; restartable on the same port and data."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("RECLOOP_")}
        self.env = {"RECLOOP_VECTORS__DIM": "8", **base, **(env or {})}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> Client:
        return Client(self.root, **kwargs)  # type: ignore[arg-type]

    def start(self, timeout: float = 60.0) -> None:
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
                r = httpx.get(f"{self.root}/api/v1/learning/health/live", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server not live in {timeout}s:\n{self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the process with ``sig`` (SIGKILL: no shutdown code runs) and wait."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


ADMIN_KEY = "client-tests-admin-0123456789abcdef0123456789abcdef"
READ_KEY = "client-tests-read-0123456789abcdef0123456789abcdef"
SERVER_ENV = {
    "RECLOOP_AUTH__KEYS": json.dumps(
        [
            {"name": "tests-admin", "sha256": _sha256(ADMIN_KEY), "roles": ["admin"]},
            {"name": "tests-read", "sha256": _sha256(READ_KEY), "roles": ["read"]},
        ]
    ),
    # Tight for explicit events (the 429 test), 20 a second per user for implicit ones
    # (a batch's rate-limited events are retried by the buffers).
    "RECLOOP_RATE_LIMITS__EXPLICIT": "3/minute",
    "RECLOOP_RATE_LIMITS__IMPLICIT": "20/second",
    # The guard judges users (reliability has something to show) but holds or blocks none
    # by score: the buffer tests count every event. Its hard rule (over 25 events in one
    # second of a user's timestamps blocks the user) stays: tests spread events over users.
    "RECLOOP_SPAM__SUSPECT_THRESHOLD": "0",
    "RECLOOP_SPAM__BLOCK_THRESHOLD": "0",
    "RECLOOP_SPAM__JUDGE_EVERY_EVENTS": "5",
}


def logged_event_ids(client: Client, users: list[str]) -> list[str]:
    """Every event id the server logged for ``users`` (its export), duplicates kept."""
    ids: list[str] = []
    for user in users:
        ids += [str(e["event_id"]) for e in client.export_user(user).events]
    return ids
