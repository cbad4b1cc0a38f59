"""A model's ROC curve and reliability diagram, as training stores them, against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc as area
from sklearn.metrics import roc_curve

from recloop.core.errors import InvalidInput
from recloop.learning.training import train
from recloop.learning.validation import ROC_POINTS, PromotionGate, curves
from tests.unit.test_learning_gate import drifting_data


def test_curves_are_sklearns() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(5_000)
    y = (rng.random(5_000) < p).astype(float)
    found = curves(y, p)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
    assert len(fpr) > ROC_POINTS  # thinned
    assert len(found["roc"]["fpr"]) == ROC_POINTS
    corners = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert set(zip(found["roc"]["fpr"], found["roc"]["tpr"], strict=True)) <= corners
    assert (found["roc"]["fpr"][0], found["roc"]["fpr"][-1]) == (0.0, 1.0)
    # the thinned curve's area is the full one's, nearly
    thinned = area(found["roc"]["fpr"], found["roc"]["tpr"])
    assert thinned == pytest.approx(area(fpr, tpr), abs=0.01)
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert found["reliability"]["observed"] == pytest.approx(observed.tolist())
    assert found["reliability"]["predicted"] == pytest.approx(predicted.tolist())
    assert sum(found["reliability"]["count"]) == 5_000


def test_one_class_has_no_roc_but_a_reliability_diagram() -> None:
    found = curves([1.0, 1.0, 1.0], [0.2, 0.25, 0.9])
    assert found["roc"] == {"fpr": [], "tpr": []}
    assert found["reliability"]["count"] == [2, 1]
    with pytest.raises(InvalidInput, match="p"):
        curves([0.0, 1.0], [0.5])


def test_training_stores_the_candidates_curves_on_its_holdout() -> None:
    outcome = train(drifting_data(1), None, PromotionGate(), 0.3)
    stored = outcome.metrics["curves"]
    holdout = outcome.metrics["holdout_examples"]
    assert sum(stored["reliability"]["count"]) == holdout
    assert 2 < len(stored["roc"]["fpr"]) <= ROC_POINTS
    fpr, tpr = stored["roc"]["fpr"], stored["roc"]["tpr"]
    assert area(fpr, tpr) == pytest.approx(outcome.metrics["candidate"]["auc"], abs=0.01)
