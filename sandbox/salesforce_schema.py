"""Salesforce ids, datetime formats and the Contact/Account schema of the sandbox.

Ids are 15 case-sensitive characters (3-char key prefix, 2-char pod, a reserved
``0`` and a 9-digit base-62 number) plus a 3-character case-insensitivity
checksum, exactly as the real CRM builds them, so clients that validate ids
(or convert 15 → 18) work unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "ACCOUNT",
    "CONTACT",
    "OBJECTS",
    "INTEGRATION_USER_ID",
    "UI_USER_ID",
    "FieldSpec",
    "ObjectSpec",
    "format_cdc_datetime",
    "format_datetime",
    "id_checksum",
    "make_id",
    "normalize_id",
    "parse_datetime",
]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHECKSUM_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_RE = re.compile(r"^[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")


def id_checksum(id15: str) -> str:
    """The 3-character suffix: one char per 5-char chunk, bit i set when char i is upper case."""
    suffix = []
    for start in (0, 5, 10):
        bits = 0
        for offset, char in enumerate(id15[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << offset
        suffix.append(_CHECKSUM_CHARS[bits])
    return "".join(suffix)


def make_id(prefix: str, number: int, pod: str = "8d") -> str:
    """An 18-character id such as ``0038d000000000QAAQ`` for ``prefix`` + ``number``."""
    digits = []
    for _ in range(9):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    id15 = f"{prefix}{pod}0{''.join(reversed(digits))}"
    return id15 + id_checksum(id15)


def normalize_id(value: Any) -> str | None:
    """The 18-character form of a 15/18-character id, or None when malformed.

    An 18-character id whose suffix does not match its first 15 characters is
    malformed, as in the real CRM.
    """
    if not isinstance(value, str) or not _ID_RE.match(value):
        return None
    id15 = value[:15]
    expected = id15 + id_checksum(id15)
    if len(value) == 18 and value[15:].upper() != expected[15:]:
        return None
    return expected


# --- datetimes ----------------------------------------------------------------


def format_datetime(value: datetime) -> str:
    """REST format: ``2024-01-01T12:00:00.000+0000`` (UTC, milliseconds)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def format_cdc_datetime(value: datetime) -> str:
    """SOAP/event format: ``2024-01-01T12:00:00.000Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(text: str) -> datetime | None:
    """Parse the ISO-8601 forms the API accepts (``Z``, ``+hh:mm``, ``+hhmm``; naive = UTC)."""
    match = _DATETIME_RE.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros, UTC)
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset_minutes = sign * (int(digits[:2]) * 60 + int(digits[2:]))
        value -= timedelta(minutes=offset_minutes)
    return value


# --- schema -------------------------------------------------------------------

STRING_TYPES = frozenset({"string", "email", "phone", "url", "textarea", "picklist"})


@dataclass(frozen=True)
class FieldSpec:
    """One sObject field as the describe call reports it."""

    name: str
    type: str  # id, reference, string, email, phone, textarea, picklist, double, boolean, date, datetime
    label: str
    length: int = 0
    writable: bool = False  # createable and updateable through the API
    required: bool = False  # not nillable on create/update
    reference_to: str | None = None
    relationship_name: str | None = None
    external_id: bool = False
    precision: int = 0  # double: total digits
    scale: int = 0  # double: digits after the decimal point
    picklist: tuple[str, ...] = ()  # picklist values (value = label in this sandbox)
    restricted: bool = False  # restricted picklist: other values are refused
    default: Any = None  # value of a new record (checkboxes: False)
    picklist_default: str | None = None

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def is_string(self) -> bool:
        return self.type in STRING_TYPES


@dataclass(frozen=True)
class ObjectSpec:
    """An sObject type: name, key prefix and fields (looked up case-insensitively)."""

    name: str
    label: str
    key_prefix: str
    fields: tuple[FieldSpec, ...]
    _by_lower: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)
    _relationships: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_lower", {spec.name.lower(): spec for spec in self.fields})
        object.__setattr__(
            self,
            "_relationships",
            {spec.relationship_name.lower(): spec for spec in self.fields if spec.relationship_name},
        )

    def field(self, name: str) -> FieldSpec | None:
        return self._by_lower.get(name.lower())

    def with_field(self, spec: FieldSpec) -> ObjectSpec:
        """A copy of this object with one more field (specs are immutable and shared)."""
        return replace(self, fields=(*self.fields, spec))

    def relationship(self, name: str) -> FieldSpec | None:
        """The reference field behind a relationship name (``Account`` → ``AccountId``)."""
        return self._relationships.get(name.lower())

    @property
    def field_names(self) -> list[str]:
        return [spec.name for spec in self.fields]


def _audit_fields() -> tuple[FieldSpec, ...]:
    return (
        FieldSpec("OwnerId", "reference", "Owner ID", 18, reference_to="User"),
        FieldSpec("CreatedDate", "datetime", "Created Date"),
        FieldSpec("CreatedById", "reference", "Created By ID", 18, reference_to="User"),
        FieldSpec("LastModifiedDate", "datetime", "Last Modified Date"),
        FieldSpec("LastModifiedById", "reference", "Last Modified By ID", 18, reference_to="User"),
        FieldSpec("SystemModstamp", "datetime", "System Modstamp"),
    )


ACCOUNT = ObjectSpec(
    "Account",
    "Account",
    "001",
    (
        FieldSpec("Id", "id", "Account ID", 18),
        FieldSpec("IsDeleted", "boolean", "Deleted"),
        FieldSpec("Name", "string", "Account Name", 255, writable=True, required=True),
        FieldSpec("Phone", "phone", "Account Phone", 40, writable=True),
        FieldSpec("Website", "string", "Website", 255, writable=True),
        *_audit_fields(),
    ),
)

#: Contact.LeadSource's standard values (an unrestricted picklist).
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")

CONTACT = ObjectSpec(
    "Contact",
    "Contact",
    "003",
    (
        FieldSpec("Id", "id", "Contact ID", 18),
        FieldSpec("IsDeleted", "boolean", "Deleted"),
        FieldSpec(
            "MasterRecordId",
            "reference",
            "Master Record ID",
            18,
            reference_to="Contact",
            relationship_name="MasterRecord",
        ),
        FieldSpec(
            "AccountId",
            "reference",
            "Account ID",
            18,
            writable=True,
            reference_to="Account",
            relationship_name="Account",
        ),
        FieldSpec("LastName", "string", "Last Name", 80, writable=True, required=True),
        FieldSpec("FirstName", "string", "First Name", 40, writable=True),
        FieldSpec("Name", "string", "Full Name", 121),
        FieldSpec("Email", "email", "Email", 80, writable=True),
        FieldSpec("Phone", "phone", "Business Phone", 40, writable=True),
        FieldSpec("MobilePhone", "phone", "Mobile Phone", 40, writable=True),
        FieldSpec("Title", "string", "Title", 128, writable=True),
        FieldSpec("Department", "string", "Department", 80, writable=True),
        FieldSpec("Description", "textarea", "Contact Description", 32000, writable=True),
        FieldSpec("LeadSource", "picklist", "Lead Source", 255, writable=True, picklist=LEAD_SOURCES),
        FieldSpec("Birthdate", "date", "Birthdate", writable=True),
        *_audit_fields(),
        FieldSpec("SyncRoot_Id__c", "string", "SyncRoot Id", 255, writable=True, external_id=True),
    ),
)

#: Object specs by canonical name.
OBJECTS: dict[str, ObjectSpec] = {spec.name: spec for spec in (ACCOUNT, CONTACT)}

#: The API (integration) user every token belongs to, and the person editing in the UI.
INTEGRATION_USER_ID = make_id("005", 1, "8d")
UI_USER_ID = make_id("005", 2, "8d")
AUTOMATION_USER_ID = make_id("005", 3, "8d")  # the org's automated process user (flows)
