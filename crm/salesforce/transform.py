"""SyncRoot contact fields ⇄ Salesforce Contact fields. Pure functions: no I/O.

The company is not a Contact field in Salesforce: it is the name of the Account the
Contact points to (`AccountId`). Resolving a name to an Account id needs the API, so
the provider does it (see accounts.py); these functions only carry `AccountId` and read
the `Account.Name` relationship when a query selected it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

# Internal field → Contact field (company is handled through AccountId).
FIELD_MAP: dict[str, str] = {
    "email": "Email",
    "first_name": "FirstName",
    "last_name": "LastName",
    "phone": "Phone",
    "job_title": "Title",
}
REVERSE_MAP: dict[str, str] = {wire: internal for internal, wire in FIELD_MAP.items()}
COMPANY = "company"
INTERNAL_FIELDS: tuple[str, ...] = (*FIELD_MAP, COMPANY)

# LastName is required by Salesforce. HubSpot's own Salesforce integration sends this
# placeholder for contacts without one; we map it back to "" on the way in.
LAST_NAME_PLACEHOLDER = "[not provided]"

# What fetch and the reconciler select: every synced field plus what conflict resolution
# (SystemModstamp), echo detection (LastModifiedById) and tombstones (IsDeleted) need.
QUERY_FIELDS: tuple[str, ...] = (
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Phone",
    "Title",
    "AccountId",
    "Account.Name",
    "SystemModstamp",
    "LastModifiedById",
    "IsDeleted",
    "MasterRecordId",
)


def to_salesforce(values: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Contact body for the fields present in `values` (company excluded: the caller sets AccountId).

    Empty values become null, which clears the field in Salesforce, except LastName, which
    cannot be null and gets the placeholder. A create always carries a LastName.
    """
    body: dict[str, Any] = {}
    for internal, wire in FIELD_MAP.items():
        if internal not in values:
            continue
        value = (values[internal] or "").strip()
        if wire == "LastName":
            body[wire] = value or LAST_NAME_PLACEHOLDER
        else:
            body[wire] = value or None
    if creating and "LastName" not in body:
        body["LastName"] = LAST_NAME_PLACEHOLDER
    return body


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def from_salesforce(record: Mapping[str, Any]) -> dict[str, str]:
    """Internal values for the Contact fields present in `record` (REST JSON or a parsed sObject).

    `company` is filled only when the record carries the `Account` relationship (a SOQL
    `Account.Name`) or `AccountId` is null; otherwise the caller resolves AccountId.
    """
    values: dict[str, str] = {}
    for wire, internal in REVERSE_MAP.items():
        if wire in record:
            values[internal] = _text(record[wire])
    if values.get("last_name") == LAST_NAME_PLACEHOLDER:
        values["last_name"] = ""
    if "Account" in record:
        account = record["Account"]
        values[COMPANY] = _text(account.get("Name")) if isinstance(account, Mapping) else ""
    elif "AccountId" in record and not record["AccountId"]:
        values[COMPANY] = ""
    return values


def parse_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from Salesforce's forms: `…000+0000` (REST), `…000Z` (SOAP, events)."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:  # Salesforce datetimes are UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def from_epoch_ms(value: Any) -> datetime | None:
    """Change-event `commitTimestamp` (epoch milliseconds) as an aware datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def soql_datetime(value: datetime) -> str:
    """A SOQL datetime literal, whole seconds (the documented literal forms carry none)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# SOQL string escapes (SOQL reference, "Quoted String Escape Sequences").
_SOQL_ESCAPES = str.maketrans(
    {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
)


def soql_quote(value: str) -> str:
    """A quoted SOQL string literal; quotes and backslashes cannot break out of it."""
    return "'" + value.translate(_SOQL_ESCAPES) + "'"


def soql_in(values: Iterable[str]) -> str:
    """`('a', 'b')` for a WHERE … IN clause."""
    return "(" + ", ".join(soql_quote(value) for value in values) + ")"


def normalize_email(value: str | None) -> str:
    """Emails are matched trimmed and lower-cased, as Salesforce compares text."""
    return (value or "").strip().lower()
