"""API budgets: how many calls SyncRoot may make to one connection, and in which order.

A CRM account's API limit is shared with everything else connected to it (the sales team's other
tools, its own integrations). SyncRoot takes a configured share of the account's daily limit
(`API_BUDGET_SHARE`, per connection `budget_share`) and spends it by priority:

- **live** changes (a client's write, a CRM's webhook carried on) may use the whole share;
- the **reconcile**r's polls stop at RECONCILE_CEILING of it;
- **backfills and imports** stop at BACKFILL_CEILING, so a big one never eats what live changes need.

The daily limit is what the CRM reports in its answers (HubSpot `X-HubSpot-RateLimit-Daily`,
Salesforce `Sforce-Limit-Info: api-usage=N/M`: syncroot.counters keeps the latest reading), or
`daily_limit` where the CRM reports none (HubSpot OAuth apps); unknown, only the short window
applies. SyncRoot's own calls are counted per connection in hourly buckets in Redis and summed over
the last 24 hours (Salesforce's quota rolls over 24 hours; for HubSpot, whose day ends at midnight,
that is the safe side). A call past its ceiling is not sent: it raises `BudgetSpent`, a RateLimited
naming when the oldest hour of use drops out of the window.

In the short window (HubSpot's 10 seconds) the same order holds: while live changes are flowing (one
called through the limiter within its window), a backfill's calls take at most SHORT_SHARES of the
limiter's rate, so a live change always finds room; alone, a backfill uses the whole window.

The engine says which kind of work it is doing with `call_priority(...)`; the call path reads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any

import redis
from django.conf import settings
from redis.commands.core import Script

from crm.base import RateLimited
from syncroot.counters import counter_key

logger = logging.getLogger(__name__)

HOUR = 3600
WINDOW_HOURS = 24


class Priority(IntEnum):
    LIVE = 0
    RECONCILE = 1
    BACKFILL = 2


# Of SyncRoot's daily share, what each priority may use (the rest is kept for the ones above it).
CEILINGS = {Priority.LIVE: 1.0, Priority.RECONCILE: 0.9, Priority.BACKFILL: 0.75}
# Of the short window's rate (the limiter), what each priority may take.
SHORT_SHARES = {Priority.LIVE: 1.0, Priority.RECONCILE: 0.85, Priority.BACKFILL: 0.7}

_priority: ContextVar[Priority] = ContextVar("crm_call_priority", default=Priority.LIVE)

clock = time.time  # the hour buckets' clock; tests move it forward


@contextmanager
def call_priority(priority: Priority) -> Iterator[None]:
    """The CRM calls made inside are `priority`'s (the default is live)."""
    token = _priority.set(priority)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority:
    return _priority.get()


class BudgetSpent(RateLimited):
    """The call would take SyncRoot past its share of the connection's daily API limit."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after, code="API_BUDGET_SPENT", status=None)


# KEYS[1]: SyncRoot's calls per connection and hour (hash: "<connection>|<hour number>" → calls);
# KEYS[2]: the budgets the CRMs reported (syncroot.counters). ARGV: this hour, the fraction of the
# limit allowed, the configured daily limit (0: what the CRM reports), the connection, 1 to count
# the call (0: only look). Answers {allowed, calls in the last 24 hours, daily limit (0: unknown),
# the oldest hour counted}. Hours out of the window are deleted on the way.
_TAKE = """
local hour, fraction, limit, connection = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if limit == 0 then limit = tonumber(redis.call('HGET', KEYS[2], connection .. '|day|limit') or '0') end
local prefix = connection .. '|'
local used, oldest, stale = 0, hour, {}
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
    local name = counts[i]
    if string.sub(name, 1, #prefix) == prefix then
        local h = tonumber(string.sub(name, #prefix + 1))
        if h <= hour - 24 then
            stale[#stale + 1] = name
        else
            used = used + tonumber(counts[i + 1])
            if h < oldest then oldest = h end
        end
    end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
if limit > 0 and used >= math.floor(limit * fraction) then return {0, used, limit, oldest} end
if ARGV[5] == '1' then
    redis.call('HINCRBY', KEYS[1], prefix .. ARGV[1], 1)
    redis.call('EXPIRE', KEYS[1], 90000)
    used = used + 1
end
return {1, used, limit, oldest}
"""


@cache
def _take_script(url: str) -> Script:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    return client.register_script(_TAKE)


@dataclass(frozen=True)
class BudgetState:
    """One connection's day as SyncRoot sees it."""

    connection: str
    used: int  # SyncRoot's calls in the last 24 hours
    limit: int | None  # the account's daily limit (None: unknown, nothing but the short window applies)
    share: float
    resumes_at: float | None  # when the oldest counted hour drops out of the window (epoch seconds)

    def allowed(self, priority: Priority) -> int | None:
        """Calls SyncRoot may make in 24 hours at this priority."""
        return None if self.limit is None else int(self.limit * self.share * CEILINGS[priority])

    def spent(self, priority: Priority) -> bool:
        allowed = self.allowed(priority)
        return allowed is not None and self.used >= allowed

    @property
    def backfills_resume_at(self) -> float | None:
        """While backfills wait for the budget, when it frees up (epoch seconds); None otherwise."""
        return self.resumes_at if self.spent(Priority.BACKFILL) else None


@dataclass(frozen=True)
class DayBudget:
    """SyncRoot's share of one connection's daily API limit."""

    connection: str
    share: float
    daily_limit: int | None = None  # configured; None: what the CRM reports

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DayBudget | None:
        """The connection's budget; None for a client built outside the registry (no connection)."""
        connection = str(config.get("connection") or "")
        if not connection:
            return None
        return cls.of(connection, budget_share=config.get("budget_share"), daily_limit=config.get("daily_limit"))

    @classmethod
    def of(cls, connection: str, *, budget_share: float | None, daily_limit: int | None) -> DayBudget:
        """The connection's own share and limit, or the deployment's (API_BUDGET_SHARE, CRM_DAILY_CALL_CAPS)."""
        limit = daily_limit or settings.CRM_DAILY_CALL_CAPS.get(connection)
        return cls(
            connection=connection,
            share=float(settings.API_BUDGET_SHARE if budget_share is None else budget_share),
            daily_limit=int(limit) if limit else None,
        )

    def take(self, priority: Priority | None = None) -> None:
        """Count one call at `priority` (the current one by default); BudgetSpent past its ceiling."""
        priority = current_priority() if priority is None else priority
        try:
            allowed, used, limit, oldest = self._run(CEILINGS[priority] * self.share, count=True)
        except redis.RedisError as exc:  # counting failed: the call goes (the CRM still has its own limit)
            logger.warning(
                "API budget not counted: Redis unavailable", extra={"provider": self.connection, "error": str(exc)}
            )
            return
        if not allowed:
            retry_after = max((oldest + WINDOW_HOURS) * HOUR - clock(), 1.0)
            raise BudgetSpent(
                f"{self.connection}: SyncRoot's {priority.name.lower()} share of the daily API limit is spent "
                f"({used:,} calls in 24 hours of {int(limit * self.share * CEILINGS[priority]):,} allowed)",
                retry_after=retry_after,
            )

    def state(self) -> BudgetState:
        _, used, limit, oldest = self._run(1.0, count=False)
        return BudgetState(
            connection=self.connection,
            used=used,
            limit=limit or None,
            share=self.share,
            resumes_at=(oldest + WINDOW_HOURS) * HOUR if used else None,
        )

    def _run(self, fraction: float, *, count: bool) -> tuple[bool, int, int, int]:
        hour = int(clock() // HOUR)
        keys = [counter_key("api_calls"), counter_key("api_budget")]
        args = [hour, fraction, self.daily_limit or 0, self.connection, 1 if count else 0]
        allowed, used, limit, oldest = _take_script(settings.REDIS_URL)(keys=keys, args=args)
        return bool(allowed), int(used), int(limit), int(oldest)


def backfill_wait(config: Mapping[str, Any]) -> float | None:
    """Seconds until backfills may call this connection again; None while they may (or when
    Redis cannot say: the calls themselves are checked again)."""
    budget = DayBudget.from_config(config)
    if budget is None:
        return None
    try:
        state = budget.state()
    except redis.RedisError:
        return None
    resume_at = state.backfills_resume_at
    return None if resume_at is None else max(resume_at - clock(), 1.0)


def budget_state(*, connection: str, budget_share: float | None, daily_limit: int | None) -> BudgetState:
    """Where `connection` stands today. Raises RedisError."""
    return DayBudget.of(connection, budget_share=budget_share, daily_limit=daily_limit).state()
