"""Counters written by whichever process does the work, read by `/metrics` (syncroot/metrics.py).

CRM calls happen in the Celery workers: other processes, often other containers, than the API that
serves the metrics page. Each call therefore adds to a Redis hash (HINCRBY, one pipelined round
trip) and a scrape reads the hashes back. prometheus_client's multiprocess mode was the
alternative; it needs one directory shared by every process, which containers and pods do not
have. The counters live as long as Redis keeps them; Prometheus' rate() absorbs a reset.

Core: imports no app, so the CRM adapters (whose calls it counts) and the engine can use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import Protocol

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

# The vocabulary of SyncAttempt.outcome, so counters and the audit trail speak alike.
OUTCOMES = {"ratelimited": "rate_limited", "authexpired": "auth", "providererror": "error"}
REDIS_BACKOFF_SECONDS = 10.0  # after a Redis failure, stop counting for a while instead of stalling calls
COUNTER_TTL_SECONDS = 7 * 24 * 3600


def counter_key(name: str) -> str:
    # The cache prefix keeps deployments sharing a Redis, and test runs, apart.
    return f"{settings.CACHES['default'].get('KEY_PREFIX', 'syncroot')}:metrics:{name}"


@cache
def counters_redis(url: str) -> redis.Redis:
    # Short timeouts: a metric is never worth slowing a CRM call down.
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


_redis_down_until = 0.0


def _outcome_name(outcome: str) -> str:
    outcome = outcome.lower()
    return OUTCOMES.get(outcome, outcome)


def crm_call_record(*, provider: str, operation: str, outcome: str, status: int | None, seconds: float) -> None:
    """Count one CRM call in Redis. Never raises: a metric must not break a sync."""
    global _redis_down_until
    if time.monotonic() < _redis_down_until:
        return
    outcome = _outcome_name(outcome)
    field = f"{provider}|{operation}|{outcome}"
    try:
        pipe = counters_redis(settings.REDIS_URL).pipeline(transaction=False)
        pipe.hincrby(counter_key("crm_requests"), field, 1)
        pipe.hincrbyfloat(counter_key("crm_request_seconds"), f"{provider}|{operation}", max(seconds, 0.0))
        if outcome == "rate_limited" or status == 429:
            pipe.hincrby(counter_key("crm_rate_limited"), provider, 1)
            pipe.hset(counter_key("crm_rate_limited_at"), provider, int(time.time()))
        for name in ("crm_requests", "crm_request_seconds", "crm_rate_limited", "crm_rate_limited_at"):
            # Forgotten only after a quiet week (Prometheus reads that as a counter reset), so the
            # hashes of a deployment or test run that is gone do not stay in Redis for ever.
            pipe.expire(counter_key(name), COUNTER_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        _redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
        logger.warning("CRM call not counted: Redis unavailable", extra={"provider": provider, "error": str(exc)})


def retention_pruned_record(*, kind: str, rows: int) -> None:
    """Count rows pruned by retention (providers.retention), in Redis like the CRM calls: the
    beat task runs in a worker, not in the API that serves the page. Never raises."""
    try:
        pipe = counters_redis(settings.REDIS_URL).pipeline(transaction=False)
        pipe.hincrby(counter_key("retention_pruned"), kind, rows)
        pipe.expire(counter_key("retention_pruned"), COUNTER_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("pruned rows not counted: Redis unavailable", extra={"kind": kind, "error": str(exc)})


def api_budget_record(*, connection: str, budgets: Iterable[BudgetReading]) -> None:
    """Keep the latest API budget a CRM reported (its rate-limit headers), per connection and
    window, in one Redis hash: gauges, so the newest answer wins. Never raises."""
    global _redis_down_until
    fields: dict[str, int] = {}
    for budget in budgets:
        fields[f"{connection}|{budget.window}|used"] = budget.used
        fields[f"{connection}|{budget.window}|limit"] = budget.limit
    if not fields or time.monotonic() < _redis_down_until:
        return
    try:
        pipe = counters_redis(settings.REDIS_URL).pipeline(transaction=False)
        pipe.hset(counter_key("api_budget"), mapping=fields)
        pipe.expire(counter_key("api_budget"), COUNTER_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        _redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
        logger.warning("API budget not recorded: Redis unavailable", extra={"provider": connection, "error": str(exc)})


def api_budgets() -> dict[tuple[str, str], dict[str, int]]:
    """{(connection, window): {"used": n, "limit": m}} as last reported. Raises RedisError."""
    raw = counters_redis(settings.REDIS_URL).hgetall(counter_key("api_budget"))
    budgets: dict[tuple[str, str], dict[str, int]] = {}
    for field, value in raw.items():
        connection, window, kind = field.decode().rsplit("|", 2)
        budgets.setdefault((connection, window), {})[kind] = int(value)
    return budgets


class BudgetReading(Protocol):
    """One window of a CRM's reported budget (crm.http.Budget)."""

    window: str
    used: int
    limit: int


# --- the sync health page's figures (providers/health.py reads them) ----------------------------
# Per CRM and UTC hour, one hash: `w:<minute>` counts the writes that reached the CRM in that minute,
# `l:<minute>:<bucket>` how many of them waited up to LAG_BUCKETS[bucket] seconds since the change.
# A histogram per minute gives p50/p95 over any window without keeping one sample per write.
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, float("inf"))
HEALTH_TTL_SECONDS = 26 * 3600


def _hour_key(provider: str, at: float) -> str:
    return counter_key(f"sync_writes:{provider}:{time.strftime('%Y%m%d%H', time.gmtime(at))}")


def lag_bucket(seconds: float) -> int:
    return next(i for i, bound in enumerate(LAG_BUCKETS) if seconds <= bound)


def sync_writes_record(*, provider: str, lags: list[float], now: float | None = None) -> None:
    """Count writes that reached a CRM now, each with its lag (change to CRM write). Never raises."""
    if not lags:
        return
    at = time.time() if now is None else now
    minute = time.gmtime(at).tm_min
    key = _hour_key(provider, at)
    try:
        pipe = counters_redis(settings.REDIS_URL).pipeline(transaction=False)
        pipe.hincrby(key, f"w:{minute}", len(lags))
        buckets: dict[int, int] = {}
        for lag in lags:
            buckets[lag_bucket(max(lag, 0.0))] = buckets.get(lag_bucket(max(lag, 0.0)), 0) + 1
        for bucket, count in buckets.items():
            pipe.hincrby(key, f"l:{minute}:{bucket}", count)
        pipe.expire(key, HEALTH_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("sync writes not counted: Redis unavailable", extra={"provider": provider, "error": str(exc)})


def sync_writes_read(*, provider: str, now: float | None = None, hours: int = 24) -> list[dict[str, int]]:
    """The last `hours` × 60 minutes, oldest first: per minute `{"w": writes, "<bucket>": count…}`.
    Redis down: an empty list (the page says so rather than fail)."""
    at = time.time() if now is None else now
    start = int(at // 60) * 60 - (hours * 60 - 1) * 60
    hour_starts = sorted({int(m // 3600) * 3600 for m in range(start, int(at) + 1, 60)})
    try:
        pipe = counters_redis(settings.REDIS_URL).pipeline(transaction=False)
        for hour in hour_starts:
            pipe.hgetall(_hour_key(provider, hour))
        hashes = dict(zip(hour_starts, pipe.execute(), strict=True))
    except redis.RedisError:
        return []
    by_minute: dict[int, dict[str, int]] = {}
    for hour, raw in hashes.items():
        for key, count in raw.items():
            kind, minute, *bucket = key.decode().split(":")
            row = by_minute.setdefault(hour + int(minute) * 60, {"w": 0})
            row["w" if kind == "w" else bucket[0]] = int(count)
    return [by_minute.get(minute_at) or {"w": 0} for minute_at in range(start, int(at // 60) * 60 + 1, 60)]


def crm_rate_limited_at() -> dict[str, float]:
    """When each CRM last answered 429 (unix seconds); empty when Redis is down."""
    try:
        raw = counters_redis(settings.REDIS_URL).hgetall(counter_key("crm_rate_limited_at"))
        return {name.decode(): float(at) for name, at in raw.items()}
    except redis.RedisError:
        return {}


class CallRecord(Protocol):
    """What `crm_response_hook` reads of a client's call record (crm.http.CallRecord)."""

    operation: str
    outcome: str
    status: int | None
    seconds: float
    budgets: tuple[BudgetReading, ...]


def crm_response_hook(provider: str) -> Callable[[CallRecord], None]:
    """The `on_response` hook for `provider`'s client (the registry hands it over in the config):
    one record per HTTP call, whichever CRM made it."""

    def hook(record: CallRecord) -> None:
        crm_call_record(
            provider=provider,
            operation=record.operation,
            outcome=record.outcome,
            status=record.status,
            seconds=record.seconds,
        )
        if record.budgets:
            api_budget_record(connection=provider, budgets=record.budgets)

    return hook
