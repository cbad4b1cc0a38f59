"""A small-catalogue world for the spam detectors: 10 to 50 items, where re-viewing is normal.

``uv run --frozen python -m benchmarks.spam_small [--seed N] [--users N] [--items K]``

A shop or an app with a short menu (a coffee bar, a news app with a dozen
sections, a 10-product store): every session shows most of the catalogue
again, and people go back to the same few favourites day after day. Each
user has a handful of favourite items (Dirichlet weights over the catalogue,
concentrated on one to five items) and a pace from a session a week to ten
sessions a day (log-normal), so heavy users act hundreds or thousands of
times on a few dozen items. Within a session: impressions of four to eight
items, clicks, views and dwells on favourites, sometimes a like, a cart, a
purchase (repeat purchases are normal here), and now and then a rating,
re-rated later at times. Timing is human, as in ``benchmarks.spam_eval``
(diurnal sessions in the user's time zone, bursty gaps).

Bots are the click bots and floods of ``benchmarks.spam_eval`` aimed at the
same catalogue. Every user is judged at the end; the report gives the
genuine users' false-positive rate overall and for the heaviest tenth, how
often each behaviour signal fired on them, and the bots' recall. Results:
docs/spam.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.spam_eval import (
    DAY,
    START,
    Event,
    Population,
    World,
    _session_starts,
    bot_events,
    make_world,
)
from recloop.core.spam import TRUSTED, SpamConfig, Verdict

SMALL_BOTS: tuple[str, ...] = ("periodic_bot", "poisson_bot", "flood_bot")


def small_user(
    world: World, uid: str, days: float, rng: np.random.Generator
) -> tuple[list[Event], int]:
    """One regular of a small catalogue: sessions, re-views of favourites; (events, sessions)."""
    n = world.n_items
    favourites = rng.dirichlet(np.full(n, 0.3)) * 0.7 + 0.3 * world.popularity
    favourites /= favourites.sum()
    per_day = float(min(max(rng.lognormal(math.log(0.8), 1.1), 1 / 7), 10.0))
    sessions = max(int(rng.poisson(per_day * days)), 1)
    starts = _session_starts(rng, sessions, days, int(rng.integers(-6, 7)))
    rates = rng.random() < 0.6  # some users never rate
    ids = world.item_ids
    events: list[Event] = []
    for t0 in starts:
        t = float(t0)
        for _ in range(1 + int(rng.poisson(1.5))):
            shown = rng.choice(n, size=min(int(rng.integers(4, 9)), n), replace=False)
            for i in shown:
                events.append((t, uid, "impression", ids[int(i)], None, None))
            t += float(rng.lognormal(math.log(5.0), 0.8))
            if rng.random() < 0.2:
                events.append((t, uid, "skip", ids[int(shown[0])], None, None))
                continue
            item = ids[int(rng.choice(n, p=favourites))]
            events.append((t, uid, "click", item, None, None))
            t += float(rng.uniform(0.1, 0.8))
            events.append((t, uid, "view", item, None, None))
            dwell = float(min(rng.lognormal(math.log(30.0), 1.0), 1800.0))
            t += dwell
            events.append((t, uid, "dwell", item, round(dwell, 2), None))
            roll = rng.random()
            if roll < 0.08:
                t += float(rng.uniform(1.0, 5.0))
                events.append((t, uid, "like", item, None, None))
            elif roll < 0.2:
                t += float(rng.uniform(2.0, 20.0))
                events.append((t, uid, "add_to_cart", item, None, None))
                if rng.random() < 0.6:
                    t += float(rng.lognormal(math.log(40.0), 0.5))
                    events.append((t, uid, "purchase", item, None, None))
            if rates and rng.random() < 0.05:
                taste = 3.0 + 2.5 * (favourites[int(item[1:])] * n - 1) / (n - 1)
                value = float(min(max(round(taste + rng.normal(0.0, 0.8)), 1), 5))
                t += float(rng.lognormal(math.log(5.0), 0.6))
                events.append((t, uid, "rating", item, value, None))
            t += float(rng.lognormal(math.log(15.0), 1.0))
    return events, sessions


@dataclass(frozen=True, slots=True)
class SmallReport:
    items: int
    genuine: int
    events: int
    flagged: int
    heavy: int  # the heaviest tenth of the genuine users, by actions
    heavy_flagged: int
    fired: dict[str, int]  # behaviour signal -> genuine users it fired on
    bots: dict[str, tuple[int, int]]  # model -> (bots, flagged)
    median_actions: float
    heavy_min_actions: int

    @property
    def fpr(self) -> float:
        return self.flagged / self.genuine


def _flagged(verdict: Verdict) -> bool:
    return verdict.status != TRUSTED


def evaluate(
    seed: int = 7,
    users: int = 500,
    items: int | None = None,
    days: float = 28.0,
    bots: int = 20,
    config: SpamConfig | None = None,
) -> SmallReport:
    """Build the world (``items`` drawn from 10..50 when None), feed it, judge everyone."""
    config = SpamConfig() if config is None else config
    rng = np.random.default_rng([seed, 51])
    size = int(rng.integers(10, 51)) if items is None else items
    world = make_world(size, rng, genres=3)
    genuine_ids = [f"s{u}" for u in range(users)]
    events: list[Event] = []
    for uid in genuine_ids:
        events += small_user(world, uid, days, rng)[0]
    end = START + days * DAY
    bot_ids: dict[str, list[str]] = {}
    for index, model in enumerate(SMALL_BOTS):
        prefix = f"{model}-small-"
        events += bot_events(model, world, bots, prefix, end, np.random.default_rng([seed, index]))
        bot_ids[model] = [f"{prefix}{b}" for b in range(bots)]
    population = Population(config)
    population.feed(events)
    verdicts = population.judge([*genuine_ids, *(u for ids in bot_ids.values() for u in ids)], end)
    actions = {u: population.users[u].actions for u in genuine_ids}
    ranked = sorted(genuine_ids, key=lambda u: -actions[u])
    heavy = ranked[: max(len(ranked) // 10, 1)]
    fired: dict[str, int] = {}
    for u in genuine_ids:
        for name, signal in verdicts[u].signals.items():
            if signal.fired:
                fired[name] = fired.get(name, 0) + 1
    return SmallReport(
        items=size,
        genuine=users,
        events=sum(1 for e in events if e[1].startswith("s")),
        flagged=sum(_flagged(verdicts[u]) for u in genuine_ids),
        heavy=len(heavy),
        heavy_flagged=sum(_flagged(verdicts[u]) for u in heavy),
        fired=fired,
        bots={m: (len(ids), sum(_flagged(verdicts[u]) for u in ids)) for m, ids in bot_ids.items()},
        median_actions=float(np.median(list(actions.values()))),
        heavy_min_actions=actions[heavy[-1]],
    )


def table(reports: Sequence[tuple[int, SmallReport]]) -> str:
    """One row per seed: catalogue, FPR overall and for the heaviest tenth, bots caught."""
    rows = [
        "| seed | items | genuine users (median actions) | FPR | FPR, heaviest tenth "
        "(≥ actions) | signals fired on genuine users | bots flagged |",
        "|---:|---:|---:|---:|---:|---|---|",
    ]
    for seed, r in reports:
        fired = ", ".join(f"{k} {v}" for k, v in sorted(r.fired.items())) or "none"
        caught = ", ".join(f"{m.replace('_', ' ')} {f}/{n}" for m, (n, f) in r.bots.items())
        rows.append(
            f"| {seed} | {r.items} | {r.genuine} ({r.median_actions:.0f}) "
            f"| {100 * r.fpr:.1f} % ({r.flagged}) "
            f"| {100 * r.heavy_flagged / r.heavy:.1f} % (≥ {r.heavy_min_actions}) "
            f"| {fired} | {caught} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spam_small", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, help="catalogue size (default: drawn from 10..50)")
    args = parser.parse_args(argv)
    reports = [(s, evaluate(s, args.users, args.items)) for s in args.seeds]
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
