"""API keys and roles: 401 without a valid key, 403 without the role, health stays open."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import yaml
from typer.testing import CliRunner

from recloop.cli import app as cli
from recloop.config import Settings
from recloop.core.auth import new_key
from tests.conftest import Running, start_app

INGEST, INGEST_SHA = new_key()
READ, READ_SHA = new_key()
ADMIN, ADMIN_SHA = new_key()


@pytest.fixture
async def app(settings_factory: Callable[..., Settings]) -> AsyncIterator[Running]:
    keys = [
        {"name": "orchestrator", "sha256": INGEST_SHA, "roles": ["ingest"]},
        {"name": "dashboard", "sha256": READ_SHA, "roles": ["read"]},
        {"name": "ops", "sha256": ADMIN_SHA, "roles": ["admin"]},
    ]
    running, close = await start_app(settings_factory(auth={"keys": keys}))
    yield running
    await close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


EVENT = {"user_id": "u", "item_id": "i", "type": "like"}


async def test_missing_or_wrong_key_is_401(app: Running) -> None:
    r = await app.client.post("/feedback", json=EVENT)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = await app.client.post("/feedback", json=EVENT, headers=bearer("rlk_not-a-key"))
    assert r.status_code == 401
    r = await app.client.get("/users/u/weights", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    assert await app.container.event_log.last_offset() == 0


async def test_roles_are_enforced(app: Running) -> None:
    assert (
        await app.client.post("/feedback", json=EVENT, headers=bearer(INGEST))
    ).status_code == 202
    r = await app.client.post("/feedback", json=EVENT, headers=bearer(READ))
    assert r.status_code == 403
    assert "ingest" in r.json()["detail"]
    assert r.json()["reason"] == "role"  # not "blocked": the key, not the user
    assert (await app.client.get("/users/u/weights", headers=bearer(READ))).status_code == 200
    assert (await app.client.get("/users/u/weights", headers=bearer(INGEST))).status_code == 403
    disable = "/algorithms/popularity/disable"
    assert (await app.client.post(disable, headers=bearer(READ))).status_code == 403
    assert (await app.client.post(disable, headers=bearer(ADMIN))).status_code == 200
    # admin implies the other roles
    assert (
        await app.client.post("/feedback", json=EVENT, headers=bearer(ADMIN))
    ).status_code == 202


async def test_health_needs_no_key(app: Running) -> None:
    assert (await app.client.get("/health")).status_code == 200


async def test_openapi_declares_the_bearer_scheme(app: Running) -> None:
    from recloop.api.app import create_app

    schema = create_app(app.container.settings, container=app.container).openapi()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_keys_new_prints_a_working_config_line() -> None:
    result = CliRunner().invoke(cli, ["keys", "new", "--name", "orch", "--roles", "ingest,read"])
    assert result.exit_code == 0, result.output
    key = result.output.split("key (shown once): ")[1].split()[0]
    line = result.output.split("config line for auth.keys:\n")[1]
    entry = yaml.safe_load(line)[0]
    assert entry["name"] == "orch" and entry["roles"] == ["ingest", "read"]
    from recloop.core.auth import KeyRing

    ring = KeyRing([(entry["name"], entry["sha256"], entry["roles"])])
    principal = ring.verify(key)
    assert principal is not None and principal.can("read") and not principal.can("admin")


def test_keys_new_refuses_unknown_roles() -> None:
    result = CliRunner().invoke(cli, ["keys", "new", "--name", "x", "--roles", "root"])
    assert result.exit_code == 2


def test_serve_refuses_a_public_address_without_keys() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "without authentication" in result.output
