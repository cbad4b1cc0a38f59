"""Where does ``recloop + model`` lose against the bandit alone? (issue 15, the model arm)

Runs, on the same visits of each seed (``benchmarks.loop``), the bandit arm the model arm
is built on (``recloop bandit, probes, ips credit``, the defaults) and the model arm itself, and
breaks the model arm's visits down by what served them: no model yet, blue without a
model while a canary runs (the fused ranking), a candidate in the green slot (the canary),
a promoted model in the blue slot. For each group: the visits, the model arm's CTR (the
true click probability of what it put on top) and the bandit arm's on the very same
visits, and the points of the whole run's lift over the blend the group costs
(``Σ (p_model - p_bandit) / Σ p_blend``). The per-visit comparison is exact (both arms
are scored by the truth), though the two arms' paths differ once a model serves (their
clicks, hence their weights, differ).

``python -m benchmarks.loop_models [--world W] [--seeds S] [--steps N]
[--setting SECTION.KEY=JSON ...]`` (``--setting``: a learning setting of the model arm
changed, e.g. ``learning.canary_fraction=0.1``; ``exploration.seed=3`` changes both arms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks import loop
from benchmarks.args import count

GROUPS = (
    "no model yet",
    "blue, no model (canary running)",
    "green: candidate (canary)",
    "blue: promoted model",
)


def group_of(version: str | None, slot: str | None) -> str:
    """The group of a visit served by ``version`` in ``slot``.

    >>> group_of(None, None), group_of(None, "blue"), group_of("m1", "green")
    ('no model yet', 'blue, no model (canary running)', 'green: candidate (canary)')
    >>> group_of("m1", "blue")
    'blue: promoted model'
    """
    if slot == "green":
        return GROUPS[2]
    if version is not None:
        return GROUPS[3]
    return GROUPS[1] if slot == "blue" else GROUPS[0]


def _extra(settings: Sequence[str]) -> dict[str, dict[str, Any]]:
    extra = {k: dict(v) for k, v in loop.PROBES_IPS.items()}
    for spec in settings:
        key, _, value = spec.partition("=")
        section, _, name = key.partition(".")
        extra[section] = {**extra.get(section, {}), name: json.loads(value)}
    return extra


async def run(
    make: Callable[[int], loop.World], seeds: int, steps: int, settings: Sequence[str]
) -> dict[str, Any]:
    extra = _extra(settings)
    bandit_extra = {k: v for k, v in extra.items() if k != "learning"}
    rows: list[tuple[str, bool, float, float, float]] = []
    notes: list[str] = []
    blend_total = 0.0
    for seed in range(seeds):
        world = make(100 + seed)
        visits = world.visits(steps, seed=200 + seed)
        blend = loop.static_arms(visits, seed)["static blend"]
        blend_total += float(blend.sum())
        bandit = await loop._run_loop(world, visits, seed, False, [], bandit_extra)
        model = await loop._run_loop(world, visits, seed, True, [], extra)
        for t, (version, slot, explored) in enumerate(model.served):
            rows.append((group_of(version, slot), explored, model.p[t], bandit.p[t], blend[t]))
        for m in model.models:
            notes.append(f"{world.name} seed {seed}: {loop._model_line(m, model.transitions)}")
        for tr in model.transitions:
            numbers = tr.get("numbers") or {}
            effect = numbers.get("relative_effect")
            notes.append(
                f"{world.name} seed {seed}: {tr['action']} {tr['from_version']} -> "
                f"{tr['to_version']} by {tr['by']}"
                + (f" (relative effect {effect:+.1%})" if effect is not None else "")
            )
        if model.live:
            b, g = model.live["blue"], model.live["green"]
            notes.append(
                f"{world.name} seed {seed}: at the end, blue {b['clicks']}/{b['impressions']}, "
                f"green {g['clicks']}/{g['impressions']}"
            )
        print(f"  seed {seed} done", file=sys.stderr, flush=True)
    return {"rows": rows, "notes": notes, "blend": blend_total}


def report(found: dict[str, Any]) -> str:
    rows, blend = found["rows"], found["blend"]
    out = [
        "| served by | visits | explored | model arm CTR | bandit arm CTR, same visits "
        "| difference | points of lift |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = 0.0
    for g in GROUPS:
        picked = [r for r in rows if r[0] == g]
        if not picked:
            continue
        m = np.array([r[2] for r in picked])
        b = np.array([r[3] for r in picked])
        explored = sum(r[1] for r in picked)
        points = float((m - b).sum()) / blend
        total += points
        out.append(
            f"| {g} | {len(picked):,} | {explored:,} | {100 * m.mean():.2f} % | "
            f"{100 * b.mean():.2f} % | {100 * (m.mean() - b.mean()):+.2f} | "
            f"{100 * points:+.1f} |"
        )
    out.append(f"\nall visits: model arm - bandit arm = {100 * total:+.1f} points of lift")
    return "\n".join([*out, "", *found["notes"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_models", description=__doc__)
    parser.add_argument("--steps", type=count, default=3_000)
    parser.add_argument("--seeds", type=count, default=3)
    parser.add_argument("--world", choices=("world", "obp"), default="world")
    parser.add_argument("--setting", action="append", default=[], metavar="SECTION.KEY=JSON")
    args = parser.parse_args(argv)
    found = asyncio.run(run(loop.WORLDS[args.world], args.seeds, args.steps, args.setting))
    print(report(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
