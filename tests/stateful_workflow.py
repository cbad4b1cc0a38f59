"""Stateful schemathesis: sequences of calls chained along the document's OpenAPI links
(recloop.api.links, and the links schemathesis infers), so experiments are created,
started, read, assigned and stopped, and models trained, listed, read, deployed and
promoted (rolled back when drawn), with ids taken from earlier answers. Every response
is checked against the document (no 5xx, status, content type, body schema), as in
test_api_schema.

The memory backend, with a few validated model candidates in its registry, made
deployable again and with no experiment at each scenario's start (Hypothesis replays
scenarios, and one that found a different registry or list would draw differently); a
created experiment's variant weights are made to sum to 1 under unique keys and its
metric names unique (rules the document does not state; each metric's fields are the
document's own discriminated union; requests generated to be refused are left alone),
and its id made new, so creations succeed and the later steps act on real experiments.
A state refusal is a 409 the document states, so no operation is exempt from the
checks for its state. The last assertion checks that every experiment and model
operation did answer 2xx at least once (with the settings below, 19 of the document's
41 operations answer 2xx, and each of :data:`STATEFUL`).

It runs in a process of its own (``python -m tests.stateful_workflow``, which
tests/integration/test_api_stateful.py starts): alone its runs are the same every time,
while in a process that has imported the other integration test modules Hypothesis
found its replays drawing differently and refused the run as flaky (the cause was not
found: see the closing note of session 6).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from recloop.api.app import create_app
from recloop.container import build_container
from recloop.core.auth import new_key
from recloop.core.features import FEATURE_NAMES
from recloop.learning.learner import Artifact, LightGbmLearner
from recloop.ports import ModelRecord
from tests.conftest import make_settings
from tests.integration.test_api_schema import DOMAIN_RULES

KEY, KEY_SHA = new_key()
# A request the resource's state refuses (starting a running experiment, stopping a
# draft, promoting with no green model) is a 409, which the document states: only the
# domain rules a JSON schema cannot state are exempt from "valid data is accepted".
CONFIG = SchemathesisConfig.from_dict(
    {
        "auth": {"openapi": {"HTTPBearer": {"bearer": KEY}}},
        "operations": [
            {"include-path-regex": path, "checks": {"positive_data_acceptance": {"enabled": False}}}
            for path in DOMAIN_RULES
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
_serial = itertools.count()


def reset_models() -> None:
    """Every candidate deployable again, no slots: each scenario starts from the same
    registry, so Hypothesis replays it the same way (the memory store's registry is a
    dict: no event loop is involved)."""
    for n in range(CANDIDATES):
        asyncio.run(container.store.set_model_status(f"m{n}", "candidate", "reset"))
    asyncio.run(container.store.put_deployment({}, None))


def reset_experiments() -> None:
    """No experiment, as at each scenario's start: ``GET /experiments`` feeds links too,
    so a list grown by earlier scenarios would make a replay draw differently. (No API
    deletes an experiment: the memory store's and the service's maps are emptied.)"""
    global _serial
    _serial = itertools.count()
    service = container.experiments
    for held in (service._experiments, service._exposures, service._values, service._stats,
                 service._running_by_user, service._recheck):  # fmt: skip
        held.clear()
    service._schedule()
    store = container.store
    for kept in (store._experiments, store._exposures, store._user_metrics,
                 store._experiment_stats):  # fmt: skip
        kept.clear()


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        reset_models()
        reset_experiments()

    def before_call(self, case: schemathesis.Case) -> None:
        meta = case.meta
        if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
            return  # a request meant to be refused stays as generated
        creates = case.method == "POST" and case.path.endswith("/experiments")
        changes = case.method == "PATCH" and case.path.endswith("/experiments/{experiment_id}")
        if (
            creates
            and isinstance(case.body, dict)
            and isinstance(case.body.get("experiment_id"), str)
        ):
            # a new id each time: a scenario replayed by Hypothesis creates it again
            case.body["experiment_id"] = f"{case.body['experiment_id'][:100]}-{next(_serial)}"
        if (creates or changes) and isinstance(case.body, dict):
            _usable(case.body)
        if case.method == "POST" and case.path.endswith("/models/promote"):
            # a scenario's few events never make the canary decide: promoting needs force
            body = case.body if isinstance(case.body, dict) else {}
            case.body = {**body, "force": True}

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        super().after_call(response, case)
        reached.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
        if response.request.headers.get("Authorization") == f"Bearer {KEY}":
            assert response.status_code != 401, response.text


def _usable(body: dict[str, Any]) -> None:
    """Make a generated definition pass the rules its schema does not state: variant
    weights summing to 1 under unique keys, unique metric names. (Each metric's fields
    are the document's: a discriminated union over its type.)"""
    variants = body.get("variants")
    if isinstance(variants, list) and all(isinstance(v, dict) for v in variants) and variants:
        for n, variant in enumerate(variants):
            variant.update(key=f"v{n}", weight=1.0 / len(variants))
            variant.pop("config", None)
    n = 0
    for field in ("metrics", "guardrails"):
        metrics = body.get(field)
        if not isinstance(metrics, list):
            continue
        for metric in metrics:
            if not isinstance(metric, dict):
                continue
            metric["name"] = f"m{n}"
            n += 1


def main() -> None:
    seed_models()
    try:
        call_sequences_conform_to_the_schema()
    finally:
        asgi.shutdown_lifespans()


def call_sequences_conform_to_the_schema() -> None:
    Workflow.run(
        settings=settings(
            max_examples=150,
            stateful_step_count=20,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    ok = {op for op, codes in reached.items() if any(200 <= c < 300 for c in codes)}
    operations = [f"{m.upper()} {p}" for p, ops in app.openapi()["paths"].items() for m in ops]
    print(f"operations answered 2xx: {len(ok & set(operations))} of {len(operations)}")
    for op in sorted(reached):
        print(f"  {op}: {sorted(reached[op])}")
    # Every experiment and model operation is reached along the links with a real
    # experiment, model or deployment, and acts on it (2xx): a refusal for the state
    # (409) or the body (422) is checked against the document, but is not "reached".
    missing = [op for op in STATEFUL if f"{op.split(' ')[0]} {PREFIX}{op.split(' ')[1]}" not in ok]
    assert not missing, f"never answered 2xx: {missing}"


PREFIX = "/api/v1/learning"
STATEFUL = (
    "POST /experiments",
    "GET /experiments/{experiment_id}",
    "PATCH /experiments/{experiment_id}",
    "POST /experiments/{experiment_id}/start",
    "GET /experiments/{experiment_id}/assignment/{user_id}",
    "GET /experiments/{experiment_id}/results",
    "POST /experiments/{experiment_id}/stop",
    "GET /models",
    "GET /models/{version}",
    "POST /models/{version}/deploy",
    "GET /models/deployment",
    "POST /models/promote",
    "POST /models/rollback",
    "POST /models/retrain",
    "GET /models/jobs/{job_id}",
)


if __name__ == "__main__":
    main()
