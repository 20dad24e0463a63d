"""Handing work to the Celery workers, by task name.

The engine never imports its task modules (they are entry points above it, and import the engine):
it sends tasks by their registered names, so imports point one way. Every send is after commit and
never raises: a message the broker did not take is found again by the sweepers, since PostgreSQL
holds every pending change and inbox event.
"""

import logging
from typing import Any

from celery import current_app
from django.core.cache import cache

from syncroot.queues import BROKER_ERRORS

logger = logging.getLogger(__name__)

DRAIN = "providers.tasks.drain_provider"
RETRY = "providers.tasks.retry_provider"
PROCESS_EVENTS = "webhooks.tasks.process_events"
RECONCILE = "providers.tasks.reconcile_provider"
FIELD_BACKFILL = "providers.tasks.field_backfill"
CONNECTION_BACKFILL = "providers.tasks.backfill_connection"


def task_send(name: str, *, args: list[Any], **options: Any) -> None:
    """Publish one task; raises the broker's error (callers decide how loud a failure is)."""
    current_app.send_task(name, args=args, **options)


def _scheduled_key(provider: str) -> str:
    return f"outbox:drain-scheduled:{provider}"


def enqueue_drain(*, providers: list[str]) -> None:
    """Ask the forwarder to drain these providers, at most one waiting task per provider.

    Called after commit. When the broker is down the rows stay pending and the sweeper enqueues
    them later, so a failure here is logged, never raised.
    """
    for provider in providers:
        try:
            # A drain task clears the flag when it starts, so a later change always gets its own.
            if cache.add(_scheduled_key(provider), 1, timeout=60):
                task_send(DRAIN, args=[provider])
        except BROKER_ERRORS as exc:
            drain_flag_clear(provider=provider)
            logger.warning(
                "forwarder enqueue failed; the sweeper will retry", extra={"provider": provider, "error": str(exc)}
            )


def drain_flag_clear(*, provider: str) -> None:
    """Forget that a drain of `provider` is waiting (it started, or its message was lost)."""
    try:
        cache.delete(_scheduled_key(provider))
    except BROKER_ERRORS:
        pass


def send_field_backfill(*, mapping_id: int) -> None:
    """Start (or resume) one mapping's field backfill; a lost message is resumed by the sweeper."""
    try:
        task_send(FIELD_BACKFILL, args=[mapping_id])
    except BROKER_ERRORS as exc:
        logger.warning("field backfill enqueue failed; the sweeper will retry", extra={"mapping_id": mapping_id,
                                                                                      "error": str(exc)})  # fmt: skip


def send_connection_backfill(*, key: str, countdown: float | None = None) -> None:
    """Send every live contact to a new connection (the next share of them, from its checkpoint)."""
    try:
        task_send(CONNECTION_BACKFILL, args=[key], countdown=countdown)
    except BROKER_ERRORS as exc:
        logger.warning("connection backfill enqueue failed", extra={"provider": key, "error": str(exc)})
