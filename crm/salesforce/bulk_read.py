"""Reading many Contacts at once: a REST query's first page tells how many there are; past the
Bulk threshold the rest comes from one Bulk API 2.0 query job instead of a page per 2,000.

A Bulk query carries no ORDER BY (it would turn off the org's chunking of big queries), so its
rows are sorted here by (SystemModstamp, Id), the order the reconciler's cursor needs (in runs
of 10,000 merged from temporary files, so memory stays flat however many there are), and turned
back into the records a REST query returns: null for an empty cell, booleans, the `Account`
relationship as a nested record, custom numbers, checkboxes and date-times in the REST API's types
and forms (the describe, one call, says which field is which).
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from crm.base import Transient
from crm.salesforce import schema
from crm.salesforce.bulk import BulkJobs
from crm.salesforce.client import SalesforceClient
from crm.salesforce.transform import parse_datetime

_EPOCH_KEY = ""  # sorts records without a SystemModstamp first
SORT_RUN = 10_000  # records sorted in memory at a time; more are merged from temporary files


def bulk_record(row: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Any]:
    """One CSV row as the REST record it stands for."""
    record: dict[str, Any] = {}
    related: dict[str, dict[str, Any]] = {}
    for name, text in row.items():
        value: Any = text if text != "" else None
        kind = types.get(name, "")
        if value is not None and (name == "IsDeleted" or kind == "boolean"):
            value = text == "true"
        elif value is not None and kind in ("int", "long"):
            value = int(float(text))
        elif value is not None and kind in ("double", "currency", "percent"):
            value = float(text)
        elif value is not None and kind == "datetime" and text.endswith("Z"):
            value = text[:-1] + "+0000"  # the REST API's form of the same instant
        if "." in name:
            relationship, field = name.split(".", 1)
            related.setdefault(relationship, {})[field] = value
        else:
            record[name] = value
    for relationship, fields in related.items():
        # A Contact without an Account has no related record at all, as REST says with null.
        record[relationship] = fields if any(value is not None for value in fields.values()) else None
    return record


def _order(record: Mapping[str, Any]) -> tuple[Any, str]:
    """SOQL's `ORDER BY SystemModstamp, Id`: text compares case-insensitively (a stable sort keeps
    the org's own order between ids equal but for case)."""
    stamp = parse_datetime(record.get("SystemModstamp"))
    return (stamp.isoformat() if stamp else _EPOCH_KEY, str(record.get("Id") or "").lower())


def sorted_on_disk(
    records: Iterable[dict[str, Any]], *, key: Callable[[Mapping[str, Any]], Any], run: int | None = None
) -> Iterator[dict[str, Any]]:
    """`records` in `key` order, holding at most `run` of them in memory: each run is sorted and
    written to a temporary file, and the runs are merged as they are read back."""
    runs: list[IO[str]] = []
    try:
        for chunk in _batched(records, run or SORT_RUN):
            chunk.sort(key=key)
            spool = tempfile.TemporaryFile("w+", encoding="utf-8")
            spool.writelines(json.dumps(record, separators=(",", ":")) + "\n" for record in chunk)
            spool.seek(0)
            runs.append(spool)
        yield from heapq.merge(*((json.loads(line) for line in spool) for spool in runs), key=key)
    finally:
        for spool in runs:
            spool.close()


def _batched(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_records(
    client: SalesforceClient, *, select: str, where: str, threshold: int, extra: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """Every record of `select … where` (deleted ones included) in (SystemModstamp, Id) order."""
    soql = select + where
    page = client.request("GET", "queryAll", params={"q": soql + " ORDER BY SystemModstamp, Id"})
    if not isinstance(page, Mapping):
        raise Transient("unexpected query answer", code="BAD_RESPONSE")
    if threshold and int(page.get("totalSize") or 0) > threshold and not page.get("done", True):
        types = {}
        if extra:
            types = {str(f.get("name")): str(f.get("type")) for f in schema.describe_contact(client)}
        rows = (bulk_record(row, types) for row in BulkJobs(client).query(soql, include_deleted=True))
        yield from sorted_on_disk(rows, key=_order)
        return
    while True:
        yield from page.get("records") or ()
        next_url = page.get("nextRecordsUrl")
        if page.get("done", True) or not next_url:
            return
        page = client.request("GET", str(next_url))
        if not isinstance(page, Mapping):
            raise Transient("unexpected query answer", code="BAD_RESPONSE")
