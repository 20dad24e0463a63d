"""HubSpot app webhooks v3: contact events and signed delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sandbox.core import post_bytes
from sandbox.hubspot_store import Source

__all__ = ["EventFactory", "deliver", "sign_v3"]

USER_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksExecutorDaemon-executor"
_CREATION_SUBSCRIPTION = 2_100_001
_DELETION_SUBSCRIPTION = 2_100_002
_MERGE_SUBSCRIPTION = 2_100_003
_RESTORE_SUBSCRIPTION = 2_100_004
_PRIVACY_SUBSCRIPTION = 2_100_005
_PROPERTY_SUBSCRIPTION_BASE = 2_100_100
_WILDCARD_BASE = 2_101_000
_NO_SUBSCRIPTION = frozenset({"lastmodifieddate", "hs_lastmodifieddate"})  # HubSpot refuses these


def sign_v3(secret: str, method: str, url: str, body: str, timestamp_ms: str) -> str:
    """``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of method + URL + body + timestamp."""
    message = f"{method}{url}{body}{timestamp_ms}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


class EventFactory:
    """Builds contact.* events as a HubSpot app subscription would deliver them.

    Reads ``portal_id``, ``app_id`` and ``webhook_properties`` (the properties
    with a propertyChange subscription; ``"*"``: all) from the live config.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config
        self._event_ids = itertools.count(int(time.time()) * 10)
        self._wildcard_ids: dict[str, int] = {}

    def _base(
        self, subscription_type: str, subscription_id: int, object_id: str, source: Source, at_ms: int
    ) -> dict[str, Any]:
        config = self._config
        return {
            "eventId": next(self._event_ids),
            "subscriptionId": subscription_id,
            "portalId": config["portal_id"],
            "appId": config["app_id"],
            "occurredAt": at_ms,
            "subscriptionType": subscription_type,
            "attemptNumber": 0,
            "objectId": int(object_id),
            "changeSource": source.change_source,
            "sourceId": source.source_id,
        }

    def property_changes(
        self, object_id: str, changed: Mapping[str, str], source: Source, at_ms: int
    ) -> list[dict[str, Any]]:
        """One contact.propertyChange per changed property with a subscription."""
        events = []
        for name, subscription_id in self._subscriptions(changed):
            event = self._base("contact.propertyChange", subscription_id, object_id, source, at_ms)
            event["propertyName"] = name
            event["propertyValue"] = changed[name]
            events.append(event)
        return events

    def _subscriptions(self, changed: Mapping[str, str]) -> list[tuple[str, int]]:
        """(property, subscription id) of each changed property with a propertyChange subscription.

        ``"*"`` in ``webhook_properties`` stands for one subscription per property
        (custom ones included), each with its own stable id, as an app that
        subscribed to every property would get.
        """
        subscribed: Iterable[str] = self._config["webhook_properties"]
        ids = {name: _PROPERTY_SUBSCRIPTION_BASE + index for index, name in enumerate(subscribed) if name != "*"}
        if "*" not in ids and "*" in subscribed:
            for name in changed:
                if name not in ids and name not in _NO_SUBSCRIPTION:
                    ids[name] = self._wildcard_ids.setdefault(name, _WILDCARD_BASE + len(self._wildcard_ids))
        return [(name, ids[name]) for name in ids if name in changed]

    def creation(
        self, object_id: str, properties: Mapping[str, str], source: Source, at_ms: int
    ) -> list[dict[str, Any]]:
        """contact.creation plus a propertyChange for each subscribed property set."""
        event = self._base("contact.creation", _CREATION_SUBSCRIPTION, object_id, source, at_ms)
        event["changeFlag"] = "CREATED"
        return [event, *self.property_changes(object_id, properties, source, at_ms)]

    def deletion(self, object_id: str, source: Source, at_ms: int) -> list[dict[str, Any]]:
        event = self._base("contact.deletion", _DELETION_SUBSCRIPTION, object_id, source, at_ms)
        event["changeFlag"] = "DELETED"
        return [event]

    def merge(
        self, primary_id: str, merged_ids: list[str], new_id: str, moved: int, source: Source, at_ms: int
    ) -> list[dict[str, Any]]:
        """contact.merge: ``objectId`` is the surviving record, as ``newObjectId``."""
        event = self._base("contact.merge", _MERGE_SUBSCRIPTION, new_id, source, at_ms)
        event["changeFlag"] = "MERGED"
        event["primaryObjectId"] = int(primary_id)
        event["mergedObjectIds"] = [int(i) for i in merged_ids]
        event["newObjectId"] = int(new_id)
        event["numberOfPropertiesMoved"] = moved
        return [event]

    def restore(self, object_id: str, source: Source, at_ms: int) -> list[dict[str, Any]]:
        event = self._base("contact.restore", _RESTORE_SUBSCRIPTION, object_id, source, at_ms)
        event["changeFlag"] = "RESTORED"
        return [event]

    def privacy_deletion(self, object_id: str, source: Source, at_ms: int) -> list[dict[str, Any]]:
        event = self._base("contact.privacyDeletion", _PRIVACY_SUBSCRIPTION, object_id, source, at_ms)
        event["changeFlag"] = "GDPR_DELETED"
        return [event]


def deliver(url: str, secret: str, events: list[dict[str, Any]], attempt: int, timeout_s: float) -> bool:
    """POST one signed batch; True when the receiver answered 2xx within ``timeout_s``."""
    payload = [{**event, "attemptNumber": attempt} for event in events]
    body = json.dumps(payload, separators=(",", ":"))
    timestamp = str(int(time.time() * 1000))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-v3": sign_v3(secret, "POST", url, body, timestamp),
        "X-HubSpot-Signature-Version": "v1",
        "X-HubSpot-Signature": hashlib.sha256((secret + body).encode()).hexdigest(),
    }
    status = post_bytes(url, body.encode(), headers, timeout_s)
    return status is not None and 200 <= status < 300
