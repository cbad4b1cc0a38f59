"""The state store over SQL (SQLite or PostgreSQL); the event log is in ``log.py``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from functools import cache, lru_cache, partial
from typing import Any

import numpy as np
import orjson
from sqlalchemy import bindparam, case, delete, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from recloop.adapters.sql.database import SqlDatabase
from recloop.adapters.sql.pg import PgStatement
from recloop.adapters.sql.tables import (
    algorithm_stats,
    algorithm_status,
    commit_marks,
    consumer_offsets,
    dead_letters,
    deployment,
    experiment_exposures,
    experiment_stats,
    experiment_user_metrics,
    experiment_waiting,
    experiments,
    feature_sets,
    impressions,
    items,
    model_transitions,
    models,
    performance_reports,
    state_journal,
    training_jobs,
    user_reliability,
    user_state,
)
from recloop.core.availability import AlgorithmStatus
from recloop.core.bandit import COUNT_LIMIT, PerformanceCounts
from recloop.core.events import Event
from recloop.core.experiments import Experiment, UserMetric, from_dict, to_dict
from recloop.core.ids import uuid7
from recloop.core.items import Item
from recloop.core.preferences import UserState
from recloop.core.slates import Slate, feature_set_id, shown_item_ids
from recloop.core.slates import decode as decode_slate
from recloop.core.slates import encode as encode_slate
from recloop.core.state import UserRows
from recloop.core.stats import PairStats
from recloop.ports import (
    AlgorithmCount,
    Exposure,
    Impression,
    ImpressionHead,
    ModelRecord,
    ReliabilityRecord,
    StateChanges,
    TrainingJob,
    WaitingReport,
)

CONSUMER = "processor"
PARTITION_CONSUMER = "partition:"
"""Prefix of the ``consumer_offsets`` rows holding event-topic partitions' offsets."""


def _insert(db: SqlDatabase, table: Any) -> Any:
    dialect = postgresql if db.dialect == "postgresql" else sqlite
    return dialect.insert(table)


def _vector(blob: bytes) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.frombuffer(blob, dtype="<f8").copy()


_SQLITE_IN_CHUNK = 10_000  # below SQLite's limit of 32,766 bound parameters
_USERS_PG = "SELECT {} FROM user_state WHERE user_id = ANY($1::VARCHAR[])".format(
    ", ".join(c.name for c in user_state.c)
)
POINT_READ_MAX = 4
"""SQLite: users read by primary key at once on the caller's thread (``run_point_read``),
at most; more go to the reader thread."""
_MARKS_KEPT_SECONDS = 7 * 86_400.0
"""A writer's commit mark outlives its process by this much (then it is pruned)."""


class SqlStateStore:
    def __init__(self, db: SqlDatabase, pg_lane: bool | None = None) -> None:
        """``pg_lane``: on PostgreSQL, the hot statements (the state commit, users' reads)
        through :mod:`~recloop.adapters.sql.pg` (the default); False keeps SQLAlchemy's
        path for them, the oracle of the differential tests."""
        self._db = db
        self._pg_lane = db.pg_lane if pg_lane is None else pg_lane and db.pg_lane
        self._feature_sets: dict[str, tuple[str, ...]] = {}  # stored by this process
        # This process's name in commit_marks (see StateChanges.commit_id).
        self._writer = uuid7()
        self._marks_pruned = False
        # The state journal's users, by their latest record, and each record's users (as
        # this process read and wrote them: the embedded server is the journal's only
        # writer); None until first needed.
        self._journal_latest: dict[str, int] | None = None
        self._journal_users: dict[int, list[str]] = {}
        marks = _insert(db, commit_marks)
        self._mark_commit = marks.on_conflict_do_update(
            index_elements=["writer"],
            set_={name: marks.excluded[name] for name in ("commit_id", "committed_at")},
        )
        self._last_commit = select(commit_marks.c.commit_id).where(
            commit_marks.c.writer == bindparam("writer")
        )
        self._prune_marks = delete(commit_marks).where(
            commit_marks.c.committed_at < bindparam("before")
        )
        upsert = _insert(db, user_state)
        # A user's applied offsets never go back: a stale write (a worker that lost the
        # user's partition to another, then wrote late) leaves the newer state alone.
        self._save_user = upsert.on_conflict_do_update(
            index_elements=["user_id"],
            set_={c.name: upsert.excluded[c.name] for c in user_state.c if c.name != "user_id"},
            where=(upsert.excluded.explicit_offset >= user_state.c.explicit_offset)
            & (upsert.excluded.implicit_offset >= user_state.c.implicit_offset),
        )
        offsets = _insert(db, consumer_offsets)
        self._save_offset = offsets.on_conflict_do_update(
            index_elements=["consumer"], set_={"offset": offsets.excluded.offset}
        )
        # Partition offsets only move forward: a late write from a worker that has
        # lost the partition (a zombie) cannot take them back.
        ahead = offsets.excluded.offset > consumer_offsets.c.offset
        self._save_position = offsets.on_conflict_do_update(
            index_elements=["consumer"],
            set_={
                "offset": case((ahead, offsets.excluded.offset), else_=consumer_offsets.c.offset)
            },
        )
        self._add_counts = add_counts_statement(db)
        status = _insert(db, algorithm_status)
        self._put_status = status.on_conflict_do_update(
            index_elements=["segment", "algorithm"],
            set_={
                c.name: status.excluded[c.name]
                for c in algorithm_status.c
                if c.name not in ("segment", "algorithm")
            },
        )
        exposure = _insert(db, experiment_exposures)
        self._add_exposure = exposure.on_conflict_do_nothing(
            index_elements=["experiment_id", "user_id"]
        )
        values = _insert(db, experiment_user_metrics)
        self._set_user_metric = values.on_conflict_do_update(
            index_elements=["experiment_id", "user_id", "metric"],
            set_={"y": values.excluded.y, "x": values.excluded.x},
        )
        xstats = _insert(db, experiment_stats)
        self._add_experiment_stats = xstats.on_conflict_do_update(
            index_elements=["experiment_id", "variant", "metric"],
            set_={name: experiment_stats.c[name] + xstats.excluded[name] for name in _PAIR_COLUMNS},
        )
        waiting = _insert(db, experiment_waiting)
        self._put_waiting = waiting.on_conflict_do_update(
            index_elements=["partition"],
            set_={n: waiting.excluded[n] for n in ("events", "unfetched", "reported_at")},
        )
        definition = _insert(db, experiments)
        self._put_experiment = definition.on_conflict_do_update(
            index_elements=["experiment_id"],
            set_={
                c.name: definition.excluded[c.name]
                for c in experiments.c
                if c.name != "experiment_id"
            },
        )
        self._add_impression = impressions.insert()
        self._add_record = state_journal.insert()
        self._drop_records = delete(state_journal).where(
            state_journal.c.seq <= bindparam("through")
        )
        self._add_feature_sets = _insert(db, feature_sets).on_conflict_do_nothing()
        # The fast lane's SQL for every statement commit() and add_impressions() may run
        # (keyed by the statement objects, which live as long as this store); PostgreSQL's
        # lane runs commit()'s.
        committed = (
            self._last_commit,
            self._mark_commit,
            self._prune_marks,
            self._save_user,
            self._save_offset,
            self._save_position,
            self._add_counts,
            self._add_exposure,
            self._set_user_metric,
            self._add_experiment_stats,
            self._add_record,
            self._drop_records,
        )
        self._compiled = {
            id(stmt): _Raw(stmt)
            for stmt in (*committed, self._add_impression, self._add_feature_sets)
        }
        if self._pg_lane:  # PostgreSQL: the same statements, compiled once for asyncpg
            self._pg = {id(stmt): PgStatement(stmt) for stmt in committed}
            self._save_users_pg = self._pg[id(self._save_user)].unnest()
        reliability = _insert(db, user_reliability)
        self._put_reliability = reliability.on_conflict_do_update(
            index_elements=["user_id"],
            set_={
                c.name: reliability.excluded[c.name]
                for c in user_reliability.c
                if c.name != "user_id"
            },
        )
        item_upsert = _insert(db, items)
        self._save_item = item_upsert.on_conflict_do_update(
            index_elements=["item_id"],
            set_={c.name: item_upsert.excluded[c.name] for c in items.c if c.name != "item_id"},
        )

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """The users' newest committed rows: the user table's, or a newer one in the state
        journal (found by this process's index of the journal, read once)."""
        found = await self._stored_users(user_ids)
        index = await self._journal_index()
        wanted = {u: index[u] for u in user_ids if u in index}
        if wanted:
            query = select(state_journal.c.seq, state_journal.c.users).where(
                state_journal.c.seq.in_(sorted(set(wanted.values())))
            )
            async with self._db.read() as conn:
                records = [
                    (seq, UserRows.from_bytes(bytes(r))) for seq, r in await conn.execute(query)
                ]
            for seq, rows in records:
                for i, user_id in enumerate(rows.user_ids):
                    if wanted.get(user_id) == seq:  # an older record may hold an older row
                        found[user_id] = rows.state(i)
        return found

    async def _stored_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        if not user_ids:
            return {}
        if self._pg_lane:
            async with self._db.pg_read() as conn:
                found = await conn.fetch(_USERS_PG, list(user_ids))
            return {row["user_id"]: _user_from_row(row) for row in found}
        if self._db.fast_lane:
            select_in = partial(_select_in, user_state, "user_id", user_ids)
            if len(user_ids) <= POINT_READ_MAX:  # the read path's one user: no hand-off
                found = await self._db.run_point_read(select_in)
            else:
                found = await self._db.run_read(select_in)
            return {row["user_id"]: _user_from_row(row) for row in found}
        query = select(user_state).where(user_state.c.user_id.in_(list(user_ids)))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {row["user_id"]: _user_from_row(row) for row in rows}

    async def commit(self, changes: StateChanges) -> None:
        batches: list[tuple[Any, list[dict[str, Any]]]] = []
        users = _user_columns(changes.users) if len(changes.users) else None
        if users is not None and not self._db.fast_lane and not self._pg_lane:
            names = list(users)
            rows = [
                dict(zip(names, values, strict=True))
                for values in zip(*users.values(), strict=True)
            ]
            batches.append((self._save_user, rows))
        if changes.algorithm_counts:
            batches.append((self._add_counts, [_count_to_row(c) for c in changes.algorithm_counts]))
        if changes.exposures:
            rows = [{n: getattr(e, n) for n in Exposure.__slots__} for e in changes.exposures]
            batches.append((self._add_exposure, rows))
        if changes.user_metrics:
            rows = [
                {"experiment_id": e, "user_id": u, "metric": m, "y": v.y, "x": v.x}
                for e, u, m, v in changes.user_metrics
            ]
            batches.append((self._set_user_metric, rows))
        if changes.experiment_stats:
            rows = [
                {
                    "experiment_id": e,
                    "variant": v,
                    "metric": m,
                    **{name: getattr(s, name) for name in _PAIR_COLUMNS},
                }
                for e, v, m, s in _merged(changes.experiment_stats)
            ]
            batches.append((self._add_experiment_stats, rows))
        if changes.watermark is not None:
            batches.append(
                (self._save_offset, [{"consumer": CONSUMER, "offset": changes.watermark}])
            )
        if changes.journal is not None and len(changes.journal):
            record = {
                "seq": changes.journal_seq,
                "users": changes.journal.to_bytes(),
                "written_at": time.time(),
            }
            batches.append((self._add_record, [record]))
        if changes.journal_through:
            batches.append((self._drop_records, [{"through": changes.journal_through}]))
        if changes.positions:
            rows = [
                {"consumer": f"{PARTITION_CONSUMER}{p}", "offset": o}
                for p, o in sorted(changes.positions.items())
            ]
            batches.append((self._save_position, rows))
        if not batches and users is None:
            return
        mark = None
        if changes.commit_id is not None:
            now = time.time()
            mark = {"writer": self._writer, "commit_id": changes.commit_id, "committed_at": now}
            if not self._marks_pruned:  # once per process: the marks of writers long gone
                batches.append((self._prune_marks, [{"before": now - _MARKS_KEPT_SECONDS}]))
                self._marks_pruned = True
            batches.append((self._mark_commit, [mark]))
        if self._db.fast_lane:
            raw = [self._compiled[id(stmt)].bind(rows) for stmt, rows in batches]
            if users is not None:  # straight from the columns: no mapping per row
                save = self._compiled[id(self._save_user)]
                raw.insert(0, (save.sql, list(zip(*(users[k] for k in save.order), strict=True))))
            check = None if mark is None else self._compiled[id(self._last_commit)].bind([mark])
            await self._db.run_write(partial(_commit_once, check, changes.commit_id, raw))
        elif self._pg_lane:
            if not await self._commit_pg(batches, users, mark, changes.commit_id):
                return  # the first attempt went through; its answer was lost
        else:
            async with self._db.write() as conn:
                if mark is not None:
                    applied = (await conn.execute(self._last_commit, mark)).scalar()
                    if applied == changes.commit_id:
                        return  # the first attempt went through; its answer was lost
                for stmt, rows in batches:
                    await conn.execute(stmt, rows)
        self._journaled(changes)

    async def _journal_index(self) -> dict[str, int]:
        if self._journal_latest is None:
            await self.get_journal()
        assert self._journal_latest is not None
        return self._journal_latest

    def _journaled(self, changes: StateChanges) -> None:
        """Keep the journal's index (user → their latest record) as ``changes`` moved it."""
        index, owners = self._journal_latest, self._journal_users
        if index is None:
            return  # not read yet: it will be, whole
        if changes.journal is not None and len(changes.journal):
            ids = changes.journal.user_ids
            index.update(dict.fromkeys(ids, changes.journal_seq))
            owners[changes.journal_seq] = ids
        for seq in [k for k in owners if k <= changes.journal_through]:
            for user_id in owners.pop(seq):
                if index.get(user_id) == seq:
                    del index[user_id]

    async def _commit_pg(
        self,
        batches: list[tuple[Any, list[dict[str, Any]]]],
        users: dict[str, list[Any]] | None,
        mark: dict[str, Any] | None,
        commit_id: str | None,
    ) -> bool:
        """:meth:`commit` on PostgreSQL, in one transaction on the asyncpg connection: the
        users' rows as one array per column in one upsert, the other batches (a few rows
        each) by ``executemany``. False if ``commit_id`` was committed before."""
        async with self._db.pg_write() as conn:
            if mark is not None:
                check = self._pg[id(self._last_commit)]
                applied = await conn.fetchval(check.sql, *check.rows([mark])[0])
                if applied == commit_id:
                    return False
            if users is not None:
                order = self._pg[id(self._save_user)].order
                await conn.execute(self._save_users_pg, *(users[k] for k in order))
            for stmt, rows in batches:
                statement = self._pg[id(stmt)]
                await conn.executemany(statement.sql, statement.rows(rows))
        return True

    async def get_reliability(self) -> list[ReliabilityRecord]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(user_reliability))).mappings().all()
        return [ReliabilityRecord(**row) for row in rows]

    async def put_reliability(self, records: Sequence[ReliabilityRecord]) -> None:
        if not records:
            return
        rows = [{n: getattr(r, n) for n in ReliabilityRecord.__slots__} for r in records]
        async with self._db.write() as conn:
            await conn.execute(self._put_reliability, rows)

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
            for start in range(0, len(users or ()), _SQLITE_IN_CHUNK):
                chunk = (users or [])[start : start + _SQLITE_IN_CHUNK]
                rows += (await conn.execute(query.where(t.c.user_id.in_(chunk)))).all()
        return [(u, m, UserMetric(y, x)) for u, m, y, x in rows]

    async def get_experiment_stats(self, experiment_id: str) -> list[tuple[str, str, PairStats]]:
        t = experiment_stats
        query = select(t).where(t.c.experiment_id == experiment_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            (row["variant"], row["metric"], PairStats(**{n: row[n] for n in _PAIR_COLUMNS}))
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

    async def get_algorithm_counts(self, since: float) -> list[AlgorithmCount]:
        query = select(algorithm_stats).where(algorithm_stats.c.bucket_start >= since)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AlgorithmCount(
                row["segment"],
                row["algorithm"],
                row["bucket_start"],
                PerformanceCounts(**{name: row[name] for name in _COUNT_COLUMNS}),
            )
            for row in rows
        ]

    async def add_performance_report(
        self, report_id: str, payload: bytes, counts: Sequence[AlgorithmCount]
    ) -> bool:
        record = _insert(self._db, performance_reports).on_conflict_do_nothing(
            index_elements=["report_id"]
        )
        async with self._db.write() as conn:
            result = await conn.execute(
                record, {"report_id": report_id, "received_at": time.time(), "payload": payload}
            )
            if result.rowcount == 0:
                return False
            if counts:
                await conn.execute(self._add_counts, [_count_to_row(c) for c in counts])
        return True

    async def get_algorithm_status(self) -> list[AlgorithmStatus]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(algorithm_status))).mappings().all()
        return [AlgorithmStatus(**row) for row in rows]

    async def put_algorithm_status(self, statuses: Sequence[AlgorithmStatus]) -> None:
        if not statuses:
            return
        rows = [{name: getattr(s, name) for name in AlgorithmStatus.__slots__} for s in statuses]
        async with self._db.write() as conn:
            await conn.execute(self._put_status, rows)

    async def add_impressions(self, batch: Sequence[Impression]) -> None:
        if not batch:
            return
        rows = []
        sets: dict[str, tuple[str, ...]] = {}
        for i in batch:
            header, numbers, features = encode_slate(i.shown)
            names = i.shown.feature_names
            set_id = _feature_set_of(names)
            if set_id not in self._feature_sets:
                sets[set_id] = names
            rows.append(
                {
                    "impression_id": i.impression_id,
                    "user_id": i.user_id,
                    "segment": i.segment,
                    "created_at": i.created_at,
                    "epsilon": i.epsilon,
                    "model_version": i.model_version,
                    "slate": header,
                    "numbers": numbers,
                    "features": features,
                    "feature_set": set_id,
                    "context": orjson.dumps(i.context),
                    "experiments": orjson.dumps(i.experiments),
                    "model_slot": i.model_slot,
                }
            )
        batches = [(self._add_impression, rows)]
        if sets:
            named = [{"feature_set": k, "names": orjson.dumps(v)} for k, v in sets.items()]
            batches.insert(0, (self._add_feature_sets, named))
        if self._db.fast_lane:
            # One call in the writer thread: through SQLAlchemy's async layer this was
            # three thread hand-offs (begin, insert, commit) and per-row processing.
            raw = [self._compiled[id(stmt)].bind(rows) for stmt, rows in batches]
            await self._db.run_write(partial(_executemany, raw))
        else:
            async with self._db.write() as conn:
                for stmt, rows in batches:
                    await conn.execute(stmt, rows)
        self._feature_sets.update(sets)

    async def get_impression(self, impression_id: str) -> Impression | None:
        query = impression_query().where(impressions.c.impression_id == impression_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _impression(row)

    async def get_impressions(self, since: float, until: float) -> list[Impression]:
        query = (
            impression_query()
            .where(impressions.c.created_at >= since, impressions.c.created_at < until)
            .order_by(impressions.c.created_at, impressions.c.impression_id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_impression(row) for row in rows]

    async def get_impression_heads(self, since: float, until: float) -> list[ImpressionHead]:
        c = impressions.c
        query = (
            select(
                c.impression_id,
                c.user_id,
                c.created_at,
                c.slate,
                c.feature_set,
                c.model_version,
                c.model_slot,
            )
            .where(c.created_at >= since, c.created_at < until)
            .order_by(c.created_at, c.impression_id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ImpressionHead(row[0], row[1], row[2], _shown_ids(row[3], row[4]), row[5], row[6])
            for row in rows
        ]

    # -- continuous learning ---------------------------------------------------------

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
        upsert = _insert(self._db, deployment)
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
        upsert = _insert(self._db, training_jobs)
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

    async def get_journal(self) -> list[tuple[int, UserRows]]:
        query = select(state_journal.c.seq, state_journal.c.users).order_by(state_journal.c.seq)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        records = [(int(seq), UserRows.from_bytes(bytes(users))) for seq, users in rows]
        self._journal_latest, self._journal_users = {}, {}
        for seq, users in records:
            self._journal_latest.update(dict.fromkeys(users.user_ids, seq))
            self._journal_users[seq] = users.user_ids
        return records

    async def get_watermark(self) -> int:
        query = select(consumer_offsets.c.offset).where(consumer_offsets.c.consumer == CONSUMER)
        async with self._db.read() as conn:
            value = (await conn.execute(query)).scalar()
        return int(value or 0)

    async def get_positions(self) -> dict[int, int]:
        query = select(consumer_offsets.c.consumer, consumer_offsets.c.offset).where(
            consumer_offsets.c.consumer.startswith(PARTITION_CONSUMER)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {int(name[len(PARTITION_CONSUMER) :]): int(offset) for name, offset in rows}

    async def put_items(self, batch: Sequence[Item]) -> None:
        rows = [
            {
                "item_id": item.item_id,
                "vector": item.vector.astype("<f8").tobytes(),
                "vector_source": item.vector_source,
                "attributes": dict(item.attributes),
                "updated_at": item.updated_at,
            }
            for item in batch
        ]
        async with self._db.write() as conn:
            await conn.execute(self._save_item, rows)

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        if not item_ids:
            return {}
        rows: Sequence[Any]
        if self._db.fast_lane:
            rows = await self._db.run_read(partial(_select_in, items, "item_id", item_ids))
        else:
            query = select(items).where(items.c.item_id.in_(list(item_ids)))
            async with self._db.read() as conn:
                rows = (await conn.execute(query)).mappings().all()
        return {
            row["item_id"]: Item(
                item_id=row["item_id"],
                vector=_vector(row["vector"]),
                vector_source=row["vector_source"],
                attributes=row["attributes"]
                if isinstance(row["attributes"], dict)
                else orjson.loads(row["attributes"]),
                updated_at=row["updated_at"],
            )
            for row in rows
        }

    async def add_dead_letter(self, event: Event, reason: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                dead_letters.insert(),
                {
                    "offset": event.offset,
                    "event_id": event.event_id,
                    "user_id": event.user_id,
                    "payload": orjson.dumps(event.to_record()),
                    "reason": reason,
                    "failed_at": time.time(),
                },
            )

    async def count_dead_letters(self) -> int:
        async with self._db.read() as conn:
            value = (await conn.execute(select(func.count()).select_from(dead_letters))).scalar()
        return int(value or 0)

    async def stored_dims(self) -> set[int]:
        found: set[int] = set()
        async with self._db.read() as conn:
            for table in (user_state, items):
                query = select(func.length(table.c.vector)).limit(1)
                size = (await conn.execute(query)).scalar()
                if size is not None:
                    found.add(int(size) // 8)  # float64 bytes
        return found

    async def ping(self) -> None:
        await self._db.ping()


class _Raw:
    """A SQLAlchemy statement compiled once for SQLite, for the fast lane's plain tuples."""

    def __init__(self, stmt: Any) -> None:
        compiled = stmt.compile(dialect=sqlite.dialect())
        self.sql = str(compiled)
        self.order: list[str] = list(compiled.positiontup or ())

    def bind(self, rows: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
        order = self.order
        return self.sql, [tuple(row[k] for k in order) for row in rows]


def _executemany(
    batches: Sequence[tuple[str, list[tuple[Any, ...]]]], conn: sqlite3.Connection
) -> None:
    for sql, rows in batches:
        conn.executemany(sql, rows)


def _commit_once(
    check: tuple[str, list[tuple[Any, ...]]] | None,
    commit_id: str | None,
    batches: Sequence[tuple[str, list[tuple[Any, ...]]]],
    conn: sqlite3.Connection,
) -> None:
    """``batches``, unless ``check`` (the query of the writer's last commit id) finds
    ``commit_id`` applied already."""
    if check is not None:
        sql, (params,) = check
        row = conn.execute(sql, params).fetchone()
        if row is not None and row[0] == commit_id:
            return  # the first attempt went through; its answer was lost
    _executemany(batches, conn)


def _select_in(
    table: Any, key: str, values: Sequence[str], conn: sqlite3.Connection
) -> list[dict[str, Any]]:
    """Rows of ``table`` whose ``key`` is in ``values``, as mappings (fast lane)."""
    names = _column_names(table)
    found: list[dict[str, Any]] = []
    values = list(values)
    for start in range(0, len(values), _SQLITE_IN_CHUNK):
        chunk = values[start : start + _SQLITE_IN_CHUNK]
        sql = _select_in_sql(table, key, len(chunk))
        found.extend(dict(zip(names, row, strict=True)) for row in conn.execute(sql, chunk))
    return found


@cache
def _column_names(table: Any) -> tuple[str, ...]:
    """``table``'s column names, in order (a read of one user, the read path's miss, asked
    for them each time: listing a SQLAlchemy table's columns costs more than the query)."""
    return tuple(c.name for c in table.c)


@lru_cache(maxsize=256)
def _select_in_sql(table: Any, key: str, count: int) -> str:
    """The query of :func:`_select_in` for ``count`` values, built once per size."""
    columns = ", ".join(f'"{n}"' for n in _column_names(table))
    marks = ",".join("?" * count)
    return f'SELECT {columns} FROM {table.name} WHERE "{key}" IN ({marks})'


_PAIR_COLUMNS = ("n", "sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy")


def _merged(
    deltas: Sequence[tuple[str, str, str, PairStats]],
) -> list[tuple[str, str, str, PairStats]]:
    """One row per key: an upsert statement must not touch the same row twice."""
    merged: dict[tuple[str, str, str], PairStats] = {}
    for e, v, m, s in deltas:
        merged[(e, v, m)] = merged[(e, v, m)] + s if (e, v, m) in merged else s
    return [(e, v, m, s) for (e, v, m), s in merged.items()]


_COUNT_COLUMNS = ("impressions", "clicks", "conversions", "satisfaction_sum", "satisfaction_n")


_INTEGER_COUNTS = frozenset(_COUNT_COLUMNS) - {"satisfaction_sum"}


def add_counts_statement(db: SqlDatabase) -> Any:
    """The upsert adding :class:`AlgorithmCount` rows (``_count_to_row``) to the stored
    ones (deltas: an erasure's are negative)."""
    stats = _insert(db, algorithm_stats)
    return stats.on_conflict_do_update(
        index_elements=["segment", "algorithm", "bucket_start"],
        set_={
            name: _saturating_sum(algorithm_stats.c[name], stats.excluded[name])
            if name in _INTEGER_COUNTS
            else algorithm_stats.c[name] + stats.excluded[name]
            for name in _COUNT_COLUMNS
        },
    )


def _saturating_sum(stored: Any, added: Any) -> Any:
    """``stored + added``, stopping at ``COUNT_LIMIT`` as ``PerformanceCounts`` does, and
    never computing a sum beyond it (a BIGINT would overflow)."""
    limit = literal_column(str(COUNT_LIMIT))  # not a parameter: the fast lane binds rows only
    return case((stored > limit - added, limit), else_=stored + added)


def _count_to_row(row: AlgorithmCount) -> dict[str, Any]:
    values = {name: getattr(row.counts, name) for name in _COUNT_COLUMNS}
    return {
        "segment": row.segment,
        "algorithm": row.algorithm,
        "bucket_start": row.bucket_start,
        **values,
    }


def _user_columns(rows: UserRows) -> dict[str, list[Any]]:
    """The ``user_state`` columns of ``rows`` as lists (times NaN → NULL)."""

    def times(values: Any) -> list[float | None]:
        return [None if x != x else x for x in values.tolist()]

    vectors = np.ascontiguousarray(rows.vectors, dtype="<f8")
    return {
        "user_id": rows.user_ids,
        "vector": [v.tobytes() for v in vectors],
        "events_applied": rows.events_applied.tolist(),
        "events_skipped": rows.events_skipped.tolist(),
        "interactions": rows.interactions.tolist(),
        "impressions": rows.impressions.tolist(),
        "first_event_at": times(rows.first_event_at),
        "last_event_at": times(rows.last_event_at),
        "updated_at": times(rows.updated_at),
        "explicit_offset": rows.explicit_offset.tolist(),
        "implicit_offset": rows.implicit_offset.tolist(),
        "events_held": rows.events_held.tolist(),
    }


def _user_from_row(row: Any) -> UserState:
    return UserState(
        user_id=row["user_id"],
        vector=_vector(row["vector"]),
        events_applied=row["events_applied"],
        events_skipped=row["events_skipped"],
        interactions=row["interactions"],
        impressions=row["impressions"],
        first_event_at=row["first_event_at"],
        last_event_at=row["last_event_at"],
        updated_at=row["updated_at"],
        explicit_offset=row["explicit_offset"],
        implicit_offset=row["implicit_offset"],
        events_held=row["events_held"],
    )


def impression_query() -> Any:
    """Impressions with their feature set's names (NULL for rows logged before 0010)."""
    return select(impressions, feature_sets.c.names).select_from(
        impressions.outerjoin(feature_sets, impressions.c.feature_set == feature_sets.c.feature_set)
    )


_NAMES: dict[str, tuple[str, ...]] = {}
"""Feature sets' names by id (an id is the hash of its names: never stale)."""


_SET_IDS: dict[tuple[str, ...], str] = {}


def _feature_set_of(names: tuple[str, ...]) -> str:
    set_id = _SET_IDS.get(names)
    if set_id is None:
        set_id = _SET_IDS[names] = feature_set_id(names)
        _NAMES.setdefault(set_id, names)
    return set_id


def _shown_ids(slate: bytes, feature_set: str | None) -> tuple[str, ...]:
    """The shown items' ids from an impression's ``slate`` column: the header's
    (:func:`~recloop.core.slates.shown_item_ids`), or, for a row logged before 0010
    (``feature_set`` NULL), the mappings' in slot order."""
    if feature_set is None:
        return Slate.from_slate(orjson.loads(slate)).item_ids
    return shown_item_ids(slate)


def _impression(row: Mapping[str, Any]) -> Impression:
    set_id = row["feature_set"]
    if set_id is None:  # logged before 0010: the slate as mappings
        shown = Slate.from_slate(orjson.loads(row["slate"]))
    else:
        names = _NAMES.get(set_id)
        if names is None:
            names = _NAMES[set_id] = tuple(orjson.loads(row["names"]))
        shown = decode_slate(row["slate"], row["numbers"], row["features"], names)
    return Impression(
        impression_id=row["impression_id"],
        user_id=row["user_id"],
        segment=row["segment"],
        created_at=row["created_at"],
        epsilon=row["epsilon"],
        shown=shown,
        context=orjson.loads(row["context"]),
        experiments=orjson.loads(row["experiments"] or b"[]"),
        model_version=row["model_version"],
        model_slot=row["model_slot"],
    )


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
