"""Scheduling around the forwarder: enqueue on commit, retries, the sweeper, operator actions."""

import logging
import time
from contextlib import AbstractContextManager
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from crm.registry import connected_providers
from providers import dispatch
from providers.crm_state import crm_paused
from providers.models import DeadLetter, DeadLetterStatus, LinkStatus, ProviderLink
from providers.sync import drain, due_links, write_spacing
from syncroot.locks import advisory_lock
from syncroot.queues import BROKER_ERRORS

logger = logging.getLogger(__name__)


def schedule_retry(*, provider: str) -> None:
    """Make sure a retry task wakes up when the provider's soonest failed link is due.

    Each failed link has its own jittered next attempt; one task at the soonest is enough,
    because that task drains whatever is due and schedules the next one the same way.
    """
    soonest = (
        ProviderLink.objects.filter(provider=provider, status=LinkStatus.FAILED)
        .aggregate(soonest=Min("next_attempt_at"))
        .get("soonest")
    )
    if soonest is not None:
        # Countdowns stay below the broker's visibility timeout (the backoff cap is half of it).
        _wake_at(provider, soonest.timestamp(), kind="retry", task=dispatch.RETRY)


def _wake_at(provider: str, due_at: float, *, kind: str, task: str) -> None:
    """Send `task` for `provider` to run at `due_at`, unless one of this kind already does in time."""
    now = time.time()
    key = f"outbox:{kind}-at:{provider}"
    try:
        already = cache.get(key)
        if already is not None and now < already <= due_at + 0.05:
            return  # a task already wakes up in time
        cache.set(key, due_at, timeout=int(max(due_at - now, 0)) + 60)
        dispatch.task_send(task, args=[provider], countdown=max(due_at - now, 0.05))
    except BROKER_ERRORS as exc:
        logger.warning(
            f"{kind} scheduling failed; the sweeper will send it", extra={"provider": provider, "error": str(exc)}
        )


def _drain_lock(provider: str) -> AbstractContextManager[bool]:
    """One drain per CRM at a time, across processes: two would split the pending links between
    them and send two half-full batches where one full batch was possible."""
    return advisory_lock(f"syncroot:drain:{provider}")


def drain_until_idle(*, provider_name: str, max_batches: int = 1000) -> int:
    """Drain batch after batch until nothing is due; returns links claimed.

    When another process is draining this CRM, return at once: it looks for due links once more
    after letting go of the lock, so nothing committed meanwhile is left behind.
    """
    dispatch.drain_flag_clear(provider=provider_name)
    total = 0
    while True:
        with _drain_lock(provider_name) as held:
            if not held:
                return total
            for _ in range(max_batches):
                report = drain(provider_name=provider_name)
                total += report.claimed
                if report.paused:  # the CRM refuses our credentials: the probe resumes it
                    return total
                if report.claimed == 0:
                    break
        due = due_links(provider=provider_name)
        if report.budget_wait is not None:  # what is left are backfills waiting for the API budget
            due = due.filter(backfill=False)
        if not due.exists():
            break
    if report.budget_wait is not None:
        schedule_budget(provider=provider_name, wait=report.budget_wait)
    schedule_retry(provider=provider_name)
    schedule_held(provider=provider_name)
    return total


def schedule_held(*, provider: str) -> None:
    """Make sure a drain wakes up when the soonest link held by SYNC_WRITE_SPACING_MS is free.

    A contact edited again right after a write waits out the spacing (sync.due_links): its edits
    meanwhile go out together, in the next write, with the latest state.
    """
    spacing = write_spacing()
    if not spacing:
        return
    soonest = (
        ProviderLink.objects.filter(
            provider=provider, status=LinkStatus.PENDING, synced_at__gt=timezone.now() - spacing
        )
        .aggregate(soonest=Min("synced_at"))
        .get("soonest")
    )
    if soonest is not None:
        _wake_at(provider, (soonest + spacing).timestamp(), kind="held", task=dispatch.DRAIN)


def schedule_budget(*, provider: str, wait: float) -> None:
    """Backfill links wait for the API budget (crm.budget): a drain wakes up when it frees, or
    after as long as a delayed retry waits at most, to look again (the sweeper would too)."""
    wait = min(wait, settings.SYNC_BACKOFF_CAP_SECONDS)
    _wake_at(provider, time.time() + wait, kind="budget", task=dispatch.DRAIN)


def sweep() -> dict[str, int]:
    """Re-enqueue providers with links pending too long or retries overdue (lost messages)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.OUTBOX_SWEEP_AFTER_SECONDS)
    found: dict[str, int] = {}
    paused = crm_paused()
    for provider in connected_providers():
        if provider in paused:  # waits for the credential probe, not for a lost message
            continue
        overdue = ProviderLink.objects.filter(provider=provider).filter(
            status=LinkStatus.PENDING, pending_since__lte=stale
        ) | ProviderLink.objects.filter(provider=provider, status=LinkStatus.FAILED, next_attempt_at__lte=stale)
        count = overdue.count()
        if count:
            found[provider] = count
            dispatch.drain_flag_clear(provider=provider)
            dispatch.enqueue_drain(providers=[provider])
    if found:
        logger.info("outbox sweep re-enqueued", extra={"overdue": found})
    return found


@transaction.atomic
def dead_letter_retry(*, dead_letter_id: int) -> bool:
    """Operator action: send the contact's CURRENT state again. Returns False if not parked."""
    letter = DeadLetter.objects.select_for_update().filter(pk=dead_letter_id).first()
    if letter is None or letter.status != DeadLetterStatus.PARKED:
        return False
    letter.status, letter.resolved_at = DeadLetterStatus.RETRIED, timezone.now()
    letter.save(update_fields=["status", "resolved_at"])
    ProviderLink.objects.filter(pk=letter.link_id, status=LinkStatus.PARKED).update(
        status=LinkStatus.PENDING, attempts=0, next_attempt_at=None, pending_since=timezone.now()
    )
    transaction.on_commit(lambda: dispatch.enqueue_drain(providers=[letter.provider]), robust=True)
    return True


@transaction.atomic
def dead_letter_discard(*, dead_letter_id: int) -> bool:
    """Operator action: give up on this change; the link stays parked until the contact changes."""
    updated = DeadLetter.objects.filter(pk=dead_letter_id, status=DeadLetterStatus.PARKED).update(
        status=DeadLetterStatus.DISCARDED, resolved_at=timezone.now()
    )
    return bool(updated)


GROUP_BATCH = 1000  # rows per transaction of a bulk action: no long lock on a busy table


def dead_letters_retry_group(*, provider: str, error_code: str) -> int:
    """Operator action on a whole group (one CRM, one error code): retry every parked letter,
    sending each contact's current state. Batched; returns how many were queued."""
    retried = 0
    while ids := list(
        DeadLetter.objects.filter(provider=provider, error_code=error_code, status=DeadLetterStatus.PARKED)
        .order_by("pk")
        .values_list("pk", flat=True)[:GROUP_BATCH]
    ):
        with transaction.atomic():
            locked = dict(
                DeadLetter.objects.select_for_update()
                .filter(pk__in=ids, status=DeadLetterStatus.PARKED)
                .values_list("pk", "link_id")
            )
            now = timezone.now()
            retried += DeadLetter.objects.filter(pk__in=list(locked)).update(
                status=DeadLetterStatus.RETRIED, resolved_at=now
            )
            link_ids = list(locked.values())
            ProviderLink.objects.filter(pk__in=link_ids, status=LinkStatus.PARKED).update(
                status=LinkStatus.PENDING, attempts=0, next_attempt_at=None, pending_since=now
            )
    if retried:
        transaction.on_commit(lambda: dispatch.enqueue_drain(providers=[provider]), robust=True)
    logger.info("dead letters retried", extra={"provider": provider, "error_code": error_code, "count": retried})
    return retried


def dead_letters_discard_group(*, provider: str, error_code: str) -> int:
    """Operator action on a whole group: give up on every parked letter of it (their links stay
    parked until the contact changes). Batched; returns how many were discarded."""
    discarded = 0
    while ids := list(
        DeadLetter.objects.filter(provider=provider, error_code=error_code, status=DeadLetterStatus.PARKED)
        .order_by("pk")
        .values_list("pk", flat=True)[:GROUP_BATCH]
    ):
        discarded += DeadLetter.objects.filter(pk__in=ids, status=DeadLetterStatus.PARKED).update(
            status=DeadLetterStatus.DISCARDED, resolved_at=timezone.now()
        )
    logger.info("dead letters discarded", extra={"provider": provider, "error_code": error_code, "count": discarded})
    return discarded
