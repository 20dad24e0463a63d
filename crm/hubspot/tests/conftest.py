"""Fixtures for the HubSpot provider tests: payload files and an in-process HubSpot sandbox."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crm.hubspot.client import HubSpotClient
from crm.hubspot.provider import HubSpotProvider
from sandbox.server import RunningSandbox
from sandbox.testing import SandboxControl, running_sandbox, webhook_receiver  # noqa: F401  (fixture)

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "sandbox-secret"
APP_ID = "1234567"


def load_payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture
def hubspot() -> Iterator[RunningSandbox]:
    with running_sandbox("hubspot") as running:
        yield running


@pytest.fixture
def control(hubspot: RunningSandbox) -> SandboxControl:
    return SandboxControl(hubspot.url)


@pytest.fixture
def hubspot_config(hubspot: RunningSandbox, settings) -> dict[str, Any]:
    """Settings pointing at the sandbox, with a limiter of its own (Redis keys unique to the test)."""
    config = {
        **settings.HUBSPOT,
        "base_url": hubspot.url,
        "access_token": "sandbox-token",
        "client_id": "sandbox-client",
        "client_secret": SECRET,
        "refresh_token": "",
        "app_id": APP_ID,
        "portal_id": "62515",
        "rate_limit": "1000/10 seconds",  # the sandbox's own 100/10 s is what these tests meet
        "search_rate_limit": "1000/second",
        "limiter_key": f"hubspot-test-{uuid.uuid4().hex}",
    }
    settings.HUBSPOT = config
    return config


@pytest.fixture
def client(hubspot_config: dict[str, Any]) -> HubSpotClient:
    return HubSpotClient(hubspot_config)


@pytest.fixture
def provider(hubspot_config: dict[str, Any]) -> HubSpotProvider:
    return HubSpotProvider(hubspot_config)
