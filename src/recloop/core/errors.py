"""recloop's exceptions. Only ``api/`` turns them into HTTP responses.

::

    RecloopError
    ├── ConfigError          bad or unknown configuration key (start-up)
    ├── InvalidInput         a request value is wrong; names the field
    ├── NotFound             an entity (user, item, ...) does not exist
    ├── Conflict             a valid request the entity's current state refuses; names it
    ├── NotAuthenticated     no valid API key was presented
    ├── Forbidden            the key lacks the role, or the user is blocked
    ├── RateLimited          over a rate limit; says when to retry
    └── Unavailable          a dependency (storage, log) cannot serve now
        ├── TransientError   a call failed as a retry may fix (a dropped connection)
        └── CircuitOpen      the dependency's breaker refuses calls for a while
"""

from __future__ import annotations


class RecloopError(Exception):
    """Base of every error recloop raises on purpose."""


class ConfigError(RecloopError):
    """The configuration is invalid; the message names the key."""


class InvalidInput(RecloopError):
    """A request value is invalid.

    Parameters
    ----------
    field
        Dotted path of the offending field, e.g. ``"vector"`` or ``"events.3.value"``.
    message
        What is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(RecloopError):
    """An entity does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class Conflict(RecloopError):
    """A valid request that the current state of what it acts on refuses: stopping an
    experiment that is not running, deploying into a taken green slot, creating an id that
    exists. Sending the same request again fails the same way until the state changes.

    Parameters
    ----------
    state
        The state that refuses it, e.g. ``"draft"`` or ``"green slot holds 'm2'"``.
    message
        What was refused and why, naming the state.
    """

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.message = message


class NotAuthenticated(RecloopError):
    """No valid API key was presented."""


class Forbidden(RecloopError):
    """The request is understood and authenticated, but not allowed.

    ``reason`` says why, for clients to act on: ``"role"`` (the key lacks the role the
    route needs) or ``"blocked"`` (the event's user is blocked by the guard).
    """

    def __init__(self, message: str, reason: str = "role") -> None:
        super().__init__(message)
        self.reason = reason


class RateLimited(RecloopError):
    """Over a rate limit.

    Parameters
    ----------
    limit
        The limit that was hit, e.g. ``"60 per 1 minute"``.
    remaining
        What is left in the window (0).
    reset_at
        When the window resets, seconds since the epoch.
    """

    def __init__(self, limit: str, remaining: int, reset_at: float) -> None:
        super().__init__(f"rate limit {limit} exceeded")
        self.limit = limit
        self.remaining = remaining
        self.reset_at = reset_at


class Unavailable(RecloopError):
    """A dependency cannot serve the request now."""


class TransientError(Unavailable):
    """A call to a dependency failed in a way that trying again may fix: the connection
    dropped, was refused, or timed out. The dependency may have done the work all the
    same (the answer was lost), so only idempotent calls are retried (``recloop.resilience``).

    Parameters
    ----------
    dependency
        Which, e.g. ``"storage"``.
    reason
        The driver's error, ``"Type: message"`` (for logs and health checks: it may name
        hosts and ports, so the API does not send it to clients).
    """

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency}: {reason}")
        self.dependency = dependency
        self.reason = reason


class CircuitOpen(Unavailable):
    """The dependency's circuit breaker is open: calls are refused without trying.

    Parameters
    ----------
    dependency
        The breaker's name, e.g. ``"storage"``.
    retry_after
        Seconds until the breaker lets a trial call through.
    """

    def __init__(self, dependency: str, retry_after: float) -> None:
        super().__init__(
            f"{dependency} is unavailable (circuit open; next trial in {retry_after:.1f}s)"
        )
        self.dependency = dependency
        self.retry_after = retry_after
