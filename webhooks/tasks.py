"""Webhook handler task: one per delivery, on the provider's own queue (webhooks.<provider>)."""

from celery import shared_task

from providers.base import Transient
from webhooks import services


@shared_task(
    name="webhooks.tasks.process_events",
    acks_late=True,
    autoretry_for=(Transient,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
)
def process_events(event_ids: list[int]) -> None:
    """Apply a delivery's events in order. A retry skips those already applied."""
    services.events_process(event_ids=event_ids)
