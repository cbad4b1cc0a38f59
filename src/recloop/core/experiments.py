"""A/B experiments: definitions, lifecycle, and how one event moves a user's metric.

An experiment has variants (the first is the baseline), a traffic allocation
(coverage), a hashing seed and version (GrowthBook-compatible, see
``core.assignment``) and metrics:

- ``binomial``: y = 1 if the exposed user had at least one ``event`` after exposure;
- ``continuous``: y = the sum of the ``event``'s values (``aggregate: sum``) or
  their number (``aggregate: count``) after exposure, 0 when none;
- ``ratio``: per user, numerator = number of ``numerator`` events and
  denominator = number of ``denominator`` events after exposure (e.g. CTR =
  clicks / impressions); the metric is Σnumerator / Σdenominator per variant.

Each exposed user holds one :class:`UserMetric` per metric; the variant's
sufficient statistics (``core.stats.PairStats``) are updated by the change of
the user's values, so they stay exact sums over users.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from recloop.core.algorithms import check_algorithm
from recloop.core.errors import Conflict, InvalidInput
from recloop.core.events import FEEDBACK_TYPES
from recloop.core.stats import PairStats

Status = Literal["draft", "running", "stopped"]
MetricType = Literal["binomial", "continuous", "ratio"]

# Fields that decide who gets which variant: changing them while running
# would move users between variants.
RESHUFFLING_FIELDS = ("seed", "hash_version", "variants", "namespace")


@dataclass(frozen=True, slots=True)
class Namespace:
    """A GrowthBook namespace range: users hashed into ``[start, end)`` of ``name``
    (``core.assignment.in_namespace``). Experiments of one namespace with disjoint
    ranges never share a user."""

    name: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    weight: float
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    type: MetricType
    event: str | None = None
    aggregate: Literal["sum", "count"] = "count"
    numerator: str | None = None
    denominator: str | None = None
    higher_is_better: bool = True
    """Which way is worse, for a guardrail: a significant move the other way halts a rollout."""
    margin: float | None = None
    """For a guardrail: the non-inferiority margin (absolute, in the metric's units) a
    rollout step with ``non_inferior`` waits for."""

    def events(self) -> tuple[str, ...]:
        """The feedback types this metric listens to."""
        if self.type == "ratio":
            return tuple(t for t in (self.numerator, self.denominator) if t is not None)
        return () if self.event is None else (self.event,)


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """At ``at`` (epoch seconds), raise ``traffic_allocation`` (GrowthBook's coverage) to
    ``traffic_allocation``, if the guardrails allow."""

    at: float
    traffic_allocation: float
    non_inferior: bool = False
    """Also wait until every guardrail with a margin is non-inferior (:func:`non_inferior`)."""


@dataclass(frozen=True, slots=True)
class Experiment:
    experiment_id: str
    name: str
    variants: tuple[Variant, ...]
    metrics: tuple[Metric, ...]
    traffic_allocation: float = 1.0
    seed: str = ""
    hash_version: int = 2
    guardrails: tuple[Metric, ...] = ()
    alpha: float = 0.05
    sequential: bool = False
    hypothesis: str | None = None
    namespace: Namespace | None = None
    rollout: tuple[RolloutStep, ...] = ()
    rollout_step: int = 0
    """How many of ``rollout``'s steps were taken."""
    rollout_halted: str | None = None
    """Why the rollout stopped (a guardrail significantly worse); None while it goes on."""
    status: Status = "draft"
    created_at: float = 0.0
    started_at: float | None = None
    stopped_at: float | None = None

    @property
    def all_metrics(self) -> tuple[Metric, ...]:
        return self.metrics + self.guardrails

    def weights(self) -> list[float]:
        return [v.weight for v in self.variants]


def check_definition(exp: Experiment) -> None:
    """Refuse an experiment that cannot run, naming the field.

    >>> bad = Experiment("e", "e", (Variant("a", 0.5),), ())
    >>> check_definition(bad)
    Traceback (most recent call last):
    ...
    recloop.core.errors.InvalidInput: variants: an experiment needs at least 2 variants
    """
    if len(exp.variants) < 2:
        raise InvalidInput("variants", "an experiment needs at least 2 variants")
    keys = [v.key for v in exp.variants]
    if len(set(keys)) != len(keys):
        raise InvalidInput("variants", f"variant keys must be unique, got {keys}")
    for i, v in enumerate(exp.variants):
        if not v.weight > 0:
            raise InvalidInput(f"variants.{i}.weight", f"must be > 0, got {v.weight}")
    total = sum(exp.weights())
    if abs(total - 1.0) > 1e-6:
        raise InvalidInput("variants", f"weights must sum to 1, got {total:.6g}")
    if not 0.0 <= exp.traffic_allocation <= 1.0:
        raise InvalidInput("traffic_allocation", "must be between 0 and 1")
    ns = exp.namespace
    if ns is not None:
        if not ns.name:
            raise InvalidInput("namespace.name", "must not be empty")
        if not 0.0 <= ns.start < ns.end <= 1.0:
            raise InvalidInput(
                "namespace.range",
                f"must be [start, end) with 0 <= start < end <= 1, got [{ns.start:g}, {ns.end:g}]",
            )
    previous_at, previous = -math.inf, exp.traffic_allocation
    for i, step in enumerate(exp.rollout[exp.rollout_step :], start=exp.rollout_step):
        if not step.at > previous_at:
            raise InvalidInput(f"rollout.{i}.at", "steps must be in increasing time")
        if not previous <= step.traffic_allocation <= 1.0:
            raise InvalidInput(
                f"rollout.{i}.traffic_allocation",
                f"must be between the allocation before it ({previous:g}) and 1: a rollout "
                f"only widens, got {step.traffic_allocation:g}",
            )
        previous_at, previous = step.at, step.traffic_allocation
        if step.non_inferior and not any(g.margin is not None for g in exp.guardrails):
            raise InvalidInput(f"rollout.{i}.non_inferior", "needs a guardrail with a margin")
    for i, g in enumerate(exp.guardrails):
        if g.margin is not None and not (math.isfinite(g.margin) and g.margin > 0):
            raise InvalidInput(f"guardrails.{i}.margin", f"must be finite and > 0, got {g.margin}")
    if exp.hash_version not in (1, 2):
        raise InvalidInput("hash_version", "must be 1 or 2")
    if not 0.0 < exp.alpha < 1.0:
        raise InvalidInput("alpha", "must be between 0 and 1")
    if not exp.metrics:
        raise InvalidInput("metrics", "an experiment needs at least one metric")
    names = [m.name for m in exp.all_metrics]
    if len(set(names)) != len(names):
        raise InvalidInput("metrics", f"metric names must be unique, got {names}")
    for group, metrics in (("metrics", exp.metrics), ("guardrails", exp.guardrails)):
        for i, m in enumerate(metrics):
            _check_metric(m, f"{group}.{i}")


def _check_metric(m: Metric, where: str) -> None:
    if m.type == "ratio":
        for side in ("numerator", "denominator"):
            value = getattr(m, side)
            if value not in FEEDBACK_TYPES:
                raise InvalidInput(f"{where}.{side}", f"must be a feedback type, got {value!r}")
    elif m.event not in FEEDBACK_TYPES:
        raise InvalidInput(f"{where}.event", f"must be a feedback type, got {m.event!r}")


def due_step(exp: Experiment, now: float) -> RolloutStep | None:
    """The rollout step to take now, if any: the latest one due (steps missed while nobody
    asked are taken together), none once halted or when the experiment is not running.

    >>> exp = Experiment("e", "e", (), (), traffic_allocation=0.01, status="running",
    ...                  rollout=(RolloutStep(10.0, 0.05), RolloutStep(20.0, 0.25)))
    >>> due_step(exp, 5.0), due_step(exp, 25.0)
    (None, RolloutStep(at=20.0, traffic_allocation=0.25, non_inferior=False))
    """
    if exp.status != "running" or exp.rollout_halted is not None:
        return None
    due = [s for s in exp.rollout[exp.rollout_step :] if s.at <= now]
    return due[-1] if due else None


def gated(exp: Experiment, step: RolloutStep) -> bool:
    """Whether taking the steps up to ``step`` waits for non-inferiority."""
    upto = exp.rollout.index(step) + 1
    return any(s.non_inferior for s in exp.rollout[exp.rollout_step : upto])


def non_inferior(metric: Metric, ci_absolute: Sequence[float] | None) -> bool:
    """Whether a variant is non-inferior on ``metric``: its confidence interval (an
    anytime-valid sequence, so it can be checked at every request) for the effect on the
    metric excludes a worsening by ``metric.margin`` or more. No interval (too little
    data): not yet.

    >>> g = Metric("latency", "continuous", event="dwell", higher_is_better=False, margin=5.0)
    >>> non_inferior(g, [-1.0, 4.0]), non_inferior(g, [-1.0, 6.0]), non_inferior(g, None)
    (True, False, False)
    """
    if ci_absolute is None or metric.margin is None:
        return False
    low, high = ci_absolute
    return low > -metric.margin if metric.higher_is_better else high < metric.margin


def worse_guardrails(exp: Experiment, metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why each guardrail is significantly worse in some variant (``metrics`` as results
    report them: comparisons with ``significant`` after the multiple-comparison correction).

    >>> g = Metric("errors", "binomial", event="skip", higher_is_better=False)
    >>> exp = Experiment("e", "e", (), (), guardrails=(g,))
    >>> worse_guardrails(exp, [{"name": "errors", "comparisons": [{"variant": "t",
    ...     "significant": True, "absolute_effect": 0.02, "p_value_adjusted": 0.001}]}])
    ['guardrail errors is significantly worse in t: effect +0.02 (adjusted p = 0.001)']
    """
    guardrails = {m.name: m for m in exp.guardrails}
    reasons = []
    for shown in metrics:
        metric = guardrails.get(shown["name"])
        if metric is None:
            continue
        for c in shown["comparisons"]:
            effect = c.get("absolute_effect")
            if not c.get("significant") or effect is None:
                continue
            if (effect < 0) == metric.higher_is_better:
                reasons.append(
                    f"guardrail {metric.name} is significantly worse in {c['variant']}: "
                    f"effect {effect:+.4g} (adjusted p = {c['p_value_adjusted']:.3g})"
                )
    return reasons


def check_update(current: Experiment, changes: Mapping[str, Any]) -> None:
    """Refuse changes that would reshuffle users of a running (or stopped) experiment."""
    if current.status == "draft":
        return
    for name in RESHUFFLING_FIELDS:
        if name in changes:
            raise Conflict(
                current.status,
                f"cannot change {name} of experiment {current.experiment_id!r}: it is "
                f"{current.status}, and a change would move users",
            )


def transition(current: Status, action: Literal["start", "stop"]) -> Status:
    """The lifecycle draft → running → stopped.

    >>> transition("draft", "start"), transition("running", "stop")
    ('running', 'stopped')
    """
    if action == "start" and current == "draft":
        return "running"
    if action == "stop" and current == "running":
        return "stopped"
    raise Conflict(current, f"cannot {action} an experiment that is {current}")


@dataclass(frozen=True, slots=True)
class UserMetric:
    """One exposed user's values for one metric.

    ``y`` is the metric (or the numerator of a ratio), ``x`` the covariate: the
    user's same metric before exposure (CUPED), or the ratio's denominator.
    """

    y: float = 0.0
    x: float = 0.0


def observe(
    metric: Metric, current: UserMetric, event_type: str, value: float | None
) -> UserMetric:
    """The user's values after one more event after exposure.

    >>> clicks = Metric("ctr", "ratio", numerator="click", denominator="impression")
    >>> observe(clicks, UserMetric(), "impression", None)
    UserMetric(y=0.0, x=1.0)
    >>> buy = Metric("bought", "binomial", event="purchase")
    >>> observe(buy, observe(buy, UserMetric(), "purchase", None), "purchase", None)
    UserMetric(y=1.0, x=0.0)
    """
    if metric.type == "ratio":
        y = current.y + (1.0 if event_type == metric.numerator else 0.0)
        x = current.x + (1.0 if event_type == metric.denominator else 0.0)
        return UserMetric(y, x)
    if event_type != metric.event:
        return current
    if metric.type == "binomial":
        return UserMetric(1.0, current.x)
    step = (value or 0.0) if metric.aggregate == "sum" else 1.0
    return UserMetric(current.y + step, current.x)


def pre_period_value(metric: Metric, events: Sequence[tuple[str, float | None]]) -> float:
    """The CUPED covariate: the metric computed on the user's events before exposure.

    Ratio metrics have none (their ``x`` is the denominator): 0.

    >>> pre_period_value(Metric("spend", "continuous", event="purchase", aggregate="count"),
    ...                  [("purchase", None), ("click", None), ("purchase", None)])
    2.0
    """
    if metric.type == "ratio":
        return 0.0
    value = UserMetric()
    for event_type, event_value in events:
        value = observe(metric, value, event_type, event_value)
    return value.y


def to_dict(exp: Experiment) -> dict[str, Any]:
    """A JSON-ready mapping of ``exp`` (its storage and API form)."""
    return {
        "experiment_id": exp.experiment_id,
        "name": exp.name,
        "hypothesis": exp.hypothesis,
        "variants": [
            {"key": v.key, "weight": v.weight, "config": dict(v.config)} for v in exp.variants
        ],
        "traffic_allocation": exp.traffic_allocation,
        "rollout": [
            {"at": s.at, "traffic_allocation": s.traffic_allocation, "non_inferior": s.non_inferior}
            for s in exp.rollout
        ],
        "rollout_step": exp.rollout_step,
        "rollout_halted": exp.rollout_halted,
        "namespace": None
        if exp.namespace is None
        else {"name": exp.namespace.name, "range": [exp.namespace.start, exp.namespace.end]},
        "seed": exp.seed,
        "hash_version": exp.hash_version,
        "metrics": [_metric_dict(m) for m in exp.metrics],
        "guardrails": [_metric_dict(m) for m in exp.guardrails],
        "alpha": exp.alpha,
        "sequential": exp.sequential,
        "status": exp.status,
        "created_at": exp.created_at,
        "started_at": exp.started_at,
        "stopped_at": exp.stopped_at,
    }


def _metric_dict(m: Metric) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.name, "type": m.type}
    if m.type == "ratio":
        out.update(numerator=m.numerator, denominator=m.denominator)
    else:
        out["event"] = m.event
        if m.type == "continuous":
            out["aggregate"] = m.aggregate
    if not m.higher_is_better:
        out["higher_is_better"] = False
    if m.margin is not None:
        out["margin"] = m.margin
    return out


def metric_from_dict(data: Mapping[str, Any]) -> Metric:
    return Metric(
        higher_is_better=bool(data.get("higher_is_better", True)),
        margin=None if data.get("margin") is None else float(data["margin"]),
        name=data["name"],
        type=data["type"],
        event=data.get("event"),
        aggregate=data.get("aggregate", "count"),
        numerator=data.get("numerator"),
        denominator=data.get("denominator"),
    )


def from_dict(data: Mapping[str, Any]) -> Experiment:
    """The inverse of :func:`to_dict`."""
    return Experiment(
        experiment_id=data["experiment_id"],
        name=data["name"],
        hypothesis=data.get("hypothesis"),
        variants=tuple(
            Variant(v["key"], float(v["weight"]), v.get("config") or {}) for v in data["variants"]
        ),
        traffic_allocation=float(data.get("traffic_allocation", 1.0)),
        namespace=_namespace(data.get("namespace")),
        rollout=tuple(
            RolloutStep(float(s["at"]), float(s["traffic_allocation"]), bool(s.get("non_inferior")))
            for s in data.get("rollout") or ()
        ),
        rollout_step=int(data.get("rollout_step", 0)),
        rollout_halted=data.get("rollout_halted"),
        seed=data.get("seed") or data["experiment_id"],
        hash_version=int(data.get("hash_version", 2)),
        metrics=tuple(metric_from_dict(m) for m in data["metrics"]),
        guardrails=tuple(metric_from_dict(m) for m in data.get("guardrails") or ()),
        alpha=float(data.get("alpha", 0.05)),
        sequential=bool(data.get("sequential", False)),
        status=data.get("status", "draft"),
        created_at=float(data.get("created_at", 0.0)),
        started_at=data.get("started_at"),
        stopped_at=data.get("stopped_at"),
    )


WeightMode = Literal["override_all", "override_some"]
WEIGHT_MODES: tuple[WeightMode, ...] = ("override_all", "override_some")
OVERRIDE_FIELDS = ("weights", "epsilon", "model_slot")
"""What a variant's ``config`` may override in its users' strategy."""


def check_overrides(exp: Experiment, algorithms: Collection[str]) -> None:
    """Refuse variant overrides without an exact meaning, naming the field.

    ``weights`` name configured algorithms only, each finite and >= 0 (0 switches the
    algorithm off for the variant); with ``mode`` ``override_all`` (the default) at
    least one is > 0, with ``override_some`` they sum to at most 1 (they are shares, the
    rest is left to the segment's weights). ``epsilon`` is in [0, 1] (0: no exploration);
    ``model_slot`` is ``blue`` or ``green``.

    >>> v = Variant("t", .5, {"weights": {"deep": 1.0}})
    >>> check_overrides(Experiment("e", "e", (Variant("c", .5), v), ()), ["als"])
    Traceback (most recent call last):
    ...
    recloop.core.errors.InvalidInput: variants.1.config.weights.deep: unknown algorithm 'deep'; \
known: ['als']
    """
    for i, variant in enumerate(exp.variants):
        config = variant.config
        where = f"variants.{i}.config"
        for name in config:
            if name not in (*OVERRIDE_FIELDS, "mode"):
                raise InvalidInput(f"{where}.{name}", f"not an override: {sorted(OVERRIDE_FIELDS)}")
        mode = config.get("mode", "override_all")
        if mode not in WEIGHT_MODES:
            raise InvalidInput(
                f"{where}.mode", f"must be one of {list(WEIGHT_MODES)}, got {mode!r}"
            )
        weights = config.get("weights")
        if weights is None:
            if "mode" in config:
                raise InvalidInput(f"{where}.mode", "applies to weights, and none are given")
        else:
            _check_weights(weights, mode, algorithms, f"{where}.weights")
        epsilon = config.get("epsilon")
        if epsilon is not None and not (
            isinstance(epsilon, int | float) and 0.0 <= float(epsilon) <= 1.0
        ):
            raise InvalidInput(f"{where}.epsilon", f"must be between 0 and 1, got {epsilon!r}")
        slot = config.get("model_slot")
        if slot is not None and slot not in ("blue", "green"):
            raise InvalidInput(f"{where}.model_slot", f"must be 'blue' or 'green', got {slot!r}")


def _check_weights(
    weights: Mapping[str, Any], mode: str, algorithms: Collection[str], where: str
) -> None:
    if not weights:
        raise InvalidInput(where, "must name at least one algorithm")
    for name, weight in weights.items():
        check_algorithm(f"{where}.{name}", name, algorithms)
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
            raise InvalidInput(f"{where}.{name}", f"must be finite and >= 0, got {weight!r}")
    total = sum(weights.values())
    if mode == "override_all" and total <= 0:
        raise InvalidInput(where, "at least one weight must be > 0 (they are renormalised)")
    if mode == "override_some" and total > 1.0 + 1e-9:
        raise InvalidInput(
            where, f"override_some weights are shares and must sum to at most 1, got {total:.6g}"
        )


def complete_weights(exp: Experiment, algorithms: Sequence[str]) -> Experiment:
    """``exp`` with every ``override_all`` variant's weights naming every configured
    algorithm, the omitted ones at 0 (what they mean), so the definition reads as applied.

    >>> v = Variant("t", .5, {"weights": {"als": 2.0}})
    >>> complete_weights(Experiment("e", "e", (Variant("c", .5), v), ()), ["als", "pop"]
    ...                  ).variants[1].config
    {'weights': {'als': 2.0, 'pop': 0.0}}
    """
    variants = []
    for v in exp.variants:
        weights = v.config.get("weights")
        if weights is not None and v.config.get("mode", "override_all") == "override_all":
            full = {**weights, **{a: 0.0 for a in algorithms if a not in weights}}
            v = Variant(v.key, v.weight, {**v.config, "weights": full})
        variants.append(v)
    return replace(exp, variants=tuple(variants))


def _namespace(data: Mapping[str, Any] | None) -> Namespace | None:
    if data is None:
        return None
    start, end = data["range"]
    return Namespace(str(data["name"]), float(start), float(end))


def claimed_fields(exp: Experiment) -> frozenset[str]:
    """The strategy fields ``exp`` overrides in any of its variants: it owns them for
    every user it holds (its control included, whose value is the user's own).

    >>> claimed_fields(Experiment("e", "e", (Variant("c", .5), Variant("t", .5,
    ...     {"epsilon": 0.0})), ()))
    frozenset({'epsilon'})
    """
    return frozenset(n for v in exp.variants for n in OVERRIDE_FIELDS if n in v.config)


def may_share_users(a: Experiment, b: Experiment) -> bool:
    """Whether a user can be in both: always, unless both take disjoint ranges of one
    namespace (different namespaces hash users independently).

    >>> left = Experiment("l", "l", (), (), namespace=Namespace("ns", 0.0, 0.5))
    >>> right = Experiment("r", "r", (), (), namespace=Namespace("ns", 0.5, 1.0))
    >>> may_share_users(left, right), may_share_users(left, Experiment("x", "x", (), ()))
    (False, True)
    """
    if a.namespace is None or b.namespace is None or a.namespace.name != b.namespace.name:
        return True
    return a.namespace.start < b.namespace.end and b.namespace.start < a.namespace.end


def check_collisions(exp: Experiment, running: Sequence[Experiment]) -> None:
    """Refuse to start ``exp`` if it overrides a strategy field that a running experiment
    which may share its users overrides too, naming both.

    Raises
    ------
    Conflict
        naming the running experiment and the fields.
    """
    mine = claimed_fields(exp)
    for other in running:
        if other.experiment_id == exp.experiment_id or not may_share_users(exp, other):
            continue
        both = sorted(mine & claimed_fields(other))
        if both:
            where = (
                "no namespace"
                if other.namespace is None
                else (
                    f"namespace {other.namespace.name!r} "
                    f"[{other.namespace.start:g}, {other.namespace.end:g})"
                )
            )
            raise Conflict(
                f"running experiment {other.experiment_id!r}",
                f"overrides {both} collide with running experiment {other.experiment_id!r} "
                f"({where}), which may hold the same users: give both disjoint ranges of one "
                "namespace, or stop it first",
            )


def precedence(exp: Experiment, counted: bool) -> tuple[int, float, str]:
    """The order in which a user's running experiments claim strategy fields, first
    wins: an experiment already counting the user, then the earliest started, then by id.

    Keeping an already counted user in the experiment that counts them means a later
    change elsewhere (a coverage raise, a new start) never moves a counted user's
    strategy from under its statistics.
    """
    started = exp.started_at if exp.started_at is not None else exp.created_at
    return (0 if counted else 1, started, exp.experiment_id)


def resolve(
    candidates: Sequence[tuple[Experiment, str, bool]],
) -> list[tuple[Experiment, str, str | None]]:
    """Which of a user's running experiments apply: ``(experiment, variant, counted)`` in,
    ``(experiment, variant, overridden_by)`` out, in :func:`precedence` order.

    An experiment whose claimed fields meet those of one before it loses for this user:
    ``overridden_by`` names the winner, its variant's config is not applied and its
    results count the user as not exposed.

    >>> w = Experiment("w", "w", (Variant("c", .5), Variant("t", .5, {"epsilon": 0.})), (),
    ...                started_at=1.0)
    >>> l = Experiment("l", "l", (Variant("c", .5), Variant("t", .5, {"epsilon": .5})), (),
    ...                started_at=2.0)
    >>> [(e.experiment_id, by) for e, _, by in resolve([(l, "c", False), (w, "t", False)])]
    [('w', None), ('l', 'w')]
    """
    if len(candidates) == 1:  # the read path's usual case: nothing contests it
        exp, variant, _ = candidates[0]
        return [(exp, variant, None)]
    ordered = sorted(candidates, key=lambda c: precedence(c[0], c[2]))
    owner: dict[str, str] = {}
    out: list[tuple[Experiment, str, str | None]] = []
    for exp, variant, _ in ordered:
        fields = claimed_fields(exp)
        taken = sorted(f for f in fields if f in owner)
        if taken:
            out.append((exp, variant, owner[taken[0]]))
            continue
        for f in fields:
            owner[f] = exp.experiment_id
        out.append((exp, variant, None))
    return out


@dataclass(frozen=True, slots=True)
class Overrides:
    """What a user's running experiments change in the strategy recloop tells the orchestrator.

    ``weights`` as the variant gives them (see :func:`strategy_weights` for what they
    become), ``mode`` how they combine with the segment's weights.
    """

    weights: dict[str, float] | None = None
    epsilon: float | None = None
    model_slot: str | None = None
    mode: WeightMode = "override_all"


def overrides(assigned: Sequence[tuple[Experiment, str]]) -> Overrides:
    """The variants' ``config`` overrides, the earliest-created experiment winning each field
    (``assigned`` is what :func:`resolve` let apply, so no two claim one field, except
    experiments that predate the rule).

    >>> a = Experiment("a", "a", (Variant("c", .5), Variant("t", .5, {"epsilon": 0.0})), (),
    ...                created_at=1.0)
    >>> b = Experiment("b", "b", (Variant("c", .5), Variant("t", .5,
    ...                {"epsilon": 0.5, "weights": {"x": 2.0, "y": 2.0}})), (), created_at=2.0)
    >>> overrides([(b, "t"), (a, "t")])
    Overrides(weights={'x': 2.0, 'y': 2.0}, epsilon=0.0, model_slot=None, mode='override_all')
    """
    found: dict[str, Any] = {}
    for exp, variant in sorted(assigned, key=lambda a: a[0].created_at):
        config = next(v.config for v in exp.variants if v.key == variant)
        for name in OVERRIDE_FIELDS:
            if name in config and name not in found:
                found[name] = config[name]
                if name == "weights":
                    found["mode"] = config.get("mode", "override_all")
    weights = found.get("weights")
    epsilon = found.get("epsilon")
    slot = found.get("model_slot")
    return Overrides(
        None if weights is None else {k: float(w) for k, w in weights.items()},
        None if epsilon is None else float(epsilon),
        None if slot is None else str(slot),
        found.get("mode", "override_all"),
    )


def strategy_weights(changed: Overrides, segment: Mapping[str, float]) -> dict[str, float]:
    """The algorithm weights a user gets: the segment's, or a variant's override, summing to 1.

    ``override_all``: the variant's weights renormalised; every algorithm it omits,
    and every one of the segment's, gets 0 (``rank`` gives an algorithm absent from
    the weights the mean weight, so each is named). ``override_some``: the named
    algorithms get exactly their weights (shares summing to at most 1); the others
    share the rest in proportion to their segment weights. If those are all 0 (or
    there are none), the named weights are renormalised to sum to 1; if they are 0
    too, nothing is left to weigh and the segment's weights apply.

    >>> seg = {"a": 0.5, "b": 0.3, "c": 0.2}
    >>> strategy_weights(Overrides({"a": 2.0, "b": 2.0}), seg)
    {'a': 0.5, 'b': 0.5, 'c': 0.0}
    >>> some = strategy_weights(Overrides({"a": 0.7}, mode="override_some"), seg)
    >>> {k: round(w, 6) for k, w in some.items()}
    {'a': 0.7, 'b': 0.18, 'c': 0.12}
    >>> strategy_weights(Overrides(), seg) == seg
    True
    """
    given = changed.weights
    if given is None:
        return dict(segment)
    if changed.mode == "override_some":
        rest = {a: w for a, w in segment.items() if a not in given}
        rest_total = sum(rest.values())
        named_total = sum(given.values())
        if rest_total > 0:
            left = max(0.0, 1.0 - named_total)
            return {**given, **{a: left * (w / rest_total) for a, w in rest.items()}}
        if named_total > 0:
            return {**{a: w / named_total for a, w in given.items()}, **dict.fromkeys(rest, 0.0)}
        return {**dict.fromkeys(given, 0.0), **segment}
    total = sum(given.values())
    out = {a: w / total for a, w in given.items()}
    return {**out, **{a: 0.0 for a in segment if a not in out}}


def stats_delta(old: UserMetric | None, new: UserMetric) -> PairStats:
    """How a variant's sums move when one user's values go from ``old`` (None: the user was
    just exposed) to ``new``.

    >>> stats_delta(None, UserMetric(y=0.0, x=2.0))
    PairStats(n=1, sum_x=2.0, sum_x2=4.0, sum_y=0.0, sum_y2=0.0, sum_xy=0.0)
    >>> stats_delta(UserMetric(1.0, 2.0), UserMetric(3.0, 2.0))
    PairStats(n=0, sum_x=0.0, sum_x2=0.0, sum_y=2.0, sum_y2=8.0, sum_xy=4.0)
    """
    if old is None:
        return PairStats(1, new.x, new.x**2, new.y, new.y**2, new.x * new.y)
    return PairStats(
        0,
        new.x - old.x,
        new.x**2 - old.x**2,
        new.y - old.y,
        new.y**2 - old.y**2,
        new.x * new.y - old.x * old.y,
    )
