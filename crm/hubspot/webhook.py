"""HubSpot app webhooks (v3): verify the signature and split a delivery into events.

HubSpot signs `METHOD + URL + raw body + X-HubSpot-Request-Timestamp` with the app's client
secret (HMAC-SHA256, base64) in `X-HubSpot-Signature-v3`. The timestamp is part of the signed
text, so the five-minute window below is what stops an old delivery being replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from crm.base import WebhookEvent, WebhookRejected

SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
MAX_SKEW_SECONDS = 300
MAX_EVENTS = 100  # HubSpot sends at most 100 events per request

# HubSpot's docs have receivers decode these escapes in the URL before signing; a URL without
# them (as we configure) reads the same either way, so we accept the signature over either form.
_DECODED_ESCAPES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip


def sign(*, secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    """The `X-HubSpot-Signature-v3` value HubSpot sends for this request."""
    message = method.upper().encode() + url.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_signature(
    *,
    body: bytes,
    headers: Mapping[str, str],
    url: str,
    secret: str,
    method: str = "POST",
    now: float | None = None,
) -> None:
    """Raise WebhookRejected(401, "bad_signature") unless the v3 signature and timestamp hold."""
    if not secret:
        # Without the app secret nothing can be verified; refuse rather than trust blindly.
        raise WebhookRejected("HubSpot client secret is not configured", status=401, code="bad_signature")
    lowered = {name.lower(): value for name, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER, "").strip()
    timestamp = lowered.get(TIMESTAMP_HEADER, "").strip()
    if not signature or not timestamp:
        raise WebhookRejected("missing X-HubSpot-Signature-v3 or timestamp", status=401, code="bad_signature")
    if not timestamp.isdigit():
        raise WebhookRejected("malformed X-HubSpot-Request-Timestamp", status=401, code="bad_signature")
    skew = (time.time() if now is None else now) - int(timestamp) / 1000
    if abs(skew) > MAX_SKEW_SECONDS:
        raise WebhookRejected("request timestamp outside the 5-minute window", status=401, code="bad_signature")
    given = signature.encode()
    for candidate_url in _url_forms(url):
        expected = sign(secret=secret, method=method, url=candidate_url, body=body, timestamp=timestamp).encode()
        if hmac.compare_digest(expected, given):
            return
    raise WebhookRejected("signature does not match", status=401, code="bad_signature")


def parse_events(body: bytes, *, max_events: int = MAX_EVENTS) -> list[WebhookEvent]:
    """Split a (verified) delivery into events, each keyed the way HubSpot dedupes them."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("body is not valid JSON", status=400, code="malformed_json")
    if not isinstance(data, list):
        raise WebhookRejected("body must be a JSON array of events", status=400, code="not_an_array")
    if len(data) > max_events:
        raise WebhookRejected(f"more than {max_events} events in one delivery", status=413, code="too_many_events")
    return [WebhookEvent(event_id=event_id(event), payload=event) for event in data]


def event_id(event: Any) -> str:
    """`subscriptionId:eventId` (eventIds are unique per subscription), or the eventId alone."""
    if not isinstance(event, dict) or event.get("eventId") in (None, ""):
        raise WebhookRejected("every event needs an eventId", status=400, code="bad_event")
    subscription = event.get("subscriptionId")
    return f"{subscription}:{event['eventId']}" if subscription not in (None, "") else str(event["eventId"])


def parse_webhook(
    *,
    body: bytes,
    headers: Mapping[str, str],
    url: str,
    secret: str,
    method: str = "POST",
    now: float | None = None,
) -> list[WebhookEvent]:
    """Check the content type, then the signature, and only then parse the body."""
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise WebhookRejected("Content-Type must be application/json", status=415, code="unsupported_media_type")
    verify_signature(body=body, headers=lowered, url=url, secret=secret, method=method, now=now)
    return parse_events(body)


def _url_forms(url: str) -> list[str]:
    decoded = url
    for escape, char in _DECODED_ESCAPES.items():
        decoded = decoded.replace(escape, char).replace(escape.lower(), char)
    return [url] if decoded == url else [url, decoded]
