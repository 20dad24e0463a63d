"""Sync bookkeeping: which contacts each CRM still has to receive."""

import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from contacts.models import Contact
from crm.registry import connected_providers
from providers import dispatch
from providers.models import LinkStatus, ProviderLink

logger = logging.getLogger(__name__)


def links_mark_pending(*, contact: Contact, exclude: Iterable[str] = ()) -> list[str]:
    """Mark the contact pending in every connected CRM (but `exclude`), inside the caller's transaction.

    Returns the providers marked. The forwarder is enqueued once the transaction commits.
    """
    return links_mark_pending_many(contacts=[contact], exclude=exclude)


def links_mark_pending_many(
    *, contacts: list[Contact], exclude: Iterable[str] = (), backfill: bool = False
) -> list[str]:
    """`links_mark_pending` for many contacts: one INSERT … ON CONFLICT, one enqueue after commit.
    `backfill`: an import's, sent after the live changes (crm.budget); otherwise a live change."""
    excluded = set(exclude)
    providers = [name for name in connected_providers() if name not in excluded]
    if not providers or not contacts:
        return []
    now = timezone.now()
    ProviderLink.objects.bulk_create(
        [
            ProviderLink(
                contact=contact, provider=name, status=LinkStatus.PENDING, pending_since=now, backfill=backfill
            )  # fmt: skip
            for contact in contacts
            for name in providers
        ],
        update_conflicts=True,
        unique_fields=("contact", "provider"),
        update_fields=("status", "pending_since", "backfill"),
    )
    transaction.on_commit(lambda: enqueue_forward(providers=providers), robust=True)
    return providers


def enqueue_forward(*, providers: list[str]) -> None:
    """After commit: hand the providers to the forwarder (see dispatch.enqueue_drain)."""
    dispatch.enqueue_drain(providers=providers)


def contact_resync(*, contact: Contact) -> list[str]:
    """Queue the contact's current state for every connected CRM again (API `POST …/sync`)."""
    with transaction.atomic():
        return links_mark_pending(contact=contact)
