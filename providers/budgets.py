"""What the API budgets look like to people: per connection, SyncRoot's calls in the last 24 hours
against what each priority may use (crm/budget.py does the counting and the holding back)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from crm.budget import Priority, backfill_wait, budget_state
from crm.registry import connected_providers, get_provider
from providers.models import Connection


def connection_budget(*, connection: Connection) -> dict[str, Any] | None:
    """`{used, limit, share, allowed: {live, reconcile, backfill}, backfill_paused_until}`; None
    when Redis cannot say."""
    try:
        state = budget_state(
            connection=connection.key, budget_share=connection.budget_share, daily_limit=connection.daily_limit
        )
    except redis.RedisError:
        return None
    paused = state.backfills_resume_at
    return {
        "used": state.used,
        "limit": state.limit,
        "share": state.share,
        "allowed": {priority.name.lower(): state.allowed(priority) for priority in Priority},
        "backfill_paused_until": None if paused is None else datetime.fromtimestamp(paused, UTC),
    }


def backfills_held() -> dict[str, datetime]:
    """Connections whose backfill links wait for the API budget, with when it frees up."""
    now = timezone.now()
    held = {}
    for key in connected_providers():
        wait = backfill_wait(get_provider(key).config)
        if wait is not None:
            held[key] = now + timedelta(seconds=wait)
    return held


# The API shows each contact's sync state: read once per process every API_CRM_STATE_CACHE_SECONDS,
# as the paused connections are (providers.crm_state.crm_paused_for_display).
_held_cache: list = []  # [(valid until, held)] while valid


def backfills_held_for_display() -> dict[str, datetime]:
    ttl = settings.API_CRM_STATE_CACHE_SECONDS
    now = time.monotonic()
    if _held_cache and _held_cache[0][0] > now:
        return dict(_held_cache[0][1])
    held = backfills_held()
    _held_cache[:] = [(now + ttl, held)] if ttl > 0 else []
    return dict(held)
