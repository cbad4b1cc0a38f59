"""Credit by share (#15 item 3): what ``rank`` logs and answers per shown item.

``core.ranking.credited`` draws the algorithm a shown item's feedback should name with
probability equal to its share of the item's fused value; the slate logs the shares and
the credit and reads them back (the shares themselves: tests/unit/test_ranking.py).
"""

from __future__ import annotations

from recloop.core.ranking import credited
from recloop.core.slates import Slate, decode, encode


def test_shares_and_credits_are_logged_and_read_back() -> None:
    slate = Slate(
        ("a", "b"), (0.9, 0.5), (0.9, 1.0), (False, False), (("als", "pop"), ()),
        shares=((0.75, 0.25), ()), credits=("als", None),
    )  # fmt: skip
    back = decode(*encode(slate), ())
    assert back == slate
    assert [r["shares"] for r in back.ranking()] == [[0.75, 0.25], []]
    assert [r["credit"] for r in back.ranking()] == ["als", None]


def test_credited_draws_by_share() -> None:
    draws = [credited(("a", "b", "c"), (0.5, 0.3, 0.1), f"imp:{n}") for n in range(20_000)]
    for algorithm, share in (("a", 0.5), ("b", 0.3), ("c", 0.1), (None, 0.1)):
        # within 4 standard errors
        assert abs(draws.count(algorithm) / 20_000 - share) < 4 * (share * (1 - share) / 2e4) ** 0.5
