"""Running a load generator in a process of its own.

The load never runs in the process that starts the servers and collects the
results: each generator is a fresh *spawned* interpreter (no state forked
from the parent), started with a spec and a stop event, and it sends its
result back pickled.
"""

from __future__ import annotations

import multiprocessing
import queue
import traceback
from collections.abc import Callable
from multiprocessing.synchronize import Event
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

S = TypeVar("S")
R = TypeVar("R")

Job = Callable[[S, Event], R]
"""A top-level function ``job(spec, stop) -> result``; it returns soon after ``stop`` is set."""

_CONTEXT = multiprocessing.get_context("spawn")


class LoadProcessError(RuntimeError):
    """A load process failed or did not answer in time."""


def _main(job: Job[S, R], spec: S, stop: Event, results: multiprocessing.Queue[Any]) -> None:
    try:
        results.put(("ok", job(spec, stop)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


class LoadProcess(Generic[S, R]):
    """``job(spec, stop)`` running in a spawned process; use as a context manager."""

    def __init__(self, job: Job[S, R], spec: S, name: str) -> None:
        self._stop = _CONTEXT.Event()
        self._results: multiprocessing.Queue[Any] = _CONTEXT.Queue()
        self._process = _CONTEXT.Process(
            target=_main, args=(job, spec, self._stop, self._results), name=name, daemon=True
        )
        self.name = name

    def __enter__(self) -> Self:
        self._process.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    def stop(self) -> None:
        """Ask the job to finish now; its result is still collected by :meth:`result`."""
        self._stop.set()

    def result(self, timeout: float) -> R:
        """Wait for the job's result; raises LoadProcessError if it failed or took too long."""
        try:
            status, value = self._results.get(timeout=timeout)
        except queue.Empty:
            raise LoadProcessError(f"{self.name}: no result within {timeout:.0f}s") from None
        if status != "ok":
            raise LoadProcessError(f"{self.name} failed:\n{value}")
        return value  # type: ignore[no-any-return]


def run_in_process(job: Job[S, R], spec: S, name: str, timeout: float) -> R:
    """Run ``job`` to completion in its own process and return its result."""
    with LoadProcess(job, spec, name) as process:
        return process.result(timeout)
