"""Learners, models and their artifacts (learning.learner)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from recloop.core.errors import ConfigError, InvalidInput
from recloop.learning.learner import (
    LOADERS,
    Artifact,
    ArtifactError,
    Learner,
    LightGbmLearner,
    LightGbmModel,
    Model,
    load_learner,
    load_model,
    sha256_of,
)

NAMES = ("signal", "interaction", "noise")


def data(seed: int = 0, n: int = 2_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X[rng.random(n) < 0.1, 1] = np.nan  # missing values are allowed
    logit = -1.0 + 1.5 * X[:, 0] + np.nan_to_num(X[:, 1]) * (X[:, 0] > 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, y


@pytest.fixture(scope="module")
def model() -> LightGbmModel:
    X, y = data()
    return LightGbmLearner(num_boost_round=60, learning_rate=0.1).fit(X, y, NAMES)


def test_the_default_learner_and_its_model_satisfy_the_protocols(model: LightGbmModel) -> None:
    assert isinstance(LightGbmLearner(), Learner)
    assert isinstance(model, Model)
    assert model.kind == "lightgbm"
    assert model.feature_names == NAMES


def test_params_are_deterministic_and_single_threaded() -> None:
    params = LightGbmLearner(seed=7).params()
    assert params["objective"] == "binary"
    assert params["num_threads"] == 1
    assert params["deterministic"] is True
    assert params["seed"] == 7
    assert params["verbose"] == -1


def test_the_model_learns_probabilities(model: LightGbmModel) -> None:
    X, y = data(seed=1)
    p = model.predict(X)
    assert p.shape == (len(y),)
    assert ((p > 0) & (p < 1)).all()
    # Better than the base rate alone, by a clear log-loss margin.
    base = y.mean()
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    base_loss = -np.mean(y * np.log(base) + (1 - y) * np.log(1 - base))
    assert loss < base_loss - 0.1


def test_same_data_same_model_byte_for_byte() -> None:
    X, y = data()
    learner = LightGbmLearner(num_boost_round=20)
    assert learner.fit(X, y, NAMES).to_bytes() == learner.fit(X, y, NAMES).to_bytes()


def test_round_trip_through_bytes_predicts_identically(model: LightGbmModel) -> None:
    artifact = Artifact.of(model)
    assert artifact.kind == "lightgbm"
    assert artifact.sha256 == sha256_of(artifact.data)
    assert artifact.feature_names == NAMES
    assert artifact.data.startswith(b"tree\n")  # LightGBM's text format, not a pickle
    loaded = load_model(artifact.kind, artifact.data, artifact.sha256)
    assert loaded.feature_names == NAMES
    X, _ = data(seed=2, n=500)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.to_bytes() == artifact.data


def test_checksum_is_case_and_whitespace_tolerant(model: LightGbmModel) -> None:
    artifact = Artifact.of(model)
    load_model(artifact.kind, artifact.data, f" {artifact.sha256.upper()}\n")


def test_a_tampered_artifact_is_refused_before_parsing(model: LightGbmModel) -> None:
    artifact = Artifact.of(model)
    tampered = bytearray(artifact.data)
    tampered[len(tampered) // 2] ^= 0x01  # one bit of one byte
    parsed: list[bytes] = []

    def spy(data: bytes) -> Model:
        parsed.append(data)
        return LightGbmModel.from_bytes(data)

    with pytest.raises(ArtifactError) as caught:
        load_model("lightgbm", bytes(tampered), artifact.sha256, loaders={"lightgbm": spy})
    message = str(caught.value)
    assert "checksum mismatch" in message
    assert artifact.sha256 in message
    assert sha256_of(bytes(tampered)) in message
    assert parsed == []
    assert isinstance(caught.value, ValueError)


def test_a_non_ascii_checksum_is_a_mismatch_not_a_crash(model: LightGbmModel) -> None:
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_model("lightgbm", Artifact.of(model).data, "é" * 64)


def test_unknown_kind_is_refused() -> None:
    data = b"whatever"
    with pytest.raises(ArtifactError, match=r"unknown model kind 'onnx'; known: \['lightgbm'\]"):
        load_model("onnx", data, sha256_of(data))


def test_bytes_that_are_not_a_model_are_refused() -> None:
    for data in (b"\xff\xfe not utf-8", b"definitely not a model"):
        with pytest.raises(ArtifactError, match="not a LightGBM text model"):
            load_model("lightgbm", data, sha256_of(data))


class ConstantModel:
    """A team's own kind of model: a constant probability."""

    kind = "constant"

    def __init__(self, p: float, names: Sequence[str]) -> None:
        self.p = p
        self.feature_names = tuple(names)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.p)

    def to_bytes(self) -> bytes:
        return f"{self.p}|{','.join(self.feature_names)}".encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ConstantModel:
        p, names = data.decode().split("|")
        return cls(float(p), names.split(","))


class ConstantLearner:
    """A team's own learner: predicts the base rate."""

    def fit(self, X: np.ndarray, y: np.ndarray, feature_names: Sequence[str]) -> ConstantModel:
        return ConstantModel(float(np.mean(y)), feature_names)


TEAM_LEARNER = ConstantLearner()


def test_a_teams_own_model_loads_through_its_loader() -> None:
    model = ConstantLearner().fit(np.zeros((4, 2)), np.array([0.0, 1.0, 1.0, 0.0]), ["a", "b"])
    artifact = Artifact.of(model)
    loaded = load_model(
        "constant", artifact.data, artifact.sha256, loaders={"constant": ConstantModel.from_bytes}
    )
    assert loaded.feature_names == ("a", "b")
    assert loaded.predict(np.zeros((2, 2))).tolist() == [0.5, 0.5]
    assert "constant" not in LOADERS  # the built-in table is not changed


def test_load_learner_by_class_or_instance() -> None:
    assert isinstance(load_learner("recloop.learning.learner:LightGbmLearner"), LightGbmLearner)
    assert load_learner("tests.unit.test_learning_learner:TEAM_LEARNER") is TEAM_LEARNER
    built = load_learner("tests.unit.test_learning_learner:ConstantLearner")
    assert isinstance(built, ConstantLearner)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("recloop.learning.learner", "must be 'module:attr'"),
        (":LightGbmLearner", "must be 'module:attr'"),
        ("no_such_module_xyz:Learner", "cannot import 'no_such_module_xyz'"),
        ("recloop.learning.learner:Missing", "has no 'Missing'"),
        ("math:pi", "has no fit"),
    ],
)
def test_load_learner_errors_name_the_path(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_learner(path)
    assert repr(path) in str(caught.value)


@pytest.mark.parametrize(
    ("X", "y", "names", "field"),
    [
        (np.zeros(3), np.zeros(3), NAMES, "X"),
        (np.zeros((3, 3)), np.zeros(2), NAMES, "y"),
        (np.zeros((3, 3)), np.zeros(3), NAMES[:2], "feature_names"),
        (np.zeros((0, 3)), np.zeros(0), NAMES, "X"),
        (np.zeros((3, 3)), np.array([0.0, 1.0, 0.5]), NAMES, "y"),
    ],
)
def test_fit_refuses_bad_training_data(
    X: np.ndarray, y: np.ndarray, names: Sequence[str], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        LightGbmLearner(num_boost_round=1).fit(X, y, names)
    assert caught.value.field == field


def test_predict_refuses_the_wrong_columns(model: LightGbmModel) -> None:
    with pytest.raises(InvalidInput, match="must have 3 columns"):
        model.predict(np.zeros((2, 4)))
    assert model.predict(np.zeros((0, 3))).shape == (0,)
