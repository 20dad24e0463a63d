"""Fixtures shared by the inbox tests."""

import pytest

import webhooks.services


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[str, list[int]]]:
    """What the inbox handed to the broker, one entry per enqueue (nothing reaches Redis)."""
    calls: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        webhooks.services, "inbox_enqueue", lambda *, provider, event_ids: calls.append((provider, list(event_ids)))
    )
    return calls
