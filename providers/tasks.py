"""Celery tasks of the outbound flow: thin, idempotent, ids in, services do the work."""

from celery import shared_task

from providers import sync


@shared_task(name="providers.tasks.forward_contact")
def forward_contact(contact_id: str) -> None:
    sync.forward_contact(contact_id=contact_id)
