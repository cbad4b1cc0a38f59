"""``python -m benchmarks.credit``: why crediting by share cannot order the algorithms, and probes
can (#15 item 3).

A world where each algorithm's own top pick has a known click rate: per visit,
``--items`` items with true click rates ``c ~ Beta(2, 60)``; algorithm ``k``
scores them ``r_k z + sqrt(1 - r_k²) noise`` (``z`` the standardised rates,
``r`` 0.9, 0.6, 0.3, 0: the last is random) and proposes its top ``--proposed``.
recloop's fusion (``core.ranking.fuse``, percentile, equal weights, no affinity)
puts the best-fused item on top, and each proposing algorithm is credited its
share of it (``Scored.shares``), as ``rank``'s ``credit`` does in expectation.

Probes (``core.exploration.probe``, ``exploration.probe``): on each visit one
algorithm is drawn with probability equal to its weight (equal weights here, each
draw's probability is what ``rank`` logs as ``credit_probability``), its own top
pick is shown and credited to it alone. Its credited click rate is the click rate
of the probes it drew: an unbiased estimate of its own top pick's.

Printed per algorithm: the click rate of its own top pick (what the bandit should
learn), the click rate it is credited with (share-weighted click rate of the
items shown), its share of all credit, the click rate probes credit it with and
its share of the probes. Expected values per shown item (the true rates, no click
noise), so the comparison is exact up to the sampled visits and probe draws.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.args import count
from recloop.core.ranking import Candidate, fuse

QUALITY = {"collaborative": 0.9, "content_based": 0.6, "popularity": 0.3, "random": 0.0}


def run(visits: int, items: int, proposed: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    own = {k: 0.0 for k in QUALITY}
    credited = {k: 0.0 for k in QUALITY}
    shares = {k: 0.0 for k in QUALITY}
    weights = dict.fromkeys(QUALITY, 1.0)
    probed = {k: 0.0 for k in QUALITY}
    probes = {k: 0 for k in QUALITY}
    names = list(QUALITY)
    chance = np.full(len(names), 1.0 / len(names))  # each algorithm's weight share
    probe_rng = np.random.default_rng(seed + 1)  # apart: the visits stay those of `rng`
    for _ in range(visits):
        c = rng.beta(2.0, 60.0, items)
        z = (c - c.mean()) / c.std()
        candidates = []
        picks = {}
        for name, rho in QUALITY.items():
            s = rho * z + np.sqrt(1.0 - rho * rho) * rng.normal(size=items)
            top = np.argsort(-s)[:proposed]
            own[name] += c[top[0]]
            picks[name] = c[top[0]]
            candidates += [Candidate(f"i{j}", name, float(s[j])) for j in top]
        drawn = names[int(probe_rng.choice(len(names), p=chance))]
        probed[drawn] += picks[drawn]
        probes[drawn] += 1
        best = fuse(candidates, weights, {}, affinity_weight=0.0, method="percentile")[0]
        rate = c[int(best.item_id[1:])]
        for name, share in zip(best.algorithms, best.shares, strict=True):
            credited[name] += share * rate
            shares[name] += share
    rows = [
        f"{visits:,} visits, {items} items each, top {proposed} proposed per algorithm "
        f"(`python -m benchmarks.credit --visits {visits} --seed {seed}`)",
        "",
        "| algorithm (r) | own top pick's CTR | CTR credited by share | share of credit "
        "| CTR credited by probes | share of probes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rho in QUALITY.items():
        by_probe = f"{100 * probed[name] / probes[name]:.2f} %" if probes[name] else "—"
        rows.append(
            f"| {name} ({rho:g}) | {100 * own[name] / visits:.2f} % "
            f"| {100 * credited[name] / shares[name]:.2f} % | {shares[name] / visits:.3f} "
            f"| {by_probe} | {probes[name] / visits:.3f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.credit", description=__doc__)
    parser.add_argument("--visits", type=count, default=5_000)
    parser.add_argument("--items", type=count, default=40)
    parser.add_argument("--proposed", type=count, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(run(args.visits, args.items, args.proposed, args.seed))


if __name__ == "__main__":
    main()
