"""Reads of contacts."""

from datetime import datetime

from django.db.models import QuerySet
from django.db.models.functions import Lower

from contacts.models import Contact
from syncroot.errors import NotFound


def normalise_email(email: str) -> str:
    return email.strip().lower()


def contact_live_queryset() -> QuerySet[Contact]:
    return Contact.objects.filter(deleted_at__isnull=True).prefetch_related("links")


def contact_get(*, contact_id: object) -> Contact:
    contact = contact_live_queryset().filter(pk=contact_id).first()
    if contact is None:
        raise NotFound("Contact not found.", details={"id": str(contact_id)})
    return contact


def contact_by_email(*, email: str) -> Contact | None:
    """The live contact with this email, compared lower-cased (uses the functional index)."""
    return (
        Contact.objects.alias(email_ci=Lower("email"))
        .filter(email_ci=normalise_email(email), deleted_at__isnull=True)
        .first()
    )


def contact_list(*, email: str | None = None, updated_since: datetime | None = None) -> QuerySet[Contact]:
    queryset = contact_live_queryset()
    if email:
        queryset = queryset.alias(email_ci=Lower("email")).filter(email_ci=normalise_email(email))
    if updated_since:
        queryset = queryset.filter(updated_at__gte=updated_since)
    return queryset
