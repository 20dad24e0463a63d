"""HubSpot contact properties: definitions (built-in and custom) and the checks of their values.

The properties API (``/crm/v3/properties/contacts``) is served by
:mod:`sandbox.hubspot_properties_api`; records consult :class:`PropertySchema`
through :meth:`PropertySchema.clean`. Every value travels as a string.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sandbox.core import ApiError

__all__ = ["InvalidValue", "PropertyDef", "PropertySchema", "hs_error", "iso_ms"]

TYPES = {  # type → the fieldTypes HubSpot accepts with it
    "string": ("text", "textarea", "phonenumber", "html", "file"),
    "number": ("number",),
    "date": ("date",),
    "datetime": ("date",),
    "enumeration": ("select", "radio", "checkbox", "booleancheckbox"),
    "bool": ("booleancheckbox",),
}
GROUPS = (
    "contactinformation",
    "conversioninformation",
    "emailinformation",
    "sales_properties",
    "socialmediainformation",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_NUMBER = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_DAY_MS = 86_400_000
# Every built-in property was defined long before any sandbox ran.
_BUILTIN_MS = 1_564_000_000_000


def iso_ms(ms: int) -> str:
    """Epoch milliseconds → ``2025-04-07T20:51:21.314Z`` (HubSpot's datetime form)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def hs_error(
    status: int, category: str, message: str, headers: Iterable[tuple[str, str]] = (), **extra: Any
) -> ApiError:
    """An error in HubSpot's body shape: ``{"status":"error","message","correlationId","category",…}``."""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}
    body.update(extra)
    return ApiError(status, body, headers)


class InvalidValue(Exception):
    """A property value refused: HubSpot's error code (``INVALID_OPTION``, …) and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PropertyDef:
    """One property definition as the properties API reports it."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str = "contactinformation"
    description: str = ""
    options: tuple[dict[str, Any], ...] = ()
    hubspot_defined: bool = False
    read_only_value: bool = False
    read_only_definition: bool = False
    external_options: bool = False  # options come from elsewhere (owners): any value is taken
    calculated: bool = False
    has_unique_value: bool = False
    display_order: int = -1
    hidden: bool = False
    form_field: bool = False
    created_ms: int = _BUILTIN_MS
    updated_ms: int = _BUILTIN_MS
    archived_ms: int | None = None
    user_id: str | None = None
    values: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", frozenset(option["value"] for option in self.options))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "updatedAt": iso_ms(self.updated_ms),
            "createdAt": iso_ms(self.created_ms),
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": list(self.options),
            "displayOrder": self.display_order,
            "calculated": self.calculated,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.has_unique_value,
            "hidden": self.hidden,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.read_only_definition,
                "readOnlyValue": self.read_only_value,
            },
            "formField": self.form_field,
            "dataSensitivity": "non_sensitive",
        }
        if self.hubspot_defined:
            body["hubspotDefined"] = True
        else:
            body["createdUserId"] = body["updatedUserId"] = self.user_id
        if self.archived_ms is not None:
            body["archived"] = True
            body["archivedAt"] = iso_ms(self.archived_ms)
        return body

    def clean(self, value: str) -> str:
        """The stored form of a non-empty ``value``, or :class:`InvalidValue`."""
        if self.read_only_value:
            raise InvalidValue("READ_ONLY_VALUE", f"{self.name} is a read only property; its value cannot be set.")
        if self.name == "email":
            if not _EMAIL.match(value):
                raise InvalidValue("INVALID_EMAIL", f"Email address {value} is invalid")
            return value.lower()  # HubSpot stores email addresses lower-cased
        if self.type == "bool" and value.lower() in ("true", "false"):
            return value.lower()
        if self.type in ("enumeration", "bool") and not self.external_options:
            chosen = value.split(";") if self.field_type == "checkbox" else [value]
            bad = [item for item in chosen if item not in self.values]
            if bad:
                allowed = [option["value"] for option in self.options]
                raise InvalidValue("INVALID_OPTION", f"{bad[0]} was not one of the allowed options: {allowed}")
        elif self.type == "number" and not _NUMBER.match(value):
            raise InvalidValue("INVALID_LONG", f"{value} is not a valid number.")
        elif self.type == "date":
            return _date(self.name, value)
        elif self.type == "datetime":
            return _datetime(self.name, value)
        return value


def _epoch_ms(value: str) -> int | None:
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _date(name: str, value: str) -> str:
    ms = _epoch_ms(value)
    if ms is None or ms % _DAY_MS:
        raise InvalidValue(
            "INVALID_DATE", f"{value} is not a valid date for {name}: a date must be at midnight UTC (YYYY-MM-DD)."
        )
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def _datetime(name: str, value: str) -> str:
    ms = _epoch_ms(value)
    if ms is None:
        raise InvalidValue("INVALID_DATETIME", f"{value} is not a valid datetime for {name}.")
    return iso_ms(ms)


def _options(*values: str) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"label": value.replace("_", " ").title(), "value": value, "displayOrder": index, "hidden": False}
        for index, value in enumerate(values)
    )


BOOL_OPTIONS = (
    {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
    {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
)
LIFECYCLE_STAGES = (
    "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
    "opportunity", "customer", "evangelist", "other",
)  # fmt: skip
LEAD_STATUSES = (
    "NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT", "CONNECTED", "BAD_TIMING",
)  # fmt: skip


def _builtins() -> dict[str, PropertyDef]:
    def text(name: str, label: str, field_type: str = "text", **more: Any) -> PropertyDef:
        return PropertyDef(name, label, "string", field_type, hubspot_defined=True, form_field=True, **more)

    def read_only(name: str, label: str, kind: str, field_type: str, **more: Any) -> PropertyDef:
        return PropertyDef(
            name, label, kind, field_type, hubspot_defined=True, read_only_value=True, read_only_definition=True, **more
        )

    defs = [
        text("email", "Email", description="A contact's email address", read_only_definition=True),
        text("firstname", "First Name", description="A contact's first name", read_only_definition=True),
        text("lastname", "Last Name", description="A contact's last name", read_only_definition=True),
        text("phone", "Phone Number", "phonenumber", description="A contact's primary phone number"),
        text("mobilephone", "Mobile Phone Number", "phonenumber"),
        text("company", "Company Name", description="Name of the contact's company"),
        text("jobtitle", "Job Title", description="A contact's job title"),
        text("website", "Website URL"),
        text("address", "Street Address", "textarea"),
        text("city", "City"),
        text("state", "State/Region"),
        text("zip", "Postal Code"),
        text("country", "Country/Region"),
        PropertyDef(
            "lifecyclestage", "Lifecycle Stage", "enumeration", "radio", options=_options(*LIFECYCLE_STAGES),
            hubspot_defined=True, form_field=True, description="The qualification of contacts to sales readiness.",
        ),
        PropertyDef(
            "hs_lead_status", "Lead Status", "enumeration", "radio", options=_options(*LEAD_STATUSES),
            hubspot_defined=True, form_field=True, group_name="sales_properties",
        ),
        PropertyDef(
            "hubspot_owner_id", "Contact owner", "enumeration", "select", external_options=True,
            hubspot_defined=True, group_name="sales_properties",
        ),
        read_only("createdate", "Create Date", "datetime", "date", calculated=False),
        read_only("lastmodifieddate", "Last Modified Date", "datetime", "date"),
        read_only("hs_object_id", "Record ID", "number", "number", has_unique_value=True),
        read_only("hs_email_domain", "Email Domain", "string", "text", calculated=True, group_name="emailinformation"),
        read_only("hs_is_contact", "Is a contact", "bool", "booleancheckbox", options=BOOL_OPTIONS),
        read_only("hs_object_source", "Record source", "string", "text"),
        read_only("hs_object_source_id", "Record source ID", "string", "text"),
        read_only("hs_pipeline", "Pipeline", "enumeration", "select", options=_options("contacts-lifecycle-pipeline")),
    ]  # fmt: skip
    return {spec.name: spec for spec in defs}


class PropertySchema:
    """One portal's contact properties: the built-ins plus custom ones (archived kept, hidden)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._defs = _builtins()

    def clear(self) -> None:
        with self.lock:
            self._defs = _builtins()

    def all(self, *, archived: bool = False) -> list[PropertyDef]:
        return [spec for spec in list(self._defs.values()) if (spec.archived_ms is not None) == archived]

    def get(self, name: str, *, archived: bool = False) -> PropertyDef | None:
        spec = self._defs.get(name)
        return spec if spec is not None and (spec.archived_ms is not None) == archived else None

    def clean(self, name: str, value: str) -> str:
        """The stored form of ``value`` for property ``name`` (``""`` clears), or :class:`InvalidValue`."""
        spec = self.get(name)
        if spec is None:
            raise InvalidValue("PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        return spec.clean(value) if value or spec.read_only_value else value

    # -- definitions --------------------------------------------------------------

    def create(self, body: Mapping[str, Any], *, user_id: str) -> PropertyDef:
        """A new custom property from a PropertyCreate body; 400/409 as HubSpot answers."""
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 100:
            raise _invalid(f"Property name {name!r} is invalid: use lowercase letters, digits and underscores.")
        kind, field_type = _check_types(body.get("type"), body.get("fieldType"))
        label = body.get("label")
        if not isinstance(label, str) or not label.strip():
            raise _invalid("label is required")
        group = _check_group(body.get("groupName"))
        options = _check_options(kind, field_type, body.get("options"))
        now = int(time.time() * 1000)
        spec = PropertyDef(
            name, label, kind, field_type, group_name=group, description=str(body.get("description") or ""),
            options=options, has_unique_value=bool(body.get("hasUniqueValue", False)),
            display_order=_order(body.get("displayOrder")), hidden=bool(body.get("hidden", False)),
            form_field=bool(body.get("formField", False)), created_ms=now, updated_ms=now, user_id=user_id,
        )  # fmt: skip
        with self.lock:
            existing = self._defs.get(name)
            if existing is not None:
                raise hs_error(409, "OBJECT_ALREADY_EXISTS", f"A property named '{name}' already exists.")
            self._defs[name] = spec
        return spec

    def update(self, name: str, body: Mapping[str, Any]) -> PropertyDef:
        """Apply a PropertyUpdate (label, description, group, options, types, order, hidden)."""
        with self.lock:
            spec = self.get(name)
            if spec is None:
                raise not_found(name)
            if spec.read_only_definition or spec.hubspot_defined and set(body) - {"label", "description", "hidden"}:
                raise _invalid(f"Property {name} is HubSpot-defined: its definition cannot be changed.")
            kind, field_type = _check_types(body.get("type", spec.type), body.get("fieldType", spec.field_type))
            options = spec.options
            if "options" in body or kind != spec.type:
                options = _check_options(kind, field_type, body.get("options", list(spec.options)))
            changes: dict[str, Any] = {"type": kind, "field_type": field_type, "options": options}
            for key, attribute in (("label", "label"), ("description", "description"), ("hidden", "hidden")):
                if key in body:
                    changes[attribute] = body[key]
            if "groupName" in body:
                changes["group_name"] = _check_group(body["groupName"])
            if "displayOrder" in body:
                changes["display_order"] = _order(body["displayOrder"])
            spec = replace(spec, updated_ms=int(time.time() * 1000), **changes)
            self._defs[name] = spec
            return spec

    def archive(self, name: str) -> None:
        """Archive a custom property (its values stay on records, unreadable until restored)."""
        with self.lock:
            spec = self.get(name)
            if spec is None:
                raise not_found(name)
            if spec.hubspot_defined:
                raise _invalid(f"Property {name} is HubSpot-defined and cannot be archived.")
            now = int(time.time() * 1000)
            self._defs[name] = replace(spec, archived_ms=now, updated_ms=now)


def not_found(name: str) -> ApiError:
    return hs_error(404, "OBJECT_NOT_FOUND", f"Unable to find property {name} on object type contacts")


def _invalid(message: str) -> ApiError:
    return hs_error(400, "VALIDATION_ERROR", message)


def _order(raw: Any) -> int:
    if raw is None:
        return -1  # HubSpot's "no particular order"
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _invalid(f"displayOrder must be an integer, not {raw!r}")
    return raw


def _check_types(kind: Any, field_type: Any) -> tuple[str, str]:
    if kind not in TYPES:
        raise _invalid(f"type must be one of {sorted(TYPES)}, not {kind!r}")
    if field_type not in TYPES[kind]:
        raise _invalid(f"fieldType {field_type!r} is not valid for type {kind}: use one of {list(TYPES[kind])}")
    return kind, field_type


def _check_group(group: Any) -> str:
    if group not in GROUPS:
        raise _invalid(f"Property group {group!r} does not exist")
    return group


def _check_options(kind: str, field_type: str, raw: Any) -> tuple[dict[str, Any], ...]:
    if kind == "bool":
        return tuple(raw) if raw else BOOL_OPTIONS
    if kind != "enumeration":
        if raw:
            raise _invalid(f"options are only allowed on enumeration properties, not {kind}")
        return ()
    if not isinstance(raw, list) or not raw:
        raise _invalid("An enumeration property needs at least one option")
    options, seen = [], set()
    for index, option in enumerate(raw):
        value = option.get("value") if isinstance(option, Mapping) else None
        label = option.get("label") if isinstance(option, Mapping) else None
        if not isinstance(value, str) or not value or not isinstance(label, str) or not label:
            raise _invalid(f"Option {index} needs a label and a value")
        if value in seen:
            raise _invalid(f"Duplicate option value {value!r}")
        seen.add(value)
        order = option.get("displayOrder")
        entry = {"label": label, "value": value, "displayOrder": index if order is None else order}
        entry.update(hidden=bool(option.get("hidden", False)), description=str(option.get("description") or ""))
        options.append(entry)
    return tuple(options)
