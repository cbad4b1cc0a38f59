"""Console sign-in: server-side sessions behind an opaque cookie, and their CSRF tokens.

The API key a person signs in with is checked once against the key ring
(``core.auth``) and never kept: the session holds the principal it names. The
cookie carries only a random session id (HttpOnly, SameSite=Strict, Secure over
HTTPS), so neither the key nor anything derived from it leaves the server or
reaches a log. Sessions live in this process's memory: a restart, or another
instance behind the same address, asks for the key again.

Every state-changing request carries the session's CSRF token (a form field or
the ``X-CSRF-Token`` header htmx sends) and is refused without it.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from recloop.core.auth import KeyRing, Principal

COOKIE = "recloop_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: float

    def admin(self) -> bool:
        return self.principal.can("admin")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a client address) is this machine."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Sessions:
    """Signed-in sessions by their random id; expired ones are dropped as they are met."""

    def __init__(
        self,
        keys: KeyRing,
        seconds: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._seconds = seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    @property
    def keyed(self) -> bool:
        """Whether API keys are configured (else loopback callers act as admin, unsigned)."""
        return self._keys.enabled

    def sign_in(self, key: str) -> tuple[str, Session] | None:
        """A new session for a valid key with at least the ``read`` role, else None."""
        principal = self._keys.verify(key.strip())
        if principal is None or not principal.can("read"):
            return None
        return self._open(principal)

    def anonymous(self, host: str) -> tuple[str, Session]:
        """No keys configured: a loopback caller's session (every role, as the API's)."""
        return self._open(Principal(f"client:{host}", frozenset({"admin"})))

    def _open(self, principal: Principal) -> tuple[str, Session]:
        now = self._clock()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
            while len(self._sessions) >= MAX_SESSIONS:  # still full: drop the oldest
                del self._sessions[next(iter(self._sessions))]
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), now + self._seconds)
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[sid]
            return None
        return session

    def sign_out(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (compared in constant time)."""
    return presented is not None and hmac.compare_digest(presented, session.csrf)
