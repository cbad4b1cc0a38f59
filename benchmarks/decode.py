"""What turning a ``POST /feedback`` body into events costs per event, in process: the
route's decoding plus ``IngestService.build`` for each event (the domain rules included),
over 1,000-event bodies of the suite's workload. No server, no storage.

    python -m benchmarks.decode [--events 1000] [--repeat 100]

It times whichever recloop is importable, so the same script measures an older checkout
(``git archive <commit> src | tar -x -C /tmp/old`` and ``PYTHONPATH=/tmp/old/src``): before
``api.wire`` the route parsed with orjson and validated with pydantic.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.workload import EventFactory, Workload
from recloop.services.ingest import IngestService


def _decoder() -> tuple[str, Callable[[bytes], list[Any]]]:
    try:
        from recloop.api.wire import decode_feedback
    except ImportError:  # before api.wire: orjson, then pydantic per event, then a dict each
        from recloop.api.routers.feedback import _validate_each  # type: ignore[attr-defined]
        from recloop.api.schemas import FeedbackBatchIn

        def old(body: bytes) -> list[Any]:
            batch = FeedbackBatchIn.model_validate(orjson.loads(body))
            return list(_validate_each(batch.events))

        return "orjson + pydantic", old

    def new(body: bytes) -> list[Any]:
        decoded = decode_feedback(body, 1000)
        assert isinstance(decoded, list)
        return decoded

    return "msgspec (api.wire)", new


def bodies(n: int) -> dict[str, bytes]:
    """The workload's events; the same with a timestamp and an attribution each; and the
    first with one bad event in the batch (the per-event path)."""
    events = EventFactory(Workload(), "decode").batch(n)
    rich = [
        {
            **e,
            "timestamp": "2026-12-01T10:00:00.250+00:00" if i % 2 else 1796119200.25,
            "attribution": {"algorithm": "popularity", "impression_id": f"imp-{i}"},
            "context": {"device": "tv", "position": i % 10},
        }
        for i, e in enumerate(events)
    ]
    bad = [*events[:-1], {**events[-1], "user_id": ""}]
    return {
        "plain": orjson.dumps({"events": events}),
        "rich": orjson.dumps({"events": rich}),
        "one bad": orjson.dumps({"events": bad}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    label, decode = _decoder()
    ingest = IngestService(committer=None, max_future_seconds=300.0)  # type: ignore[arg-type]
    now = time.time()
    print(f"{label}: µs per event, median of {args.repeat} runs of {args.events}-event bodies")
    for name, body in bodies(args.events).items():
        decode_us, total_us = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            decoded = decode(body)
            t1 = time.perf_counter()
            for fields in decoded:
                if not isinstance(fields, Exception):
                    ingest.build(fields, now)
            t2 = time.perf_counter()
            decode_us.append((t1 - t0) / args.events * 1e6)
            total_us.append((t2 - t0) / args.events * 1e6)
        print(
            f"  {name:8} decode {statistics.median(decode_us):6.2f}"
            f"   decode + build {statistics.median(total_us):6.2f}"
        )


if __name__ == "__main__":
    main()
