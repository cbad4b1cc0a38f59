"""``FastPaths`` finds the hot routes as Starlette's routing does: the same route, the
same path parameters, for any path (the router, through each route's ``matches``, is the
oracle)."""

from __future__ import annotations

import random

from starlette.routing import Match

from recloop.api.app import PREFIX
from recloop.api.lean import FastPaths, LeanRoute, lean_routes
from recloop.api.routers import feedback


def _routes() -> list[LeanRoute]:
    return [
        LeanRoute(f"{PREFIX}/feedback", "POST", feedback.lean_post_feedback, status=202),
        *lean_routes(PREFIX),
    ]


def _router_match(routes: list[LeanRoute], method: str, path: str) -> object:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route.endpoint, child["path_params"]
    return None


def test_the_same_route_and_parameters_as_the_router() -> None:
    routes = _routes()
    fast = FastPaths(routes, {})
    rng = random.Random(11)
    segments = [
        "users",
        "experiments",
        "assignment",
        "weights",
        "strategy",
        "preferences",
        "rank",
        "feedback",
        "api",
        "v1",
        "learning",
        "u1",
        "",
        "x y",
        "%2F",
        "é",
    ]
    templates = [r.path for r in routes]
    paths = []
    for _ in range(4_000):
        if rng.random() < 0.6:  # a template, parameters filled in (maybe empty), maybe altered
            parts = [
                rng.choice(segments) if p.startswith("{") else p
                for p in rng.choice(templates).split("/")
            ]
            if rng.random() < 0.3:
                parts[rng.randrange(len(parts))] = rng.choice(segments)
            if rng.random() < 0.1:
                parts.insert(rng.randrange(1, len(parts) + 1), rng.choice(segments))
        else:
            parts = [""] + [rng.choice(segments) for _ in range(rng.randint(0, 8))]
        paths.append("/".join(parts))
    found = 0
    for path in paths:
        for method in ("GET", "POST", "PUT"):
            scope = {"type": "http", "method": method, "path": path, "root_path": ""}
            hit = fast.match(scope)
            got = None if hit is None else (hit[0], hit[2])
            want = _router_match(routes, method, path)
            assert got == want, (method, path)
            found += got is not None
    assert found > 1_000
