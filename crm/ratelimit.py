"""One rate limiter per CRM, kept in Redis, shared by every worker process.

`limits` implements the moving window in a Redis Lua script, which matches HubSpot's rolling
10-second window; we only add the blocking `acquire` the clients need.
"""

import time
from functools import cache

from django.conf import settings
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from crm.base import RateLimited


@cache
def _strategy() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(RedisStorage(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5))


class RateLimiter:
    """`acquire()` blocks until the CRM's budget allows one more request."""

    def __init__(self, name: str, rate: str, *, max_wait: float = 30.0) -> None:
        self.name = name
        self.item: RateLimitItem = parse(rate)
        self.max_wait = max_wait

    def acquire(self, cost: int = 1) -> float:
        """Take `cost` slots; returns the seconds waited. Raises RateLimited past max_wait."""
        waited = 0.0
        strategy = _strategy()
        while not strategy.hit(self.item, "crm", self.name, cost=cost):
            reset_at = strategy.get_window_stats(self.item, "crm", self.name).reset_time
            pause = min(max(reset_at - time.time(), 0.005), 1.0)
            if waited + pause > self.max_wait:
                raise RateLimited(f"{self.name} request budget used up", retry_after=max(pause, 1.0))
            time.sleep(pause)
            waited += pause
        return waited

    def reset(self) -> None:
        _strategy().clear(self.item, "crm", self.name)
