"""Marking contacts pending (providers.services.links_mark_pending_many): its upsert is written out,
so these hold it to what the model says a new link is and to what an existing link keeps."""

import pytest
from django.forms.models import model_to_dict

import providers.services
from contacts.tests.factories import ContactFactory
from providers.models import LinkStatus, ProviderLink
from providers.services import links_mark_pending_many

pytestmark = pytest.mark.django_db

GIVEN = {"id", "contact", "provider", "status", "pending_since", "backfill", "updated_at"}


@pytest.fixture(autouse=True)
def connected(monkeypatch, enqueued):
    monkeypatch.setattr(providers.services, "connected_providers", lambda: ["salesforce", "hubspot"])
    return enqueued


def test_a_new_link_holds_the_models_defaults_but_what_marking_pending_gives_it(
    connected, django_capture_on_commit_callbacks
):
    contacts = ContactFactory.create_batch(3)

    with django_capture_on_commit_callbacks(execute=True):
        marked = links_mark_pending_many(contacts=contacts, backfill=True)

    assert marked == ["salesforce", "hubspot"]
    links = ProviderLink.objects.filter(contact__in=contacts)
    assert sorted((link.contact_id, link.provider) for link in links) == sorted(
        (contact.pk, name) for contact in contacts for name in marked
    )
    defaults = {k: v for k, v in model_to_dict(ProviderLink()).items() if k not in GIVEN}
    for link in links:
        assert {k: v for k, v in model_to_dict(link).items() if k not in GIVEN} == defaults
        assert link.status == LinkStatus.PENDING
        assert link.backfill is True
        assert link.pending_since is not None
        assert link.updated_at is not None
    assert connected == [["salesforce", "hubspot"]]  # one enqueue after commit for the lot


def test_an_existing_link_is_marked_pending_and_keeps_what_it_knows_of_the_crm():
    contact = ContactFactory()
    synced = ProviderLink.objects.create(
        contact=contact, provider="hubspot", external_id="901", status=LinkStatus.SYNCED, synced_version=3,
        field_hashes={"email": "abc"}, backfill=True,
    )  # fmt: skip

    links_mark_pending_many(contacts=[contact], exclude=["salesforce"])

    synced.refresh_from_db()
    assert (synced.status, synced.backfill, synced.pending_since is not None) == (LinkStatus.PENDING, False, True)
    assert (synced.external_id, synced.synced_version, synced.field_hashes) == ("901", 3, {"email": "abc"})
    assert not ProviderLink.objects.filter(contact=contact, provider="salesforce").exists()


def test_no_contacts_or_no_crm_left_marks_nothing(connected, django_capture_on_commit_callbacks):
    contact = ContactFactory()

    with django_capture_on_commit_callbacks(execute=True):
        assert links_mark_pending_many(contacts=[]) == []
        assert links_mark_pending_many(contacts=[contact], exclude=["salesforce", "hubspot"]) == []
    assert not ProviderLink.objects.filter(contact=contact).exists()
    assert connected == []
