"""Webhook handler task: one per delivery, on the provider's own queue (webhooks.<provider>).

No Celery retry: a failing event records its own next attempt (backoff, then `failed` after
WEBHOOK_EVENT_MAX_ATTEMPTS) and the sweeper hands it over again when due. A task retry on top
would retry the whole delivery, on a second clock, uncounted by the event's attempts. A lost
message (a worker killed mid-task, Redis restarted) is covered by acks_late and the sweeper.
"""

from celery import shared_task

from webhooks import services


@shared_task(name="webhooks.tasks.process_events", acks_late=True)
def process_events(event_ids: list[int]) -> None:
    """Apply a delivery's events in order; those already applied are skipped."""
    services.events_process(event_ids=event_ids)
