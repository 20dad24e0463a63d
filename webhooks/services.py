"""The inbox: store verified CRM events once, process each through the shared apply path."""

import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import F, Q
from django.utils import timezone

from contacts.models import SYNCED_FIELDS
from crm.base import AuthExpired, InboundChange, Provider, ProviderError, RateLimited
from crm.base import WebhookEvent as ParsedEvent
from crm.registry import connection_for_account, get_provider
from providers import dispatch
from providers.backoff import retry_delay
from providers.crm_state import crm_mark_auth_failed
from providers.inbound import ECHO, is_linked
from providers.lifecycle import outcome_processed, record_change_apply
from providers.mappings import mappings_pinned
from syncroot.queues import BROKER_ERRORS
from webhooks.models import EventStatus, WebhookEvent

logger = logging.getLogger(__name__)


def inbox_route(*, crm: Provider, events: list[ParsedEvent]) -> dict[str, list[ParsedEvent]]:
    """Each event to the connection of the account it comes from: one app's webhook URL receives
    the events of every portal that installed it (HubSpot names the portal in each event).

    An event naming no account stays with the URL's connection; so does one of an account no
    other connection holds when the URL's connection's account is not known (configured without
    it). An event of an account no connection syncs is dropped (logged): it could only fail to apply.
    """
    routed: dict[str, list[ParsedEvent]] = {}
    own = crm.connected_account
    for event in events:
        account = crm.webhook_account(event.payload) if isinstance(event.payload, dict) else None
        key: str | None = crm.name
        if account is not None and not crm.same_account(own, account):
            key = connection_for_account(kind=crm.kind, account=account) or (None if own else crm.name)
        if key is None:
            logger.warning(
                "webhook event of an account not connected dropped",
                extra={"provider": crm.name, "account": account, "event_id": event.event_id},
            )
            continue
        routed.setdefault(key, []).append(event)
    return routed


def inbox_store(*, provider: str, events: list[ParsedEvent]) -> list[int]:
    """Insert events (redeliveries are no-ops) and enqueue the new ones after commit. Returns the
    new rows' ids, in delivery order.

    One `INSERT … ON CONFLICT DO NOTHING RETURNING id`: it returns exactly the rows this call
    stored, so an event already in the inbox (a redelivery, or a concurrent copy of the same
    delivery, which waits on the unique index until the first commits) is neither stored nor
    enqueued again. An event whose message was lost is re-enqueued by `inbox_sweep`, not by a
    redelivery.
    """
    if not events:
        return []
    # PostgreSQL's text and JSON cannot hold NUL characters: one sent by a CRM is dropped rather
    # than losing the delivery (or failing it on every redelivery).
    payloads = json.dumps([e.payload for e in events])
    if "\\u0000" in payloads:
        payloads = json.dumps(_without_nul([e.payload for e in events]))
    event_ids = [e.event_id.replace("\x00", "")[:128] for e in events]
    position = {event_id: n for n, event_id in reversed(list(enumerate(event_ids)))}  # first occurrence
    using = router.db_for_write(WebhookEvent)
    # atomic(): a caller's own transaction survives a delivery PostgreSQL refuses (a savepoint).
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        now = timezone.now()
        cursor.execute(_INSERT, [provider, now, now, event_ids, payloads])
        fresh = [pk for pk, event_id in sorted(cursor.fetchall(), key=lambda row: position[row[1]])]
        if fresh:
            transaction.on_commit(lambda: inbox_enqueue(provider=provider, event_ids=fresh), using=using, robust=True)
    return fresh


# The payloads travel as one JSON array that PostgreSQL splits: serialising and quoting each event
# on its own took 2.5 times the CPU on the ack path. Status, outcome, error and attempts are the
# model's defaults, which live in Django, not in the table. `enqueued_at` is set here, in the same
# INSERT, rather than by an UPDATE after the enqueue: the ack path stays one statement.
_INSERT = f"""
    INSERT INTO {WebhookEvent._meta.db_table}
        (provider, received_at, enqueued_at, event_id, payload, status, outcome, error, attempts)
    SELECT %s, %s, %s, e.event_id, p.payload, '{EventStatus.RECEIVED.value}', '', '', 0
    FROM unnest(%s::text[]) WITH ORDINALITY AS e (event_id, n)
    JOIN jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS p (payload, n) USING (n)
    ON CONFLICT (provider, event_id) DO NOTHING
    RETURNING id, event_id
"""


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def inbox_enqueue(*, provider: str, event_ids: list[int]) -> None:
    """One task per delivery: publishing a message per event would cost the CRM's ack ~1 ms each."""
    if not event_ids:
        return
    try:
        dispatch.task_send(
            dispatch.PROCESS_EVENTS,
            args=[event_ids],
            queue=get_provider(provider).webhook_queue,
            # Celery's own argsrepr walks the list in Python: 15 times the cost of repr() on the ack path.
            argsrepr=repr([event_ids])[:1024],
        )
    except BROKER_ERRORS as exc:  # stored already: the sweeper enqueues them later
        logger.warning("inbox enqueue failed", extra={"provider": provider, "error": str(exc)})


def events_process(*, event_ids: list[int]) -> None:
    """Apply a delivery's events in order; each one that fails is recorded on it and retried later
    by the sweeper (see `event_process`), so one failing event never stops the others."""
    rest = _drop_echoes(event_ids)
    with mappings_pinned():  # one set of mappings for the delivery
        for event_id in rest:
            try:
                event_process(event_id=event_id)
            except Exception:  # recording the failure itself failed (the database): the sweeper retries
                logger.exception("inbox event not processed", extra={"event_pk": event_id})


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
    """Apply one inbox event, at most once even when two copies of it run at once.

    The CRM read that some events need (`_complete`, a network call) happens outside any
    transaction. Then one transaction locks the event row (waiting for a copy that holds it),
    checks it is still `received`, applies it and records the outcome: a second copy finds it done.
    A failure leaves it `received` with its error and a next attempt after a backoff; after
    WEBHOOK_EVENT_MAX_ATTEMPTS it is `failed`, for an operator to reprocess from the admin.
    Returns the outcome, or None when there was nothing (more) to do.
    """
    event = WebhookEvent.objects.filter(pk=event_id, status=EventStatus.RECEIVED).first()
    if event is None:
        return None
    try:
        provider = get_provider(event.provider)
        change = provider.webhook_change(event.payload)
        if change is not None and not change.from_integration and _needs_read(event.provider, change):
            change = _complete(provider, change)
        with transaction.atomic():
            locked = WebhookEvent.objects.select_for_update().filter(pk=event_id, status=EventStatus.RECEIVED)
            if not list(locked.values_list("pk", flat=True)):
                return None  # another copy applied it meanwhile
            if change is None:
                outcome = "ignored: not a synced object"
            else:
                outcome = record_change_apply(provider=event.provider, change=change)
            processed = outcome in ("applied", "created") or outcome_processed(outcome)
            status = EventStatus.PROCESSED if processed else EventStatus.IGNORED
            locked.update(
                status=status, outcome=outcome, error="", attempts=F("attempts") + 1, processed_at=timezone.now(),
                next_attempt_at=None,
            )  # fmt: skip
    except Exception as exc:
        _attempt_failed(event_id=event_id, error=exc)
        return None
    logger.info(
        "inbox event processed",
        extra={"provider": event.provider, "event_id": event.event_id, "outcome": outcome,
               "external_id": change.external_id if change else None},
    )  # fmt: skip
    return outcome


def _attempt_failed(*, event_id: int, error: Exception) -> None:
    """Record a failed attempt: retried after a backoff, or `failed` once the attempts are spent.

    Every kind of failure counts but a busy CRM: one that cannot be read just now heals within the
    attempts' backoff, and a bug or a payload we cannot handle must not be retried for ever.
    """
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().filter(pk=event_id, status=EventStatus.RECEIVED).first()
        if event is None:
            return
        # A busy CRM (429, or a 503 naming when to come back) is not the event's fault: it waits
        # as asked without using up an attempt, as the forwarder's links do.
        busy = isinstance(error, RateLimited) or (
            isinstance(error, ProviderError) and error.status == 503 and getattr(error, "retry_after", None)
        )
        # Refused credentials are an outage of the connection (see providers.crm_state): the CRM
        # is paused and the event waits for the probe, its attempts untouched.
        refused = isinstance(error, AuthExpired)
        event.attempts += 0 if busy or refused else 1
        event.error = f"{error.__class__.__name__}: {error}"[:2000]
        event.enqueued_at = None  # off the broker: the sweeper hands it over again once due
        if event.attempts >= settings.WEBHOOK_EVENT_MAX_ATTEMPTS:
            event.status, event.next_attempt_at = EventStatus.FAILED, None
        else:
            delay = retry_delay(attempt=max(event.attempts, 1), retry_after=getattr(error, "retry_after", None))
            if refused:
                delay = settings.CRM_PROBE_INTERVAL_SECONDS
            event.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        event.save(update_fields=["attempts", "error", "enqueued_at", "status", "next_attempt_at"])
    if refused:
        crm_mark_auth_failed(provider=event.provider, error=str(error))
    extra = {"provider": event.provider, "event_id": event.event_id, "attempts": event.attempts,
             "status": event.status, "error": event.error}  # fmt: skip
    if isinstance(error, ProviderError):  # the CRM's answer: expected, no traceback needed
        logger.warning("inbox event attempt failed", extra=extra)
    else:
        logger.error("inbox event attempt failed", exc_info=error, extra=extra)


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
    # What the event said happened to the record, which its current state alone does not tell.
    current.absorbed, current.restored, current.erased = change.absorbed, change.restored, change.erased
    return current


def event_reprocess(*, event_id: int) -> None:
    """Admin action: run an event (a failed one, typically) through the apply path again, with its
    attempts and backoff reset."""
    WebhookEvent.objects.filter(pk=event_id).update(
        status=EventStatus.RECEIVED, error="", attempts=0, next_attempt_at=None, enqueued_at=timezone.now()
    )
    event = WebhookEvent.objects.get(pk=event_id)
    transaction.on_commit(lambda: inbox_enqueue(provider=event.provider, event_ids=[event.pk]), robust=True)


def inbox_sweep() -> int:
    """Re-enqueue the events whose message was lost or whose backoff is over. Returns how many.

    Due: `next_attempt_at` null or passed. Not queued recently: `enqueued_at` null (a failed
    attempt clears it) or older than OUTBOX_SWEEP_AFTER_SECONDS, so events still waiting on the
    broker are not enqueued again when the workers are behind. Each batch is claimed by one
    UPDATE … RETURNING that records `enqueued_at`, so two sweepers never enqueue the same event.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.OUTBOX_SWEEP_AFTER_SECONDS)
    due = (
        WebhookEvent.objects.filter(status=EventStatus.RECEIVED)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=stale))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("received_at")
    )
    by_provider: dict[str, list[int]] = {}
    for pk, provider in due.values_list("pk", "provider")[:5000]:
        by_provider.setdefault(provider, []).append(pk)
    swept = 0
    for provider, ids in by_provider.items():
        for start in range(0, len(ids), 100):
            with connections[router.db_for_write(WebhookEvent)].cursor() as cursor:
                cursor.execute(_CLAIM, [now, ids[start : start + 100], stale])
                claimed = sorted(pk for (pk,) in cursor.fetchall())
            if claimed:
                inbox_enqueue(provider=provider, event_ids=claimed)
                swept += len(claimed)
    return swept


_CLAIM = f"""
    UPDATE {WebhookEvent._meta.db_table} SET enqueued_at = %s
    WHERE id = ANY(%s) AND status = '{EventStatus.RECEIVED.value}'
      AND (enqueued_at IS NULL OR enqueued_at <= %s)
    RETURNING id
"""
