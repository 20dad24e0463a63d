"""HubSpot's contact properties (`GET /crm/v3/properties/contacts`) as `RemoteField`s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crm.base import FieldOption, RemoteField
from crm.hubspot.client import HubSpotClient
from crm.hubspot.transform import ID_PROPERTY

PROPERTIES = "/crm/v3/properties/contacts"
_TYPES = {
    "string": "string",
    "number": "number",
    "bool": "boolean",
    "date": "date",
    "datetime": "datetime",
    "enumeration": "enum",
    "phone_number": "phone",
}
# Enumerations whose value is not one choice among options of their own.
_MULTIPLE = "checkbox"  # several options at once, `;`-separated: no single-valued type fits


def list_properties(client: HubSpotClient) -> list[dict[str, Any]]:
    """Every live (not archived) contact property definition: one call, HubSpot does not page it."""
    answer = client.request("GET", PROPERTIES, operation="properties", params={"archived": "false"}) or {}
    return [item for item in answer.get("results") or [] if isinstance(item, Mapping)]


def remote_field(prop: Mapping[str, Any]) -> RemoteField:
    kind, field_type = str(prop.get("type") or ""), str(prop.get("fieldType") or "")
    name = str(prop.get("name") or "")
    normal = _TYPES.get(kind, "other")
    if name == ID_PROPERTY:
        normal = "id"
    elif name == "email":
        normal = "email"  # a plain string property to the API, but HubSpot checks it as an address
    elif kind == "string" and field_type == "phonenumber":
        normal = "phone"
    elif kind == "enumeration" and field_type == "booleancheckbox":
        normal = "boolean"  # HubSpot's older booleans: an enumeration of "true" and "false"
    elif kind == "enumeration" and prop.get("externalOptions"):
        normal = "reference"  # ids of other HubSpot objects (owners), not options of its own
    elif kind == "enumeration" and field_type == _MULTIPLE:
        normal = "other"
    options = None
    if kind == "enumeration" and normal != "boolean" and not prop.get("externalOptions"):
        options = tuple(
            FieldOption(str(option.get("value", "")), str(option.get("label", "")))
            for option in prop.get("options") or []
            if isinstance(option, Mapping)
        )
    metadata = prop.get("modificationMetadata") or {}
    return RemoteField(
        name=name,
        label=str(prop.get("label") or name),
        type=normal,
        remote_type=f"{kind}/{field_type}" if field_type else kind,
        length=None,  # HubSpot properties have no per-property length limit
        options=options,
        writable=not metadata.get("readOnlyValue", False) and not prop.get("calculated", False),
        custom=not prop.get("hubspotDefined", False),
    )
