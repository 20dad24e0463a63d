"""A custom field's value on its way to a CRM and back: translated, never cut or coerced.

SyncRoot holds typed values (contacts.fields); the CRMs hold their own forms (HubSpot text for every
type, Salesforce JSON numbers, booleans and `2026-03-01T12:30:00.000+0000`). The engine works with
one canonical form per type, so the same value read back from either CRM is recognised as the same:
text as is, numbers as int when whole (40 and 40.0 alike), datetimes as UTC ISO-8601 with
milliseconds and `Z`, dates as `YYYY-MM-DD`. A value that does not fit where it goes is refused
with a reason, `(code, message)`, never changed to fit.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

from contacts.fields import STRING_DEFAULT_MAX_LENGTH
from contacts.models import FieldType
from providers.issues import NOT_TEXT, TOO_LONG

NOT_AN_OPTION, WRONG_TYPE = "not_an_option", "wrong_type"
Refusal = tuple[str, str]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000


def canonical(kind: str, value: Any) -> Any:
    """The engine's form of a SyncRoot value of type `kind` (None for no value)."""
    if value is None or value == "":
        return None
    if kind == FieldType.NUMBER and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == FieldType.DATETIME and isinstance(value, str):
        moment = _moment(value)
        return _iso(moment) if moment is not None else value
    return value


def to_crm(mapping: Any, value: Any, *, crm: str) -> tuple[Any, Refusal | None]:
    """SyncRoot's canonical `value` as the CRM's field takes it, or why it does not fit there.

    `mapping`: a `providers.mappings.CustomMapping` (its value_map and the CRM field's spec)."""
    if value is None:
        return None, None
    out = mapping.value_map.get(value, value) if isinstance(value, str) else value
    spec, remote = mapping.remote, mapping.remote_field
    options = spec.get("options")
    if options is not None and isinstance(out, str) and out not in options:
        shown = f"{out!r} (SyncRoot's {value!r})" if out != value else repr(out)
        return None, (NOT_AN_OPTION, f"{shown} is not an option of {crm}'s {remote}: {', '.join(options)}")
    length = spec.get("length")
    if length and isinstance(out, str) and len(out) > length:
        return None, (
            TOO_LONG,
            f"{crm}'s {remote} holds at most {length} characters; SyncRoot's {mapping.field} has {len(out)}",
        )
    return out, None


def from_crm(mapping: Any, raw: Any, *, source: str) -> tuple[Any, Refusal | None]:
    """A CRM's reported value as SyncRoot's canonical value of the mapped field, or why SyncRoot
    cannot hold it."""
    if raw is None or raw == "":
        return None, None
    kind, field = mapping.type, mapping.field
    parse = _PARSERS.get(kind)
    value = parse(raw) if parse else None
    if value is None:
        code = WRONG_TYPE if kind != FieldType.STRING else NOT_TEXT
        return None, (
            code,
            f"{source} holds {raw!r} in {mapping.remote_field}, which is not a valid {kind} for {field}",
        )
    if kind == FieldType.ENUM:
        value = mapping.reverse_map.get(value, value)
        if value not in mapping.options:
            return None, (
                NOT_AN_OPTION,
                f"{source} holds {raw!r} in {mapping.remote_field}, which maps to no option of {field}: "
                f"{', '.join(mapping.options)}",
            )
    if kind == FieldType.STRING and len(value) > (limit := mapping.max_length or STRING_DEFAULT_MAX_LENGTH):
        return None, (TOO_LONG, f"{source} holds {len(value)} characters in {field}; SyncRoot holds at most {limit}")
    return value, None


def _text(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and "\x00" not in raw else None


def _number(raw: Any) -> int | float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
        except ValueError:
            return None
    if not isinstance(raw, (int, float)):
        return None
    try:
        if not math.isfinite(float(raw)):
            return None
    except OverflowError:
        return None
    return int(raw) if isinstance(raw, float) and raw.is_integer() else raw


def _boolean(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return None


def _date(raw: Any) -> str | None:
    """`YYYY-MM-DD`; HubSpot may also answer epoch milliseconds at midnight UTC."""
    if isinstance(raw, int | str) and not isinstance(raw, bool) and str(raw).lstrip("-").isdigit():
        ms = int(raw)
        return (_EPOCH + timedelta(milliseconds=ms)).date().isoformat() if ms % _DAY_MS == 0 else None
    if isinstance(raw, str) and len(raw) == 10:
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            return None
    return None


def _datetime(raw: Any) -> str | None:
    if isinstance(raw, int | str) and not isinstance(raw, bool) and str(raw).lstrip("-").isdigit():
        return _iso(_EPOCH + timedelta(milliseconds=int(raw)))
    moment = _moment(raw) if isinstance(raw, str) else None
    return _iso(moment) if moment is not None else None


def _moment(text: str) -> datetime | None:
    """An aware datetime from ISO-8601, as clients and both CRMs write it (`Z`, `+0000`, `+00:00`)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_PARSERS = {
    FieldType.STRING: _text,
    FieldType.ENUM: _text,
    FieldType.NUMBER: _number,
    FieldType.BOOLEAN: _boolean,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
}
