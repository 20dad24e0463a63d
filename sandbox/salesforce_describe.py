"""sObject describe and custom fields (Tooling API ``CustomField``) of the Salesforce sandbox.

``GET .../sobjects/{sobject}/describe`` reports the org's fields as the CRM
does (``If-Modified-Since`` answers 304 while the object's schema is
unchanged). An admin adds a field with ``POST .../tooling/sobjects/CustomField``
``{"FullName": "Contact.Tier__c", "Metadata": {"label", "type", ...}}``; tests
may use the control-plane shortcut ``POST /_sandbox/fields`` with the same body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from werkzeug.http import parse_date
from werkzeug.wrappers import Request, Response

from sandbox.core import empty_response, json_response
from sandbox.salesforce_fields import RecordError
from sandbox.salesforce_rest import parse_json, sobject_spec
from sandbox.salesforce_schema import FieldSpec, ObjectSpec

if TYPE_CHECKING:
    from sandbox.salesforce_store import OrgStore

__all__ = ["DescribeMixin", "describe_field", "field_from_metadata"]

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "double": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
_UNSIZED = frozenset({"boolean", "double", "date", "datetime"})
_NAME_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*__c$")
_MAX_NAME = 40  # characters before the __c suffix


def describe_field(spec: FieldSpec) -> dict[str, Any]:
    """One ``fields[]`` entry of a describe, with the keys clients read."""
    string_like = spec.type not in _UNSIZED and spec.type not in ("id", "reference")
    length = spec.length if spec.type not in _UNSIZED else 0
    picklist = [
        {
            "active": True,
            "defaultValue": value == spec.picklist_default,
            "label": value,
            "validFor": None,
            "value": value,
        }
        for value in spec.picklist
    ]
    return {
        "aggregatable": spec.type not in ("textarea", "boolean"),
        "autoNumber": False,
        "byteLength": length * 3 if string_like or spec.type in ("id", "reference") else 0,
        "calculated": False,
        "calculatedFormula": None,
        "caseSensitive": False,
        "createable": spec.writable,
        "custom": spec.custom,
        "defaultValue": spec.default if spec.type == "boolean" else None,
        "defaultedOnCreate": spec.type == "boolean" or spec.name in ("Id", "OwnerId"),
        "dependentPicklist": False,
        "digits": 0,
        "externalId": spec.external_id,
        "filterable": spec.type != "textarea",
        "groupable": spec.type not in ("textarea", "double", "datetime"),
        "htmlFormatted": False,
        "idLookup": spec.external_id or spec.name in ("Id", "Email"),
        "inlineHelpText": None,
        "label": spec.label,
        "length": length,
        "name": spec.name,
        "nameField": spec.name == "Name",
        "nillable": not spec.required and spec.type not in ("id", "boolean") and spec.name not in _AUDIT,
        "permissionable": spec.writable and not spec.required,
        "picklistValues": picklist,
        "precision": spec.precision,
        "referenceTo": [spec.reference_to] if spec.reference_to else [],
        "relationshipName": spec.relationship_name,
        "restrictedPicklist": spec.restricted,
        "scale": spec.scale,
        "soapType": _SOAP_TYPES.get(spec.type, "xsd:string"),
        "sortable": spec.type != "textarea",
        "type": spec.type,
        "unique": False,
        "updateable": spec.writable,
    }


_AUDIT = frozenset({"CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp", "OwnerId"})


def _integrity(message: str, *fields: str) -> RecordError:
    return RecordError("FIELD_INTEGRITY_EXCEPTION", message, list(fields))


def _int(metadata: Mapping[str, Any], key: str, default: int | None = None) -> int:
    raw = metadata.get(key, default)
    try:
        value = int(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise _integrity(f"{key.capitalize()}: You must enter a value", key)
    return value


def _picklist(metadata: Mapping[str, Any]) -> tuple[tuple[str, ...], bool, str | None]:
    value_set = metadata.get("valueSet")
    definition = value_set.get("valueSetDefinition") if isinstance(value_set, Mapping) else None
    entries = definition.get("value") if isinstance(definition, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise _integrity("Values: You must enter at least one value", "valueSet")
    values, default = [], None
    for entry in entries:
        name = entry.get("fullName") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            raise _integrity("Values: a value needs a fullName", "valueSet")
        if name in values:
            raise RecordError("DUPLICATE_VALUE", f"Duplicate picklist value: {name}", ["valueSet"])
        values.append(name)
        if entry.get("default") in (True, "true"):
            default = name
    return tuple(values), bool(value_set.get("restricted", False)), default


def field_from_metadata(objects: Mapping[str, ObjectSpec], full_name: Any, metadata: Any) -> tuple[str, FieldSpec]:
    """The object name and field spec a Tooling ``CustomField`` body describes, or the CRM's refusal."""
    if not isinstance(full_name, str) or full_name.count(".") != 1:
        raise RecordError("INVALID_FIELD", "FullName must be Object.Field__c, e.g. Contact.Tier__c", ["FullName"])
    if not isinstance(metadata, Mapping):
        raise RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [Metadata]", ["Metadata"])
    sobject_name, name = full_name.split(".")
    sobject = next((spec for spec in objects.values() if spec.name.lower() == sobject_name.lower()), None)
    if sobject is None:
        raise RecordError("INVALID_TYPE", f"sObject type '{sobject_name}' is not supported.", ["FullName"])
    if not _NAME_RE.match(name) or len(name) - 3 > _MAX_NAME:
        raise _integrity(
            "Field Name: The API name must begin with a letter, end with __c, and use only alphanumeric "
            "characters and single underscores (at most 40 characters).",
            "FullName",
        )
    if sobject.field(name) is not None:
        raise RecordError(
            "DUPLICATE_DEVELOPER_NAME", f"There is already a field named {name[:-3]} on {sobject.name}.", ["FullName"]
        )
    label = metadata.get("label")
    if not isinstance(label, str) or not label.strip():
        raise _integrity("Field Label: You must enter a value", "label")
    kind = metadata.get("type")
    common: dict[str, Any] = {"name": name, "label": label, "writable": True}
    if kind == "Text":
        length = _int(metadata, "length")
        if not 1 <= length <= 255:
            raise _integrity("Length: the length must be between 1 and 255", "length")
        return sobject.name, FieldSpec(type="string", length=length, **common)
    if kind in ("TextArea", "LongTextArea"):
        length = _int(metadata, "length", 255 if kind == "TextArea" else None)
        return sobject.name, FieldSpec(type="textarea", length=length, **common)
    if kind in ("Email", "Phone", "Url"):
        length = {"Email": 80, "Phone": 40, "Url": 255}[kind]
        return sobject.name, FieldSpec(type=kind.lower(), length=length, **common)
    if kind == "Number":
        precision, scale = _int(metadata, "precision", 18), _int(metadata, "scale", 0)
        if not (1 <= precision <= 18 and 0 <= scale <= precision):
            raise _integrity("Length and Decimal Places: the sum must be 18 or less", "precision", "scale")
        return sobject.name, FieldSpec(type="double", precision=precision, scale=scale, **common)
    if kind == "Checkbox":
        default = str(metadata.get("defaultValue", "")).lower()
        if default not in ("true", "false"):
            raise _integrity("Default Value: a checkbox needs defaultValue true or false", "defaultValue")
        return sobject.name, FieldSpec(type="boolean", default=default == "true", **common)
    if kind in ("Date", "DateTime"):
        return sobject.name, FieldSpec(type=kind.lower(), **common)
    if kind == "Picklist":
        values, restricted, default = _picklist(metadata)
        spec = FieldSpec(
            type="picklist", length=255, picklist=values, restricted=restricted, picklist_default=default, **common
        )
        return sobject.name, spec
    raise _integrity(f"Data Type: unsupported custom field type {kind!r}", "type")


class DescribeMixin:
    """Describe and Tooling handlers; mixed into :class:`sandbox.salesforce.SalesforceApp`."""

    store: OrgStore
    api: Callable[..., None]
    control: Any
    _control_json: Callable[[Request], dict[str, Any]]

    def setup_describe_routes(self) -> None:
        base = "/services/data/{version}"
        self.api("GET", base + "/sobjects/{sobject}/describe", self.sobject_describe)
        self.api("POST", base + "/tooling/sobjects/CustomField", self.tooling_create_field)
        self.api("GET", base + "/tooling/sobjects/CustomField/{field_id}", self.tooling_get_field)
        self.control.add("POST", "/_sandbox/fields", self._control_add_field)

    def sobject_describe(self, request: Request, version: str, sobject: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        since = parse_date(request.headers.get("If-Modified-Since"))
        modified = self.store.schema_modified[spec.name].replace(microsecond=0)
        if since is not None and modified <= since:
            return empty_response(304)
        base = f"/services/data/{version}/sobjects/{spec.name}"
        body = {
            "name": spec.name,
            "label": spec.label,
            "labelPlural": spec.label + "s",
            "keyPrefix": spec.key_prefix,
            "custom": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "searchable": True,
            "childRelationships": [],
            "recordTypeInfos": [],
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
            "fields": [describe_field(field_spec) for field_spec in spec.fields],
        }
        return json_response(body)

    def add_custom_field(self, body: Any) -> tuple[str, str, FieldSpec]:
        """Create the field a Tooling ``CustomField`` body describes: (its 00N id, object, spec)."""
        if not isinstance(body, Mapping):
            raise RecordError("JSON_PARSER_ERROR", "Cannot deserialize instance of CustomField from non-object value")
        store = self.store
        with store.lock:
            sobject, spec = field_from_metadata(store.objects, body.get("FullName"), body.get("Metadata"))
            store.add_field(sobject, spec)
            field_id = store.new_id("00N")
            store.tooling[field_id] = {"FullName": f"{sobject}.{spec.name}", "Metadata": dict(body["Metadata"])}
        return field_id, sobject, spec

    def tooling_create_field(self, request: Request, version: str) -> Response:
        field_id, _, _ = self.add_custom_field(parse_json(request))
        return json_response({"id": field_id, "success": True, "errors": [], "warnings": [], "infos": []}, 201)

    def tooling_get_field(self, request: Request, version: str, field_id: str) -> Response:
        definition = self.store.tooling.get(field_id)
        if definition is None:
            raise RecordError("NOT_FOUND", "The requested resource does not exist", [], 404)
        sobject, name = definition["FullName"].split(".")
        body = {
            "attributes": {
                "type": "CustomField",
                "url": f"/services/data/{version}/tooling/sobjects/CustomField/{field_id}",
            },
            "Id": field_id,
            "DeveloperName": name.removesuffix("__c"),
            "TableEnumOrId": sobject,
            "FullName": definition["FullName"],
            "Metadata": definition["Metadata"],
        }
        return json_response(body)

    def _control_add_field(self, request: Request) -> Response:
        try:
            field_id, sobject, spec = self.add_custom_field(self._control_json(request))
        except RecordError as error:
            raise ValueError(f"{error.code}: {error.message}") from None
        return json_response({"id": field_id, "sobject": sobject, "field": describe_field(spec)}, 201)
