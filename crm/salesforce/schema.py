"""Salesforce's Contact describe (`GET sobjects/Contact/describe`) as `RemoteField`s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crm.base import FieldOption, RemoteField, Transient
from crm.salesforce.client import SalesforceClient

_TYPES = {
    "id": "id",
    "reference": "reference",
    "string": "string",
    "textarea": "string",
    "url": "string",
    "encryptedstring": "string",
    "combobox": "string",  # suggestions, but any text is taken
    "email": "email",
    "phone": "phone",
    "double": "number",
    "int": "number",
    "long": "number",
    "currency": "number",
    "percent": "number",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
    "picklist": "enum",
    "multipicklist": "other",  # several values, `;`-separated: no single-valued type fits
}
_WITH_OPTIONS = frozenset({"picklist", "multipicklist", "combobox"})


def describe_contact(client: SalesforceClient) -> list[dict[str, Any]]:
    answer = client.request("GET", "sobjects/Contact/describe")
    if not isinstance(answer, Mapping):
        raise Transient("unexpected describe answer", code="BAD_RESPONSE")
    return [item for item in answer.get("fields") or [] if isinstance(item, Mapping)]


def remote_field(described: Mapping[str, Any]) -> RemoteField:
    kind = str(described.get("type") or "")
    name = str(described.get("name") or "")
    options = None
    if kind in _WITH_OPTIONS:
        # Inactive values stay on old records but are refused on writes: not options any more.
        options = tuple(
            FieldOption(str(entry.get("value", "")), str(entry.get("label") or entry.get("value", "")))
            for entry in described.get("picklistValues") or []
            if isinstance(entry, Mapping) and entry.get("active", True)
        )
    length = described.get("length")
    return RemoteField(
        name=name,
        label=str(described.get("label") or name),
        type=_TYPES.get(kind, "other"),
        remote_type=kind,
        length=length if isinstance(length, int) and length > 0 else None,  # 0: a type without one
        options=options,
        # SyncRoot both creates and updates contacts: a field it may set on only one of the two
        # cannot carry a value reliably.
        writable=bool(described.get("createable")) and bool(described.get("updateable")),
        custom=bool(described.get("custom")),
    )
