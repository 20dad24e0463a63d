"""Provider registry: adding a CRM means one sub-package and one line here.

Which accounts SyncRoot is connected to is data: each connection (a HubSpot portal, a Salesforce
org) is built into its own provider, under the connection's key. The sync engine owns the
connections and installs where they come from (`connection_source`); until it does, and for the
first connections of every deployment, the environment's settings (`SALESFORCE`, `HUBSPOT`)
connect one account per CRM under the CRM's own name. A process looks at the source again
after CONNECTIONS_REFRESH_SECONDS, so a connection added, paused or deleted by another process
is seen within that time; a provider whose connection did not change is kept (and its token).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from crm.base import Provider
from syncroot.counters import crm_response_hook

PROVIDER_CLASSES = {
    "salesforce": "crm.salesforce.provider.SalesforceProvider",
    "hubspot": "crm.hubspot.provider.HubSpotProvider",
}


@dataclass(frozen=True)
class ConnectionSpec:
    """One connection as the registry builds it: its key, its CRM and the provider's config."""

    key: str
    provider: str  # a key of PROVIDER_CLASSES
    config: Mapping[str, Any] = field(default_factory=dict)
    version: str = ""  # changes whenever the config does: the provider is built again


def provider_class(provider: str) -> type[Provider]:
    try:
        return import_string(PROVIDER_CLASSES[provider])
    except KeyError:
        raise LookupError(f"no CRM called {provider!r}") from None


def environment_connections() -> list[ConnectionSpec]:
    """One connection per CRM whose settings hold credentials, keyed by the CRM's name."""
    specs = []
    for provider in PROVIDER_CLASSES:
        config = getattr(settings, provider.upper(), {})
        if provider_class(provider).is_configured(config):
            specs.append(ConnectionSpec(key=provider, provider=provider, config=config, version=repr(config)))
    return specs


_source: Callable[[], list[ConnectionSpec]] = environment_connections
_lock = threading.Lock()
_built: dict[str, tuple[str, Provider]] = {}  # key → (spec version, provider), in the source's order
_checked_at: list[float] = []  # monotonic time of the last look at the source, when still valid
_clock = time.monotonic


def connection_source(source: Callable[[], list[ConnectionSpec]]) -> None:
    """Install where connections come from (the engine's `Connection` rows and the environment)."""
    global _source
    _source = source
    reset()


def _providers() -> dict[str, Provider]:
    if _checked_at and _clock() - _checked_at[0] < settings.CONNECTIONS_REFRESH_SECONDS:
        return {key: provider for key, (_, provider) in _built.items()}
    with _lock:
        if not (_checked_at and _clock() - _checked_at[0] < settings.CONNECTIONS_REFRESH_SECONDS):
            specs = _source()
            built = {}
            for spec in specs:
                kept = _built.get(spec.key)
                built[spec.key] = kept if kept and kept[0] == spec.version else (spec.version, _build(spec))
            _built.clear()
            _built.update(built)
            _checked_at[:] = [_clock()]
        return {key: provider for key, (_, provider) in _built.items()}


def _build(spec: ConnectionSpec) -> Provider:
    # Each connection has its own rate limiter (named by its key) and reports every call to
    # /metrics under its key through the hook (see syncroot/counters.py).
    config = {
        **spec.config,
        "connection": spec.key,
        "limiter_key": spec.key,
        "rate_limit_name": spec.key,
        "on_response": crm_response_hook(spec.key),
    }
    return provider_class(spec.provider)(config)


def connected_providers() -> list[str]:
    """Keys of the connections SyncRoot syncs with, in a stable order."""
    return list(_providers())


def get_provider(name: str) -> Provider:
    """The connection's provider. One this process has not seen yet (added a moment ago by
    another process: its first drain can arrive before the next look) is looked for again."""
    found = _providers().get(name)
    if found is None:
        refresh()
        found = _providers().get(name)
    if found is None:
        raise LookupError(f"provider {name!r} is not connected")
    return found


def connection_for_account(*, kind: str, account: str) -> str | None:
    """The key of the connection to this account of this CRM, None when none is connected."""
    for key, provider in _providers().items():
        if provider.kind == kind and provider.same_account(provider.connected_account, account):
            return key
    return None


def build_provider(*, provider: str, config: Mapping[str, Any], key: str = "") -> Provider:
    """A provider for a connection not registered (yet): to check credentials before saving them."""
    return _build(ConnectionSpec(key=key or provider, provider=provider, config=config))


def refresh() -> None:
    """Look at the source again on the next call (this process changed a connection)."""
    with _lock:
        _checked_at.clear()


def reset() -> None:
    """Build every provider again on the next call (tests change settings)."""
    with _lock:
        _checked_at.clear()
        _built.clear()
