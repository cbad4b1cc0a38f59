"""Stateful schemathesis: sequences of calls chained along the document's OpenAPI links
(recloop.api.links, and the links schemathesis infers), so experiments are created,
started, read, assigned and stopped, and models listed, deployed, promoted and rolled
back, with ids taken from earlier answers. Every response is checked against the
document (no 5xx, status, content type, body schema), as in test_api_schema.

The memory backend, with a few validated model candidates in its registry; a created
experiment's variant weights are made to sum to 1 (a rule a JSON schema cannot state),
so creations succeed and the later steps act on real experiments.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from recloop.api.app import create_app
from recloop.container import build_container
from recloop.core.auth import new_key
from recloop.core.features import FEATURE_NAMES
from recloop.learning.learner import Artifact, LightGbmLearner
from recloop.ports import ModelRecord
from tests.conftest import make_settings
from tests.integration.test_api_schema import DOMAIN_RULES

pytestmark = pytest.mark.timeout(300)

KEY, KEY_SHA = new_key()
# Schema-valid requests refused (422) by the resource's state: starting a running or
# stopped experiment, stopping a draft.
STATE_RULES = {"^/api/v1/learning/experiments/[^/]+/(start|stop)$": "state-dependent"}
CONFIG = SchemathesisConfig.from_dict(
    {
        "auth": {"openapi": {"HTTPBearer": {"bearer": KEY}}},
        "operations": [
            {"include-path-regex": path, "checks": {"positive_data_acceptance": {"enabled": False}}}
            for path in {**DOMAIN_RULES, **STATE_RULES}
        ],
    }
)
CANDIDATES = 3

_keys = [{"name": "schemathesis", "sha256": KEY_SHA, "roles": ["admin", "ingest", "read"]}]
_settings = make_settings(Path(tempfile.gettempdir()), backend="memory", auth={"keys": _keys})
container = build_container(_settings)
app = create_app(_settings, container=container)
schema = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)
schema.app = app
schema.location = "/openapi.json"


def seed_models() -> None:
    """Validated candidates in the (in-memory) registry, for the model operations."""
    data = np.random.default_rng(0)
    X = data.normal(size=(200, len(FEATURE_NAMES)))
    y = (X[:, 0] + data.normal(0, 0.5, 200) > 0).astype(float)
    artifact = Artifact.of(LightGbmLearner().fit(X, y, FEATURE_NAMES))
    for n in range(CANDIDATES):
        record = ModelRecord(
            f"m{n}", float(n), "candidate", "test", artifact.kind, artifact.sha256, 0.0, 1.0,
            200, int(y.sum()), {}, list(artifact.feature_names),
        )  # fmt: skip
        asyncio.run(container.store.put_model(record, artifact.data))


reached: dict[str, set[int]] = {}


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    def before_call(self, case: schemathesis.Case) -> None:
        if case.method == "POST" and case.path.endswith("/experiments") and _is_variants(case):
            variants = case.body["variants"]
            for n, variant in enumerate(variants):
                variant["key"] = f"v{n}"
                variant["weight"] = 1.0 / len(variants)

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        super().after_call(response, case)
        reached.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
        if response.request.headers.get("Authorization") == f"Bearer {KEY}":
            assert response.status_code != 401, response.text


def _is_variants(case: schemathesis.Case) -> bool:
    body = case.body
    return (
        isinstance(body, dict)
        and isinstance(body.get("variants"), list)
        and bool(body["variants"])
        and all(isinstance(v, dict) for v in body["variants"])
    )


@pytest.fixture(scope="module", autouse=True)
def _app() -> Iterator[None]:
    seed_models()
    yield
    asgi.shutdown_lifespans()


def test_call_sequences_conform_to_the_schema() -> None:
    Workflow.run(
        settings=settings(
            max_examples=40,
            stateful_step_count=8,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    ok = {op for op, codes in reached.items() if any(200 <= c < 300 for c in codes)}
    prefix = "/api/v1/learning"
    for op in (
        "POST /experiments",
        "POST /experiments/{experiment_id}/start",
        "GET /experiments/{experiment_id}/results",
        "POST /experiments/{experiment_id}/stop",
        "GET /models",
        "POST /models/{version}/deploy",
    ):
        method, path = op.split(" ")
        assert f"{method} {prefix}{path}" in ok, f"{op} never answered 2xx: {sorted(reached)}"
