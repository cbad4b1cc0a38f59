"""Spam and bot detection: per-user evidence, signals, and a reliability score 0..100.

Every user is scored continuously from their own events. Four groups of
detectors read a user's :class:`UserActivity` (bounded memory, updated per
event in O(1) amortised time) against population statistics
(:class:`ItemStats`, :class:`TextRegistry`):

timing
    ``event_rate`` (actions per second), ``interarrival_cv`` (coefficient of
    variation of inter-arrival times: periodic bots have CV near 0),
    ``burstiness`` ``B = (sigma - mu) / (sigma + mu)`` (Goh & Barabási 2008:
    humans are bursty, ``B > 0``; Poisson timing has ``B = 0``, periodic
    ``B = -1``), ``hour_entropy`` (normalised entropy of the hour-of-day
    histogram: bots run around the clock, humans sleep) and
    ``explicit_burst`` (explicit events within one second, a hard rule).
behaviour
    ``repeated_item`` (share of actions repeating a (type, item) pair, beyond
    what choice in a catalogue of the size the population acts on forces),
    ``item_diversity`` (entropy of the items acted on, normalised by the most
    the actions could reach in that catalogue),
    ``short_dwell`` (share of dwell events under a few seconds) and
    ``clicks_without_impressions``.
rating profile
    shilling-attack features (attack models: Mobasher et al. 2007; Gunes et
    al. 2014): ``rdma`` (Chirita et al. 2005), ``wdma``, ``mean_var``,
    ``fmtd``, ``length_var`` and, in a robust form, ``target_focus``
    (Williams, Mobasher & Burke 2007); ``item_mean_deviation`` (mean squared
    z-score against leave-one-out item means), ``extremity`` (share of
    ratings at the ends of the scale), ``agreement`` (correlation with the
    item means) and ``popularity`` (how randomly the rated items were
    chosen, from their popularity ranks: the item-degree idea of DegreeSAD,
    Li et al. 2016). Standard attack profiles fill with items drawn at
    random, which popular-led human choice is not; every profile of one
    attack rates the same target at the end of the scale, which
    ``target_focus`` sees in the target's ratings.
review text
    ``review_links``, ``review_repeated_chars`` and ``review_copies`` (the
    same normalised text posted by several users).

Combining. A signal *fires* past its threshold; its evidence against the
user then grows linearly to its full weight over a span
(:func:`severity`), and every weight grows with the data behind it,
``w * n / (n + half)``, from a minimum (:func:`grown`), so that a newcomer
is judged by the prior alone. Signals are grouped in *families* that
measure one thing (:data:`FAMILIES`: CV and burstiness are monotone
transforms of each other; RDMA, WDMA, the z-scores, FMTD and extremity all
grow with extreme, off-consensus ratings), and a family counts once: the
largest evidence of its fired members, or, when none fired, a little
positive evidence (``clean_evidence`` times its weight, at most
``clean_cap``). The score is the expected value of a Beta reputation
(Jøsang & Ismail 2002)::

    score = 100 * (a0 + positive) / (a0 + positive + b0 + negative)

with the prior ``Beta(a0, b0) = Beta(4, 1)`` (a new user scores 80). Below
``suspect_threshold`` (50) a user is *suspect*; below ``block_threshold``
(20), or on a hard rule (:func:`hard_rule`), *blocked*.

Population level. The profile signals are gated by what the population
makes normal (:func:`fit_norms`, :mod:`recloop.core.spam_norms`), the
behaviour signals by the size of the catalogue the population acts on
(:meth:`ItemStats.note_items`), and ``target_group`` is evidence against a
group of new, similar profiles that rate one item at the end of the scale
(:func:`groups`, :mod:`recloop.core.spam_groups`).

The thresholds and weights are set on the simulation of
``benchmarks/spam_eval.py``; docs/spam.md reports them there and on two
worlds they were not set on, and says what the detectors cannot see.

References
----------
- Chirita, Nejdl & Zamfir (2005). Preventing shilling attacks in online
  recommender systems. WIDM '05.
- Williams, Mobasher & Burke (2007). Defending recommender systems: detection
  of profile injection attacks. Service Oriented Computing and Applications 1(3).
- Mobasher, Burke, Bhaumik & Williams (2007). Toward trustworthy recommender
  systems: an analysis of attack models and algorithm robustness. ACM TOIT 7(4).
- Gunes, Kaleli, Bilge & Polat (2014). Shilling attacks against recommender
  systems: a comprehensive survey. Artificial Intelligence Review 42(4).
- Li, Gao et al. (2016). Shilling attack detection in recommender systems via
  selecting patterns analysis (DegreeSAD). IEICE Trans. Inf. & Syst. E99-D(10).
- Goh & Barabási (2008). Burstiness and memory in complex systems. EPL 81(4).
- Jøsang & Ismail (2002). The Beta reputation system. 15th Bled eCommerce Conference.
- DerSimonian & Laird (1986). Meta-analysis in clinical trials. Controlled
  Clinical Trials 7(3) (the random-effects variance of ``target_focus``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
from array import array
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata  # type: ignore[import-untyped]

from recloop.core.errors import InvalidInput
from recloop.core.events import EXPLICIT_TYPES, RATING_MAX, RATING_MIN
from recloop.core.spam_groups import GroupReading, GroupRule, Profile, find_groups
from recloop.core.spam_norms import ProfileNorms

__all__ = [
    "BLOCKED",
    "CATALOGUE_CAP",
    "FAMILIES",
    "SUSPECT",
    "TRUSTED",
    "ItemStats",
    "PopularityRanks",
    "ProfileFeatures",
    "RatingMoments",
    "Signal",
    "SpamConfig",
    "TextRegistry",
    "UserActivity",
    "Verdict",
    "burstiness",
    "coefficient_of_variation",
    "evidence",
    "excess_repeats",
    "fit_norms",
    "graded",
    "group_rule",
    "groups",
    "grown",
    "hard_rule",
    "has_link",
    "has_repeated_chars",
    "hour_entropy",
    "item_diversity",
    "judge",
    "norm_row",
    "normalise_text",
    "profile_features",
    "record_event",
    "reputation",
    "severity",
    "signals",
    "status_of",
    "text_key",
]

TRUSTED: Final = "trusted"
SUSPECT: Final = "suspect"
BLOCKED: Final = "blocked"

_SECONDS_PER_HOUR: Final = 3600.0
_HOURS: Final = 24
_NO_HOURS: Final = array("q", bytes(8 * _HOURS))
"""A user's actions by hour of day before the first (copied per user)."""
_URL = re.compile(
    r"(?:https?://|www\.)\S+|\b[a-z0-9-]+\.(?:com|net|org|io|ru|xyz|top|info)\b", re.I
)
_REPEATED_CHARS = re.compile(r"(.)\1{4,}", re.S)
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)

FloatArray = npt.NDArray[np.float64]

CATALOGUE_CAP: Final = 10_000
"""Distinct items :meth:`ItemStats.note_items` counts at most."""


# -- Configuration ------------------------------------------------------------------

_SIGNED: Final = frozenset({"burstiness_min", "agreement_min"})


@dataclass(frozen=True, slots=True)
class SpamConfig:
    """Every tunable number of the detectors, with its default.

    Each signal has a threshold (``*_max`` or ``*_min``), a span and a weight
    ``w_*``. It *fires* when its value is beyond the threshold and it has its
    minimum amount of data; its evidence against the user then grows linearly
    from 0 at the threshold to the full weight at ``span`` beyond it
    (:func:`severity`), times the data factor ``n / (n + half)``
    (:func:`grown`). The defaults are the ones ``benchmarks/spam_eval.py``
    reports (docs/spam.md).

    Raises
    ------
    InvalidInput
        naming the field, e.g. ``spam.block_threshold`` when it is above
        ``suspect_threshold``.

    >>> SpamConfig().suspect_threshold, SpamConfig().block_threshold
    (50.0, 20.0)
    >>> SpamConfig(block_threshold=60.0)
    Traceback (most recent call last):
    ...
    recloop.core.errors.InvalidInput: spam.block_threshold: must be <= suspect_threshold, got 60.0
    """

    # verdict
    suspect_threshold: float = 50.0
    block_threshold: float = 20.0
    # hard rules: more than this many events inside one second blocks the user
    max_explicit_per_second: float = 10.0
    max_actions_per_second: float = 25.0
    hard_rule_seconds: float = math.inf  # how long a hard-rule violation is remembered
    # Beta reputation: the prior's pseudo-counts (a new user scores 80) and the
    # positive evidence of a family that did not fire: clean_evidence times its
    # weight, at most clean_cap
    prior_trust: float = 4.0
    prior_distrust: float = 1.0
    clean_evidence: float = 0.25
    clean_cap: float = 0.5
    # bounded memory per user
    recent_actions: int = 256  # timestamps and items of the latest actions
    max_profile_ratings: int = 2000
    remembered_items: int = 1024  # (type, item) pairs and impressed items
    remembered_reviews: int = 64
    # timing: actions per second, sustained over the recent actions
    rate_max: float = 1.0
    rate_span: float = 1.0
    rate_min_actions: int = 20
    w_rate: float = 40.0
    # timing: periodicity (CV of inter-arrival times) and burstiness
    timing_min_intervals: int = 30
    timing_half: float = 60.0
    cv_min: float = 0.35
    cv_span: float = 0.2
    w_cv: float = 40.0
    burstiness_min: float = 0.05
    burstiness_span: float = 0.1
    burstiness_min_intervals: int = 100  # one session of a human can look Poisson-like
    w_burstiness: float = 10.0
    # timing: hour-of-day entropy (normalised; 1 = uniform over the 24 hours)
    hour_entropy_max: float = 0.95
    hour_entropy_span: float = 0.03
    hour_min_actions: int = 150
    hour_half: float = 300.0
    w_hour_entropy: float = 10.0
    # behaviour: repeated (type, item) pairs and item diversity
    behaviour_min_actions: int = 30
    behaviour_half: float = 60.0
    repeat_max: float = 0.6
    repeat_span: float = 0.2
    diversity_min: float = 0.5
    diversity_span: float = 0.2
    w_repetition: float = 20.0
    # behaviour: very short dwell
    short_dwell_seconds: float = 3.0
    short_dwell_max: float = 0.7
    short_dwell_span: float = 0.2
    dwell_min: int = 20
    dwell_half: float = 40.0
    w_short_dwell: float = 15.0
    # behaviour: clicks on items never impressed nor viewed
    impressions_logged: bool | Literal["auto"] = "auto"
    """Whether clients log impressions (or views) before clicks: False turns the signal off,
    True keeps it on; "auto" keeps it on while the population's own share of unseen clicks
    is at most ``unseen_clicks_max`` (:meth:`ItemStats.impressions_logged`): where most
    clicks are unseen, the clients log no exposures and the signal would accuse everyone."""
    unseen_clicks_max: float = 0.5
    unseen_clicks_span: float = 0.3
    clicks_min: int = 10
    clicks_half: float = 20.0
    w_unseen_clicks: float = 15.0
    # review text
    text_min_chars: int = 24  # shorter normalised texts are not compared across users
    copies_max: float = 2.0  # fires from 3 distinct users posting the same text
    copies_span: float = 2.0
    w_copies: float = 30.0
    links_max: float = 0.5
    repeated_chars_max: float = 0.5
    text_span: float = 0.3
    reviews_min: int = 2
    reviews_half: float = 3.0
    w_text: float = 15.0
    # rating profile
    profile_min: int = 8
    profile_half: float = 30.0
    item_prior_ratings: float = 3.0  # shrinkage of item means and variances to the global ones
    variance_floor: float = 0.05
    rdma_ratio_max: float = 1.6  # RDMA (WDMA) / its expectation under the item spreads
    rdma_ratio_span: float = 0.5
    deviation_max: float = 2.3  # mean squared z-score against leave-one-out item means
    deviation_span: float = 1.5
    w_deviation: float = 10.0
    mean_var_ratio_min: float = 0.2  # MeanVar / mean item variance over the filler
    mean_var_ratio_span: float = 0.1
    w_mean_var: float = 15.0
    fmtd_max: float = 3.0
    fmtd_span: float = 0.5
    extremity_max: float = 0.6
    extremity_span: float = 0.3
    w_shape: float = 15.0
    agreement_min: float = 0.4  # upper confidence bound of corr(ratings, item means)
    agreement_span: float = 0.4
    agreement_z: float = 1.0
    w_agreement: float = 6.0
    # how random the choice of rated items is: 0 = the n most popular, about 1 = at
    # random; the threshold is popularity_max + popularity_slack / (sqrt(n) log(I / n))
    popularity_max: float = 0.6
    popularity_slack: float = 2.0
    popularity_span: float = 0.4
    popularity_min: int = 20  # rated items needed
    popularity_max_share: float = 0.5  # not assessed for users who rated more of the catalogue
    popularity_refresh: float = 0.01  # re-rank items after 1 % more ratings ...
    popularity_refresh_items: float = 0.1  # ... once new ratings number a tenth of the items
    w_popularity: float = 25.0
    # target focus: z-score of the share of extreme ratings of the user's extreme-rated items
    focus_max: float = 3.0
    focus_span: float = 8.0
    focus_share_floor: float = 0.01
    w_focus: float = 6.0
    length_z_max: float = 5.0  # profile length in standard deviations above the mean
    length_z_span: float = 3.0
    w_length: float = 3.0
    # population norms (core.spam_norms): a profile signal counts only as far as the
    # user is also unusual for the population, from norm_z0 robust sd (none) to
    # norm_z0 + norm_span (all); fitted once norms_min_profiles profiles are known
    norm_z0: float = 2.5
    # popularity and target focus once had lower gates (1.0), when the group detector
    # missed a small crowd's random-filler attackers (docs/spam.md, "Tuning")
    norm_z0_popularity: float = 2.5
    norm_z0_focus: float = 2.5
    norm_span: float = 1.0
    norms_min_profiles: int = 100
    # groups (core.spam_groups): at least group_min raters at an end of the scale of
    # one item who arrived within one of group_arrival_seconds of the raters' median
    # and have a profile size within exp(+-group_length_log) of theirs, more than
    # chance puts there (binomial tail <= group_family_alpha / boxes that could be
    # tested, or <= group_alpha)
    group_min: int = 5
    group_arrival_seconds: tuple[float, ...] = (86_400.0, 7 * 86_400.0)
    group_length_log: float = 0.3
    group_alpha: float = 1e-9
    group_min_share: float = 0.5  # of the item's raters at that end
    group_purity_min: float = 0.8  # evidence from 0 at this purity ...
    group_purity_span: float = 0.15  # ... to w_group this much above it
    w_group: float = 12.0
    group_family_alpha: float = 0.001
    """The chance that any box of a population of ordinary raters makes a group: a box
    passes when its binomial tail is at most this divided by the number of boxes tested
    (Bonferroni), or at most ``group_alpha`` in any case."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            if isinstance(value, str):
                if value != "auto":
                    message = f"must be true, false or auto, got {value!r}"
                    raise InvalidInput(f"spam.{f.name}", message)
                continue
            if isinstance(value, tuple):
                if not value or not all(math.isfinite(v) and v > 0 for v in value):
                    raise InvalidInput(f"spam.{f.name}", f"must be > 0 and finite, got {value}")
                continue
            if f.name in _SIGNED:
                if not math.isfinite(value):
                    raise InvalidInput(f"spam.{f.name}", f"must be finite, got {value}")
            elif not (value >= 0 and (f.name == "hard_rule_seconds" or math.isfinite(value))):
                raise InvalidInput(f"spam.{f.name}", f"must be finite and >= 0, got {value}")
        if not self.suspect_threshold <= 100:
            raise InvalidInput(
                "spam.suspect_threshold", f"must be in [0, 100], got {self.suspect_threshold}"
            )
        if not self.block_threshold <= self.suspect_threshold:
            raise InvalidInput(
                "spam.block_threshold",
                f"must be <= suspect_threshold, got {self.block_threshold}",
            )
        for name in (
            "prior_trust", "prior_distrust", "max_explicit_per_second", "max_actions_per_second",
            "max_profile_ratings",
        ):  # fmt: skip
            if not getattr(self, name) > 0:
                raise InvalidInput(f"spam.{name}", f"must be > 0, got {getattr(self, name)}")
        for name in ("recent_actions", "remembered_items", "remembered_reviews"):
            if getattr(self, name) < 2:
                raise InvalidInput(f"spam.{name}", f"must be >= 2, got {getattr(self, name)}")


# -- Population statistics ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RatingMoments:
    """Count, sum, sum of squares and counts at the scale's ends: exact, mergeable.

    ``n_max`` and ``n_min`` count the ratings at the top and at the bottom
    of the scale (5 and 1).

    >>> m = RatingMoments(2, 8.0, 34.0, 1, 0) + RatingMoments(1, 1.0, 1.0, 0, 1)
    >>> m.n, m.mean, m.variance, m.n_max, m.n_min
    (3, 3.0, 4.0, 1, 1)
    >>> (m - RatingMoments(1, 1.0, 1.0, 0, 1)) == RatingMoments(2, 8.0, 34.0, 1, 0)
    True
    """

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    n_max: int = 0
    n_min: int = 0

    def __add__(self, other: RatingMoments) -> RatingMoments:
        return RatingMoments(
            self.n + other.n,
            self.total + other.total,
            self.total_sq + other.total_sq,
            self.n_max + other.n_max,
            self.n_min + other.n_min,
        )

    def __sub__(self, other: RatingMoments) -> RatingMoments:
        return RatingMoments(
            self.n - other.n,
            self.total - other.total,
            self.total_sq - other.total_sq,
            self.n_max - other.n_max,
            self.n_min - other.n_min,
        )

    @property
    def mean(self) -> float | None:
        """The mean rating; None without ratings."""
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """The unbiased sample variance; None with fewer than two ratings."""
        if self.n < 2:
            return None
        return max(self.total_sq - self.total * self.total / self.n, 0.0) / (self.n - 1)


# :class:`ItemStats` keeps each moment as a mutable list, [n, total, total_sq, n_max,
# n_min], updated in place: a rating is a few additions, not a new object
_Tally = list[Any]


def _tally(moments: RatingMoments = RatingMoments()) -> _Tally:
    return [moments.n, moments.total, moments.total_sq, moments.n_max, moments.n_min]


def _count(tally: _Tally, value: float, sign: int) -> None:
    """Add (``sign`` 1) or take back (-1) one rating of ``value``, in place."""
    tally[0] += sign
    tally[1] += sign * value
    tally[2] += sign * value * value
    if value >= RATING_MAX:
        tally[3] += sign
    if value <= RATING_MIN:
        tally[4] += sign


def _rows_of(tallies: Mapping[str, _Tally], item_ids: Sequence[str]) -> FloatArray:
    """The tallies of ``item_ids`` (all held) as a ``(len, 5)`` array."""
    rows = map(tallies.__getitem__, item_ids)
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64, 5 * len(item_ids))
    return flat.reshape(-1, 5)


def _grown_rows(array: FloatArray, needed: int) -> FloatArray:
    """``array`` with room for at least ``needed`` rows (doubling), its rows kept."""
    if needed <= len(array):
        return array
    grown = np.zeros((max(needed, 2 * len(array), 64), 5))
    grown[: len(array)] = array
    return grown


@dataclass(frozen=True, slots=True)
class PopularityRanks:
    """Items' popularity as centred log-ranks, for the ``popularity`` signal.

    ``table[i] = log(rank_i) - c``, ``c`` the mean log-rank over the ranked
    items, so a profile of items drawn at random averages about 0 and one
    led by popularity well below it. Under Zipf's law ``-log p_i`` is ``log
    rank_i`` plus a constant, so the mean is the likelihood-ratio statistic
    of uniform against popularity-proportional choice; but ranks, unlike
    shares, do not move when attackers add ratings to every item alike.
    ``floor[n - 1]`` is the mean of the ``n`` lowest values: a profile of the
    ``n`` most popular items. ``unranked`` is the value of an item the table
    does not hold (rated since): the least popular.
    """

    table: Mapping[str, float]
    floor: FloatArray
    unranked: float


class ItemStats:
    """Population rating statistics the rating-profile detectors compare against.

    Per item: :class:`RatingMoments` (running mean and variance, and the
    item's popularity: its number of ratings). Over all ratings: the global
    moments. Over users: the moments of profile lengths, for ``length_var``.
    The statistics include every rating, attackers' too, as they would in
    production. Mutators return None.

    >>> stats = ItemStats()
    >>> for value in (4.0, 5.0, 3.0):
    ...     stats.add_rating("a", value)
    >>> stats.mean("a"), stats.count("a"), stats.variance("a"), stats.mean("b")
    (4.0, 3, 1.0, None)
    >>> stats.replace_rating("a", 3.0, 5.0); stats.mean("a")
    4.666666666666667
    """

    def __init__(self) -> None:
        self._items: dict[str, _Tally] = {}
        self._seen: set[str] = set()  # items of any event, up to CATALOGUE_CAP
        # items named by one user so far -> a hash of that user (not the id: erasure)
        self._named_once: dict[str, int] = {}
        self._global = _tally()
        self._lengths = _tally()
        self._version = 0
        self._ranks: tuple[int, int, PopularityRanks] | None = None
        self._ends: tuple[int, int, FloatArray, FloatArray] | None = None
        self._table: tuple[int, FloatArray] | None = None
        # every item's tally as a row of an array, in ``_items``' order, brought up to
        # date by :meth:`_tallies` from the items changed since (not rebuilt whole: the
        # population tables are recomputed as ratings grow, over every item)
        self._mirror: FloatArray = np.zeros((0, 5))
        self._row: dict[str, int] = {}
        self._changed: dict[str, None] = {}  # in first-change order: new items' order
        self.clicks = 0
        """Clicks folded so far, of every user (erased and evicted users' included) ..."""
        self.unseen_clicks = 0
        """... and those on items not among their user's latest impressions and views."""

    # mutators
    def add_rating(self, item_id: str, value: float) -> None:
        """Count one more rating of ``item_id``."""
        held = self._items.get(item_id)
        if held is None:
            held = self._items[item_id] = _tally()
        _count(held, value, 1)
        _count(self._global, value, 1)
        self._changed[item_id] = None
        self._version += 1

    def remove_rating(self, item_id: str, value: float) -> None:
        """Take back a rating added before (a deleted rating).

        Raises
        ------
        InvalidInput
            when ``item_id`` has no rating to remove.
        """
        held = self._items.get(item_id)
        if held is None or held[0] == 0:
            raise InvalidInput("item_id", f"{item_id!r} has no rating to remove")
        _count(held, value, -1)
        if held[0] == 0:
            del self._items[item_id]
            self._row.clear()  # the rows' order is the items': rebuilt whole
        _count(self._global, value, -1)
        self._changed[item_id] = None
        self._version += 1

    def replace_rating(self, item_id: str, old: float, new: float) -> None:
        """A user changed their rating of ``item_id`` from ``old`` to ``new``."""
        self.remove_rating(item_id, old)
        self.add_rating(item_id, new)

    def note_items(self, item_ids: Iterable[str], user_ids: Iterable[str] | None = None) -> None:
        """Count the items of a batch of events of any type in :attr:`catalogue`.

        With ``user_ids`` (the events' users, in step), an item counts once two
        distinct users have named it: a bot sending events about made-up item ids
        does not inflate the catalogue (which would make the ordinary re-viewers of
        a small catalogue look repetitive again). Free once :data:`CATALOGUE_CAP`
        items are known (the behaviour signals need the catalogue's size only up
        to the actions they look at).

        >>> s = ItemStats()
        >>> s.note_items(["a", "b", "c"], ["bot", "bot", "bot"]); s.catalogue
        0
        >>> s.note_items(["a", "b"], ["ann", "bot"]); s.catalogue
        1
        """
        seen = self._seen
        if len(seen) >= CATALOGUE_CAP:
            return
        if user_ids is None:
            seen.update(item_ids)
            return
        items = item_ids if isinstance(item_ids, list) else list(item_ids)
        users = user_ids if isinstance(user_ids, list) else list(user_ids)
        if len(users) != len(items):
            raise ValueError(f"{len(items)} item_ids but {len(users)} user_ids")
        unseen = set(items)
        unseen -= seen
        if not unseen:  # the usual batch: nothing new, C-level passes
            return
        once = self._named_once
        # the distinct (item, user) pairs of the items not seen, in order
        pairs = dict.fromkeys(p for p in zip(items, users, strict=True) if p[0] in unseen)
        for item, user in pairs:
            first = once.setdefault(item, hash(user))
            if first != hash(user):
                seen.add(item)
                del once[item]
        if len(once) > 4 * CATALOGUE_CAP:  # bounded: made-up ids come and go
            once.clear()

    @property
    def catalogue(self) -> int:
        """How many distinct items the events noted so far were about (at most
        :data:`CATALOGUE_CAP`; 0 when none were noted: unknown).

        >>> s = ItemStats()
        >>> s.note_items(["a", "b", "a"]); s.catalogue
        2
        """
        return len(self._seen)

    def note_profile_length(self, old: int, new: int) -> None:
        """A user's number of rated items went from ``old`` to ``new`` (0 = no profile)."""
        if old > 0:
            _count(self._lengths, float(old), -1)
        if new > 0:
            _count(self._lengths, float(new), 1)

    def note_profile_lengths(self, changes: Iterable[tuple[int, int]]) -> None:
        """:meth:`note_profile_length` for each ``(old, new)``: lengths are whole numbers, so
        their sums are exact and taken once (the same tally as one change at a time).

        >>> a, b = ItemStats(), ItemStats()
        >>> a.note_profile_lengths([(0, 1), (1, 2), (0, 1), (2, 1)])
        >>> for old, new in [(0, 1), (1, 2), (0, 1), (2, 1)]:
        ...     b.note_profile_length(old, new)
        >>> a.profile_lengths == b.profile_lengths
        True
        """
        n = total = total_sq = n_max = n_min = 0
        for old, new in changes:
            if old > 0:
                n -= 1
                total -= old
                total_sq -= old * old
                n_max -= old >= RATING_MAX
                n_min -= old <= RATING_MIN
            if new > 0:
                n += 1
                total += new
                total_sq += new * new
                n_max += new >= RATING_MAX
                n_min += new <= RATING_MIN
        tally = self._lengths
        tally[0] += n
        tally[1] += float(total)
        tally[2] += float(total_sq)
        tally[3] += n_max
        tally[4] += n_min

    def note_clicks(self, clicks: int, unseen: int) -> None:
        """Count ``clicks`` more clicks, ``unseen`` of them on items their user had not been
        shown (:attr:`UserActivity.unseen_clicks`)."""
        self.clicks += clicks
        self.unseen_clicks += unseen

    def impressions_logged(self, config: SpamConfig) -> bool:
        """Whether the ``clicks_without_impressions`` signal counts: as ``config`` says,
        or ("auto") while at most ``unseen_clicks_max`` of the population's clicks are
        unseen (none counted yet: it counts, no user having the clicks it needs).

        >>> s, auto = ItemStats(), SpamConfig()
        >>> s.note_clicks(10, 2); s.impressions_logged(auto)
        True
        >>> s.note_clicks(10, 9); s.impressions_logged(auto)
        False
        >>> s.impressions_logged(SpamConfig(impressions_logged=True))
        True
        """
        logged = config.impressions_logged
        if logged != "auto":
            return bool(logged)
        return self.unseen_clicks <= config.unseen_clicks_max * self.clicks

    def merge(self, other: ItemStats) -> None:
        """Add ``other``'s counts to these (statistics of another shard)."""
        self.note_clicks(other.clicks, other.unseen_clicks)
        for item_id, theirs in other._items.items():
            mine = self._items.get(item_id)
            self._items[item_id] = list(theirs) if mine is None else _added(mine, theirs)
        self._row.clear()  # every row may have moved: rebuilt whole
        self._global = _added(self._global, other._global)
        self.note_items(other._seen)
        self._lengths = _added(self._lengths, other._lengths)
        self._version += 1

    def copy(self) -> ItemStats:
        """An independent copy."""
        clone = ItemStats()
        clone._items = {item_id: list(tally) for item_id, tally in self._items.items()}
        clone._seen = set(self._seen)
        clone._named_once = dict(self._named_once)
        clone._global = list(self._global)
        clone._lengths = list(self._lengths)
        clone.note_clicks(self.clicks, self.unseen_clicks)
        return clone

    # queries
    def moments(self, item_id: str) -> RatingMoments:
        """The item's moments; empty for an unknown item."""
        held = self._items.get(item_id)
        return RatingMoments() if held is None else RatingMoments(*held)

    def tallies(self, item_ids: Sequence[str]) -> FloatArray:
        """The moments of each of ``item_ids`` as a ``(len, 5)`` array, columns ``n``,
        ``total``, ``total_sq``, ``n_max``, ``n_min`` (zeros for an unknown item).

        >>> s = ItemStats(); s.add_rating("a", 5.0); s.add_rating("a", 3.0)
        >>> s.tallies(["a", "b"]).tolist()
        [[2.0, 8.0, 34.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
        """
        empty = _tally()
        held = self._items
        rows = [held.get(item_id, empty) for item_id in item_ids]
        return np.array(rows, dtype=np.float64).reshape(len(rows), 5)

    def mean(self, item_id: str) -> float | None:
        """The item's mean rating; None if it has none."""
        return self.moments(item_id).mean

    def variance(self, item_id: str) -> float | None:
        """The item's rating variance; None with fewer than two ratings."""
        return self.moments(item_id).variance

    def count(self, item_id: str) -> int:
        """The item's number of ratings: its popularity."""
        return self.moments(item_id).n

    @property
    def global_moments(self) -> RatingMoments:
        """The moments of every rating of every item."""
        return RatingMoments(*self._global)

    @property
    def profile_lengths(self) -> RatingMoments:
        """The moments of users' profile lengths (users with at least one rating)."""
        return RatingMoments(*self._lengths)

    @property
    def items(self) -> int:
        """How many items have at least one rating."""
        return len(self._items)

    def _tallies(self) -> FloatArray:
        """Every item's moments as a ``(items, 5)`` array, in the items' order (one read
        per version, shared by the population tables rebuilt together).

        >>> s = ItemStats()
        >>> for item, v in (("a", 5.0), ("b", 3.0), ("a", 4.0)):
        ...     s.add_rating(item, v)
        >>> s._tallies().tolist()
        [[2.0, 9.0, 41.0, 1.0, 0.0], [1.0, 3.0, 9.0, 0.0, 0.0]]
        >>> s.remove_rating("b", 3.0); s.add_rating("c", 1.0); s._tallies()[:, 0].tolist()
        [2.0, 1.0]
        """
        held = self._table
        if held is None or held[0] != self._version:
            held = self._table = (self._version, self._mirrored_tallies().copy())
        return held[1]

    def _mirrored_tallies(self) -> FloatArray:
        """:attr:`_mirror` brought up to date: the rows of the items changed since the last
        call rewritten, new items' rows appended (in their order in ``_items``); rebuilt
        whole after an item was dropped or statistics merged (``_row`` cleared), or if the
        rows and the items disagree."""
        items, row, changed = self._items, self._row, self._changed
        self._changed = {}
        if row:
            known = [item for item in changed if item in row]
            new = [item for item in changed if item not in row]
            if len(row) + len(new) == len(items):
                mirror = self._mirror
                if known:
                    mirror[[row[item] for item in known]] = _rows_of(items, known)
                if new:
                    start = len(row)
                    if start + len(new) > len(mirror):
                        mirror = self._mirror = _grown_rows(mirror, start + len(new))
                    mirror[start : start + len(new)] = _rows_of(items, new)
                    row.update(zip(new, range(start, start + len(new)), strict=True))
                return mirror[: len(row)]
        ids = list(items)
        self._mirror = _grown_rows(np.zeros((0, 5)), len(ids))
        self._mirror[: len(ids)] = _rows_of(items, ids)
        self._row = dict(zip(ids, range(len(ids)), strict=True))
        return self._mirror[: len(ids)]

    def log_ranks(self, refresh: float = 0.0, per_item: float = 0.0) -> PopularityRanks:
        """Each item's popularity as its centred log-rank (see :class:`PopularityRanks`).

        Items are ranked by number of ratings, most rated first (rank 1, ties
        share their mean rank). Cached, and recomputed once the ratings have
        grown by more than ``refresh`` (a fraction) since, and by at least ``per_item``
        ratings per item (:meth:`_fresh`).

        >>> s = ItemStats()
        >>> for item, n in (("a", 3), ("b", 2), ("c", 1)):
        ...     for _ in range(n):
        ...         s.add_rating(item, 4.0)
        >>> ranks = s.log_ranks()
        >>> c = (math.log(1) + math.log(2) + math.log(3)) / 3
        >>> [round(ranks.table[i], 9) == round(math.log(r) - c, 9) for i, r in (("a", 1), ("b", 2))]
        [True, True]
        >>> round(float(ranks.floor[-1]), 9), round(ranks.unranked, 9) == round(math.log(4) - c, 9)
        (0.0, True)
        """
        cached = self._ranks
        if cached is not None and self._fresh(cached[0], cached[1], refresh, per_item):
            return cached[2]
        ids = list(self._items)
        counts = self._tallies()[:, 0]
        log_rank = np.log(rankdata(-counts, method="average")) if ids else np.empty(0)
        centre = float(log_rank.mean()) if ids else 0.0
        log_rank -= centre
        ordered = np.sort(log_rank)
        ranks = PopularityRanks(
            table=dict(zip(ids, log_rank.tolist(), strict=True)),
            floor=np.cumsum(ordered) / np.arange(1, len(ordered) + 1),
            unranked=math.log(len(ids) + 1) - centre,
        )
        self._ranks = (self._version, self._global[0], ranks)
        return ranks

    def _fresh(self, version: int, ratings: float, refresh: float, per_item: float) -> bool:
        """Whether a table derived at ``version``, from ``ratings`` ratings, still serves:
        nothing changed since, or the ratings grew by at most ``refresh`` (a fraction) or
        by fewer than ``per_item`` a known item. Each recomputation reads every item: the
        second bound keeps a young server with a large catalogue, whose ratings grow by
        1 % every few hundred, from recomputing at every judgement.

        >>> s = ItemStats()
        >>> for item in "abcdefghij":
        ...     s.add_rating(item, 4.0)
        >>> s._fresh(0, 5.0, 0.01, 0.0), s._fresh(0, 5.0, 0.01, 1.0), s._fresh(0, 5.0, 0.01, 0.5)
        (False, True, False)
        """
        if version == self._version:
            return True
        grown = float(self._global[0]) - ratings
        return grown <= ratings * refresh or grown < per_item * len(self._items)

    def end_shares(
        self, refresh: float = 0.0, per_item: float = 0.0
    ) -> tuple[FloatArray, FloatArray]:
        """How common top (bottom) ratings are, given the mean of an item's other ratings.

        Items are binned by the mean of their ratings below the top (for top
        ratings) or above the bottom (for bottom ratings), in half-star bins.
        Per bin: the pooled counts of top (bottom) ratings and of all
        ratings, whose ratio is the usual share ``p``, and ``tau2``, the
        variance of the items' true shares around it (a random-effects model,
        as in DerSimonian & Laird 1986), estimated from medians so that a few
        attacked items do not widen it::

            tau2 = max(0, median((s_j - m)^2) / 0.455 - median(m (1 - m) / n_j))

        with ``m`` the median share, over the bin's items with at least 5
        ratings (0.455: the median of chi-square with one degree of freedom),
        pooled with the neighbouring
        bins while it has fewer than 10 such items. Returns two ``(3, bins)``
        arrays, rows ``hits``, ``trials``, ``tau2``: top, bottom. Cached like
        :meth:`log_ranks`.

        >>> s = ItemStats()
        >>> for v in (5.0, 4.0, 4.0, 2.0):
        ...     s.add_rating("a", v)
        >>> top, bottom = s.end_shares()
        >>> top[:2, 4].tolist(), bottom[:2, 5].tolist()  # the others average 3.33, 3.75
        ([1.0, 4.0], [0.0, 4.0])
        """
        cached = self._ends
        if cached is not None and self._fresh(cached[0], cached[1], refresh, per_item):
            return cached[2], cached[3]
        table = self._tallies()
        n, total, top, bottom = table[:, 0], table[:, 1], table[:, 3], table[:, 4]
        counted = n >= 5
        out = []
        for ends, value in ((top, RATING_MAX), (bottom, RATING_MIN)):
            bins = _end_bin(_other_mean(total, n, ends, value))
            hits = np.bincount(bins, weights=ends, minlength=_END_BINS)
            trials = np.bincount(bins, weights=n, minlength=_END_BINS)
            tau2 = np.zeros(_END_BINS)
            # the items with at least 5 ratings, ordered by bin: a neighbourhood of bins
            # is a slice of them (the medians do not depend on the items' order)
            by_bin = np.argsort(bins[counted], kind="stable")
            in_bin, sizes = bins[counted][by_bin], n[counted][by_bin]
            shares = ends[counted][by_bin] / sizes
            bounds = np.searchsorted(in_bin, np.arange(_END_BINS + 1)).tolist()
            # each bin's width in scalars: the narrowest neighbourhood holding 10 of those
            # items (else the widest)
            per_bin = [bounds[b + 1] - bounds[b] for b in range(_END_BINS)]
            for b in range(_END_BINS):
                width = next(
                    (
                        w
                        for w in range(_END_BINS - 1)
                        if sum(per_bin[max(b - w, 0) : b + w + 1]) >= 10
                    ),
                    _END_BINS - 1,
                )
                lo, hi = bounds[max(b - width, 0)], bounds[min(b + width + 1, _END_BINS)]
                if hi - lo >= 3:
                    share = shares[lo:hi]
                    centre = _median(share)
                    noise = centre * (1 - centre) / sizes[lo:hi]
                    spread = _median((share - centre) ** 2) / 0.455
                    tau2[b] = max(spread - _median(noise), 0.0)
            out.append(np.vstack([hits, trials, tau2]))
        self._ends = (self._version, self._global[0], out[0], out[1])
        return out[0], out[1]


def _median(values: FloatArray) -> float:
    """``np.median`` of a 1-D array without NaN (the same operations: the middle value, or
    the two middle values' sum halved), without its generic machinery.

    >>> _median(np.array([3.0, 1.0, 2.0])), _median(np.array([4.0, 1.0, 2.0, 3.0]))
    (2.0, 2.5)
    """
    ordered = np.sort(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _added(mine: _Tally, theirs: _Tally) -> _Tally:
    return [a + b for a, b in zip(mine, theirs, strict=True)]


def _other_mean(total: FloatArray, n: FloatArray, ends: FloatArray, value: float) -> FloatArray:
    """The mean of the ratings that are not at ``value`` (``value`` itself if there are none)."""
    rest = n - ends
    return np.where(rest > 0, (total - ends * value) / np.maximum(rest, 1), value)


_END_BINS: Final = 8  # bins of half a star for the mean of an item's other ratings


def _end_bin(other_mean: FloatArray) -> npt.NDArray[np.intp]:
    return np.clip(((other_mean - RATING_MIN) / 0.5).astype(np.intp), 0, _END_BINS - 1)


# -- Review texts --------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """Case-folded, NFKC-normalised words joined by single spaces.

    >>> normalise_text("  GREAT   product!!  Buy at https://x.io ")
    'great product buy at https x io'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", folded).split())


def text_key(text: str, min_chars: int = 24) -> str | None:
    """A short stable hash of the normalised text, or None when it is too short to compare.

    Short texts ("great!", "love it") are written by many honest users, so
    only texts of at least ``min_chars`` normalised characters are compared.

    >>> text_key("ok") is None, len(text_key("a long enough review text to compare"))
    (True, 16)
    """
    norm = normalise_text(text)
    if len(norm) < min_chars:
        return None
    return hashlib.blake2b(norm.encode(), digest_size=8).hexdigest()


def has_link(text: str) -> bool:
    """Whether ``text`` contains a URL or a bare domain name.

    >>> has_link("see www.cheap-pills.example"), has_link("loved it. 10/10"), has_link("x.com")
    (True, False, True)
    """
    return _URL.search(text) is not None


def has_repeated_chars(text: str) -> bool:
    """Whether ``text`` repeats one character five times or more in a row.

    >>> has_repeated_chars("sooooo good"), has_repeated_chars("!!!!!"), has_repeated_chars("good")
    (True, True, False)
    """
    return _REPEATED_CHARS.search(text) is not None


class TextRegistry:
    """How many distinct users posted each (normalised, hashed) review text.

    Bounded: at most ``max_texts`` texts (the oldest are forgotten), and at
    most ``max_users`` users remembered per text (the count goes on).

    >>> reg = TextRegistry()
    >>> text = "Best deal ever, visit my shop for more!"
    >>> reg.add("u1", text), reg.add("u2", text.upper()), reg.add("u1", text)
    (1, 2, 2)
    >>> reg.add("u3", "short"), reg.copies(text_key(text))
    (1, 2)
    """

    def __init__(
        self, min_chars: int = 24, max_texts: int = 1_000_000, max_users: int = 1000
    ) -> None:
        self.min_chars = min_chars
        self.max_texts = max_texts
        self.max_users = max_users
        self._users: dict[str, set[str]] = {}
        self._counts: dict[str, int] = {}

    def add(self, user_id: str, text: str) -> int:
        """Record that ``user_id`` posted ``text``; the distinct users with that text so far.

        A text too short to compare (:func:`text_key`) is not recorded: 1.
        """
        key = text_key(text, self.min_chars)
        if key is None:
            return 1
        users = self._users.get(key)
        if users is None:
            if len(self._users) >= self.max_texts:
                oldest = next(iter(self._users))
                del self._users[oldest]
                del self._counts[oldest]
            users = self._users[key] = set()
            self._counts[key] = 0
        if user_id not in users:
            self._counts[key] += 1
            if len(users) < self.max_users:
                users.add(user_id)
        return self._counts[key]

    def copies(self, key: str | None) -> int:
        """The distinct users that posted the text with this :func:`text_key` (0 if unknown)."""
        return 0 if key is None else self._counts.get(key, 0)

    def forget(self, user_id: str) -> None:
        """Forget ``user_id`` (an erased user); the texts' counts of distinct users stay.

        >>> reg = TextRegistry()
        >>> text = "Best deal ever, visit my shop for more!"
        >>> reg.add("u1", text), reg.forget("u1"), reg.add("u1", text)
        (1, None, 2)
        """
        for users in self._users.values():
            users.discard(user_id)


# -- One user's evidence --------------------------------------------------------------


class UserActivity:
    """One user's evidence, in bounded memory, updated per event in O(1) amortised time.

    This is the reference implementation, one user at a time: the guard keeps every
    user's evidence in columns (:class:`recloop.core.spam_table.ActivityTable`), which a
    differential test holds to exactly what this class computes.

    What is remembered: the last ``recent_actions`` action timestamps per event
    type and of all actions, and their items; up to ``max_profile_ratings``
    ratings (the oldest forgotten first); up to ``remembered_reviews`` review
    text keys; plus fixed-size counters. *Actions* are all events but
    impressions, which clients log in batches at one instant and say nothing
    about the user's own pace. An action *repeats* when the same (type, item)
    pair was among the user's previous ``remembered_items`` actions; a click is
    *unseen* when its item was not among the user's latest ``remembered_items``
    impressions and views. The hard rules count, for each action, the user's
    previous ``limit`` actions (explicit ones, for the explicit rule) that lie
    within one second of it: more than ``limit`` with it is a violation.

    >>> a = UserActivity()
    >>> a.observe("impression", "i1", None, 0.0)
    >>> a.observe("click", "i1", None, 2.0)
    >>> a.observe("rating", "i1", 4.0, 30.0)
    >>> a.events, a.actions, a.clicks, a.unseen_clicks, a.ratings
    (3, 2, 1, 0, {'i1': 4.0})
    """

    # one per user: slots make them smaller and quicker to create
    __slots__ = (
        "_action_window",
        "_all_times",
        "_config",
        "_explicit_window",
        "_impressed",
        "_pairs",
        "_recent_items",
        "_times",
        "actions",
        "clicks",
        "dwells",
        "events",
        "first_at",
        "hard_rule_at",
        "hard_rule_reason",
        "hours",
        "last_at",
        "max_explicit_in_second",
        "max_text_copies",
        "ratings",
        "repeats",
        "review_keys",
        "reviews",
        "reviews_with_links",
        "reviews_with_repeats",
        "seen",
        "short_dwells",
        "unseen_clicks",
    )

    def __init__(self, config: SpamConfig | None = None) -> None:
        config = SpamConfig() if config is None else config
        self._config = config
        self.events = 0
        self.actions = 0
        self.seen = 0
        """Impressions and views so far (the ordinal of the latest)."""
        self.first_at = math.inf
        self.last_at = -math.inf
        # timing. The "latest n" stores are typed arrays: 8 bytes a value where a list
        # holds a boxed float. The latest ``recent_actions`` values are
        # ``values[-recent_actions:]``; once an array is a quarter longer, the older
        # ones are dropped at once (O(1) per append, amortised).
        self._times: dict[str, array[float]] = {}
        self._all_times: array[float] = array("d")
        # the previous ``limit`` actions' (explicit actions') timestamps, for the hard rules
        self._explicit_window: array[float] = array("d")
        self._action_window: array[float] = array("d")
        self.max_explicit_in_second = 0
        self.hard_rule_at: float | None = None
        self.hard_rule_reason: str | None = None
        self.hours: array[int] = _NO_HOURS[:]
        # behaviour. Items and (type, item) pairs are held by their 64-bit hashes (see
        # recent_items), each with the ordinal of its latest action (impression or view).
        self._pairs: dict[int, int] = {}
        self.repeats = 0
        self._recent_items: array[int] = array("q")
        self._impressed: dict[int, int] = {}
        self.clicks = 0
        self.unseen_clicks = 0
        self.dwells = 0
        self.short_dwells = 0
        # ratings and reviews
        self.ratings: dict[str, float] = {}
        self.reviews = 0
        self.reviews_with_links = 0
        self.reviews_with_repeats = 0
        self.max_text_copies = 0
        self.review_keys: deque[str] | tuple[()] = ()  # a deque from the first review

    @property
    def action_types(self) -> int:
        """How many action types the user has used."""
        return len(self._times)

    def rating_of(self, item_id: str) -> float | None:
        """The user's current rating of ``item_id``, if remembered."""
        return self.ratings.get(item_id)

    def observe(
        self,
        event_type: str,
        item_id: str,
        value: float | None,
        timestamp: float,
        text_copies: int | None = None,
        text: str | None = None,
    ) -> None:
        """Fold one event into the evidence.

        ``text_copies`` is what :meth:`TextRegistry.add` returned for a review's
        text (:func:`record_event` passes it); ``text`` is the review text itself.
        """
        config = self._config
        remembered = config.remembered_items
        self.events += 1
        if timestamp < self.first_at:
            self.first_at = timestamp
        if timestamp > self.last_at:
            self.last_at = timestamp
        item_hash = hash(item_id)
        if event_type == "impression" or event_type == "view":
            self.seen += 1
            seen = self._impressed
            seen[item_hash] = self.seen
            if len(seen) > 2 * remembered:
                self._impressed = _within(seen, self.seen - remembered)
            if event_type == "impression":
                return
        self.actions += 1
        recent = config.recent_actions
        cap = recent + (recent >> 2) + 1
        times = self._times.get(event_type)
        if times is None:
            times = self._times[event_type] = array("d")
        times.append(timestamp)
        if len(times) > cap:
            del times[: len(times) - recent]
        times = self._all_times
        times.append(timestamp)
        if len(times) > cap:
            del times[: len(times) - recent]
        self.hours[int(timestamp // _SECONDS_PER_HOUR) % _HOURS] += 1
        items = self._recent_items
        items.append(item_hash)
        if len(items) > cap:
            del items[: len(items) - recent]
        # an action at its predecessor's very instant (a batch's events without their
        # own time, stamped with the request's) is no arrival of its own: not counted again
        window = self._action_window
        limit = int(config.max_actions_per_second)
        if (not window or window[-1] != timestamp) and _in_one_second(
            window, timestamp, limit
        ) > limit:
            self._violate(timestamp, f"more than {config.max_actions_per_second:g} events in 1 s")
        window = self._explicit_window
        if event_type in EXPLICIT_TYPES and (not window or window[-1] != timestamp):
            limit = int(config.max_explicit_per_second)
            in_second = _in_one_second(window, timestamp, limit)
            if in_second > self.max_explicit_in_second:
                self.max_explicit_in_second = in_second
            if in_second > limit:
                self._violate(
                    timestamp,
                    f"more than {config.max_explicit_per_second:g} explicit events in 1 s",
                )
        # a (type, item) pair among the previous ``remembered`` actions is a repeat
        key = item_hash ^ hash(event_type)
        pairs = self._pairs
        before = pairs.get(key)
        if before is not None and self.actions - before <= remembered:
            self.repeats += 1
        pairs[key] = self.actions
        if len(pairs) > 2 * remembered:
            self._pairs = _within(pairs, self.actions - remembered)
        if event_type == "click":
            self.clicks += 1
            shown = self._impressed.get(item_hash)
            if shown is None or self.seen - shown >= remembered:
                self.unseen_clicks += 1
        elif event_type == "dwell" and value is not None:
            self.dwells += 1
            if value < config.short_dwell_seconds:
                self.short_dwells += 1
        elif event_type == "rating" and value is not None:
            self.ratings.pop(item_id, None)
            if len(self.ratings) >= config.max_profile_ratings:
                del self.ratings[next(iter(self.ratings))]
            self.ratings[item_id] = value
        elif event_type == "review" and text is not None:
            self.reviews += 1
            self.reviews_with_links += has_link(text)
            self.reviews_with_repeats += has_repeated_chars(text)
            key_text = text_key(text, config.text_min_chars)
            if key_text is not None:
                if not self.review_keys:
                    self.review_keys = deque(maxlen=config.remembered_reviews)
                self.review_keys.append(key_text)
        if text_copies is not None:
            self.max_text_copies = max(self.max_text_copies, text_copies)

    def _violate(self, timestamp: float, reason: str) -> None:
        """Remember the latest violation of a hard rule (its time and which rule)."""
        if self.hard_rule_at is None or timestamp >= self.hard_rule_at:
            self.hard_rule_at = timestamp
            self.hard_rule_reason = reason

    def intervals(self) -> FloatArray:
        """Inter-arrival times (s) of the user's dominant action type, oldest first.

        The dominant type is the one with most remembered timestamps (ties: the
        alphabetically last). Per type, because one human step (click, view,
        dwell) logs several events within a second; a bot's period shows in
        each type. Between distinct instants only: events at one instant (a
        batch's untimed events) have no interval between them.
        """
        if not self._times:
            return np.empty(0)
        recent = self._config.recent_actions
        dominant = max(self._times, key=lambda name: (min(len(self._times[name]), recent), name))
        latest = self._times[dominant][-recent:]
        return np.diff(np.unique(np.frombuffer(latest, dtype=np.float64)))

    def recent_rate(self) -> tuple[float, int]:
        """Arrivals per second over the remembered recent actions, and how many arrivals
        (distinct instants: a batch's untimed events, stamped with one, are one) they are."""
        latest = self._all_times[-self._config.recent_actions :]
        n = len(set(latest))
        if n < 2:
            return 0.0, n
        span = max(latest) - min(latest)
        return (n - 1) / span, n

    def recent_items(self) -> list[int]:
        """The items of the latest actions, oldest first, each as its ``hash``: what the
        judgement reads of them is how often each recurs. Two distinct items of one user
        share a 64-bit hash with a probability of about 2**-64 a pair."""
        return self._recent_items[-self._config.recent_actions :].tolist()


class Evidence(Protocol):
    """What a judgement reads of one user's activity: a :class:`UserActivity`, or a row of
    the guard's :class:`recloop.core.spam_table.ActivityTable`
    (:class:`~recloop.core.spam_table.ActivityView`)."""

    @property
    def events(self) -> int: ...
    @property
    def actions(self) -> int: ...
    @property
    def first_at(self) -> float: ...
    @property
    def clicks(self) -> int: ...
    @property
    def unseen_clicks(self) -> int: ...
    @property
    def dwells(self) -> int: ...
    @property
    def short_dwells(self) -> int: ...
    @property
    def repeats(self) -> int: ...
    @property
    def action_types(self) -> int: ...
    @property
    def max_explicit_in_second(self) -> int: ...
    @property
    def hard_rule_at(self) -> float | None: ...
    @property
    def hard_rule_reason(self) -> str | None: ...
    @property
    def hours(self) -> Sequence[int]: ...
    @property
    def ratings(self) -> Mapping[str, float]: ...
    @property
    def reviews(self) -> int: ...
    @property
    def reviews_with_links(self) -> int: ...
    @property
    def reviews_with_repeats(self) -> int: ...
    @property
    def max_text_copies(self) -> int: ...
    @property
    def review_keys(self) -> Iterable[str]: ...
    def recent_rate(self) -> tuple[float, int]: ...
    def intervals(self) -> FloatArray: ...
    def recent_items(self) -> list[int]: ...


def _within(ordinals: dict[int, int], after: int) -> dict[int, int]:
    """The entries of ``ordinals`` whose ordinal is above ``after`` (a trimmed copy)."""
    return {key: at for key, at in ordinals.items() if at > after}


def _in_one_second(window: array[float], timestamp: float, limit: int) -> int:
    """How many of the window's timestamps (the previous ``limit`` ones, in arrival
    order) lie within 1 s of ``timestamp``, plus one for it; then add it to the window.

    >>> w = array("d")
    >>> [_in_one_second(w, t, 2) for t in (10.0, 10.4, 10.9, 12.0, 11.5)]
    [1, 2, 3, 1, 3]
    >>> w.tolist()
    [12.0, 11.5]
    """
    count = 1
    for previous in window:
        if abs(previous - timestamp) <= 1.0:
            count += 1
    window.append(timestamp)
    if len(window) > limit:
        del window[0]
    return count


# -- Signals -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """One detector's reading of one user.

    ``value`` is the statistic (NaN when the user has no data for it).
    ``fired`` says whether it is beyond its threshold with enough data.
    ``weight`` is the evidence it carries: against the user when it fired
    (``severity * grown weight``), otherwise the weight of the clean reading
    (the grown weight; 0 without enough data).
    """

    value: float
    fired: bool
    weight: float


FAMILIES: Final[Mapping[str, str]] = {
    "explicit_burst": "flood",
    "event_rate": "flood",
    "interarrival_cv": "regularity",
    "burstiness": "regularity",
    "hour_entropy": "circadian",
    "repeated_item": "repetition",
    "item_diversity": "repetition",
    "short_dwell": "dwell",
    "clicks_without_impressions": "impressions",
    "review_links": "text_content",
    "review_repeated_chars": "text_content",
    "review_copies": "text_copies",
    "rdma": "profile_deviation",
    "wdma": "profile_deviation",
    "item_mean_deviation": "profile_deviation",
    "mean_var": "profile_variance",
    "fmtd": "profile_deviation",
    "extremity": "profile_deviation",
    "agreement": "profile_agreement",
    "popularity": "profile_popularity",
    "target_focus": "profile_focus",
    "length_var": "profile_length",
    "target_group": "profile_group",
}
"""Which family each signal belongs to: evidence is counted once per family."""


def grown(weight: float, n: float, half: float, minimum: float) -> float:
    """Evidence weight after ``n`` data points: ``weight * n / (n + half)``, 0 below ``minimum``.

    >>> grown(4.0, 20, 20.0, 8), grown(4.0, 7, 20.0, 8)
    (2.0, 0.0)
    """
    if n < minimum or n <= 0:
        return 0.0
    return weight * n / (n + half)


def severity(value: float, threshold: float, span: float, high: bool = True) -> float:
    """How far ``value`` is beyond ``threshold``, in spans, clipped to [0, 1].

    ``high``: values above the threshold are bad; otherwise values below it.
    0 at or inside the threshold (and for NaN), 1 from one ``span`` beyond.

    >>> severity(0.9, 0.5, 0.8), severity(0.1, 0.2, 0.1, high=False), severity(0.5, 0.6, 0.4)
    (0.5, 1.0, 0.0)
    """
    if not math.isfinite(value):
        return 0.0
    beyond = value - threshold if high else threshold - value
    if beyond <= 0:
        return 0.0
    return 1.0 if span <= 0 else min(beyond / span, 1.0)


def graded(value: float, threshold: float, span: float, weight: float, high: bool = True) -> Signal:
    """A signal whose evidence grows with how far ``value`` is beyond ``threshold``.

    ``weight`` is the grown weight (:func:`grown`); with 0 (not enough data)
    the signal never fires.

    >>> graded(0.9, 0.5, 0.8, 10.0)
    Signal(value=0.9, fired=True, weight=5.0)
    >>> graded(0.5, 0.6, 0.4, 10.0), graded(0.9, 0.5, 0.8, 0.0).fired
    (Signal(value=0.5, fired=False, weight=10.0), False)
    """
    s = severity(value, threshold, span, high)
    if s > 0 and weight > 0:
        return Signal(float(value), True, float(weight * s))
    return Signal(float(value), False, float(weight))


def burstiness(intervals: FloatArray) -> float:
    """Goh & Barabási's burstiness ``B = (sigma - mu) / (sigma + mu)`` of inter-arrival times.

    ``B = -1`` for a periodic sequence, ``0`` for a Poisson process, towards
    ``1`` for bursty human activity. NaN for fewer than two intervals or all
    zero.

    >>> burstiness(np.array([10.0, 10.0, 10.0])), burstiness(np.array([1.0, 3.0]))
    (-1.0, -0.3333333333333333)
    """
    if len(intervals) < 2:
        return math.nan
    mu = float(intervals.mean())
    sigma = float(intervals.std())
    return (sigma - mu) / (sigma + mu) if sigma + mu > 0 else math.nan


def coefficient_of_variation(intervals: FloatArray) -> float:
    """``sigma / mu`` of inter-arrival times (population sigma); NaN if undefined.

    >>> coefficient_of_variation(np.array([1.0, 3.0]))
    0.5
    """
    if len(intervals) < 2:
        return math.nan
    mu = float(intervals.mean())
    return float(intervals.std()) / mu if mu > 0 else math.nan


def hour_entropy(hours: Sequence[int] | FloatArray) -> float:
    """Normalised Shannon entropy of an hour-of-day histogram, Miller-Madow corrected.

    ``(H + (K - 1) / (2 N)) / log 24`` in nats, with ``K`` the non-empty
    hours and ``N`` the events, capped at 1. Humans, who sleep, stay well
    below 1; a bot running around the clock reaches it. NaN without events.

    >>> hour_entropy([1] * 24 * 10)
    1.0
    >>> round(hour_entropy([5, 5] + [0] * 22), 6) == round((math.log(2) + 0.05) / math.log(24), 6)
    True
    """
    counts = np.asarray(hours, dtype=np.float64)
    n = float(counts.sum())
    if n <= 0:
        return math.nan
    p = counts[counts > 0] / n
    h = float(-(p * np.log(p)).sum()) + (len(p) - 1) / (2.0 * n)
    return min(h / math.log(_HOURS), 1.0)


@dataclass(frozen=True, slots=True)
class ActivityReadings:
    """The statistics of a user's recent actions that the timing and behaviour
    detectors grade: :func:`activity_readings` computes them for one user,
    :func:`recloop.core.spam_batch.activity_readings_many` for many at once."""

    rate: float
    """Actions per second over the remembered recent actions (:meth:`UserActivity.recent_rate`)."""
    rate_actions: int
    intervals: int
    """How many inter-arrival times of the dominant type (:meth:`UserActivity.intervals`)."""
    cv: float
    """Their :func:`coefficient_of_variation`."""
    burstiness: float
    """Their :func:`burstiness`."""
    hour_entropy: float
    """:func:`hour_entropy` of the user's hours of activity."""
    diversity: float
    """:func:`item_diversity` of the latest actions' items in the catalogue."""
    diversity_actions: int


def activity_readings(activity: Evidence, catalogue: int = 0) -> ActivityReadings:
    """The user's :class:`ActivityReadings`; ``catalogue`` as :func:`item_diversity`'s.

    >>> a = UserActivity()
    >>> for t in (0.0, 10.0, 20.0, 30.0):
    ...     a.observe("click", "i1", None, t)
    >>> r = activity_readings(a)
    >>> round(r.rate, 3), r.intervals, r.cv, r.burstiness, r.diversity
    (0.1, 3, 0.0, -1.0, 0.0)
    """
    rate, n = activity.recent_rate()
    intervals = activity.intervals()
    items = activity.recent_items()
    return ActivityReadings(
        rate,
        n,
        len(intervals),
        coefficient_of_variation(intervals),
        burstiness(intervals),
        hour_entropy(activity.hours),
        item_diversity(items, catalogue),
        len(items),
    )


def _timing_signals(
    activity: Evidence, config: SpamConfig, readings: ActivityReadings
) -> dict[str, Signal]:
    out: dict[str, Signal] = {}
    burst = float(activity.max_explicit_in_second)
    # a hard rule: evidence against when it fires, none for it otherwise
    limit = config.max_explicit_per_second
    out["explicit_burst"] = Signal(burst, burst > limit, config.w_rate if burst > limit else 0.0)
    out["event_rate"] = graded(
        min(readings.rate, 1e9),
        config.rate_max,
        config.rate_span,
        grown(config.w_rate, readings.rate_actions, config.timing_half, config.rate_min_actions),
    )
    k = readings.intervals
    out["interarrival_cv"] = graded(
        readings.cv,
        config.cv_min,
        config.cv_span,
        grown(config.w_cv, k, config.timing_half, config.timing_min_intervals),
        high=False,
    )
    out["burstiness"] = graded(
        readings.burstiness,
        config.burstiness_min,
        config.burstiness_span,
        grown(config.w_burstiness, k, config.timing_half, config.burstiness_min_intervals),
        high=False,
    )
    out["hour_entropy"] = graded(
        readings.hour_entropy,
        config.hour_entropy_max,
        config.hour_entropy_span,
        grown(config.w_hour_entropy, activity.actions, config.hour_half, config.hour_min_actions),
    )
    return out


def _behaviour_signals(
    activity: Evidence,
    config: SpamConfig,
    readings: ActivityReadings,
    catalogue: int = 0,
    impressions_logged: bool = True,
) -> dict[str, Signal]:
    out: dict[str, Signal] = {}
    n = activity.actions
    out["repeated_item"] = graded(
        excess_repeats(activity.repeats, n, activity.action_types, catalogue),
        config.repeat_max,
        config.repeat_span,
        grown(config.w_repetition, n, config.behaviour_half, config.behaviour_min_actions),
    )
    out["item_diversity"] = graded(
        readings.diversity,
        config.diversity_min,
        config.diversity_span,
        grown(
            config.w_repetition,
            readings.diversity_actions,
            config.behaviour_half,
            config.behaviour_min_actions,
        ),
        high=False,
    )
    out["short_dwell"] = graded(
        activity.short_dwells / activity.dwells if activity.dwells else math.nan,
        config.short_dwell_max,
        config.short_dwell_span,
        grown(config.w_short_dwell, activity.dwells, config.dwell_half, config.dwell_min),
    )
    out["clicks_without_impressions"] = graded(
        activity.unseen_clicks / activity.clicks if activity.clicks else math.nan,
        config.unseen_clicks_max,
        config.unseen_clicks_span,
        grown(config.w_unseen_clicks, activity.clicks, config.clicks_half, config.clicks_min)
        if impressions_logged
        else 0.0,
    )
    return out


def item_diversity(items: Sequence[Hashable], catalogue: int = 0) -> float:
    """Normalised entropy ``H(items) / log(min(len(items), catalogue))`` of acted-on items.

    1.0 when the actions spread evenly over as many items as they could
    (every action on a different item, or, in a catalogue smaller than the
    list, evenly over the catalogue), 0.0 when all are on one. ``catalogue``
    is the number of items the population acts on (0: unknown, taken as
    unbounded): 300 actions in a 10-item shop cannot reach more than log 10.
    NaN for fewer than two actions or a catalogue of one item.

    >>> item_diversity(["a", "b", "c", "d"]), item_diversity(["a"] * 4)
    (1.0, 0.0)
    >>> round(item_diversity(["a", "b"] * 50), 3), item_diversity(["a", "b"] * 50, catalogue=2)
    (0.151, 1.0)
    """
    size = len(items) if catalogue <= 0 else min(len(items), catalogue)
    if len(items) < 2 or size < 2:
        return math.nan
    counts: dict[Hashable, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    p = np.fromiter(counts.values(), dtype=np.float64) / len(items)
    return min(1.0, max(0.0, float(-(p * np.log(p)).sum()) / math.log(size)))


def excess_repeats(repeats: int, actions: int, types: int, catalogue: int = 0) -> float:
    """The share of actions repeating a (type, item) pair beyond what the catalogue forces.

    ``(s - e) / (1 - e)`` with ``s = repeats / actions`` and ``e`` the share
    expected when each of the ``types`` action types takes ``actions /
    types`` items uniformly at random from a ``catalogue`` of ``K`` items:
    ``e = 1 - K (1 - (1 - 1/K)^m) / m``, ``m = actions / types``. ``e`` is
    0 for an unknown (0) or a large catalogue, so the value is the plain
    share; in a 10-item shop a heavy user's re-views are what choice alone
    gives, and the value stays low. Negative values (fewer repeats than
    uniform choice) are clipped to 0. NaN without actions.

    >>> excess_repeats(98, 100, 1), excess_repeats(0, 100, 1)
    (0.98, 0.0)
    >>> round(excess_repeats(90, 100, 1, catalogue=10), 3)  # 100 clicks on 10 items
    0.0
    """
    if actions <= 0:
        return math.nan
    share = repeats / actions
    if catalogue <= 0:
        return share
    per_type = actions / max(types, 1)
    k = float(catalogue)
    expected = 1.0 - k * -math.expm1(per_type * math.log1p(-1.0 / k)) / per_type if k > 1 else 1.0
    if expected >= 1.0:
        return 0.0
    return max(0.0, (share - expected) / (1.0 - expected))


def _text_signals(
    activity: Evidence, config: SpamConfig, texts: TextRegistry | None
) -> dict[str, Signal]:
    out: dict[str, Signal] = {}
    r = activity.reviews
    w = grown(config.w_text, r, config.reviews_half, config.reviews_min)
    # a share needs at least reviews_min reviews of the kind behind it
    links = activity.reviews_with_links / r if r else math.nan
    repeats = activity.reviews_with_repeats / r if r else math.nan
    out["review_links"] = graded(links, config.links_max, config.text_span, w)
    if activity.reviews_with_links < config.reviews_min and out["review_links"].fired:
        out["review_links"] = Signal(links, False, w)
    out["review_repeated_chars"] = graded(repeats, config.repeated_chars_max, config.text_span, w)
    if activity.reviews_with_repeats < config.reviews_min and out["review_repeated_chars"].fired:
        out["review_repeated_chars"] = Signal(repeats, False, w)
    copies = activity.max_text_copies
    if texts is not None:
        copies = max([copies, *(texts.copies(k) for k in activity.review_keys)])
    out["review_copies"] = graded(
        float(copies), config.copies_max, config.copies_span, config.w_copies if r else 0.0
    )
    return out


@dataclass(frozen=True, slots=True)
class ProfileFeatures:
    """The rating-profile statistics of one user, as defined in the literature.

    ``rdma`` (Chirita et al. 2005) and ``wdma`` (Williams et al. 2007)::

        RDMA = 1/|P| sum_i |r_i - m_i| / n_i      WDMA = 1/|P| sum_i |r_i - m_i| / n_i^2

    with ``m_i`` the item's mean and ``n_i`` its number of ratings, both
    including the user's own; ``*_ratio`` divides each by its expectation
    when every ``|r_i - m_i|`` equals the item's mean absolute deviation
    ``s_i sqrt(2 / pi)``, which makes them comparable across catalogues.
    ``deviation`` is the mean of ``z_i^2``, ``z_i = (r_i - m'_i) / s'_i``
    against leave-one-out item means and spreads shrunk towards the global
    ones. ``mean_var`` (MeanVar) and ``fmtd`` (FMTD) split the profile into a
    target partition (all items at the profile's maximum, or all at its
    minimum, whichever gives the lower MeanVar) and the filler rest::

        MeanVar = 1/|F| sum_{i in F} (r_i - m'_i)^2     FMTD = |mean_T r - mean_F r|

    ``mean_var_ratio`` divides MeanVar by the mean item variance over the
    filler. ``agreement`` is Pearson's correlation of ratings with item
    means; ``popularity`` the mean centred log-rank of the rated items
    (:meth:`ItemStats.log_ranks`), or of those rated inside the scale's ends
    when that is higher, rescaled from 0 (the ``n`` most popular items) to
    about 1 (items chosen at random); ``target_focus`` the largest z-score
    ``(s_j - p) / sqrt(p (1 - p) / n_j + tau2)`` over the items the user rated
    at the top (bottom), ``s_j`` the share of top (bottom) ratings among the
    item's other ``n_j`` ratings, ``p`` and ``tau2`` what is usual for items
    whose remaining ratings have the same mean (:meth:`ItemStats.end_shares`):
    a robust form of Williams et al.'s target model focus, since every
    profile of one attack rates the same target at the end of the scale;
    ``length_var``
    the LengthVar ``|n - mean n| / sum (n_u - mean n)^2`` and ``length_z``
    the same deviation in standard deviations.
    """

    n: int
    rdma: float
    wdma: float
    rdma_ratio: float
    wdma_ratio: float
    deviation: float
    mean_var: float
    mean_var_ratio: float
    fmtd: float
    filler: int
    extremity: float
    agreement: float
    popularity: float
    target_focus: float
    length_var: float
    length_z: float


def profile_features(
    ratings: Mapping[str, float], items: ItemStats, config: SpamConfig
) -> ProfileFeatures | None:
    """The rating-profile statistics of one profile, or None for an empty one.

    See :class:`ProfileFeatures` for the definitions. Items the statistics
    do not know count as rated once, by this user.

    >>> stats = ItemStats()
    >>> for item, values in {"a": [5, 4, 3], "b": [2, 2, 5], "c": [1, 3, 4, 4]}.items():
    ...     for v in values:
    ...         stats.add_rating(item, float(v))
    >>> f = profile_features({"a": 5.0, "b": 5.0, "c": 1.0}, stats, SpamConfig())
    >>> round(f.rdma, 6), round(f.wdma, 6), f.fmtd, f.extremity
    (0.5, 0.152778, 4.0, 1.0)
    """
    n = len(ratings)
    if n == 0:
        return None
    r = np.fromiter(ratings.values(), dtype=np.float64, count=n)
    moments = [items.moments(item) for item in ratings]
    counts = np.fromiter((m.n for m in moments), dtype=np.float64, count=n)
    sums = np.fromiter((m.total for m in moments), dtype=np.float64, count=n)
    squares = np.fromiter((m.total_sq for m in moments), dtype=np.float64, count=n)
    # an item the statistics do not hold counts as rated once, by this user
    unknown = counts < 1
    counts = np.where(unknown, 1.0, counts)
    sums = np.where(unknown, r, sums)
    squares = np.where(unknown, r * r, squares)
    glob = items.global_moments
    mu_g = glob.mean if glob.mean is not None else float(r.mean())
    var_g = glob.variance if glob.variance is not None else 1.0
    var_g = max(var_g, config.variance_floor)
    k = config.item_prior_ratings
    floor = config.variance_floor

    # item means and spreads including the user (the literature's RDMA, WDMA)
    means = sums / counts
    raw_var = np.where(
        counts > 1, np.maximum(squares - sums * sums / counts, 0.0) / np.maximum(counts - 1, 1), 0.0
    )
    spread_var = np.maximum(((counts - 1) * raw_var + k * var_g) / (counts - 1 + k), floor)
    abs_dev = np.abs(r - means)
    rdma = float((abs_dev / counts).mean())
    wdma = float((abs_dev / counts**2).mean())
    mad = np.sqrt(spread_var * 2.0 / math.pi)
    rdma_ratio = rdma / float((mad / counts).mean())
    wdma_ratio = wdma / float((mad / counts**2).mean())

    # leave-one-out, shrunk item means and variances
    n_loo = counts - 1
    s_loo = sums - r
    q_loo = squares - r * r
    m_loo = (s_loo + k * mu_g) / (n_loo + k)
    v_raw = np.where(
        n_loo > 1, np.maximum(q_loo - s_loo * s_loo / np.maximum(n_loo, 1), 0.0), 0.0
    ) / np.maximum(n_loo - 1, 1)
    v_loo = np.maximum(
        (np.maximum(n_loo - 1, 0) * v_raw + k * var_g) / (np.maximum(n_loo - 1, 0) + k), floor
    )
    sq_dev = (r - m_loo) ** 2
    deviation = float((sq_dev / v_loo).mean())

    # MeanVar and FMTD over the better of the two target partitions
    best: tuple[float, float, float, int] | None = None
    for target in (r == r.max(), r == r.min()):
        filler = ~target
        f = int(filler.sum())
        if f == 0:
            continue
        mean_var = float(sq_dev[filler].mean())
        ratio = mean_var / float(v_loo[filler].mean())
        fmtd = abs(float(r[target].mean()) - float(r[filler].mean()))
        if best is None or mean_var < best[0]:
            best = (mean_var, ratio, fmtd, f)
    mean_var, mean_var_ratio, fmtd, filler_n = best if best is not None else (math.nan,) * 3 + (0,)

    extremity = float(((r <= RATING_MIN) | (r >= RATING_MAX)).mean())
    agreement = math.nan
    if n >= 3 and r.std() > 0 and m_loo.std() > 0:
        agreement = float(np.corrcoef(r, m_loo)[0, 1])

    # popularity: the mean centred log-rank of the rated items, over all of them
    # and over those not at the scale's ends (which leaves out the popular items
    # a bandwagon attack rates to the maximum), whichever is higher; rescaled so
    # that the n most popular items give 0 and a random choice about 1
    ranks = items.log_ranks(config.popularity_refresh, config.popularity_refresh_items)
    log_rank = np.fromiter((ranks.table.get(i, ranks.unranked) for i in ratings), np.float64, n)
    mean_log_rank = float(log_rank.mean())
    middle = (r > RATING_MIN) & (r < RATING_MAX)
    if middle.sum() >= max(config.profile_min, n // 2):
        mean_log_rank = max(mean_log_rank, float(log_rank[middle].mean()))
    popularity = math.nan
    if n <= len(ranks.floor) * config.popularity_max_share:
        lowest = float(ranks.floor[n - 1])  # the n most popular items
        popularity = (mean_log_rank - lowest) / -lowest if lowest < 0 else math.nan

    # target focus: the most surprising share of top (bottom) ratings among the
    # items this user rated at the top (bottom), leaving the user's own rating
    # and, from its bin's usual share, the item itself out
    top_usual, bottom_usual = items.end_shares(
        config.popularity_refresh, config.popularity_refresh_items
    )
    focus = 0.0
    n_top = np.fromiter((m.n_max for m in moments), np.float64, n)
    n_bottom = np.fromiter((m.n_min for m in moments), np.float64, n)
    for at_end, ends, value, usual in (
        (r >= RATING_MAX, n_top, RATING_MAX, top_usual),
        (r <= RATING_MIN, n_bottom, RATING_MIN, bottom_usual),
    ):
        at_end &= (ends >= 1) & (counts >= 3)
        if not at_end.any():
            continue
        e, c, t = ends[at_end], counts[at_end], sums[at_end]
        b = _end_bin(_other_mean(t - value, c - 1, e - 1, value))
        listed = _end_bin(_other_mean(t, c, e, value)) == b  # where the table counted it
        hits = usual[0, b] - np.where(listed, e, 0.0)
        trials = usual[1, b] - np.where(listed, c, 0.0)
        floor_p = config.focus_share_floor
        p = np.clip(hits / np.maximum(trials, 1), floor_p, 1.0 - floor_p)
        p = np.where(trials > 0, p, floor_p)
        sd = np.sqrt(p * (1 - p) / (c - 1) + usual[2, b])
        focus = max(focus, float((((e - 1) / (c - 1) - p) / sd).max()))

    lengths = items.profile_lengths
    length_var = length_z = 0.0
    if lengths.n >= 2 and lengths.mean is not None and lengths.variance:
        spread = lengths.variance * (lengths.n - 1)
        length_var = abs(n - lengths.mean) / spread
        length_z = (n - lengths.mean) / math.sqrt(lengths.variance)
    return ProfileFeatures(
        n=n,
        rdma=rdma,
        wdma=wdma,
        rdma_ratio=rdma_ratio,
        wdma_ratio=wdma_ratio,
        deviation=deviation,
        mean_var=mean_var,
        mean_var_ratio=mean_var_ratio,
        fmtd=fmtd,
        filler=filler_n,
        extremity=extremity,
        agreement=agreement,
        popularity=popularity,
        target_focus=focus,
        length_var=length_var,
        length_z=length_z,
    )


def _agreement_upper(rho: float, n: int, z: float) -> float:
    """Upper confidence bound of a correlation by Fisher's z-transform."""
    if not math.isfinite(rho) or n < 4:
        return math.nan
    return math.tanh(math.atanh(min(max(rho, -0.999999), 0.999999)) + z / math.sqrt(n - 3))


def norm_row(f: ProfileFeatures) -> dict[str, float]:
    """The statistics of a profile that :class:`~recloop.core.spam_norms.ProfileNorms`
    keeps norms of, by the name the gate uses."""
    return {
        "rdma_ratio": f.rdma_ratio,
        "wdma_ratio": f.wdma_ratio,
        "deviation": f.deviation,
        "mean_var_ratio": f.mean_var_ratio,
        "fmtd": f.fmtd,
        "extremity": f.extremity,
        "agreement": f.agreement,
        "popularity": f.popularity,
        "target_focus": f.target_focus,
        "length_z": f.length_z,
    }


def fit_norms(features: Iterable[ProfileFeatures], config: SpamConfig) -> ProfileNorms | None:
    """Population norms of the profile statistics, or None with fewer than
    ``config.norms_min_profiles`` profiles of at least ``profile_min`` ratings."""
    kept = [f for f in features if f.n >= config.profile_min]
    if len(kept) < max(config.norms_min_profiles, 1):
        return None
    return ProfileNorms.fit(
        [norm_row(f) for f in kept],
        [f.n for f in kept],
        config.norm_z0,
        config.norm_span,
        {"popularity": config.norm_z0_popularity, "target_focus": config.norm_z0_focus},
    )


def _profile_signals(
    activity: Evidence,
    items: ItemStats,
    config: SpamConfig,
    norms: ProfileNorms | None = None,
    features: ProfileFeatures | None = None,
) -> dict[str, Signal]:
    f = features if features is not None else profile_features(activity.ratings, items, config)
    if f is None:
        nan = Signal(math.nan, False, 0.0)
        return dict.fromkeys(
            (
                "rdma", "wdma", "item_mean_deviation", "mean_var", "fmtd", "extremity",
                "agreement", "popularity", "target_focus", "length_var",
            ),
            nan,
        )  # fmt: skip
    n = f.n

    def gate(name: str, value: float) -> float:
        return 1.0 if norms is None else norms.gate(name, value, n)

    def w(weight: float, size: float | None = None) -> float:
        return grown(weight, n if size is None else size, config.profile_half, config.profile_min)

    def scaled(value: float, s: float, weight: float) -> Signal:
        # a literature statistic shown as is, graded by a normalised form of it
        return (
            Signal(value, True, weight * s)
            if s > 0 and weight > 0
            else Signal(value, False, weight)
        )

    upper = _agreement_upper(f.agreement, n, config.agreement_z)
    w_dev = w(config.w_deviation)
    rdma_s = severity(f.rdma_ratio, config.rdma_ratio_max, config.rdma_ratio_span)
    rdma_s *= gate("rdma_ratio", f.rdma_ratio)
    wdma_s = severity(f.wdma_ratio, config.rdma_ratio_max, config.rdma_ratio_span)
    wdma_s *= gate("wdma_ratio", f.wdma_ratio)
    deviation_s = severity(f.deviation, config.deviation_max, config.deviation_span)
    deviation_s *= gate("deviation", f.deviation)
    mean_var_s = severity(
        f.mean_var_ratio, config.mean_var_ratio_min, config.mean_var_ratio_span, high=False
    ) * gate("mean_var_ratio", f.mean_var_ratio)
    agreement_s = severity(upper, config.agreement_min, config.agreement_span, high=False)
    agreement_s *= gate("agreement", f.agreement)
    ranked = max(items.items, n + 1)
    popularity_s = severity(
        f.popularity,
        config.popularity_max + config.popularity_slack / (math.sqrt(n) * math.log(ranked / n)),
        config.popularity_span,
    ) * gate("popularity", f.popularity)
    length_s = severity(f.length_z, config.length_z_max, config.length_z_span)
    length_s *= gate("length_z", f.length_z)
    fmtd_s = severity(f.fmtd, config.fmtd_max, config.fmtd_span) * gate("fmtd", f.fmtd)
    extremity_s = severity(f.extremity, config.extremity_max, config.extremity_span)
    extremity_s *= gate("extremity", f.extremity)
    focus_s = severity(f.target_focus, config.focus_max, config.focus_span)
    focus_s *= gate("target_focus", f.target_focus)
    return {
        "rdma": scaled(f.rdma, rdma_s, w_dev),
        "wdma": scaled(f.wdma, wdma_s, w_dev),
        "item_mean_deviation": scaled(f.deviation, deviation_s, w_dev),
        "mean_var": scaled(f.mean_var, mean_var_s, w(config.w_mean_var, f.filler)),
        "fmtd": scaled(f.fmtd, fmtd_s, w(config.w_shape)),
        "extremity": scaled(f.extremity, extremity_s, w(config.w_shape)),
        "agreement": scaled(
            f.agreement, agreement_s, w(config.w_agreement) if math.isfinite(upper) else 0.0
        ),
        "popularity": scaled(
            f.popularity,
            popularity_s,
            w(config.w_popularity)
            if math.isfinite(f.popularity) and n >= config.popularity_min
            else 0.0,
        ),
        "target_focus": scaled(f.target_focus, focus_s, w(config.w_focus)),
        "length_var": scaled(f.length_var, length_s, w(config.w_length)),
    }


def group_rule(config: SpamConfig) -> GroupRule:
    """The group detector's numbers from the config."""
    return GroupRule(
        config.group_min,
        config.group_arrival_seconds,
        config.group_length_log,
        config.group_alpha,
        config.group_min_share,
        family_alpha=config.group_family_alpha,
    )


def groups(activities: Mapping[str, UserActivity], config: SpamConfig) -> dict[str, GroupReading]:
    """The group readings of the users in ``activities`` (:mod:`recloop.core.spam_groups`);
    pass every profile the population holds: the chance of a box is measured on them."""
    profiles = {user: Profile(a.ratings, a.first_at) for user, a in activities.items() if a.ratings}
    return find_groups(profiles, group_rule(config))


def _group_signal(group: GroupReading | None, config: SpamConfig) -> Signal:
    if group is None:
        return Signal(math.nan, False, 0.0)
    weight = config.w_group * severity(
        group.purity, config.group_purity_min, config.group_purity_span
    )
    value = -math.log10(max(group.p_value, 1e-300))
    return Signal(value, weight > 0, weight)


def signals(
    activity: Evidence,
    items: ItemStats,
    config: SpamConfig,
    now: float,
    texts: TextRegistry | None = None,
    norms: ProfileNorms | None = None,
    group: GroupReading | None = None,
    features: ProfileFeatures | None = None,
    readings: ActivityReadings | None = None,
) -> dict[str, Signal]:
    """Every detector's reading of one user, by name (see :data:`FAMILIES`).

    O(profile length + remembered actions). ``texts``, when given, updates
    the review-copies count to now (a text copied by others *after* this user
    posted it); otherwise the count seen when the user posted is used.
    ``norms`` (:func:`fit_norms`) gate the profile signals by what the
    population makes normal; ``group`` is the user's reading of the group
    detector (:func:`groups`), ``features`` the profile's features and
    ``readings`` the activity's (:func:`activity_readings`) when already computed.

    >>> a = UserActivity()
    >>> for i in range(40):
    ...     a.observe("click", f"item{i % 3}", None, 60.0 * i)
    >>> s = signals(a, ItemStats(), SpamConfig(), now=2400.0)
    >>> s["interarrival_cv"].fired, s["clicks_without_impressions"].fired, s["rdma"].weight
    (True, True, 0.0)
    """
    del now  # the detectors read the evidence as of its latest event
    catalogue = items.catalogue
    if readings is None:
        readings = activity_readings(activity, catalogue)
    out = _timing_signals(activity, config, readings)
    logged = items.impressions_logged(config)
    out.update(_behaviour_signals(activity, config, readings, catalogue, logged))
    out.update(_text_signals(activity, config, texts))
    out.update(_profile_signals(activity, items, config, norms, features))
    out["target_group"] = _group_signal(group, config)
    return out


# -- Reputation and verdict -----------------------------------------------------------


def evidence(found: Mapping[str, Signal], config: SpamConfig) -> tuple[float, float]:
    """``(positive, negative)`` evidence of a set of signals, counted once per family.

    A family with a fired member contributes the largest fired weight as
    negative evidence; otherwise its largest weight times
    ``config.clean_evidence``, at most ``config.clean_cap``, as positive
    evidence (clean readings say less than anomalies: attackers pass most
    tests). Unknown signal names are families of their own.

    >>> s = {"rdma": Signal(0.1, True, 2.0), "wdma": Signal(0.1, True, 3.0),
    ...      "popularity": Signal(0.0, False, 4.0), "length_var": Signal(0.0, False, 1.0)}
    >>> evidence(s, SpamConfig())
    (0.75, 3.0)
    """
    fired: dict[str, float] = {}
    clean: dict[str, float] = {}
    for name, sig in found.items():
        family = FAMILIES.get(name, name)
        if sig.fired:
            fired[family] = max(fired.get(family, 0.0), sig.weight)
        else:
            clean[family] = max(clean.get(family, 0.0), sig.weight)
    positive = sum(
        min(w * config.clean_evidence, config.clean_cap)
        for family, w in clean.items()
        if family not in fired
    )
    return positive, sum(fired.values())


def reputation(positive: float, negative: float, config: SpamConfig) -> float:
    """The expected Beta reputation, 0..100 (Jøsang & Ismail 2002).

    ``100 * (a0 + positive) / (a0 + positive + b0 + negative)`` with the prior
    ``Beta(a0, b0) = Beta(prior_trust, prior_distrust)``. Increasing in
    ``positive``, decreasing in ``negative``.

    >>> c = SpamConfig()
    >>> reputation(0.0, 0.0, c), reputation(0.0, 5.0, c), reputation(5.0, 0.0, c)
    (80.0, 40.0, 90.0)
    """
    if positive < 0 or negative < 0:
        raise InvalidInput("evidence", f"must be >= 0, got {positive}, {negative}")
    a = config.prior_trust + positive
    return 100.0 * a / (a + config.prior_distrust + negative)


def hard_rule(activity: Evidence, config: SpamConfig, now: float) -> str | None:
    """Why a hard rule blocks the user, or None: cheap enough to check after every event.

    The rules: more than ``max_explicit_per_second`` explicit events, or more
    than ``max_actions_per_second`` actions, inside one second, at any time
    within the last ``hard_rule_seconds``.

    >>> a = UserActivity()
    >>> for i in range(11):
    ...     a.observe("like", f"i{i}", None, 100.0 + i * 0.05)
    >>> hard_rule(a, SpamConfig(), now=101.0)
    'more than 10 explicit events in 1 s'
    >>> hard_rule(UserActivity(), SpamConfig(), now=0.0) is None
    True
    """
    at = activity.hard_rule_at
    if at is None or now - at > config.hard_rule_seconds:
        return None
    return activity.hard_rule_reason


@dataclass(frozen=True, slots=True)
class Verdict:
    """A user's reliability: ``score`` 0..100, ``status`` and the evidence behind it."""

    score: float
    status: str
    signals: dict[str, Signal]
    hard_rule: str | None
    features: ProfileFeatures | None = None


def status_of(score: float, rule: str | None, config: SpamConfig) -> str:
    """``"blocked"`` on a hard rule or below ``block_threshold``, ``"suspect"`` below
    ``suspect_threshold``, else ``"trusted"``.

    >>> c = SpamConfig()
    >>> status_of(80.0, None, c), status_of(49.9, None, c), status_of(19.0, None, c)
    ('trusted', 'suspect', 'blocked')
    >>> status_of(90.0, "flood", c)
    'blocked'
    """
    if rule is not None or score < config.block_threshold:
        return BLOCKED
    if score < config.suspect_threshold:
        return SUSPECT
    return TRUSTED


def judge(
    activity: Evidence,
    items: ItemStats,
    config: SpamConfig,
    now: float,
    texts: TextRegistry | None = None,
    norms: ProfileNorms | None = None,
    group: GroupReading | None = None,
    features: ProfileFeatures | None = None,
    readings: ActivityReadings | None = None,
) -> Verdict:
    """Score one user: the signals, their evidence, the Beta reputation and the status.

    ``features`` and ``readings``: the profile's and the activity's, if computed
    already (``core.spam_batch`` computes many users' at once).

    On a hard rule the score is 0. O(profile length + remembered actions):
    run periodically, not per event (use :func:`hard_rule` per event).

    >>> stats, config = ItemStats(), SpamConfig()
    >>> newcomer = UserActivity(config)
    >>> for item, value in (("a", 4.0), ("b", 5.0), ("c", 3.0)):
    ...     record_event(newcomer, stats, None, "rating", item, value, 0.0)
    >>> v = judge(newcomer, stats, config, now=0.0)
    >>> v.score, v.status
    (80.0, 'trusted')
    """
    if features is None:
        features = profile_features(activity.ratings, items, config)
    found = signals(activity, items, config, now, texts, norms, group, features, readings)
    rule = hard_rule(activity, config, now)
    positive, negative = evidence(found, config)
    score = 0.0 if rule is not None else reputation(positive, negative, config)
    return Verdict(score, status_of(score, rule, config), found, rule, features)


def record_event(
    activity: UserActivity,
    items: ItemStats,
    texts: TextRegistry | None,
    event_type: str,
    item_id: str,
    value: float | None,
    timestamp: float,
    text: str | None = None,
    user_id: str | None = None,
) -> None:
    """Fold one event of one user into all three stores, consistently.

    A rating updates :class:`ItemStats` (replacing the user's previous rating
    of the item, if remembered) and the profile-length moments; a review's
    text is registered in ``texts`` under ``user_id`` (required then).

    Raises
    ------
    InvalidInput
        for a review with text and a registry but no ``user_id``.
    """
    copies: int | None = None
    if event_type == "review" and text is not None and texts is not None:
        if user_id is None:
            raise InvalidInput("user_id", "is needed to register a review's text")
        copies = texts.add(user_id, text)
    if event_type == "rating" and value is not None:
        old = activity.rating_of(item_id)
        before = len(activity.ratings)
        activity.observe(event_type, item_id, value, timestamp, copies, text)
        if old is None:
            items.add_rating(item_id, value)
        else:
            items.replace_rating(item_id, old, value)
        if len(activity.ratings) != before:
            items.note_profile_length(before, len(activity.ratings))
        return
    if event_type == "click":
        unseen = activity.unseen_clicks
        activity.observe(event_type, item_id, value, timestamp, copies, text)
        items.note_clicks(1, activity.unseen_clicks - unseen)
        return
    activity.observe(event_type, item_id, value, timestamp, copies, text)
