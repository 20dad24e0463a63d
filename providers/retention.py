"""Retention: what SyncRoot no longer needs is pruned, in bounded batches, by a beat task.

Five kinds, each kept RETENTION_DAYS (0: kept for ever):
- `webhook_events`: inbox events processed or ignored (by when they were received). Events still
  `received` or `failed` wait for the sweeper or an operator, however old.
- `sync_attempts`: the audit trail of CRM calls.
- `dead_letters`: dead letters resolved (retried or discarded) that long ago; parked ones stay.
- `field_changes`: the change log of each field's values (providers/provenance.py), but each
  field's latest change, which says where its current value came from.
- `tombstones`: deleted contacts, once every CRM has the delete (all their links `deleted`, or
  none at all), deleted that long ago; their links, attempts and dead letters go with them.

Each batch is one short transaction deleting at most BATCH_SIZE rows found through an index,
never one large DELETE holding locks on a busy table; a run stops after RUN_SECONDS and the next
one carries on. Expired Idempotency-Keys are pruned by contacts.services.idempotency_keys_expire.
"""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Min, OuterRef, QuerySet
from django.utils import timezone

from contacts.models import Contact
from providers.models import DeadLetter, DeadLetterStatus, LinkStatus, ProviderLink, SyncAttempt
from providers.provenance import superseded_changes
from syncroot.counters import retention_pruned_record
from webhooks.models import EventStatus, WebhookEvent

logger = logging.getLogger(__name__)

KINDS = ("webhook_events", "sync_attempts", "dead_letters", "field_changes", "tombstones")
BATCH_SIZE = 1000
TOMBSTONE_BATCH_SIZE = 200  # each one takes its links, attempts and dead letters along
RUN_SECONDS = 60.0  # well inside the task's soft time limit

_DONE_EVENTS = (EventStatus.PROCESSED, EventStatus.IGNORED)
_RESOLVED = (DeadLetterStatus.RETRIED, DeadLetterStatus.DISCARDED)


def _events(cutoff: datetime) -> QuerySet:
    return WebhookEvent.objects.filter(status__in=_DONE_EVENTS, received_at__lt=cutoff).order_by("received_at")


def _attempts(cutoff: datetime) -> QuerySet:
    return SyncAttempt.objects.filter(created_at__lt=cutoff).order_by("created_at")


def _dead_letters(cutoff: datetime) -> QuerySet:
    return DeadLetter.objects.filter(status__in=_RESOLVED, resolved_at__lt=cutoff).order_by("resolved_at")


def _tombstones(cutoff: datetime) -> QuerySet:
    undelivered = ProviderLink.objects.filter(contact=OuterRef("pk")).exclude(status=LinkStatus.DELETED)
    return Contact.objects.filter(deleted_at__lt=cutoff).filter(~Exists(undelivered)).order_by("deleted_at")


_PRUNABLE: dict[str, Callable[[datetime], QuerySet]] = {
    "webhook_events": _events,
    "sync_attempts": _attempts,
    "dead_letters": _dead_letters,
    "field_changes": superseded_changes,
    "tombstones": _tombstones,
}


def retention_prune(*, now: datetime | None = None, run_seconds: float = RUN_SECONDS) -> dict[str, int]:
    """Delete, batch by batch, what is older than RETENTION_DAYS. Returns the rows pruned per kind
    (a tombstone counts as one row, whatever went with it)."""
    pruned = dict.fromkeys(KINDS, 0)
    if settings.RETENTION_DAYS <= 0:
        return pruned
    cutoff = (now or timezone.now()) - timedelta(days=settings.RETENTION_DAYS)
    deadline = time.monotonic() + run_seconds
    for kind, prunable in _PRUNABLE.items():
        batch_size = TOMBSTONE_BATCH_SIZE if kind == "tombstones" else BATCH_SIZE
        while time.monotonic() < deadline:
            deleted = _prune_batch(prunable(cutoff), batch_size)
            pruned[kind] += deleted
            if deleted:
                retention_pruned_record(kind=kind, rows=deleted)
            if deleted < batch_size:
                break
    logger.info("retention pruned", extra={"pruned": pruned, "cutoff": cutoff.isoformat()})
    return pruned


def _prune_batch(prunable: QuerySet, batch_size: int) -> int:
    """One short transaction: lock up to `batch_size` prunable rows (skipping rows another
    transaction holds, e.g. a contact being written), and delete exactly those."""
    with transaction.atomic():
        ids = list(prunable.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[:batch_size])
        if not ids:
            return 0
        prunable.model.objects.filter(pk__in=ids).delete()
    return len(ids)


def retention_oldest() -> dict[str, datetime | None]:
    """Per kind, when the oldest row that retention would prune in time was written (None: none).
    Each is one MIN served by an index, cheap enough for every scrape."""
    aggregate = {
        "webhook_events": WebhookEvent.objects.filter(status__in=_DONE_EVENTS).aggregate(t=Min("received_at")),
        "sync_attempts": SyncAttempt.objects.aggregate(t=Min("created_at")),
        "dead_letters": DeadLetter.objects.filter(status__in=_RESOLVED).aggregate(t=Min("resolved_at")),
        "tombstones": Contact.objects.filter(deleted_at__isnull=False).aggregate(t=Min("deleted_at")),
    }
    return {kind: row["t"] for kind, row in aggregate.items()}
