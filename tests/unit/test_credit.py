"""Credit by share (#15 item 3): what ``rank`` logs and answers per shown item.

``core.ranking.credited`` draws the algorithm a shown item's feedback should name with
probability equal to its share of the item's fused value; the slate logs the shares and
the credit and reads them back (the shares themselves: tests/unit/test_ranking.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from recloop.core.errors import InvalidInput
from recloop.core.ranking import credited
from recloop.core.slates import Slate, decode, encode


def test_shares_and_credits_are_logged_and_read_back() -> None:
    slate = Slate(
        ("a", "b"), (0.9, 0.5), (0.9, 1.0), (False, False), (("als", "pop"), ()),
        shares=((0.75, 0.25), ()), credits=("als", None),
    )  # fmt: skip
    back = decode(*encode(slate), ())
    assert back == slate
    assert [r["shares"] for r in back.ranking()] == [(0.75, 0.25), ()]
    assert [r["credit"] for r in back.ranking()] == ["als", None]


def test_credit_probabilities_are_logged_and_read_back() -> None:
    slate = Slate(
        ("a", "b"), (0.9, 0.5), (0.9, 1.0), (False, False), (("als", "pop"), ()),
        shares=((0.75, 0.25), ()), credits=("als", None), credit_probabilities=(0.75, 0.0),
    )  # fmt: skip
    back = decode(*encode(slate), ())
    assert back == slate
    assert [r["credit_probability"] for r in back.ranking()] == [0.75, 0.0]
    assert [r["credit_probability"] for r in back.slate] == [0.75, 0.0]
    # a slate logged before them reads as not logged (None), not as 0
    older = Slate(*slate_fields(slate), shares=slate.shares, credits=slate.credits)
    assert [r["credit_probability"] for r in decode(*encode(older), ()).ranking()] == [None] * 2
    assert "credit_probability" not in decode(*encode(older), ()).slate[0]


def test_credit_probabilities_must_cover_every_shown_item() -> None:
    with pytest.raises(InvalidInput, match="credit_probabilities"):
        Slate(
            ("a", "b"), (0.9, 0.5), (0.9, 1.0), (False, False), (("als",), ()),
            shares=((1.0,), ()), credits=("als", None), credit_probabilities=(1.0,),
        )  # fmt: skip


def slate_fields(slate: Slate) -> tuple[object, ...]:
    return slate.item_ids, slate.scores, slate.propensities, slate.explored, slate.algorithms


def test_credited_draws_by_share() -> None:
    # 5,000 slates of four items with the same shares: every slot draws by share
    algorithms, shares = [("a", "b", "c")] * 4, np.array([(0.5, 0.3, 0.1)] * 4)
    draws = [credited(algorithms, shares, f"imp:{n}") for n in range(5_000)]
    for slot in range(4):
        drawn = [d[slot] for d in draws]
        for algorithm, share in (("a", 0.5), ("b", 0.3), ("c", 0.1), (None, 0.1)):
            # within 4 standard errors
            bound = 4 * (share * (1 - share) / 5e3) ** 0.5
            assert abs(drawn.count(algorithm) / 5_000 - share) < bound


def test_slots_of_one_slate_draw_independently() -> None:
    # two slots with shares 1/2 each: the four pairs come a quarter of the time each
    draws = [credited([("a", "b")] * 2, np.full((2, 2), 0.5), f"imp:{n}") for n in range(8_000)]
    for pair in (("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")):
        assert abs(draws.count(pair) / 8_000 - 0.25) < 4 * (0.25 * 0.75 / 8e3) ** 0.5


def test_credit_is_reproducible_from_the_impression_id() -> None:
    algorithms, shares = [("a", "b")] * 50, np.full((50, 2), 0.5)
    assert credited(algorithms, shares, "imp-x") == credited(algorithms, shares, "imp-x")
    assert credited(algorithms, shares, "imp-x") != credited(algorithms, shares, "imp-y")
    # a slot's draw does not depend on how many slots follow it
    assert (
        credited(algorithms[:10], shares[:10], "imp-x")
        == credited(algorithms, shares, "imp-x")[:10]
    )
