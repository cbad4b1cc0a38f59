"""An independent evaluation world for the shilling detectors: the textbook attack models.

``uv run --frozen python -m benchmarks.spam_textbook [--seeds N ...] [--quick]``

Built apart from ``benchmarks.spam_eval``'s world, and different in structure,
not only in seed, the way the issue's independent evaluation was:

- **A rating site, ratings only.** No browsing, no implicit events, no
  reviews: nothing but the rating profile (and its timing) can betray an
  attacker. A catalogue of a few hundred items (300).
- **Items**: exposure drawn log-normal (sd 1.2; not Zipf, not tied to
  quality), eight segments (genres); a true quality drawn from a skewed
  distribution (Beta(5, 2): most items are liked, a J-shaped site).
- **Genuine raters**: a few hundred (400), each rating 15 to 45 items
  (uniform), chosen by exposure^β (β ∈ [0.3, 1]) and a liking for one or
  two segments; ratings from an ordinal model, each user with their own
  cut-points (lenient, harsh, or extreme raters), not a rounded Gaussian.
  They arrive throughout 60 days (so some are new when the attack comes)
  and rate in one to four sessions, seconds to minutes between ratings.
- **Attacks** (Mobasher et al. 2007): random (filler ~ N(system mean,
  system sd)), average (filler ~ N(item mean, item sd)), bandwagon (the 3
  most rated items at the maximum, random filler), segment (4 popular items
  of the target's segment at the maximum, filler at the minimum), love/hate
  (filler at the maximum, target at the minimum), reverse bandwagon (the 3
  worst-rated among widely rated items at the minimum, random filler, nuke).
  Filler items uniform at random; filler size 3 % or 5 % of the catalogue
  (9 or 15 items; profiles of 10 to 19 ratings); attack size 3 %, 5 % or
  10 % of the genuine raters. Push targets: items with 5 to 30 ratings
  averaging below the system mean; nuke targets: items with at least 15
  ratings averaging above it. Attackers know every item's mean and sd.
- **Timing**: *bot*, each attacker's ratings one to three seconds apart in
  one burst (one request each), all attackers within an hour; or *human*,
  one to three sessions over the last ten days, 10 to 90 s between ratings.

Everything is judged at the end of the period, in process, as in
``benchmarks.spam_eval`` (the same :class:`Population`). The detectors were
not tuned on this world; results and the distributions of the best signals:
docs/spam.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from benchmarks.spam_eval import (
    ATTACK_MODELS,
    DAY,
    LEFT_OUT,
    START,
    Cell,
    Event,
    Population,
    cell_table,
    flagged_without,
    summary_table,
)
from recloop.core.spam import (
    TRUSTED,
    SpamConfig,
    Verdict,
    fit_norms,
    groups,
    profile_features,
)

FloatArray = npt.NDArray[np.float64]
NUKE = frozenset({"love_hate", "reverse_bandwagon"})
TIMINGS = ("bot", "human")


@dataclass(frozen=True, slots=True)
class TextbookSizes:
    users: int = 400
    items: int = 300
    days: float = 60.0
    attack_sizes: tuple[float, ...] = (0.03, 0.05, 0.10)
    filler_sizes: tuple[float, ...] = (0.03, 0.05)
    segments: int = 8


@dataclass(slots=True)
class Catalogue:
    exposure: FloatArray  # choice weights, sum 1
    quality: FloatArray  # latent, 0..1
    segment: npt.NDArray[np.int64]

    @property
    def size(self) -> int:
        return len(self.exposure)


def make_catalogue(sizes: TextbookSizes, rng: np.random.Generator) -> Catalogue:
    exposure = rng.lognormal(0.0, 1.2, sizes.items)
    return Catalogue(
        exposure / exposure.sum(),
        rng.beta(5.0, 2.0, sizes.items),
        rng.integers(0, sizes.segments, sizes.items),
    )


def _cutpoints(rng: np.random.Generator) -> FloatArray:
    """A user's four thresholds on the latent liking scale: lenient, harsh or extreme."""
    kind = rng.choice(3, p=[0.5, 0.3, 0.2])
    base = np.array([0.25, 0.45, 0.62, 0.8])
    if kind == 1:  # harsh: higher thresholds
        base = base + 0.08
    elif kind == 2:  # extreme: wide middle thresholds, quick to the ends
        base = np.array([0.35, 0.4, 0.45, 0.6])
    return np.sort(base + rng.normal(0.0, 0.04, 4))


def genuine_rater(
    cat: Catalogue, uid: str, sizes: TextbookSizes, rng: np.random.Generator
) -> list[Event]:
    n = int(rng.integers(15, 46))
    beta = float(rng.uniform(0.3, 1.0))
    liked = rng.choice(sizes.segments, size=int(rng.integers(1, 3)), replace=False)
    fondness = np.where(np.isin(cat.segment, liked), 1.0, 0.0)
    logits = beta * np.log(cat.exposure) + 1.2 * fondness
    rated = np.argsort(-(logits + rng.gumbel(size=cat.size)))[:n]
    liking = cat.quality[rated] + 0.15 * fondness[rated] + rng.normal(0.0, 0.15, n)
    values = 1.0 + np.searchsorted(_cutpoints(rng), liking).astype(np.float64)
    arrive = START + float(rng.uniform(0.0, sizes.days - 1.0)) * DAY
    sessions = int(rng.integers(1, 5))
    starts = np.sort(arrive + rng.uniform(0.0, min(20.0, sizes.days) * DAY, sessions))
    starts = np.minimum(starts, START + sizes.days * DAY - 3 * 3600.0)
    plan = np.sort(rng.integers(0, sessions, n))
    events: list[Event] = []
    for s in range(sessions):
        t = float(starts[s])
        for j in np.flatnonzero(plan == s):
            events.append((t, uid, "rating", f"t{int(rated[j])}", float(values[j]), None))
            t += float(rng.lognormal(math.log(25.0), 1.0))
    return events


@dataclass(frozen=True, slots=True)
class Known:
    """What attackers know: system mean and sd, every item's mean, sd and count."""

    mean: float
    std: float
    item_mean: FloatArray
    item_std: FloatArray
    item_count: FloatArray


def known(events: Sequence[Event], items: int) -> Known:
    n = np.zeros(items)
    s = np.zeros(items)
    q = np.zeros(items)
    for _, _, _, item, value, _ in events:
        i = int(item[1:])
        assert value is not None
        n[i] += 1
        s[i] += value
        q[i] += value * value
    values = np.array([e[4] for e in events], dtype=np.float64)
    mean = np.where(n > 0, s / np.maximum(n, 1), values.mean())
    var = np.where(n > 1, (q - s * s / np.maximum(n, 1)) / np.maximum(n - 1, 1), values.var())
    return Known(float(values.mean()), float(values.std()), mean, np.sqrt(var), n)


def _clip(x: float) -> float:
    return float(min(max(round(x), 1), 5))


def attack(
    model: str,
    cat: Catalogue,
    know: Known,
    count: int,
    filler_size: float,
    timing: str,
    prefix: str,
    end: float,
    rng: np.random.Generator,
) -> list[Event]:
    """``count`` attack profiles of ``model`` against one target, with ``timing``."""
    if model in NUKE:
        pool = np.flatnonzero((know.item_count >= 15) & (know.item_mean > know.mean))
    else:
        pool = np.flatnonzero(
            (know.item_count >= 5) & (know.item_count <= 30) & (know.item_mean < know.mean)
        )
    if len(pool) == 0:
        pool = np.argsort(know.item_count)[: max(cat.size // 10, 1)]
    target = int(rng.choice(pool))
    by_count = np.argsort(-know.item_count)
    selected: list[int] = []
    if model == "bandwagon":
        selected = [int(i) for i in by_count[:3]]
    elif model == "reverse_bandwagon":
        wide = by_count[: max(cat.size // 5, 3)]
        selected = [int(i) for i in wide[np.argsort(know.item_mean[wide])[:3]]]
    elif model == "segment":
        mine = [int(i) for i in by_count if cat.segment[i] == cat.segment[target] and i != target]
        selected = mine[:4]
    taken = {target, *selected}
    candidates = np.array([i for i in range(cat.size) if i not in taken])
    fillers = max(round(filler_size * cat.size), 1)
    top, bottom = 5.0, 1.0
    events: list[Event] = []
    if timing == "bot":
        burst = end - float(rng.uniform(2.0, 6.0)) * 3600.0
    for a in range(count):
        uid = f"{prefix}{a}"
        profile: list[tuple[int, float]] = []
        for i in rng.choice(candidates, size=fillers, replace=False):
            i = int(i)
            if model == "average":
                value = _clip(rng.normal(know.item_mean[i], know.item_std[i]))
            elif model == "segment":
                value = bottom
            elif model == "love_hate":
                value = top
            else:
                value = _clip(rng.normal(know.mean, know.std))
            profile.append((i, value))
        chosen = bottom if model == "reverse_bandwagon" else top
        profile += [(i, chosen) for i in selected]
        profile.append((target, bottom if model in NUKE else top))
        order = [profile[int(j)] for j in rng.permutation(len(profile))]
        if timing == "bot":
            t = burst + float(rng.uniform(0.0, 3600.0))
            for i, value in order:
                events.append((t, uid, "rating", f"t{i}", value, None))
                t += float(rng.uniform(1.0, 3.0))
        else:
            sessions = int(rng.integers(1, 4))
            starts = np.sort(rng.uniform(end - 10 * DAY, end - 3600.0, sessions))
            cuts = np.sort(rng.integers(0, sessions, len(order)))
            for s in range(sessions):
                t = float(starts[s])
                for j in np.flatnonzero(cuts == s):
                    i, value = order[int(j)]
                    events.append((t, uid, "rating", f"t{i}", value, None))
                    t += float(rng.uniform(10.0, 90.0))
    return events


def _flagged(verdict: Verdict) -> bool:
    return verdict.status != TRUSTED


@dataclass(slots=True)
class TextbookWorld:
    sizes: TextbookSizes
    seed: int
    config: SpamConfig
    cat: Catalogue = field(init=False)
    genuine: list[Event] = field(init=False)
    genuine_ids: list[str] = field(init=False)
    know: Known = field(init=False)
    base: Population = field(init=False)
    end: float = field(init=False)

    def build(self) -> None:
        rng = np.random.default_rng([self.seed, 2007])
        self.cat = make_catalogue(self.sizes, rng)
        self.end = START + self.sizes.days * DAY
        self.genuine_ids = [f"r{u}" for u in range(self.sizes.users)]
        self.genuine = []
        for uid in self.genuine_ids:
            self.genuine += genuine_rater(self.cat, uid, self.sizes, rng)
        self.know = known(self.genuine, self.cat.size)
        self.base = Population(self.config)
        self.base.feed(self.genuine)

    def attackers(
        self, model: str, attack_size: float, filler_size: float, timing: str, index: int
    ) -> tuple[list[Event], list[str]]:
        rng = np.random.default_rng([self.seed, 2007, index])
        count = max(round(attack_size * self.sizes.users), 1)
        prefix = f"{model}-{timing}-{index}-"
        events = attack(
            model, self.cat, self.know, count, filler_size, timing, prefix, self.end, rng
        )
        return events, [f"{prefix}{a}" for a in range(count)]

    def verdicts(self, events: list[Event], bad: list[str]) -> dict[str, Verdict]:
        population = self.base.fork()
        population.feed(events)
        return population.judge([*self.genuine_ids, *bad], self.end)

    def run_cell(
        self, model: str, attack_size: float, filler_size: float, timing: str, index: int
    ) -> Cell:
        events, bad = self.attackers(model, attack_size, filler_size, timing, index)
        verdicts = self.verdicts(events, bad)
        alarms = sum(_flagged(verdicts[u]) for u in self.genuine_ids)
        return Cell(
            model,
            attack_size,
            filler_size,
            len(bad),
            sum(_flagged(verdicts[u]) for u in bad),
            sum(verdicts[u].status == "blocked" for u in bad),
            len(self.genuine_ids),
            alarms,
        )


def run(
    sizes: TextbookSizes, seed: int, config: SpamConfig, log: Callable[[str], None]
) -> dict[str, list[Cell]]:
    """Every (model, attack size, filler size) cell, per timing."""
    world = TextbookWorld(sizes, seed, config)
    started = time.perf_counter()
    world.build()
    out: dict[str, list[Cell]] = {t: [] for t in TIMINGS}
    index = 0
    for timing in TIMINGS:
        for model in ATTACK_MODELS:
            for a in sizes.attack_sizes:
                for f in sizes.filler_sizes:
                    index += 1
                    out[timing].append(world.run_cell(model, a, f, timing, index))
        log(f"textbook world, seed {seed}, {timing} timing: {time.perf_counter() - started:.0f} s")
    return out


def report(seed: int, cells: dict[str, list[Cell]], sizes: TextbookSizes) -> str:
    parts = []
    for timing, mine in cells.items():
        parts += [
            f"Textbook world, seed {seed}, {timing} timing: {sizes.users} genuine raters "
            f"(15 to 45 ratings), {sizes.items} items; attack sizes "
            + ", ".join(f"{a:.0%}" for a in sizes.attack_sizes)
            + ", filler sizes "
            + ", ".join(f"{f:.0%}" for f in sizes.filler_sizes)
            + ".",
            "",
            summary_table(mine),
            "",
            cell_table(mine),
        ]
    return "\n".join(parts)


_STATS: Final = ("popularity", "deviation", "agreement", "extremity", "mean_var_ratio")


def distributions(
    seed: int, config: SpamConfig, attack_size: float = 0.05, filler_size: float = 0.03
) -> str:
    """Why per-profile statistics cannot separate small attack profiles: the 10th, 50th
    and 90th percentiles of each statistic for genuine raters and for each model's
    attackers (bot timing), and how often the group detector holds each attacker."""
    world = TextbookWorld(TextbookSizes(), seed, config)
    world.build()
    rows = [
        "| profiles | n | " + " | ".join(_STATS) + " | in a group |",
        "|---|---:|" + "---:|" * len(_STATS) + "---:|",
    ]

    def line(label: str, population: Population, users: Sequence[str]) -> str:
        feats = [
            f for u in users if (f := profile_features(population.users[u].ratings,
                                                       population.items, config))
        ]  # fmt: skip
        found = groups(population.users, config)
        cells = []
        for name in _STATS:
            values = np.array([getattr(f, name) for f in feats], dtype=np.float64)
            values = values[np.isfinite(values)]
            q = np.percentile(values, [10, 50, 90]) if len(values) else [math.nan] * 3
            cells.append(" / ".join(f"{x:.2f}" for x in q))
        sizes = np.median([f.n for f in feats])
        grouped = sum(u in found for u in users) / len(users)
        return f"| {label} | {sizes:.0f} | " + " | ".join(cells) + f" | {grouped:.0%} |"

    rows.append(line("genuine", world.base, world.genuine_ids))
    for index, model in enumerate(ATTACK_MODELS):
        events, bad = world.attackers(model, attack_size, filler_size, "bot", 900 + index)
        population = world.base.fork()
        population.feed(events)
        rows.append(line(model.replace("_", " "), population, bad))
    return "\n".join(
        [
            f"Textbook world, seed {seed}: percentiles 10 / 50 / 90 of each profile statistic "
            f"(core.spam.ProfileFeatures), genuine raters and each model's attackers "
            f"(attack size {attack_size:.0%}, filler {filler_size:.0%}, bot timing).",
            "",
            *rows,
        ]
    )


def false_alarms(seed: int, config: SpamConfig) -> str:
    """Why genuine raters are flagged: over every cell of both timings, how often each
    signal fired on a flagged genuine rater, and the percentiles of the norm z of the two
    statistics whose gates were lowest (``norm_z0_popularity``, ``norm_z0_focus``) for
    flagged and unflagged genuine raters and for each model's attackers. A report: no
    number of the detector is read from it."""
    sizes = TextbookSizes()
    world = TextbookWorld(sizes, seed, config)
    world.build()
    fired: dict[str, int] = {}
    alarms = judged = 0
    zs: dict[str, dict[str, list[float]]] = {}

    def note(kind: str, name: str, value: float) -> None:
        if math.isfinite(value):
            zs.setdefault(kind, {}).setdefault(name, []).append(value)

    index = 0
    for timing in TIMINGS:
        for model in ATTACK_MODELS:
            for a in sizes.attack_sizes:
                for f in sizes.filler_sizes:
                    index += 1
                    events, bad = world.attackers(model, a, f, timing, index)
                    population = world.base.fork()
                    population.feed(events)
                    verdicts = population.judge([*world.genuine_ids, *bad], world.end)
                    norms = fit_norms(
                        (
                            ft
                            for act in population.users.values()
                            if (ft := profile_features(act.ratings, population.items, config))
                        ),
                        config,
                    )
                    for u in [*world.genuine_ids, *bad]:
                        v = verdicts[u]
                        genuine = not u.startswith(f"{model}-")
                        kind = (
                            ("genuine, flagged" if _flagged(v) else "genuine, not flagged")
                            if genuine
                            else model.replace("_", " ")
                        )
                        if genuine:
                            judged += 1
                            if _flagged(v):
                                alarms += 1
                                for name, sig in v.signals.items():
                                    if sig.fired and sig.weight > 0:
                                        fired[name] = fired.get(name, 0) + 1
                        ft = v.features
                        if norms is not None and ft is not None:
                            note(kind, "popularity", norms.z("popularity", ft.popularity, ft.n))
                            note(
                                kind, "target_focus", norms.z("target_focus", ft.target_focus, ft.n)
                            )
    rows = [
        "| signal | fired on flagged genuine raters |",
        "|---|---:|",
        *(
            f"| `{name}` | {count} of {alarms} |"
            for name, count in sorted(fired.items(), key=lambda kv: -kv[1])
        ),
        "",
        "| raters | n | popularity z (10 / 50 / 90) | target_focus z (10 / 50 / 90) |",
        "|---|---:|---:|---:|",
    ]
    for kind, found in zs.items():
        cells = []
        for name in ("popularity", "target_focus"):
            values = found.get(name, [])
            cells.append(
                " / ".join(f"{q:.2f}" for q in np.percentile(values, [10, 50, 90]))
                if values
                else "-"
            )
        n = max(len(v) for v in found.values())
        rows.append(f"| {kind} | {n} | {cells[0]} | {cells[1]} |")
    return "\n".join(
        [
            f"Textbook world, seed {seed}: {alarms} false alarms in {judged} genuine judgements "
            f"({alarms / judged:.1%}) over {index} cells (both timings).",
            "",
            *rows,
        ]
    )


def leave_one_out(seed: int, config: SpamConfig, timing: str = "bot") -> str:
    """``benchmarks.spam_eval.leave_one_out`` on this world: one cell per model (5 % /
    3 %), the attackers and false alarms still flagged without each signal of
    :data:`~benchmarks.spam_eval.LEFT_OUT`."""
    world = TextbookWorld(TextbookSizes(), seed, config)
    world.build()
    rows = [
        "| model | flagged | " + " | ".join(f"without `{n}`" for n in LEFT_OUT) + " |",
        "|---|---:|" + "---:|" * len(LEFT_OUT),
    ]
    alarms: dict[str, int] = dict.fromkeys(("all", *LEFT_OUT), 0)
    for index, model in enumerate(ATTACK_MODELS, start=900):
        events, bad = world.attackers(model, 0.05, 0.03, timing, index)
        verdicts = world.verdicts(events, bad)
        flagged = [u for u in bad if _flagged(verdicts[u])]
        kept = [sum(flagged_without(verdicts[u], [n], config) for u in flagged) for n in LEFT_OUT]
        rows.append(
            f"| {model.replace('_', ' ')} | {len(flagged)} of {len(bad)} | "
            + " | ".join(str(k) for k in kept)
            + " |"
        )
        for u in world.genuine_ids:
            if _flagged(verdicts[u]):
                alarms["all"] += 1
                for n in LEFT_OUT:
                    alarms[n] += flagged_without(verdicts[u], [n], config)
    rows.append(
        f"| genuine (false alarms, {len(ATTACK_MODELS)} cells) | {alarms['all']} | "
        + " | ".join(str(alarms[n]) for n in LEFT_OUT)
        + " |"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spam_textbook", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[11])
    parser.add_argument(
        "--distributions", action="store_true", help="the statistics' percentiles, per model"
    )
    parser.add_argument(
        "--leave-one-out",
        action="store_true",
        help="attackers and false alarms still flagged without each group-era signal",
    )
    parser.add_argument(
        "--false-alarms", action="store_true", help="which signals flag genuine raters, and why"
    )
    parser.add_argument(
        "--one-z0",
        type=float,
        help="one norm z0 for every profile statistic (SpamConfig.norm_z0, "
        "norm_z0_popularity, norm_z0_focus)",
    )
    args = parser.parse_args(argv)
    sizes = TextbookSizes()
    config = SpamConfig()
    if args.one_z0 is not None:
        z0 = args.one_z0
        config = replace(config, norm_z0=z0, norm_z0_popularity=z0, norm_z0_focus=z0)
    if args.leave_one_out:
        for seed in args.seeds:
            print(leave_one_out(seed, config))
        return 0
    if args.false_alarms:
        for seed in args.seeds:
            print(false_alarms(seed, config))
        return 0
    if args.distributions:
        for seed in args.seeds:
            print(distributions(seed, config))
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    for seed in args.seeds:
        print(report(seed, run(sizes, seed, config, log), sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
