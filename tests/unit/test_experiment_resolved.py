"""``core.experiments.resolve`` on the read path's usual case: one experiment holds the user."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recloop.core.experiments import Experiment, Variant, resolve

_FIELDS = st.sets(st.sampled_from(["epsilon", "weights", "model_slot"]), max_size=2)
_VALUES = {"epsilon": 0.1, "weights": {"popularity": 1.0}, "model_slot": "b"}


@st.composite
def _candidate(draw: st.DrawFn, n: int) -> tuple[Experiment, str, bool]:
    fields = draw(_FIELDS)
    treatment = Variant("t", 0.5, {f: _VALUES[f] for f in sorted(fields)})
    started = draw(st.one_of(st.none(), st.floats(0.0, 10.0)))
    exp = Experiment(f"e{n}", f"e{n}", (Variant("c", 0.5), treatment), (), started_at=started)
    return exp, draw(st.sampled_from(["c", "t"])), draw(st.booleans())


@given(_candidate(0))
def test_one_experiment_holding_the_user_applies(found: tuple[Experiment, str, bool]) -> None:
    exp, variant, _ = found
    assert resolve([found]) == [(exp, variant, None)]
