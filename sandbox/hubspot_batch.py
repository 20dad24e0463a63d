"""HubSpot batch endpoints (``/crm/v3/objects/contacts/batch/*``), mixed into the app.

Statuses as the SDK maps them: create 201, read/update/upsert 200, 207 when some
inputs failed (``numErrors`` + ``errors``), archive 204. Batch create is
all-or-nothing unless every input carries an ``objectWriteTraceId``, as HubSpot
documents; update and upsert report failed inputs individually.
"""

from __future__ import annotations

import time
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.core import ApiError, empty_response, json_response
from sandbox.hubspot_store import DEFAULT_PROPERTIES, Contact, hs_error, iso_ms

__all__ = ["MAX_INPUTS", "BatchRoutes"]

MAX_INPUTS = 100


def _input_error(error: ApiError, **context: list[str]) -> dict[str, Any]:
    """A StandardError entry of a 207 body, built from a single-record error."""
    body = error.body
    return {
        "status": "error",
        "category": body.get("category", "VALIDATION_ERROR"),
        "message": body.get("message", ""),
        "context": {**body.get("context", {}), **context},
        "errors": body.get("errors", []),
        "links": {},
    }


def _missing(ids: list[str], verb: str) -> dict[str, Any]:
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": (
            f"Could not {verb} some CONTACT objects, they may be deleted or not exist. Check that ids are valid."
        ),
        "context": {"ids": ids},
        "errors": [],
        "links": {},
    }


def _reply(results: list[dict[str, Any]], errors: list[dict[str, Any]], started_ms: int, status: int) -> Response:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        status = 207
    body["startedAt"] = iso_ms(started_ms)
    body["completedAt"] = iso_ms(int(time.time() * 1000))
    return json_response(body, status)


class BatchRoutes:
    """Batch create/read/update/upsert/archive handlers for :class:`~sandbox.hubspot.HubSpotApp`."""

    def add_batch_routes(self, prefix: str) -> None:
        for verb in ("create", "read", "update", "upsert", "archive"):
            self.router.add("POST", f"{prefix}/{verb}", getattr(self, f"batch_{verb}"))

    def _batch_inputs(self, request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        body = self.json_body(request)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
            raise hs_error(400, "VALIDATION_ERROR", 'Invalid input JSON: expected {"inputs": [...]}')
        if len(inputs) > MAX_INPUTS:
            raise hs_error(400, "VALIDATION_ERROR", f"Batch input size {len(inputs)} exceeds the limit of {MAX_INPUTS}")
        return body, inputs

    @staticmethod
    def _no_duplicates(keys: list[str]) -> None:
        seen: set[str] = set()
        duplicates = sorted({key for key in keys if key in seen or seen.add(key)})
        if duplicates:
            raise hs_error(400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {duplicates}")

    def batch_create(self, request: Request) -> Response:
        started = int(time.time() * 1000)
        _, inputs = self._batch_inputs(request)
        store, source = self.store, self.api_source
        traced = bool(inputs) and all(item.get("objectWriteTraceId") for item in inputs)
        results, errors, created = [], [], []
        with store.lock:
            if not traced:
                # One bad input fails the whole batch: validate everything before writing.
                cleaned = [store.validate(item.get("properties", {}), creating=True) for item in inputs]
                emails = [props["email"] for props in cleaned if props.get("email")]
                self._no_duplicates(emails)
                for email in emails:
                    owner = store.email_owner(email)
                    if owner is not None:
                        raise hs_error(409, "CONFLICT", f"Contact already exists. Existing ID: {owner}")
            for index, item in enumerate(inputs):
                trace = item.get("objectWriteTraceId")
                try:
                    properties = (
                        cleaned[index] if not traced else store.validate(item.get("properties", {}), creating=True)
                    )
                    contact = store.create(properties, source=source)
                except ApiError as error:
                    if not traced:
                        raise
                    errors.append(_input_error(error, objectWriteTraceId=[trace]))
                    continue
                created.append((contact, properties))
                result = contact.to_json()
                if trace:
                    result["objectWriteTraceId"] = trace
                results.append(result)
        for contact, properties in created:
            self.created(contact, properties, source)
        return _reply(results, errors, started, 201)

    def batch_read(self, request: Request) -> Response:
        started = int(time.time() * 1000)
        body, inputs = self._batch_inputs(request)
        names = body.get("properties") or list(DEFAULT_PROPERTIES)
        id_property = body.get("idProperty")
        archived = self.archived_flag(request)
        results, missing = [], []
        for item in inputs:
            key = str(item.get("id", ""))
            try:
                contact = self.store.resolve(key, id_property, archived=archived)
            except ApiError as error:
                if error.status != 404:
                    raise
                missing.append(key)
                continue
            results.append(contact.to_json(names))
        return _reply(results, [_missing(missing, "get")] if missing else [], started, 200)

    def batch_update(self, request: Request) -> Response:
        started = int(time.time() * 1000)
        _, inputs = self._batch_inputs(request)
        for item in inputs:
            if item.get("idProperty") not in (None, "", "hs_object_id"):
                message = f"Unable to perform update/upsert by non-unique 0-1 property {item['idProperty']}"
                raise hs_error(400, "VALIDATION_ERROR", message)
        self._no_duplicates([str(item.get("id", "")) for item in inputs])
        store, source = self.store, self.api_source
        results, errors, missing = [], [], []
        for item in inputs:
            key = str(item.get("id", ""))
            try:
                contact = store.get(key)
                changed = store.update(contact, store.validate(item.get("properties", {}), creating=False))
            except ApiError as error:
                if error.status == 404:
                    missing.append(key)
                else:
                    errors.append(_input_error(error, ids=[key]))
                continue
            self.changed(contact, changed, source)
            results.append(contact.to_json())
        if missing:
            errors.insert(0, _missing(missing, "update"))
        return _reply(results, errors, started, 200)

    def batch_upsert(self, request: Request) -> Response:
        started = int(time.time() * 1000)
        _, inputs = self._batch_inputs(request)
        for item in inputs:
            if item.get("idProperty") != "email":
                message = "Upsert requires idProperty: only the unique property email is supported for contacts"
                raise hs_error(400, "VALIDATION_ERROR", message)
        self._no_duplicates([str(item.get("id", "")).strip().lower() for item in inputs])
        results, errors = [], []
        for item in inputs:
            email = str(item.get("id", "")).strip().lower()
            try:
                result = self._upsert_one(email, item.get("properties", {}))
            except ApiError as error:
                errors.append(_input_error(error, ids=[email]))
                continue
            results.append(result)
        return _reply(results, errors, started, 200)

    def _upsert_one(self, email: str, properties: Any) -> dict[str, Any]:
        store, source = self.store, self.api_source
        clean = store.validate({**(properties if isinstance(properties, dict) else {}), "email": email}, creating=False)
        with store.lock:
            try:
                contact: Contact | None = store.get_by_email(email)
            except ApiError:
                contact = None
            if contact is None:
                created_props = {name: value for name, value in clean.items() if value}
                contact = store.create(created_props, source=source)
                new, changed = True, created_props
            else:
                new, changed = False, store.update(contact, clean)
        if new:
            self.created(contact, changed, source)
        else:
            self.changed(contact, changed, source)
        return {**contact.to_json(), "new": new}

    def batch_archive(self, request: Request) -> Response:
        _, inputs = self._batch_inputs(request)
        for item in inputs:
            contact = self.store.archive(str(item.get("id", "")))
            if contact is not None:
                self.archived(contact, self.api_source)
        return empty_response(204)
