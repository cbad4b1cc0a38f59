"""``power_at`` against statsmodels' ``NormalIndPower`` and against ``sample_size``."""

from __future__ import annotations

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from recloop.core.errors import InvalidInput
from recloop.core.stats import power_at, sample_size


@pytest.mark.parametrize("n", [10, 500, 3000, 20_000])
@pytest.mark.parametrize(("baseline", "mde"), [(0.1, 0.1), (0.02, 0.25), (0.5, -0.05)])
def test_binomial_power_is_statsmodels(n: int, baseline: float, mde: float) -> None:
    effect = proportion_effectsize(baseline * (1 + mde), baseline)
    expected = NormalIndPower().power(abs(effect), nobs1=n, alpha=0.05, ratio=1.0)
    assert power_at(n, baseline, mde) == pytest.approx(expected, rel=1e-9)


def test_continuous_power_is_statsmodels() -> None:
    expected = NormalIndPower().power(0.5 / 4.0, nobs1=800, alpha=0.01, ratio=1.0)
    got = power_at(800, 5.0, 0.5, alpha=0.01, relative=False, metric="continuous", stddev=4.0)
    assert got == pytest.approx(expected, rel=1e-9)


def test_sample_size_is_the_least_n_that_reaches_the_power() -> None:
    n = sample_size(0.05, 0.1, power=0.9)
    assert power_at(n, 0.05, 0.1) >= 0.9 > power_at(n - 1, 0.05, 0.1)


def test_bad_input_names_the_field() -> None:
    with pytest.raises(InvalidInput, match="baseline"):
        power_at(100, 0.0, 0.1)
    with pytest.raises(InvalidInput, match="stddev"):
        power_at(100, 1.0, 0.1, metric="continuous")
