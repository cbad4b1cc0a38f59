"""Privacy and data lifecycle: retention, erasure, export, pseudonymous ids.

::

    purge (every purge_interval_seconds, in batches of purge_batch rows, pausing between)
        events older than event_retention_days   (embedded: only at or below the
        dead letters older than event_retention_days          processor's stored watermark)
        impressions older than training_retention_days
    erase(user)
        tombstone ─▶ processor: skip the user's events accepted before it, drop buffered ones,
                     wait for applies in progress
        store: the user's rows out, their experiment contribution taken away, the
               algorithm counts left out for a flagged user (services.retraction) taken
               away, the tombstone in, ONE transaction (experiments service computes the
               deltas)
        memory, read cache (SharedCache: every instance), rate-limit counters, spool
    export(user) ─▶ everything stored about the user

What is learnt stays: user vectors of other users, algorithm counts,
experiment totals (minus an erased user), trained models. ``docs/privacy.md``
says what is guaranteed and what remains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from recloop.config import PrivacySettings
from recloop.core.bandit import PerformanceCounts
from recloop.core.errors import ConfigError
from recloop.core.privacy import (
    Tombstone,
    key_fingerprint,
    pseudonym,
    retention_cutoff,
    user_digest,
)
from recloop.ports import (
    AlgorithmCount,
    Cache,
    EventLog,
    Forgettable,
    PrivacyStore,
    StateChanges,
    UserData,
    UserStateStore,
)
from recloop.services.experiments import ExperimentService
from recloop.services.feedback import Processor, preferences_key
from recloop.services.limits import RateLimits
from recloop.services.retraction import Retraction
from recloop.services.tasks import stop_tasks

log = logging.getLogger(__name__)

FINGERPRINT = "id_key_fingerprint"
"""The ``privacy_meta`` row holding the key's fingerprint, or ``plain`` (ids as given)."""
PLAIN = "plain"

_NONE = PerformanceCounts()

ERASED_KINDS = (
    "events",
    "impressions",
    "state",
    "exposures",
    "metric_values",
    "reliability",
    "dead_letters",
    "spooled",
)
"""What an erasure reports, in this order."""


class Spool(Protocol):
    """Events waiting on an API instance for the distributed log."""

    async def delete_user(self, user_id: str) -> int: ...


class CachedReads:
    """The read cache as a :class:`~recloop.ports.Forgettable`: a user's cached
    preferences are dropped (the cache cannot list its users: none are reported held)."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def held_users(self) -> set[str]:
        return set()

    def forget(self, user_id: str) -> None:
        self._cache.delete(preferences_key(user_id))


class PrivacyService:
    def __init__(
        self,
        store: PrivacyStore,
        log_: EventLog,
        state: UserStateStore,
        processor: Processor,
        experiments: ExperimentService,
        config: PrivacySettings,
        *,
        holders: Sequence[Forgettable] = (),
        distributed: bool = False,
        limits: RateLimits | None = None,
        spool: Spool | None = None,
        retraction: Retraction | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``processor``: skips an erased user's events (tombstones) and drops their
        state; ``experiments``: takes their contribution away in the erasure's
        transaction; ``holders``: everything else holding users in memory (the guard,
        the experiments' exposures, the learning service, the read cache), dropped by
        :meth:`erase` and by tombstones from other processes. ``distributed``: the
        event log is Kafka (``events`` is the workers' archive, and log offsets are per
        partition); ``spool``: this API instance's Kafka spool; ``retraction``: what
        flagged users' counts the optimizer leaves out (an erased flagged user's are
        subtracted from the stored counts for good)."""
        self._retraction = retraction
        self._holders = tuple(holders)
        self._store = store
        self._log = log_
        self._state = state
        self._processor = processor
        self._experiments = experiments
        self._config = config
        self._id_key = id_key(config)
        self._distributed = distributed
        self._limits = limits
        self._spool = spool
        self._clock = clock
        self._tombstones: dict[str, Tombstone] = {}
        self._erasing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.last_purge: dict[str, int] | None = None
        self.last_error: str | None = None

    # -- pseudonymous ids ----------------------------------------------------------------

    def user_key(self, raw_id: str) -> str:
        """The id stored for ``raw_id``: its HMAC pseudonym, or itself when that is off."""
        key = self._id_key
        return raw_id if key is None else pseudonym(key, raw_id)

    async def check_key(self) -> None:
        """Refuse to start when stored user ids were made with another key (or none).

        Raises
        ------
        ConfigError
            naming ``privacy.id_key`` / ``privacy.pseudonymize_user_ids`` and what to do.
        """
        key = self._id_key
        current = PLAIN if key is None else key_fingerprint(key)
        stored = await self._store.get_meta(FINGERPRINT)
        if stored == current:
            return
        if await self._store.has_users():
            if stored is None and current == PLAIN:
                await self._store.put_meta(FINGERPRINT, current)  # data from before 0007
                return
            raise ConfigError(_key_mismatch(stored, current))
        await self._store.put_meta(FINGERPRINT, current)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, purge: bool = True) -> None:
        """Check the key, load the tombstones (before the processor replays the log), and
        start the periodic purge if ``purge`` and ``purge_interval_seconds`` > 0."""
        await self.check_key()
        await self.load_tombstones()
        if purge and self._config.purge_interval_seconds > 0:
            self._task = asyncio.create_task(self._purge_forever(), name="privacy-purge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task)

    async def load_tombstones(self) -> None:
        self._tombstones = await self._store.get_tombstones()
        self._processor.set_tombstones(self._tombstones)

    async def reload_tombstones(self) -> None:
        """Take in erasures made by other processes (distributed: every refresh): the
        processor skips those users' erased history, and what is held in memory of them
        (state, buffered events, exposures, guard evidence, cached reads) is dropped."""
        stored = await self._store.get_tombstones()
        new = {d for d, t in stored.items() if self._tombstones.get(d) != t}
        self._tombstones = stored
        self._processor.set_tombstones(stored)
        if not new:
            return
        held = self._processor.held_users()
        for holder in self._holders:
            held |= holder.held_users()
        if self._retraction is not None:
            held |= self._retraction.left_out()
        for user_id in held:
            if user_digest(user_id) in new:
                self._forget(user_id)

    def _forget(self, user_id: str, erased: list[AlgorithmCount] | None = None) -> None:
        """Drop what memory holds of the user; ``erased``: the algorithm counts this
        process's erasure subtracted from the stored ones."""
        self._processor.evict(user_id)
        for holder in self._holders:
            holder.forget(user_id)
        if self._retraction is not None:
            self._retraction.forget(user_id, erased or ())

    # -- retention -------------------------------------------------------------------------

    async def purge(self, now: float | None = None) -> dict[str, int]:
        """Delete what is past its retention, in batches; the rows deleted per kind.

        Embedded, logged events are deleted only at or below the processor's stored
        watermark: everything there is in the state, and replay starts above it.
        Distributed, ``events`` is the workers' archive, not the log: age alone decides.
        """
        now = self._clock() if now is None else now
        c = self._config
        store = self._store
        max_offset = None if self._distributed else await self._state.get_watermark()
        events_before = retention_cutoff(now, c.event_retention_days)
        impressions_before = retention_cutoff(now, c.training_retention_days)
        counts = {
            "events": await self._batched(
                lambda n: store.purge_events(events_before, max_offset, n)
            ),
            "impressions": await self._batched(
                lambda n: store.purge_impressions(impressions_before, n)
            ),
            "dead_letters": await self._batched(
                lambda n: store.purge_dead_letters(events_before, n)
            ),
        }
        self.last_purge = counts
        if any(counts.values()):
            log.info("retention purge deleted %s", counts)
        return counts

    async def _batched(self, delete: Callable[[int], Awaitable[int]]) -> int:
        batch, total = self._config.purge_batch, 0
        while True:
            deleted = await delete(batch)
            total += deleted
            if deleted < batch:
                return total
            await asyncio.sleep(self._config.purge_pause_seconds)  # writers go in between

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception as exc:  # the database is away: try again next time
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("retention purge failed: %s", self.last_error)
            await asyncio.sleep(self._config.purge_interval_seconds)

    # -- erasure and export --------------------------------------------------------------------

    async def erase(self, user_id: str) -> dict[str, int]:
        """Remove everything keyed by ``user_id`` (the stored id); what was removed, per
        kind (:data:`ERASED_KINDS`). A second call finds nothing: all zeros.

        The user's events accepted before now will not be applied later (a replay, a
        buffered implicit event, a worker's backlog): a tombstone blocks them. Their
        events after now are applied: a user may come back.
        """
        async with self._erasing:
            log_offset = None if self._distributed else await self._log.last_offset()
            tombstone = Tombstone(self._clock(), log_offset)
            digest = user_digest(user_id)
            await self._processor.forget(user_id, tombstone)
            spooled = 0 if self._spool is None else await self._spool.delete_user(user_id)
            data = await self._store.user_data(user_id)
            # A flagged user's attributed counts are left out of the optimizer's totals,
            # found from their events: with those gone, they leave the stored counts.
            retraction = self._retraction
            taken = [] if retraction is None else await retraction.contribution(user_id)
            erased = [
                AlgorithmCount(r.segment, r.algorithm, r.bucket_start, _NONE - r.counts)
                for r in taken
            ]

            async def commit(changes: StateChanges) -> dict[str, int]:
                changes.algorithm_counts.extend(erased)
                return await self._store.erase(user_id, digest, tombstone, changes)

            counts = await self._experiments.erase_user(
                user_id, data.exposures, data.metric_values, commit
            )
            counts["spooled"] = spooled
            self._tombstones[digest] = tombstone
            self._forget(user_id, erased)
            if self._limits is not None:
                await self._limits.forget(user_id)
        removed = {kind: counts.get(kind, 0) for kind in ERASED_KINDS}
        if any(removed.values()):
            log.info("erased a user: %s", removed)  # never the id: it is what was erased
        return removed

    async def export(self, user_id: str) -> UserData:
        """Everything stored about ``user_id`` (the stored id)."""
        return await self._store.user_data(user_id)


def id_key(settings: PrivacySettings) -> bytes | None:
    """The pseudonymization key (None: user ids are stored as given).

    Raises
    ------
    ConfigError
        when ``privacy.id_key`` is shorter than 16 characters (checked here, not when the
        settings load: their errors echo the value given).
    """
    if not settings.pseudonymize_user_ids:
        return None
    secret = "" if settings.id_key is None else settings.id_key.get_secret_value()
    if len(secret) < 16:
        raise ConfigError("privacy.id_key must be at least 16 characters long")
    return secret.encode()


def _key_mismatch(stored: str | None, current: str) -> str:
    keep = (
        "Start with the settings the data was stored with, or erase the data (start on an "
        "empty database). The stored ids are one-way HMACs of ids recloop never kept, so "
        "they cannot be re-keyed (there is no `recloop privacy rekey`)."
    )
    if current == PLAIN:
        return (
            "privacy.pseudonymize_user_ids is off, but the stored user ids are pseudonyms "
            f"made with a privacy.id_key. {keep}"
        )
    if stored in (None, PLAIN):
        return (
            "privacy.pseudonymize_user_ids is on, but the database holds user state stored "
            f"under raw user ids. {keep}"
        )
    return (
        "privacy.id_key is not the key the stored user ids were pseudonymized with (its "
        f"fingerprint differs from the stored one). {keep}"
    )
