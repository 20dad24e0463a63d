"""Writes of custom field definitions. Stored values are never changed behind the client's back.

A change that values held by contacts would no longer fit (a shorter max_length, an option
removed) is refused with the number of contacts holding such values; deleting a field whose values
contacts hold needs `purge`, which removes them (and says how many). Each write holds the field's
row FOR UPDATE, so contact writes (which hold it FOR SHARE while they validate) never slip a value
in between the check and the change.
"""

from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Length
from django.utils import timezone

from contacts.fields import (
    STRING_DEFAULT_MAX_LENGTH,
    InvalidValues,
    definition_errors,
    field_uses,
    is_key,
    key_errors,
)
from contacts.models import SYNCED_FIELDS, Contact, CustomField, FieldType
from syncroot.errors import Conflict, NotFound


class BuiltinField(Conflict):
    code = "builtin_field"


class FieldValuesConflict(Conflict):
    code = "field_values_conflict"


class FieldInUse(Conflict):
    code = "field_in_use"


class FieldHasValues(Conflict):
    code = "field_has_values"


def _refuse_builtin(key: str) -> None:
    if key in SYNCED_FIELDS:
        raise BuiltinField("Built-in fields cannot be changed or deleted.", details={"key": key})


def custom_field_create(
    *, key: str, label: str, type: str, options: Sequence[str] | None = None, max_length: int | None = None
) -> CustomField:
    if key in SYNCED_FIELDS:
        raise BuiltinField("A built-in field already has this key.", details={"key": key})
    errors = definition_errors(type=type, options=options, max_length=max_length)
    if problems := key_errors(key):
        errors["key"] = problems
    if errors:
        raise InvalidValues(errors)
    if type == FieldType.STRING and max_length is None:
        max_length = STRING_DEFAULT_MAX_LENGTH
    try:
        with transaction.atomic():
            return CustomField.objects.create(
                key=key, label=label, type=type, options=list(options or []), max_length=max_length
            )
    except IntegrityError:  # the unique key is the check: no race between a lookup and the insert
        raise Conflict("A field with this key already exists.", details={"key": key}) from None


def _locked(key: str) -> CustomField:
    _refuse_builtin(key)
    field = CustomField.objects.select_for_update().filter(key=key).first() if is_key(key) else None
    if field is None:
        raise NotFound("Field not found.", details={"key": key})
    return field


def _holding(key: str) -> Any:
    """Live contacts holding a value of this field (tombstones' values are never read again)."""
    return Contact.objects.filter(deleted_at__isnull=True, custom__has_key=key)


@transaction.atomic
def custom_field_update(*, key: str, changes: dict[str, Any]) -> CustomField:
    """Change a field's label, options (enum) or max_length (string); never its key or type."""
    field = _locked(key)
    options = changes.get("options", field.options)
    max_length = changes.get("max_length", field.max_length)
    if errors := definition_errors(type=field.type, options=options, max_length=max_length):
        raise InvalidValues(errors)
    value = KeyTextTransform(key, "custom")
    if field.type == FieldType.ENUM and (removed := sorted(set(field.options) - set(options))):
        held = _holding(key).alias(value=value).filter(value__in=removed)
        if count := held.count():
            raise FieldValuesConflict(
                f"{count} contacts hold options this change removes; change their values first.",
                details={"key": key, "field": "options", "contacts": count, "values": removed},
            )
    if field.type == FieldType.STRING and max_length is not None and max_length < (field.max_length or 0):
        longer = _holding(key).alias(length=Length(value)).filter(length__gt=max_length)
        if count := longer.count():
            raise FieldValuesConflict(
                f"{count} contacts hold values longer than {max_length} characters; shorten them first.",
                details={"key": key, "field": "max_length", "contacts": count},
            )
    for name in ("label", "options", "max_length"):
        if name in changes:
            setattr(field, name, changes[name])
    field.save()
    return field


@transaction.atomic
def custom_field_delete(*, key: str, purge: bool = False) -> int:
    """Delete a field; with `purge`, remove its values from every contact. Returns how many live contacts held a value.

    Refused while something uses the field (mappings) or, without `purge`, while contacts hold values.
    """
    _locked(key)
    if uses := field_uses(key):
        raise FieldInUse("The field is in use; remove what uses it first.", details={"key": key, "uses": uses})
    if count := _holding(key).count():
        if not purge:
            raise FieldHasValues(
                f"{count} contacts hold values of this field; delete with ?purge=true to remove them.",
                details={"key": key, "contacts": count},
            )
    _values_purge(key)  # tombstones' values too: a later field with this key must not inherit them
    CustomField.objects.filter(key=key).delete()
    return count


def _values_purge(key: str) -> None:
    """Remove the field's values from every contact (tombstones too), bumping each one's version.

    No CRM is told: custom values are not synced, and a field a mapping uses cannot be deleted.
    """
    table = Contact._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET custom = custom - %s, field_times = field_times || jsonb_build_object(%s, %s::text),"
            " version = version + 1, updated_at = %s WHERE custom ? %s",
            [key, f"custom.{key}", timezone.now().isoformat(), timezone.now(), key],
        )
