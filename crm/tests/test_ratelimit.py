"""The paced limiter (HubSpot's search: 5 per second): one turn per call, shared by every process."""

import time
import uuid

import pytest

from crm.base import RateLimited
from crm.ratelimit import SPACING_MARGIN, RateLimiter


def paced(rate: str, **options) -> RateLimiter:
    return RateLimiter(f"paced-test-{uuid.uuid4().hex}", rate, spaced=True, **options)


def test_calls_take_turns_one_interval_apart_across_limiters_of_one_name():
    first = paced("20/second")
    second = RateLimiter(first.name, "20/second", spaced=True)  # another process's limiter of the same CRM
    assert first.interval == pytest.approx(1 / 20 * (1 + SPACING_MARGIN))

    began = time.monotonic()
    for _ in range(5):
        first.acquire()
        second.acquire()
    elapsed = time.monotonic() - began

    assert elapsed >= 9 * first.interval  # ten turns: never closer than the interval, whoever calls


def test_paced_calls_use_the_budget_a_moving_window_with_headroom_would_leave_unused():
    """5 per second: a window kept one call short allows 4 a second, turns about 4.8."""
    limiter = paced("5/second")
    assert 1 / limiter.interval > 4.7


def test_a_turn_further_away_than_max_wait_is_refused_without_being_taken():
    limiter = paced("1/minute", max_wait=0.5)
    limiter.acquire()  # the next turn is a minute away

    with pytest.raises(RateLimited) as refused:
        limiter.acquire()
    with pytest.raises(RateLimited) as again:
        limiter.acquire()

    assert 50 < again.value.retry_after <= refused.value.retry_after  # the refused call reserved nothing
