"""Fixtures for the sandbox tests: the shared ones from sandbox.testing plus SDK clients."""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hubspot import HubSpot

from sandbox.hubspot import HubSpotApp
from sandbox.server import RunningSandbox
from sandbox.testing import (  # noqa: F401  (fixtures)
    SandboxControl,
    hubspot_sandbox,
    running_sandbox,
    salesforce_sandbox,
    webhook_receiver,
)


@dataclass
class HubSpotHarness:
    """A running HubSpot sandbox with the official SDK pointed at it."""

    running: RunningSandbox
    client: HubSpot
    control: SandboxControl

    @property
    def app(self) -> HubSpotApp:
        return self.running.app

    @property
    def contacts(self):  # the SDK's contacts discovery (basic_api, batch_api, search_api, get_all)
        return self.client.crm.contacts


@pytest.fixture
def hubspot() -> Iterator[HubSpotHarness]:
    """HubSpot sandbox (seeded RNG) + SDK client with the default private-app token."""
    with running_sandbox("hubspot", seed=7) as running:
        client = HubSpot(access_token="sandbox-token", host=running.url)
        yield HubSpotHarness(running, client, SandboxControl(running.url))
