"""The operator's admin for contacts and API tokens."""

import re

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

import providers.services
from contacts.models import SYNCED_FIELDS, ApiToken, Contact, hash_token
from contacts.tests.factories import ApiTokenFactory, ContactFactory
from crm import registry
from providers.models import LinkStatus, ProviderLink
from syncroot import adminlists

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/contacts/contact/"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The admin user's password is hashed once per test; the production hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def hubspot(settings, monkeypatch) -> list[list[str]]:
    """HubSpot connected; the providers handed to the forwarder after commit are recorded instead of sent."""
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    registry.reset()
    calls: list[list[str]] = []
    monkeypatch.setattr(providers.services, "enqueue_forward", lambda *, providers: calls.append(list(providers)))
    return calls


@pytest.fixture
def post(admin_client, django_capture_on_commit_callbacks):
    """POST as the admin and run what the request left for after its commit."""

    def send(url: str, data: dict, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return admin_client.post(url, data, **kwargs)

    return send


def listed_emails(response) -> set[str]:
    assert response.status_code == 200
    return {contact.email for contact in response.context["cl"].result_list}


def test_the_changelist_shows_contacts_with_their_sync_state(admin_client, hubspot):
    contact = ContactFactory()
    ProviderLink.objects.create(contact=contact, provider="hubspot", status=LinkStatus.SYNCED, external_id="1")

    response = admin_client.get(CHANGELIST)

    assert listed_emails(response) == {contact.email}
    assert b"hubspot: synced" in response.content


@pytest.mark.parametrize("query", ["ada@", "ADA@EXAMPLE", "ada@example.com", " Ada@Example.COM "])
def test_contacts_are_searchable_by_their_email_or_its_beginning(admin_client, query):
    ContactFactory(email="ada@example.com", first_name="Augusta", last_name="Lovelace")
    ContactFactory(email="grace@example.com", first_name="Grace", last_name="Hopper")

    assert listed_emails(admin_client.get(CHANGELIST, {"q": query})) == {"ada@example.com"}


def test_contacts_are_searchable_by_their_id_and_by_a_crm_record_id(admin_client):
    ada = ContactFactory(email="ada@example.com")
    grace = ContactFactory(email="grace@example.com")
    ProviderLink.objects.create(contact=ada, provider="hubspot", status=LinkStatus.SYNCED, external_id="90210")
    ProviderLink.objects.create(contact=grace, provider="salesforce", status=LinkStatus.SYNCED,
                                external_id="003XX0000012345")  # fmt: skip

    assert listed_emails(admin_client.get(CHANGELIST, {"q": str(grace.pk)})) == {"grace@example.com"}
    assert listed_emails(admin_client.get(CHANGELIST, {"q": "90210"})) == {"ada@example.com"}
    assert listed_emails(admin_client.get(CHANGELIST, {"q": "003XX0000012345"})) == {"grace@example.com"}


@pytest.mark.parametrize("query", ["Lovelace", "example.com", "%", "_da@"])
def test_search_does_not_read_the_whole_table_for_substrings_or_wildcards(admin_client, query):
    """Narrowed on purpose (README, Admin): a name or an email's middle is not searched, and LIKE's
    wildcards are plain characters."""
    ContactFactory(email="ada@example.com", first_name="Augusta", last_name="Lovelace")

    assert listed_emails(admin_client.get(CHANGELIST, {"q": query})) == set()


def test_a_large_changelist_is_counted_by_estimate_not_by_count(admin_client, monkeypatch):
    ContactFactory.create_batch(3)
    monkeypatch.setattr(adminlists, "ESTIMATE_FROM", 1)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)

    assert len(listed_emails(response)) == 3
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert [q["sql"] for q in queries if q["sql"].startswith("EXPLAIN")]


def test_a_small_changelist_is_counted_exactly(admin_client):
    ContactFactory.create_batch(3)
    ContactFactory(deleted=True)

    response = admin_client.get(CHANGELIST, {"deleted": "no"})

    assert response.context["cl"].result_count == 3


def test_contacts_are_filterable_by_deleted(admin_client):
    ContactFactory(email="live@example.com")
    ContactFactory(email="gone@example.com", deleted=True)

    assert listed_emails(admin_client.get(CHANGELIST)) == {"live@example.com", "gone@example.com"}
    assert listed_emails(admin_client.get(CHANGELIST, {"deleted": "yes"})) == {"gone@example.com"}
    assert listed_emails(admin_client.get(CHANGELIST, {"deleted": "no"})) == {"live@example.com"}


def test_the_change_page_of_a_contact_opens(admin_client):
    contact = ContactFactory()

    response = admin_client.get(f"{CHANGELIST}{contact.pk}/change/")

    assert response.status_code == 200
    assert contact.email.encode() in response.content


def change_form(contact: Contact, **changes: str) -> dict:
    data = {field: getattr(contact, field) for field in SYNCED_FIELDS}
    data.update(changes)
    for prefix in ("links", "sync_attempts"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    return data


def test_an_operators_correction_bumps_the_version_and_is_synced(post, hubspot):
    contact = ContactFactory(company="Typo Inc")
    ProviderLink.objects.create(contact=contact, provider="hubspot", status=LinkStatus.SYNCED, external_id="1")

    response = post(f"{CHANGELIST}{contact.pk}/change/", change_form(contact, company="Fixed Inc"))

    assert response.status_code == 302, getattr(response, "context", None) and response.context["errors"]
    contact.refresh_from_db()
    assert (contact.company, contact.version) == ("Fixed Inc", 2)
    assert "company" in contact.field_times
    assert ProviderLink.objects.get(contact=contact).status == LinkStatus.PENDING
    assert hubspot == [["hubspot"]]


def test_saving_an_unchanged_contact_in_the_admin_keeps_its_version(post, hubspot):
    contact = ContactFactory()

    post(f"{CHANGELIST}{contact.pk}/change/", change_form(contact))

    contact.refresh_from_db()
    assert contact.version == 1
    assert hubspot == []


def test_a_duplicate_email_in_the_admin_is_a_form_error(post, hubspot):
    ContactFactory(email="taken@example.com")
    contact = ContactFactory()

    response = post(f"{CHANGELIST}{contact.pk}/change/", change_form(contact, email="TAKEN@example.com"))

    assert response.status_code == 200
    assert "already exists" in str(response.context["adminform"].form.errors["email"])
    contact.refresh_from_db()
    assert contact.version == 1
    assert hubspot == []


def test_a_duplicate_email_when_adding_in_the_admin_is_a_form_error(post):
    ContactFactory(email="taken@example.com")

    response = post(f"{CHANGELIST}add/", change_form(Contact(email=" Taken@Example.com")))

    assert response.status_code == 200
    assert "email" in response.context["adminform"].form.errors
    assert Contact.objects.count() == 1


def test_a_tombstones_email_can_be_taken_in_the_admin(post):
    ContactFactory(email="gone@example.com", deleted=True)

    response = post(f"{CHANGELIST}add/", change_form(Contact(email="gone@example.com")))

    assert response.status_code == 302
    assert Contact.objects.filter(email="gone@example.com", deleted_at__isnull=True).count() == 1


def test_a_contact_added_in_the_admin_is_synced(post, hubspot):
    response = post(f"{CHANGELIST}add/", change_form(Contact(email="new@example.com")))

    assert response.status_code == 302
    contact = Contact.objects.get(email="new@example.com")
    assert contact.version == 1
    assert set(contact.field_times) == set(SYNCED_FIELDS)
    assert ProviderLink.objects.get(contact=contact).status == LinkStatus.PENDING
    assert hubspot == [["hubspot"]]


def test_deleting_in_the_admin_keeps_a_tombstone_that_is_synced(post, hubspot):
    contact = ContactFactory()

    response = post(f"{CHANGELIST}{contact.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.deleted_at is not None
    assert contact.version == 2
    assert ProviderLink.objects.get(contact=contact).status == LinkStatus.PENDING
    assert hubspot == [["hubspot"]]


def test_the_bulk_delete_action_keeps_tombstones(post, hubspot):
    contacts = ContactFactory.create_batch(2)

    response = post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [c.pk for c in contacts], "post": "yes"}
    )

    assert response.status_code == 302
    assert Contact.objects.filter(deleted_at__isnull=False).count() == 2
    assert ProviderLink.objects.filter(status=LinkStatus.PENDING).count() == 2


# --- API tokens ------------------------------------------------------------------------------------
def test_adding_a_token_shows_it_once_and_stores_only_its_hash(admin_client):
    response = admin_client.post("/admin/contacts/apitoken/add/", {"name": "billing", "is_active": "on"}, follow=True)

    assert response.status_code == 200
    shown = [str(m) for m in get_messages(response.wsgi_request) if "shown once" in str(m)]
    assert len(shown) == 1
    raw = re.search(r"(sr_\S+)$", shown[0]).group(1)
    token = ApiToken.objects.get(name="billing")
    assert token.key_hash == hash_token(raw)
    assert raw not in {token.key_hash, token.prefix, token.name}
    assert raw.startswith(token.prefix)
    # The raw token works against the API, and is not on the token's page afterwards.
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/contacts").status_code == 200
    assert raw.encode() not in admin_client.get(f"/admin/contacts/apitoken/{token.pk}/change/").content


def test_a_token_added_inactive_stays_inactive(admin_client):
    admin_client.post("/admin/contacts/apitoken/add/", {"name": "later"})

    assert ApiToken.objects.get(name="later").is_active is False


def test_revoking_a_token_in_the_admin_keeps_its_hash(admin_client):
    token = ApiTokenFactory(name="old-app")

    response = admin_client.post(f"/admin/contacts/apitoken/{token.pk}/change/", {"name": "old-app"})

    assert response.status_code == 302
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.is_active is False
    assert stored.key_hash == token.key_hash
