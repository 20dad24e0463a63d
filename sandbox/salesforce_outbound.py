"""What the sandbox org sends out: SOAP Outbound Messages and signed JSON change events.

Outbound Messages (Workflow/Flow "Outbound Message" on Contact create/update) are
the real SOAP ``notifications`` envelope; the record is read when the message is
sent (as the CRM does), up to 100 notifications per message, and the message is
redelivered with backoff until the receiver answers HTTP 200 with
``<Ack>true</Ack>``. They never fire on delete.

Change events are the documented "Flow/Apex HTTP callout" alternative: a JSON
body ``{"events": [...]}`` in the Change Data Capture shape, signed with
``X-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` and
``X-Signature-Timestamp``; retried until 2xx. By default only deletes (which
Outbound Messages cannot carry) are sent this way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from xml.sax.saxutils import escape

import requests
from defusedxml import ElementTree

from sandbox.salesforce_schema import OBJECTS, ObjectSpec, format_cdc_datetime
from sandbox.salesforce_store import Change
from sandbox.webhooks import WebhookDispatcher

__all__ = [
    "OUTBOUND_FIELDS",
    "ChannelDispatcher",
    "build_change_event",
    "build_notifications",
    "parse_ack",
    "sign",
]

logger = logging.getLogger(__name__)

#: Fields the Outbound Message action sends: Id first, then alphabetical (as captured).
OUTBOUND_FIELDS = (
    "Id",
    "AccountId",
    "Email",
    "FirstName",
    "IsDeleted",
    "LastModifiedById",
    "LastModifiedDate",
    "LastName",
    "Phone",
    "SystemModstamp",
    "Title",
)

_ENVELOPE_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
    " <soapenv:Body>\n"
    '  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">\n'
)
_ENVELOPE_TAIL = "  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n"
_OUTBOUND_NS = "{http://soap.sforce.com/2005/09/outbound}"


def _xml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "astimezone"):
        return format_cdc_datetime(value)
    return escape(str(value))


def build_notifications(
    *,
    organization_id: str,
    action_id: str,
    base_url: str,
    api_version: str,
    items: list[tuple[str, str, Mapping[str, Any]]],
    fields: tuple[str, ...] = OUTBOUND_FIELDS,
) -> bytes:
    """The SOAP ``notifications`` message for ``items`` = (notification id, sObject, record).

    Null fields are left out, as the CRM does.
    """
    org15 = organization_id[:15]
    parts = [
        _ENVELOPE_HEAD,
        f"   <OrganizationId>{escape(organization_id)}</OrganizationId>\n",
        f"   <ActionId>{escape(action_id)}</ActionId>\n",
        '   <SessionId xsi:nil="true"/>\n',
        f"   <EnterpriseUrl>{escape(base_url)}/services/Soap/c/{api_version}/{org15}</EnterpriseUrl>\n",
        f"   <PartnerUrl>{escape(base_url)}/services/Soap/u/{api_version}/{org15}</PartnerUrl>\n",
    ]
    for notification_id, sobject, record in items:
        parts.append(f"   <Notification>\n    <Id>{notification_id}</Id>\n")
        parts.append(f'    <sObject xsi:type="sf:{sobject}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">\n')
        for name in fields:
            value = record.get(name)
            if value is not None:
                parts.append(f"     <sf:{name}>{_xml_value(value)}</sf:{name}>\n")
        parts.append("    </sObject>\n   </Notification>\n")
    parts.append(_ENVELOPE_TAIL)
    return "".join(parts).encode("utf-8")


def parse_ack(body: bytes) -> bool:
    """True when ``body`` is a ``notificationsResponse`` whose ``Ack`` is true."""
    try:
        root = ElementTree.fromstring(body)
    except Exception:  # defusedxml raises several types for hostile or broken XML
        return False
    for element in root.iter():
        if element.tag in (f"{_OUTBOUND_NS}Ack", "Ack"):
            return (element.text or "").strip().lower() in ("true", "1")
    return False


def build_change_event(
    change: Change, record: Mapping[str, Any], *, api_version: str, spec: ObjectSpec | None = None
) -> dict[str, Any]:
    """One change event in the Change Data Capture payload shape (flattened, no Avro).

    ``spec`` is the org's object (with its custom fields); the standard one by default.
    """
    spec = spec or OBJECTS[change.sobject]
    if change.kind == "CREATE":
        names = [name for name in spec.field_names if name != "Id" and record.get(name) is not None]
    elif change.kind == "UPDATE":
        names = list(change.changed)
    else:
        names = []
    event: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "ChangeEventHeader": {
            "entityName": change.sobject,
            "recordIds": [change.record_id],
            "changeType": change.kind,
            "changeOrigin": change.origin.format(version=api_version),
            "transactionKey": change.transaction_key,
            "sequenceNumber": change.sequence,
            "commitTimestamp": int(change.at.timestamp() * 1000),
            "commitUser": change.user_id,
            "changedFields": list(change.changed) if change.kind == "UPDATE" else [],
            "nulledFields": list(change.nulled),
            "diffFields": [],
        },
    }
    for name in names:
        value = record.get(name)
        event[name] = format_cdc_datetime(value) if hasattr(value, "astimezone") else value
    return event


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def encode_change_events(events: list[dict[str, Any]], secret: str) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one signed change-event POST."""
    body = json.dumps({"events": events}, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": str(timestamp),
        "X-Signature": sign(secret, timestamp, body),
    }
    return body, headers


_sessions = threading.local()


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes] | None:
    """POST and return (status, body); None on a connection error or timeout."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
        session.trust_env = False  # loopback receivers must not go through a proxy
    try:
        response = session.post(url, data=body, headers=dict(headers), timeout=timeout_s or None)
    except requests.RequestException as exc:
        logger.info("delivery to %s failed: %s", url, exc.__class__.__name__)
        return None
    return response.status_code, response.content


class ChannelDispatcher:
    """Two :class:`WebhookDispatcher` queues behind the one interface the core uses.

    Outbound Messages and change events are retried independently, so a receiver
    that acks one kind and not the other never gets the acked kind again.
    Events are dicts with a ``"channel"`` key naming their queue.
    """

    def __init__(
        self,
        senders: Mapping[str, Callable[[list[Any], int], bool]],
        *,
        config: Mapping[str, Any],
        rng: random.Random,
        concurrency: int,
    ) -> None:
        self.channels = {
            name: WebhookDispatcher(send, config=config, rng=rng, concurrency=concurrency)
            for name, send in senders.items()
        }

    def enqueue(self, events: list[Any]) -> None:
        by_channel: dict[str, list[Any]] = {}
        for event in events:
            by_channel.setdefault(event["channel"], []).append(event)
        for name, batch in by_channel.items():
            self.channels[name].enqueue(batch)

    def flush(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(d.flush(max(0.0, deadline - time.monotonic())) for d in self.channels.values())

    def clear(self) -> None:
        for dispatcher in self.channels.values():
            dispatcher.clear()

    def stop(self) -> None:
        for dispatcher in self.channels.values():
            dispatcher.stop()

    def stats(self) -> dict[str, Any]:
        per_channel = {name: d.stats() for name, d in self.channels.items()}
        total: dict[str, Any] = {}
        for counters in per_channel.values():
            for key, value in counters.items():
                total[key] = total.get(key, 0) + value
        total["channels"] = per_channel
        return total
