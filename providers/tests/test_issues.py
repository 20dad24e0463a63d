"""Refused values: never cut, shown on the link, cleared when they fit or when a person decides."""

import pytest
from django.contrib.messages import get_messages

import providers.services
from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm import registry
from crm.base import InboundChange, field_hash
from providers import inbound
from providers.issues import link_issues_resolve, presented_status, refusal, split_values
from providers.ledger import changed_values
from providers.models import LinkStatus, ProviderLink, RecordIssue

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def connected(settings, monkeypatch) -> list[list[str]]:
    """Both CRMs connected; what would be handed to the forwarder after commit is recorded."""
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "x", "instance_url": "http://127.0.0.1:1"}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    registry.reset()
    calls: list[list[str]] = []
    monkeypatch.setattr(providers.services, "enqueue_forward", lambda *, providers: calls.append(list(providers)))
    return calls


def linked(contact: Contact, provider: str = "hubspot", external_id: str = "101") -> ProviderLink:
    hashes = {f: field_hash(f, v) for f, v in contact.synced_values().items()}
    return ProviderLink.objects.create(
        contact=contact, provider=provider, external_id=external_id, status=LinkStatus.SYNCED, field_hashes=hashes
    )


def edit(external_id: str = "101", **values: str) -> str:
    return inbound.change_apply(provider="hubspot", change=InboundChange(external_id=external_id, values=values))


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("job_title", "x" * 129, "too_long"),
        ("email", "a" * 69 + "@example.com", "too_long"),
        ("email", "not an email", "invalid_email"),
        ("first_name", 123, "not_text"),
    ],
)
def test_a_value_syncroot_cannot_hold_is_refused_never_cut(field, value, code):
    assert refusal(field, value, source="HubSpot")[0] == code
    fitting, refused = split_values({field: value, "phone": "+1 555"}, source="HubSpot")
    assert fitting == {"phone": "+1 555"}
    assert refused[field][0] == code


def test_a_refused_value_is_shown_the_other_fields_apply_and_a_fitting_value_clears_it(connected):
    contact = ContactFactory(job_title="Analyst", first_name="Ada")
    link = linked(contact)

    outcome = edit(job_title="x" * 300, first_name="Augusta")

    contact.refresh_from_db()
    link.refresh_from_db()
    assert outcome == inbound.APPLIED
    assert (contact.first_name, contact.job_title) == ("Augusta", "Analyst")
    assert [(i["field"], i["code"]) for i in link.issues] == [("job_title", "too_long")]
    assert presented_status(link) == "issue"
    # SyncRoot's older value is not written over the person's newer one in HubSpot.
    assert changed_values(contact=contact, link=link) == {}
    salesforce_pending = ProviderLink.objects.get(contact=contact, provider="salesforce")
    assert salesforce_pending.status == LinkStatus.PENDING  # the fitting field goes on

    edit(job_title="Head of Research")

    contact.refresh_from_db()
    link.refresh_from_db()
    assert contact.job_title == "Head of Research"
    assert link.issues == []
    assert presented_status(link) == "synced"


def test_a_new_syncroot_value_reaches_the_crm_and_clears_the_issue():
    contact = ContactFactory(job_title="Analyst")
    link = linked(contact)
    edit(job_title="x" * 300)
    contact.refresh_from_db()
    link.refresh_from_db()

    contact.job_title = "Director"  # a newer change through the API
    contact.save()

    assert changed_values(contact=contact, link=link) == {"job_title": "Director"}


def test_a_case_only_email_edit_is_no_change_and_nothing_goes_back():
    contact = ContactFactory(email="late@example.com")
    link = linked(contact)

    assert edit(email="LATE@Example.com") == inbound.UNCHANGED

    contact.refresh_from_db()
    link.refresh_from_db()
    assert contact.email == "late@example.com"
    assert changed_values(contact=contact, link=link) == {}
    assert link.status == LinkStatus.SYNCED


def test_an_email_clash_is_a_conflict_on_both_and_resolving_sends_syncroots_values(connected):
    ada, bob = ContactFactory(email="ada@example.com"), ContactFactory(email="bob@example.com")
    ada_link, bob_link = linked(ada, external_id="1"), linked(bob, external_id="2")

    assert edit("2", email="ada@example.com", first_name="Robert") == inbound.APPLIED

    bob.refresh_from_db()
    ada_link.refresh_from_db()
    bob_link.refresh_from_db()
    assert (bob.email, bob.first_name) == ("bob@example.com", "Robert")  # the other field still applies
    assert presented_status(bob_link) == presented_status(ada_link) == "conflict"
    assert bob_link.issues[0]["contact_id"] == str(ada.pk)
    assert ada_link.issues[0]["contact_id"] == str(bob.pk)
    assert "email" not in changed_values(contact=bob, link=bob_link)

    assert link_issues_resolve(link_id=ada_link.pk) is True  # from either side

    ada_link.refresh_from_db()
    bob_link.refresh_from_db()
    assert ada_link.issues == bob_link.issues == []
    assert bob_link.status == LinkStatus.PENDING
    assert changed_values(contact=bob, link=bob_link)["email"] == "bob@example.com"


def test_a_record_without_an_email_or_with_one_syncroot_cannot_hold_is_a_record_issue():
    assert edit("7", first_name="Nobody") == inbound.NO_EMAIL_OUTCOME
    assert edit("8", email="b" * 80 + "@example.com") == inbound.REFUSED

    assert dict(RecordIssue.objects.values_list("external_id", "code")) == {"7": "no_email", "8": "too_long"}
    assert not Contact.objects.exists()

    assert edit("7", email="somebody@example.com", first_name="Some") == inbound.CREATED
    assert set(RecordIssue.objects.values_list("external_id", flat=True)) == {"8"}


def test_a_contact_created_from_a_record_that_cannot_be_linked_is_not_left_behind(monkeypatch):
    # Another process linked the record meanwhile: the contact made for it must go with the attempt.
    monkeypatch.setattr(inbound, "_link", lambda **kwargs: None)

    assert edit("9", email="raced@example.com") == inbound.CONFLICT

    assert not Contact.objects.exists()
    assert RecordIssue.objects.get(external_id="9").code == "duplicate_record"


def test_the_admin_lists_sync_issues_and_sends_syncroots_values(admin_client, connected):
    contact = ContactFactory(job_title="Analyst")
    link = linked(contact)
    edit(job_title="x" * 300)

    page = admin_client.get("/admin/providers/linkissue/")
    assert page.status_code == 200
    assert b"HubSpot holds 300 characters in job_title" in page.content
    assert admin_client.get(f"/admin/contacts/contact/{contact.pk}/change/").status_code == 200

    response = admin_client.post(
        "/admin/providers/linkissue/", {"action": "send_syncroot_values", "_selected_action": [link.pk]}, follow=True
    )

    assert "Queued SyncRoot's values for 1 record(s)." in [str(m) for m in get_messages(response.wsgi_request)]
    link.refresh_from_db()
    assert link.issues == []
    assert changed_values(contact=contact, link=link) == {"job_title": "Analyst"}
    assert admin_client.get("/admin/providers/recordissue/").status_code == 200


def test_a_whole_record_repeating_the_refused_value_keeps_the_issue():
    """Salesforce's Outbound Messages carry every field, changed or not."""
    ada, bob = ContactFactory(email="ada@example.com"), ContactFactory(email="bob@example.com")
    linked(ada, external_id="1")
    bob_link = linked(bob, external_id="2")
    edit("2", email="ada@example.com")

    edit("2", email="ada@example.com", first_name="Bobby")  # another edit; the email still clashes

    bob_link.refresh_from_db()
    assert presented_status(bob_link) == "conflict"
    assert "email" not in changed_values(contact=Contact.objects.get(pk=bob.pk), link=bob_link)
