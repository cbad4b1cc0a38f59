"""Gradual rollout (issue 20, item 3): steps raise coverage at their times without moving
anyone; a guardrail significantly worse halts the rollout and says why."""

from __future__ import annotations

import pytest

from recloop.adapters.memory import InMemoryEventLog, InMemoryStateStore
from recloop.config import ExperimentSettings
from recloop.core.errors import InvalidInput
from recloop.core.experiments import Experiment, Metric, RolloutStep, Variant
from recloop.services.experiments import ExperimentService

CLICKED = Metric("clicked", "binomial", event="click")
SKIPPED = Metric("skipped", "binomial", event="skip", higher_is_better=False)
STEPS = (RolloutStep(10.0, 0.05), RolloutStep(20.0, 0.25), RolloutStep(30.0, 1.0))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def service(clock: Clock) -> ExperimentService:
    experiments = ExperimentService(
        InMemoryStateStore(), InMemoryEventLog(), ExperimentSettings(cuped_days=0.0), clock
    )
    await experiments.start()
    return experiments


def experiment(allocation: float, rollout: tuple[RolloutStep, ...]) -> Experiment:
    return Experiment(
        "ramp",
        "ramp",
        (Variant("control", 0.5), Variant("treatment", 0.5)),
        (CLICKED,),
        traffic_allocation=allocation,
        guardrails=(SKIPPED,),
        rollout=rollout,
    )


async def test_steps_raise_coverage_at_their_times_and_nobody_moves() -> None:
    clock = Clock()
    xs = await service(clock)
    try:
        await xs.create(experiment(0.01, STEPS))
        await xs.transition("ramp", "start")
        users = [f"u{n}" for n in range(3_000)]
        placed: dict[str, str] = {}
        for clock.now, allocation in ((5.0, 0.01), (15.0, 0.05), (35.0, 1.0)):
            for u in users:
                for _, variant in await xs.expose_running(u):
                    assert placed.setdefault(u, variant) == variant  # never moved
            ramp = xs.get("ramp")
            assert ramp.traffic_allocation == allocation
            share = len(placed) / len(users)
            assert allocation * 0.5 < share <= allocation * 1.5 + 0.01
        assert xs.get("ramp").rollout_step == 3  # the last two steps taken together at 35
        assert len(placed) == len(users)
        assert sum(xs.exposures_by_variant("ramp").values()) == len(users)
    finally:
        await xs.stop()


async def test_a_significantly_worse_guardrail_halts_the_rollout_and_says_why() -> None:
    clock = Clock()
    xs = await service(clock)
    try:
        await xs.create(experiment(0.5, (RolloutStep(10.0, 1.0),)))
        await xs.transition("ramp", "start")
        for n in range(600):
            user = f"u{n}"
            for _, variant in await xs.expose_running(user):
                skips = 1 if variant == "treatment" or n % 10 == 0 else 0
                for _ in range(skips):
                    xs.observe(user, "skip", None, timestamp=1.0)
        clock.now = 12.0
        await xs.expose_running("late-user")
        ramp = xs.get("ramp")
        assert ramp.traffic_allocation == 0.5
        assert ramp.rollout_step == 0
        assert ramp.rollout_halted is not None
        assert ramp.rollout_halted.startswith(
            "guardrail skipped is significantly worse in treatment"
        )
        results = await xs.live_results("ramp")
        assert any(w.startswith("rollout halted: guardrail skipped") for w in results["warnings"])
        # A new plan resumes it.
        resumed = await xs.update("ramp", {"rollout": [{"at": 40.0, "traffic_allocation": 0.6}]})
        assert resumed.rollout_halted is None and resumed.rollout_step == 0
    finally:
        await xs.stop()


async def test_a_guardrail_moving_the_good_way_does_not_halt() -> None:
    clock = Clock()
    xs = await service(clock)
    try:
        await xs.create(experiment(0.5, (RolloutStep(10.0, 1.0),)))
        await xs.transition("ramp", "start")
        for n in range(600):
            user = f"u{n}"
            for _, variant in await xs.expose_running(user):
                if variant == "control":
                    xs.observe(user, "skip", None, timestamp=1.0)
        clock.now = 12.0
        await xs.expose_running("late-user")
        assert xs.get("ramp").traffic_allocation == 1.0
        assert xs.get("ramp").rollout_halted is None
    finally:
        await xs.stop()


@pytest.mark.parametrize(
    ("rollout", "field"),
    [
        ((RolloutStep(10.0, 0.5), RolloutStep(5.0, 0.6)), "rollout.1.at"),
        ((RolloutStep(10.0, 0.5), RolloutStep(20.0, 0.3)), "rollout.1.traffic_allocation"),
        ((RolloutStep(10.0, 0.05),), "rollout.0.traffic_allocation"),  # below the start
    ],
)
async def test_a_rollout_that_does_not_only_widen_is_refused(
    rollout: tuple[RolloutStep, ...], field: str
) -> None:
    xs = await service(Clock())
    try:
        with pytest.raises(InvalidInput) as caught:
            await xs.create(experiment(0.1, rollout))
        assert caught.value.field == field
        assert xs.all() == []
    finally:
        await xs.stop()


async def test_a_non_inferior_step_waits_for_the_guardrails_confidence_sequence() -> None:
    """With little data the anytime-valid interval is wide: the step waits (and looks again
    only every rollout_recheck_seconds); with enough equal data it is taken."""
    clock = Clock()
    xs = await service(clock)
    margin = Metric("skipped", "binomial", event="skip", higher_is_better=False, margin=0.1)
    try:
        exp = experiment(0.5, (RolloutStep(10.0, 1.0, non_inferior=True),))
        await xs.create(Experiment(**{**_fields(exp), "guardrails": (margin,)}))
        await xs.transition("ramp", "start")
        for n in range(20):
            await xs.expose_running(f"u{n}")
        clock.now = 12.0
        await xs.expose_running("x")
        assert xs.get("ramp").rollout_step == 0  # too little data: waits
        assert xs.get("ramp").rollout_halted is None
        for n in range(20, 4_000):
            for _, _variant in await xs.expose_running(f"u{n}"):
                if n % 10 == 0:  # the same skip rate in both arms
                    xs.observe(f"u{n}", "skip", None, timestamp=20.0)
        clock.now = 50.0  # within rollout_recheck_seconds (60) of the last look
        await xs.expose_running("y")
        assert xs.get("ramp").rollout_step == 0
        clock.now = 80.0
        await xs.expose_running("z")
        assert xs.get("ramp").rollout_step == 1
        assert xs.get("ramp").traffic_allocation == 1.0
    finally:
        await xs.stop()


def test_a_non_inferior_step_needs_a_guardrail_with_a_margin() -> None:
    from recloop.core.experiments import check_definition

    exp = experiment(0.5, (RolloutStep(10.0, 1.0, non_inferior=True),))
    with pytest.raises(InvalidInput) as caught:
        check_definition(exp)
    assert caught.value.field == "rollout.0.non_inferior"


def _fields(exp: Experiment) -> dict:
    return {name: getattr(exp, name) for name in Experiment.__slots__}
