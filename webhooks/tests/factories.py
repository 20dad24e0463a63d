"""Inbox rows, and webhook deliveries signed the way the CRMs sign them (written out here, not
borrowed from the code under test, so a mistake there cannot hide behind the same mistake here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from pathlib import Path
from typing import Any

import factory

from webhooks.models import EventStatus, WebhookEvent

PAYLOADS = Path(__file__).parent / "payloads"

HUBSPOT_SECRET = "s"
SALESFORCE_ORG = "00D000000000001EAA"
SALESFORCE_TOKEN = "tok"
SALESFORCE_EVENT_SECRET = "sec"
PUBLIC_BASE_URL = "https://sync.example.com"

_event_ids = itertools.count(int(time.time() * 1000))


# SyncRoot's Salesforce settings in the webhook tests (no API call is made: the instance is closed).
SALESFORCE_SETTINGS = {
    "access_token": "t",
    "instance_url": "http://127.0.0.1:9",
    "organization_id": SALESFORCE_ORG,
    "webhook_token": SALESFORCE_TOKEN,
    "event_secret": SALESFORCE_EVENT_SECRET,
}


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


class WebhookEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookEvent

    provider = "hubspot"
    event_id = factory.Sequence(lambda n: f"2100100:{n}")
    payload = factory.LazyAttribute(
        lambda o: {
            "eventId": int(o.event_id.rsplit(":", 1)[-1]),
            "subscriptionId": 2100100,
            "subscriptionType": "contact.propertyChange",
            "objectId": 101,
            "propertyName": "firstname",
            "propertyValue": "Ada",
            "occurredAt": 1742077073905,
        }
    )
    status = EventStatus.RECEIVED


# --- HubSpot app webhooks v3 ---------------------------------------------------------------------
def hubspot_events(count: int, *, object_id: int = 501) -> list[dict[str, Any]]:
    """`count` contact.propertyChange events with ids unique across the test run."""
    return [
        {
            "eventId": next(_event_ids),
            "subscriptionId": 2100100,
            "portalId": 62515,
            "appId": 1234567,
            "occurredAt": int(time.time() * 1000),
            "subscriptionType": "contact.propertyChange",
            "attemptNumber": 0,
            "objectId": object_id + i,
            "propertyName": "firstname",
            "propertyValue": f"Name {i}",
            "changeSource": "CRM_UI",
            "sourceId": "userId:45678",
        }
        for i in range(count)
    ]


def hubspot_signature(*, secret: str, url: str, body: bytes, timestamp_ms: str, method: str = "POST") -> str:
    """X-HubSpot-Signature-v3: base64(HMAC-SHA256(secret, METHOD + URL + body + timestamp))."""
    message = method.encode() + url.encode() + body + timestamp_ms.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def hubspot_headers(body: bytes, *, url: str, secret: str = HUBSPOT_SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int((time.time() if at is None else at) * 1000))
    return {
        "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-v3": hubspot_signature(secret=secret, url=url, body=body, timestamp_ms=timestamp),
        "X-HubSpot-Signature-Version": "v1",
        "X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest(),
    }


def hubspot_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events, separators=(",", ":")).encode()


# --- Salesforce ----------------------------------------------------------------------------------
def change_event_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """X-Signature of a Flow/Apex change-event callout: sha256=hex(HMAC(secret, "<ts>.<body>"))."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def change_event_headers(
    body: bytes, *, secret: str = SALESFORCE_EVENT_SECRET, at: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if at is None else at)
    return {
        "X-Signature-Timestamp": str(timestamp),
        "X-Signature": change_event_signature(secret=secret, timestamp=timestamp, body=body),
    }
