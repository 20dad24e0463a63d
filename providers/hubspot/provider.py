"""HubSpot behind the provider interface."""

from collections.abc import Mapping
from typing import Any

from providers.base import Provider
from syncroot import queues


class HubSpotProvider(Provider):
    name = "hubspot"
    webhook_queue = queues.WEBHOOKS_HUBSPOT
    batch_size = 100  # CRM v3 batch endpoints

    @classmethod
    def is_configured(cls, config: Mapping[str, Any]) -> bool:
        return bool(config.get("access_token") or config.get("refresh_token"))
