"""Admin change lists of the tables that grow: counted by estimate when large, filter values by index."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.tests.factories import ContactFactory
from providers.models import DeadLetter, LinkStatus, ProviderLink
from syncroot import adminlists
from webhooks.models import WebhookEvent
from webhooks.tests.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def dead_letter(*, provider: str, code: str) -> DeadLetter:
    contact = ContactFactory()
    link = ProviderLink.objects.create(contact=contact, provider=provider, status=LinkStatus.PARKED)
    return DeadLetter.objects.create(
        link=link, provider=provider, contact=contact, contact_version=1, error_code=code, error_message="bad",
        attempts=1,
    )  # fmt: skip


def filter_choices(response, title: str) -> list[str]:
    spec = next(spec for spec in response.context["cl"].filter_specs if spec.title == title)
    return [str(value) for value in spec.lookup_choices]


def selects(queries) -> list[str]:
    return [query["sql"] for query in queries if "DISTINCT" in query["sql"].upper()]


def test_dead_letter_filters_list_each_value_once_without_reading_every_row(admin_client):
    dead_letter(provider="hubspot", code="INVALID_EMAIL")
    dead_letter(provider="hubspot", code="INVALID_EMAIL")
    dead_letter(provider="salesforce", code="FIELD_CUSTOM_VALIDATION_EXCEPTION")

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get("/admin/providers/deadletter/")
    filtered = admin_client.get("/admin/providers/deadletter/", {"error_code": "INVALID_EMAIL"})

    assert response.status_code == 200
    assert filter_choices(response, "provider") == ["hubspot", "salesforce"]
    assert filter_choices(response, "error code") == ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "INVALID_EMAIL"]
    assert selects(queries) == []
    assert filtered.context["cl"].result_count == 2


def test_the_inbox_lists_by_provider_and_status_and_is_counted_by_estimate_when_large(admin_client, monkeypatch):
    WebhookEventFactory.create_batch(2, provider="hubspot")
    WebhookEventFactory(provider="salesforce", event_id="sf:1")
    monkeypatch.setattr(adminlists, "ESTIMATE_FROM", 1)

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get("/admin/webhooks/webhookevent/")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 3
    assert filter_choices(response, "provider") == ["hubspot", "salesforce"]
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() or "DATE_TRUNC" in q["sql"].upper()]


def test_the_estimate_is_exact_below_the_threshold():
    WebhookEventFactory.create_batch(4)

    assert adminlists.estimated_count(WebhookEvent.objects.all()) == 4
