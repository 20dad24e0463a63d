"""The reconciler: read each CRM's changes since a compound cursor, through the same apply path.

A small lookback window is re-read every run (records sharing the last timestamp, late commits);
the idempotent apply path absorbs the overlap.

Each change is applied on its own: one that cannot be applied is logged with its traceback,
counted as `failed` and kept on the cursor (`last_error`, shown in the admin), and the run goes
on; the cursor moves past it so no later run stalls on it. The cursor is saved every
`CHECKPOINT_EVERY` changes, so a run that dies midway resumes near where it stopped. A failure that
is not about the record (the CRM or the database unreachable) ends the run with the cursor at
what was applied: the next run picks up from there. So does the run's time budget
(`RECONCILE_MAX_SECONDS`, below the task's soft time limit): a backlog of thousands of changes is
worked through over several runs, never cut off by the worker's time limit midway through a change
(which would count as that record's failure and step past it).
"""

import logging
import time
from collections import Counter
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from crm.base import AuthExpired, InboundChange, ProviderError
from crm.budget import Priority, call_priority
from crm.registry import get_provider
from providers.crm_state import crm_mark_auth_failed
from providers.lifecycle import record_change_apply
from providers.models import SyncCursor

logger = logging.getLogger(__name__)

FAILED = "failed"
CHECKPOINT_EVERY = 50  # changes between two saves of the cursor
_ERROR_LENGTH = 2000


def reconcile(*, provider_name: str, limit: int | None = None, clock=time.monotonic) -> Counter:
    """Apply every change after the stored cursor, for up to RECONCILE_MAX_SECONDS; returns outcome
    counts. Its calls come after live changes and stop at the reconciler's part of the API budget."""
    with call_priority(Priority.RECONCILE):
        return _reconcile(provider_name=provider_name, limit=limit, clock=clock)


def _reconcile(*, provider_name: str, limit: int | None, clock) -> Counter:
    provider = get_provider(provider_name)
    stop_at = clock() + settings.RECONCILE_MAX_SECONDS
    cursor, _ = SyncCursor.objects.get_or_create(provider=provider_name)
    since = cursor.modstamp - timedelta(seconds=settings.RECONCILE_LOOKBACK_SECONDS) if cursor.modstamp else None
    counts: Counter = Counter()
    try:
        for change in provider.changes_since(modstamp=since, last_id=""):
            counts[_apply_one(provider_name=provider_name, change=change, cursor=cursor)] += 1
            _advance(cursor, change)
            total = sum(counts.values())
            if total % CHECKPOINT_EVERY == 0:
                cursor.save()
            if (limit and total >= limit) or clock() >= stop_at:
                break
    except ProviderError as exc:
        # Reading the CRM failed: keep what was applied; the next run reads on from there.
        if isinstance(exc, AuthExpired):  # refused credentials: the CRM pauses until a probe succeeds
            version = provider.config.get("credentials_version")
            crm_mark_auth_failed(provider=provider_name, error=str(exc), credentials_version=version)
        logger.warning(
            "reconcile read failed", extra={"provider": provider_name, "error": str(exc), "outcomes": dict(counts)}
        )
    finally:
        cursor.save()
    if counts:
        logger.info("reconciled", extra={"provider": provider_name, "outcomes": dict(counts)})
    return counts


def _apply_one(*, provider_name: str, change: InboundChange, cursor: SyncCursor) -> str:
    # The repair path trusts the echo ledger, not the last writer: a record last touched by
    # us may still carry a person's earlier edit to another field.
    change.from_integration = False
    try:
        return record_change_apply(provider=provider_name, change=change)
    except (OperationalError, InterfaceError, SoftTimeLimitExceeded):
        raise  # the database or the worker's time limit, not the record: stop before the cursor passes it
    except Exception as exc:
        logger.exception(
            "reconcile change failed", extra={"provider": provider_name, "external_id": change.external_id}
        )
        cursor.failed_count += 1
        cursor.last_error = f"{change.external_id}: {exc.__class__.__name__}: {exc}"[:_ERROR_LENGTH]
        cursor.last_error_at = timezone.now()
        return FAILED


def _advance(cursor: SyncCursor, change: InboundChange) -> None:
    if change.occurred_at and (cursor.modstamp is None or change.occurred_at >= cursor.modstamp):
        cursor.modstamp, cursor.last_id = change.occurred_at, change.external_id
