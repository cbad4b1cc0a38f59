"""Experiment assignment (core.assignment), pinned to GrowthBook's own SDK."""

from __future__ import annotations

import random
import string

import pytest
from growthbook import Experiment as GbExperiment
from growthbook import GrowthBook, core
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.assignment import (
    MEMO_MAX,
    Assigner,
    Assignment,
    assign,
    bucket_ranges,
    choose_variation,
    equal_weights,
    fnv1a32,
    gb_hash,
    in_namespace,
)

# any code point, lone surrogates included (Python strings can hold them; the SDK hashes them)
any_text = st.text(
    st.one_of(st.characters(codec=None), st.characters(categories=["Cs"])), max_size=40
)
non_ascii_text = st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=20)
ids = st.one_of(any_text, non_ascii_text, st.text(string.printable, max_size=40))
coverages = st.floats(-0.5, 1.5, allow_nan=False)


def random_ascii_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_.:@"
    return ["".join(rng.choices(alphabet, k=rng.randint(8, 36))) for _ in range(count)]


def random_weights(rng: random.Random, k: int) -> list[float]:
    raw = [rng.random() for _ in range(k)]
    total = sum(raw)
    return [w / total for w in raw]


# -- hashing -------------------------------------------------------------------


@settings(max_examples=500)
@given(value=ids)
def test_fnv_matches_sdk(value: str) -> None:
    assert fnv1a32(value) == core.fnv1a32(value)


@settings(max_examples=500)
@given(seed=ids, value=ids, version=st.sampled_from([1, 2]))
def test_hash_matches_sdk(seed: str, value: str, version: int) -> None:
    assert gb_hash(seed, value, version) == core.gbhash(seed, value, version)


@pytest.mark.parametrize("version", [1, 2])
def test_hash_matches_sdk_on_random_ascii_ids(version: int) -> None:
    seeds = random_ascii_ids(20, seed=1)
    for i, user_id in enumerate(random_ascii_ids(3_000, seed=version)):
        seed = seeds[i % len(seeds)]
        assert gb_hash(seed, user_id, version) == core.gbhash(seed, user_id, version)


def test_hash_of_non_ascii_is_over_utf16_code_units() -> None:
    # U+1F600 is one code point, two UTF-16 code units, four UTF-8 bytes
    units = [0xD83D, 0xDE00]
    expected = 0x811C9DC5
    for u in units:
        expected = ((expected ^ u) * 0x01000193) & 0xFFFFFFFF
    assert fnv1a32("\U0001f600") == expected == core.fnv1a32("\U0001f600")
    assert fnv1a32("\ud83d\ude00") == expected  # the same code units written as surrogates


@pytest.mark.parametrize("version", [0, 3, -1])
def test_unknown_hash_version_is_none(version: int) -> None:
    assert gb_hash("seed", "user", version) is None
    assert assign("user", "seed", 2, hash_version=version) == Assignment(None, None, False)


def test_hash_ranges() -> None:
    """v2 hashes to multiples of 1/10000 in [0, 1), v1 to multiples of 1/1000."""
    for version, buckets in ((2, 10_000), (1, 1_000)):
        for user_id in random_ascii_ids(2_000, seed=version):
            v = gb_hash("s", user_id, version)
            assert v is not None and 0 <= v < 1 and round(v * buckets) / buckets == v


# -- ranges and variations --------------------------------------------------------


@pytest.mark.parametrize("n", [-1, 0, 1, 2, 3, 7])
def test_equal_weights_match_sdk(n: int) -> None:
    assert equal_weights(n) == core.getEqualWeights(n)


@settings(max_examples=500)
@given(
    k=st.integers(1, 6),
    coverage=coverages,
    raw=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=6),
    normalise=st.booleans(),
)
def test_bucket_ranges_match_sdk(
    k: int, coverage: float, raw: list[float], normalise: bool
) -> None:
    # normalised weights of the right length are used; the rest (wrong length, wrong sum) are not
    total = sum(raw)
    weights = [w / total for w in raw] if normalise and total > 0 else raw
    assert bucket_ranges(k, coverage, weights) == core.getBucketRanges(k, coverage, weights)
    assert bucket_ranges(k, coverage, None) == core.getBucketRanges(k, coverage, None)


@pytest.mark.parametrize(
    "weights",
    [
        [0.5, 0.5, 0.0],
        [0.995, 0.0, 0.0],  # sum within 0.99..1.01: kept
        [0.3, 0.3, 0.3],  # sum 0.9: equal weights
        [1.2, -0.2, 0.0],  # negative: equal weights
        [float("nan"), 0.5, 0.5],
        [float("inf"), 0.0, 0.0],
        [0.5, 0.5],  # wrong length
    ],
)
def test_bucket_ranges_weight_fallback_matches_sdk(weights: list[float]) -> None:
    assert bucket_ranges(3, 0.8, weights) == core.getBucketRanges(3, 0.8, weights)


def test_bucket_ranges_on_random_weights_match_sdk() -> None:
    rng = random.Random(11)
    for _ in range(2_000):
        k = rng.randint(1, 8)
        coverage = rng.uniform(-0.2, 1.2)
        weights = random_weights(rng, k)
        assert bucket_ranges(k, coverage, weights) == core.getBucketRanges(k, coverage, weights)


@settings(max_examples=500)
@given(
    n=st.floats(0, 1, exclude_max=True),
    k=st.integers(0, 5),
    coverage=coverages,
    seed=st.integers(0, 2**32 - 1),
)
def test_choose_variation_matches_sdk(n: float, k: int, coverage: float, seed: int) -> None:
    ranges = bucket_ranges(k, coverage, random_weights(random.Random(seed), k) if k else None)
    assert choose_variation(n, ranges) == core.chooseVariation(n, ranges)


def test_choose_variation_edges() -> None:
    ranges = [(0.0, 0.25), (0.5, 0.75)]
    assert [choose_variation(x, ranges) for x in (0.0, 0.25, 0.5, 0.75)] == [0, -1, 1, -1]
    assert choose_variation(0.3, []) == -1


# -- assign, end to end -------------------------------------------------------------


def test_assign_matches_sdk_run() -> None:
    """The whole SDK path (GrowthBook.run) puts every user where assign does."""
    rng = random.Random(5)
    for user_id in [*random_ascii_ids(400, seed=6), "", "ünïcödé", "用户-42", "\U0001f600"]:
        k = rng.randint(2, 4)
        coverage = rng.choice([1.0, rng.random()])
        weights = random_weights(rng, k)
        version = rng.choice([1, 2])
        seed = f"exp-{rng.randint(0, 9)}"
        ours = assign(user_id, seed, k, coverage, weights, version)
        result = GrowthBook(attributes={"id": user_id}).run(
            GbExperiment(
                key=seed,
                variations=list(range(k)),
                coverage=coverage,
                weights=weights,
                hashVersion=version,
            )
        )
        assert ours.in_experiment == result.inExperiment
        assert ours.variant_index == (result.variationId if result.inExperiment else None)
        if result.inExperiment:
            assert ours.hash_value == result.bucket


# -- namespaces -----------------------------------------------------------------------


@given(ids, st.text(max_size=20), st.floats(0, 1), st.floats(0, 1))
def test_in_namespace_matches_sdk(user_id: str, name: str, a: float, b: float) -> None:
    start, end = min(a, b), max(a, b)
    assert in_namespace(user_id, name, start, end) == core.inNamespace(user_id, (name, start, end))


def test_assign_with_namespace_matches_sdk_run() -> None:
    """GrowthBook.run with a namespace puts every user where assign does."""
    rng = random.Random(11)
    for user_id in [*random_ascii_ids(600, seed=12), "", "ünïcödé", "用户-42", "\U0001f600"]:
        k = rng.randint(2, 3)
        coverage = rng.choice([1.0, rng.random()])
        weights = random_weights(rng, k)
        version = rng.choice([1, 2])
        seed = f"exp-{rng.randint(0, 9)}"
        start = rng.choice([0.0, rng.random() / 2])
        namespace = (f"ns-{rng.randint(0, 2)}", start, rng.choice([1.0, start + rng.random() / 2]))
        ours = assign(user_id, seed, k, coverage, weights, version, namespace=namespace)
        result = GrowthBook(attributes={"id": user_id}).run(
            GbExperiment(
                key=seed,
                variations=list(range(k)),
                coverage=coverage,
                weights=weights,
                hashVersion=version,
                namespace=namespace,
            )
        )
        assert ours.in_experiment == result.inExperiment
        assert ours.variant_index == (result.variationId if result.inExperiment else None)
        if result.inExperiment:
            assert ours.hash_value == result.bucket


def test_disjoint_namespace_ranges_never_share_a_user() -> None:
    users = random_ascii_ids(5_000, seed=13)
    left = {u for u in users if assign(u, "l", 2, namespace=("ns", 0.0, 0.4)).in_experiment}
    right = {u for u in users if assign(u, "r", 2, namespace=("ns", 0.4, 1.0)).in_experiment}
    assert not left & right
    assert left | right == set(users)
    assert abs(len(left) / len(users) - 0.4) < 0.03


def test_ramping_coverage_never_moves_a_user() -> None:
    weights = [0.2, 0.3, 0.5]
    for user_id in random_ascii_ids(5_000, seed=7):
        stages = [assign(user_id, "ramp", 3, c, weights) for c in (0.2, 0.5, 1.0)]
        assert stages[-1].in_experiment
        first = next(s.variant_index for s in stages if s.in_experiment)
        # once in, always in, and always in the same variant
        seen = [s.variant_index for s in stages if s.in_experiment]
        assert seen == [first] * len(seen)
        assert [s.in_experiment for s in stages] == sorted(s.in_experiment for s in stages)


@settings(max_examples=300)
@given(
    user_id=ids,
    low=st.floats(0, 1),
    high=st.floats(0, 1),
    k=st.integers(1, 5),
    version=st.sampled_from([1, 2]),
)
def test_raising_coverage_keeps_variant(
    user_id: str, low: float, high: float, k: int, version: int
) -> None:
    low, high = sorted((low, high))
    before = assign(user_id, "seed", k, low, hash_version=version)
    after = assign(user_id, "seed", k, high, hash_version=version)
    if before.in_experiment:
        assert after == before


def test_equal_split_frequencies() -> None:
    """100k users split 1/3 each: every share within 0.01 (7 standard errors) of 1/3."""
    counts = [0, 0, 0]
    for user_id in random_ascii_ids(100_000, seed=8):
        a = assign(user_id, "split", 3)
        assert a.variant_index is not None
        counts[a.variant_index] += 1
    assert all(abs(c / 100_000 - 1 / 3) < 0.01 for c in counts)


def test_coverage_share() -> None:
    """About ``coverage`` of users are in; the rest are out with their bucket reported."""
    results = [assign(u, "cov", 2, coverage=0.3) for u in random_ascii_ids(20_000, seed=9)]
    share = sum(a.in_experiment for a in results) / len(results)
    assert abs(share - 0.3) < 0.02
    out = [a for a in results if not a.in_experiment]
    assert all(a.variant_index is None and a.hash_value is not None for a in out)


@settings(max_examples=300)
@given(
    user_id=ids,
    seed=ids,
    k=st.integers(1, 5),
    coverage=coverages,
    weights=st.one_of(st.none(), st.lists(st.floats(-0.2, 1.0, allow_nan=False), max_size=5)),
    version=st.sampled_from([1, 2, 3]),
    namespace=st.one_of(
        st.none(), st.tuples(st.text(max_size=10), st.floats(0, 1), st.floats(0, 1))
    ),
)
def test_assigner_answers_as_assign(
    user_id: str,
    seed: str,
    k: int,
    coverage: float,
    weights: list[float] | None,
    version: int,
    namespace: tuple[str, float, float] | None,
) -> None:
    """The per-definition assigner is ``assign`` (the oracle), asked again (remembered) too."""
    expected = assign(user_id, seed, k, coverage, weights, version, namespace).variant_index
    assigner = Assigner.of(seed, k, coverage, weights, version, namespace)
    assert assigner.index(user_id) == expected
    assert assigner.index(user_id) == expected


def test_assigner_on_random_ascii_ids_and_a_full_memo() -> None:
    rng = random.Random(7)
    for version in (1, 2):
        weights = random_weights(rng, 3)
        assigner = Assigner.of("exp-seed", 3, 0.7, weights, version, ("ns", 0.1, 0.9))
        users = random_ascii_ids(MEMO_MAX + 500, seed=version)
        answers = [assigner.index(user_id) for user_id in users]
        assert len(assigner.memo) <= MEMO_MAX  # forgotten when full, not grown past it
        for user_id, answer in zip(users[::50], answers[::50], strict=True):
            expected = assign(user_id, "exp-seed", 3, 0.7, weights, version, ("ns", 0.1, 0.9))
            assert answer == expected.variant_index
        for user_id in users[:1000]:  # forgotten users are hashed again, to the same answer
            expected = assign(user_id, "exp-seed", 3, 0.7, weights, version, ("ns", 0.1, 0.9))
            assert assigner.index(user_id) == expected.variant_index
