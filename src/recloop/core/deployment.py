"""Blue-green deployment of click models, as a pure state machine.

``blue`` is the model serving everyone (None: no model yet, the fused
ranking alone); ``green`` is a candidate serving a sticky ``canary_fraction``
of users (:func:`slot_of`). The states and transitions::

    blue only  --deploy(v)-->  blue + green=v  --promote-->  blue=v, watched
                                   |                             |      |
                                   +--rollback--> blue only      |   confirm --> blue=v
                                                                 |
                                   blue=previous  <--rollback----+

Each transition returns the new :class:`Slots` and a :class:`Transition`
record (what, when, from which version to which, why, with the numbers);
the caller stores both in one transaction. Nothing here reads a clock or
storage.

:func:`judge_canary` decides from click counts: green against blue during
the canary, and the promoted model against the blue baseline kept at
promotion (``Slots.baseline_*``) during the watch window that follows. Its
confidence sequence is anytime-valid, so it may be asked after every
impression without inflating its error rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from recloop.core.assignment import gb_hash
from recloop.core.errors import Conflict, InvalidInput
from recloop.core.stats import SampleStats, make_sequential, proportions_test

SlotName = Literal["blue", "green"]
Decision = Literal["wait", "promote", "rollback"]

_HASH_VERSION = 2  # GrowthBook's, 10,000 buckets


@dataclass(frozen=True, slots=True)
class Slots:
    """The deployment's state.

    ``salt`` seeds the canary's user hash (a new one per deployment, so each
    canary lands on different users). ``previous_version`` is what a
    rollback after promotion returns to; ``promoted_at`` is set while the
    promoted model is watched. ``baseline_impressions`` and
    ``baseline_clicks`` are blue's counts during the canary, the baseline of
    that watch.

    >>> Slots.from_dict(Slots(blue_version="m1").to_dict()) == Slots(blue_version="m1")
    True
    """

    blue_version: str | None = None
    green_version: str | None = None
    canary_fraction: float = 0.0
    salt: str = ""
    deployed_at: float | None = None
    promoted_at: float | None = None
    previous_version: str | None = None
    baseline_impressions: int = 0
    baseline_clicks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain values for storage."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Slots:
        """Read :meth:`to_dict`'s output; missing keys take their defaults, unknown ones are
        ignored (a newer writer may have added some)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of the slots; ``action``: ``deploy``, ``promote``, ``rollback``, ``confirm``.

    The audit: ``by`` is who asked (an API key's name, or ``monitor`` for the
    canary's own verdicts; None in records written before it was kept);
    ``forced`` is True for a promotion made by hand without the canary's
    verdict (it needs an explicit ``force``).
    """

    at: float
    action: str
    from_version: str | None
    to_version: str | None
    reason: str = ""
    numbers: dict[str, float] = field(default_factory=dict)
    by: str | None = None
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain values for storage."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transition:
        """Read :meth:`to_dict`'s output; missing keys after ``to_version`` take their
        defaults (records older than the audit's fields), unknown ones are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def slot_of(slots: Slots, user_id: str) -> SlotName:
    """``"green"`` for the sticky ``canary_fraction`` of users while there is a green, else blue.

    A user's bucket is GrowthBook's hash of ``salt`` and ``user_id`` in [0, 1)
    (:func:`~recloop.core.assignment.gb_hash`, 10,000 buckets); below
    ``canary_fraction`` is green. The same user gets the same slot for the
    whole deployment, and raising the fraction only adds users.

    >>> slots = Slots(blue_version="m1", green_version="m2", canary_fraction=0.5, salt="s")
    >>> [slot_of(slots, u) for u in ("alice", "dave", "alice")]
    ['green', 'blue', 'green']
    >>> slot_of(Slots(blue_version="m1"), "alice")
    'blue'
    """
    if slots.green_version is None or slots.canary_fraction <= 0.0 or not user_id:
        return "blue"
    bucket = gb_hash(slots.salt, user_id, _HASH_VERSION)
    return "green" if bucket is not None and bucket < slots.canary_fraction else "blue"


def deploy(
    slots: Slots,
    version: str,
    now: float,
    canary_fraction: float = 0.1,
    reason: str = "",
    numbers: Mapping[str, float] | None = None,
) -> tuple[Slots, Transition]:
    """Put ``version`` in the green slot for ``canary_fraction`` of users.

    Raises
    ------
    Conflict
        if green is taken (promote or roll it back first) or ``version`` is
        already blue.
    InvalidInput
        if ``canary_fraction`` is outside (0, 1].

    >>> slots, t = deploy(Slots(blue_version="m1"), "m2", now=100.0, canary_fraction=0.05)
    >>> slots.green_version, slots.salt, (t.action, t.from_version, t.to_version)
    ('m2', 'canary:m2', ('deploy', 'm1', 'm2'))
    """
    if slots.green_version is not None:
        raise Conflict(
            f"green slot holds {slots.green_version!r}",
            f"cannot deploy {version!r}: the green slot holds {slots.green_version!r}; "
            "promote or roll it back first",
        )
    if version == slots.blue_version:
        raise Conflict("blue", f"cannot deploy {version!r}: it is already blue")
    if not 0.0 < canary_fraction <= 1.0:
        raise InvalidInput("canary_fraction", f"must be in (0, 1], got {canary_fraction}")
    new = replace(
        slots,
        green_version=version,
        canary_fraction=canary_fraction,
        salt=f"canary:{version}",
        deployed_at=now,
    )
    extra = dict(numbers or {})
    return new, Transition(
        now,
        "deploy",
        slots.blue_version,
        version,
        reason or f"canary for {canary_fraction:.1%} of users",
        {"canary_fraction": canary_fraction, **extra},
    )


def promote(
    slots: Slots,
    now: float,
    baseline: tuple[int, int] = (0, 0),
    reason: str = "",
    numbers: Mapping[str, float] | None = None,
    by: str | None = None,
    forced: bool = False,
) -> tuple[Slots, Transition]:
    """Green becomes blue for everyone; the old blue is kept as the rollback target.

    ``baseline`` is blue's (impressions, clicks) during the canary: the
    watch window compares the promoted model against it.

    Raises
    ------
    Conflict
        if there is no green to promote.

    >>> slots, _ = deploy(Slots(blue_version="m1"), "m2", now=100.0)
    >>> slots, t = promote(slots, now=200.0, baseline=(10_000, 500))
    >>> slots.blue_version, slots.green_version, slots.previous_version, slots.promoted_at
    ('m2', None, 'm1', 200.0)
    """
    if slots.green_version is None:
        raise Conflict("no green", "cannot promote: the green slot is empty (deploy a model first)")
    impressions, clicks = baseline
    if not 0 <= clicks <= impressions:
        raise InvalidInput(
            "baseline", f"must be (impressions, clicks <= impressions), got {baseline}"
        )
    new = replace(
        slots,
        blue_version=slots.green_version,
        green_version=None,
        canary_fraction=0.0,
        promoted_at=now,
        previous_version=slots.blue_version,
        baseline_impressions=impressions,
        baseline_clicks=clicks,
    )
    return new, Transition(
        now,
        "promote",
        slots.blue_version,
        slots.green_version,
        reason or "promoted",
        dict(numbers or {}),
        by,
        forced,
    )


def rollback(
    slots: Slots, now: float, reason: str = "", numbers: Mapping[str, float] | None = None
) -> tuple[Slots, Transition]:
    """Undo the last step: drop green if there is one, else return to the version before
    the promotion being watched.

    Raises
    ------
    Conflict
        if there is neither a green nor a watched promotion.

    >>> slots, _ = deploy(Slots(blue_version="m1"), "m2", now=100.0)
    >>> rolled, t = rollback(slots, now=150.0, reason="CTR halved")
    >>> rolled.blue_version, rolled.green_version, (t.from_version, t.to_version)
    ('m1', None, ('m2', 'm1'))
    >>> promoted, _ = promote(slots, now=200.0)
    >>> rollback(promoted, now=300.0)[0].blue_version
    'm1'
    """
    extra = dict(numbers or {})
    if slots.green_version is not None:
        new = replace(slots, green_version=None, canary_fraction=0.0)
        return new, Transition(
            now,
            "rollback",
            slots.green_version,
            slots.blue_version,
            reason or "canary dropped",
            extra,
        )
    if slots.promoted_at is not None:
        new = replace(
            slots,
            blue_version=slots.previous_version,
            previous_version=None,
            promoted_at=None,
            baseline_impressions=0,
            baseline_clicks=0,
        )
        return new, Transition(
            now,
            "rollback",
            slots.blue_version,
            slots.previous_version,
            reason or "promotion undone",
            extra,
        )
    raise Conflict(
        "no green, no promotion watched",
        "nothing to roll back: the green slot is empty and no promotion is being watched",
    )


def confirm(
    slots: Slots, now: float, reason: str = "", numbers: Mapping[str, float] | None = None
) -> tuple[Slots, Transition]:
    """End the watch of a promoted model: it stays, and is no longer rolled back.

    Raises
    ------
    Conflict
        if no promotion is being watched.
    """
    if slots.promoted_at is None:
        raise Conflict("no promotion watched", "cannot confirm: no promotion is being watched")
    new = replace(
        slots, previous_version=None, promoted_at=None, baseline_impressions=0, baseline_clicks=0
    )
    return new, Transition(
        now,
        "confirm",
        slots.blue_version,
        slots.blue_version,
        reason or "watch passed",
        dict(numbers or {}),
    )


# -- The canary's verdict -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    """What to do now, why, and the numbers behind it."""

    decision: Decision
    reason: str
    numbers: dict[str, float]


def judge_canary(
    blue: tuple[int, int],
    green: tuple[int, int],
    min_impressions: int = 1_000,
    margin: float = 0.05,
    alpha: float = 0.05,
    tolerance: float | None = None,
) -> CanaryVerdict:
    """Promote, roll back or wait, from each slot's (impressions, clicks).

    The relative effect ``δ = ctr_green / ctr_blue - 1`` gets an anytime-valid
    ``1 - alpha`` confidence sequence (:func:`~recloop.core.stats.proportions_test`
    made sequential by :func:`~recloop.core.stats.make_sequential`, ``n`` the
    impressions of both slots), and then, ``tolerance`` defaulting to ``margin``::

        upper < -tolerance   rollback   green is credibly worse than blue by more than tolerance
        lower > -margin      promote    green is non-inferior: at worst ``margin`` below blue
        otherwise            wait

    The canary passes ``tolerance=0``: a green credibly worse than blue at all is rolled
    back at once, never promoted as "non-inferior"; the watch after promotion keeps
    ``margin`` (its baseline is older, so it tolerates some drift).

    Either slot below ``min_impressions`` waits, and so does a comparison the
    test cannot make (no clicks at all, a blue CTR of 0). For the watch after
    promotion, ``blue`` is the baseline kept at promotion and ``green`` the
    promoted model since; ``promote`` then means it may be confirmed.

    >>> judge_canary(blue=(20_000, 1_000), green=(20_000, 500)).decision
    'rollback'
    >>> judge_canary(blue=(200_000, 10_000), green=(200_000, 10_000)).decision
    'promote'
    >>> judge_canary(blue=(20_000, 1_000), green=(20_000, 1_000)).decision  # too few to tell
    'wait'
    >>> judge_canary(blue=(20_000, 1_000), green=(500, 5)).decision  # below min_impressions
    'wait'
    """
    if min_impressions < 1:
        raise InvalidInput("min_impressions", f"must be >= 1, got {min_impressions}")
    if not 0.0 <= margin < 1.0:
        raise InvalidInput("margin", f"must be in [0, 1), got {margin}")
    tolerance = margin if tolerance is None else tolerance
    if not 0.0 <= tolerance < 1.0:
        raise InvalidInput("tolerance", f"must be in [0, 1), got {tolerance}")
    control = SampleStats(blue[0], float(blue[1]), float(blue[1]))
    treatment = SampleStats(green[0], float(green[1]), float(green[1]))
    comparison = make_sequential(
        proportions_test(control, treatment, alpha), n=control.n + treatment.n, alpha=alpha
    )
    numbers: dict[str, float] = {
        "blue_impressions": float(control.n),
        "blue_clicks": control.sum,
        "blue_ctr": control.mean,
        "green_impressions": float(treatment.n),
        "green_clicks": treatment.sum,
        "green_ctr": treatment.mean,
        "margin": margin,
        "tolerance": tolerance,
        "alpha": alpha,
    }
    rates = (
        f"green CTR {treatment.mean:.4f} ({treatment.n} impressions) vs "
        f"blue {control.mean:.4f} ({control.n})"
    )
    if min(control.n, treatment.n) < min_impressions:
        return CanaryVerdict(
            "wait", f"{rates}: each slot needs {min_impressions} impressions", numbers
        )
    ci = comparison.ci_relative
    if comparison.relative_effect is None or ci is None:
        why = comparison.reason or "no relative effect"
        return CanaryVerdict("wait", f"{rates}: cannot compare yet ({why})", numbers)
    numbers.update(relative_effect=comparison.relative_effect, ci_low=ci[0], ci_high=ci[1])
    effect = (
        f"{rates}: relative effect {comparison.relative_effect:+.1%}, anytime-valid "
        f"{1 - alpha:.0%} interval [{ci[0]:+.1%}, {ci[1]:+.1%}]"
    )
    if ci[1] < -tolerance:
        return CanaryVerdict(
            "rollback", f"{effect} entirely below -{tolerance:.1%}: worse", numbers
        )
    if ci[0] > -margin:
        return CanaryVerdict(
            "promote", f"{effect} entirely above -{margin:.1%}: non-inferior", numbers
        )
    return CanaryVerdict("wait", f"{effect} contains -{margin:.1%}: not decided yet", numbers)
