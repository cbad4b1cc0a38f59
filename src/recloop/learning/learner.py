"""Click models: how one is trained, stored as bytes, and loaded back safely.

A :class:`Learner` turns a feature matrix and 0/1 click labels into a
:class:`Model`; a model predicts click probabilities and serialises itself
to bytes (its *artifact*), which the registry stores with its SHA-256.
:func:`load_model` checks that checksum before it parses a single byte.

The default is :class:`LightGbmLearner`. LightGBM rather than scikit-learn's
``HistGradientBoostingClassifier``, which learns the same kind of model:
LightGBM has a native, documented *text* model format
(``Booster.model_to_string``, read back by ``Booster(model_str=...)``): plain
text (trees, thresholds, feature names) that is parsed, never executed.
scikit-learn persists estimators with pickle (or joblib, which is pickle),
and unpickling runs whatever code the bytes name: anyone able to write an
artifact could run code on every serving instance (the safer skops and ONNX
formats are further dependencies, with their own converters). Both handle
missing values (NaN) natively, which :func:`~recloop.core.features.to_matrix`
relies on.

A team can bring its own learner: :func:`load_learner` imports it from
``"module:attr"``; its models load through :func:`load_model`'s ``loaders``.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from recloop.core.errors import ConfigError, InvalidInput, RecloopError

if TYPE_CHECKING:
    import lightgbm as lgb


def _lgb() -> Any:
    """LightGBM, imported when a model is first trained or loaded: it (and the
    scikit-learn it pulls in) takes seconds to import, which ``recloop serve`` and
    ``recloop worker`` would otherwise pay at every start."""
    import lightgbm

    return lightgbm


Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]


class ArtifactError(RecloopError, ValueError):
    """A model artifact cannot be loaded: wrong checksum, unknown kind, or unreadable bytes."""


@runtime_checkable
class Model(Protocol):
    """A trained click model.

    ``kind`` names the format of :meth:`to_bytes` (``"lightgbm"``), so that
    :func:`load_model` knows how to read it back; ``feature_names`` are the
    columns :meth:`predict` expects, in order.
    """

    @property
    def kind(self) -> str: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    def predict(self, X: Matrix) -> Vector:
        """The click probability of each row of ``X``."""
        ...

    def to_bytes(self) -> bytes:
        """The artifact: everything needed to predict, in a format that runs no code on load."""
        ...


@runtime_checkable
class Learner(Protocol):
    """Trains a :class:`Model` from rows ``X``, 0/1 labels ``y`` and the columns' names."""

    def fit(self, X: Matrix, y: Vector, feature_names: Sequence[str]) -> Model: ...


def _check_training_data(
    X: Matrix, y: Vector, feature_names: Sequence[str]
) -> tuple[Matrix, Vector]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2:
        raise InvalidInput("X", f"must be two-dimensional, got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise InvalidInput("y", f"must have one label per row of X ({X.shape[0]}), got {y.shape}")
    if len(feature_names) != X.shape[1]:
        raise InvalidInput(
            "feature_names", f"has {len(feature_names)} names for {X.shape[1]} columns"
        )
    if X.shape[0] == 0:
        raise InvalidInput("X", "has no rows")
    if not np.all((y == 0.0) | (y == 1.0)):
        raise InvalidInput("y", "must hold only 0 and 1")
    return X, y


class LightGbmModel:
    """A LightGBM booster as a :class:`Model` (``kind = "lightgbm"``)."""

    kind: Final = "lightgbm"

    def __init__(self, booster: lgb.Booster) -> None:
        self._booster = booster
        self._feature_names = tuple(str(name) for name in booster.feature_name())

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

    def predict(self, X: Matrix) -> Vector:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self._feature_names):
            raise InvalidInput(
                "X", f"must have {len(self._feature_names)} columns, got shape {X.shape}"
            )
        if X.shape[0] == 0:
            return np.zeros(0)
        return np.asarray(self._booster.predict(X), dtype=np.float64)

    def to_bytes(self) -> bytes:
        """LightGBM's text model format, UTF-8."""
        return str(self._booster.model_to_string()).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> LightGbmModel:
        """Parse LightGBM's text model format; :class:`ArtifactError` if it is not one."""
        try:
            text = data.decode("utf-8")
            lgb = _lgb()
            return cls(lgb.Booster(model_str=text))
        except (UnicodeDecodeError, _lgb().basic.LightGBMError) as e:
            raise ArtifactError(f"not a LightGBM text model: {e}") from e


@dataclass(frozen=True, slots=True)
class LightGbmLearner:
    """Gradient-boosted trees with LightGBM's binary (log loss) objective.

    Single-threaded and seeded (``deterministic``), so the same data gives
    the same model byte for byte. The defaults are deliberately plain: small
    learning rate, enough trees, leaves of at least ``min_data_in_leaf``
    examples, light L2 regularisation.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> y = (X[:, 0] + 0.3 * rng.normal(size=500) > 0).astype(float)
    >>> learner = LightGbmLearner(num_boost_round=50, learning_rate=0.2)
    >>> model = learner.fit(X, y, ["signal", "noise"])
    >>> model.kind, model.feature_names
    ('lightgbm', ('signal', 'noise'))
    >>> p = model.predict(np.array([[2.0, 0.0], [-2.0, 0.0]]))
    >>> bool(p[0] > 0.8 and p[1] < 0.2)
    True
    """

    num_boost_round: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    lambda_l2: float = 1.0
    feature_fraction: float = 0.9
    seed: int = 0

    def params(self) -> dict[str, object]:
        """The LightGBM parameters this learner trains with."""
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "lambda_l2": self.lambda_l2,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": 1,
            "verbose": -1,
        }

    def fit(self, X: Matrix, y: Vector, feature_names: Sequence[str]) -> LightGbmModel:
        """Train on ``X`` (NaN = missing) and 0/1 labels ``y``.

        Raises
        ------
        InvalidInput
            for mismatched shapes, no rows, or labels other than 0 and 1.
        """
        X, y = _check_training_data(X, y, feature_names)
        params = self.params()
        lgb = _lgb()
        dataset = lgb.Dataset(X, label=y, feature_name=list(feature_names), params=params)
        booster = lgb.train(params, dataset, num_boost_round=self.num_boost_round)
        return LightGbmModel(booster)


def load_learner(path: str) -> Learner:
    """The learner named by ``"module:attr"``: an instance, or a class built with no arguments.

    Raises
    ------
    ConfigError
        if the path is malformed, the module or attribute does not exist, or
        what it names has no ``fit``.

    >>> load_learner("recloop.learning.learner:LightGbmLearner")
    LightGbmLearner(num_boost_round=200, learning_rate=0.05, num_leaves=31, min_data_in_leaf=50, lambda_l2=1.0, feature_fraction=0.9, seed=0)
    """  # noqa: E501
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"learner {path!r} must be 'module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"learner {path!r}: cannot import {module_name!r}: {e}") from e
    try:
        target = getattr(module, attr)
    except AttributeError as e:
        raise ConfigError(f"learner {path!r}: {module_name!r} has no {attr!r}") from e
    learner = target() if isinstance(target, type) else target
    if not callable(getattr(learner, "fit", None)):
        raise ConfigError(f"learner {path!r} has no fit(X, y, feature_names) method")
    result: Learner = learner
    return result


# -- Artifacts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Artifact:
    """A model as the registry stores it: its kind, bytes, their SHA-256 and its columns."""

    kind: str
    data: bytes
    sha256: str
    feature_names: tuple[str, ...]

    @classmethod
    def of(cls, model: Model) -> Artifact:
        """Serialise ``model`` and checksum the bytes."""
        data = model.to_bytes()
        return cls(model.kind, data, sha256_of(data), tuple(model.feature_names))


def sha256_of(data: bytes) -> str:
    """The SHA-256 of ``data``, lower-case hex.

    >>> sha256_of(b"")
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return hashlib.sha256(data).hexdigest()


ModelLoader = Callable[[bytes], Model]

LOADERS: Final[Mapping[str, ModelLoader]] = {LightGbmModel.kind: LightGbmModel.from_bytes}
"""How to read each built-in kind of artifact."""


def load_model(
    kind: str,
    data: bytes,
    expected_sha256: str,
    loaders: Mapping[str, ModelLoader] | None = None,
) -> Model:
    """Load an artifact, after checking that its bytes are the ones registered.

    The checksum is compared first; bytes that differ from what was
    registered are refused without being parsed. ``loaders`` add readers for
    a team's own kinds of model to the built-in :data:`LOADERS`.

    Raises
    ------
    ArtifactError
        if the checksum differs (the message gives both), the kind is
        unknown, or the bytes cannot be parsed.

    >>> load_model("lightgbm", b"tree", "0" * 64)
    Traceback (most recent call last):
    ...
    recloop.learning.learner.ArtifactError: artifact checksum mismatch: expected sha256 0000000000000000000000000000000000000000000000000000000000000000, got dc9c5edb8b2d479e697b4b0b8ab874f32b325138598ce9e7b759eb8292110622; refusing to load it
    """  # noqa: E501
    actual = sha256_of(data)
    expected = expected_sha256.strip().lower()
    if not (expected.isascii() and hmac.compare_digest(actual, expected)):
        raise ArtifactError(
            f"artifact checksum mismatch: expected sha256 {expected_sha256}, got {actual}; "
            "refusing to load it"
        )
    available = {**LOADERS, **(loaders or {})}
    loader = available.get(kind)
    if loader is None:
        raise ArtifactError(f"unknown model kind {kind!r}; known: {sorted(available)}")
    return loader(data)
