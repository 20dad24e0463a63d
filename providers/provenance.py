"""Where each value came from: a change log per contact and field, written as the engine applies.

Every write path records the fields it changed and their source in the same transaction as the
contact: the API (`api`), an operator in the admin (`operator`), a CRM (its provider name:
`salesforce`, `hubspot`, …) and the imports and field backfills (`backfill`). Retention prunes
changes older than RETENTION_DAYS but never a field's latest one, so "where did this value come
from" is always answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from contacts.models import SYNCED_FIELDS, Contact, is_blank
from providers.models import FieldChange

HISTORY_KEPT = 10  # changes shown per field
_COLUMNS = [FieldChange._meta.get_field(name).column for name in ("contact", "field", "value", "source", "changed_at")]
# Three arrays side by side and the source and time once (types without length: see syncroot.bulk_insert).
_INSERT = (
    f"INSERT INTO {FieldChange._meta.db_table} ({', '.join(_COLUMNS)})"
    " SELECT unnest(%s::uuid[]), unnest(%s::varchar[]), unnest(%s::jsonb[]), %s::varchar, %s::timestamptz"
)


def changes_record(*, contact: Contact, fields: Iterable[str], source: str, at: datetime | None = None) -> None:
    """Log the current value of each of `fields` (built-in or custom) as coming from `source`."""
    changes_record_many(contacts=[contact], fields=fields, source=source, at=at)


def changes_record_many(
    *, contacts: Iterable[Contact], fields: Iterable[str] | None, source: str, at: datetime | None = None
) -> None:
    """Log many contacts' values at once. `fields=None`: every field holding a value (a new contact)."""
    at = at or timezone.now()
    chosen = list(fields) if fields is not None else None
    ids: list[Any] = []
    names_logged: list[str] = []
    values: list[str | None] = []
    for contact in contacts:
        names = chosen if chosen is not None else [*SYNCED_FIELDS, *contact.custom]
        for field in names:
            value = contact.value_of(field)
            if chosen is None and is_blank(value):
                continue
            ids.append(contact.pk)
            names_logged.append(field)
            values.append(None if value is None else json.dumps(value))  # as the JSONField stores it
    if ids:
        # One INSERT of three arrays, written out: every write path logs its changes (an import
        # hundreds of thousands), and the ORM's bulk_create cost a write as much CPU as its contact.
        with connection.cursor() as cursor:
            cursor.execute(_INSERT, [ids, names_logged, values, source, at])


def contact_history(*, contact: Contact, kept: int = HISTORY_KEPT) -> dict[str, dict[str, Any]]:
    """Per field: the current value, its source and when (None when it predates the change log), and
    its last `kept` changes, newest first."""
    changes: dict[str, list[FieldChange]] = {}
    for change in FieldChange.objects.filter(contact=contact).order_by("field", "-changed_at", "-id"):
        kept_so_far = changes.setdefault(change.field, [])
        if len(kept_so_far) < kept:
            kept_so_far.append(change)
    history = {}
    for field in [*SYNCED_FIELDS, *sorted((set(contact.custom) | set(changes)) - set(SYNCED_FIELDS))]:
        log = changes.get(field, [])
        latest = log[0] if log else None
        history[field] = {
            "value": contact.value_of(field),
            "source": latest.source if latest else None,
            "changed_at": latest.changed_at if latest else None,
            "changes": [{"value": c.value, "source": c.source, "changed_at": c.changed_at} for c in log],
        }
    return history


def superseded_changes(cutoff: datetime) -> QuerySet:
    """What retention may prune: changes older than `cutoff` that a later change of the same field
    replaced (a field's latest change stays, however old)."""
    newer = FieldChange.objects.filter(
        contact_id=OuterRef("contact_id"), field=OuterRef("field"), changed_at__gt=OuterRef("changed_at")
    )
    return FieldChange.objects.filter(changed_at__lt=cutoff).filter(Exists(newer)).order_by("changed_at")
