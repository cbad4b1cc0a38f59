"""One training job's work, and the training process it runs in.

A job reads the training window's impressions and the feedback naming them,
leaves out those of the users the guard has flagged now (suspect or blocked, read
from the store's reliability records: a flagged user's examples and clicks are not
learnt from, and are again once the user is unblocked), joins them
(:func:`~recloop.learning.training.build_training_data`), applies
the schedule's rule (a scheduled run needs ``min_new_examples`` examples
newer than the last model's window), then fits and validates
(:func:`~recloop.learning.training.train`). That is :func:`run_plan`, the
one code path, run:

- with SQL storage, in a spawned training process (:func:`train_from_storage`):
  the server passes a :class:`~recloop.ports.TrainingReader` (the SQL adapter's
  holds the database URL) and the :class:`TrainingPlan` (plain, small values),
  the child opens its own read-only connection through it and does everything;
  only the :class:`JobResult` (the model's artifact, its metrics, two counts)
  comes back;
- with the in-memory storage, which no other process can read, in the server:
  reading on the event loop, the join in a thread, the fit and validation in a
  spawned process (the examples are pickled to it).

The training process reports its stages through a pipe (:func:`in_training_process`),
so ``recloop train`` shows them as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from recloop.core.events import Event
from recloop.learning.training import Champion, Outcome, TrainingData, build_training_data, train
from recloop.learning.validation import PromotionGate
from recloop.ports import FeedbackSource, Impression, ImpressionSource, TrainingReader

T = TypeVar("T")

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """Everything a job needs besides its data: plain values, pickled to the training process."""

    since: float
    until: float
    """The window: impressions created in ``[since, until)``."""
    attribution_seconds: float
    """A click counts if it came this long after its impression at most."""
    scheduled: bool
    """A scheduled run: skipped below ``min_new_examples`` examples since ``last_end``."""
    last_end: float
    """The latest model's ``window_end`` (``-inf`` without a model)."""
    min_new_examples: int
    champion: Champion | None
    gate: PromotionGate
    holdout_fraction: float
    learner: str | None
    alpha: float


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a job produced: ``outcome`` is None if it was skipped (``skipped`` says why)."""

    examples: int
    positives: int
    outcome: Outcome | None
    skipped: str = ""


class TrainingFailed(Exception):
    """An error raised in the training process, carried back as its type's name and message
    (our errors' constructors do not all unpickle; the remote traceback is the cause)."""


Join = Callable[
    [Sequence[Impression], Mapping[str, Sequence[Event]], float], Awaitable[TrainingData]
]
Fit = Callable[[TrainingData, TrainingPlan], Awaitable[Outcome]]


async def run_plan(
    plan: TrainingPlan,
    impressions: ImpressionSource,
    feedback: FeedbackSource,
    progress: Progress,
    join: Join,
    fit: Fit,
) -> JobResult:
    """Read the window, join, apply the schedule's rule, fit and validate.

    ``join`` and ``fit`` say where those run: plain calls in the training process, a
    thread and a spawned process in the server (:func:`join_in_thread`)."""
    progress("reading impressions")
    flagged = {r.user_id for r in await impressions.get_reliability() if r.status != "trusted"}
    shown = [
        i
        for i in await impressions.get_impressions(plan.since, plan.until)
        if i.user_id not in flagged
    ]
    progress(f"joining {len(shown)} impressions with their clicks")
    found = await feedback.read_feedback_of([i.impression_id for i in shown])
    if flagged:
        found = {k: [e for e in v if e.user_id not in flagged] for k, v in found.items()}
    data = await join(shown, found, plan.attribution_seconds)
    del shown, found  # the rows are all that is needed from here on
    if plan.scheduled:
        new = sum(1 for t in data.timestamps if t >= plan.last_end)
        if new < plan.min_new_examples:
            why = f"skipped: {new} new examples since the last model, below {plan.min_new_examples}"
            return JobResult(data.examples, data.positives, None, why)
    progress(f"training on {data.examples} examples and validating in the training process")
    outcome = await fit(data, plan)
    return JobResult(data.examples, data.positives, outcome)


def fit(data: TrainingData, plan: TrainingPlan) -> Outcome:
    """Fit and validate on ``data`` as ``plan`` says (:func:`~recloop.learning.training.train`)."""
    return train(data, plan.champion, plan.gate, plan.holdout_fraction, plan.learner, plan.alpha)


async def join_in_thread(
    impressions: Sequence[Impression], feedback: Mapping[str, Sequence[Event]], window: float
) -> TrainingData:
    """The join in a thread: plain Python over every impression, the event loop keeps its
    turns (it held requests for ~0.7 s at 30,000 impressions)."""
    return await asyncio.to_thread(build_training_data, impressions, feedback, window)


async def _join_here(
    impressions: Sequence[Impression], feedback: Mapping[str, Sequence[Event]], window: float
) -> TrainingData:
    return build_training_data(impressions, feedback, window)


async def _fit_here(data: TrainingData, plan: TrainingPlan) -> Outcome:
    return fit(data, plan)


# -- the training process's side ---------------------------------------------------------


_pipe: Connection | None = None
"""The training process's end of the progress pipe (set by :func:`_attach`)."""


def _attach(pipe: Connection, server: int | None = None) -> None:
    """The training process's start: keep the progress pipe, and exit when the server
    (process ``server``) is gone. A server killed outright (``kill -9``) cannot stop its
    pool, whose process would otherwise train on, then wait for work for ever: it holds
    both ends of its own task queue, so it never sees the end of it."""
    global _pipe
    _pipe = pipe
    if server is not None:
        threading.Thread(target=_exit_with, args=(server,), daemon=True).start()


def _exit_with(server: int, every: float = 1.0) -> None:
    while os.getppid() == server:
        time.sleep(every)
    os._exit(1)  # orphaned: the server that wanted the result is gone


def _report(stage: str) -> None:
    if _pipe is not None:
        # The server gone or not listening: the stage is not needed.
        with contextlib.suppress(OSError):
            _pipe.send(stage)


def train_from_storage(reader: TrainingReader, plan: TrainingPlan) -> JobResult:
    """The training process's job: the storage opened by ``reader`` (the SQL adapter's:
    its own read-only connection), then :func:`run_plan` with everything in this process."""
    return asyncio.run(_from_storage(reader, plan))


async def _from_storage(reader: TrainingReader, plan: TrainingPlan) -> JobResult:
    async with reader.reading() as (impressions, feedback):
        return await run_plan(plan, impressions, feedback, _report, _join_here, _fit_here)


def _carried(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except Exception as exc:
        raise TrainingFailed(f"{type(exc).__name__}: {exc}") from exc


# -- the server's side ---------------------------------------------------------------------


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's processes now (Python 3.11's pool has no public way to; 3.14 adds
    ``terminate_workers``)."""
    processes = dict(getattr(pool, "_processes", None) or {})
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        if process.is_alive():
            process.terminate()


async def in_training_process(progress: Progress, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a spawned process, the event loop serving meanwhile; the stages it
    reports go to ``progress`` as they arrive. Its error comes back as :class:`TrainingFailed`."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    pool = ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_attach, initargs=(send, os.getpid())
    )
    loop = asyncio.get_running_loop()
    fd = receive.fileno()

    def relay() -> None:
        try:
            while receive.poll():
                progress(receive.recv())
        except (EOFError, OSError):
            loop.remove_reader(fd)

    try:
        loop.add_reader(fd, relay)
        watching = True
    except NotImplementedError:  # an event loop without readers: the stages come at the end
        watching = False
    try:
        return await loop.run_in_executor(pool, _carried, fn, *args)
    except asyncio.CancelledError:
        # Abandoned (the server stops mid-training): the training process must not
        # outlive it, still training or idle in the pool.
        _terminate(pool)
        raise
    finally:
        if watching:
            loop.remove_reader(fd)
        relay()
        # Told at once, so that the process exits even if waiting for it is cancelled; the
        # wait blocks: not on the event loop.
        pool.shutdown(wait=False)
        await asyncio.to_thread(pool.shutdown)
        receive.close()
        send.close()
