"""SyncRoot contact fields ⇄ HubSpot contact properties. Pure functions: no I/O.

HubSpot reports an unset property as `""`, as JSON `null`, or not at all; SyncRoot stores `""`
for all three. Sending `""` clears a property in HubSpot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from crm.base import InboundChange, PushItem, value_text

# SyncRoot field → HubSpot contact property (standard properties, present in every portal).
FIELD_MAP: dict[str, str] = {
    "email": "email",
    "first_name": "firstname",
    "last_name": "lastname",
    "phone": "phone",
    "company": "company",
    "job_title": "jobtitle",
}
PROPERTY_MAP: dict[str, str] = {prop: field for field, prop in FIELD_MAP.items()}
MODIFIED_PROPERTY = "lastmodifieddate"
ID_PROPERTY = "hs_object_id"
# What every read asks for: the mapped properties plus the change time.
READ_PROPERTIES: tuple[str, ...] = (*FIELD_MAP.values(), MODIFIED_PROPERTY)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_hubspot(values: Mapping[str, Any]) -> dict[str, str]:
    """HubSpot properties for the SyncRoot fields present in `values` (others have no home there)."""
    return {FIELD_MAP[name]: _text(value) for name, value in values.items() if name in FIELD_MAP}


def item_properties(item: PushItem) -> dict[str, str]:
    """Every property a push writes: the built-ins' and the mapped custom fields' (HubSpot takes
    text for every type: `40`, `true`, `2026-03-01`; `""` clears a property)."""
    return {**{prop: _text(value) for prop, value in item.remote.items()}, **to_hubspot(item.values)}


MERGED_PROPERTY = "hs_merged_object_ids"


def merged_ids(properties: Mapping[str, Any]) -> tuple[str, ...]:
    """The ids of the records merged into this one (`hs_merged_object_ids`, `;`-separated)."""
    return tuple(i.strip() for i in str(properties.get(MERGED_PROPERTY) or "").split(";") if i.strip())


def read_properties(extra: tuple[str, ...] = ()) -> list[str]:
    """The properties a read asks for: the built-ins', the mapped custom ones, the change time."""
    return list(dict.fromkeys([*READ_PROPERTIES, MERGED_PROPERTY, *extra]))


def from_hubspot(properties: Mapping[str, Any]) -> dict[str, str]:
    """Every SyncRoot field from a HubSpot `properties` object; unset ones become `""`."""
    return {name: _text(properties.get(prop)) for name, prop in FIELD_MAP.items()}


def field_for_property(prop: str) -> str | None:
    """The SyncRoot field a HubSpot property feeds, or None when we do not sync it."""
    return PROPERTY_MAP.get(prop)


def normalise_email(value: str | None) -> str:
    """Emails identify contacts in both directions; HubSpot stores them lower-cased."""
    return (value or "").strip().lower()


def parse_time(value: Any) -> datetime | None:
    """A HubSpot time as an aware UTC datetime.

    Accepts ISO-8601 (`2025-04-07T20:51:21.314Z`, as in `lastmodifieddate`) and epoch
    milliseconds as a number or a digit string (webhook `occurredAt`, some datetime
    properties). Empty values give None; anything else unparseable raises ValueError.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return _EPOCH + int(value) * _MS  # integer arithmetic: no float rounding of the ms
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return _EPOCH + int(text) * _MS
    parsed = datetime.fromisoformat(text)  # Python 3.11 reads the trailing "Z"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds (HubSpot's filter value for dates); naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def id_order(external_id: str) -> tuple[int, int | str]:
    """Sort key for HubSpot ids: numeric strings compare as numbers ("999" before "1000")."""
    text = str(external_id)
    return (0, int(text)) if text.isdigit() else (1, text)


def object_to_change(obj: Mapping[str, Any], extra: tuple[str, ...] = ()) -> InboundChange:
    """An InboundChange from a HubSpot object (SimplePublicObject from read, batch or search);
    `extra`: the custom properties asked for, reported under `remote` (an unset one as None)."""
    properties = obj.get("properties") or {}
    modified = properties.get(MODIFIED_PROPERTY) or obj.get("updatedAt")
    return InboundChange(
        external_id=str(obj["id"]),
        values=from_hubspot(properties),
        remote=extra_values(properties, extra),
        occurred_at=parse_time(modified),
        deleted=bool(obj.get("archived")),
        # The ids merged into this record (HubSpot keeps them on the survivor): a merge whose
        # webhook was lost is still seen by the reconciler.
        absorbed=merged_ids(properties),
    )


def extra_values(properties: Mapping[str, Any], extra: tuple[str, ...]) -> dict[str, Any]:
    """The custom properties asked for, as reported (HubSpot's unset `""`, null or absent: None)."""
    return {prop: _or_none(properties.get(prop)) for prop in extra if prop not in PROPERTY_MAP}


def _or_none(value: Any) -> Any:
    """HubSpot's unset (`""`, null or absent) as None: a custom field's blank."""
    return None if value is None or value == "" else value


def _text(value: Any) -> str:
    return value_text(value)  # HubSpot's own forms: `true`/`false`, 40 (not 40.0)
