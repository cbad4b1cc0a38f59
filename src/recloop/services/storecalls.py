"""The processor's storage calls: retried while the store is unavailable, and dead
letters for what fails every time.

Two kinds of call (:mod:`recloop.resilience` classifies the errors):

- :meth:`StoreCalls.retrying`: retried until it succeeds, with jittered backoff capped
  at 2 s (``resilience.FOREVER``). For calls whose failure can only be the store's
  (a checkpoint's commit is split by :mod:`recloop.services.refusals` instead).
- :meth:`StoreCalls.bounded`: retried the same way while the store is unavailable, but
  an error of another kind that repeats ``poison_attempts`` times is *deterministic*
  (the data fails, not the store) and raised as
  :class:`~recloop.resilience.Deterministic`, so the caller can set the event aside
  with :meth:`StoreCalls.dead_letter` and the stream moves on.

Each retry is logged and counted under its operation's name; :attr:`StoreCalls.failing`
counts the calls failing right now (the health check's "degraded").
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from recloop.core.events import Event
from recloop.ports import DeadLetterStore
from recloop.resilience import (
    Deterministic,
    RetryCounts,
    retry_forever,
    retry_unless_deterministic,
)

log = logging.getLogger(__name__)

__all__ = ["StoreCalls"]


class StoreCalls:
    """The processor's calls to the state store and the item vectors; see the module."""

    def __init__(
        self, store: DeadLetterStore, poison_attempts: int, retries: RetryCounts | None = None
    ) -> None:
        self._store = store
        self._attempts = poison_attempts
        self._retries = retries
        self.failing = 0
        """Storage calls failing right now (being retried); 0 when all is well."""
        self.last_error: str | None = None
        self.dead_letters = 0
        self.dead_letters_unstored = 0
        """Poison events the store refused to keep even as dead letters (logged)."""

    async def retrying(self, operation: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await fn(*args)``, retried until it succeeds: nothing dispatched is dropped."""
        with self._watched() as failed:
            return await retry_forever(operation, fn, *args, counts=self._retries, on_error=failed)

    async def bounded(self, operation: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """As :meth:`retrying` while the store is unavailable; raises
        :class:`~recloop.resilience.Deterministic` once another error has happened
        ``poison_attempts`` times."""
        with self._watched() as failed:
            return await retry_unless_deterministic(
                operation,
                fn,
                *args,
                attempts=self._attempts,
                counts=self._retries,
                on_error=failed,
            )

    @contextlib.contextmanager
    def _watched(self) -> Iterator[Callable[[BaseException], None]]:
        """A call's error hook, keeping :attr:`failing` (this call counted once while it
        fails) and :attr:`last_error`."""
        failing = False

        def failed(exc: BaseException) -> None:
            nonlocal failing
            self.last_error = f"{type(exc).__name__}: {exc}"
            if not failing:
                failing = True
                self.failing += 1

        try:
            yield failed
        finally:
            if failing:
                self.failing -= 1

    async def dead_letter(self, event: Event, reason: str) -> None:
        """Set ``event`` aside with ``reason`` (logged, with its request id, not its body)."""
        log.error(
            "event %s dead-lettered: %s",
            event.event_id,
            reason,
            extra={"request_id": event.request_id},
        )
        try:
            await self.bounded("dead_letter", self._store.add_dead_letter, event, reason)
        except Deterministic as exc:  # the store refuses even the dead letter: said loudly
            self.dead_letters_unstored += 1
            log.error("event %s could not be dead-lettered either: %s", event.event_id, exc)
            return
        self.dead_letters += 1
