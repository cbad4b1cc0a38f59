"""Console sign-in: sessions in a signed cookie (itsdangerous), and their CSRF tokens.

The API key a person signs in with is checked once against the key ring
(``core.auth``) and never kept. The cookie (HttpOnly, SameSite=Strict, Secure
over HTTPS) carries a signed payload: a tag naming the configured key (an HMAC
of the key's configured SHA-256 under the signing secret, so neither the key
nor its digest leaves the server), the session's CSRF token and when it
expires. Nothing is held on the server, so any instance with the same keys and
secret accepts the cookie, and a restart signs no one out.

Each request looks the tag up in the keys configured *now*: removing a key ends
its sessions at once, and changing its roles changes theirs. The secret is
``console.session_secret``, or else derived from the configured keys' digests
(then changing any key signs everyone out). Signing out deletes the cookie and
refuses its value in this process until it would have expired; another
instance accepts a copy of a signed-out cookie until then (rotate the secret to
end every session at once).

Every state-changing request carries the session's CSRF token (a form field or
the ``X-CSRF-Token`` header htmx sends) and is refused without it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from recloop.core.auth import KeyRing, Principal

COOKIE = "recloop_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600.0
MAX_REVOKED = 10_000
"""Signed-out sessions this process remembers (the oldest are forgotten first)."""
_SALT = "recloop-console-session"


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


def derived_secret(keys: Iterable[tuple[str, str, Iterable[str]]]) -> str:
    """The signing secret when none is configured: from the configured keys' digests."""
    digests = sorted(sha.lower() for _, sha, _ in keys)
    return hmac.new(_SALT.encode(), "\n".join(digests).encode(), hashlib.sha256).hexdigest()


class Sessions:
    """Opens sessions as signed cookie values and reads them back."""

    def __init__(
        self,
        keys: Iterable[tuple[str, str, Iterable[str]]],
        secret: str | None = None,
        seconds: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        configured = [(name, sha.lower(), frozenset(roles)) for name, sha, roles in keys]
        self._ring = KeyRing(configured)
        self._secret = derived_secret(configured) if secret is None else secret
        self._tags = {self._tag(sha): Principal(name, roles) for name, sha, roles in configured}
        self._serializer = URLSafeSerializer(self._secret, salt=_SALT)
        self._seconds = seconds
        self._clock = clock
        self._revoked: dict[str, float] = {}  # csrf token -> when the session expires

    def _tag(self, sha: str) -> str:
        mac = hmac.new(self._secret.encode(), sha.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")

    @property
    def keyed(self) -> bool:
        """Whether API keys are configured (else loopback callers act as admin, unsigned)."""
        return self._ring.enabled

    def sign_in(self, key: str) -> tuple[str, Session] | None:
        """A new session for a valid key with at least the ``read`` role, else None:
        the cookie's value and the session."""
        key = key.strip()
        principal = self._ring.verify(key)
        if principal is None or not principal.can("read"):
            return None
        sha = hashlib.sha256(key.encode()).hexdigest()
        return self._open({"k": self._tag(sha)}, principal)

    def anonymous(self, host: str) -> tuple[str, Session]:
        """No keys configured: a loopback caller's session (every role, as the API's)."""
        return self._open({"a": host}, _anonymous(host))

    def _open(self, who: dict[str, str], principal: Principal) -> tuple[str, Session]:
        session = Session(principal, secrets.token_urlsafe(32), self._clock() + self._seconds)
        value = self._serializer.dumps({**who, "c": session.csrf, "e": session.expires_at})
        return value, session

    def get(self, value: str | None) -> Session | None:
        """The session a cookie's value holds, or None (missing, forged, expired, signed
        out here, or its key no longer configured)."""
        if not value:
            return None
        try:
            payload: Any = self._serializer.loads(value)
        except BadSignature:
            return None
        if not isinstance(payload, dict):
            return None
        csrf, expires_at = payload.get("c"), payload.get("e")
        if not isinstance(csrf, str) or not isinstance(expires_at, int | float):
            return None
        if expires_at <= self._clock() or csrf in self._revoked:
            return None
        if "k" in payload:
            principal = self._tags.get(str(payload["k"]))
        elif "a" in payload and not self.keyed:
            principal = _anonymous(str(payload["a"]))
        else:
            principal = None
        return None if principal is None else Session(principal, csrf, float(expires_at))

    def sign_out(self, value: str | None) -> None:
        """Refuse ``value`` in this process from now on (the route deletes the cookie)."""
        session = self.get(value)
        if session is None:
            return
        now = self._clock()
        if len(self._revoked) >= MAX_REVOKED:
            self._revoked = {c: e for c, e in self._revoked.items() if e > now}
            while len(self._revoked) >= MAX_REVOKED:  # still full: forget the oldest
                del self._revoked[next(iter(self._revoked))]
        self._revoked[session.csrf] = session.expires_at


def _anonymous(host: str) -> Principal:
    return Principal(f"client:{host}", frozenset({"admin"}))


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (compared in constant time)."""
    return presented is not None and hmac.compare_digest(presented, session.csrf)
