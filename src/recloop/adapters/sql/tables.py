"""The relational schema, shared by SQLite and PostgreSQL. Alembic migrations create it.

Times are seconds since the epoch (double precision); vectors are float64
arrays stored as raw little-endian bytes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity.
_Offset = BigInteger().with_variant(Integer(), "sqlite")

# The event log (0009): one compact row per event, built for append. Only ``offset`` and
# ``event_id`` (the idempotency key) are indexed; per-user look-ups scan (erasure and
# export are rare), per-impression look-ups go through ``event_impressions``.
events = Table(
    "events",
    metadata,
    Column("offset", _Offset, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("user_id", String(128), nullable=False),
    Column("item_id", String(128), nullable=False),
    Column("type_code", SmallInteger, nullable=False),  # adapters.sql.log.TYPE_CODES
    Column("timestamp", Float, nullable=False),
    Column("value", Float),
    Column("accepted_at", Float, nullable=False),
    Column("request_id", String(128)),
    # orjson of the optional fields the event has (text, context, attribution); NULL if none.
    Column("extra", LargeBinary),
    # Distributed deployment: the event topic's partition and offset it was read at (0005).
    Column("log_partition", Integer),
    Column("log_offset", BigInteger),
    sqlite_autoincrement=True,  # offsets are never reused, even after purges
)

# The logged events attributed to an impression (``attribution.impression_id``), written
# with them in one transaction: the training joins' and the impression route's look-up.
event_impressions = Table(
    "event_impressions",
    metadata,
    Column("offset", _Offset, primary_key=True, autoincrement=False),
    Column("impression_id", String(128), nullable=False),
    Index("ix_event_impressions_impression_id", "impression_id"),
)

items = Table(
    "items",
    metadata,
    Column("item_id", String(128), primary_key=True),
    Column("vector", LargeBinary, nullable=False),
    Column("vector_source", String(8), nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

user_state = Table(
    "user_state",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("vector", LargeBinary, nullable=False),
    Column("events_applied", BigInteger, nullable=False),
    Column("events_skipped", BigInteger, nullable=False),
    Column("interactions", BigInteger, nullable=False),
    Column("impressions", BigInteger, nullable=False),
    Column("first_event_at", Float),
    Column("last_event_at", Float),
    Column("updated_at", Float),
    Column("explicit_offset", BigInteger, nullable=False),
    Column("implicit_offset", BigInteger, nullable=False),
    Column("events_held", BigInteger, nullable=False, server_default="0"),  # 0004
)

# One record per journaling checkpoint: the users' rows it changed (UserRows.to_bytes).
# A user's latest record holds a state newer than its user_state row; compaction writes
# those rows to user_state and deletes the oldest records (services/checkpoint.py).
state_journal = Table(
    "state_journal",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("users", LargeBinary, nullable=False),
    Column("written_at", Float, nullable=False),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("offset", BigInteger, nullable=False),
)

commit_marks = Table(
    "commit_marks",
    metadata,
    # One row per writing process (a store instance): the last commit it applied.
    Column("writer", String(64), primary_key=True),
    Column("commit_id", String(64), nullable=False),
    Column("committed_at", Float, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", _Offset, primary_key=True, autoincrement=True),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failed_at", Float, nullable=False),
    sqlite_autoincrement=True,
)

# -- algorithm optimizer (0002) -------------------------------------------------

algorithm_stats = Table(
    "algorithm_stats",
    metadata,
    Column("segment", String(16), primary_key=True),
    Column("algorithm", String(64), primary_key=True),
    Column("bucket_start", Float, primary_key=True),
    # Float since 0015: inverse-propensity credit counts fractions of impressions
    Column("impressions", Float, nullable=False),
    Column("clicks", Float, nullable=False),
    Column("conversions", Float, nullable=False),
    Column("satisfaction_sum", Float, nullable=False),
    Column("satisfaction_n", Float, nullable=False),
    # 0016: sum(w * w - w) over the impressions' credit weights (0 for whole counts)
    Column("impressions_sq_excess", Float, nullable=False, server_default="0"),
)

algorithm_status = Table(
    "algorithm_status",
    metadata,
    Column("segment", String(16), primary_key=True),
    Column("algorithm", String(64), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("manual", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("since", Float, nullable=False),
    Column("probation_since", Float),
)

performance_reports = Table(
    "performance_reports",
    metadata,
    Column("report_id", String(128), primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

impressions = Table(
    "impressions",
    metadata,
    Column("impression_id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("segment", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("model_version", String(64)),
    # Before 0010 the shown items as JSON mappings with their features; since, with
    # feature_set set, the header of core.slates.encode (item ids, algorithms; shares
    # and credits too since issue 15).
    Column("slate", LargeBinary, nullable=False),
    Column("context", LargeBinary, nullable=False),
    Column("experiments", LargeBinary),  # 0003
    Column("model_slot", String(16)),  # 0003
    Column("numbers", LargeBinary),  # 0010: scores, propensities, explored
    Column("features", LargeBinary),  # 0010: float32 matrix, zlib
    Column("feature_set", String(16)),  # 0010: feature_sets.feature_set
    Index("ix_impressions_user_id", "user_id"),
    Index("ix_impressions_created_at", "created_at"),  # 0006: every read is a time window
)

feature_sets = Table(
    "feature_sets",  # 0010: the column names of logged feature matrices, once per set
    metadata,
    Column("feature_set", String(16), primary_key=True),
    Column("names", LargeBinary, nullable=False),  # JSON list
)

# -- experiments (0003) ---------------------------------------------------------

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("definition", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("stopped_at", Float),
)

experiment_exposures = Table(
    "experiment_exposures",
    metadata,
    Column("experiment_id", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("variant", String(64), nullable=False),
    Column("exposed_at", Float, nullable=False),
    Column("overridden_by", String(128)),  # 0011
    Index("ix_experiment_exposures_user_id", "user_id"),
)

experiment_user_metrics = Table(
    "experiment_user_metrics",
    metadata,
    Column("experiment_id", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("y", Float, nullable=False),
    Column("x", Float, nullable=False),
)

experiment_stats = Table(
    "experiment_stats",
    metadata,
    Column("experiment_id", String(128), primary_key=True),
    Column("variant", String(64), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("sum_x", Float, nullable=False),
    Column("sum_x2", Float, nullable=False),
    Column("sum_y", Float, nullable=False),
    Column("sum_y2", Float, nullable=False),
    Column("sum_xy", Float, nullable=False),
)

# The distributed workers' reports of what they took and did not commit yet, one row per
# event-topic partition, replaced by its owner (0013; ``ports.WaitingReport``).
experiment_waiting = Table(
    "experiment_waiting",
    metadata,
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("events", LargeBinary, nullable=False),  # orjson {experiment_id: {type: n}}
    Column("unfetched", BigInteger),
    Column("reported_at", Float, nullable=False),
)

# -- guard (0004) ------------------------------------------------------------------

user_reliability = Table(
    "user_reliability",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("score", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("since", Float, nullable=False),
    Column("manual", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_user_reliability_score", "score"),
)

# -- continuous learning (0006) -------------------------------------------------------

models = Table(
    "models",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("window_start", Float, nullable=False),
    Column("window_end", Float, nullable=False),
    Column("examples", BigInteger, nullable=False),
    Column("positives", BigInteger, nullable=False),
    Column("metrics", LargeBinary, nullable=False),
    Column("feature_names", LargeBinary, nullable=False),
    Column("artifact", LargeBinary, nullable=False),
)

model_transitions = Table(
    "model_transitions",
    metadata,
    Column("id", _Offset, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    sqlite_autoincrement=True,
)

deployment = Table(
    "deployment",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("state", LargeBinary, nullable=False),
)

training_jobs = Table(
    "training_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("trigger", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("version", String(64)),
    Column("message", Text, nullable=False),
)

Index("ix_impressions_created_at", impressions.c.created_at)

# -- privacy (0007) -------------------------------------------------------------------

erased_users = Table(
    "erased_users",
    metadata,
    # core.privacy.user_digest of the erased id: the id itself must not stay behind.
    Column("user_digest", String(64), primary_key=True),
    Column("erased_at", Float, nullable=False),
    Column("log_offset", BigInteger),  # embedded log: the highest offset the erasure covers
)

privacy_meta = Table(
    "privacy_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

Index("ix_dead_letters_user_id", dead_letters.c.user_id)  # 0007
Index("ix_experiment_user_metrics_user_id", experiment_user_metrics.c.user_id)  # 0007

# The console's plots over time (0012): figures sampled every history.interval_seconds,
# purged after history.retention_days. The key serves the reads (one kind, one scope,
# oldest first); ``at`` is indexed for the purge.
history_points = Table(
    "history_points",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("scope", String(256), primary_key=True),
    Column("subject", String(256), primary_key=True),
    Column("at", Float, primary_key=True),
    Column("figures", LargeBinary, nullable=False),  # orjson of HistoryPoint.values
    Index("ix_history_points_at", "at"),
)
