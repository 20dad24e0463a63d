"""Bulk API 2.0: CSV ingest jobs and query jobs, as simple-salesforce's ``bulk2`` drives them.

Ingest (``/services/data/vNN.0/jobs/ingest``): create a job (``insert``, ``update``, ``upsert``
on ``externalIdFieldName``, ``delete``), ``PUT`` its CSV to ``contentUrl`` once (201), ``PATCH``
``{"state": "UploadComplete"}``; the org then processes it in the background
(UploadComplete → InProgress → JobComplete, or Failed when the CSV itself is unusable) and
``successfulResults/``, ``failedResults/`` and ``unprocessedrecords/`` answer CSV. Records are
written 200 to a transaction, each on its own: one refused record fails alone with the CRM's
code and message in ``sf__Error``. An empty value leaves a field as it is; ``#N/A`` clears it.

Query (``/jobs/query``): ``{"operation": "query"|"queryAll", "query": "SELECT …"}`` runs in the
background; ``GET /jobs/query/{id}/results?maxRecords=N&locator=L`` answers CSV pages with
``Sforce-Locator`` (the string ``null`` on the last page) and ``Sforce-NumberOfRecords``.
Aggregates (``COUNT()``) are refused, as in the CRM.

A job costs a handful of API calls whatever its size, which is the point of it.
"""

from __future__ import annotations

import base64
import csv
import io
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.core import empty_response, json_response
from sandbox.salesforce_rest import api_error, parse_json
from sandbox.salesforce_schema import INTEGRATION_USER_ID, ObjectSpec, normalize_id
from sandbox.salesforce_store import OrgStore, RecordError, now_ms
from sandbox.soql import SoqlError, parse

__all__ = ["BulkMixin"]

DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
CHUNK = 200  # records per transaction, as the CRM processes them
NULL_MARKER = "#N/A"
FINAL_STATES = ("JobComplete", "Failed", "Aborted")


def _stamp(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _csv_text(rows: list[list[str]], delimiter: str, line_ending: str) -> str:
    """Every value quoted, as the CRM writes its result files."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=line_ending, quoting=csv.QUOTE_ALL)
    writer.writerows(rows)
    return out.getvalue()


def _csv_response(text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    response = Response(text.encode(), status=200, content_type="text/csv")
    for name, value in headers or ():
        response.headers[name] = value
    return response


def _flat(record: dict[str, Any], path: str) -> str:
    """One column of a query result row: relationship paths walk the nested records."""
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and len(value) == 28 and value[10] == "T" and value.endswith("+0000"):
        return value[:-5] + "Z"  # result files write date-times in UTC with a Z (REST: +0000)
    return str(value)


def _error_text(error: RecordError) -> str:
    return f"{error.code}:{error.message}:{','.join(error.fields or [])} --"


class BulkMixin:
    """Bulk API 2.0 handlers; mixed into :class:`sandbox.salesforce.SalesforceApp`."""

    store: OrgStore
    config: dict[str, Any]
    api: Callable[..., None]
    _execute: Callable[..., tuple[int, list[dict[str, Any]]]]

    def setup_bulk_routes(self) -> None:
        self.bulk_jobs: dict[str, dict[str, Any]] = {}
        self._bulk_lock = threading.RLock()
        base = "/services/data/{version}/jobs"
        self.api("POST", base + "/ingest", self.ingest_create)
        self.api("GET", base + "/ingest", self.ingest_list)
        self.api("GET", base + "/ingest/{job_id}", self.ingest_get)
        self.api("PATCH", base + "/ingest/{job_id}", self.ingest_state)
        self.api("DELETE", base + "/ingest/{job_id}", self.job_delete)
        self.api("PUT", base + "/ingest/{job_id}/batches", self.ingest_upload)
        for kind in ("successfulResults", "failedResults", "unprocessedrecords", "unprocessedRecords"):
            self.api("GET", base + "/ingest/{job_id}/" + kind, self._results_handler(kind.lower()))
        self.api("POST", base + "/query", self.query_job_create)
        self.api("GET", base + "/query", self.query_job_list)
        self.api("GET", base + "/query/{job_id}", self.query_job_get)
        self.api("PATCH", base + "/query/{job_id}", self.query_job_abort)
        self.api("DELETE", base + "/query/{job_id}", self.job_delete)
        self.api("GET", base + "/query/{job_id}/results", self.query_job_results)

    # -- jobs --------------------------------------------------------------------------

    def _job(self, job_id: str, kind: str) -> dict[str, Any]:
        job = self.bulk_jobs.get(normalize_id(job_id) or "")
        if job is None or job["kind"] != kind:
            raise api_error(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _info(self, job: dict[str, Any]) -> dict[str, Any]:
        with self._bulk_lock:  # a background run may be updating it
            return {key: value for key, value in job.items() if not key.startswith("_") and key != "kind"}

    def _new_job(self, kind: str, version: str, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
        delimiter = body.get("columnDelimiter", "COMMA")
        line_ending = body.get("lineEnding", "LF")
        if delimiter not in DELIMITERS:
            raise api_error(400, "INVALIDJOB", f"Invalid column delimiter: {delimiter}")
        if line_ending not in LINE_ENDINGS:
            raise api_error(400, "INVALIDJOB", f"Invalid line ending: {line_ending}")
        if body.get("contentType", "CSV") != "CSV":
            raise api_error(400, "INVALIDJOB", "Only CSV content is supported")
        stamp = _stamp(now_ms())
        job = {
            "id": self.store.new_id("750"),
            "kind": kind,
            "operation": body.get("operation"),
            "object": fields.pop("object"),
            "createdById": INTEGRATION_USER_ID,
            "createdDate": stamp,
            "systemModstamp": stamp,
            "state": fields.pop("state"),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(version.removeprefix("v")),
            "lineEnding": line_ending,
            "columnDelimiter": delimiter,
            **fields,
        }
        with self._bulk_lock:
            self.bulk_jobs[job["id"]] = job
        return job

    def _set(self, job: dict[str, Any], **changes: Any) -> None:
        with self._bulk_lock:
            job.update(changes, systemModstamp=_stamp(now_ms()))

    def job_delete(self, request: Request, version: str, job_id: str) -> Response:
        kind = "query" if "/jobs/query/" in request.path else "ingest"
        job = self._job(job_id, kind)
        if job["state"] not in (*FINAL_STATES, "Open"):
            raise api_error(400, "INVALIDJOBSTATE", f"Job is in state {job['state']} and cannot be deleted")
        with self._bulk_lock:
            self.bulk_jobs.pop(job["id"], None)
        return empty_response(204)

    def _list(self, kind: str) -> Response:
        with self._bulk_lock:
            records = [self._info(job) for job in self.bulk_jobs.values() if job["kind"] == kind]
        return json_response({"done": True, "records": records, "nextRecordsUrl": None})

    # -- ingest ------------------------------------------------------------------------

    def ingest_create(self, request: Request, version: str) -> Response:
        body = parse_json(request)
        if not isinstance(body, dict):
            raise api_error(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of job from non-object value")
        operation = body.get("operation")
        if operation not in INGEST_OPERATIONS:
            raise api_error(400, "INVALIDJOB", f"Invalid operation: {operation}")
        spec = self.store.objects.get(str(body.get("object")))
        if spec is None:
            raise api_error(400, "INVALIDJOB", f"Invalid object: {body.get('object')}")
        fields: dict[str, Any] = {"object": spec.name, "state": "Open"}
        if operation == "upsert":
            external = spec.field(str(body.get("externalIdFieldName") or ""))
            if external is None or not (external.external_id or external.name == "Id"):
                raise api_error(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field name provided, {body.get('externalIdFieldName')} does not match an "
                    f"External ID, Salesforce Id, or indexed field for {spec.name}",
                )
            fields["externalIdFieldName"] = external.name
        job = self._new_job("ingest", version, body, **fields)
        job["contentUrl"] = f"services/data/{version}/jobs/ingest/{job['id']}/batches"
        return json_response(self._info(job))

    def ingest_list(self, request: Request, version: str) -> Response:
        return self._list("ingest")

    def ingest_get(self, request: Request, version: str, job_id: str) -> Response:
        return json_response(self._info(self._job(job_id, "ingest")))

    def ingest_upload(self, request: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id, "ingest")
        if job["state"] != "Open" or "_data" in job:
            raise api_error(409, "INVALIDJOBSTATE", "Job is not in Open state or its data was already uploaded")
        if not request.content_type.startswith("text/csv"):
            raise api_error(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type {request.content_type} is not text/csv")
        with self._bulk_lock:
            job["_data"] = request.get_data().decode("utf-8-sig", "replace")
        return empty_response(201)

    def ingest_state(self, request: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id, "ingest")
        state = (parse_json(request) or {}).get("state")
        if state == "Aborted" and job["state"] not in FINAL_STATES:
            self._set(job, state="Aborted")
        elif state == "UploadComplete" and job["state"] == "Open":
            self._set(job, state="UploadComplete")
            answer = self._info(job)  # as the CRM: the state asked for; the work happens after
            threading.Thread(target=self._run_ingest, args=(job,), daemon=True).start()
            return json_response(answer)
        else:
            raise api_error(400, "INVALIDJOBSTATE", f"Cannot move a job in state {job['state']} to {state}")
        return json_response(self._info(job))

    def _rows(self, job: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        text = job.get("_data") or ""
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[job["columnDelimiter"]])
        rows = [row for row in reader if row]
        if not rows:
            raise ValueError("InvalidBatch : Empty CSV")
        return rows[0], rows[1:]

    def _run_ingest(self, job: dict[str, Any]) -> None:
        spec: ObjectSpec = self.store.objects[job["object"]]
        try:
            header, rows = self._rows(job)
            for name in header:
                if spec.field(name) is None:
                    raise ValueError(f"InvalidBatch : Field name not found : {name}")
            if job["operation"] in ("update", "delete", "hardDelete") and "Id" not in header:
                raise ValueError("InvalidBatch : Field name not found : Id")
            external = job.get("externalIdFieldName")
            if external and external not in header:
                raise ValueError(f"InvalidBatch : Field name not found : {external}")
        except ValueError as error:
            self._set(job, state="Failed", errorMessage=str(error), numberRecordsProcessed=0, numberRecordsFailed=0)
            return
        self._set(job, state="InProgress")
        succeeded: list[list[str]] = []
        failed: list[list[str]] = []
        origin = f"com/salesforce/api/bulk/{job['apiVersion']}"
        for start in range(0, len(rows), CHUNK):
            if job["state"] == "Aborted":
                break
            with self.store.transaction(user_id=INTEGRATION_USER_ID, origin=origin) as tx:
                for row in rows[start : start + CHUNK]:
                    try:
                        record_id, created = self._ingest_row(tx, spec, job, dict(zip(header, row, strict=False)))
                        succeeded.append([record_id, "true" if created else "false", *row])
                    except RecordError as error:
                        failed.append([self._row_id(header, row), _error_text(error), *row])
        processed = len(succeeded) + len(failed)
        with self._bulk_lock:
            job["_results"] = {
                "successfulresults": [["sf__Id", "sf__Created", *header], *succeeded],
                "failedresults": [["sf__Id", "sf__Error", *header], *failed],
                "unprocessedrecords": [header, *rows[processed:]],
            }
        final = "Aborted" if job["state"] == "Aborted" else "JobComplete"
        self._set(job, state=final, numberRecordsProcessed=processed, numberRecordsFailed=len(failed), retries=0)

    @staticmethod
    def _row_id(header: list[str], row: list[str]) -> str:
        return row[header.index("Id")] if "Id" in header and header.index("Id") < len(row) else ""

    def _ingest_row(self, tx: Any, spec: ObjectSpec, job: dict[str, Any], raw: dict[str, str]) -> tuple[str, bool]:
        operation = job["operation"]
        # An empty cell leaves the field as it is; "#N/A" clears it.
        data = {name: (None if value == NULL_MARKER else value) for name, value in raw.items() if value != ""}
        if operation in ("delete", "hardDelete"):
            record_id = self.store.live(spec, raw.get("Id"))["Id"]
            tx.delete(spec, record_id)
            return record_id, False
        if operation == "insert":
            return tx.create(spec, data, in_collection=True), True
        if operation == "update":
            record_id = self.store.live(spec, raw.get("Id"))["Id"]
            tx.update(spec, record_id, {k: v for k, v in data.items() if k != "Id"}, in_collection=True)
            return record_id, False
        field_name = job["externalIdFieldName"]
        value = raw.get(field_name, "")
        if not value:
            raise RecordError("MISSING_ARGUMENT", f"{field_name} not specified", [field_name])
        if field_name == "Id":
            record_id = self.store.live(spec, value)["Id"]
            tx.update(spec, record_id, {k: v for k, v in data.items() if k != "Id"}, in_collection=True)
            return record_id, False
        ids = self.store.lookup(spec.name, field_name, value)
        if len(ids) > 1:
            raise RecordError(
                "DUPLICATE_EXTERNAL_ID",
                f"{field_name}: more than one record found for external id field: {ids}",
                [field_name],
            )
        if ids:
            tx.update(spec, ids[0], data, in_collection=True)
            return ids[0], False
        return tx.create(spec, data, in_collection=True), True

    def _results_handler(self, kind: str) -> Callable[..., Response]:
        def handler(request: Request, version: str, job_id: str) -> Response:
            job = self._job(job_id, "ingest")
            results = job.get("_results")
            if results is None:
                raise api_error(400, "INVALIDJOBSTATE", "Results are available once the job is complete")
            text = _csv_text(results[kind], DELIMITERS[job["columnDelimiter"]], LINE_ENDINGS[job["lineEnding"]])
            return _csv_response(text)

        return handler

    # -- query -------------------------------------------------------------------------

    def query_job_create(self, request: Request, version: str) -> Response:
        body = parse_json(request)
        if not isinstance(body, dict):
            raise api_error(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of job from non-object value")
        operation = body.get("operation", "query")
        if operation not in ("query", "queryAll"):
            raise api_error(400, "INVALIDJOB", f"Invalid operation: {operation}")
        try:
            query = parse(str(body.get("query") or ""), self.store.objects)
        except SoqlError as error:
            raise api_error(400, error.code, error.message) from None
        if query.count_only:
            raise api_error(400, "INVALIDJOB", "Aggregate Relationships not supported in Bulk Query")
        job = self._new_job("query", version, {**body, "operation": operation}, object=query.sobject.name,
                            state="UploadComplete", query=query.text)  # fmt: skip
        answer = self._info(job)
        threading.Thread(target=self._run_query, args=(job, query, version), daemon=True).start()
        return json_response(answer)

    def _run_query(self, job: dict[str, Any], query: Any, version: str) -> None:
        self._set(job, state="InProgress")
        _, records = self._execute(query, version.removeprefix("v"), include_deleted=job["operation"] == "queryAll")
        names = [path.name for path in query.fields]
        rows = [[_flat(record, name) for name in names] for record in records]
        with self._bulk_lock:
            job["_header"], job["_rows"] = names, rows
        if job["state"] != "Aborted":
            self._set(job, state="JobComplete", numberRecordsProcessed=len(rows), retries=0)

    def query_job_list(self, request: Request, version: str) -> Response:
        return self._list("query")

    def query_job_get(self, request: Request, version: str, job_id: str) -> Response:
        return json_response(self._info(self._job(job_id, "query")))

    def query_job_abort(self, request: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id, "query")
        if (parse_json(request) or {}).get("state") != "Aborted" or job["state"] in FINAL_STATES:
            raise api_error(400, "INVALIDJOBSTATE", f"Cannot abort a job in state {job['state']}")
        self._set(job, state="Aborted")
        return json_response(self._info(job))

    def query_job_results(self, request: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id, "query")
        if job["state"] != "JobComplete":
            raise api_error(400, "INVALIDJOBSTATE", f"Job is in state {job['state']}: results are not ready")
        offset = 0
        locator = request.args.get("locator", "")
        if locator:
            try:
                offset = int(base64.b64decode(locator.encode()).decode())
            except ValueError:
                raise api_error(400, "INVALID_LOCATOR", f"Invalid locator: {locator}") from None
        raw_max = request.args.get("maxRecords", "")
        if raw_max and (not raw_max.isdigit() or int(raw_max) < 1):
            raise api_error(400, "INVALID_ARGUMENT", f"Invalid maxRecords: {raw_max}")
        rows = job["_rows"]
        end = min(len(rows), offset + int(raw_max)) if raw_max else len(rows)
        page = rows[offset:end]
        text = _csv_text([job["_header"], *page], DELIMITERS[job["columnDelimiter"]], LINE_ENDINGS[job["lineEnding"]])
        next_locator = base64.b64encode(str(end).encode()).decode() if end < len(rows) else "null"
        return _csv_response(text, [("Sforce-Locator", next_locator), ("Sforce-NumberOfRecords", str(len(page)))])

    def clear_bulk_jobs(self) -> None:
        with self._bulk_lock:
            self.bulk_jobs.clear()
