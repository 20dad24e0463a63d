"""The inbox: store verified CRM events once, process each through the shared apply path."""

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from contacts.models import SYNCED_FIELDS
from providers.base import InboundChange, ProviderError
from providers.base import WebhookEvent as ParsedEvent
from providers.inbound import ECHO, change_apply, is_linked
from providers.registry import get_provider
from webhooks.models import EventStatus, WebhookEvent

logger = logging.getLogger(__name__)


def inbox_store(*, provider: str, events: list[ParsedEvent]) -> list[int]:
    """Insert events (redeliveries are no-ops) and enqueue the new ones after commit. Returns new ids."""
    if not events:
        return []
    with transaction.atomic():
        rows = WebhookEvent.objects.bulk_create(
            [WebhookEvent(provider=provider, event_id=e.event_id[:128], payload=_storable(e.payload)) for e in events],
            ignore_conflicts=True,
        )
        # ignore_conflicts leaves pk unset, so read back which of these ids are still unprocessed.
        fresh = list(
            WebhookEvent.objects.filter(
                provider=provider, event_id__in=[r.event_id for r in rows], status=EventStatus.RECEIVED, attempts=0
            ).values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: inbox_enqueue(provider=provider, event_ids=fresh), robust=True)
    return fresh


def _storable(payload: dict) -> dict:
    """PostgreSQL's JSON cannot hold NUL characters; one in a CRM value must not lose the delivery."""
    raw = json.dumps(payload)
    return json.loads(raw.replace("\\u0000", "")) if "\\u0000" in raw else payload


def inbox_enqueue(*, provider: str, event_ids: list[int]) -> None:
    """One task per delivery: publishing a message per event would cost the CRM's ack ~1 ms each."""
    from providers.outbox import BROKER_ERRORS
    from webhooks.tasks import process_events

    if not event_ids:
        return
    try:
        process_events.apply_async(args=[event_ids], queue=get_provider(provider).webhook_queue)
    except BROKER_ERRORS as exc:  # stored already: the sweeper enqueues them later
        logger.warning("inbox enqueue failed", extra={"provider": provider, "error": str(exc)})


def events_process(*, event_ids: list[int]) -> None:
    """Apply each event; a CRM that cannot be read just now fails the task after the others ran."""
    event_ids = _drop_echoes(event_ids)
    unavailable: ProviderError | None = None
    for event_id in event_ids:
        try:
            event_process(event_id=event_id)
        except ProviderError as exc:
            unavailable = exc
        except Exception:  # recorded on the event as failed; the others still go through
            logger.exception("inbox event failed", extra={"event_pk": event_id})
    if unavailable is not None:
        raise unavailable


def _drop_echoes(event_ids: list[int]) -> list[int]:
    """Record the events that only echo our own writes in one UPDATE; returns the others.

    Every contact we write comes back as several events (HubSpot: a creation and a property change
    per field), so handling them one transaction each cost more than the writes themselves.
    """
    echoes, rest = [], []
    for pk, provider, payload in WebhookEvent.objects.filter(pk__in=event_ids, status=EventStatus.RECEIVED).values_list(
        "pk", "provider", "payload"
    ):
        try:
            echo = bool((change := get_provider(provider).webhook_change(payload)) and change.from_integration)
        except Exception:  # event_process records what is wrong with it
            echo = False
        (echoes if echo else rest).append(pk)
    if echoes:
        WebhookEvent.objects.filter(pk__in=echoes, status=EventStatus.RECEIVED).update(
            status=EventStatus.IGNORED, outcome=ECHO, attempts=F("attempts") + 1, processed_at=timezone.now()
        )
    others = set(rest)
    return [pk for pk in event_ids if pk in others]


def event_process(*, event_id: int) -> str | None:
    """Apply one inbox event. Idempotent: a processed event is not applied twice."""
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update(skip_locked=True).filter(pk=event_id).first()
        if event is None or event.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
            return None
        event.attempts += 1
        event.save(update_fields=["attempts"])
    provider = get_provider(event.provider)
    try:
        change = provider.webhook_change(event.payload)
        if change is not None and not change.from_integration and _needs_read(event.provider, change):
            change = _complete(provider, change)
        outcome = (
            "ignored: not a synced object" if change is None else change_apply(provider=event.provider, change=change)
        )
    except ProviderError as exc:
        # The CRM could not be read just now: leave it received, the sweeper retries it.
        WebhookEvent.objects.filter(pk=event.pk).update(error=str(exc)[:2000])
        raise
    except Exception as exc:
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=EventStatus.FAILED, error=f"{exc.__class__.__name__}: {exc}"[:2000]
        )
        raise
    logger.info(
        "inbox event processed",
        extra={"provider": event.provider, "event_id": event.event_id, "outcome": outcome,
               "external_id": change.external_id if change else None},
    )  # fmt: skip
    status = EventStatus.PROCESSED if outcome in ("applied", "created", "deleted") else EventStatus.IGNORED
    WebhookEvent.objects.filter(pk=event.pk).update(
        status=status, outcome=outcome, error="", processed_at=timezone.now()
    )
    return outcome


def _needs_read(provider: str, change: InboundChange) -> bool:
    """A change without values, or a partial one about a record we do not know yet (a contact
    is only ever created from the CRM's whole record)."""
    if not change.complete:
        return True
    partial = not change.deleted and not set(SYNCED_FIELDS) <= set(change.values)
    return partial and not is_linked(provider=provider, external_id=change.external_id)


def _complete(provider, change: InboundChange) -> InboundChange:
    """Events that carry no values (a creation) are completed with the record's current state."""
    logger.info("inbox event needs a read", extra={"provider": provider.name, "external_id": change.external_id})
    fetched = provider.fetch([change.external_id])
    if not fetched:
        return InboundChange(external_id=change.external_id, deleted=True, occurred_at=change.occurred_at)
    current = fetched[0]
    if change.occurred_at and (current.occurred_at is None or current.occurred_at < change.occurred_at):
        current.occurred_at = change.occurred_at
    current.from_integration = False
    return current


def event_reprocess(*, event_id: int) -> None:
    """Admin action: run an event through the apply path again."""
    WebhookEvent.objects.filter(pk=event_id).update(status=EventStatus.RECEIVED, error="", attempts=0)
    event = WebhookEvent.objects.get(pk=event_id)
    transaction.on_commit(lambda: inbox_enqueue(provider=event.provider, event_ids=[event.pk]), robust=True)


def inbox_sweep() -> int:
    """Re-enqueue events stuck in `received` (their message was lost). Returns how many."""
    stale = timezone.now() - timedelta(seconds=settings.OUTBOX_SWEEP_AFTER_SECONDS)
    by_provider: dict[str, list[int]] = {}
    for pk, provider in WebhookEvent.objects.filter(status=EventStatus.RECEIVED, received_at__lte=stale).values_list(
        "pk", "provider"
    )[:5000]:
        by_provider.setdefault(provider, []).append(pk)
    for provider, ids in by_provider.items():
        for start in range(0, len(ids), 100):
            inbox_enqueue(provider=provider, event_ids=ids[start : start + 100])
    return sum(map(len, by_provider.values()))
