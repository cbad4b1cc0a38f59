"""``python -m benchmarks.exploration``: what exploration costs, uniform against adaptive (#15).

On simulated worlds (``benchmarks.world``: users, items and true click
probabilities), each of ``--impressions`` contexts (a user, 20 random candidates
ranked by the world's no-model score) is scored under five top-slot policies, with
the expected click rate computed exactly from the true click probabilities (no
click noise, so policies are compared on the very same contexts):

- ``greedy``: the greedy top, no exploration;
- ``uniform``: the specification's ε-greedy, ε per segment (``exploration.epsilon``),
  a uniformly random other candidate on top;
- ``decay``: the same, ε shrunk by the user's interactions (``evidence_half``);
- ``softmax``: ε per segment, the explored item among the next ``top`` by a softmax
  of their scores (``temperature``);
- ``adaptive``: both (recloop's default).

For each: the mean ε, the top-slot click rate, the clicks lost to exploration per
1,000 impressions against ``greedy`` (the regret exploration pays), and the share
of the uniform policy's loss saved. Means over ``--worlds`` worlds, with their
range. This prices exploration only: what exploring earns (evidence for the bandit
and for training) is not in it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from benchmarks.world import SimImpression, make_world, simulate, true_value
from recloop.config import ExplorationSettings
from recloop.core.exploration import effective_epsilon, promotion_probabilities, top_probabilities

Vector = npt.NDArray[np.float64]
Policy = Callable[[SimImpression, int], tuple[Vector, float]]


def policies(settings: ExplorationSettings) -> dict[str, Policy]:
    """Each policy: (top-slot probabilities, ε) for an impression and the user's interactions."""
    eps = settings.epsilon

    def make(decay: bool, softmax: bool) -> Policy:
        def policy(i: SimImpression, interactions: int) -> tuple[Vector, float]:
            assert i.scores is not None
            n = len(i.candidates)
            e = eps[i.segment]
            if decay:
                e = effective_epsilon(e, interactions, settings.evidence_half)
            if softmax:
                q = promotion_probabilities(i.scores, settings.top, settings.temperature)
            else:
                q = promotion_probabilities(i.scores, n, None)
            return top_probabilities(q, e), e

        return policy

    return {
        "greedy": lambda i, _: (
            top_probabilities(promotion_probabilities(i.scores, 1, None), 0.0),
            0.0,
        ),
        "uniform": make(False, False),
        "decay": make(True, False),
        "softmax": make(False, True),
        "adaptive": make(True, True),
    }


def run(worlds: int, impressions: int, candidates: int) -> str:
    settings = ExplorationSettings()
    found: dict[str, list[tuple[float, float, float]]] = {}
    for seed in range(worlds):
        world = make_world(seed=100 + seed, n_users=1_000, n_items=300)
        users = {u.user_id: u.features.interactions for u in world.users}
        sim = simulate(
            world, impressions, epsilon=0.0, n_candidates=candidates, slate_size=1, seed=seed
        )
        for name, policy in policies(settings).items():
            pairs = [policy(i, users[i.user_id]) for i in sim.impressions]
            value = true_value(sim.impressions, [p for p, _ in pairs])
            found.setdefault(name, []).append((float(np.mean([e for _, e in pairs])), value, 0.0))
    greedy = [v for _, v, _ in found["greedy"]]
    uniform_loss = [g - v for g, (_, v, _) in zip(greedy, found["uniform"], strict=True)]
    lines = [
        f"Expected top-slot clicks, {worlds} worlds x {impressions} contexts x {candidates} "
        f"candidates (`python -m benchmarks.exploration --worlds {worlds} --impressions "
        f"{impressions}`); exploration settings: defaults (`top` {settings.top}, "
        f"`temperature` {settings.temperature}, `evidence_half` {settings.evidence_half}).",
        "",
        "| policy | mean ε | top-slot CTR | clicks lost / 1,000 vs greedy | uniform's loss saved |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rows in found.items():
        loss = [1000 * (g - v) for g, (_, v, _) in zip(greedy, rows, strict=True)]
        saved = [
            1 - (g - v) / u for g, (_, v, _), u in zip(greedy, rows, uniform_loss, strict=True)
        ]
        lines.append(
            f"| {name} | {np.mean([e for e, _, _ in rows]):.3f} "
            f"| {100 * np.mean([v for _, v, _ in rows]):.2f} % "
            f"| {np.mean(loss):.2f} ({min(loss):.2f} to {max(loss):.2f}) "
            f"| {100 * np.mean(saved):.0f} % ({100 * min(saved):.0f} to {100 * max(saved):.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exploration", description=__doc__)
    parser.add_argument("--worlds", type=int, default=3)
    parser.add_argument("--impressions", type=int, default=4_000)
    parser.add_argument("--candidates", type=int, default=20)
    args = parser.parse_args(argv)
    print(run(args.worlds, args.impressions, args.candidates))


if __name__ == "__main__":
    main()
