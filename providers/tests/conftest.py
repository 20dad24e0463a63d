"""Fixtures shared by the engine's tests."""

import pytest

import providers.services
from crm import registry
from sandbox.testing import SandboxControl, running_sandbox


@pytest.fixture
def enqueued(monkeypatch) -> list[list[str]]:
    """The providers handed to the forwarder after commit, one entry per enqueue (nothing reaches Redis)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(providers.services, "enqueue_forward", lambda *, providers: calls.append(list(providers)))
    return calls


@pytest.fixture
def hubspot(settings, enqueued):
    """A HubSpot sandbox, the only CRM connected (a test module may define its own)."""
    with running_sandbox("hubspot", rate_limit=None) as running:
        settings.HUBSPOT = {**settings.HUBSPOT, "base_url": running.url, "access_token": "sandbox-token",
                            "rate_limit": "1000/1 second"}  # fmt: skip
        settings.SALESFORCE = {**settings.SALESFORCE, "client_id": "", "client_secret": "", "access_token": ""}
        settings.SYNC_BATCH_LINGER_MS = 0
        registry.reset()
        yield SandboxControl(running.url)
        registry.reset()


@pytest.fixture
def fresh_health_counters():
    """The Sync health page's Redis counters start empty (they outlive a test's transaction)."""
    from django.conf import settings

    from syncroot.counters import counter_key, counters_redis

    connection = counters_redis(settings.REDIS_URL)
    for pattern in ("sync_writes:*", "crm_rate_limited_at"):
        for key in connection.scan_iter(counter_key(pattern)):
            connection.delete(key)
