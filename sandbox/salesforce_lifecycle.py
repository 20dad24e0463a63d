"""Salesforce merge and undelete: the partner SOAP calls ``merge()`` / ``undelete()`` and the UI's.

A merge deletes the losing records with ``MasterRecordId`` set to the master (visible through
``queryAll`` and ``sobjects/Contact/deleted``), then updates the master: Apex sees a delete and an
update, never a "merge" event, and so do Outbound Messages and change events here. An undelete
brings a record back from the recycle bin with its id and a new ``SystemModstamp``; change events
call it ``UNDELETE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from defusedxml import ElementTree
from werkzeug.wrappers import Response

from sandbox.salesforce_schema import ObjectSpec, normalize_id
from sandbox.salesforce_store import RecordError, Transaction, now_ms

__all__ = ["MAX_LOSERS", "merge", "soap_call", "undelete"]

MAX_LOSERS = 2  # the SOAP call merges up to three records: a master and two others
_PARTNER = "urn:partner.soap.sforce.com"
_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    "<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
)


def merge(tx: Transaction, spec: ObjectSpec, master_id: Any, loser_ids: list[Any], fields: Mapping[str, Any]) -> str:
    """Delete the losers (``MasterRecordId`` = master), then update the master with ``fields``."""
    store = tx.store
    master = store.live(spec, master_id)
    if not loser_ids or len(loser_ids) > MAX_LOSERS:
        raise RecordError("INVALID_OPERATION", f"merge takes one or {MAX_LOSERS} records to merge")
    losers = [store.live(spec, raw)["Id"] for raw in loser_ids]
    if master["Id"] in losers or len(set(losers)) != len(losers):
        raise RecordError("INVALID_OPERATION", "cannot merge a record with itself")
    for loser_id in losers:
        tx.delete(spec, loser_id)
        deleted = store.tables[spec.name][loser_id]
        store.put(spec, loser_id, deleted, dict(deleted, MasterRecordId=master["Id"]))
    tx.update(spec, master["Id"], dict(fields))
    return master["Id"]


def undelete(tx: Transaction, spec: ObjectSpec, raw_id: Any) -> str:
    """Bring a deleted record back: same id, ``IsDeleted`` false, a new ``SystemModstamp``."""
    store = tx.store
    record_id = normalize_id(raw_id)
    record = store.get(spec.name, record_id) if record_id else None
    if record is None:
        raise RecordError("INVALID_ID_FIELD", f"invalid record id: {raw_id}", [], 404)
    if not record["IsDeleted"]:
        raise RecordError("UNDELETE_FAILED", "Entity is not in the recycle bin")
    at = now_ms()
    restored = dict(record, IsDeleted=False, MasterRecordId=None, SystemModstamp=at, LastModifiedDate=at,
                    LastModifiedById=tx.user_id)  # fmt: skip
    tx._write(spec, record["Id"], record, restored)
    store.deleted_log[:] = [entry for entry in store.deleted_log if entry[1] != record["Id"]]
    tx._change("UNDELETE", spec, record["Id"], (), (), at)
    return record["Id"]


def fill_blanks(spec: ObjectSpec, master: Mapping[str, Any], loser: Mapping[str, Any]) -> dict[str, Any]:
    """What the UI's merge wizard picks by default: the master's values, the other's where it has none."""
    return {
        f.name: loser[f.name]
        for f in spec.fields
        if f.writable and f.name != "Id" and master.get(f.name) in (None, "") and loser.get(f.name) not in (None, "")
    }


# --- the partner SOAP API ----------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_call(body: bytes) -> tuple[str, str, Any] | None:
    """(operation, session id, arguments) of a partner ``merge``/``undelete`` call, or None."""
    try:
        root = ElementTree.fromstring(body)
    except Exception:  # defusedxml raises several types for hostile or broken XML
        return None
    session = next((el.text or "" for el in root.iter() if _local(el.tag) == "sessionId"), "")
    body_el = next((el for el in root if _local(el.tag) == "Body"), None)
    call = next(iter(body_el), None) if body_el is not None else None
    if call is None:
        return None
    operation = _local(call.tag)
    if operation == "undelete":
        return operation, session, [el.text or "" for el in call if _local(el.tag) == "ids"]
    if operation == "merge":
        requests = []
        for request in (el for el in call if _local(el.tag) == "request"):
            master: dict[str, Any] = {}
            losers: list[str] = []
            for part in request:
                if _local(part.tag) == "masterRecord":
                    for field in part:
                        nil = field.get("{http://www.w3.org/2001/XMLSchema-instance}nil") == "true"
                        master[_local(field.tag)] = None if nil else (field.text or "")
                elif _local(part.tag) == "recordToMergeIds":
                    losers.append(part.text or "")
            requests.append((master, losers))
        return operation, session, requests
    return operation, session, None


def _result(record_id: str | None, error: RecordError | None, extra: str = "") -> str:
    if error is not None:
        fields = "".join(f"<fields>{escape(name)}</fields>" for name in error.fields or ())
        errors = (
            f"<errors>{fields}<message>{escape(error.message)}</message><statusCode>{error.code}</statusCode></errors>"
        )
        return f'<result>{errors}<id xsi:nil="true"/>{extra}<success>false</success></result>'
    return f"<result><id>{record_id}</id>{extra}<success>true</success></result>"


def soap_fault(code: str, message: str) -> Response:
    body = (
        f"<soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{escape(code)}: {escape(message)}"
        "</faultstring></soapenv:Fault>"
    )
    return Response(_ENVELOPE.format(body=body), 500, content_type="text/xml; charset=utf-8")


def soap_call(store: Any, call: tuple[str, str, Any], *, user_id: str) -> Response:
    """Run a parsed ``merge``/``undelete``; each request or id is its own transaction, as in the API."""
    operation, _, arguments = call
    spec = store.objects["Contact"]
    results = []
    origin = "com/salesforce/api/soap/{version}"
    if operation == "undelete":
        for raw_id in arguments:
            try:
                with store.transaction(user_id=user_id, origin=origin) as tx:
                    results.append(_result(undelete(tx, spec, raw_id), None))
            except RecordError as error:
                results.append(_result(None, error))
    elif operation == "merge":
        for master, losers in arguments:
            fields = {k: v for k, v in master.items() if k not in ("type", "Id", "fieldsToNull")}
            try:
                with store.transaction(user_id=user_id, origin=origin) as tx:
                    tx.allow_duplicates = True
                    master_id = merge(tx, spec, master.get("Id"), losers, fields)
                ids = "".join(f"<mergedRecordIds>{normalize_id(i)}</mergedRecordIds>" for i in losers)
                results.append(_result(master_id, None, ids))
            except RecordError as error:
                results.append(_result(None, error))
    else:
        return soap_fault("INVALID_OPERATION", f"operation {operation} is not supported by this sandbox")
    body = f'<{operation}Response xmlns="{_PARTNER}">{"".join(results)}</{operation}Response>'
    return Response(_ENVELOPE.format(body=body), 200, content_type="text/xml; charset=utf-8")
