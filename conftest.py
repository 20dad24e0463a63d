"""Suite-wide test set-up: real PostgreSQL and Redis, kept apart from a running `make run`."""

import os

# Tests use their own Redis database so they never consume a running instance's queues.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DATABASE_URL", "postgres://127.0.0.1:5432/syncroot")
os.environ.setdefault("LOG_FORMAT", "text")

import pytest  # noqa: E402


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
    from providers import registry

    registry.reset()
    yield
    registry.reset()
