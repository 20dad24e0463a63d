"""Rate-limit helpers: a rolling window per key and a daily quota per key."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["DailyQuota", "LimitResult", "RollingWindowLimiter"]


@dataclass(frozen=True, slots=True)
class LimitResult:
    """Outcome of one hit: ``allowed``; ``limit`` and ``remaining`` for headers;
    ``retry_after_s`` (whole seconds, ≥ 1) when refused."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int = 0


class RollingWindowLimiter:
    """At most ``max_requests`` hits per key within any ``interval_s`` window.

    Refused hits are not recorded, so a client that backs off recovers as soon
    as the oldest hit leaves the window. ``max_requests=None`` disables it.
    """

    def __init__(
        self, max_requests: int | None, interval_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_requests = max_requests
        self.interval_s = interval_s
        self.clock = clock  # injectable, so tests move time instead of sleeping through a window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, int] | None) -> RollingWindowLimiter:
        """Build from a ``{"max": N, "interval_ms": M}`` config value (None: unlimited)."""
        if not config:
            return cls(None, 10.0)
        return cls(config["max"], config["interval_ms"] / 1000.0)

    @property
    def enabled(self) -> bool:
        return self.max_requests is not None

    @property
    def interval_ms(self) -> int:
        return int(self.interval_s * 1000)

    def hit(self, key: str) -> LimitResult:
        """Record one request for ``key`` if the window allows it."""
        limit = self.max_requests
        if limit is None:
            return LimitResult(True, 0, 0)
        now = self.clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            horizon = now - self.interval_s
            while hits and hits[0] <= horizon:
                hits.popleft()
            if len(hits) >= limit:
                wait = hits[0] + self.interval_s - now
                return LimitResult(False, limit, 0, max(1, math.ceil(wait)))
            hits.append(now)
            return LimitResult(True, limit, limit - len(hits))


class DailyQuota:
    """A per-key request count that resets at midnight UTC (Salesforce/HubSpot daily limits).

    ``limit=None`` counts without refusing. ``hit`` returns the state after the
    call; a refused call is not counted.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._day = self._today()
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _today() -> int:
        return int(time.time() // 86_400)  # the UTC day number: cheap on the hot path

    def hit(self, key: str) -> LimitResult:
        with self._lock:
            today = self._today()
            if today != self._day:
                self._day, self._used = today, {}
            used = self._used.get(key, 0)
            if self.limit is not None and used >= self.limit:
                return LimitResult(False, self.limit, 0, self._seconds_to_midnight())
            used += 1
            self._used[key] = used
            limit = self.limit if self.limit is not None else 0
            return LimitResult(True, limit, max(0, limit - used))

    def used(self, key: str) -> int:
        with self._lock:
            return self._used.get(key, 0)

    @staticmethod
    def _seconds_to_midnight() -> int:
        return max(1, math.ceil(86_400 - time.time() % 86_400))
