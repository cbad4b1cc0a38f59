"""An in-process read cache per instance, kept coherent across processes by Redis pub/sub.

::

    worker ── set(k, v) ──▶ local cache
                 └── k queued ──▶ publisher task ── PUBLISH {"sender", "keys"} ──▶ channel
                                                                                     │
    api ── get(k) ──▶ local cache ◀── delete(keys) ◀── reader task ◀── SUBSCRIBE ◀──┘

Stateless API instances serve hot reads from their own :class:`SharedCache`;
workers change the state behind it. :meth:`~SharedCache.set` and
:meth:`~SharedCache.delete` change the local cache and queue the key; every
``publish_interval`` the publisher task sends the queued keys in one
``PUBLISH`` (at most ``MAX_KEYS_PER_MESSAGE`` keys per message), tagged with
the instance's id so that it ignores its own messages. Every other instance's
reader task deletes those keys from its local cache, and its next read of them
goes to the database (readers fill misses with :meth:`~SharedCache.add`).
Values never travel through Redis: only key names do.

The :class:`~recloop.ports.Cache` methods are synchronous and cheap: a dict
operation and, for writes, adding the key to a set the publisher drains. Call
them from the event loop's thread (the publisher is woken with an
``asyncio.Event``, which is not thread-safe).

When Redis is down
------------------
Pub/sub delivers a message only to the subscribers connected when it is
published, so an instance that has lost its subscription cannot know what it
has missed. From the moment its connection fails (an error on the subscription
or on a publish, or no answer to a ``PING`` for ``3 * ping_interval``) the
instance is *degraded*: :meth:`~SharedCache.get` answers None, so every read
goes to the database; :meth:`~SharedCache.set`, :meth:`~SharedCache.add` and
:meth:`~SharedCache.delete` do not fail but keep nothing. The failure is
logged once and opens the cache's circuit breaker (:attr:`SharedCache.breaker`,
named ``cache``; one failure is enough, since a lost subscription cannot be
trusted): the connection is tried again when the breaker lets a trial through,
after ``retry_seconds``, then, while the trials fail, after twice as long each
time, up to ``max_retry_seconds``. Once subscribed again (the subscription is
confirmed, so every later invalidation will arrive), the breaker closes and the
instance forgets its whole local cache; only then does it serve from it again.

Redis's client library would reconnect and resubscribe silently on its own;
that is turned off here (no retries, and a failed connection is never reused),
because a silent resubscription would skip the clearing above.

Keys queued for publishing when the connection fails, or written while it is
down, are dropped, not sent after reconnecting. Most outages are Redis's own
(a restart, a failover, a network cut in front of it): every instance loses
its subscription then, and clears its cache when it comes back, so there is
nobody left holding a value that the dropped keys would invalidate. Keeping
them would also need an unbounded queue for the length of the outage.

What the local TTL bounds
-------------------------
Some staleness cannot be seen by the instance that holds the stale value:

- an instance that never lost its connection misses the invalidations of a
  *publisher* that was cut off from Redis (only that publisher lost its
  connection, or a publish failed), and of a writer that crashed between its
  commit and its next publish;
- a read that fetched the old value from the database before a writer's
  commit, and calls ``add`` after the invalidation has arrived, puts the old
  value back (``add`` protects against this within one process, where the
  writer's ``set`` leaves the fresh value in place, not across processes).

Such a value is served until it expires from the local cache: every entry
lives at most ``ttl_seconds``, which is therefore the bound on staleness in
these cases. (A ``local`` :class:`~recloop.adapters.memory.LruCache` has no
expiry and gives no such bound.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from types import TracebackType
from typing import Any, Self

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from recloop.adapters.memory.cache import LruCache, TtlCache
from recloop.core.breaker import CircuitBreaker
from recloop.core.errors import ConfigError

log = logging.getLogger(__name__)

MAX_KEYS_PER_MESSAGE = 1000
"""A longer batch is published as several messages."""

_SOCKET_TIMEOUT = 5.0  # connecting, and each command (a publish, a ping)


class SharedCache:
    """A :class:`~recloop.ports.Cache` per process whose writes invalidate every other copy.

    Parameters
    ----------
    url
        The Redis server, e.g. ``redis://127.0.0.1:6379/0``.
    channel
        The pub/sub channel; every instance sharing the cached state uses the same one.
    local
        The in-process cache holding the entries (the cache stores its own
        records in it, so it must not be shared). Default: a
        :class:`~recloop.adapters.memory.TtlCache` of ``max_entries`` and ``ttl_seconds``.
    max_entries
        Size of the default local cache; ignored when ``local`` is given.
    ttl_seconds
        Lifetime of an entry in the default local cache, and so the bound on
        the staleness that invalidations cannot prevent (see the module's
        docstring); ignored when ``local`` is given.
    publish_interval
        How long queued keys wait to be published together, in seconds.
    retry_seconds, max_retry_seconds
        The first and the longest wait between reconnection attempts: the open
        durations of :attr:`breaker`.
    ping_interval
        An idle subscription is pinged this often; no answer for three
        intervals counts as a lost connection.
    """

    def __init__(
        self,
        url: str,
        channel: str = "recloop:invalidate",
        local: TtlCache | LruCache[str, Any] | None = None,
        max_entries: int = 100_000,
        ttl_seconds: float = 30.0,
        publish_interval: float = 0.002,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 5.0,
        ping_interval: float = 1.0,
    ) -> None:
        if not channel:
            raise ConfigError("SharedCache 'channel' must not be empty.")
        for name, value in (
            ("max_entries", max_entries),
            ("ttl_seconds", ttl_seconds),
            ("retry_seconds", retry_seconds),
            ("max_retry_seconds", max_retry_seconds),
            ("ping_interval", ping_interval),
        ):
            if not value > 0:
                raise ConfigError(f"SharedCache '{name}' must be positive, got {value!r}.")
        if publish_interval < 0:
            raise ConfigError(
                f"SharedCache 'publish_interval' must not be negative, got {publish_interval!r}."
            )
        self._url = url
        self._channel = channel
        # Entries are (epoch, value): bumping the epoch forgets every entry at once.
        self._local = local if local is not None else TtlCache(max_entries, ttl_seconds)
        self._epoch = 0
        self._publish_interval = publish_interval
        self._retry_seconds = retry_seconds
        self._max_retry_seconds = max(retry_seconds, max_retry_seconds)
        self._ping_interval = ping_interval
        self._id = uuid.uuid4().hex
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._session: tuple[Redis, PubSub] | None = None  # publishing client, subscription
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._failing = False
        self._last_error: str | None = None
        self.breaker = CircuitBreaker(
            "cache",
            failure_threshold=1,
            open_seconds=retry_seconds,
            max_open_seconds=self._max_retry_seconds,
        )
        """Opens on a lost connection; its trials are the reconnection attempts."""

    # -- the Cache protocol ----------------------------------------------------

    def get(self, key: str) -> Any | None:
        """The cached value, or None if absent, expired, or the cache is not connected."""
        if not self._connected:
            return None
        entry = self._local.get(key)
        if entry is None or entry[0] != self._epoch:
            return None
        return entry[1]

    def set(self, key: str, value: Any) -> None:
        """Cache ``value`` here and invalidate ``key`` in every other instance."""
        if not self._connected:
            return
        self._local.set(key, (self._epoch, value))
        self._queue(key)

    def add(self, key: str, value: Any) -> None:
        """Cache ``value`` here if ``key`` holds nothing (or only an expired value)."""
        if not self._connected:
            return
        entry = self._local.get(key)
        if entry is None or entry[0] != self._epoch:
            self._local.set(key, (self._epoch, value))

    def delete(self, key: str) -> None:
        """Forget ``key`` here and in every other instance."""
        if not self._connected:
            return
        self._local.delete(key)
        self._queue(key)

    def _queue(self, key: str) -> None:
        self._pending.add(key)
        self._wake.set()

    # -- state -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the cache is subscribed to its channel and serving from the local cache."""
        return self._connected

    @property
    def degraded(self) -> bool:
        """Whether the cache is started but cut off from Redis (and so serves nothing)."""
        return self._failing

    @property
    def last_error(self) -> str | None:
        """The most recent connection failure, kept after the connection is back."""
        return self._last_error

    @property
    def instance_id(self) -> str:
        """The sender id in this instance's messages (and in its Redis client names)."""
        return self._id

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe, then keep the connection up in the background.

        Returns once the first attempt is over: connected, or degraded (the
        failure is logged and the connection retried).
        """
        if self._task is not None:
            raise RuntimeError("SharedCache is already started")
        try:
            self._serving(*await self._open())
        except Exception as exc:
            self._lost(exc)
        self._task = asyncio.create_task(self._run(), name=f"shared-cache {self._channel}")

    async def stop(self) -> None:
        """Publish what is queued (best effort), then close the connections."""
        task, self._task = self._task, None
        if task is None:
            return
        session = self._session
        if self._connected and session is not None and self._pending:
            try:
                await self._flush(session[0])
            except Exception as exc:
                log.warning("shared cache: could not publish queued invalidations: %s", exc)
        task.cancel()
        await asyncio.wait([task])
        await self._end_session()  # the task may have been cancelled before it ran
        self._failing = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- background ------------------------------------------------------------

    async def _run(self) -> None:
        """Serve while connected; reconnect when the breaker lets a trial through."""
        breaker = self.breaker
        while True:
            session = self._session
            if session is None:
                await asyncio.sleep(breaker.retry_after())
                if not breaker.allow():
                    continue
                try:
                    session = await self._open()
                except Exception as exc:
                    self._lost(exc)
                    continue
                except BaseException:
                    breaker.release()
                    raise
                self._serving(*session)
            try:
                await self._serve(*session)
            except Exception as exc:
                self._lost(exc)
            finally:
                await self._end_session()

    async def _open(self) -> tuple[Redis, PubSub]:
        """A client for publishing and a confirmed subscription to the channel."""
        client = Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),  # a silent reconnect would skip the clearing
            socket_connect_timeout=_SOCKET_TIMEOUT,
            socket_timeout=_SOCKET_TIMEOUT,
            client_name=f"recloop-cache-{self._id}",
        )
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            # Once the server confirms, it delivers every later message on the channel.
            while True:
                message = await pubsub.get_message(timeout=_SOCKET_TIMEOUT)
                if message is None:
                    raise RedisConnectionError("no confirmation of SUBSCRIBE")
                if message["type"] == "subscribe":
                    break
            await client.ping()  # opens the publishing connection
        except BaseException:
            await _close(client, pubsub)
            raise
        return client, pubsub

    def _serving(self, client: Redis, pubsub: PubSub) -> None:
        """Just subscribed: forget every entry (invalidations may have been missed), then serve."""
        self._epoch += 1
        self._pending.clear()
        self._session = client, pubsub
        self._connected = True
        self.breaker.success()
        if self._failing:
            log.info("shared cache: Redis is back, local cache cleared")
            self._failing = False

    async def _end_session(self) -> None:
        """Stop serving; drop the queued keys (see the module's docstring); close the session."""
        self._connected = False
        self._pending.clear()
        if self._session is not None:
            await _close(*self._session)
            self._session = None  # only once closed: a cancelled close is finished by stop()

    async def _serve(self, client: Redis, pubsub: PubSub) -> None:
        """Run the reader and the publisher until one fails; raise its error."""
        tasks = [
            asyncio.create_task(self._read(pubsub), name=f"shared-cache reader {self._channel}"),
            asyncio.create_task(
                self._publish(client), name=f"shared-cache publisher {self._channel}"
            ),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
        raise RuntimeError("a shared cache task ended")  # they loop until they fail

    async def _read(self, pubsub: PubSub) -> None:
        """Apply other instances' invalidations; ping an idle connection to notice a dead one."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        try:
            while True:
                message = await pubsub.get_message(timeout=self._ping_interval)
                if message is not None:
                    heard = loop.time()
                    if message["type"] == "message":
                        self._invalidate(message["data"])
                elif loop.time() - heard > 3 * self._ping_interval:
                    raise RedisConnectionError(f"no answer to PING for {loop.time() - heard:.1f}s")
                else:
                    await pubsub.ping()
        except Exception:
            self._connected = False  # stop serving now, not when the supervisor wakes
            raise

    async def _publish(self, client: Redis) -> None:
        """Publish queued keys, gathering those queued within ``publish_interval``."""
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(self._publish_interval)
                await self._flush(client)
        except Exception:
            self._connected = False
            raise

    async def _flush(self, client: Redis) -> None:
        self._wake.clear()
        keys, self._pending = list(self._pending), set()
        for start in range(0, len(keys), MAX_KEYS_PER_MESSAGE):
            payload = {"sender": self._id, "keys": keys[start : start + MAX_KEYS_PER_MESSAGE]}
            await client.publish(self._channel, orjson.dumps(payload))

    def _invalidate(self, data: Any) -> None:
        try:
            message = orjson.loads(data)
            sender, keys = message["sender"], message["keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise TypeError("'keys' is not a list of strings")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            # Possibly an invalidation in a format this version does not know: be safe.
            log.warning(
                "shared cache: unreadable message on %r (%s), local cache cleared",
                self._channel,
                exc,
            )
            self._epoch += 1
            return
        if sender == self._id:
            return
        for key in keys:
            self._local.delete(key)

    def _lost(self, exc: Exception) -> None:
        """Record a connection failure; log it only when it starts an outage."""
        self._connected = False
        self.breaker.failure()
        self._last_error = f"{type(exc).__name__}: {exc}"
        if not self._failing:
            self._failing = True
            log.warning(
                "shared cache: Redis unavailable, reads bypass the cache until it is back: %s",
                self._last_error,
            )
        else:
            log.debug("shared cache: reconnecting failed: %s", self._last_error)


async def _close(client: Redis, pubsub: PubSub) -> None:
    for close in (pubsub.aclose, client.aclose):
        try:
            await close()
        except Exception as exc:  # closing a connection that already failed
            log.debug("shared cache: error while closing: %s", exc)
