"""Fixtures shared by the contacts tests."""

import pytest

import providers.services
from crm import registry


@pytest.fixture
def hubspot(settings):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    registry.reset()


@pytest.fixture
def salesforce(settings):
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "x"}
    registry.reset()


@pytest.fixture
def connected(hubspot, salesforce):
    """Both CRMs connected (credentials only: nothing is sent to them)."""


@pytest.fixture
def enqueued(monkeypatch) -> list[list[str]]:
    """The providers handed to the forwarder, one entry per enqueue (nothing reaches Redis)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(providers.services, "enqueue_forward", lambda *, providers: calls.append(list(providers)))
    return calls
