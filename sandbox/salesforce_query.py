"""SOQL query/queryAll with cursor paging, getUpdated/getDeleted and /limits.

A query's result is materialised when it runs (like the CRM's server-side
cursor) and handed out in batches: ``nextRecordsUrl`` is the path
``/services/data/vNN.0/query/<locator>-<offset>``. Batches are
``query_batch_size`` records (2000, as in the CRM) unless the client asks for
``Sforce-Query-Options: batchSize=N`` (200..2000).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.core import json_response
from sandbox.salesforce_rest import api_error, sobject_spec
from sandbox.salesforce_schema import format_datetime, parse_datetime
from sandbox.salesforce_store import OrgStore, now_ms
from sandbox.salesforce_ui import render
from sandbox.soql import Query, SoqlError, parse

__all__ = ["QueryMixin"]

CURSOR_IDLE_S = 15 * 60
MAX_CURSORS = 100
_BATCH_RE = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)


class QueryMixin:
    """Query handlers; mixed into :class:`sandbox.salesforce.SalesforceApp`."""

    store: OrgStore
    config: dict[str, Any]
    cursors: dict[str, dict[str, Any]]
    daily_quota: Any
    reported_quota: int
    api: Callable[..., None]
    _cursor_lock = threading.Lock()

    def setup_query_routes(self) -> None:
        base = "/services/data/{version}"
        self.api("GET", base + "/query", self.query)
        self.api("GET", base + "/queryAll", self.query_all)
        self.api("GET", base + "/query/{locator}", self.query_more)
        self.api("GET", base + "/queryAll/{locator}", self.query_more)
        self.api("GET", base + "/sobjects/{sobject}/updated", self.get_updated)
        self.api("GET", base + "/sobjects/{sobject}/deleted", self.get_deleted)
        self.api("GET", base + "/limits", self.limits)

    # -- query -------------------------------------------------------------------------

    def query(self, request: Request, version: str) -> Response:
        return self._start_query(request, version, include_deleted=False)

    def query_all(self, request: Request, version: str) -> Response:
        return self._start_query(request, version, include_deleted=True)

    def _start_query(self, request: Request, version: str, *, include_deleted: bool) -> Response:
        try:
            query = parse(request.args.get("q", ""), self.store.objects)
        except SoqlError as error:
            raise api_error(400, error.code, error.message) from None
        total, records = self._execute(query, version.removeprefix("v"), include_deleted=include_deleted)
        if query.count_only:
            return json_response({"totalSize": total, "done": True, "records": []})
        batch = self._batch_size(request)
        if len(records) <= batch:
            return json_response({"totalSize": total, "done": True, "records": records})
        locator = self._open_cursor(records, batch)
        return json_response(self._page(version, locator, 0))

    def _execute(self, query: Query, version: str, *, include_deleted: bool) -> tuple[int, list[dict[str, Any]]]:
        store = self.store
        with store.lock:
            table = store.tables[query.sobject.name]
            candidates: set[str] | None = None
            for name, values in query.equality_filters():
                if name == "Id":
                    ids = {value for value in values if value in table}
                elif (query.sobject.name, name) in store.indexes:
                    index = store.indexes[(query.sobject.name, name)]
                    ids = set().union(*(index.get(value, ()) for value in values))
                else:
                    continue
                candidates = ids if candidates is None else candidates & ids
            # Ids of one object grow with creation time, so sorting them keeps creation order.
            rows = list(table.values()) if candidates is None else [table[i] for i in sorted(candidates)]
            if not include_deleted:
                rows = [row for row in rows if not row["IsDeleted"]]

            def resolve(sobject: str, record_id: str) -> dict[str, Any] | None:
                return store.tables[sobject].get(record_id)

            matched = query.run(rows, resolve)
            if query.count_only:
                return len(matched), []

            def render_one(spec: Any, record: Any, names: list[str]) -> dict[str, Any]:
                return render(spec, record, names, version)

            records = [query.project(row, resolve, render_one) for row in matched]
        return len(records), records

    def _batch_size(self, request: Request) -> int:
        match = _BATCH_RE.search(request.headers.get("Sforce-Query-Options", ""))
        if match:
            return min(2000, max(200, int(match.group(1))))
        return self.config["query_batch_size"]

    def _open_cursor(self, records: list[dict[str, Any]], batch: int) -> str:
        now = time.monotonic()
        with self._cursor_lock:
            for locator in [k for k, c in self.cursors.items() if now - c["used"] > CURSOR_IDLE_S]:
                del self.cursors[locator]
            while len(self.cursors) >= MAX_CURSORS:
                del self.cursors[next(iter(self.cursors))]
            locator = self.store.new_id("01g")
            self.cursors[locator] = {"records": records, "batch": batch, "used": now}
        return locator

    def _page(self, version: str, locator: str, offset: int) -> dict[str, Any]:
        cursor = self.cursors[locator]
        records, batch = cursor["records"], cursor["batch"]
        end = offset + batch
        body: dict[str, Any] = {"totalSize": len(records), "done": end >= len(records)}
        if end < len(records):
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        else:
            with self._cursor_lock:
                self.cursors.pop(locator, None)  # the CRM closes a cursor once fully read
        body["records"] = records[offset:end]
        return body

    def query_more(self, request: Request, version: str, locator: str) -> Response:
        cursor_id, _, raw_offset = locator.rpartition("-")
        with self._cursor_lock:
            cursor = self.cursors.get(cursor_id)
            valid = cursor is not None and raw_offset.isdigit() and int(raw_offset) < len(cursor["records"])
            if valid:
                cursor["used"] = time.monotonic()
        if not valid:
            raise api_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return json_response(self._page(version, cursor_id, int(raw_offset)))

    # -- replication: getUpdated / getDeleted ---------------------------------------------------

    def _window(self, request: Request, max_days: int) -> tuple[datetime, datetime]:
        """[start, end) of a replication call: minutes (seconds ignored, as in the CRM), never past now."""
        bounds = []
        for name in ("start", "end"):
            raw = request.args.get(name, "")
            if not raw:
                raise api_error(400, "MISSING_ARGUMENT", f"{name}: parameter is required")
            value = parse_datetime(raw.replace(" ", "+"))
            if value is None:
                raise api_error(400, "INVALID_REPLICATION_DATE", f"{name}: invalid date time: {raw}")
            bounds.append(value.replace(second=0, microsecond=0))
        start, end = bounds
        now = now_ms()
        if end <= start:
            raise api_error(400, "INVALID_REPLICATION_DATE", "end date must be after start date")
        if start < now - timedelta(days=max_days):
            raise api_error(400, "INVALID_REPLICATION_DATE", f"startDate cannot be more than {max_days} days ago")
        # Covering up to "now" (not the minute) keeps a client's next window contiguous without waiting.
        return start, min(end, now)

    def get_updated(self, request: Request, version: str, sobject: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        start, covered = self._window(request, 30)
        with self.store.lock:
            rows = [
                row
                for row in self.store.tables[spec.name].values()
                if not row["IsDeleted"] and start <= row["SystemModstamp"] <= covered
            ]
        rows.sort(key=lambda row: (row["SystemModstamp"], row["Id"]))
        return json_response({"ids": [row["Id"] for row in rows], "latestDateCovered": format_datetime(covered)})

    def get_deleted(self, request: Request, version: str, sobject: str) -> Response:
        spec = sobject_spec(sobject, self.store.objects)
        start, covered = self._window(request, 15)
        with self.store.lock:
            log = list(self.store.deleted_log)
        deleted = [
            {"id": record_id, "deletedDate": format_datetime(at)}
            for name, record_id, at in log
            if name == spec.name and start <= at <= covered
        ]
        earliest = log[0][2] if log else covered
        return json_response(
            {
                "deletedRecords": deleted,
                "earliestDateAvailable": format_datetime(earliest.replace(second=0, microsecond=0)),
                "latestDateCovered": format_datetime(covered),
            }
        )

    # -- limits -------------------------------------------------------------------------------

    def limits(self, request: Request, version: str) -> Response:
        quota = self.reported_quota
        used = self.daily_quota.used("org")
        with self.store.lock:
            rows = sum(len(table) for table in self.store.tables.values())
        storage_used = math.ceil(rows * 2 / 1024)  # the CRM counts 2 KB per record

        def fixed(maximum: int) -> dict[str, int]:
            return {"Max": maximum, "Remaining": maximum}

        return json_response(
            {
                "DailyApiRequests": {"Max": quota, "Remaining": max(0, quota - used)},
                "DailyAsyncApexExecutions": fixed(250_000),
                "DailyBulkApiBatches": fixed(15_000),
                "DailyBulkV2QueryJobs": fixed(10_000),
                "DailyStreamingApiEvents": fixed(1_000_000),
                "DataStorageMB": {"Max": 5, "Remaining": max(0, 5 - storage_used)},
                "FileStorageMB": fixed(20),
                "HourlyODataCallout": fixed(10_000),
                "SingleEmail": fixed(15),
            }
        )
