"""A never-seen user on the read path: the store is asked about them once, not once by the
strategy's preferences and again by the experiments at their first exposure."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recloop.adapters.memory import InMemoryEventLog
from recloop.adapters.memory.cache import TtlCache
from recloop.config import ExperimentSettings
from recloop.core.errors import NotFound
from recloop.core.events import Event
from recloop.core.experiments import Experiment, Metric, Variant
from recloop.core.ids import uuid7
from recloop.core.preferences import UserState
from recloop.core.state import UserRows
from recloop.ports import StateChanges
from recloop.services.experiments import DAY, ExperimentService
from recloop.services.preferences import PreferenceService
from tests.conftest import CountingStore

T = 100 * DAY


async def _services(
    share: bool,
) -> tuple[CountingStore, PreferenceService, ExperimentService]:
    store = CountingStore()
    log = InMemoryEventLog()
    # "stored" has history in the log and state in the store; no one holds either user
    await log.append([Event(uuid7(), "stored", "i", "purchase", T - DAY)])
    state = UserState("stored", np.ones(4) / 2.0, events_applied=1, interactions=1)
    await store.commit(StateChanges(users=UserRows.of([state])))
    preferences = PreferenceService(store, TtlCache(100, 60.0))
    experiments = ExperimentService(
        store,
        log,
        ExperimentSettings(covariate_seconds=3600.0),
        lambda: T,
        holds=lambda user_id: False,
        defer_covariates=True,
        stored=preferences.exists if share else None,
    )
    await experiments.start()
    # the first covariate pass, at once, finds no one: the next is an hour away
    await asyncio.sleep(0)
    variants = (Variant("c", 0.5), Variant("t", 0.5))
    await experiments.create(
        Experiment("x", "x", variants, (Metric("bought", "binomial", event="purchase"),))
    )
    await experiments.transition("x", "start")
    return store, preferences, experiments


@pytest.mark.parametrize("share", [True, False])
async def test_a_never_seen_user_is_read_from_the_store_once(share: bool) -> None:
    store, preferences, experiments = await _services(share)
    try:
        # the strategy: the user's preferences (a miss), then their first exposure
        with pytest.raises(NotFound):
            await preferences.get("never-seen")
        assert await experiments.expose_running("never-seen")
        assert store.asked.count("never-seen") == (1 if share else 2)
        assert experiments.covariates_due("x") == 0  # no history to read: not due
        # later visits: exposed already, the miss cached
        await experiments.expose_running("never-seen")
        with pytest.raises(NotFound):
            await preferences.get("never-seen")
        assert store.asked.count("never-seen") == (1 if share else 2)
    finally:
        await experiments.stop()


@pytest.mark.parametrize("share", [True, False])
async def test_a_stored_user_is_due_for_their_covariate(share: bool) -> None:
    store, preferences, experiments = await _services(share)
    try:
        # an assignment first (no preferences read): the store is asked, and the answer kept
        variant, _ = await experiments.expose("x", "stored")
        assert variant is not None
        assert store.asked == ["stored"]
        assert experiments.covariates_due("x") == 1
        assert (await preferences.get("stored")).events_applied == 1
        assert store.asked == (["stored"] if share else ["stored", "stored"])
        assert await experiments.settle_covariates() == 1
    finally:
        await experiments.stop()


async def test_remembered_variants_are_held_and_forgotten() -> None:
    """The assigners remember users' variants: what an erasure must find and drop."""
    _, _, experiments = await _services(True)
    try:
        exp = experiments.get("x")
        variant = experiments.variant_for(exp, "looked-at")
        assert "looked-at" in experiments.held_users()  # remembered, never exposed
        experiments.forget("looked-at")
        assert "looked-at" not in experiments.held_users()
        assert experiments.variant_for(exp, "looked-at") == variant  # hashed again
    finally:
        await experiments.stop()


async def test_find_answers_as_get_without_raising() -> None:
    """``find`` is ``get`` with None for an unknown user, from the same cache: a user found
    unknown by one is not read again by the other, and a known one is the same snapshot."""
    store, preferences, experiments = await _services(True)
    try:
        assert await preferences.find("never-seen") is None
        with pytest.raises(NotFound):
            await preferences.get("never-seen")
        assert await preferences.exists("never-seen") is False
        assert store.asked.count("never-seen") == 1
        found = await preferences.find("stored")
        assert found is not None and found.events_applied == 1
        assert await preferences.get("stored") is found
        assert await preferences.exists("stored") is True
        assert store.asked.count("stored") == 1
    finally:
        await experiments.stop()
