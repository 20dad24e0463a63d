"""Verify and parse what Salesforce POSTs to /webhooks/salesforce.

Two kinds of delivery arrive:

* Outbound Messages (`text/xml`): the SOAP `notifications` envelope of a Workflow/Flow
  action, ≤ 100 notifications. Salesforce signs nothing, so we check a shared secret
  (query param `token` in the endpoint URL, or header `X-SyncRoot-Token`) before parsing
  and the OrganizationId after. XML goes through defusedxml with DTDs forbidden: no
  entity expansion, no external entities.
* Change events (`application/json`): the Flow/Apex HTTP-callout alternative, used for
  deletes (Outbound Messages never fire on delete). Body `{"events": [...]}` in the
  Change Data Capture shape, signed `X-Signature: sha256=<hex HMAC-SHA256(secret,
  "<X-Signature-Timestamp>.<body>")>`, refused outside ±5 minutes.

Each delivery becomes `WebhookEvent`s whose payload says its `kind`; the acknowledgement
differs per kind (see `ack_for`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from crm.base import WebhookEvent, WebhookRejected

OUTBOUND_MESSAGE = "outbound_message"
CHANGE_EVENT = "change_event"

SOAP_ACK = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)
SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"
JSON_ACK = b'{"status":"ok"}'

MAX_BODY_BYTES = 1_048_576  # 100 notifications of a dozen fields weigh ~100 KB
MAX_NOTIFICATIONS = 100  # the outbound WSDL's maxOccurs
MAX_EVENTS = 1000
SIGNATURE_TOLERANCE_S = 300

_XML_TYPES = {"text/xml", "application/xml", "application/soap+xml"}
_SOAP_NS = "{http://schemas.xmlsoap.org/soap/envelope/}"
_OUT_NS = "{http://soap.sforce.com/2005/09/outbound}"
_XSI_NS = "{http://www.w3.org/2001/XMLSchema-instance}"


def ack_for(kind: str | None) -> tuple[str, bytes]:
    """Content type and body acknowledging a delivery of `kind` (SOAP unless change events)."""
    if kind == CHANGE_EVENT:
        return "application/json", JSON_ACK
    return SOAP_CONTENT_TYPE, SOAP_ACK


def parse_delivery(
    *,
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    config: Mapping[str, Any],
    now: float | None = None,
) -> list[WebhookEvent]:
    """Verify one delivery and split it into inbox events. Raises WebhookRejected."""
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRejected("delivery too large", status=413, code="too_large")
    content_type = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in _XML_TYPES:
        check_token(lowered, query, str(config.get("webhook_token") or ""))
        return parse_outbound_message(body, organization_id=str(config.get("organization_id") or ""))
    if content_type == "application/json":
        verify_signature(body, lowered, secret=str(config.get("event_secret") or ""), now=now)
        return parse_change_events(body)
    raise WebhookRejected(
        f"unsupported content type {content_type or '(none)'}", status=415, code="unsupported_media_type"
    )


# --- Outbound Messages ------------------------------------------------------------------------
def check_token(headers: Mapping[str, str], query: Mapping[str, str], expected: str) -> None:
    """The shared secret from the endpoint URL (`?token=`) or the `X-SyncRoot-Token` header."""
    if not expected:  # fail closed: an unconfigured secret must not mean "anyone may post"
        raise WebhookRejected("webhook token not configured", status=401, code="bad_token")
    given = query.get("token") or headers.get("x-syncroot-token") or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookRejected("missing or wrong webhook token", status=401, code="bad_token")


def _same_org(given: str, expected: str) -> bool:
    # Ids come in 15- and 18-character forms; the first 15 characters identify the org.
    return bool(given and expected) and hmac.compare_digest(given[:15].encode(), expected[:15].encode())


def _element_value(element: Element) -> Any:
    if element.get(f"{_XSI_NS}nil") == "true":
        return None
    children = list(element)
    if children:  # a relationship (e.g. sf:Account) nests its own fields
        return {_local(child.tag): _element_value(child) for child in children}
    return element.text if element.text not in (None, "") else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_outbound_message(body: bytes, *, organization_id: str) -> list[WebhookEvent]:
    """One event per `<Notification>` of a SOAP `notifications` envelope."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError) as exc:
        raise WebhookRejected(f"refused XML: {exc.__class__.__name__}", status=400, code="bad_xml") from None
    soap_body = root.find(f"{_SOAP_NS}Body") if root.tag == f"{_SOAP_NS}Envelope" else None
    notifications = soap_body.find(f"{_OUT_NS}notifications") if soap_body is not None else None
    if notifications is None:
        raise WebhookRejected("not an Outbound Message notifications envelope", status=400, code="bad_envelope")
    org = (notifications.findtext(f"{_OUT_NS}OrganizationId") or "").strip()
    if not _same_org(org, organization_id):
        raise WebhookRejected("outbound message from another organization", status=401, code="bad_organization")
    action_id = (notifications.findtext(f"{_OUT_NS}ActionId") or "").strip()
    items = notifications.findall(f"{_OUT_NS}Notification")
    if len(items) > MAX_NOTIFICATIONS:
        raise WebhookRejected("too many notifications in one message", status=400, code="bad_envelope")
    events = []
    for item in items:
        notification_id = (item.findtext(f"{_OUT_NS}Id") or "").strip()
        sobject = item.find(f"{_OUT_NS}sObject")
        if not notification_id or len(notification_id) > 64 or sobject is None:
            raise WebhookRejected("notification without Id or sObject", status=400, code="bad_envelope")
        fields = {_local(child.tag): _element_value(child) for child in sobject}
        if not fields.get("Id"):
            raise WebhookRejected("notification sObject without Id", status=400, code="bad_envelope")
        sobject_type = (sobject.get(f"{_XSI_NS}type") or "").rsplit(":", 1)[-1]
        payload = {
            "kind": OUTBOUND_MESSAGE,
            "notification_id": notification_id,
            "organization_id": org,
            "action_id": action_id,
            "sobject_type": sobject_type,
            "sobject": fields,
        }
        events.append(WebhookEvent(event_id=notification_id, payload=payload))
    return events


# --- Change events ----------------------------------------------------------------------------
def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, as the sender computes it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(body: bytes, headers: Mapping[str, str], *, secret: str, now: float | None = None) -> None:
    if not secret:
        raise WebhookRejected("event secret not configured", status=401, code="bad_signature")
    signature = headers.get("x-signature", "").strip()
    timestamp = headers.get("x-signature-timestamp", "").strip()
    if not signature or not timestamp:
        raise WebhookRejected("missing signature", status=401, code="bad_signature")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookRejected("malformed signature timestamp", status=401, code="bad_timestamp")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > SIGNATURE_TOLERANCE_S:
        raise WebhookRejected("signature timestamp outside the accepted window", status=401, code="stale_timestamp")
    if not hmac.compare_digest(signature.encode(), sign(secret, timestamp, body).encode()):
        raise WebhookRejected("signature does not match", status=401, code="bad_signature")


def _bad(message: str) -> WebhookRejected:
    return WebhookRejected(message, status=400, code="bad_event")


def _valid_header(header: Any) -> bool:
    if not isinstance(header, dict):
        return False
    ids = header.get("recordIds")
    return (
        isinstance(header.get("entityName"), str)
        and isinstance(header.get("changeType"), str)
        and isinstance(ids, list)
        and bool(ids)
        and all(isinstance(rid, str) and 0 < len(rid) <= 18 and rid.isalnum() for rid in ids)
    )


def parse_change_events(body: bytes) -> list[WebhookEvent]:
    """One inbox event per (event, record id): a multi-record event is split so each record
    is applied (and deduplicated) on its own."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad("body is not JSON") from None
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise _bad('body must be {"events": [...]} with at most 1000 events')
    parsed = []
    for event in events:
        event_id = event.get("eventId") if isinstance(event, dict) else None
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
            raise _bad("event without a usable eventId")
        header = event.get("ChangeEventHeader")
        if not _valid_header(header):
            raise _bad(f"event {event_id}: malformed ChangeEventHeader")
        record_ids = header["recordIds"]
        for record_id in record_ids:
            payload = {**event, "kind": CHANGE_EVENT, "ChangeEventHeader": {**header, "recordIds": [record_id]}}
            split_id = event_id if len(record_ids) == 1 else f"{event_id}:{record_id}"
            parsed.append(WebhookEvent(event_id=split_id, payload=payload))
    return parsed
