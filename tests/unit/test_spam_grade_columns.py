"""A judgement round read from the table's columns grades as the per-user path does.

The guard judges users from :meth:`ActivityTable.columns` (no object per user); the
per-user path it replaced, :meth:`ActivityTable.evidence` (one ``ActivityView`` each)
through :func:`grade_many`, and :func:`judge` user by user, are the oracles. Random
activity tables (every status, hard rules held and expired, texts copied or not, norms
or none, random groups) and random subsets of their slots in random order must give:
the same evidence and readings field for field, the same profile features, and the same
scores to the last bit, statuses and hard rules as ``grade_many``; and the statuses and
hard rules of ``judge``, with its score within 1e-9 (``judge`` sums each family's
evidence user by user, the columns family by family for every user: the same terms in
another order).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from recloop.core.spam import SpamConfig, TextRegistry, fit_norms, judge
from recloop.core.spam_batch import (
    features_of,
    profile_feature_columns,
    profile_features_many,
    readings_of_columns,
)
from recloop.core.spam_grade import _COUNTERS, evidence_columns, grade_columns, grade_many
from recloop.core.spam_groups import GroupReading

from .test_spam_grade import population
from .test_spam_table import SMALL, columns


def identical(a: float, b: float) -> bool:
    """Equal to the last bit (NaN equal to NaN)."""
    return (math.isnan(a) and math.isnan(b)) or a == b


EXPIRING = replace(SMALL, hard_rule_seconds=5.0)
"""Hard rules forgotten after 5 s (the default remembers them for good)."""


@pytest.mark.parametrize(
    "config", [SMALL, SpamConfig(), EXPIRING], ids=["small", "default", "expiring"]
)
@pytest.mark.parametrize("seed", range(8))
def test_the_tables_columns_grade_as_its_views_do(config: SpamConfig, seed: int) -> None:
    rng = random.Random(seed)
    events = population(seed, users=rng.choice([40, 260]))
    table, slots, items = columns(events, config, seed)
    texts = TextRegistry()
    for e in events:
        if e.type == "review" and e.text is not None:
            texts.add(e.user, e.text)
    texts_or_none = texts if seed % 2 else None
    users = sorted(slots)
    chosen = rng.sample(users, rng.randint(1, len(users)))  # a subset, in random order
    at = np.array([slots[u] for u in chosen], np.int64)
    latest = max(e.t for e in events)
    now = latest + rng.choice([0.0, 1.0, 10.0, 10**6])  # hard rules held, and expired

    # the per-user path: one view per user
    views = table.views(at)
    readings = readings_of_columns(table.columns(at, items.catalogue)[1])
    features = profile_features_many([v.ratings for v in views], items, config)
    norms = fit_norms([f for f in features if f is not None], config) if seed % 3 else None
    groups = [
        GroupReading("i7", True, 10 ** -rng.uniform(1, 12), rng.randint(5, 30), rng.uniform(0, 5))
        if rng.random() < 0.2
        else None
        for _ in chosen
    ]
    old = grade_many(views, items, config, now, texts_or_none, norms, groups, features, readings)

    # the columns
    evidence, reading_columns = table.columns(at, items.catalogue)
    ratings = [table.ratings.get(slot, {}) for slot in at.tolist()]
    held, feature_columns = profile_feature_columns(ratings, items, config)
    new = grade_columns(
        evidence,
        items,
        config,
        now,
        texts_or_none,
        norms,
        groups,
        (held, feature_columns),
        reading_columns,
    )

    # the inputs, field for field
    read_out = evidence_columns(views)
    for name in _COUNTERS:
        assert getattr(evidence, name).tolist() == getattr(read_out, name).tolist(), name
    assert np.array_equal(evidence.hard_rule_at, read_out.hard_rule_at, equal_nan=True)
    reasons = [evidence.reasons[code] for code in evidence.rule.tolist()]
    assert reasons == [v.hard_rule_reason for v in views]
    assert {i: list(k) for i, k in evidence.review_keys.items()} == {
        i: list(v.review_keys) for i, v in enumerate(views) if v.reviews
    }
    for i, reading in enumerate(readings):
        for name in reading.__dataclass_fields__:
            assert identical(reading_columns[name][i].item(), getattr(reading, name)), (i, name)
    assert held.tolist() == [i for i, f in enumerate(features) if f is not None]
    for i, found in zip(held.tolist(), features_of(feature_columns), strict=True):
        want = features[i]
        assert want is not None
        for name in found.__dataclass_fields__:
            assert identical(getattr(found, name), getattr(want, name)), (i, name)

    # the judgements: grade_many's to the last bit, judge's to rounding
    assert new.score.tobytes() == old.score.tobytes()
    assert (new.status, new.rule) == (old.status, old.rule)
    statuses: set[str] = set()
    reasons_seen: set[bool] = set()
    for i, view in enumerate(views):
        want = judge(
            view, items, config, now, texts_or_none, norms, groups[i], features[i], readings[i]
        )
        assert (new.status[i], new.rule[i]) == (want.status, want.hard_rule), chosen[i]
        assert new.score[i] == pytest.approx(want.score, abs=1e-9), chosen[i]
        # the record's reason, which the guard now takes from the columns
        fired = [name for name, signal in want.signals.items() if signal.fired]
        assert new.reason(i) == (want.hard_rule or ", ".join(fired)), chosen[i]
        reasons_seen.add(bool(fired))
        statuses.add(want.status)
    if len(chosen) >= 100:  # the comparison covers every status, and signals fired or not
        assert statuses == {"trusted", "suspect", "blocked"}, statuses
        assert reasons_seen == {True, False}, reasons_seen


def test_the_hard_rules_are_held_for_hard_rule_seconds_only() -> None:
    """A flood's hard rule, graded from the columns, holds until ``hard_rule_seconds`` have
    passed since the violation, as ``judge`` has it."""
    config = EXPIRING
    events = [e for e in population(5) if e.user in {"u0", "u1", "u2", "u3"}]
    base = max(e.t for e in events)
    events += [
        type(events[0])("flood", "like", f"i{k}", None, base + 0.01 * k, None) for k in range(10)
    ]
    table, slots, items = columns(events, config, 0)
    at = np.array(sorted(slots.values()), np.int64)
    flood = sorted(slots.values()).index(slots["flood"])
    evidence, readings = table.columns(at, items.catalogue)
    features = profile_feature_columns(
        [table.ratings.get(s, {}) for s in at.tolist()], items, config
    )
    violated = float(evidence.hard_rule_at[flood])
    assert not math.isnan(violated)
    for after, held in ((0.0, True), (config.hard_rule_seconds, True), (1e9, False)):
        now = violated + after
        graded = grade_columns(
            evidence, items, config, now, None, None, [None] * len(at), features, readings
        )
        assert (graded.rule[flood] is not None) is held
        if held:
            assert (graded.score[flood], graded.status[flood]) == (0.0, "blocked")
        others = [r for i, r in enumerate(graded.rule) if i != flood]
        views = table.views(at)
        assert graded.rule[flood] == judge(views[flood], items, config, now).hard_rule
        assert others == [
            judge(v, items, config, now).hard_rule for i, v in enumerate(views) if i != flood
        ]
