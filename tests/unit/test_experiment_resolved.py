"""``services.experiments.resolved`` against ``core.experiments.resolve``, its oracle."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recloop.core import experiments as xp
from recloop.core.experiments import Experiment, Variant
from recloop.services.experiments import resolved

_FIELDS = st.sets(st.sampled_from(["epsilon", "weights", "model_slot"]), max_size=2)
_VALUES = {"epsilon": 0.1, "weights": {"popularity": 1.0}, "model_slot": "b"}


@st.composite
def _candidate(draw: st.DrawFn, n: int) -> tuple[Experiment, str, bool]:
    fields = draw(_FIELDS)
    treatment = Variant("t", 0.5, {f: _VALUES[f] for f in sorted(fields)})
    started = draw(st.one_of(st.none(), st.floats(0.0, 10.0)))
    exp = Experiment(f"e{n}", f"e{n}", (Variant("c", 0.5), treatment), (), started_at=started)
    return exp, draw(st.sampled_from(["c", "t"])), draw(st.booleans())


@st.composite
def _candidates(draw: st.DrawFn) -> list[tuple[Experiment, str, bool]]:
    size = draw(st.integers(0, 4))
    return [draw(_candidate(n)) for n in range(size)]


@given(_candidates())
def test_resolved_answers_as_resolve(found: list[tuple[Experiment, str, bool]]) -> None:
    assert resolved(found) == xp.resolve(found)


@given(_candidate(0))
def test_one_experiment_holding_the_user_applies(found: tuple[Experiment, str, bool]) -> None:
    exp, variant, _ = found
    assert resolved([found]) == [(exp, variant, None)]
