"""Settings: defaults from the spec, an optional YAML file, then ``RECLOOP_*`` environment.

Precedence, highest first: environment variables
(``RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS=1``), the YAML file (and
keyword arguments, which tests use), the defaults below. Unknown keys and
bad values are refused with the key named; the example file
``config/recloop.example.yaml`` documents every key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from recloop.core.errors import ConfigError, InvalidInput
from recloop.core.preferences import LearningRate
from recloop.core.segments import SEGMENTS, SegmentRules
from recloop.core.spam import SpamConfig


class _Section(BaseModel):
    # ser_json_inf_nan: an infinite default (spam.hard_rule_seconds) dumps as itself
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)


class ApiSettings(_Section):
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1)
    """Largest request body accepted (Content-Length, or bytes streamed); larger: 413."""


class LoggingSettings(_Section):
    format: Literal["console", "json"] = "console"
    """``console``: human-readable lines; ``json``: one JSON object per line (production)."""
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """DEBUG also logs one line per HTTP request (method, route, status, duration)."""


Role = Literal["ingest", "read", "admin"]


class ApiKeySettings(_Section):
    """One API key, stored as the SHA-256 of the key (``recloop keys new`` prints both)."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    roles: Annotated[list[Role], Field(min_length=1)]


class AuthSettings(_Section):
    keys: list[ApiKeySettings] = Field(default_factory=list)
    """No keys: authentication is off, and the server only binds to loopback."""

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[ApiKeySettings]) -> list[ApiKeySettings]:
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ValueError(f"key names must be unique, got {names}")
        return keys


class RateLimitSettings(_Section):
    """Limits in the ``limits`` library's notation, several per class separated by ``;``."""

    enabled: bool = True
    explicit: str = "60/minute;1000/day"
    """Per user, explicit events (rating, like, ...)."""
    implicit: str = "600/minute"
    """Per user, implicit events (view, click, ...)."""
    per_key: str = "100000/minute"
    """Per API key (or per client address with auth off), events of any kind."""
    storage: str = "memory://"
    """``memory://`` (in process, numpy arrays) or shared: ``async+redis://host:6379`` (one
    script call per request, on ``limits``' own keys), or any other ``limits`` storage URL
    (a Redis Cluster or Sentinel: one call per hit)."""
    key_prefix: str = "recloop"
    """Prefix of the counters' keys in shared storage."""

    @field_validator("explicit", "implicit", "per_key")
    @classmethod
    def _parses(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '60/minute;1000/day': {exc}") from None
        return value


class StorageSettings(_Section):
    url: str = "sqlite+aiosqlite:///./data/recloop.db"
    """SQLAlchemy async URL; the SQLite file (and its folder) is created on first start."""
    auto_migrate: bool = True
    """Apply Alembic migrations at start-up (``recloop migrate`` does it by hand)."""
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """FULL: an accepted event survives power loss; NORMAL: survives a process crash only."""


class VectorSettings(_Section):
    dim: int = Field(64, ge=2, le=4096)


class FeedbackTypeSettings(_Section):
    """How one feedback type moves a preference vector.

    ``strength`` is signed (its sign is the direction of the update);
    ``multiplier`` scales the learning rate for the type.
    """

    strength: float = Field(ge=-1.0, le=1.0)
    multiplier: float = Field(ge=0.0, le=10.0)


def _default_types() -> dict[str, FeedbackTypeSettings]:
    table = {
        # explicit
        "rating": (1.0, 1.0),  # strength replaced by (r - 3) / 2
        "like": (1.0, 1.0),
        "dislike": (-1.0, 1.0),
        "share": (1.0, 1.2),
        "save": (0.8, 1.0),
        "review": (0.5, 0.8),
        # implicit
        "impression": (0.0, 0.0),  # records what was shown; moves nothing
        "view": (0.1, 0.3),
        "click": (0.3, 0.5),
        "dwell": (1.0, 0.5),  # strength replaced by log1p(s) / log1p(dwell_full_seconds)
        "skip": (-0.3, 0.5),
        "add_to_cart": (0.6, 0.8),
        "purchase": (1.0, 1.0),
    }
    return {k: FeedbackTypeSettings(strength=s, multiplier=m) for k, (s, m) in table.items()}


class FeedbackSettings(_Section):
    # The learning rate's defaults are core.preferences.LearningRate's (0.1, 0.5).
    base_alpha: float = Field(LearningRate().base_alpha, gt=0.0, le=1.0)
    alpha_max: float = Field(LearningRate().alpha_max, gt=0.0, le=1.0)
    implicit_flush_seconds: float = Field(300.0, gt=0.0)
    implicit_max_buffer: int = Field(100_000, ge=1)
    """Buffered implicit events that force a flush before the timer."""
    apply_batch_max: int = Field(20_000, ge=1)
    """Most events one apply round takes (the rest wait for the next round)."""
    max_pending_events: int = Field(200_000, ge=1)
    """Events accepted and not yet applied (or buffered) past which acceptance waits
    instead of memory growing."""
    checkpoint_seconds: float = Field(0.05, ge=0.0, le=60.0)
    """Least time between the starts of two state checkpoints: under a stream of small
    requests, one checkpoint then covers many apply rounds. Reads see applied events at
    once; what waits for a checkpoint is the optimizer's counts, the experiments' sums,
    the distributed workers' snapshots, and how much a restart replays."""
    journal_rows: int = Field(100_000, ge=0)
    """Users' rows the state journal holds before its oldest records are compacted into
    the user table (core.journal); 0: every checkpoint writes its rows in place. The
    journal's users stay in memory until compacted, and a start reads the journal."""
    journal_seconds: float = Field(60.0, gt=0.0)
    """Age past which a journal record is compacted, however small the journal."""
    max_batch_events: int = Field(1_000, ge=1, le=100_000)
    max_future_seconds: float = Field(300.0, ge=0.0)
    dwell_full_seconds: float = Field(300.0, gt=0.0)
    """Dwell of this many seconds counts with full strength (log scale below it)."""
    poison_attempts: int = Field(3, ge=1)
    """Failures of a read for a reason no retry fixes (the data, not the store) after
    which the events it concerns are dead-lettered."""
    types: dict[str, FeedbackTypeSettings] = Field(default_factory=_default_types)

    @field_validator("types")
    @classmethod
    def _types_complete(
        cls, types: dict[str, FeedbackTypeSettings]
    ) -> dict[str, FeedbackTypeSettings]:
        from recloop.core.events import FEEDBACK_TYPES

        unknown = sorted(set(types) - set(FEEDBACK_TYPES))
        if unknown:
            raise ValueError(f"unknown feedback type(s) {unknown}; known: {sorted(FEEDBACK_TYPES)}")
        # A file may tune a few types; the others keep their defaults.
        return {**_default_types(), **types}


DEFAULT_ALGORITHMS = ["collaborative", "content_based", "popularity", "trending"]


class SegmentSettings(_Section):
    # The defaults are core.segments.SegmentRules' (5, 30 days, 100).
    new_max_interactions: int = Field(SegmentRules().new_max_interactions, ge=0)
    """Fewer interactions than this: ``new``."""
    inactive_days: float = Field(SegmentRules().inactive_days, gt=0.0)
    """At least this long since the last event: ``inactive``."""
    power_min_interactions: int = Field(SegmentRules().power_min_interactions, ge=0)
    """More interactions than this: ``power``."""

    @property
    def rules(self) -> SegmentRules:
        """The section as ``core.segments``' rules."""
        return SegmentRules(
            self.new_max_interactions, self.inactive_days, self.power_min_interactions
        )


def _default_segment_weights() -> dict[str, dict[str, float]]:
    return {
        # new users lean to popularity, power users to collaborative filtering,
        # inactive ones to re-engagement (trending), regular ones are balanced
        "new": {"collaborative": 0.10, "content_based": 0.20, "popularity": 0.45, "trending": 0.25},
        "power": {
            "collaborative": 0.50,
            "content_based": 0.25,
            "popularity": 0.10,
            "trending": 0.15,
        },
        "inactive": {
            "collaborative": 0.15,
            "content_based": 0.15,
            "popularity": 0.30,
            "trending": 0.40,
        },
        "regular": {
            "collaborative": 0.25,
            "content_based": 0.25,
            "popularity": 0.25,
            "trending": 0.25,
        },
    }


class BanditSettings(_Section):
    algorithms: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1
    )
    """The recommendation algorithms the orchestrator blends."""
    default_weights: dict[str, dict[str, float]] = Field(default_factory=_default_segment_weights)
    """Per segment, the weights the prior expresses before any data."""
    prior_ctr: float = Field(0.05, gt=0.0, lt=1.0)
    """The prior CTR before a segment has evidence; the empirical-Bayes prior's mean is the
    segment's pooled CTR shrunk towards it by ``prior_strength`` pseudo-impressions (each
    algorithm's prior mean is then scaled by its default weight)."""
    prior_strength: float = Field(200.0, gt=0.0)
    """The most pseudo-impressions a prior is worth (no measurable spread between algorithms)."""
    prior_min_strength: float = Field(20.0, gt=0.0)
    """The fewest pseudo-impressions a prior is worth (algorithms far apart)."""
    bucket_minutes: int = Field(60, ge=1, le=1440)
    window_days: float = Field(7.0, gt=0.0)
    weight_mode: Literal["probability", "sample", "mean"] = "mean"
    """How the posteriors become weights: ``probability``, each algorithm's posterior
    probability of the highest CTR; ``sample``, one posterior draw each, normalised (the
    specification's formula); ``mean``, the posterior means, normalised."""
    draws: int = Field(2000, ge=2000, le=1_000_000)
    """Posterior draws estimating P(best) in ``probability`` mode (at least 2,000)."""
    min_weight: float = Field(0.02, ge=0.0, lt=0.25)
    cache_seconds: float = Field(10.0, ge=0.0)
    """``probability`` and ``mean`` weights are recomputed per segment at most this often."""
    min_impressions: int = Field(1000, ge=1)
    """An algorithm is judged for disabling once its impressions in the window reach this,
    at their effective sample size (inverse-propensity credit weighs what its observations
    do: ``PerformanceCounts.effective_impressions``)."""
    credible_level: float = Field(0.95, gt=0.5, lt=1.0)
    disable_ctr: float = Field(0.005, gt=0.0, lt=1.0)
    cooldown_hours: float = Field(24.0, gt=0.0)
    seed: int | None = None
    """Seed of the weight draws (None: fresh entropy; the seed used is reported)."""

    @property
    def bucket_seconds(self) -> float:
        return self.bucket_minutes * 60.0

    @property
    def window_seconds(self) -> float:
        return self.window_days * 86_400.0

    @property
    def cooldown_seconds(self) -> float:
        return self.cooldown_hours * 3600.0

    @model_validator(mode="after")
    def _weights_cover_algorithms(self) -> BanditSettings:
        for segment in SEGMENTS:
            weights = self.default_weights.get(segment)
            if weights is None:
                raise ValueError(f"default_weights needs segment {segment!r}")
            if set(weights) != set(self.algorithms):
                raise ValueError(
                    f"default_weights.{segment} must give a weight to exactly the algorithms "
                    f"{sorted(self.algorithms)}, got {sorted(weights)}"
                )
            if any(w <= 0 for w in weights.values()):
                raise ValueError(f"default_weights.{segment}: weights must be > 0")
        if self.prior_min_strength > self.prior_strength:
            raise ValueError(
                f"prior_min_strength ({self.prior_min_strength:g}) must not exceed "
                f"prior_strength ({self.prior_strength:g})"
            )
        unknown = sorted(set(self.default_weights) - set(SEGMENTS))
        if unknown:
            raise ValueError(f"default_weights: unknown segment(s) {unknown}")
        return self


def _default_epsilons() -> dict[str, float]:
    return {"new": 0.30, "power": 0.05, "inactive": 0.20, "regular": 0.10}


class ExplorationSettings(_Section):
    epsilon: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=_default_epsilons
    )
    """Per segment, the most a ranking's top slot is explored: the ceiling of a user's ε."""
    evidence_half: float | None = Field(20.0, gt=0.0)
    """A user's ε is ``epsilon[segment] * evidence_half / (evidence_half + interactions)``:
    half the ceiling at this many interactions (None: always the ceiling)."""
    top: int = Field(5, ge=1)
    """An exploring draw promotes one of this many candidates after the greedy one ..."""
    temperature: float | None = Field(0.5, gt=0.0)
    """... by a softmax of their scores over the spread of the top set, at this temperature
    (None: uniformly; with a large ``top`` that is the uniform ε-greedy)."""
    probe: bool = True
    """An exploring draw is a probe: one algorithm drawn with probability equal to its
    weight, its own top pick shown on top, so every algorithm's pick can be shown and its
    click rate learnt without bias (credited as ``credit`` says). False: the softmax draw
    above, every slot credited by share."""
    segment_evidence_half: float | None = Field(20.0, gt=0.0)
    """With ``probe``, a user's ε is also multiplied by ``h / (h + n)``, ``n`` the
    impressions credited per algorithm of the segment in the window (on average, each
    algorithm's at their effective sample size with ``credit: ips``), ``h`` this:
    probes teach the segment's weights, and cost clicks, so there are fewer as the weights
    become known (and more again as the window's evidence ages out). None: not shrunk."""
    credit: Literal["probe", "ips"] = "ips"
    """Which slots credit an algorithm with ``probe`` (without it, every slot by share,
    whatever this says). ``ips``: the top slot every algorithm whose own top pick it shows,
    each with the inverse of the slot's propensity as its weight (``rank``'s
    ``credit_weights``, clipped at ``credit_clip``), on every visit, probed or not: the counts
    learn from every visit, and ``segment_evidence_half`` shrinks ε by that evidence.
    ``probe``: a probed slot its probed algorithm alone, once (``rank``'s ``credit``; the
    other slots none)."""
    credit_clip: float = Field(3.0, ge=1.0)
    """The largest weight one slot credits an algorithm with (``credit: ips``); chosen on the
    closed-loop benchmark's ``world`` (docs/benchmarks.md). Also where the counts are
    credited: a feedback event's ``attribution.credit_weights`` counts each weight at most
    this (a larger one is accepted, and counted as this)."""
    seed: int | None = None
    """Seed of the exploration draws (None: fresh entropy)."""

    @field_validator("epsilon")
    @classmethod
    def _every_segment(cls, epsilon: dict[str, float]) -> dict[str, float]:
        if set(epsilon) != set(SEGMENTS):
            raise ValueError(f"give an epsilon for exactly the segments {list(SEGMENTS)}")
        return epsilon


class RankSettings(_Section):
    fusion: Literal["percentile", "rrf"] = "percentile"
    """How each algorithm's list is calibrated before the weighted sum: ``percentile``, the
    weight times the candidate's rank percentile in its list ((n - rank + 1) / n); ``rrf``,
    weighted reciprocal-rank fusion, weight / (rrf_k + rank)."""
    rrf_k: float = Field(60.0, gt=0.0)
    """Reciprocal-rank fusion constant (``fusion: rrf``): contribution weight / (rrf_k + rank)."""
    affinity_weight: float = Field(0.0, ge=0.0)
    """Weight of cosine(user, item) next to the normalised fusion score (in (0, 1]). 0 by
    default: in the closed loop (docs/benchmarks.md, "Session 13: the affinity term") the
    fixed term cost lift on both worlds; ``affinity_list`` learns a weight for it instead."""
    affinity_list: str | None = Field(None, min_length=1, max_length=64)
    """Fuse the preference affinity as one more algorithm's list under this name (one of
    ``bandit.algorithms``, with its ``default_weights``): every candidate with a vector, ranked
    by cosine(user, item), its weight learnt per segment like any algorithm's (probed with
    ``exploration.probe``), instead of the fixed ``affinity_weight``. None: the fixed weight."""
    max_candidates: int = Field(1000, ge=1, le=100_000)


SPAM_MODEL_KEYS: Final = frozenset(f.name for f in dataclasses.fields(SpamConfig))
"""The keys of ``spam`` that are the detectors' numbers (``core.spam.SpamConfig``)."""
_SPAM_TUPLE_KEYS: Final = frozenset(
    f.name for f in dataclasses.fields(SpamConfig) if isinstance(f.default, tuple)
)


class SpamSettings(_Section):
    """The guard (``services.guard``) and the detectors' numbers.

    The detectors' numbers (thresholds, spans, weights, memory bounds: every field of
    :class:`recloop.core.spam.SpamConfig`, which holds their defaults and checks them)
    are written flat under ``spam`` beside the guard's own keys below; they are held,
    validated, in :attr:`detectors`.
    """

    enabled: bool = True
    judge_every_events: int = Field(20, ge=1)
    """A user is first judged after this many events, then after twice as many each time
    (a long profile changes slowly; judging costs O(profile)) ..."""
    judge_every_seconds: float = Field(300.0, gt=0.0)
    """... and in between at most this often, once ``min_new_events`` have arrived."""
    min_new_events: int = Field(10, ge=1)
    judge_within_seconds: float = Field(60.0, gt=0.0)
    """Every user with new evidence is judged within this long of their last event,
    whatever their event count (a sweep of the users due)."""
    norm_profiles: int = Field(5_000, ge=1)
    """The latest judged rating profiles the population norms are fitted on."""
    rejudge_flagged: int = Field(1_000, ge=0)
    """Flagged users (not by hand) judged again, oldest records first, at most, when the
    norms are refitted."""
    group_profiles: int = Field(5_000, ge=1)
    """The most recently active users with ratings the group detector reads."""
    retraction_every_seconds: float = Field(10.0, gt=0.0)
    """What newly flagged users taught the optimizer is taken back by one read of the log
    for all of them, at most this often (docs/spam.md, "What a flagged user taught")."""
    retraction_users_per_read: int = Field(500, ge=1)
    """At most this many newly flagged users per read; the rest wait for the next one."""
    retraction_clock_slack_seconds: float = Field(3600.0, ge=0.0)
    """How far logging times may go back along the log (a clock stepped back, writers
    committing concurrently): a read starts this much before the users' first events."""
    detectors: SpamConfig = Field(default_factory=SpamConfig)
    """The detectors' numbers, given flat (``spam.rate_max``, not ``spam.detectors.*``)."""

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        """Gather the flat detector keys into ``detectors``."""
        if not isinstance(data, dict):
            return data
        if "detectors" in data:
            raise ValueError(
                "give the detectors' numbers flat under spam (e.g. spam.rate_max), "
                "not under spam.detectors"
            )
        folded = {k: v for k, v in data.items() if k not in SPAM_MODEL_KEYS}
        detectors = {k: v for k, v in data.items() if k in SPAM_MODEL_KEYS}
        for key in _SPAM_TUPLE_KEYS & set(detectors):
            if isinstance(detectors[key], str):  # from the environment: a JSON list
                with contextlib.suppress(ValueError):
                    detectors[key] = json.loads(detectors[key])
        if detectors:
            folded["detectors"] = detectors
        return folded

    @field_validator("detectors", mode="wrap")
    @classmethod
    def _checked(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> SpamConfig:
        try:
            checked: SpamConfig = handler(value)
        except InvalidInput as exc:  # SpamConfig's own checks (block <= suspect, ...)
            raise PydanticCustomError(
                "spam_detectors", "{message}", {"field": exc.field, "message": exc.message}
            ) from None
        return checked

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data.update(data.pop("detectors", {}))
        return data


class ExperimentSettings(_Section):
    cuped_days: float = Field(14.0, ge=0.0)
    """CUPED covariate: each user's same metric in this many days before exposure (0: off)."""
    correction: Literal["holm", "bh"] = "holm"
    """Multiple comparisons across variants and metrics: Holm-Bonferroni or Benjamini-Hochberg."""
    srm_threshold: float = Field(0.001, gt=0.0, lt=1.0)
    """Sample ratio mismatch is flagged below this chi-square p-value."""
    sequential_tuning: float = Field(5000.0, gt=0.0)
    """Sample size the anytime-valid confidence sequences are tightest at."""
    rollout_recheck_seconds: float = Field(60.0, gt=0.0)
    """How often a rollout step waiting for guardrail non-inferiority looks again."""
    pending_scan_max: int = Field(1_000_000, ge=0)
    """Most uncommitted log events one results request reads to count the buffered ones,
    where they are counted by reading the log (not the embedded server, which counts them
    as the processor takes them)."""
    covariate_seconds: float = Field(2.0, gt=0.0)
    """Embedded: how often the CUPED covariates of the users exposed meanwhile are read
    (one read of the log for all of them, instead of one per first exposure)."""


class IngestSettings(_Section):
    group_commit_max_events: int = Field(20_000, ge=1)
    """Most events written to the event log in one transaction."""


class CacheSettings(_Section):
    max_users: int = Field(200_000, ge=1)
    """User states held in memory by the processor (least recently used are evicted)."""
    max_items: int = Field(500_000, ge=1)
    read_ttl_seconds: float = Field(60.0, gt=0.0)
    """Cached read results (preferences) live this long unless invalidated first."""
    shared_url: str | None = None
    """``redis://host:port``: processes invalidate each other's cached reads through
    Redis pub/sub (distributed deployment). Unset: each process caches on its own."""


class ResilienceSettings(_Section):
    """Circuit breakers of the state store (PostgreSQL) and of the rate limits' shared
    storage (Redis); docs/operations.md, "Resilience"."""

    breaker_failures: int = Field(5, ge=1)
    """Failures to reach a dependency, with no success between them, that open its breaker."""
    breaker_window_seconds: float = Field(10.0, gt=0.0)
    """How far back those failures count."""
    breaker_open_seconds: float = Field(5.0, gt=0.0)
    """How long an open breaker refuses calls before it lets one trial call through."""


class LearningSettings(_Section):
    enabled: bool = True
    """Log serving features with impressions, retrain on schedule, serve deployed models."""
    attribution_window_minutes: float = Field(30.0, gt=0.0)
    """A click counts for an impression when it names it and comes within this time."""
    training_days: float = Field(14.0, gt=0.0)
    """Impressions of this many days (up to one attribution window ago) train a model."""
    retrain_schedule: str = "0 3 * * 0"
    """Cron syntax (UTC): weekly by default, Sundays at 03:00."""
    min_new_examples: int = Field(1_000, ge=1)
    """A scheduled retraining is skipped (with the reason) below this many new examples."""
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """The latest share of examples, by time, that validates a candidate."""
    min_auc_gain: float = Field(0.005, ge=0.0)
    max_logloss_increase: float = Field(0.01, ge=0.0)
    auto_deploy: bool = False
    """Deploy a candidate that passed validation to the canary slot automatically."""
    canary_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of users a deployed candidate serves while its canary runs."""
    unproven_canary_share: float = Field(0.2, gt=0.0, le=1.0)
    """An *unproven* candidate (the gate's off-policy half found no evidence that it is no
    worse than the serving policy) serves ``canary_fraction`` times this; 1: no difference."""
    min_canary_impressions: int = Field(2_000, ge=1)
    """Impressions per slot before the canary is judged."""
    rollback_margin: float = Field(0.05, gt=0.0, lt=1.0)
    """Relative CTR loss tolerated: a canary whose green is at worst this much below blue is
    promoted (non-inferior); a promoted model significantly worse than this rolls back."""
    canary_tolerance: float = Field(0.0, ge=0.0, lt=1.0)
    """A canary whose green is credibly worse than blue by more than this relative CTR loss
    is rolled back (0: credibly worse at all)."""
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    """Error rate of the (anytime-valid) canary and watch comparisons."""
    watch_impressions: int = Field(20_000, ge=1)
    """After promotion, the new model is compared with the pre-deployment baseline until
    it has served this many impressions."""
    monitor_seconds: float = Field(30.0, gt=0.0)
    coordinator: bool = True
    """This process retrains on schedule and judges canaries. Distributed: true on
    exactly one API instance (the others serve the slots it decides)."""
    learner: str | None = None
    """``module:attribute`` of a team's own learner; default LightGBM."""
    item_stats_days: float = Field(1.0, gt=0.0)
    """The items' click-rate features count the impressions of this many days."""

    @field_validator("retrain_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r} (e.g. '0 3 * * 0')")
        return value


class ConsoleSettings(_Section):
    history_interval_seconds: float = Field(300.0, ge=0.0)
    """How often the console's plots over time are sampled (algorithms' posteriors,
    running experiments' intervals and power, the canary); 0: never."""
    history_retention_days: float = Field(7.0, gt=0.0)
    """Sampled points older than this are deleted."""
    history_window_hours: float = Field(24.0, gt=0.0)
    """How far back the console's plots over time reach."""

    @property
    def history_retention_seconds(self) -> float:
        return self.history_retention_days * 86_400.0

    @property
    def history_window_seconds(self) -> float:
        return self.history_window_hours * 3600.0

    power_mde: float = Field(0.05, gt=0.0)
    """Relative effect the experiment pages give the power and remaining sample for."""
    power: float = Field(0.8, gt=0.0, lt=1.0)
    """Power goal of the remaining sample."""
    session_hours: float = Field(8.0, gt=0.0)
    """A console sign-in lasts this long."""
    session_secret: str | None = Field(None, min_length=32)
    """Signs the console's session cookies: the same value on every API instance lets a
    session cross instances and restarts. None: derived from the configured API keys
    (changing a key then signs everyone out)."""


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = Field("recloop.events", min_length=1)
    """Events keyed by user_id; dead letters go to ``<topic>.dlq``. The partition count
    bounds the number of busy workers and must not change while users have state."""
    group_id: str = Field("recloop-workers", min_length=1)
    client_id: str = Field("recloop", min_length=1)
    enable_idempotence: bool = True
    """Idempotent producer; needs the broker's InitProducerId (Kafka has it, Tansu not)."""
    linger_ms: int = Field(5, ge=0)
    request_timeout_ms: int = Field(30_000, ge=1)
    """Also bounds a worker's JoinGroup, which waits for the whole rebalance: keep it
    well above the broker's rebalance time (and, as Kafka's clients do, above
    ``session_timeout_ms``)."""
    session_timeout_ms: int = Field(10_000, ge=1)
    heartbeat_interval_ms: int = Field(3_000, ge=1)
    fetch_max_wait_ms: int = Field(100, ge=1)
    """How long a worker's fetch may wait for new messages (Kafka answers at once when
    one arrives; a broker that waits the whole time adds it to every event's latency)."""


class EventLogSettings(_Section):
    kind: Literal["embedded", "kafka"] = "embedded"
    """``embedded``: events in the storage database, applied in the same process.
    ``kafka``: ``recloop serve`` writes to Kafka, ``recloop worker`` applies."""
    kafka: KafkaSettings = KafkaSettings()
    spool_path: str = "./data/spool.db"
    """Where an API instance keeps accepted events while Kafka is unreachable."""
    send_timeout_seconds: float = Field(5.0, gt=0.0)
    """A send to Kafka slower than this spools the batch instead."""
    worker_commit_seconds: float = Field(1.0, gt=0.0)
    """How often a worker commits its Kafka offsets (the state's own positions are
    committed with every state transaction)."""
    refresh_seconds: float = Field(2.0, gt=0.0)
    """How often an API instance reloads what workers change: optimizer counts and
    algorithm status, user reliability."""
    worker_shutdown_seconds: float = Field(30.0, gt=0.0)
    """How long a worker's graceful stop (SIGTERM) may take before it exits anyway; a
    second SIGTERM exits at once. Nothing is lost: what was not committed is fetched
    again by the partitions' next owner."""
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    """Where a worker serves ``/metrics`` (Prometheus) and ``/health/live``; 0: not at all."""
    worker_metrics_host: str = "127.0.0.1"
    """The address it listens on (the metrics need no key: expose them to the scraper only)."""


class PrivacySettings(_Section):
    """Data lifecycle: retention, pseudonymous ids, review text (``docs/privacy.md``)."""

    event_retention_days: float = Field(90.0, gt=0.0)
    """Raw events (the log, or the distributed archive) and dead letters older than this
    are purged; what was learnt from them stays."""
    training_retention_days: float = Field(180.0, gt=0.0)
    """Logged impressions (the training examples: features as served) older than this
    are purged."""
    purge_interval_seconds: float = Field(3600.0, ge=0.0)
    """How often the purge runs (first at start-up); 0: never in this process (e.g. all
    API instances but one in the distributed deployment)."""
    purge_batch: int = Field(1_000, ge=1)
    """Rows deleted per transaction; ingestion gets the database between batches."""
    purge_pause_seconds: float = Field(0.05, ge=0.0)
    """Pause between two purge batches."""
    pseudonymize_user_ids: bool = False
    """Replace user ids at the edge by HMAC-SHA256(id_key, id) before anything is stored."""
    id_key: SecretStr | None = None
    """The pseudonymization key (required when pseudonymize_user_ids is on). Changing it
    with data stored is refused at start-up."""
    keep_review_text: bool = False
    """Keep the text of review events; by default it is dropped once the guard scored it."""

    @model_validator(mode="after")
    def _key_when_pseudonymizing(self) -> PrivacySettings:
        if self.pseudonymize_user_ids and (
            self.id_key is None or not self.id_key.get_secret_value()
        ):
            raise ValueError(
                "privacy.id_key is required when privacy.pseudonymize_user_ids is true "
                "(a secret of at least 16 characters, e.g. from RECLOOP_PRIVACY__ID_KEY)"
            )
        return self  # its length is checked when the container is built (no echo of it)


class Settings(BaseSettings):
    """All of recloop's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RECLOOP_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        ser_json_inf_nan="constants",
    )

    server: ServerSettings = ServerSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    storage: StorageSettings = StorageSettings()
    vectors: VectorSettings = VectorSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    ingest: IngestSettings = IngestSettings()
    cache: CacheSettings = CacheSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    segments: SegmentSettings = SegmentSettings()
    bandit: BanditSettings = BanditSettings()
    exploration: ExplorationSettings = ExplorationSettings()
    rank: RankSettings = RankSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    spam: SpamSettings = SpamSettings()
    event_log: EventLogSettings = EventLogSettings()
    learning: LearningSettings = LearningSettings()
    privacy: PrivacySettings = PrivacySettings()
    console: ConsoleSettings = ConsoleSettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Checks across sections (their errors name both keys)."""
        p = self.privacy
        # The training examples' labels are events: a window past their retention would
        # learn from impressions whose clicks are gone (all negatives).
        if self.learning.enabled and self.learning.training_days > min(
            p.event_retention_days, p.training_retention_days
        ):
            raise ValueError(
                f"learning.training_days ({self.learning.training_days:g}) must not exceed "
                f"privacy.event_retention_days ({p.event_retention_days:g}) nor "
                f"privacy.training_retention_days ({p.training_retention_days:g})"
            )
        if self.experiments.cuped_days > p.event_retention_days:
            raise ValueError(
                f"experiments.cuped_days ({self.experiments.cuped_days:g}) must not exceed "
                f"privacy.event_retention_days ({p.event_retention_days:g})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file: operators override a shipped file.
        return (env_settings, init_settings)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, ``overrides`` and the environment.

    Raises
    ------
    ConfigError
        naming every bad or unknown key, e.g. ``feedback.base_alpha``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} does not exist")
        loaded = _read_yaml(file) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(file)!r} must hold a mapping at the top level")
        data = loaded
    data.update(overrides)
    _refuse_misspelt_environment()
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read_yaml(file: Path) -> Any:
    """The YAML document in ``file``; a :class:`ConfigError` in one line if it is none."""
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 (byte {exc.start})"
    except yaml.YAMLError as exc:
        problem = "not valid YAML"
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            problem += f" at line {mark.line + 1}, column {mark.column + 1}"
        detail = getattr(exc, "problem", None)
        if detail:
            problem += f": {' '.join(str(detail).split())}"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    raise ConfigError(f"invalid configuration: {file}: {problem}")


CLIENT_VARIABLES: Final = frozenset({"RECLOOP_URL", "RECLOOP_API_KEY"})
"""The Python client's variables, not settings of the server."""


def _refuse_misspelt_environment() -> None:
    """Refuse ``RECLOOP_*`` variables that aim at a setting but would be ignored.

    pydantic-settings reads only the variables that match a field, so
    ``RECLOOP_FEEDBACK_BASE_ALPHA`` (one underscore) would silently do nothing.
    Variables that name no section at all (``RECLOOP_REQUIRE_SERVICES``, used
    by the test suite) are left alone, and so are the client's (``recloop-client``
    reads ``RECLOOP_URL`` and ``RECLOOP_API_KEY``: a shell may hold them for both).
    """
    sections = set(Settings.model_fields)
    for name in os.environ:
        if not name.startswith("RECLOOP_") or name in CLIENT_VARIABLES:
            continue
        rest = name[len("RECLOOP_") :].lower()
        section, nested, _ = rest.partition("__")
        if nested and section not in sections:
            raise ConfigError(
                f"unknown config key {section!r} in environment variable {name}; "
                f"sections: {sorted(sections)}"
            )
        for known in sections:
            if not nested and rest.startswith(known + "_"):
                raise ConfigError(
                    f"environment variable {name} is ignored: nested keys take a double "
                    f"underscore, e.g. RECLOOP_{known.upper()}__{rest[len(known) + 1 :].upper()}"
                )


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if p != "detectors")
        if not err["loc"]:  # across sections: the message names the keys (no input echo)
            lines.append(str(err["msg"]).removeprefix("Value error, "))
        elif err["type"] == "spam_detectors":
            lines.append(f"config key {err['ctx']['field']!r}: {err['ctx']['message']}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"unknown config key {key!r}")
        else:
            lines.append(f"config key {key!r}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration: " + "; ".join(lines)
