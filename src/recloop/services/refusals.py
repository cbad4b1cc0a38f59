"""Checkpoint rows the state store refuses for good.

A checkpoint (:meth:`recloop.services.feedback.Processor.checkpoint`) writes many rows
in one transaction: users' states, the optimizer's counts, exposures, metric values,
experiment sums, and the log position they cover. The processor classifies a failure
as it does for an event (:func:`recloop.resilience.unavailable`): while the store is
unavailable (a dropped connection, a timeout, an open breaker) the commit is retried
however long; any other error that repeats ``poison_attempts`` times is
*deterministic*: the data fails, not the store (a constraint violation, a value the
column cannot hold), and the same commit would fail forever.

Then :func:`commit_checkpoint` finds the refused rows by halving (each half committed
on its own: a few commits per refused row), quarantines each with its reason
(:class:`Quarantine`: counted per kind as ``recloop_checkpoint_rows_refused``, logged
at ERROR, the latest kept for inspection), commits every other row, and then the log
position: the stream moves on. The refused row's user keeps the state in memory; the
events behind it stay in the event log.

A piece committed before the position is covered as any row is: a user's row carries
the offsets it has applied (a replay passes them over), and every piece has its own
commit id. Only the additive parts of the events of a *quarantined* user's row
(optimizer counts, experiment sums) could be added twice, if the process stopped
before the position was committed and replayed those events.

Nothing of a row's values is logged or kept: the reason is the error's type and
first line (without a driver's ``DETAIL`` or SQL parameters), and users appear as
the digest of their id (:func:`recloop.core.privacy.user_digest`).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from recloop.core.ids import uuid7
from recloop.core.privacy import user_digest
from recloop.core.state import UserRows
from recloop.ports import StateChanges
from recloop.resilience import Deterministic

log = logging.getLogger(__name__)

__all__ = ["KINDS", "Quarantine", "Refused", "commit_checkpoint"]

KINDS = ("user", "algorithm_count", "exposure", "user_metric", "experiment_stat")
"""The kinds of checkpoint rows, as :class:`Refused` and the metric name them."""

REASON_MAX = 200


@dataclass(frozen=True, slots=True)
class Refused:
    """One checkpoint row the store refused: its kind, a key that names it without
    personal data, and why (the error's type and first line)."""

    kind: str
    key: str
    reason: str


class Quarantine:
    """The refused rows: counted per kind since the process started, the latest
    ``keep`` kept for inspection."""

    def __init__(self, keep: int = 100) -> None:
        self.counts: Counter[str] = Counter()
        self.latest: deque[Refused] = deque(maxlen=keep)

    def add(self, refused: Refused) -> None:
        self.counts[refused.kind] += 1
        self.latest.append(refused)
        log.error(
            "checkpoint row refused by the store, quarantined: %s %s: %s",
            refused.kind,
            refused.key,
            refused.reason,
        )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


Bounded = Callable[..., Awaitable[Any]]
"""``bounded(operation, fn, *args)``: ``await fn(*args)``, retried while the store is
unavailable, raising :class:`~recloop.resilience.Deterministic` once another error has
repeated (``Processor._bounded``)."""


async def commit_checkpoint(
    changes: StateChanges,
    commit: Callable[[StateChanges], Awaitable[None]],
    bounded: Bounded,
    quarantine: Quarantine,
) -> None:
    """Commit ``changes`` through ``bounded``; if the store refuses them for good,
    quarantine the rows it refuses and commit the others, then the position."""
    try:
        await bounded("state_commit", commit, changes)
        return
    except Deterministic as exc:
        log.error(
            "a checkpoint was refused (%s); looking for the rows the store refuses",
            _reason(exc),
        )
    if changes.journal is not None:  # its rows are written in place, one by one
        changes.users = changes.users + changes.journal
        changes.journal = None
    units = _units(changes)
    dim = int(changes.users.vectors.shape[1]) if changes.users.vectors.ndim == 2 else 0
    await _commit_units(units, changes, dim, commit, bounded, quarantine)
    position = StateChanges(
        users=UserRows.empty(dim),
        watermark=changes.watermark,
        positions=changes.positions,
        journal_through=changes.journal_through,
    )
    while True:  # the position alone: refused for good only by a bug, said and retried
        position.commit_id = uuid7()
        try:
            await bounded("state_commit", commit, position)
            return
        except Deterministic as exc:
            log.error("the checkpoint's log position was refused: %s", _reason(exc))


# A unit is one row: its kind, its key (for the quarantine), and where it is in changes.
_Unit = tuple[str, str, int]


def _units(changes: StateChanges) -> list[_Unit]:
    units: list[_Unit] = [
        ("user", _user(user_id), i) for i, user_id in enumerate(changes.users.user_ids)
    ]
    units += [
        ("algorithm_count", f"{c.segment}/{c.algorithm}/{c.bucket_start:g}", i)
        for i, c in enumerate(changes.algorithm_counts)
    ]
    units += [
        ("exposure", f"{e.experiment_id}/{_user(e.user_id)}", i)
        for i, e in enumerate(changes.exposures)
    ]
    units += [
        ("user_metric", f"{experiment}/{_user(user_id)}/{metric}", i)
        for i, (experiment, user_id, metric, _) in enumerate(changes.user_metrics)
    ]
    units += [
        ("experiment_stat", "/".join(key), i)
        for i, (*key, _) in enumerate(changes.experiment_stats)
    ]
    return units


def _piece(units: list[_Unit], changes: StateChanges, dim: int) -> StateChanges:
    """The rows of ``units`` alone, under a commit id of their own."""
    index = {kind: [i for k, _, i in units if k == kind] for kind in KINDS}
    users = (
        changes.users.take(np.array(index["user"], dtype=np.int64))
        if index["user"]
        else UserRows.empty(dim)
    )
    return StateChanges(
        users=users,
        algorithm_counts=[changes.algorithm_counts[i] for i in index["algorithm_count"]],
        exposures=[changes.exposures[i] for i in index["exposure"]],
        user_metrics=[changes.user_metrics[i] for i in index["user_metric"]],
        experiment_stats=[changes.experiment_stats[i] for i in index["experiment_stat"]],
        commit_id=uuid7(),
    )


async def _commit_units(
    units: list[_Unit],
    changes: StateChanges,
    dim: int,
    commit: Callable[[StateChanges], Awaitable[None]],
    bounded: Bounded,
    quarantine: Quarantine,
) -> None:
    """Commit ``units`` of ``changes``, halving a part the store refuses until the
    refused rows are alone: those are quarantined."""
    pending = [units]
    while pending:
        part = pending.pop()
        if not part:
            continue
        try:
            await bounded("state_commit", commit, _piece(part, changes, dim))
        except Deterministic as exc:
            if len(part) == 1:
                kind, key, _ = part[0]
                quarantine.add(Refused(kind, key, _reason(exc)))
            else:
                half = len(part) // 2
                pending += [part[half:], part[:half]]


def _user(user_id: str) -> str:
    return f"user:{user_digest(user_id)[:16]}"


def _reason(exc: BaseException) -> str:
    """The error's type and first line: a driver's ``DETAIL`` (the failing row) and
    SQLAlchemy's ``[SQL: ...]``/``[parameters: ...]`` follow on later lines."""
    cause = exc.__cause__ if isinstance(exc, Deterministic) and exc.__cause__ else exc
    driver = getattr(cause, "orig", None)
    shown = driver if isinstance(driver, BaseException) else cause
    lines = str(shown).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(shown).__name__}: {first}"[:REASON_MAX]
