"""Retry delays: exponential with full jitter, capped; the CRM's Retry-After wins when longer."""

import random

from django.conf import settings


def retry_delay(*, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt number `attempt + 1` (attempt counts from 1)."""
    base = settings.SYNC_BACKOFF_BASE_SECONDS
    cap = settings.SYNC_BACKOFF_CAP_SECONDS
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return max(delay, 0.05)
