"""Fields of a contact: the six built-ins and the typed custom ones, and the rules for their values.

Pure rules (no writes): what a field definition may say, whether a value fits its field, how a
filter's text becomes a value. The writes that keep stored values valid are in contacts.services.
"""

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any

from contacts.models import MAX_LENGTHS, SYNCED_FIELDS, CustomField, FieldType
from syncroot.errors import ApplicationError

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Besides the built-ins, the names a contact's JSON already uses: a custom field with one of them
# would read ambiguously wherever fields are named together (mappings, filters, errors).
RESERVED_KEYS = frozenset(SYNCED_FIELDS) | {"id", "version", "created_at", "updated_at", "deleted_at", "sync", "custom"}
STRING_DEFAULT_MAX_LENGTH = 255
STRING_MAX_LENGTH = 131072  # Salesforce's longest text (Long Text Area)
OPTION_MAX_LENGTH = 255
OPTIONS_MAX = 1000
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")

BUILTIN_LABELS = {
    "email": "Email",
    "first_name": "First name",
    "last_name": "Last name",
    "phone": "Phone",
    "company": "Company",
    "job_title": "Job title",
}


class InvalidValues(ApplicationError):
    """Values that do not fit their fields: 400 like every validation error, each named in details."""

    code = "validation_error"

    def __init__(self, errors: dict, *, message: str = "The request is not valid.") -> None:
        super().__init__(message, details=errors)


# Who uses a field (mappings, later): each callable answers, for a field key, a description of each
# use. A field in use cannot be deleted (409 field_in_use); the module that creates uses registers here.
FIELD_USERS: list[Callable[[str], list[str]]] = []


def field_uses(key: str) -> list[str]:
    return [use for users in FIELD_USERS for use in users(key)]


def builtin_fields() -> list[dict[str, Any]]:
    return [
        {"key": key, "label": BUILTIN_LABELS[key], "type": FieldType.STRING.value, "options": None,
         "max_length": MAX_LENGTHS[key], "builtin": True, "created_at": None, "updated_at": None}
        for key in SYNCED_FIELDS
    ]  # fmt: skip


def definition_errors(*, type: str, options: Any, max_length: Any) -> dict[str, list[str]]:
    """What is wrong with a field definition (options for enums only, max_length for strings only)."""
    errors: dict[str, list[str]] = {}
    if type == FieldType.ENUM:
        if not isinstance(options, list) or not options:
            errors["options"] = ["An enum field needs a non-empty list of options."]
        elif len(options) > OPTIONS_MAX:
            errors["options"] = [f"At most {OPTIONS_MAX} options."]
        elif not all(isinstance(o, str) and o and len(o) <= OPTION_MAX_LENGTH for o in options):
            errors["options"] = [f"Each option is a non-empty string of at most {OPTION_MAX_LENGTH} characters."]
        elif len(set(options)) != len(options):
            errors["options"] = ["Options must be distinct."]
    elif options not in (None, []):
        errors["options"] = ["Only an enum field has options."]
    if type == FieldType.STRING:
        if max_length is not None and not (
            isinstance(max_length, int) and not isinstance(max_length, bool) and 1 <= max_length <= STRING_MAX_LENGTH
        ):
            errors["max_length"] = [f"An integer from 1 to {STRING_MAX_LENGTH}."]
    elif max_length is not None:
        errors["max_length"] = ["Only a string field has a max_length."]
    return errors


def is_key(key: str) -> bool:
    """Could be a custom field's key (so it is safe to look up: no NUL, which PostgreSQL refuses)."""
    return bool(KEY_PATTERN.match(key))


def key_errors(key: str) -> list[str]:
    if not KEY_PATTERN.match(key):
        return ["A lower-case letter, then up to 63 lower-case letters, digits or underscores."]
    if key in RESERVED_KEYS:
        return ["This name belongs to a built-in field or to the contact itself."]
    return []


def value_error(field: CustomField, value: Any) -> str | None:
    """Why `value` does not fit `field`, or None. Nothing is coerced: "40" is no number."""
    kind = field.type
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL cannot store it (as DRF's CharField says)
        return "Null characters are not allowed."
    if kind == FieldType.STRING:
        if not isinstance(value, str):
            return "Not a valid string."
        if len(value) > (limit := field.max_length or STRING_DEFAULT_MAX_LENGTH):
            return f"Ensure this field has no more than {limit} characters."
    elif kind == FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            return "Not a valid number."
    elif kind == FieldType.BOOLEAN:
        if not isinstance(value, bool):
            return "Not a valid boolean (true or false)."
    elif kind == FieldType.DATE:
        if not isinstance(value, str) or not DATE_PATTERN.match(value) or not _parses(date.fromisoformat, value):
            return "Not a valid date (YYYY-MM-DD)."
    elif kind == FieldType.DATETIME:
        moment = _parses(datetime.fromisoformat, value) if isinstance(value, str) and "T" in value else None
        if moment is None or moment.tzinfo is None:
            return "Not a valid date-time (ISO 8601 with a time zone, e.g. 2026-03-01T12:30:00Z)."
    elif kind == FieldType.ENUM:
        if not isinstance(value, str) or value not in field.options:
            return f"Not one of the options: {', '.join(field.options)}."
    return None


def _finite(number: float) -> bool:
    """A number a double holds (what JSON clients and the CRMs hold): no infinity, no 400-digit integer."""
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def _parses(parse: Callable[[str], Any], text: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        return None


def custom_errors(values: Mapping[str, Any], fields: Mapping[str, CustomField]) -> dict[str, list[str]]:
    """Errors by `custom.<key>` for the values given (None means "no value" and always fits)."""
    errors: dict[str, list[str]] = {}
    for key, value in values.items():
        field = fields.get(key)
        if field is None:
            errors[f"custom.{key}"] = ["Unknown custom field."]
        elif value is not None and (error := value_error(field, value)):
            errors[f"custom.{key}"] = [error]
    return errors


def custom_merge(current: Mapping[str, Any], given: Mapping[str, Any] | None, *, partial: bool) -> dict[str, Any]:
    """The custom values after a write: PATCH merges (None removes a key), PUT and POST replace."""
    merged = dict(current) if partial else {}
    for key, value in (given or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def custom_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Keys whose value changed (a type change too: 1 and true are equal in Python, not here)."""
    return sorted(
        key
        for key in set(before) | set(after)
        if key not in before or key not in after or json.dumps(before[key]) != json.dumps(after[key])
    )


def filter_value(field: CustomField, text: str) -> Any:
    """A query-string value as the value stored: numbers and booleans as JSON, the rest as text."""
    if field.type in (FieldType.NUMBER, FieldType.BOOLEAN):
        try:
            value = json.loads(text)
        except ValueError:
            value = text
    else:
        value = text
    if error := value_error(field, value):
        raise InvalidValues({f"custom.{field.key}": [error]})
    return value


def keys_of(items: Iterable[Mapping[str, Any]]) -> set[str]:
    return {key for item in items for key in (item.get("custom") or {})}
