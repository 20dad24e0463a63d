"""Salesforce behind the provider interface."""

from collections.abc import Mapping
from typing import Any

from providers.base import Provider
from syncroot import queues


class SalesforceProvider(Provider):
    name = "salesforce"
    webhook_queue = queues.WEBHOOKS_SALESFORCE
    batch_size = 200  # sObject Collections

    @classmethod
    def is_configured(cls, config: Mapping[str, Any]) -> bool:
        return bool(config.get("access_token") or (config.get("client_id") and config.get("client_secret")))
