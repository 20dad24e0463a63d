"""What the API budgets look like to people: per connection, SyncRoot's calls in the last 24 hours
against what each priority may use (crm/budget.py does the counting and the holding back)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from crm.budget import Priority, budget_state
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
    paused = state.spent(Priority.BACKFILL) and state.resumes_at is not None
    return {
        "used": state.used,
        "limit": state.limit,
        "share": state.share,
        "allowed": {priority.name.lower(): state.allowed(priority) for priority in Priority},
        "backfill_paused_until": datetime.fromtimestamp(state.resumes_at, UTC) if paused else None,
    }
