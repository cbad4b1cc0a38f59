"""``sample_size`` on extreme inputs: an answer or InvalidInput naming the field, never a crash
(schemathesis found POST /experiments/power answering 500 on these)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from recloop.core.errors import InvalidInput
from recloop.core.stats import sample_size

positive = st.floats(min_value=5e-324, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=5e-324, max_value=1.0, exclude_max=True)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"baseline": 5e-324, "mde": 5e-324, "relative": False}, "mde"),  # effect ~1e-162
        (  # the target overflows to infinity
            {"baseline": 5e307, "mde": 7e16, "metric": "continuous", "stddev": 1.0},
            "mde",
        ),
    ],
)
def test_effects_beyond_floating_point_are_refused(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        sample_size(**kwargs)
    assert error.value.field == field


def test_a_huge_effect_needs_one_user() -> None:
    assert sample_size(1.0, 4e161, 0.25, 0.5, relative=False, metric="continuous", stddev=1.0) == 1


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(positive, positive, st.booleans(), unit, unit, st.sampled_from(["binomial", "continuous"]))
@example(0.5, 0.25, False, 1e-10, 0.12186610022424295, "binomial")  # rounding at the bracket
def test_never_crashes(
    baseline: float, mde: float, relative: bool, alpha: float, power: float, metric: str
) -> None:
    try:
        n = sample_size(baseline, mde, alpha, power, relative, metric, stddev=1.0)
    except InvalidInput:
        return
    assert n >= 1
