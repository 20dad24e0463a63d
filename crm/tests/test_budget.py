"""SyncRoot's share of a connection's daily API limit, by priority (crm/budget.py), on real Redis."""

import uuid

import pytest

from crm import budget
from crm.base import RateLimited
from crm.budget import BudgetSpent, DayBudget, Priority, call_priority, current_priority
from crm.http import Budget
from crm.ratelimit import RateLimiter
from syncroot.counters import api_budget_record

HOUR = 3600


@pytest.fixture
def clock(monkeypatch):
    """The hour buckets' clock, moved by the test: now[0] seconds since the epoch."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(budget, "clock", lambda: now[0])
    return now


def new_budget(**config) -> DayBudget:
    made = DayBudget.from_config({"connection": f"budget-{uuid.uuid4().hex[:8]}", **config})
    assert made is not None
    return made


def take(day: DayBudget, priority: Priority, times: int) -> int:
    """Calls taken before the budget refused one (all of them: `times`)."""
    for taken in range(times):
        try:
            day.take(priority)
        except BudgetSpent:
            return taken
    return times


def test_each_priority_stops_at_its_ceiling_of_the_share(clock):
    day = new_budget(budget_share=0.1, daily_limit=1000)  # SyncRoot's share: 100 calls a day

    assert take(day, Priority.BACKFILL, 200) == 75  # backfills: 75 % of the share
    assert take(day, Priority.RECONCILE, 200) == 15  # the reconciler: up to 90 %
    assert take(day, Priority.LIVE, 200) == 10  # live changes: the whole share
    state = day.state()
    assert (state.used, state.limit, state.allowed(Priority.LIVE), state.spent(Priority.LIVE)) == (100, 1000, 100, True)


def test_a_refusal_names_the_code_and_when_the_oldest_hour_leaves_the_window(clock):
    day = new_budget(budget_share=1.0, daily_limit=4)
    take(day, Priority.BACKFILL, 3)
    clock[0] += 2 * HOUR + 600

    with pytest.raises(BudgetSpent) as refused:
        day.take(Priority.BACKFILL)

    assert refused.value.code == "API_BUDGET_SPENT"
    assert refused.value.retryable
    # The calls were made 2 h 10 min ago in an hour that began 10 min before them at most.
    assert 21 * HOUR <= refused.value.retry_after <= 22 * HOUR
    assert "backfill share of the daily API limit is spent (3 calls in 24 hours of 3 allowed)" in str(refused.value)


def test_the_window_rolls_over_24_hours(clock):
    day = new_budget(budget_share=1.0, daily_limit=10)
    assert take(day, Priority.LIVE, 6) == 6
    clock[0] += 12 * HOUR
    assert take(day, Priority.LIVE, 10) == 4
    clock[0] += 12 * HOUR  # the first six calls are more than 24 hours old now
    assert day.state().used == 4
    assert take(day, Priority.LIVE, 10) == 6


def test_the_limit_the_crm_reports_applies_when_none_is_configured(clock):
    day = new_budget(budget_share=0.5)
    assert day.state().limit is None
    assert take(day, Priority.LIVE, 50) == 50  # unknown: only the short window applies

    api_budget_record(connection=day.connection, budgets=[Budget("day", 10, 80)])

    state = day.state()
    assert (state.limit, state.allowed(Priority.LIVE), state.spent(Priority.LIVE)) == (80, 40, True)
    with pytest.raises(BudgetSpent):
        day.take(Priority.LIVE)


def test_the_deployment_share_and_caps_apply_without_a_connection_setting(clock, settings):
    settings.API_BUDGET_SHARE = 0.2
    key = f"budget-{uuid.uuid4().hex[:8]}"
    settings.CRM_DAILY_CALL_CAPS = {key: 50}
    day = DayBudget.from_config({"connection": key})
    assert day is not None
    assert (day.share, day.daily_limit) == (0.2, 50)
    assert take(day, Priority.LIVE, 20) == 10
    assert DayBudget.from_config({}) is None  # a client built outside the registry counts nothing


def test_connections_count_apart(clock):
    first, second = new_budget(budget_share=1.0, daily_limit=3), new_budget(budget_share=1.0, daily_limit=3)
    assert take(first, Priority.LIVE, 5) == 3
    assert take(second, Priority.LIVE, 5) == 3


def test_the_priority_is_the_callers_and_live_by_default():
    assert current_priority() is Priority.LIVE
    with call_priority(Priority.BACKFILL):
        assert current_priority() is Priority.BACKFILL
        with call_priority(Priority.RECONCILE):
            assert current_priority() is Priority.RECONCILE
        assert current_priority() is Priority.BACKFILL
    assert current_priority() is Priority.LIVE


def test_a_backfill_takes_at_most_its_share_of_the_short_window():
    limiter = RateLimiter(f"budget-short-{uuid.uuid4().hex[:8]}", "10/minute", max_wait=0)
    backfill = limiter.share(0.7)
    assert (backfill.item.amount, limiter.share(1.0)) == (7, limiter)

    for _ in range(7):
        backfill.acquire()
        limiter.acquire()
    with pytest.raises(RateLimited):
        backfill.acquire()  # the backfill's 7 of the window's 10 are taken
    for _ in range(3):  # what is left of the window is the live changes'
        limiter.acquire()
    with pytest.raises(RateLimited):
        limiter.acquire()
