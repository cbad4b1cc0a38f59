"""Fixtures: one real ``recloop serve`` shared by the client's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_testing import ADMIN_KEY, SERVER_ENV, Server
from recloop_client import Client


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the whole run (a start costs seconds); tests use distinct ids."""
    s = Server(tmp_path_factory.mktemp("recloop"), SERVER_ENV)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def server(shared_server: Server) -> Server:
    """The shared server, running (a test may stop and restart it; a failed one may not)."""
    if shared_server.proc is None or shared_server.proc.poll() is not None:
        shared_server.start()
    return shared_server


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with server.client(api_key=ADMIN_KEY) as c:
        yield c
