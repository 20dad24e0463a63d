"""Bulk API 2.0 jobs: a whole import or push in a handful of calls instead of one per 200 records.

A query job (`query`) runs a SOQL query in the org and hands its rows back as CSV pages of up to
`QUERY_PAGE` rows (`Sforce-Locator` names the next page). An ingest job (`ingest`) uploads one CSV,
closes it, waits for the org to process it and reads the per-record results: the rows that failed
carry Salesforce's own error (`sf__Error`, "CODE:message:fields --").

CSV carries text only: an empty cell leaves a field as it is, `#N/A` clears it, booleans are
`true`/`false`. Polling backs off from 0.2 s to 2 s and gives up after `JOB_TIMEOUT_S` (the job's
rows are then reported as not processed, for a retry).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from crm.base import Permanent, ProviderError, Transient
from crm.salesforce.client import SalesforceClient
from crm.salesforce.errors import record_error

logger = logging.getLogger(__name__)

QUERY_PAGE = 50_000  # rows per results page (simple-salesforce's default)
JOB_TIMEOUT_S = 600.0
POLL_FIRST_S = 0.2
POLL_MAX_S = 2.0
NULL = "#N/A"
FINAL = ("JobComplete", "Failed", "Aborted")


def csv_value(value: Any) -> str:
    """A JSON value as a Bulk CSV cell: None clears the field (an empty cell would leave it)."""
    if value is None or value == "":
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(columns: list[str], rows: list[Mapping[str, Any]]) -> bytes:
    """Rows as CSV; a column a row does not carry is an empty cell (the field stays as it is)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_value(row[name]) if name in row else "" for name in columns])
    return out.getvalue().encode()


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def parse_error(text: str) -> ProviderError:
    """`sf__Error` ("STRING_TOO_LONG:Last Name: data value too large: …:LastName --") as the error
    it names, the same as a Collections answer's: Salesforce's code and message, kept for the
    operator (a lock or another passing condition stays retryable)."""
    code, _, rest = text.partition(":")
    rest = rest.strip().removesuffix("--").rstrip()
    message, _, fields = rest.rpartition(":")
    if not message:  # no field list
        message, fields = rest, ""
    names = [name.strip() for name in fields.split(",") if name.strip()]
    return record_error([{"statusCode": code.strip() or "BULK_ERROR", "message": message.strip(), "fields": names}])


@dataclass
class IngestResult:
    """Per-record outcome of an ingest job, keyed by the value of the job's key column."""

    succeeded: dict[str, tuple[str, bool]] = field(default_factory=dict)  # key → (record id, created)
    failed: dict[str, ProviderError] = field(default_factory=dict)
    job_id: str = ""


class BulkJobs:
    """Bulk API 2.0 through the client's one call path (limiter, token, classification, count)."""

    def __init__(self, client: SalesforceClient, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.sleep = sleep

    def _wait(self, kind: str, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        delay = POLL_FIRST_S
        while True:
            job = self.client.request("GET", f"jobs/{kind}/{job_id}")
            if job.get("state") in FINAL:
                return job
            if time.monotonic() > deadline:
                raise Transient(f"Bulk {kind} job {job_id} still {job.get('state')}", code="BULK_TIMEOUT")
            self.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)

    # --- query -----------------------------------------------------------------------------
    def query(self, soql: str, *, include_deleted: bool = False) -> Iterator[dict[str, str]]:
        """Every row of a query job, as CSV text by column (empty for null)."""
        operation = "queryAll" if include_deleted else "query"
        job = self.client.request("POST", "jobs/query", json={"operation": operation, "query": soql})
        done = self._wait("query", str(job["id"]))
        if done["state"] != "JobComplete":
            raise Transient(f"Bulk query job {job['id']} {done['state']}: {done.get('errorMessage', '')}",
                            code="BULK_JOB_FAILED")  # fmt: skip
        locator = ""
        while True:
            params = {"maxRecords": str(QUERY_PAGE), **({"locator": locator} if locator else {})}
            page = self.client.request("GET", f"jobs/query/{job['id']}/results", params=params, raw=True)
            # Row by row: a page holds up to 50,000 rows, parsed only as they are taken.
            yield from csv.DictReader(io.StringIO(page.content.decode("utf-8"), newline=""))
            locator = page.headers.get("Sforce-Locator", "null")
            if not locator or locator == "null":
                return

    # --- ingest ----------------------------------------------------------------------------
    def ingest(
        self,
        *,
        operation: str,
        columns: list[str],
        rows: list[Mapping[str, Any]],
        key: str,
        external_id_field: str | None = None,
    ) -> IngestResult:
        """Run one ingest job; results by each row's `key` column (which must be unique)."""
        body: dict[str, Any] = {"object": "Contact", "operation": operation, "contentType": "CSV", "lineEnding": "LF"}
        if external_id_field:
            body["externalIdFieldName"] = external_id_field
        job = self.client.request("POST", "jobs/ingest", json=body)
        job_id = str(job["id"])
        self.client.request(
            "PUT", f"jobs/ingest/{job_id}/batches", data=to_csv(columns, rows), headers={"Content-Type": "text/csv"},
            raw=True,
        )  # fmt: skip
        self.client.request("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
        done = self._wait("ingest", job_id)
        result = IngestResult(job_id=job_id)
        if done["state"] == "Failed":  # the file itself was refused: every row, same reason
            error = Permanent(str(done.get("errorMessage") or "Bulk job failed"), code="BULK_JOB_FAILED", status=400)
            result.failed = {str(row.get(key, "")): error for row in rows}
            return result
        for row in self._results(job_id, "successfulResults"):
            result.succeeded[row.get(key, "")] = (row.get("sf__Id", ""), row.get("sf__Created") == "true")
        for row in self._results(job_id, "failedResults"):
            result.failed[row.get(key, "")] = parse_error(row.get("sf__Error", ""))
        logger.info(
            "salesforce bulk ingest done",
            extra={"job": job_id, "operation": operation, "rows": len(rows), "failed": len(result.failed)},
        )
        return result

    def _results(self, job_id: str, kind: str) -> list[dict[str, str]]:
        answer = self.client.request("GET", f"jobs/ingest/{job_id}/{kind}", raw=True)
        return parse_csv(answer.content.decode("utf-8"))
