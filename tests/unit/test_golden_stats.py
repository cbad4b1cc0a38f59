"""Golden numbers for core.stats, replayed from tests/cases/*.json.

Each file names the oracle that computed its expected values once (scipy,
statsmodels, or a formula written out in numpy, never recloop itself) and
the versions used, and stores them at full double precision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recloop.core.stats import (
    Comparison,
    PairStats,
    SampleStats,
    adjust_pvalues,
    cuped,
    cuped_welch_test,
    make_sequential,
    proportions_test,
    ratio_test,
    sample_size,
    sequential_rho,
    srm_test,
    welch_test,
)

CASES = Path(__file__).parents[1] / "cases"
REL = 1e-9


def cases(name: str) -> list[Any]:
    data = json.loads((CASES / f"{name}.json").read_text())
    assert data["oracle"] and data["cases"]
    return [pytest.param(case, id=case["name"]) for case in data["cases"]]


def close(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return actual is not None and list(actual) == pytest.approx(expected, rel=REL, abs=1e-15)
    return bool(actual == pytest.approx(expected, rel=REL, abs=1e-15))


def check(result: Comparison, expected: dict[str, Any]) -> None:
    assert result.reason is None
    for field, value in expected.items():
        assert close(getattr(result, field), value), field


def proportions(case: dict[str, Any]) -> tuple[SampleStats, SampleStats]:
    (n_c, c), (n_t, t) = case["input"]["control"], case["input"]["treatment"]
    return SampleStats(n_c, c, c), SampleStats(n_t, t, t)


def pairs(case: dict[str, Any]) -> tuple[PairStats, PairStats]:
    arms = case["input"]
    return (
        PairStats.of(arms["control"]["x"], arms["control"]["y"]),
        PairStats.of(arms["treatment"]["x"], arms["treatment"]["y"]),
    )


@pytest.mark.parametrize("case", cases("proportions"))
def test_proportions(case: dict[str, Any]) -> None:
    check(proportions_test(*proportions(case), alpha=case["input"]["alpha"]), case["expected"])


@pytest.mark.parametrize("case", cases("welch"))
def test_welch(case: dict[str, Any]) -> None:
    inp = case["input"]
    result = welch_test(
        SampleStats.of(inp["control"]), SampleStats.of(inp["treatment"]), inp["alpha"]
    )
    check(result, case["expected"])


@pytest.mark.parametrize("case", cases("ratio"))
def test_ratio(case: dict[str, Any]) -> None:
    check(ratio_test(*pairs(case), alpha=case["input"]["alpha"]), case["expected"])


@pytest.mark.parametrize("case", cases("cuped"))
def test_cuped(case: dict[str, Any]) -> None:
    control, treatment = pairs(case)
    expected = dict(case["expected"])
    assert close(cuped(control, treatment).theta, expected.pop("theta"))
    result = cuped_welch_test(control, treatment, alpha=case["input"]["alpha"])
    assert result.cuped
    check(result, expected)


@pytest.mark.parametrize("case", cases("srm"))
def test_srm(case: dict[str, Any]) -> None:
    result = srm_test(case["input"]["observed"], case["input"]["weights"])
    assert close(result.p_value, case["expected"]["p_value"])
    assert result.flagged == case["expected"]["flagged"]
    assert result.expected == pytest.approx(case["expected"]["expected"], rel=REL)


@pytest.mark.parametrize("case", cases("multitest"))
@pytest.mark.parametrize("method", ["holm", "bh"])
def test_multitest(case: dict[str, Any], method: str) -> None:
    adjusted = adjust_pvalues(case["input"]["p_values"], method)
    for got, want in zip(adjusted, case["expected"][method], strict=True):
        assert (got is None and want is None) or close(got, want)


@pytest.mark.parametrize("case", cases("sample_size"))
def test_sample_size(case: dict[str, Any]) -> None:
    assert sample_size(**case["input"]) == case["expected"]["users_per_variant"]


@pytest.mark.parametrize("case", cases("sequential"))
def test_sequential(case: dict[str, Any]) -> None:
    inp = case["input"]
    control, treatment = proportions(case)
    fixed = proportions_test(control, treatment, inp["alpha"])
    result = make_sequential(fixed, control.n + treatment.n, inp["alpha"], inp["tuning"])
    assert result.sequential
    assert close(sequential_rho(inp["alpha"], inp["tuning"]), case["expected"]["rho"])
    for field in ("ci_absolute", "ci_relative"):
        assert close(getattr(result, field), case["expected"][field]), field
    # the oracle's p-value comes from bisection, converged far below this tolerance
    assert result.p_value == pytest.approx(case["expected"]["p_value"], rel=1e-9)
