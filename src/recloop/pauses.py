"""The pause a long background pass on the event loop takes to let requests in (kept
apart from the HTTP server: storage adapters and services pause too)."""

from __future__ import annotations

import asyncio
from typing import Final

PAUSE_SECONDS: Final = 0.001
"""How long a background pass pauses between two slices of its work."""


async def let_requests_in() -> None:
    """Pause a long pass on the event loop (the canary monitor's counts, the guard's
    sweep) between two slices of its work, so that the requests waiting meanwhile run to
    their answers. ``asyncio.sleep(0)`` is not enough: it lets each ready callback run
    once before the pass takes the loop back, and a request needs several turns of the
    loop (its bytes read, its handler's steps, its answer written), so under load each
    would wait for several slices. While the pass sleeps, the loop runs turn after turn."""
    await asyncio.sleep(PAUSE_SECONDS)
