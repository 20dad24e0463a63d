"""One rate limiter per CRM, kept in Redis, shared by every worker process.

`limits` implements the moving window in a Redis Lua script, which matches HubSpot's rolling
10-second window; we only add the blocking `acquire` the clients need.

A small per-second budget (HubSpot's search: 5 per second) is paced instead (`spaced=True`): each
call gets its own turn, one interval after the one before, across every process. A moving window
would let 5 calls leave at once and the next 5 exactly one second later, which network jitter can
squeeze into one of HubSpot's windows; keeping it safe that way costs a whole call per window (4 in
place of 5, a fifth of the budget), where pacing costs only the margin added to the interval.
"""

import logging
import time
from functools import cache

import redis
from django.conf import settings
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.commands.core import Script

from crm.base import RateLimited

logger = logging.getLogger(__name__)

SPACING_MARGIN = 0.05  # paced calls leave 5 % further apart than the CRM's own limit allows

# The next free turn of a paced limiter is kept in Redis; a call takes it (or answers how long it
# would wait, past `max_wait`, without taking it). Redis's clock, so every process agrees.
_TAKE_TURN = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local turn = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
if turn - now > max_wait then
    return {0, tostring(turn - now)}
end
redis.call('SET', KEYS[1], tostring(turn + interval), 'PX', math.ceil((turn + interval - now) * 1000) + 1000)
return {1, tostring(turn - now)}
"""


@cache
def _strategy() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(RedisStorage(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5))


@cache
def _live_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)


@cache
def _take_turn_script() -> Script:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    return client.register_script(_TAKE_TURN)


def _per_second(item: RateLimitItem) -> float:
    return item.amount / (item.multiples * item.GRANULARITY.seconds)


_shares: dict[tuple[str, float], "RateLimiter"] = {}


class RateLimiter:
    """`acquire()` blocks until the CRM's budget allows one more request."""

    def __init__(self, name: str, rate: str, *, max_wait: float = 30.0, spaced: bool = False) -> None:
        self.name = name
        self.item: RateLimitItem = parse(rate)
        self.configured = self.item
        self.max_wait = max_wait
        self.spaced = spaced
        self.window = self.item.multiples * self.item.GRANULARITY.seconds
        self.interval = self.window / self.item.amount * (1 + SPACING_MARGIN)

    def fit(self, rate: str) -> None:
        """Follow the CRM's reported `rate` where it allows fewer calls than the configured one
        (an app's limit in one account); back to the configured rate when the CRM allows more."""
        reported = parse(rate)
        item = reported if _per_second(reported) < _per_second(self.configured) else self.configured
        if item == self.item:
            return
        self.item = item
        self.window = item.multiples * item.GRANULARITY.seconds
        self.interval = self.window / item.amount * (1 + SPACING_MARGIN)
        for key in [key for key in _shares if key[0] == self.name]:
            del _shares[key]  # built from the old rate
        logger.info("%s limiter follows the CRM's reported limit: %s", self.name, item)

    def note_live(self) -> None:
        """A live change called through this limiter: lower priorities keep to their share for one
        window from now (crm.budget). Alone, a backfill may use the whole window."""
        _live_client().set(self._live_key, 1, px=max(int(self.window * 1000), 1))

    def live_recently(self) -> bool:
        return bool(_live_client().exists(self._live_key))

    @property
    def _live_key(self) -> str:
        return f"crm-live:{self.name}"

    def share(self, fraction: float) -> "RateLimiter":
        """A limiter over `fraction` of this one's rate, under its own name: lower-priority calls
        take a slot there first, so they never fill the whole window (crm.budget)."""
        if fraction >= 1:
            return self
        key = (self.name, fraction)
        if key not in _shares:
            amount = max(int(self.item.amount * fraction), 1)
            window = f"{self.item.multiples} {self.item.GRANULARITY.name}"
            rate = f"{amount}/{window}"
            _shares[key] = RateLimiter(f"{self.name}:{int(fraction * 100)}", rate, max_wait=self.max_wait,
                                       spaced=self.spaced)  # fmt: skip
        return _shares[key]

    def acquire(self, cost: int = 1) -> float:
        """Take `cost` slots; returns the seconds waited. Raises RateLimited past max_wait."""
        if self.spaced:
            return sum(self._take_turn() for _ in range(cost))
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

    def _take_turn(self) -> float:
        taken, wait = _take_turn_script()(keys=[self._key], args=[self.interval, self.max_wait])
        wait = float(wait)
        if not taken:
            raise RateLimited(f"{self.name} request budget used up", retry_after=max(wait, 1.0))
        if wait > 0:
            time.sleep(wait)
        return wait

    @property
    def _key(self) -> str:
        return f"crm-turn:{self.name}"

    def reset(self) -> None:
        if self.spaced:
            _take_turn_script().registered_client.delete(self._key)
        else:
            _strategy().clear(self.item, "crm", self.name)
