from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from contacts.tests.factories import ContactFactory
from providers import dispatch, outbox
from providers.models import LinkStatus, ProviderLink

pytestmark = pytest.mark.django_db


@pytest.fixture
def scheduled(monkeypatch):
    calls = []
    monkeypatch.setattr(
        dispatch,
        "task_send",
        lambda name, args, countdown: calls.append((args, countdown)) if name == dispatch.RETRY else None,
    )
    cache.delete("outbox:retry-at:hubspot")
    yield calls
    cache.delete("outbox:retry-at:hubspot")


def failed_link(seconds: float) -> ProviderLink:
    return ProviderLink.objects.create(
        contact=ContactFactory(), provider="hubspot", status=LinkStatus.FAILED,
        next_attempt_at=timezone.now() + timedelta(seconds=seconds),
    )  # fmt: skip


def test_a_retry_wakes_up_when_the_soonest_failed_link_is_due(scheduled):
    failed_link(30)
    failed_link(5)

    outbox.schedule_retry(provider="hubspot")

    assert len(scheduled) == 1
    args, countdown = scheduled[0]
    assert args == ["hubspot"]
    assert 4 < countdown <= 5


def test_one_waiting_retry_is_enough_until_a_sooner_one_is_needed(scheduled):
    failed_link(5)
    outbox.schedule_retry(provider="hubspot")
    outbox.schedule_retry(provider="hubspot")  # nothing sooner: no second task
    assert len(scheduled) == 1

    failed_link(1)
    outbox.schedule_retry(provider="hubspot")
    assert len(scheduled) == 2
    assert scheduled[1][1] <= 1


def test_no_failed_links_no_retry(scheduled):
    outbox.schedule_retry(provider="hubspot")
    assert scheduled == []
