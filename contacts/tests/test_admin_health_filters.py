"""The contact list answers questions (sync status per CRM, CRM record id, changed in the last hour)
without counting a million rows, and a contact's page says where each value came from."""

from datetime import timedelta

import pytest
from django.utils import timezone

from contacts.models import Contact
from contacts.services import contact_create, contact_update
from contacts.tests.factories import ContactFactory
from crm import registry
from providers.models import ChangeSource, FieldChange, LinkStatus, ProviderLink
from syncroot import adminlists

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/contacts/contact/"


@pytest.fixture(autouse=True)
def connected(settings, enqueued):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "x"}
    registry.reset()
    yield
    registry.reset()


def listed(admin_client, query: str) -> set[str]:
    response = admin_client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200, response.content
    return {contact.email for contact in response.context["cl"].result_list}


def with_link(email: str, provider: str = "hubspot", **link) -> Contact:
    contact = ContactFactory(email=email)
    ProviderLink.objects.create(contact=contact, provider=provider, **link)
    return contact


def test_contacts_filter_by_their_sync_status_with_each_crm(admin_client):
    with_link("pending@example.com", status=LinkStatus.PENDING)
    with_link("failed@example.com", status=LinkStatus.FAILED)
    with_link("synced@example.com", status=LinkStatus.SYNCED, external_id="1")
    with_link("parked@example.com", status=LinkStatus.PARKED)
    with_link("issue@example.com", status=LinkStatus.SYNCED, issues=[{"field": "phone", "code": "too_long"}])
    with_link("clash@example.com", status=LinkStatus.SYNCED, issues=[{"field": "email", "code": "email_conflict"}])
    with_link("sf-parked@example.com", provider="salesforce", status=LinkStatus.PARKED)

    assert listed(admin_client, "sync_hubspot=pending") == {"pending@example.com", "failed@example.com"}
    assert listed(admin_client, "sync_hubspot=synced") == {"synced@example.com"}
    assert listed(admin_client, "sync_hubspot=parked") == {"parked@example.com"}
    assert listed(admin_client, "sync_hubspot=issue") == {"issue@example.com"}
    assert listed(admin_client, "sync_hubspot=conflict") == {"clash@example.com"}
    assert listed(admin_client, "sync_salesforce=parked") == {"sf-parked@example.com"}


def test_a_contact_is_found_by_a_crm_record_id(admin_client):
    with_link("linked@example.com", provider="salesforce", external_id="003000000000042AAA")
    ContactFactory(email="other@example.com")

    assert listed(admin_client, "q=003000000000042AAA") == {"linked@example.com"}


def test_contacts_changed_in_the_last_hour(admin_client):
    ContactFactory(email="new@example.com")
    old = ContactFactory(email="old@example.com")
    Contact.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(hours=2))

    assert listed(admin_client, "changed=hour") == {"new@example.com"}


def test_the_list_shows_no_exact_total_and_estimates_a_large_filtered_list(admin_client, monkeypatch):
    monkeypatch.setattr(adminlists, "ESTIMATE_FROM", 1)  # as past 10,000 rows: the planner's estimate
    for n in range(4):
        ContactFactory(email=f"c{n}@example.com")
    estimates = []
    estimate = adminlists.estimated_count
    monkeypatch.setattr(adminlists, "estimated_count", lambda qs: estimates.append(qs) or estimate(qs))

    response = admin_client.get(f"{CHANGELIST}?changed=hour")

    assert response.context["cl"].show_full_result_count is False
    assert len(estimates) == 1  # the filtered list, estimated
    assert "updated_at" in str(estimates[0].query)


def test_a_contacts_page_shows_each_values_source_and_its_earlier_changes(admin_client):
    contact = contact_create(data={"email": "ada@example.com", "first_name": "Ada"})
    contact_update(contact_id=contact.pk, data={"first_name": "Augusta"}, partial=True, source=ChangeSource.OPERATOR)
    FieldChange.objects.create(contact=contact, field="company", value="Engines", source="hubspot")
    Contact.objects.filter(pk=contact.pk).update(company="Engines")

    page = admin_client.get(f"{CHANGELIST}{contact.pk}/change/").content.decode()

    assert 'id="value-sources"' in page
    row = page.split('data-field="first_name"')[1].split("</tr>")[0]
    assert "&#x27;Augusta&#x27;" in row
    assert '<td class="source">operator</td>' in row
    assert "<b>api</b> &#x27;Ada&#x27;" in row
    assert '<td class="source">hubspot</td>' in page.split('data-field="company"')[1].split("</tr>")[0]
    assert '<td class="source">before the change log</td>' in page.split('data-field="phone"')[1].split("</tr>")[0]
