"""The circuit breaker (core/breaker.py): closed, open, half-open, on a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recloop.core.breaker import CircuitBreaker
from recloop.core.errors import ConfigError


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kwargs: float) -> CircuitBreaker:
    options: dict[str, float] = {
        "failure_threshold": 3,
        "window_seconds": 10.0,
        "open_seconds": 5.0,
        **kwargs,
    }
    return CircuitBreaker("storage", clock=clock, **options)  # type: ignore[arg-type]


def test_closed_lets_every_call_through() -> None:
    b = breaker(Clock())
    assert [b.allow() for _ in range(10)] == [True] * 10
    assert b.snapshot().as_dict() == {"state": "closed", "failures": 0, "opened_at": None}


def test_opens_at_the_threshold_within_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure()
    b.failure()
    assert b.state == "closed" and b.failures == 2
    b.failure()
    assert b.state == "open" and b.opened_at == clock.now
    assert not b.allow()


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure()
    b.failure()
    clock.now += 10.0  # both fall out of the window
    b.failure()
    assert b.state == "closed" and b.failures == 1


def test_a_success_forgets_the_failures() -> None:
    b = breaker(Clock())
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state == "closed" and b.failures == 2


def test_open_refuses_until_open_seconds_then_lets_one_trial_through() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 4.0
    assert not b.allow() and b.retry_after() == pytest.approx(1.0)
    clock.now += 1.0
    assert b.state == "half_open" and b.retry_after() == 0.0
    assert b.allow()  # the trial
    assert not b.allow() and not b.allow()  # everyone else waits for it
    assert b.retry_after() == pytest.approx(5.0)


def test_a_successful_trial_closes() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 5.0
    assert b.allow()
    b.success()
    assert b.snapshot().as_dict() == {"state": "closed", "failures": 0, "opened_at": None}
    assert b.allow() and b.allow()


def test_a_failed_trial_opens_again_for_twice_as_long_up_to_the_maximum() -> None:
    clock = Clock()
    b = breaker(clock, open_seconds=1.0, max_open_seconds=3.0)
    for _ in range(3):
        b.failure()
    for expected in (2.0, 3.0, 3.0):
        clock.now += b.retry_after()
        assert b.allow()
        b.failure()
        assert b.state == "open" and b.opened_at == clock.now
        assert b.retry_after() == pytest.approx(expected)
    clock.now += 3.0
    assert b.allow()
    b.success()  # closing resets the open duration
    for _ in range(3):
        b.failure()
    assert b.retry_after() == pytest.approx(1.0)


def test_a_released_trial_lets_the_next_caller_try() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 5.0
    assert b.allow()
    b.release()  # the trial was cancelled: no verdict
    assert b.state == "half_open" and b.allow()


def test_a_trial_that_never_reports_is_presumed_lost() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 5.0
    assert b.allow()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_a_late_success_while_open_does_not_close_it() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    b.success()  # a call let through before it opened, answering late
    assert b.state == "open"


def test_failures_while_open_are_counted_without_extending_it() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    opened = b.opened_at
    clock.now += 1.0
    b.failure()
    assert b.failures == 4 and b.opened_at == opened and b.retry_after() == pytest.approx(4.0)


def test_a_clock_going_back_counts_as_the_open_duration_passed() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now -= 3600.0
    assert b.state == "half_open" and b.allow()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"window_seconds": 0.0}, "window_seconds"),
        ({"open_seconds": -1.0}, "open_seconds"),
        ({"open_seconds": 2.0, "max_open_seconds": 1.0}, "max_open_seconds"),
    ],
)
def test_bad_settings_are_refused_by_name(options: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        breaker(Clock(), **options)


Action = tuple[str, float]
actions = st.lists(
    st.tuples(
        st.sampled_from(["allow", "success", "failure", "release", "wait"]),
        st.floats(min_value=0.0, max_value=4.0),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(actions)
def test_invariants_over_any_sequence_of_calls(steps: list[Action]) -> None:
    """Closed always allows; open never does; half-open lets one trial through until it
    reports back or its lease (the open duration) runs out; it opens only on failures."""
    clock = Clock()
    b = breaker(clock, open_seconds=2.0, max_open_seconds=8.0)
    trial_at: float | None = None  # a half-open trial in flight, as the test saw it
    for action, amount in steps:
        before = b.state
        if action == "wait":
            clock.now += amount
            continue
        if action == "allow":
            allowed = b.allow()
            if before == "closed":
                assert allowed
            elif before == "open":
                assert not allowed
            else:
                lease_over = trial_at is not None and clock.now - trial_at >= b.max_open_seconds
                if trial_at is not None and not lease_over and allowed:
                    # a second trial only once the current open duration has passed
                    assert clock.now - trial_at >= b.open_seconds
                if allowed:
                    trial_at = clock.now
            continue
        getattr(b, action)()
        trial_at = None
        after = b.state
        if before == "closed" and after != "closed":
            assert action == "failure" and b.failures >= b.failure_threshold
        if after == "closed":
            assert b.opened_at is None
        else:
            assert b.opened_at is not None and b.retry_after() >= 0.0
