"""The interfaces services depend on; adapters under ``recloop.adapters`` implement them.

``adapters.memory`` implements every port in process: it is what unit tests
use, and the contract tests run the same cases over it and the SQL adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Container, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from recloop.core.availability import AlgorithmStatus
from recloop.core.bandit import PerformanceCounts
from recloop.core.events import Event
from recloop.core.experiments import Experiment, UserMetric
from recloop.core.items import Item
from recloop.core.preferences import UserState
from recloop.core.privacy import Tombstone
from recloop.core.slates import Slate
from recloop.core.state import UserRows
from recloop.core.stats import PairStats


@dataclass(frozen=True, slots=True)
class AlgorithmCount:
    """Counts of one (segment, algorithm) in the time bucket starting at ``bucket_start``."""

    segment: str
    algorithm: str
    bucket_start: float
    counts: PerformanceCounts


@dataclass(frozen=True, slots=True)
class ReliabilityRecord:
    """A user's stored standing with the guard."""

    user_id: str
    score: float
    status: str  # trusted | suspect | blocked
    since: float
    manual: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A trained model in the registry (its artifact is stored beside it).

    ``status``: ``candidate`` (trained, being validated), ``rejected`` (failed
    validation), ``green`` (in the canary slot), ``active`` (serving everyone
    but the canary), ``retired`` (replaced), ``rolled_back`` (failed its canary
    or its watch window).
    """

    version: str
    created_at: float
    status: str
    reason: str
    kind: str
    sha256: str
    window_start: float
    window_end: float
    examples: int
    positives: int
    metrics: dict[str, Any] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """One retraining run: ``queued`` → ``running`` → ``done`` | ``skipped`` | ``failed``."""

    job_id: str
    trigger: str  # schedule | api | cli
    status: str
    created_at: float
    finished_at: float | None = None
    version: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Exposure:
    experiment_id: str
    user_id: str
    variant: str
    exposed_at: float
    overridden_by: str | None = None
    """The experiment whose overrides won for this user (``core.experiments.resolve``):
    the user is then not counted as exposed here. None: counted."""


@dataclass(frozen=True, slots=True)
class WaitingReport:
    """What one partition's owner (a distributed worker) has taken and not committed, for
    the experiments' results on the API instances.

    ``events``: per running experiment, per event type, the events taken from the
    partition that will move it (of its users, after their exposure, of a type a metric
    listens to) and are not committed yet. ``unfetched``: messages of the partition not
    taken yet (its high watermark at the last fetch minus what was taken; None before a
    fetch said). ``reported_at``: when (epoch seconds)."""

    partition: int
    events: Mapping[str, Mapping[str, int]]
    unfetched: int | None
    reported_at: float


@dataclass(slots=True)
class StateChanges:
    """Everything one commit writes, atomically.

    ``users`` are whole rows (the users' learnt state, as columns), each replacing the
    stored one unless it would move one of the user's applied offsets back (a late
    write: the stored row is kept). ``user_metrics`` replace the stored values of
    (experiment, user, metric);
    ``algorithm_counts`` and ``experiment_stats`` are deltas added to what is
    stored; ``watermark``, if given, replaces the consumer's applied offset;
    ``positions`` (distributed deployment) are the applied offsets of event-topic
    partitions, each only ever moved forward.

    ``journal`` (the embedded processor's checkpoints) are users' rows appended as one
    record of the state journal, numbered ``journal_seq``, instead of written row by row:
    a user's latest record holds a state newer than its ``users`` row. Records numbered
    ``journal_through`` or less are deleted (compacted: the processor sends, in the same
    commit, as ``users``, the rows of every user whose latest record they are).

    ``commit_id`` makes a retried commit safe: a store remembers the last
    commit id its process applied, in the same transaction, and applies a
    commit with that id again as nothing. A commit whose answer was lost (the
    connection dropped after the database committed it) is retried with the
    same id, so its deltas are not added twice. A writer retries only its
    latest commit before sending another (the state writer is one group commit).
    """

    users: UserRows = field(default_factory=UserRows.empty)
    algorithm_counts: list[AlgorithmCount] = field(default_factory=list)
    exposures: list[Exposure] = field(default_factory=list)
    user_metrics: list[tuple[str, str, str, UserMetric]] = field(default_factory=list)
    experiment_stats: list[tuple[str, str, str, PairStats]] = field(default_factory=list)
    watermark: int | None = None
    positions: dict[int, int] = field(default_factory=dict)
    commit_id: str | None = None
    journal: UserRows | None = None
    journal_seq: int = 0
    journal_through: int = 0

    def __iadd__(self, other: StateChanges) -> StateChanges:
        self.users = self.users + other.users
        self.algorithm_counts += other.algorithm_counts
        self.exposures += other.exposures
        self.user_metrics += other.user_metrics
        self.experiment_stats += other.experiment_stats
        return self


@dataclass(frozen=True, slots=True)
class Impression:
    """A ranking shown to a user, as logged for attribution and training.

    ``shown`` holds the shown items in slot order, in columns: item ids, scores,
    propensities, explored flags, algorithms and the features used to score
    them (a float32 matrix with its feature set's names); :attr:`slate` gives
    them as one mapping per item.
    """

    impression_id: str
    user_id: str
    segment: str
    created_at: float
    epsilon: float
    shown: Slate = field(default_factory=Slate)
    context: dict[str, Any] = field(default_factory=dict)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    model_version: str | None = None
    model_slot: str | None = None

    @property
    def slate(self) -> list[dict[str, Any]]:
        """One mapping per shown item: item_id, position, score, propensity, explored,
        algorithms, features (:attr:`Slate.slate <recloop.core.slates.Slate.slate>`)."""
        return self.shown.slate


@dataclass(frozen=True, slots=True)
class ImpressionHead:
    """What the canary monitor's running counts (``learning.tally``) read of an
    impression: who was shown which items, when, by which model slot; without the
    slate's numbers, features, context and experiments, which it never reads."""

    impression_id: str
    user_id: str
    created_at: float
    item_ids: tuple[str, ...]
    model_version: str | None = None
    model_slot: str | None = None

    @classmethod
    def of(cls, impression: Impression) -> ImpressionHead:
        """The head of a whole impression."""
        return cls(
            impression.impression_id,
            impression.user_id,
            impression.created_at,
            impression.shown.item_ids,
            impression.model_version,
            impression.model_slot,
        )


class EventLog(Protocol):
    """The durable, ordered log of accepted events; ``event_id`` is unique in it."""

    async def append(self, events: Sequence[Event]) -> list[int | None]:
        """Write ``events`` durably, in order, in one commit.

        Returns each event's offset, or None where its ``event_id`` was already logged
        (the event is then not written again).
        """
        ...

    async def read(self, after: int, limit: int) -> list[Event]:
        """Events with offsets above ``after``, in offset order, at most ``limit``."""
        ...

    async def last_offset(self) -> int:
        """The highest offset written so far (0 for an empty log)."""
        ...

    async def read_impression_clicks(self, after: int, limit: int) -> list[Event]:
        """The logged clicks that name an impression (``attribution.impression_id``), with
        offsets above ``after``, in offset order, at most ``limit``: what the canary
        monitor counts, read without the rest of the log."""
        ...

    async def read_impression_feedback(self, impression_id: str) -> list[Event]:
        """Logged events whose ``attribution.impression_id`` is ``impression_id``."""
        ...

    async def read_feedback_of(self, impression_ids: Sequence[str]) -> dict[str, list[Event]]:
        """:meth:`read_impression_feedback` for many impressions at once (training joins)."""
        ...

    async def read_user_events(self, user_id: str, since: float, until: float) -> list[Event]:
        """The user's logged events with ``since <= timestamp < until``, in log order."""
        ...

    async def read_users_events(
        self, user_ids: Sequence[str], since: float, until: float, after: int = 0
    ) -> dict[str, list[Event]]:
        """:meth:`read_user_events` of several users in one read of the log, of the
        events at offsets above ``after`` only (one scan of that part of the log where
        the log has no per-user index); every user asked is a key."""
        ...

    async def offset_logged_before(self, logged_at: float) -> int:
        """The highest offset of an event logged before ``logged_at`` (0 if none was):
        the events above it were logged at ``logged_at`` or later, while logging times
        grow along the log. Found by bisecting the offsets (O(log n) reads by offset)."""
        ...


class UserStateStore(Protocol):
    """Users' learnt state, and the commit that writes it with everything an applied round
    moved (:class:`StateChanges`: the algorithms' counts, experiments' exposures and values,
    the log positions applied) in one transaction."""

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]: ...

    async def get_user_ids(self) -> list[str]:
        """Every user with stored state (the user table's and the state journal's), in no
        particular order: what the embedded processor reads once at start, to know which
        users it need not look up (``UserTable.may_be_stored``)."""
        ...

    async def commit(self, changes: StateChanges) -> None:
        """Write ``changes`` in one transaction (see :class:`StateChanges`)."""
        ...

    async def get_journal(self) -> list[tuple[int, UserRows]]:
        """The state journal's records not compacted yet, oldest first (see
        :class:`StateChanges`)."""
        ...

    async def get_watermark(self) -> int: ...

    async def get_positions(self) -> dict[int, int]:
        """Applied offsets of the event topic's partitions (distributed deployment):
        every message of partition ``p`` below ``positions[p]`` is in the state."""
        ...


class ReliabilityStore(Protocol):
    """Users' standing with the guard (:class:`ReliabilityRecord`)."""

    async def get_reliability(self) -> list[ReliabilityRecord]: ...

    async def put_reliability(self, records: Sequence[ReliabilityRecord]) -> None: ...


class ExperimentStore(Protocol):
    """Experiments' definitions, and what :meth:`UserStateStore.commit` wrote of them
    (exposures, users' metric values, per-variant statistics); the distributed workers'
    reports of what they hold uncommitted."""

    async def get_experiments(self) -> list[Experiment]: ...

    async def put_experiment(self, experiment: Experiment) -> None: ...

    async def get_exposures(self, experiment_id: str) -> list[Exposure]: ...

    async def get_user_metrics(
        self, experiment_id: str, user_ids: Collection[str] | None = None
    ) -> list[tuple[str, str, UserMetric]]:
        """(user_id, metric, values) of every exposed user of the experiment (of
        ``user_ids`` only, if given)."""
        ...

    async def get_experiment_stats(self, experiment_id: str) -> list[tuple[str, str, PairStats]]:
        """(variant, metric, stats) of the experiment."""
        ...

    async def put_waiting(self, reports: Sequence[WaitingReport]) -> None:
        """Replace the reports of these partitions (one transaction)."""
        ...

    async def get_waiting(self) -> list[WaitingReport]:
        """Every partition's last report."""
        ...


class OptimizerStore(Protocol):
    """The optimizer's algorithm counts (per segment, algorithm and time bucket, added by
    :meth:`UserStateStore.commit` and by performance reports) and algorithms' status."""

    async def get_algorithm_counts(self, since: float) -> list[AlgorithmCount]:
        """Every stored bucket starting at or after ``since``."""
        ...

    async def add_performance_report(
        self, report_id: str, payload: bytes, counts: Sequence[AlgorithmCount]
    ) -> bool:
        """Record a report and add its counts in one commit; False (nothing changed) if
        ``report_id`` was recorded before."""
        ...

    async def get_algorithm_status(self) -> list[AlgorithmStatus]: ...

    async def put_algorithm_status(self, statuses: Sequence[AlgorithmStatus]) -> None: ...


class ImpressionStore(Protocol):
    """The rankings shown (:class:`Impression`), logged for attribution and training."""

    async def add_impressions(self, impressions: Sequence[Impression]) -> None: ...

    async def get_impression(self, impression_id: str) -> Impression | None: ...

    async def get_impressions(self, since: float, until: float) -> list[Impression]:
        """Impressions created in ``[since, until)``, oldest first."""
        ...

    async def get_impression_heads(
        self, since: float, until: float, known: Container[str] = ()
    ) -> list[ImpressionHead]:
        """:meth:`get_impressions`' heads (:class:`ImpressionHead`), read and decoded
        without the rest of each impression; those of the impressions in ``known`` are
        left out, undecoded (what a reader already holds)."""
        ...


class ModelStore(Protocol):
    """Continuous learning: the model registry (with artifacts), the deployment's slots
    and transitions, the training jobs."""

    async def put_model(self, record: ModelRecord, artifact: bytes) -> None: ...

    async def set_model_status(self, version: str, status: str, reason: str) -> None: ...

    async def get_models(self) -> list[ModelRecord]:
        """Every model, newest first (without artifacts)."""
        ...

    async def get_model(self, version: str) -> tuple[ModelRecord, bytes] | None: ...

    async def put_deployment(
        self, state: Mapping[str, Any], transition: Mapping[str, Any] | None
    ) -> None:
        """Replace the slots' state; append ``transition`` to the history (one transaction)."""
        ...

    async def get_deployment(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The slots' state (None before the first deployment) and every transition, oldest
        first."""
        ...

    async def put_job(self, job: TrainingJob) -> None: ...

    async def get_job(self, job_id: str) -> TrainingJob | None: ...


class ItemStore(Protocol):
    """Items: their vectors and attributes."""

    async def put_items(self, items: Sequence[Item]) -> None: ...

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]: ...


class DeadLetterStore(Protocol):
    """Events that failed to apply, with the reason."""

    async def add_dead_letter(self, event: Event, reason: str) -> None: ...

    async def count_dead_letters(self) -> int: ...


class StateStore(
    UserStateStore,
    ReliabilityStore,
    ExperimentStore,
    OptimizerStore,
    ImpressionStore,
    ModelStore,
    ItemStore,
    DeadLetterStore,
    Protocol,
):
    """Learned state and what is stored beside it: every role above in one store (a
    service that needs one or two roles takes those instead)."""

    async def stored_dims(self) -> set[int]:
        """The lengths of the vectors stored (users' and items'); empty for a new store.
        The dimension is part of the schema: a process of another ``vectors.dim`` must
        not start on them."""
        ...

    async def ping(self) -> None:
        """Raise if the store cannot serve."""
        ...


class Cache(Protocol):
    """Read results cached per key.

    Writers ``set`` the fresh value after they commit (or ``delete`` what they
    cannot recompute); readers filling a miss from the store use ``add``, which
    never overwrites, so a slow reader cannot put back a value older than a
    writer's.
    """

    def get(self, key: str) -> Any | None: ...

    def set(self, key: str, value: Any) -> None: ...

    def add(self, key: str, value: Any) -> None:
        """Set ``key`` only if it holds nothing (or only an expired value)."""
        ...

    def delete(self, key: str) -> None: ...


class Forgettable(Protocol):
    """Holds something of users in memory that an erasure must drop
    (``services.privacy`` walks them: the guard's evidence, the experiments' exposures,
    the learning service's item counts, the read cache, ...)."""

    def held_users(self) -> set[str]:
        """The users held now (a tombstone from another process drops those erased)."""
        ...

    def forget(self, user_id: str) -> None:
        """Drop what is held of ``user_id``."""
        ...


@dataclass(frozen=True, slots=True)
class UserData:
    """Everything stored about one user (``GET .../users/{id}/export``)."""

    state: UserState | None
    events: list[Event]
    impressions: list[Impression]
    exposures: list[Exposure]
    metric_values: list[tuple[str, str, UserMetric]]
    """(experiment_id, metric, values)."""
    reliability: ReliabilityRecord | None
    dead_letters: list[tuple[Event, str]]
    """(event, reason) of the user's events that failed to apply."""


class PrivacyStore(Protocol):
    """Data lifecycle over the event log and the state store: retention, erasure, export.

    Every method deletes in bounded transactions or in exactly one (``erase``).
    """

    async def purge_events(self, before: float, max_offset: int | None, limit: int) -> int:
        """Delete up to ``limit`` logged events accepted before ``before`` (and, if given,
        at or below log offset ``max_offset``), oldest first; how many were deleted."""
        ...

    async def purge_impressions(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` impressions created before ``before``, oldest first."""
        ...

    async def purge_dead_letters(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` dead letters that failed before ``before``, oldest first."""
        ...

    async def user_data(self, user_id: str) -> UserData: ...

    async def erase(
        self,
        user_id: str,
        digest: str,
        tombstone: Tombstone,
        changes: StateChanges,
    ) -> dict[str, int]:
        """In one transaction: delete every row keyed by ``user_id`` (log events only up
        to ``tombstone.log_offset`` when it is given), add ``changes.experiment_stats``
        (the user's contribution, negated), and store the tombstone under ``digest``.

        Returns the rows deleted per kind: ``events``, ``impressions``, ``state``,
        ``exposures``, ``metric_values``, ``reliability``, ``dead_letters``.
        """
        ...

    async def get_tombstones(self) -> dict[str, Tombstone]:
        """Every erased user's tombstone, by :func:`recloop.core.privacy.user_digest`."""
        ...

    async def get_meta(self, name: str) -> str | None: ...

    async def put_meta(self, name: str, value: str) -> None: ...

    async def has_users(self) -> bool:
        """Whether any user state is stored."""
        ...


# --- Rate limits (issue 14: the guard in arrays) ---------------------------------------

from recloop.core.ratelimit import Admission  # noqa: E402  (kept with its port)


class RateLimiter(Protocol):
    """Sliding-window rate limits per class (``explicit``, ``implicit``, ``key``) and
    identity, with the decisions of ``limits``' sliding-window counter
    (:mod:`recloop.core.ratelimit` states the rules).

    Adapters: ``adapters.ratelimit.memory`` (in process, numpy arrays),
    ``adapters.ratelimit.redis`` (shared by every API instance: one script call per
    request) and ``adapters.ratelimit.upstream`` (any other ``limits`` storage).
    """

    shared: bool
    """Whether the counters are shared by every instance (Redis)."""

    async def admit_many(
        self, action: str, asks: Sequence[tuple[str, int]]
    ) -> dict[int, Admission]:
        """Admit up to ``count`` units of ``action`` for each ``(identity, count)``, in
        order, and charge what is admitted; what was not admitted in full, by the ask's
        index (the common case, all admitted, is an empty dict). Raises if a shared
        storage fails (nothing is then known about what was charged)."""
        ...

    async def admit_groups(
        self, groups: Sequence[tuple[str, Sequence[tuple[str, int]]]], gate: bool = False
    ) -> list[dict[int, Admission] | None]:
        """:meth:`admit_many` for each ``(action, asks)`` group, in order (a request's
        asks of every class: in Redis, one script call). With ``gate``, the later groups
        are decided (and charged) only if the first is admitted in full; otherwise they
        are None."""
        ...

    async def forget(self, identity: str, actions: Sequence[str]) -> None:
        """Delete ``identity``'s counters of ``actions`` (an erased user)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# --- The distributed worker's stream (issue 18: services on ports only) ----------------------

PartitionsHook = Callable[[frozenset[int]], Awaitable[None]]
"""Called with a set of partition numbers of the event stream (a rebalance)."""


class StreamPosition(Protocol):
    """Where a message sits: its partition and its offset there."""

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class Poisoned(Protocol):
    """A message of the stream that is not a valid event, and why."""

    @property
    def position(self) -> StreamPosition: ...

    @property
    def reason(self) -> str: ...


class PolledBatch(Protocol):
    """What one poll of an :class:`EventSource` returned: ``events`` with ``partitions``
    parallel to them (``events[i].offset`` is the offset in ``partitions[i]``), the
    messages that did not decode, and per partition touched the offset after its last
    message."""

    @property
    def events(self) -> list[Event]: ...

    @property
    def partitions(self) -> list[int]: ...

    @property
    def undecodable(self) -> Sequence[Poisoned]: ...

    @property
    def next_offsets(self) -> dict[int, int]: ...


class EventSource(Protocol):
    """A consumer group's share of a partitioned event stream (adapter:
    ``adapters.kafka.log.KafkaEventSource``)."""

    async def start(self) -> None:
        """Join the group; wait for the first assignment (``Unavailable`` if it cannot)."""
        ...

    async def stop(self) -> None: ...

    def assignment(self) -> frozenset[int]:
        """The partitions owned now."""
        ...

    def highwaters(self) -> dict[int, int | None]:
        """Per owned partition, the offset after its last message as of the last fetch
        (None before a fetch said)."""
        ...

    async def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> PolledBatch:
        """The next messages of the owned partitions (an empty batch after ``timeout_ms``)."""
        ...

    def seek(self, offsets: Mapping[int, int]) -> None:
        """Fetch from ``offsets`` (partition → next offset) on the next poll."""
        ...

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Tell the group how far each partition is applied (for lag and tools)."""
        ...


SourceFactory = Callable[[PartitionsHook, PartitionsHook], EventSource]
"""Builds the worker's :class:`EventSource` given its ``on_revoked`` and ``on_assigned``
hooks (in that order)."""


class DeadLetterSink(Protocol):
    """Where the worker sends the stream's undecodable messages (Kafka: ``<topic>.dlq``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def dead_letter(self, event: Any, reason: str) -> Any:
        """Keep ``event`` (a poisoned message) with ``reason``."""
        ...


# -- training data -------------------------------------------------------------------------


class ImpressionSource(Protocol):
    """Where a training job reads its window's impressions and who is flagged now."""

    async def get_impressions(self, since: float, until: float) -> list[Impression]: ...

    async def get_reliability(self) -> list[ReliabilityRecord]: ...


class FeedbackSource(Protocol):
    """Where a training job reads the feedback naming its impressions."""

    async def read_feedback_of(self, impression_ids: Sequence[str]) -> dict[str, list[Event]]: ...


class TrainingReader(Protocol):
    """Opens the training data from a training process of its own: pickled to it, so made
    of plain values (adapter: ``adapters.sql.training.SqlTrainingReader``, a database URL)."""

    def reading(self) -> AbstractAsyncContextManager[tuple[ImpressionSource, FeedbackSource]]:
        """The window's impressions and reliability records, and the feedback, open
        until the block ends."""
        ...


# --- History for the console's plots over time (issue 19) ------------------------------


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One sampled figure set of one subject at one time.

    ``kind``: ``algorithm`` (``scope`` a segment, ``subject`` an algorithm),
    ``experiment`` (``scope`` the experiment, ``subject`` ``metric:variant``) or
    ``canary`` (``scope`` the judged version, ``subject`` ``canary`` or ``watch``).
    ``values``: the figures by name (None where there is none); what each kind
    holds is written down in :mod:`recloop.services.history`.
    """

    kind: str
    scope: str
    subject: str
    at: float
    values: dict[str, float | None]


class HistoryStore(Protocol):
    """Sampled figures over time, kept for a bounded time (purged by age)."""

    async def append(self, points: Sequence[HistoryPoint]) -> None:
        """Store ``points`` in one transaction; a point whose (kind, scope, subject, at)
        is held already is left as it is."""
        ...

    async def read(
        self, kind: str, scope: str | None, since: float, limit: int
    ) -> list[HistoryPoint]:
        """``kind``'s points at or after ``since`` (of ``scope`` only unless None), ordered
        by (scope, subject, at); at most ``limit`` of them, the oldest first."""
        ...

    async def purge(self, before: float, limit: int) -> int:
        """Delete the points taken before ``before``, oldest first, whole samples at a
        time: up to the time of the ``limit``-th oldest (its ties included, so a few more
        than ``limit`` may go). How many were deleted."""
        ...
