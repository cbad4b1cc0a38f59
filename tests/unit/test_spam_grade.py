"""A judgement round graded as columns gives each user the score ``judge`` gives them."""

from __future__ import annotations

import random

import pytest

from recloop.core.spam import SpamConfig, TextRegistry, fit_norms, judge
from recloop.core.spam_batch import activity_readings_many, profile_features_many
from recloop.core.spam_grade import grade_many
from recloop.core.spam_groups import GroupReading

from .test_spam_table import SMALL, TEXTS, Event, reference


def population(seed: int, users: int = 260, items: int = 300) -> list[Event]:
    """Genuine raters and browsers, periodic bots, shills rating a target at the top,
    clickers who saw nothing, review spammers and a few flooders: scores all over."""
    rng = random.Random(seed)
    quality = [rng.uniform(1.5, 4.8) for _ in range(items)]
    out: list[Event] = []
    for u in range(users):
        kind = rng.choices(
            ["genuine", "bot", "shill", "clicker", "reviewer", "flooder"], [60, 10, 12, 8, 6, 4]
        )[0]
        t = 1_000_000.0 + rng.uniform(0, 86_400)
        for _ in range(rng.randint(5, 90)):
            if kind == "bot":
                t += 5.0 + rng.uniform(-0.01, 0.01)
            elif kind == "flooder":
                t += rng.uniform(0.0, 0.06)
            else:
                t += rng.expovariate(1 / 900.0) if rng.random() < 0.7 else rng.uniform(0, 3)
            item = (
                int(min(items - 1, rng.paretovariate(1.2) * 3))
                if rng.random() < 0.6
                else (rng.randrange(items))
            )
            kind_of_event = rng.choice(["rating", "view", "click", "impression", "dwell", "like"])
            if kind == "genuine" and rng.random() < 0.35:
                kind_of_event = "rating"
            value: float | None = None
            text = None
            if kind == "shill" and rng.random() < 0.5:
                kind_of_event, item, value = "rating", 7, 5.0
            elif kind == "clicker":
                kind_of_event = "click"
            elif kind == "reviewer":
                kind_of_event, text = "review", rng.choice(TEXTS[1:3])
            if kind_of_event == "rating" and value is None:
                value = float(min(5, max(1, round(rng.gauss(quality[item], 0.9)))))
            elif kind_of_event == "dwell":
                value = rng.uniform(0, 4) if kind == "bot" else rng.uniform(1, 120)
            out.append(Event(f"u{u}", kind_of_event, f"i{item}", value, t, text))
    return out


@pytest.mark.parametrize("config", [SMALL, SpamConfig()], ids=["small", "default"])
@pytest.mark.parametrize("seed", range(6))
def test_the_columns_grade_as_judge_does(config: SpamConfig, seed: int) -> None:
    events = population(seed)
    users, items = reference(events, config)
    texts = TextRegistry()  # the copies of review texts, as the reference registered them
    for e in events:
        if e.type == "review" and e.text is not None:
            texts.add(e.user, e.text)
    texts_or_none = texts if seed % 2 else None
    order = sorted(users)
    activities = [users[u] for u in order]
    features = profile_features_many([a.ratings for a in activities], items, config)
    readings = activity_readings_many(activities, config.recent_actions, items.catalogue)
    norms = fit_norms([f for f in features if f is not None], config) if seed % 3 else None
    assert (norms is not None) == bool(seed % 3) or config is SMALL
    rng = random.Random(seed)
    groups = [
        GroupReading("i1", True, 10 ** -rng.uniform(1, 12), rng.randint(5, 30), rng.uniform(0, 5))
        if rng.random() < 0.2
        else None
        for _ in order
    ]
    now = max(a.last_at for a in activities) + rng.choice([0.0, 10**6])
    graded = grade_many(
        activities, items, config, now, texts_or_none, norms, groups, features, readings
    )
    fired, statuses = 0, set()
    for i, activity in enumerate(activities):
        want = judge(
            activity, items, config, now, texts_or_none, norms, groups[i], features[i], readings[i]
        )
        assert graded.score[i] == pytest.approx(want.score, abs=1e-9), order[i]
        assert (graded.status[i], graded.rule[i]) == (want.status, want.hard_rule), order[i]
        fired += any(s.fired for s in want.signals.values())
        statuses.add(want.status)
    # not all clean: the comparison covers fired signals and every status
    assert fired and statuses == {"trusted", "suspect", "blocked"}
