"""REST sObject resources and sObject Collections of the Salesforce sandbox.

Single-record calls answer the CRM's error arrays (``errorCode``); collections
answer HTTP 200 with per-record results (``statusCode``) in request order and
honour ``allOrNone`` by rolling the whole call back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.core import ApiError, empty_response, json_response
from sandbox.salesforce_schema import INTEGRATION_USER_ID, OBJECTS, FieldSpec, ObjectSpec, normalize_id
from sandbox.salesforce_store import OrgStore, RecordError, Transaction
from sandbox.salesforce_ui import render

__all__ = ["RestMixin", "api_error", "parse_json", "sobject_spec"]

MAX_COLLECTION = 200
_ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


def api_error(status: int, code: str, message: str, fields: list[str] | None = None) -> ApiError:
    error: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        error["fields"] = fields
    return ApiError(status, [error])


def parse_json(request: Request) -> Any:
    """The JSON body, or the CRM's 400 JSON_PARSER_ERROR."""
    data = request.get_data(cache=True)
    if not data.strip():
        raise api_error(400, "JSON_PARSER_ERROR", "No content to map due to end-of-input at [line:1, column:0]")
    try:
        return json.loads(data)
    except ValueError as exc:
        line, column = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
        detail = getattr(exc, "msg", str(exc))
        raise api_error(400, "JSON_PARSER_ERROR", f"{detail} at [line:{line}, column:{column}]") from None


def sobject_spec(name: str, objects: Mapping[str, ObjectSpec] = OBJECTS) -> ObjectSpec:
    """The object named ``name`` (any case) in ``objects`` (an org's schema), or the CRM's 404."""
    for spec in objects.values():
        if spec.name.lower() == name.lower():
            return spec
    raise api_error(404, "NOT_FOUND", "The requested resource does not exist")


def _version_number(version: str) -> str:
    return version.removeprefix("v")


def _field_list(spec: ObjectSpec, raw: Any) -> list[str]:
    names = raw.split(",") if isinstance(raw, str) else list(raw or [])
    out = []
    for name in (n.strip() for n in names if isinstance(n, str)):
        field_spec = spec.field(name)
        if field_spec is None:
            raise api_error(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on entity '{spec.name}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL "
                "or the describe call for the appropriate names.",
            )
        if field_spec.name not in out:
            out.append(field_spec.name)
    return out


def _ok(record_id: str, created: bool | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"id": record_id, "success": True, "errors": []}
    if created is not None:
        result["created"] = created
    return result


def _failed(error: RecordError) -> dict[str, Any]:
    return {"success": False, "errors": [error.as_collection()]}


class RestMixin:
    """sObject and Collections handlers; mixed into :class:`sandbox.salesforce.SalesforceApp`."""

    store: OrgStore
    api: Callable[..., None]  # route registration, provided by the app

    def setup_rest_routes(self) -> None:
        base = "/services/data/{version}"
        self.api("GET", base, self.resources)
        self.api("GET", base + "/sobjects", self.global_describe)
        self.api("GET", base + "/sobjects/{sobject}", self.sobject_info)
        self.api("POST", base + "/sobjects/{sobject}", self.sobject_create)
        for method, handler in (
            ("GET", self.record_get),
            ("PATCH", self.record_update),
            ("DELETE", self.record_delete),
        ):
            self.api(method, base + "/sobjects/{sobject}/{record_id}", handler)
        for method, handler in (("GET", self.external_get), ("PATCH", self.upsert), ("DELETE", self.external_delete)):
            self.api(method, base + "/sobjects/{sobject}/{field}/{value}", handler)
        self.api("POST", base + "/composite/sobjects", self.collection_create)
        self.api("PATCH", base + "/composite/sobjects", self.collection_update)
        self.api("DELETE", base + "/composite/sobjects", self.collection_delete)
        self.api("GET", base + "/composite/sobjects/{sobject}", self.collection_retrieve)
        self.api("POST", base + "/composite/sobjects/{sobject}", self.collection_retrieve)
        self.api("PATCH", base + "/composite/sobjects/{sobject}/{field}", self.collection_upsert)

    @contextmanager
    def _tx(self, request: Request, version: str) -> Iterator[Transaction]:
        origin = f"com/salesforce/api/rest/{_version_number(version)}"
        with self.store.transaction(user_id=INTEGRATION_USER_ID, origin=origin) as tx:
            header = request.headers.get("Sforce-Duplicate-Rule-Header", "")
            tx.allow_duplicates = "allowsave=true" in header.replace(" ", "").lower()
            yield tx

    # -- discovery --------------------------------------------------------------------

    def resources(self, request: Request, version: str) -> Response:
        names = ("sobjects", "query", "queryAll", "limits", "composite")
        return json_response({name: f"/services/data/{version}/{name}" for name in names})

    def _object_summary(self, spec: ObjectSpec, version: str) -> dict[str, Any]:
        base = f"/services/data/{version}/sobjects/{spec.name}"
        return {
            "name": spec.name,
            "label": spec.label,
            "labelPlural": spec.label + "s",
            "keyPrefix": spec.key_prefix,
            "custom": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
        }

    def global_describe(self, request: Request, version: str) -> Response:
        objects = [self._object_summary(spec, version) for spec in self.store.objects.values()]
        return json_response({"encoding": "UTF-8", "maxBatchSize": MAX_COLLECTION, "sobjects": objects})

    def sobject_info(self, request: Request, version: str, sobject: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        return json_response({"objectDescribe": self._object_summary(spec, version), "recentItems": []})

    # -- single records -------------------------------------------------------------------

    def sobject_create(self, request: Request, version: str, sobject: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        data = parse_json(request)
        with self._tx(request, version) as tx:
            record_id = tx.create(spec, data)
        return json_response(_ok(record_id), 201)

    def record_get(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        if normalize_id(record_id) is None:
            raise api_error(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}"
            )
        names = _field_list(spec, request.args["fields"]) if request.args.get("fields") else None
        with self.store.lock:
            record = self.store.live(spec, record_id)
            return json_response(render(spec, record, names, _version_number(version)))

    def record_update(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        data = parse_json(request)
        with self._tx(request, version) as tx:
            tx.update(spec, record_id, data)
        return empty_response(204)

    def record_delete(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        with self._tx(request, version) as tx:
            tx.delete(spec, record_id)
        return empty_response(204)

    # -- by external id -----------------------------------------------------------------------

    def _external(self, spec: ObjectSpec, field: str) -> FieldSpec:
        field_spec = spec.field(field)
        if field_spec is None or not (field_spec.external_id or field_spec.name == "Id"):
            raise api_error(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field}"
            )
        return field_spec

    def _matches(self, spec: ObjectSpec, field_spec: FieldSpec, value: str) -> list[str]:
        if field_spec.name == "Id":
            record_id = normalize_id(value)
            record = self.store.get(spec.name, record_id)
            return [record_id] if record_id and record is not None and not record["IsDeleted"] else []
        return self.store.lookup(spec.name, field_spec.name, value)

    def _multiple(self, spec: ObjectSpec, version: str, ids: list[str]) -> Response:
        return json_response([f"/services/data/{version}/sobjects/{spec.name}/{i}" for i in ids], 300)

    def external_get(self, request: Request, version: str, sobject: str, field: str, value: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        field_spec = self._external(spec, field)
        with self.store.lock:
            ids = self._matches(spec, field_spec, value)
            if not ids:
                raise api_error(404, "NOT_FOUND", "The requested resource does not exist")
            if len(ids) > 1:
                return self._multiple(spec, version, ids)
            return json_response(render(spec, self.store.tables[spec.name][ids[0]], None, _version_number(version)))

    def external_delete(self, request: Request, version: str, sobject: str, field: str, value: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        field_spec = self._external(spec, field)
        with self._tx(request, version) as tx:
            ids = self._matches(spec, field_spec, value)
            if len(ids) > 1:
                return self._multiple(spec, version, ids)
            if not ids:
                raise api_error(404, "NOT_FOUND", "The requested resource does not exist")
            tx.delete(spec, ids[0])
        return empty_response(204)

    def _upsert_one(
        self, tx: Transaction, spec: ObjectSpec, field_spec: FieldSpec, value: Any, data: Any, *, update_only: bool
    ) -> tuple[str, bool] | list[str]:
        """Create or update by external id: (id, created), or the ids when several match."""
        if not isinstance(data, dict):
            raise RecordError("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from non-object value")
        ids = self._matches(spec, field_spec, str(value))
        if len(ids) > 1:
            return ids
        if ids:
            tx.update(spec, ids[0], data)
            return ids[0], False
        if update_only or field_spec.name == "Id":
            raise RecordError("NOT_FOUND", "The requested resource does not exist", [], 404)
        return tx.create(spec, {**data, field_spec.name: value}, in_collection=True), True

    def upsert(self, request: Request, version: str, sobject: str, field: str, value: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        field_spec = self._external(spec, field)
        data = parse_json(request)
        update_only = request.args.get("updateOnly", "").lower() == "true"
        with self._tx(request, version) as tx:
            outcome = self._upsert_one(tx, spec, field_spec, value, data, update_only=update_only)
        if isinstance(outcome, list):
            return self._multiple(spec, version, outcome)
        record_id, created = outcome
        if int(_version_number(version).split(".")[0]) < 46:  # before API 46: 201 on create, 204 on update
            return json_response(_ok(record_id), 201) if created else empty_response(204)
        return json_response(_ok(record_id, created), 201 if created else 200)

    # -- collections -----------------------------------------------------------------------------

    def _collection_body(self, request: Request, *, needs_type: bool = True) -> tuple[list[dict[str, Any]], bool]:
        body = parse_json(request)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise api_error(
                400, "JSON_PARSER_ERROR", "Cannot deserialize instance of collection request: 'records' is required"
            )
        if len(records) > MAX_COLLECTION:
            raise api_error(
                400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
            )
        for index, record in enumerate(records):
            kind = record.get("attributes", {}).get("type") if isinstance(record, dict) else None
            if needs_type and not (isinstance(kind, str) and kind.lower() in (n.lower() for n in self.store.objects)):
                raise api_error(
                    400, "INVALID_TYPE", f"Unable to find sObject type for record at index {index}: {kind!r}"
                )
        all_or_none = body.get("allOrNone", False)
        if isinstance(all_or_none, str) and all_or_none.lower() in ("true", "false"):
            all_or_none = all_or_none.lower() == "true"
        if not isinstance(all_or_none, bool):
            raise api_error(400, "JSON_PARSER_ERROR", f"Cannot deserialize value of type boolean from {all_or_none!r}")
        return records, all_or_none

    def _run_collection(
        self, request: Request, version: str, items: list[Any], all_or_none: bool, apply: Any
    ) -> Response:
        results: list[dict[str, Any]] = []
        with self._tx(request, version) as tx:
            for item in items:
                try:
                    results.append(apply(tx, item))
                except RecordError as error:
                    results.append(_failed(error))
            if all_or_none and any(not result["success"] for result in results):
                tx.rollback()
                results = [result if not result["success"] else _failed(_ROLLED_BACK) for result in results]
        return json_response(results)

    def collection_create(self, request: Request, version: str) -> Response:
        records, all_or_none = self._collection_body(request)

        def apply(tx: Transaction, record: dict[str, Any]) -> dict[str, Any]:
            return _ok(
                tx.create(sobject_spec(record["attributes"]["type"], self.store.objects), record, in_collection=True)
            )

        return self._run_collection(request, version, records, all_or_none, apply)

    def collection_update(self, request: Request, version: str) -> Response:
        records, all_or_none = self._collection_body(request)

        def apply(tx: Transaction, record: dict[str, Any]) -> dict[str, Any]:
            raw_id = record.get("id", record.get("Id"))
            if not raw_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            tx.update(
                sobject_spec(record["attributes"]["type"], self.store.objects), raw_id, record, in_collection=True
            )
            return _ok(normalize_id(raw_id) or raw_id)

        return self._run_collection(request, version, records, all_or_none, apply)

    def collection_delete(self, request: Request, version: str) -> Response:
        ids = [i for i in request.args.get("ids", "").split(",") if i]
        if not ids:
            raise api_error(400, "MISSING_ARGUMENT", "ids: parameter is required")
        if len(ids) > MAX_COLLECTION:
            raise api_error(
                400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
            )
        all_or_none = request.args.get("allOrNone", "false").lower() == "true"

        def apply(tx: Transaction, raw_id: str) -> dict[str, Any]:
            record_id = normalize_id(raw_id)
            spec = next(
                (s for s in self.store.objects.values() if record_id and record_id.startswith(s.key_prefix)), None
            )
            if spec is None:
                raise RecordError("MALFORMED_ID", f"malformed id {raw_id}")
            if self.store.get(spec.name, record_id) is None:
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
            tx.delete(spec, record_id)
            return _ok(record_id)

        return self._run_collection(request, version, ids, all_or_none, apply)

    def collection_retrieve(self, request: Request, version: str, sobject: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        if request.method == "POST":
            body = parse_json(request)
            raw_ids, raw_fields = (body.get("ids"), body.get("fields")) if isinstance(body, dict) else (None, None)
        else:
            raw_ids, raw_fields = request.args.get("ids", ""), request.args.get("fields", "")
        ids = raw_ids.split(",") if isinstance(raw_ids, str) else list(raw_ids or [])
        if not [i for i in ids if i] or not raw_fields:
            raise api_error(400, "MISSING_ARGUMENT", "ids and fields are required")
        names = _field_list(spec, raw_fields)
        limit = 2000 if request.method == "POST" else MAX_COLLECTION
        if len(ids) > limit:
            raise api_error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {limit} records into this call",
            )
        out: list[dict[str, Any] | None] = []
        with self.store.lock:
            for raw_id in ids:
                record = self.store.get(spec.name, normalize_id(raw_id.strip()))
                live = record is not None and not record["IsDeleted"]
                out.append(render(spec, record, names, _version_number(version)) if live else None)
        return json_response(out)

    def collection_upsert(self, request: Request, version: str, sobject: str, field: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        field_spec = self._external(spec, field)
        records, all_or_none = self._collection_body(request)

        def apply(tx: Transaction, record: dict[str, Any]) -> dict[str, Any]:
            value = next((v for k, v in record.items() if k.lower() == field_spec.name.lower()), None)
            if value in (None, ""):
                raise RecordError("MISSING_ARGUMENT", f"{field_spec.name} not specified", [field_spec.name])
            outcome = self._upsert_one(tx, spec, field_spec, value, record, update_only=False)
            if isinstance(outcome, list):
                raise RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{field_spec.label}: more than one record found for external id field: {outcome}",
                    [field_spec.name],
                )
            return _ok(*outcome)

        return self._run_collection(request, version, records, all_or_none, apply)
