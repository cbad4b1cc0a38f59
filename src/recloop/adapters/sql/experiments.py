"""Experiments over SQL: definitions, exposures, users' metric values, per-variant
statistics, the workers' waiting reports (the ``ExperimentStore`` role of the state store).

Exposures, values and statistics are written by the state commit (``users.py``), in its
transaction, with the statements built here (:func:`add_exposures_statement`,
:func:`set_user_metrics_statement`, :func:`add_experiment_stats_statement`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import orjson
from sqlalchemy import select

from recloop.adapters.sql.base import SQLITE_IN_CHUNK, SqlRole, dialect_insert, upsert
from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.tables import (
    experiment_exposures,
    experiment_stats,
    experiment_user_metrics,
    experiment_waiting,
    experiments,
)
from recloop.core.experiments import Experiment, UserMetric, from_dict, to_dict
from recloop.core.stats import PairStats
from recloop.ports import Exposure, WaitingReport


class SqlExperimentStore(SqlRole):
    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        super().__init__(db, pg_lane)
        waiting = dialect_insert(db, experiment_waiting)
        self._put_waiting = waiting.on_conflict_do_update(
            index_elements=["partition"],
            set_={n: waiting.excluded[n] for n in ("events", "unfetched", "reported_at")},
        )
        self._put_experiment = upsert(db, experiments, "experiment_id")

    async def get_experiments(self) -> list[Experiment]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(experiments.c.definition))).all()
        return [from_dict(orjson.loads(definition)) for (definition,) in rows]

    async def put_experiment(self, experiment: Experiment) -> None:
        row = {
            "experiment_id": experiment.experiment_id,
            "status": experiment.status,
            "definition": orjson.dumps(to_dict(experiment)),
            "created_at": experiment.created_at,
            "started_at": experiment.started_at,
            "stopped_at": experiment.stopped_at,
        }
        async with self._db.write() as conn:
            await conn.execute(self._put_experiment, row)

    async def get_exposures(self, experiment_id: str) -> list[Exposure]:
        t = experiment_exposures
        query = select(t.c.user_id, t.c.variant, t.c.exposed_at, t.c.overridden_by).where(
            t.c.experiment_id == experiment_id
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [Exposure(experiment_id, u, v, at, by) for u, v, at, by in rows]

    async def get_user_metrics(
        self, experiment_id: str, user_ids: Collection[str] | None = None
    ) -> list[tuple[str, str, UserMetric]]:
        t = experiment_user_metrics
        query = select(t.c.user_id, t.c.metric, t.c.y, t.c.x).where(
            t.c.experiment_id == experiment_id
        )
        users = None if user_ids is None else sorted(user_ids)
        rows: list[Any] = []
        async with self._db.read() as conn:
            if users is None:
                rows = list((await conn.execute(query)).all())
            for start in range(0, len(users or ()), SQLITE_IN_CHUNK):
                chunk = (users or [])[start : start + SQLITE_IN_CHUNK]
                rows += (await conn.execute(query.where(t.c.user_id.in_(chunk)))).all()
        return [(u, m, UserMetric(y, x)) for u, m, y, x in rows]

    async def get_experiment_stats(self, experiment_id: str) -> list[tuple[str, str, PairStats]]:
        t = experiment_stats
        query = select(t).where(t.c.experiment_id == experiment_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            (row["variant"], row["metric"], PairStats(**{n: row[n] for n in PAIR_COLUMNS}))
            for row in rows
        ]

    async def put_waiting(self, reports: Sequence[WaitingReport]) -> None:
        rows = [
            {
                "partition": r.partition,
                "events": orjson.dumps(r.events),
                "unfetched": r.unfetched,
                "reported_at": r.reported_at,
            }
            for r in reports
        ]
        if rows:
            async with self._db.write() as conn:
                await conn.execute(self._put_waiting, rows)

    async def get_waiting(self) -> list[WaitingReport]:
        t = experiment_waiting
        query = select(t.c.partition, t.c.events, t.c.unfetched, t.c.reported_at)
        async with self._db.read() as conn:
            rows = (await conn.execute(query.order_by(t.c.partition))).all()
        return [WaitingReport(p, orjson.loads(e), u, at) for p, e, u, at in rows]


PAIR_COLUMNS = ("n", "sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy")
"""The ``experiment_stats`` columns of a :class:`PairStats`."""


def add_exposures_statement(db: SqlDatabase) -> Any:
    """The insert of :class:`Exposure` rows; a user's first exposure stays."""
    exposure = dialect_insert(db, experiment_exposures)
    return exposure.on_conflict_do_nothing(index_elements=["experiment_id", "user_id"])


def set_user_metrics_statement(db: SqlDatabase) -> Any:
    """The upsert replacing users' metric values (experiment, user, metric)."""
    values = dialect_insert(db, experiment_user_metrics)
    return values.on_conflict_do_update(
        index_elements=["experiment_id", "user_id", "metric"],
        set_={"y": values.excluded.y, "x": values.excluded.x},
    )


def add_experiment_stats_statement(db: SqlDatabase) -> Any:
    """The upsert adding :class:`PairStats` deltas (:func:`merged_stats`) to the stored
    ones of (experiment, variant, metric)."""
    xstats = dialect_insert(db, experiment_stats)
    return xstats.on_conflict_do_update(
        index_elements=["experiment_id", "variant", "metric"],
        set_={name: experiment_stats.c[name] + xstats.excluded[name] for name in PAIR_COLUMNS},
    )


def stats_rows(deltas: Sequence[tuple[str, str, str, PairStats]]) -> list[dict[str, Any]]:
    """``experiment_stats`` rows of ``deltas``, one per key (:func:`merged_stats`)."""
    return [
        {
            "experiment_id": e,
            "variant": v,
            "metric": m,
            **{name: getattr(s, name) for name in PAIR_COLUMNS},
        }
        for e, v, m, s in merged_stats(deltas)
    ]


def merged_stats(
    deltas: Sequence[tuple[str, str, str, PairStats]],
) -> list[tuple[str, str, str, PairStats]]:
    """One row per key: an upsert statement must not touch the same row twice."""
    merged: dict[tuple[str, str, str], PairStats] = {}
    for e, v, m, s in deltas:
        merged[(e, v, m)] = merged[(e, v, m)] + s if (e, v, m) in merged else s
    return [(e, v, m, s) for (e, v, m), s in merged.items()]
