"""Continuous learning's storage over SQL: the model registry with its artifacts, the
deployment's slots and transitions, the training jobs (the ``ModelStore`` role of the
state store)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import select

from recloop.adapters.sql.base import SqlRole, dialect_insert
from recloop.adapters.sql.tables import deployment, model_transitions, models, training_jobs
from recloop.ports import ModelRecord, TrainingJob


class SqlModelStore(SqlRole):
    async def put_model(self, record: ModelRecord, artifact: bytes) -> None:
        row = _model_row(record)
        row["artifact"] = artifact
        async with self._db.write() as conn:
            await conn.execute(models.insert(), [row])

    async def set_model_status(self, version: str, status: str, reason: str) -> None:
        stmt = (
            models.update().where(models.c.version == version).values(status=status, reason=reason)
        )
        async with self._db.write() as conn:
            await conn.execute(stmt)

    async def get_models(self) -> list[ModelRecord]:
        columns = [c for c in models.c if c.name != "artifact"]
        query = select(*columns).order_by(models.c.created_at.desc(), models.c.version.desc())
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_model(row) for row in rows]

    async def get_model(self, version: str) -> tuple[ModelRecord, bytes] | None:
        query = select(models).where(models.c.version == version)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else (_model(row), bytes(row["artifact"]))

    async def put_deployment(
        self, state: Mapping[str, Any], transition: Mapping[str, Any] | None
    ) -> None:
        upsert = dialect_insert(self._db, deployment)
        stmt = upsert.on_conflict_do_update(
            index_elements=["name"], set_={"state": upsert.excluded.state}
        )
        async with self._db.write() as conn:
            await conn.execute(stmt, [{"name": "slots", "state": orjson.dumps(dict(state))}])
            if transition is not None:
                row = {"at": transition["at"], "payload": orjson.dumps(dict(transition))}
                await conn.execute(model_transitions.insert(), [row])

    async def get_deployment(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        async with self._db.read() as conn:
            state = (
                await conn.execute(select(deployment.c.state).where(deployment.c.name == "slots"))
            ).scalar()
            history = (
                await conn.execute(
                    select(model_transitions.c.payload).order_by(model_transitions.c.id)
                )
            ).scalars()
            transitions = [orjson.loads(p) for p in history]
        return (None if state is None else orjson.loads(state)), transitions

    async def put_job(self, job: TrainingJob) -> None:
        upsert = dialect_insert(self._db, training_jobs)
        row = {name: getattr(job, name) for name in TrainingJob.__slots__}
        stmt = upsert.on_conflict_do_update(
            index_elements=["job_id"],
            set_={k: upsert.excluded[k] for k in row if k != "job_id"},
        )
        async with self._db.write() as conn:
            await conn.execute(stmt, [row])

    async def get_job(self, job_id: str) -> TrainingJob | None:
        query = select(training_jobs).where(training_jobs.c.job_id == job_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else TrainingJob(**dict(row))


def _model_row(record: ModelRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in ModelRecord.__slots__}
    row["metrics"] = orjson.dumps(record.metrics)
    row["feature_names"] = orjson.dumps(record.feature_names)
    return row


def _model(row: Mapping[str, Any]) -> ModelRecord:
    fields = {name: row[name] for name in ModelRecord.__slots__}
    fields["metrics"] = orjson.loads(row["metrics"])
    fields["feature_names"] = orjson.loads(row["feature_names"])
    return ModelRecord(**fields)
