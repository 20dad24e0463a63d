"""Reads of contacts."""

from collections.abc import Iterable, Mapping
from datetime import datetime

from django.db.models import QuerySet
from django.db.models.functions import Lower

from contacts.fields import InvalidValues, filter_value, is_key
from contacts.models import Contact, CustomField
from syncroot.errors import Gone, NotFound


def normalise_email(email: str) -> str:
    return email.strip().lower()


def contact_live_queryset() -> QuerySet[Contact]:
    return Contact.objects.filter(deleted_at__isnull=True).prefetch_related("links")


def contact_get(*, contact_id: object) -> Contact:
    contact = contact_live_queryset().filter(pk=contact_id).first()
    if contact is None:
        raise contact_missing(contact_id=contact_id)
    return contact


def contact_missing(*, contact_id: object, what: str = "Contact") -> Gone | NotFound:
    """The answer for an id that names no live contact: a merged-away contact answers where it went
    (410, the live survivor: it may itself have been merged since); any other (unknown, deleted,
    erased) is not found (404)."""
    merged = Contact.objects.filter(pk=contact_id, merged_into__isnull=False).values_list("merged_into", flat=True)
    target = merged.first()
    if target is None:
        return NotFound(f"{what} not found.", details={"id": str(contact_id)})
    seen = {target}
    while (further := Contact.objects.filter(pk=target).values_list("merged_into", flat=True).first()) is not None:
        if further in seen:
            break
        target = further
        seen.add(target)
    return Gone(f"{what} was merged into another.", details={"id": str(contact_id), "merged_into": str(target)})


def contact_by_email(*, email: str) -> Contact | None:
    """The live contact with this email, compared lower-cased (uses the functional index)."""
    return (
        Contact.objects.alias(email_ci=Lower("email"))
        .filter(email_ci=normalise_email(email), deleted_at__isnull=True)
        .first()
    )


def contact_list(
    *, email: str | None = None, updated_since: datetime | None = None, custom: Mapping[str, str] | None = None
) -> QuerySet[Contact]:
    """Live contacts; `custom` filters by custom values given as query-string text, by key."""
    queryset = contact_live_queryset()
    if email:
        queryset = queryset.alias(email_ci=Lower("email")).filter(email_ci=normalise_email(email))
    if updated_since:
        queryset = queryset.filter(updated_at__gte=updated_since)
    if custom:
        fields = CustomField.objects.in_bulk([key for key in custom if is_key(key)], field_name="key")
        if unknown := sorted(set(custom) - set(fields)):
            raise InvalidValues({f"custom.{key}": ["Unknown custom field."] for key in unknown})
        # One containment test (`custom @> {...}`) for all of them: the GIN index serves it.
        queryset = queryset.filter(
            custom__contains={key: filter_value(fields[key], text) for key, text in custom.items()}
        )
    return queryset


def custom_field_list() -> list[CustomField]:
    return list(CustomField.objects.order_by("key"))


def custom_field_get(*, key: str) -> CustomField:
    field = CustomField.objects.filter(key=key).first() if is_key(key) else None
    if field is None:
        raise NotFound("Field not found.", details={"key": key})
    return field


def custom_fields_locked(*, keys: Iterable[str]) -> dict[str, CustomField]:
    """The definitions of these fields, held (FOR SHARE) until the transaction ends.

    A contact write validates its custom values against them: a concurrent change of a field's
    options or length, or its deletion, waits for the write (and then sees its values), so no
    value that does not fit its field is ever stored. Writes share the lock with one another.
    """
    keys = sorted({key for key in keys if is_key(key)})  # no other key is known: nothing to look up
    if not keys:
        return {}
    table = CustomField._meta.db_table
    fields = CustomField.objects.raw(f"SELECT * FROM {table} WHERE key = ANY(%s) ORDER BY key FOR SHARE", [keys])
    return {field.key: field for field in fields}
