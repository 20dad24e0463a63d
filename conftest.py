"""Suite-wide test set-up: real PostgreSQL and Redis (see syncroot/test_settings.py)."""

import pytest


@pytest.fixture
def api_token(db):
    from contacts.models import ApiToken

    token, raw = ApiToken.generate(name="test-client")
    token.raw = raw
    return token


@pytest.fixture
def api_client(api_token):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token.raw}")
    return client


@pytest.fixture(autouse=True)
def _fresh_provider_registry(settings):
    """Each test sees the providers its own settings connect."""
    from crm import registry

    registry.reset()
    yield
    registry.reset()


@pytest.fixture(autouse=True)
def _fresh_field_mappings():
    """Rules cached by an earlier test whose transaction was rolled back must not outlive it."""
    from providers.mappings import mappings_changed

    mappings_changed()
    yield
    mappings_changed()


@pytest.fixture(autouse=True)
def _fresh_api_budgets():
    """API budgets counted by earlier tests (or a daily limit a sandbox reported) do not hold
    back this one's calls (crm/budget.py)."""
    from django.conf import settings

    from syncroot.counters import counter_key, counters_redis

    counters_redis(settings.REDIS_URL).delete(counter_key("api_calls"), counter_key("api_budget"))
