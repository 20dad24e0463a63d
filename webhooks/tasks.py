"""Webhook handler task: one per event, on the provider's own queue (webhooks.<provider>)."""

from celery import shared_task

from providers.base import Transient
from webhooks import services


@shared_task(
    name="webhooks.tasks.process_event",
    acks_late=True,
    autoretry_for=(Transient,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
)
def process_event(event_id: int) -> None:
    services.event_process(event_id=event_id)
