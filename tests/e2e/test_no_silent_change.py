"""Values are never changed without a word: what does not fit is refused for its target and shown,
identities are never confused, and a match by email fills blanks instead of blanking values."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from contacts.models import Contact
from crm.hubspot.provider import HubSpotProvider
from providers.models import LinkStatus, ProviderLink, RecordIssue
from providers.outbox import drain_until_idle
from providers.reconcile import reconcile
from sandbox.testing import next_millisecond
from tests.e2e.test_inbound import api_contact, linked_everywhere, quiet, writes
from tests.e2e.test_outbound import hs_contact, sf_contact, synced
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def metric(stack, name: str, **labels: str) -> float | None:
    """One sample of /metrics, by name and labels (None when absent)."""
    page = requests.get(f"{stack.server_url}/metrics", timeout=10)
    assert page.status_code == 200, page.text
    for family in text_string_to_metric_families(page.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def sync_of(stack, contact_id: str, provider: str) -> dict:
    return api_contact(stack, contact_id)["sync"][provider]


def test_a_long_value_typed_in_hubspot_is_refused_shown_and_cleared_when_it_fits(stack):
    body = linked_everywhere(stack, "long@example.com")
    hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
    quiet(stack)
    title = "Head of " + "very " * 56 + "long titles!"  # 300 characters: HubSpot takes it, SyncRoot holds 128
    assert len(title) == 300

    stack.hubspot_ctl.edit(hs_id, {"jobtitle": title, "firstname": "Augusta"})

    # The other fields still sync; the long one is refused for SyncRoot, not cut.
    stack.wait_until(lambda: sf_contact(stack, sf_id)["FirstName"] == "Augusta")
    entry = stack.wait_until(lambda: (e := sync_of(stack, body["id"], "hubspot"))["status"] == "issue" and e)
    assert entry["issues"] == [
        {
            "field": "job_title",
            "code": "too_long",
            "message": "HubSpot holds 300 characters in job_title; SyncRoot holds at most 128",
        }
    ]
    quiet(stack)
    assert api_contact(stack, body["id"])["job_title"] == ""
    assert sf_contact(stack, sf_id)["Title"] is None
    assert hs_contact(stack, hs_id).properties["jobtitle"] == title  # the person's value is not overwritten
    assert metric(stack, "syncroot_sync_issues", provider="hubspot", field="job_title", code="too_long") == 1

    stack.hubspot_ctl.edit(hs_id, {"jobtitle": "Head of Research"})

    stack.wait_until(lambda: sf_contact(stack, sf_id)["Title"] == "Head of Research")
    entry = stack.wait_until(lambda: (e := sync_of(stack, body["id"], "hubspot"))["status"] == "synced" and e)
    assert entry["issues"] == []
    assert metric(stack, "syncroot_sync_issues", provider="hubspot", field="job_title", code="too_long") in (None, 0)


def test_an_email_syncroot_cannot_hold_is_never_altered(stack):
    body = linked_everywhere(stack, "short@example.com")
    hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
    long_email = "a" * 69 + "@example.com"  # 81 characters: cut to 80 it was another, valid address
    longer = "b" * 80 + "@example.com"  # 92 characters: cut to 80 it had no "@"

    stack.hubspot_ctl.edit(hs_id, {"email": long_email})
    new_records = [stack.hubspot_ctl.edit(None, {"email": longer, "firstname": "Bea"})["id"]]
    new_records.append(stack.hubspot_ctl.edit(None, {"email": long_email.replace("a", "c"), "firstname": "Cy"})["id"])
    no_email = stack.hubspot_ctl.edit(None, {"firstname": "Nobody"})["id"]

    entry = stack.wait_until(lambda: (e := sync_of(stack, body["id"], "hubspot"))["status"] == "issue" and e)
    assert entry["issues"][0]["field"] == "email"
    assert entry["issues"][0]["code"] == "too_long"
    stack.wait_until(lambda: RecordIssue.objects.count() == 3)
    quiet(stack)
    assert Contact.objects.get(pk=body["id"]).email == "short@example.com"
    assert sf_contact(stack, sf_id)["Email"] == "short@example.com"
    assert hs_contact(stack, hs_id).properties["email"] == long_email
    assert Contact.objects.count() == 1  # neither record became a contact with a cut email
    assert len(stack.salesforce_contacts()) == 1
    issues = {i.external_id: i.code for i in RecordIssue.objects.all()}
    assert issues == {new_records[0]: "too_long", new_records[1]: "too_long", no_email: "no_email"}
    assert metric(stack, "syncroot_record_issues", provider="hubspot", code="too_long") == 2
    assert metric(stack, "syncroot_record_issues", provider="hubspot", code="no_email") == 1

    # Once the record has an email SyncRoot can hold, it comes in and its issue goes.
    stack.hubspot_ctl.edit(no_email, {"email": "somebody@example.com"})
    stack.wait_until(lambda: Contact.objects.filter(email="somebody@example.com").exists())
    stack.wait_until(lambda: not RecordIssue.objects.filter(external_id=no_email).exists())


def test_a_case_only_email_edit_in_salesforce_is_not_written_back(stack):
    body = linked_everywhere(stack, "late@example.com")
    hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
    quiet(stack)
    before = writes(stack.salesforce_ctl.stats()), writes(stack.hubspot_ctl.stats())
    events = WebhookEvent.objects.filter(provider="salesforce").count()

    stack.salesforce_ctl.edit(sf_id, {"Email": "LATE@Example.com"})

    stack.wait_until(
        lambda: WebhookEvent.objects.filter(provider="salesforce").exclude(status="received").count() > events
    )
    quiet(stack)
    assert sf_contact(stack, sf_id)["Email"] == "LATE@Example.com"  # the person's edit stands
    assert (writes(stack.salesforce_ctl.stats()), writes(stack.hubspot_ctl.stats())) == before
    assert hs_contact(stack, hs_id).properties["email"] == "late@example.com"
    assert sync_of(stack, body["id"], "salesforce")["status"] == "synced"


def test_an_email_clash_from_salesforce_is_a_conflict_on_both_contacts_until_resolved(stack):
    ada = linked_everywhere(stack, "ada@example.com")
    bob = linked_everywhere(stack, "bob@example.com")
    bob_sf, bob_hs = bob["sync"]["salesforce"]["external_id"], bob["sync"]["hubspot"]["external_id"]
    quiet(stack)

    stack.salesforce_ctl.edit(bob_sf, {"Email": "ada@example.com"})

    bob_entry = stack.wait_until(lambda: (e := sync_of(stack, bob["id"], "salesforce"))["status"] == "conflict" and e)
    assert bob_entry["issues"][0]["code"] == "email_conflict"
    assert ada["id"] in bob_entry["issues"][0]["message"]
    ada_entry = sync_of(stack, ada["id"], "salesforce")
    assert ada_entry["status"] == "conflict"
    assert bob["id"] in ada_entry["issues"][0]["message"]
    quiet(stack)
    assert Contact.objects.get(pk=bob["id"]).email == "bob@example.com"
    assert sf_contact(stack, bob_sf)["Email"] == "ada@example.com"  # not overwritten behind the person's back
    assert hs_contact(stack, bob_hs).properties["email"] == "bob@example.com"
    assert metric(stack, "syncroot_sync_issues", provider="salesforce", field="email", code="email_conflict") == 2

    # The person fixes it in Salesforce: the new email applies, both conflicts go.
    stack.salesforce_ctl.edit(bob_sf, {"Email": "robert@example.com"})

    stack.wait_until(lambda: hs_contact(stack, bob_hs).properties["email"] == "robert@example.com")
    stack.wait_until(lambda: sync_of(stack, bob["id"], "salesforce")["status"] == "synced")
    stack.wait_until(lambda: sync_of(stack, ada["id"], "salesforce")["status"] == "synced")
    assert sync_of(stack, ada["id"], "salesforce")["issues"] == []


def test_matching_an_existing_record_fills_blanks_and_never_blanks_values(stack):
    stack.hubspot_ctl.config(webhooks_enabled=False)
    stack.salesforce_ctl.config(webhooks_enabled=False)
    hs_id = stack.hubspot_ctl.edit(None, {"email": "jones@example.com", "lastname": "Jones", "phone": "+1 555 0199"})[
        "id"
    ]
    sf_id = stack.salesforce_ctl.edit(None, {"Email": "jones@example.com", "LastName": "Jones", "Title": "CFO"})["Id"]

    created = stack.api.post("/contacts", {"email": "jones@example.com", "first_name": "Tom"}, format="json")
    assert created.status_code == 201

    # Both records keep what they held; SyncRoot's blanks take their values and pass them on.
    def filled():
        contact = api_contact(stack, created.json()["id"])
        return contact["last_name"] == "Jones" and contact["phone"] and contact["job_title"] and contact

    contact = stack.wait_until(filled)
    assert (contact["phone"], contact["job_title"]) == ("+1 555 0199", "CFO")
    stack.wait_until(lambda: synced(stack, contact["id"], contact["version"]))
    hubspot = hs_contact(stack, hs_id).properties
    assert (hubspot["firstname"], hubspot["lastname"], hubspot["jobtitle"]) == ("Tom", "Jones", "CFO")
    salesforce = sf_contact(stack, sf_id)
    assert (salesforce["FirstName"], salesforce["LastName"], salesforce["Phone"]) == ("Tom", "Jones", "+1 555 0199")
    assert len(stack.hubspot_records()) == len(stack.salesforce_contacts()) == 1


def drain_all() -> None:
    for provider in ("hubspot", "salesforce"):
        drain_until_idle(provider_name=provider)


def test_delete_then_create_again_gets_fresh_crm_records_in_one_batch(bare_stack, settings):
    settings.SYNC_BATCH_LINGER_MS = 0
    stack = bare_stack
    first = stack.api.post("/contacts", {"email": "again@example.com", "last_name": "First"}, format="json").json()
    drain_all()
    old = {link.provider: link.external_id for link in ProviderLink.objects.filter(contact_id=first["id"])}

    assert stack.api.delete(f"/contacts/{first['id']}").status_code == 204
    second = stack.api.post("/contacts", {"email": "again@example.com", "last_name": "Second"}, format="json").json()
    drain_all()  # the deletion and the new contact in one batch per CRM

    new = {link.provider: link for link in ProviderLink.objects.filter(contact_id=second["id"])}
    assert {p: link.status for p, link in new.items()} == {"hubspot": "synced", "salesforce": "synced"}
    assert all(new[p].external_id != old[p] for p in old)
    assert sf_contact(stack, old["salesforce"])["IsDeleted"] is True
    assert sf_contact(stack, new["salesforce"].external_id)["LastName"] == "Second"
    assert hs_contact(stack, new["hubspot"].external_id).properties["lastname"] == "Second"


def test_a_new_contact_never_takes_the_record_of_a_deleted_one_whose_deletion_is_late(bare_stack, settings):
    settings.SYNC_BATCH_LINGER_MS = 0
    stack = bare_stack
    first = stack.api.post("/contacts", {"email": "late.delete@example.com", "last_name": "First"}, format="json")
    drain_all()
    old = ProviderLink.objects.get(contact_id=first.json()["id"], provider="salesforce").external_id
    stack.api.delete(f"/contacts/{first.json()['id']}")
    # The deletion waits for a retry (the CRM failed it a moment ago) while the new contact goes.
    ProviderLink.objects.filter(contact_id=first.json()["id"]).update(
        status=LinkStatus.FAILED, next_attempt_at="2999-01-01T00:00:00Z"
    )
    second = stack.api.post("/contacts", {"email": "late.delete@example.com", "last_name": "Second"}, format="json")

    drain_all()

    link = ProviderLink.objects.get(contact_id=second.json()["id"], provider="salesforce")
    assert link.status == LinkStatus.FAILED
    assert link.last_error_code == "MATCHED_DELETED_CONTACT"
    assert link.external_id is None
    assert not link.dead_letters.exists()

    ProviderLink.objects.filter(contact_id=first.json()["id"]).update(next_attempt_at=None)
    ProviderLink.objects.filter(pk=link.pk).update(next_attempt_at=None)
    drain_all()  # the deletion goes first, then the new contact gets a record of its own

    link.refresh_from_db()
    assert link.status == LinkStatus.SYNCED
    assert link.external_id not in (None, old)
    assert sf_contact(stack, old)["IsDeleted"] is True
    assert sf_contact(stack, link.external_id)["LastName"] == "Second"


def test_a_person_blanking_a_field_just_after_syncroots_write_is_not_taken_for_a_late_snapshot(
    bare_stack, settings, monkeypatch
):
    settings.SYNC_BATCH_LINGER_MS = 0
    stack = bare_stack  # no worker, no webhooks: the reconciler reads what the person did
    for control in (stack.hubspot_ctl, stack.salesforce_ctl):
        control.config(webhooks_enabled=False)
    body = stack.api.post("/contacts", {"email": "quick@example.com", "last_name": "Chloé"}, format="json").json()
    drain_all()
    hs_id = ProviderLink.objects.get(contact_id=body["id"], provider="hubspot").external_id
    assert stack.api.patch(f"/contacts/{body['id']}", {"last_name": "Søren"}, format="json").status_code == 200
    push = HubSpotProvider.push

    def push_then_a_person_clears_it(provider, items):
        results = push(provider, items)
        # HubSpot applied the write; before its answer is recorded, a person clears the field there.
        next_millisecond()
        stack.hubspot_ctl.edit(hs_id, {"lastname": ""})
        return results

    monkeypatch.setattr(HubSpotProvider, "push", push_then_a_person_clears_it)
    drain_all()
    monkeypatch.undo()

    reconcile(provider_name="hubspot")
    drain_all()

    assert api_contact(stack, body["id"])["last_name"] == ""  # the person's change, not lost
    sf_id = ProviderLink.objects.get(contact_id=body["id"], provider="salesforce").external_id
    assert sf_contact(stack, sf_id)["LastName"] != "Søren"  # and on to Salesforce
