"""API keys and roles.

Keys are random secrets shown once (:func:`new_key`); only their SHA-256 is
configured. A presented key is hashed and compared with every configured hash
in constant time, so neither its value nor which key matched leaks through
timing.

Roles: ``ingest`` (feedback, performance reports, items), ``read``
(preferences, weights, strategy, rank, results, ...), ``admin``
(experiments, algorithms, block/unblock); ``admin`` implies the others.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

ROLES = ("ingest", "read", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[str]

    def can(self, role: str) -> bool:
        """
        >>> Principal("o", frozenset({"ingest"})).can("read")
        False
        >>> Principal("ops", frozenset({"admin"})).can("read")
        True
        """
        return role in self.roles or "admin" in self.roles


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its SHA-256 (hex): the key goes to the client, the hash to config.

    >>> key, sha = new_key()
    >>> key.startswith("rlk_") and digest(key) == sha
    True
    """
    key = "rlk_" + secrets.token_urlsafe(32)
    return key, digest(key)


class KeyRing:
    """The configured keys; empty means authentication is off."""

    def __init__(self, keys: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        self._keys = [
            (bytes.fromhex(sha), Principal(name, frozenset(roles))) for name, sha, roles in keys
        ]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def verify(self, presented: str) -> Principal | None:
        """The key's principal, or None. Compares with every key, whatever matches.

        >>> key, sha = new_key()
        >>> ring = KeyRing([("orchestrator", sha, ["ingest"])])
        >>> ring.verify(key).name, ring.verify("rlk_wrong")
        ('orchestrator', None)
        """
        candidate = hashlib.sha256(presented.encode()).digest()
        found = None
        for expected, principal in self._keys:
            if hmac.compare_digest(candidate, expected):
                found = principal
        return found
