"""Sync bookkeeping: which contacts each CRM still has to receive."""

import logging
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from contacts.models import Contact
from providers.models import LinkStatus, ProviderLink
from providers.registry import connected_providers

logger = logging.getLogger(__name__)


def links_mark_pending(*, contact: Contact, exclude: Iterable[str] = ()) -> list[str]:
    """Mark the contact pending in every connected CRM (but `exclude`), inside the caller's transaction.

    Returns the providers marked. The forwarder is enqueued once the transaction commits.
    """
    providers = [name for name in connected_providers() if name not in set(exclude)]
    if not providers:
        return []
    now = timezone.now()
    ProviderLink.objects.bulk_create(
        [
            ProviderLink(contact=contact, provider=name, status=LinkStatus.PENDING, pending_since=now)
            for name in providers
        ],
        update_conflicts=True,
        unique_fields=("contact", "provider"),
        update_fields=("status", "pending_since"),
    )
    transaction.on_commit(lambda: enqueue_forward(contact_id=contact.pk))
    return providers


def enqueue_forward(*, contact_id: object) -> None:
    """Hand the contact to the forwarder; the outbox sweeper covers a broker that is down."""
    from providers.tasks import forward_contact

    try:
        forward_contact.delay(str(contact_id))
    except (KombuOperationalError, RedisError) as exc:
        logger.warning(
            "forwarder enqueue failed; the sweeper will retry", extra={"contact_id": str(contact_id), "error": str(exc)}
        )
