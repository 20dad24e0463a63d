"""Reading many Contacts at once: a REST query's first page tells how many there are; past the
Bulk threshold the rest comes from one Bulk API 2.0 query job instead of a page per 2,000.

A Bulk query carries no ORDER BY (it would turn off the org's chunking of big queries), so its
rows are sorted here by (SystemModstamp, Id), the order the reconciler's cursor needs, and turned
back into the records a REST query returns: null for an empty cell, booleans, the `Account`
relationship as a nested record, custom numbers, checkboxes and date-times in the REST API's types
and forms (the describe, one call, says which field is which).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from crm.base import Transient
from crm.salesforce import schema
from crm.salesforce.bulk import BulkJobs
from crm.salesforce.client import SalesforceClient
from crm.salesforce.transform import parse_datetime

_EPOCH_KEY = ""  # sorts records without a SystemModstamp first


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
        rows = [bulk_record(row, types) for row in BulkJobs(client).query(soql, include_deleted=True)]
        rows.sort(key=_order)
        yield from rows
        return
    while True:
        yield from page.get("records") or ()
        next_url = page.get("nextRecordsUrl")
        if page.get("done", True) or not next_url:
            return
        page = client.request("GET", str(next_url))
        if not isinstance(page, Mapping):
            raise Transient("unexpected query answer", code="BAD_RESPONSE")
