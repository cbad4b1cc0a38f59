"""Privacy rules: pseudonymous user ids, tombstones of erased users, retention cut-offs.

Pure functions over the standard library (``hmac``, ``hashlib``); the
services decide when to apply them (see ``docs/privacy.md``).

- A *pseudonym* is ``HMAC-SHA256(id_key, raw id)`` in hex: keyed, so that
  nobody without the key can test a guessed id against the stored ones (a
  bare hash of an e-mail address is reversed by hashing candidates).
- A key's *fingerprint* is the HMAC of a fixed string under the key: it tells
  whether the key changed without storing anything that reveals the key.
- A *tombstone* remembers that a user was erased, under a digest of the id
  (never the id itself, which erasure must not keep), and blocks the events
  accepted before the erasure: they must not recreate what was erased.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recloop.core.events import Event

DAY = 86_400.0

_FINGERPRINT_MESSAGE = b"recloop privacy.id_key fingerprint v1"
_DIGEST_PREFIX = b"recloop erased user v1\x00"


def pseudonym(key: bytes, raw_id: str) -> str:
    """The pseudonymous id of ``raw_id`` under ``key``: HMAC-SHA256, 64 hex digits.

    >>> pseudonym(b"secret", "alice")[:16]
    '4360c67bc8102511'
    >>> pseudonym(b"secret", "alice") == pseudonym(b"other", "alice")
    False
    """
    return hmac.new(key, raw_id.encode(), hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """What is stored to recognise ``key`` later (it does not reveal the key).

    >>> key_fingerprint(b"secret") == key_fingerprint(b"secret"), len(key_fingerprint(b"k"))
    (True, 64)
    """
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


def user_digest(user_id: str) -> str:
    """The key of a user's tombstone: SHA-256 of the (stored) user id, 64 hex digits.

    Not the id: an erased user's id must not stay in the database. Like any
    unkeyed hash it can be matched by someone who already knows the id (with
    ``privacy.pseudonymize_user_ids`` the stored id is itself keyed).

    >>> user_digest("u1") == user_digest("u1"), user_digest("u1") == user_digest("u2")
    (True, False)
    """
    return hashlib.sha256(_DIGEST_PREFIX + user_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A user's erasure: when, and (embedded log) the highest log offset it covers.

    An event of the user is *blocked* (neither applied nor stored) when it was
    accepted before the erasure: its log offset is at most ``log_offset``
    (embedded deployment), or the user acted at or before ``erased_at``
    (either deployment; it also catches a client retrying old events). Later
    events are the user's new history: a user may come back.

    >>> t = Tombstone(erased_at=100.0, log_offset=7)
    >>> t.blocks(offset=7, timestamp=150.0), t.blocks(offset=8, timestamp=150.0)
    (True, False)
    >>> t.blocks(offset=None, timestamp=100.0), t.blocks(offset=None, timestamp=101.0)
    (True, False)
    """

    erased_at: float
    log_offset: int | None = None

    def blocks(self, offset: int | None, timestamp: float) -> bool:
        """Whether an event at ``offset`` (None: not an embedded-log offset) that happened at
        ``timestamp`` is one of the erased history."""
        if timestamp <= self.erased_at:
            return True
        return offset is not None and self.log_offset is not None and offset <= self.log_offset


class Erasures:
    """The tombstones of erased users, as a processor checks each event against them.

    Keyed by :func:`user_digest`; each user's look-up is memoised (at most
    ``max_memo`` users, then the memo starts again). ``version`` counts the
    changes of the tombstones, so that what was checked against older ones can be
    checked again. On a partitioned log (a worker's) offsets count per partition:
    only the time decides there.

    >>> e = Erasures(max_memo=10)
    >>> e.add("u1", Tombstone(erased_at=100.0, log_offset=7))
    >>> e.blocked("u1", 7, 150.0), e.blocked("u1", 8, 150.0), e.blocked("u2", 1, 50.0)
    (True, False, False)
    >>> e.partitioned = True
    >>> e.blocked("u1", 7, 150.0), e.version
    (False, 1)
    """

    def __init__(self, max_memo: int) -> None:
        self._tombstones: dict[str, Tombstone] = {}
        self._memo: dict[str, Tombstone | None] = {}  # user_id -> tombstone
        self._max_memo = max_memo
        self.version = 0
        self.partitioned = False

    def __bool__(self) -> bool:
        """Whether any user is erased (else nothing is blocked: no look-up needed)."""
        return bool(self._tombstones)

    def replace(self, tombstones: dict[str, Tombstone]) -> None:
        """Hold these tombstones (by digest) instead of the former ones."""
        self._tombstones = dict(tombstones)
        self.version += 1
        self._memo.clear()

    def add(self, user_id: str, tombstone: Tombstone) -> None:
        tombstones = dict(self._tombstones)
        tombstones[user_digest(user_id)] = tombstone
        self.replace(tombstones)

    def blocks(self, events: Sequence[Event]) -> list[bool]:
        """Per event, whether it is erased history (:meth:`blocked`)."""
        if not self._tombstones:
            return [False] * len(events)
        return [self.blocked(e.user_id, e.offset, e.timestamp) for e in events]

    def blocked(self, user_id: str, offset: int, timestamp: float) -> bool:
        """Whether the user's event at ``offset`` (of the log), which happened at
        ``timestamp``, is erased history."""
        if not self._tombstones:
            return False
        memo = self._memo
        if user_id in memo:
            tombstone = memo[user_id]
        else:
            tombstone = self._tombstones.get(user_digest(user_id))
            if len(memo) >= self._max_memo:
                memo.clear()
            memo[user_id] = tombstone
        if tombstone is None:
            return False
        return tombstone.blocks(None if self.partitioned else offset, timestamp)


def retention_cutoff(now: float, days: float) -> float:
    """Records older than this (seconds since the epoch) are past their retention.

    >>> retention_cutoff(10 * DAY, 3.0) / DAY
    7.0
    """
    return now - days * DAY


__all__ = [
    "DAY",
    "Erasures",
    "Tombstone",
    "key_fingerprint",
    "pseudonym",
    "retention_cutoff",
    "user_digest",
]
