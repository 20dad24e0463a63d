"""Provider registry: adding a CRM means one sub-package and one line here."""

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from crm.base import Provider
from syncroot.counters import crm_response_hook

PROVIDER_CLASSES = {
    "salesforce": "crm.salesforce.provider.SalesforceProvider",
    "hubspot": "crm.hubspot.provider.HubSpotProvider",
}


@cache
def _providers() -> dict[str, Provider]:
    found: dict[str, Provider] = {}
    for name, path in PROVIDER_CLASSES.items():
        provider_class = import_string(path)
        config = getattr(settings, name.upper(), {})
        if provider_class.is_configured(config):
            # The client reports every call to /metrics through this hook (see syncroot/counters.py).
            found[name] = provider_class({**config, "on_response": crm_response_hook(name)})
    return found


def connected_providers() -> list[str]:
    """Names of the CRMs SyncRoot is connected to, in a stable order."""
    return list(_providers())


def get_provider(name: str) -> Provider:
    try:
        return _providers()[name]
    except KeyError:
        raise LookupError(f"provider {name!r} is not connected") from None


def reset() -> None:
    """Forget built providers (tests change settings)."""
    _providers.cache_clear()
