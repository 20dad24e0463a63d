"""Salesforce merge and undelete: the partner SOAP API's `merge()` and `undelete()` (REST has neither).

The calls go through the client's one call path (limiter, token, classification, count); their
answers are XML, decoded here into the per-record results.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import requests
from defusedxml import ElementTree

from crm.base import AuthExpired, Permanent, ProviderError, Transient
from crm.salesforce.client import SalesforceClient
from crm.salesforce.errors import GONE_CODES

_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_MASTER_HOPS = 3  # a master merged away, its master merged away too: followed this far
_PARTNER = "{urn:partner.soap.sforce.com}"
_ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
    'envelope/" xmlns:urn="urn:partner.soap.sforce.com" xmlns:urn1="urn:sobject.partner.soap.sforce.com">'
    "<soapenv:Header><urn:SessionHeader><urn:sessionId>{session}</urn:sessionId></urn:SessionHeader>"
    "</soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
)


def _decode(content: bytes) -> Any:
    try:
        return ElementTree.fromstring(content)
    except Exception as exc:  # defusedxml raises several types for broken XML
        raise ValueError("not XML") from exc


def _classify(response: requests.Response, body: Any) -> ProviderError | None:
    if response.status_code < 300:
        return None
    fault = body.find(".//faultcode") if body is not None and not isinstance(body, str) else None
    code = (fault.text or "").removeprefix("sf:") if fault is not None else ""
    text = body.find(".//faultstring") if fault is not None else None
    message = text.text if text is not None and text.text else f"SOAP call answered {response.status_code}"
    if code == "INVALID_SESSION_ID":
        return AuthExpired(message, code=code, status=401)
    if response.status_code >= 500 and not code:
        return Transient(message, code="SOAP_ERROR", status=response.status_code)
    return Permanent(message, code=code or "SOAP_FAULT", status=response.status_code)


def _call(client: SalesforceClient, operation: str, body: str) -> list[dict[str, str]]:
    """One partner SOAP call; its `<result>` elements as {tag: text}."""
    envelope = _ENVELOPE.format(session=escape(client.tokens.current()), body=body)
    answer = client.path.request(
        "POST",
        lambda: f"{client.instance_url}/services/Soap/u/{client.api_version}",
        operation=f"SOAP {operation}",
        route=f"Soap/u/{operation}",
        classify=_classify,
        decode=_decode,
        data=envelope.encode(),
        headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": operation},
    )
    results = []
    for result in answer.iter(f"{_PARTNER}result"):
        row: dict[str, str] = {}
        for child in result:
            tag = child.tag.removeprefix(_PARTNER)
            if tag == "errors":
                row["statusCode"] = child.findtext(f"{_PARTNER}statusCode") or ""
                row["message"] = child.findtext(f"{_PARTNER}message") or ""
            else:
                row[tag] = child.text or ""
        results.append(row)
    return results


def _failed(row: Mapping[str, str]) -> Permanent | None:
    if row.get("success") == "true":
        return None
    return Permanent(row.get("message") or "refused", code=row.get("statusCode") or "SOAP_ERROR")


def merge(client: SalesforceClient, *, master_id: str, loser_id: str, fields: Mapping[str, Any] = {}) -> str | None:
    """Merge `loser_id` into `master_id` (`fields`: values the master takes); the master's id. A loser
    already gone (an earlier attempt merged it, or a person deleted it) is no error. A master a person
    merged away meanwhile is followed to its own master (merged into the loser: one record already,
    whose id is answered); one a person deleted answers None (no merge made: the caller deletes the
    loser, whose values SyncRoot's survivor holds)."""
    for _ in range(_MASTER_HOPS):
        error = _merge_call(client, master_id=master_id, loser_id=loser_id, fields=fields)
        if error is None:
            return master_id
        if error.code not in GONE_CODES:
            raise error
        # The call names no record: read both to tell a gone loser from a gone master.
        states = _states(client, master_id, loser_id)
        loser = states.get(_key(loser_id))
        if loser is None or loser.get("IsDeleted"):
            return master_id
        master = states.get(_key(master_id))
        if master is not None and not master.get("IsDeleted"):
            raise error  # both live: not a record gone, refused as it said
        if master is None or not master.get("MasterRecordId"):
            return None
        master_id = str(master["MasterRecordId"])
        if _key(master_id) == _key(loser_id):  # a person merged the two the other way round: one record
            return loser_id
    return None


def _merge_call(
    client: SalesforceClient, *, master_id: str, loser_id: str, fields: Mapping[str, Any]
) -> Permanent | None:
    values = "".join(f"<urn1:{name}>{escape(str(value))}</urn1:{name}>" for name, value in fields.items())
    body = (
        f"<urn:merge><urn:request><urn:masterRecord><urn1:type>Contact</urn1:type><urn1:Id>{escape(master_id)}"
        f"</urn1:Id>{values}</urn:masterRecord><urn:recordToMergeIds>{escape(loser_id)}</urn:recordToMergeIds>"
        "</urn:request></urn:merge>"
    )
    [row] = _call(client, "merge", body) or [{"success": "false", "statusCode": "BAD_RESPONSE"}]
    return _failed(row)


def _key(record_id: str) -> str:
    return record_id[:15]  # the 18-character id is the 15-character one and a checksum


def _states(client: SalesforceClient, *ids: str) -> dict[str, dict[str, Any]]:
    quoted = ",".join(f"'{record_id}'" for record_id in ids if _ID.fullmatch(record_id))
    if not quoted:
        return {}
    soql = f"SELECT Id, IsDeleted, MasterRecordId FROM Contact WHERE Id IN ({quoted})"
    return {_key(str(row["Id"])): row for row in client.query(soql, include_deleted=True)}


def undelete(client: SalesforceClient, record_id: str) -> bool:
    """Bring a record back from the recycle bin; False when Salesforce no longer has it (purged)."""
    rows = _call(client, "undelete", f"<urn:undelete><urn:ids>{escape(record_id)}</urn:ids></urn:undelete>")
    error = _failed(rows[0]) if rows else Permanent("no result", code="BAD_RESPONSE")
    return error is None or error.code == "UNDELETE_FAILED"  # not in the recycle bin: live already
