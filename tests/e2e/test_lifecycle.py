"""Merges, restores and erasures through the real stack: made in a CRM or through the API, they
reach SyncRoot and the other CRM, and afterwards the API and both CRMs hold the same live contacts,
with no duplicates."""

import pytest

from contacts.models import Contact
from providers.models import DeadLetter, ProviderLink, RecordIssue
from providers.reconcile import reconcile
from tests.e2e.test_no_silent_change import drain_all
from tests.e2e.test_outbound import synced

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def linked(stack, email: str, **values) -> dict:
    body = {"email": email, "first_name": "Ada", "last_name": "Lovelace", **values}
    created = stack.api.post("/contacts", body, format="json")
    assert created.status_code == 201, created.content
    return stack.wait_until(lambda: synced(stack, created.json()["id"]))


def ids(body: dict) -> tuple[str, str]:
    return body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]


def live_emails(stack) -> dict[str, list[str]]:
    """The live contacts' emails: in the API, in HubSpot, in Salesforce (sorted, duplicates kept)."""
    listed = stack.api.get("/contacts", {"limit": 100}).json()["results"]
    return {
        "api": sorted(c["email"] for c in listed),
        "hubspot": sorted(r["properties"].get("email", "") for r in stack.hubspot_records()),
        "salesforce": sorted((r["Email"] or "") for r in stack.salesforce_contacts()),
    }


def converged(stack, expected: list[str]):
    emails = live_emails(stack)
    return emails if all(found == sorted(expected) for found in emails.values()) else None


def merged_into(stack, contact_id: str) -> str | None:
    response = stack.api.get(f"/contacts/{contact_id}")
    return response.json()["details"]["merged_into"] if response.status_code == 410 else None


def sf_row(stack, sf_id: str) -> dict:
    soql = f"SELECT Id, IsDeleted, MasterRecordId, Email, Phone, Title FROM Contact WHERE Id = '{sf_id}'"
    return stack.salesforce_sdk().query_all(soql, include_deleted=True)["records"][0]


def test_merge_through_the_api_merges_the_records_in_both_crms(stack):
    keep = linked(stack, "ada@example.com")
    other = linked(stack, "ada.l@example.com", phone="+44 20 1234", job_title="Analyst")
    keep_hs, keep_sf = ids(keep)
    other_hs, other_sf = ids(other)

    response = stack.api.post(f"/contacts/{keep['id']}/merge", {"other_id": other["id"]}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["phone"], response.json()["job_title"]) == ("+44 20 1234", "Analyst")
    assert merged_into(stack, other["id"]) == keep["id"]
    stack.wait_until(lambda: converged(stack, ["ada@example.com"]))
    stack.wait_until(lambda: sf_row(stack, other_sf)["MasterRecordId"] == keep_sf)
    assert sf_row(stack, keep_sf)["Phone"] == "+44 20 1234"
    survivor = stack.hubspot_sdk().crm.contacts.basic_api.get_by_id(other_hs, properties=["email", "phone"])
    assert survivor.id == keep_hs  # HubSpot answers the merged-away id with the survivor
    assert survivor.properties["phone"] == "+44 20 1234"


def test_merge_in_hubspot_merges_the_contacts_and_the_salesforce_records(stack):
    keep = linked(stack, "grace@example.com")
    other = linked(stack, "grace.h@example.com", company="Navy")
    keep_hs, keep_sf = ids(keep)
    other_hs, other_sf = ids(other)

    stack.hubspot_ctl.edit(other_hs, merge_into=keep_hs)  # a person merges the two in HubSpot

    assert stack.wait_until(lambda: merged_into(stack, other["id"])) == keep["id"]
    stack.wait_until(lambda: converged(stack, ["grace@example.com"]))
    stack.wait_until(lambda: sf_row(stack, other_sf)["MasterRecordId"] == keep_sf)
    assert stack.wait_until(lambda: stack.api.get(f"/contacts/{keep['id']}").json()["company"] == "Navy")


def test_merge_in_salesforce_merges_the_contacts_and_the_hubspot_records(stack):
    keep = linked(stack, "alan@example.com")
    other = linked(stack, "alan.t@example.com", job_title="Mathematician")
    keep_hs, keep_sf = ids(keep)
    other_hs, other_sf = ids(other)

    stack.salesforce_ctl.edit(other_sf, merge_into=keep_sf)  # the merge wizard in Salesforce

    assert stack.wait_until(lambda: merged_into(stack, other["id"])) == keep["id"]
    stack.wait_until(lambda: converged(stack, ["alan@example.com"]))
    hubspot = stack.hubspot_sdk().crm.contacts.basic_api
    stack.wait_until(lambda: hubspot.get_by_id(other_hs).id == keep_hs)
    stack.wait_until(lambda: stack.api.get(f"/contacts/{keep['id']}").json()["job_title"] == "Mathematician")
    stack.wait_until(
        lambda: hubspot.get_by_id(keep_hs, properties=["jobtitle"]).properties["jobtitle"] == "Mathematician"
    )


def test_restore_in_hubspot_brings_the_contact_back_and_undeletes_in_salesforce(stack):
    body = linked(stack, "back@example.com")
    hs_id, sf_id = ids(body)
    assert stack.api.delete(f"/contacts/{body['id']}").status_code == 204
    stack.wait_until(lambda: converged(stack, []))

    stack.hubspot_ctl.edit(hs_id, restore=True)  # from HubSpot's recycle bin

    back = stack.wait_until(lambda: synced(stack, body["id"]))
    assert back["version"] > body["version"] + 1
    assert ids(back) == (hs_id, sf_id)  # the same records, not new ones
    assert sf_row(stack, sf_id)["IsDeleted"] is False
    stack.wait_until(lambda: converged(stack, ["back@example.com"]))


def test_undelete_in_salesforce_brings_the_contact_back_and_recreates_it_in_hubspot(stack):
    body = linked(stack, "lazarus@example.com", phone="+1 555 0100")
    hs_id, sf_id = ids(body)
    assert stack.api.delete(f"/contacts/{body['id']}").status_code == 204
    stack.wait_until(lambda: converged(stack, []))

    stack.salesforce_ctl.edit(sf_id, undelete=True)  # from Salesforce's recycle bin

    back = stack.wait_until(lambda: synced(stack, body["id"]))
    assert back["sync"]["salesforce"]["external_id"] == sf_id
    assert back["phone"] == "+1 555 0100"
    stack.wait_until(lambda: converged(stack, ["lazarus@example.com"]))
    [record] = stack.hubspot_records()
    assert record["properties"]["phone"] == "+1 555 0100"  # HubSpot cannot undelete: a full new record


def test_restore_through_the_api_reaches_both_crms(stack):
    body = linked(stack, "again@example.com")
    hs_id, sf_id = ids(body)
    assert stack.api.delete(f"/contacts/{body['id']}").status_code == 204
    stack.wait_until(lambda: converged(stack, []))

    response = stack.api.post(f"/contacts/{body['id']}/restore")

    assert response.status_code == 200, response.content
    assert response.json()["id"] == body["id"]
    back = stack.wait_until(lambda: synced(stack, body["id"]))
    assert back["sync"]["salesforce"]["external_id"] == sf_id  # undeleted, not created again
    stack.wait_until(lambda: converged(stack, ["again@example.com"]))


def test_gdpr_delete_in_hubspot_erases_the_person_and_deletes_them_in_salesforce(stack):
    body = linked(stack, "forget.me@example.com", phone="+49 30 1234")
    hs_id, sf_id = ids(body)

    stack.hubspot_ctl.edit(hs_id, gdpr_delete=True)

    stack.wait_until(lambda: Contact.objects.filter(pk=body["id"]).exclude(erased_email_hash="").exists())
    erased = Contact.objects.get(pk=body["id"])
    assert (erased.email, erased.phone, erased.first_name) == ("", "", "")
    assert stack.api.get(f"/contacts/{body['id']}").status_code == 404
    stack.wait_until(lambda: converged(stack, []))
    assert sf_row(stack, sf_id)["IsDeleted"] is True
    # Salesforce still holds the person elsewhere (an old import, say): SyncRoot does not take them in.
    again = stack.salesforce_ctl.edit(fields={"Email": "Forget.Me@example.com", "LastName": "Again"})
    stack.wait_until(lambda: RecordIssue.objects.filter(external_id=again["Id"], code="erased_person").exists())
    assert stack.api.get("/contacts", {"email": "forget.me@example.com"}).json()["results"] == []


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_a_merge_into_a_record_a_person_deleted_meanwhile_leaves_no_record_behind(bare_stack, settings, crm):
    settings.SYNC_BATCH_LINGER_MS = 0
    stack = bare_stack  # no worker: the forwarder and the reconciler run when the test says
    for control in (stack.hubspot_ctl, stack.salesforce_ctl):
        control.config(webhooks_enabled=False)
    keep = stack.api.post("/contacts", {"email": "keep@example.com", "last_name": "Keep"}, format="json").json()
    other = stack.api.post("/contacts", {"email": "other@example.com", "phone": "+1 2"}, format="json").json()
    drain_all()
    record = ProviderLink.objects.get(contact_id=keep["id"], provider=crm).external_id
    control = stack.hubspot_ctl if crm == "hubspot" else stack.salesforce_ctl
    control.edit(record, delete=True)  # a person deletes the survivor's record there...

    merged = stack.api.post(f"/contacts/{keep['id']}/merge", {"other_id": other["id"]}, format="json")
    assert merged.status_code == 200, merged.content
    drain_all()  # ...before SyncRoot heard of it: the merge into that record cannot be made

    # The other record was not left behind: deleted, its values being the survivor's (whose update
    # to its gone record sends it whole again, as after any deletion crossing an update).
    assert "other@example.com" not in live_emails(stack)[crm]
    assert not ProviderLink.objects.filter(status="parked").exists()
    reconcile(provider_name=crm)  # the person's deletion reaches SyncRoot
    drain_all()
    assert converged(stack, live_emails(stack)["api"]), live_emails(stack)
    assert "other@example.com" not in live_emails(stack)["hubspot"] + live_emails(stack)["salesforce"]


def test_a_merge_in_hubspot_whose_webhook_was_lost_is_followed_after_the_survivor_was_deleted(bare_stack, settings):
    settings.SYNC_BATCH_LINGER_MS = 0
    stack = bare_stack  # no worker, no webhooks: only the reconciler sees what people did
    for control in (stack.hubspot_ctl, stack.salesforce_ctl):
        control.config(webhooks_enabled=False)
    keep = stack.api.post("/contacts", {"email": "keep@example.com"}, format="json").json()
    other = stack.api.post("/contacts", {"email": "other@example.com"}, format="json").json()
    drain_all()
    keep_hs = ProviderLink.objects.get(contact_id=keep["id"], provider="hubspot").external_id
    other_hs = ProviderLink.objects.get(contact_id=other["id"], provider="hubspot").external_id
    stack.hubspot_ctl.edit(other_hs, merge_into=keep_hs)  # a person merges the two in HubSpot...
    stack.hubspot_ctl.edit(keep_hs, delete=True)  # ...then deletes the survivor

    reconcile(provider_name="hubspot")
    drain_all()

    assert merged_into(stack, other["id"]) == keep["id"]
    assert stack.api.get(f"/contacts/{keep['id']}").status_code == 404
    assert converged(stack, [])


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
@pytest.mark.parametrize("first", ["crm_merge_seen", "api_merge_sent"])
def test_a_person_merging_in_a_crm_the_other_way_round_what_the_api_merged_keeps_the_survivor(
    bare_stack, settings, first, crm
):
    settings.SYNC_BATCH_LINGER_MS = 0
    stack = bare_stack  # no worker, no webhooks: the forwarder and the reconciler run when the test says
    for control in (stack.hubspot_ctl, stack.salesforce_ctl):
        control.config(webhooks_enabled=False)
    keep = stack.api.post("/contacts", {"email": "keep@example.com", "last_name": "Keep"}, format="json").json()
    other = stack.api.post("/contacts", {"email": "other@example.com", "phone": "+1 2"}, format="json").json()
    drain_all()
    keep_record = ProviderLink.objects.get(contact_id=keep["id"], provider=crm).external_id
    other_record = ProviderLink.objects.get(contact_id=other["id"], provider=crm).external_id
    assert stack.api.post(f"/contacts/{keep['id']}/merge", {"other_id": other["id"]}, format="json").status_code == 200
    control = stack.hubspot_ctl if crm == "hubspot" else stack.salesforce_ctl
    control.edit(keep_record, merge_into=other_record)  # before SyncRoot's merge reaches the CRM

    if first == "crm_merge_seen":
        reconcile(provider_name=crm)
    drain_all()
    reconcile(provider_name=crm)
    drain_all()

    assert stack.api.get(f"/contacts/{keep['id']}").status_code == 200  # one person, alive
    assert merged_into(stack, other["id"]) == keep["id"]
    assert ProviderLink.objects.get(contact_id=keep["id"], provider=crm).external_id == other_record
    assert not ProviderLink.objects.filter(status="parked").exists(), stack.describe()
    assert not DeadLetter.objects.exists(), list(DeadLetter.objects.values("provider", "error_code"))
    # One person everywhere: with the values of the CRM's merged record (its email, the later change)
    # when SyncRoot saw the CRM's merge first, else with SyncRoot's survivor's, written to the record.
    email = "other@example.com" if first == "crm_merge_seen" else "keep@example.com"
    assert converged(stack, [email]), live_emails(stack)
    assert stack.api.get(f"/contacts/{keep['id']}").json()["email"] == email
