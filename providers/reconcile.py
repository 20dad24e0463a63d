"""The reconciler: read each CRM's changes since a compound cursor, through the same apply path.

A small lookback window is re-read every run (records sharing the last timestamp, late commits);
the idempotent apply path absorbs the overlap.
"""

import logging
from collections import Counter
from datetime import timedelta

from django.conf import settings

from providers.inbound import change_apply
from providers.models import SyncCursor
from providers.registry import get_provider

logger = logging.getLogger(__name__)


def reconcile(*, provider_name: str, limit: int | None = None) -> Counter:
    """Apply every change after the stored cursor; returns outcome counts."""
    provider = get_provider(provider_name)
    cursor, _ = SyncCursor.objects.get_or_create(provider=provider_name)
    since = cursor.modstamp - timedelta(seconds=settings.RECONCILE_LOOKBACK_SECONDS) if cursor.modstamp else None
    counts: Counter = Counter()
    for change in provider.changes_since(modstamp=since, last_id=""):
        # The repair path trusts the echo ledger, not the last writer: a record last touched by
        # us may still carry a person's earlier edit to another field.
        change.from_integration = False
        counts[change_apply(provider=provider_name, change=change)] += 1
        if change.occurred_at and (cursor.modstamp is None or change.occurred_at >= cursor.modstamp):
            cursor.modstamp, cursor.last_id = change.occurred_at, change.external_id
        if limit and sum(counts.values()) >= limit:
            break
    cursor.save()
    if counts:
        logger.info("reconciled", extra={"provider": provider_name, "outcomes": dict(counts)})
    return counts
