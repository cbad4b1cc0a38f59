"""``strategy(expose=False)`` asks for the strategy without recording an exposure
(``?expose=false``, served by the API since issue 21's CLI needed it)."""

from __future__ import annotations

import httpx
from recloop_client import Client

STRATEGY = {
    "user_id": "u1",
    "segment": "new",
    "weights": {"popularity": 1.0},
    "exploration": {"strategy": "epsilon_greedy", "epsilon": 0.3},
    "model": {"version": None, "slot": None},
    "experiments": [],
    "preferences_updated_at": None,
}


def test_strategy_sends_expose_false_only_when_asked() -> None:
    seen: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=STRATEGY)

    with Client("http://recloop.test", transport=httpx.MockTransport(answer)) as client:
        assert client.strategy("u1").segment == "new"
        assert client.strategy("u1", expose=False).segment == "new"
    assert [dict(url.params) for url in seen] == [{}, {"expose": "false"}]
    assert all(url.path.endswith("/users/u1/strategy") for url in seen)
