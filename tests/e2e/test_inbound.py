"""A person's change inside a CRM reaches SyncRoot and the other CRM, once, with no loops."""

import time

import pytest

from contacts.models import Contact
from providers.models import LinkStatus, ProviderLink
from tests.e2e.test_outbound import hs_contact, sf_contact, synced
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def linked_everywhere(stack, email: str) -> dict:
    created = stack.api.post("/contacts", {"email": email, "first_name": "Ada", "last_name": "Lovelace"}, format="json")
    assert created.status_code == 201
    return stack.wait_until(lambda: synced(stack, created.json()["id"]))


def api_contact(stack, contact_id: str) -> dict | None:
    response = stack.api.get(f"/contacts/{contact_id}")
    return response.json() if response.status_code == 200 else None


def writes(stats: dict) -> int:
    """Write calls a sandbox answered (what the test itself reads is not counted)."""
    return sum(
        sum(by_status.values())
        for route, by_status in stats["requests"].items()
        if route.split(" ")[0] in ("POST", "PATCH", "DELETE") and "token" not in route and "search" not in route
    )


def quiet(stack, seconds: float = 1.5) -> tuple[int, int]:
    """Wait until neither sandbox sees a request for `seconds`; returns their request totals."""

    def totals():
        return stack.hubspot_ctl.stats()["requests_total"], stack.salesforce_ctl.stats()["requests_total"]

    deadline = time.monotonic() + 20
    last = totals()
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = totals()
        if now == last:
            return now
        last = now
    raise AssertionError(f"the CRMs never went quiet: {last}")


def test_hubspot_edit_reaches_syncroot_and_salesforce_without_loops(stack):
    body = linked_everywhere(stack, "ada@example.com")
    hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
    quiet(stack)
    sf_before, hs_before = writes(stack.salesforce_ctl.stats()), writes(stack.hubspot_ctl.stats())

    stack.hubspot_ctl.edit(hs_id, {"firstname": "Augusta", "jobtitle": "Analyst"})

    stack.wait_until(lambda: (api_contact(stack, body["id"]) or {}).get("first_name") == "Augusta")
    stack.wait_until(
        lambda: (sf_contact(stack, sf_id)["FirstName"], sf_contact(stack, sf_id)["Title"]) == ("Augusta", "Analyst")
    )
    quiet(stack)
    # The two property events of the edit are applied one after the other: usually one Salesforce
    # write carries both, but on a busy machine the forwarder may send the first before the second
    # is applied. Never more; and the echoes came back and went nowhere.
    assert writes(stack.salesforce_ctl.stats()) - sf_before in (1, 2)
    assert writes(stack.hubspot_ctl.stats()) == hs_before  # nothing was written back to where it came from
    contact = api_contact(stack, body["id"])
    assert contact["version"] == 3  # one bump per changed property, none for the echoes
    assert WebhookEvent.objects.filter(outcome="echo").exists()


def test_salesforce_edit_reaches_syncroot_and_hubspot(stack):
    body = linked_everywhere(stack, "grace@example.com")
    hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]

    stack.salesforce_ctl.edit(sf_id, {"LastName": "Hopper", "Phone": "+1 555 0100", "company": "Navy"})

    stack.wait_until(lambda: hs_contact(stack, hs_id).properties.get("company") == "Navy")
    hubspot = hs_contact(stack, hs_id).properties
    assert (hubspot["lastname"], hubspot["phone"]) == ("Hopper", "+1 555 0100")
    contact = api_contact(stack, body["id"])
    assert (contact["last_name"], contact["phone"], contact["company"]) == ("Hopper", "+1 555 0100", "Navy")
    quiet(stack)
    assert api_contact(stack, body["id"])["version"] == 2


def test_creation_in_hubspot_reaches_syncroot_and_salesforce(stack):
    record = stack.hubspot_ctl.edit(None, {"email": "new.hs@example.com", "firstname": "Hedy", "lastname": "Lamarr"})

    contact = stack.wait_until(lambda: Contact.objects.filter(email__iexact="new.hs@example.com").first())
    stack.wait_until(lambda: synced(stack, str(contact.pk)))
    link = ProviderLink.objects.get(contact=contact, provider="hubspot")
    assert link.external_id == record["id"]
    sf_id = ProviderLink.objects.get(contact=contact, provider="salesforce").external_id
    assert (sf_contact(stack, sf_id)["FirstName"], sf_contact(stack, sf_id)["LastName"]) == ("Hedy", "Lamarr")
    quiet(stack)
    assert len(stack.hubspot_records()) == 1
    assert len(stack.salesforce_contacts()) == 1


def test_creation_in_salesforce_reaches_syncroot_and_hubspot(stack):
    record = stack.salesforce_ctl.edit(None, {"Email": "new.sf@example.com", "FirstName": "Alan", "LastName": "Turing"})

    contact = stack.wait_until(lambda: Contact.objects.filter(email__iexact="new.sf@example.com").first())
    body = stack.wait_until(lambda: synced(stack, str(contact.pk)))
    assert body["sync"]["salesforce"]["external_id"] == record["Id"]
    hubspot = hs_contact(stack, body["sync"]["hubspot"]["external_id"]).properties
    assert (hubspot["firstname"], hubspot["lastname"]) == ("Alan", "Turing")
    quiet(stack)
    assert len(stack.hubspot_records()) == 1


def test_deletion_in_hubspot_deletes_in_syncroot_and_salesforce(stack):
    body = linked_everywhere(stack, "gone.hs@example.com")
    sf_id = body["sync"]["salesforce"]["external_id"]

    stack.hubspot_ctl.edit(body["sync"]["hubspot"]["external_id"], delete=True)

    stack.wait_until(lambda: stack.api.get(f"/contacts/{body['id']}").status_code == 404)
    stack.wait_until(lambda: sf_contact(stack, sf_id)["IsDeleted"] is True)
    assert Contact.objects.get(pk=body["id"]).deleted_at is not None  # the tombstone stays


def test_deletion_in_salesforce_deletes_in_syncroot_and_hubspot(stack):
    body = linked_everywhere(stack, "gone.sf@example.com")
    hs_id = body["sync"]["hubspot"]["external_id"]

    stack.salesforce_ctl.edit(body["sync"]["salesforce"]["external_id"], delete=True)

    stack.wait_until(lambda: stack.api.get(f"/contacts/{body['id']}").status_code == 404)
    stack.wait_until(lambda: any(r["id"] == hs_id for r in stack.hubspot_records(archived=True)))
    assert hs_contact(stack, hs_id, archived=True).archived is True
    # The archive call returns before the forwarder commits the link's new status.
    stack.wait_until(
        lambda: (
            set(ProviderLink.objects.filter(contact_id=body["id"]).values_list("status", flat=True))
            == {LinkStatus.DELETED}
        )
    )


def test_delete_in_a_crm_can_be_ignored(stack, settings):
    settings.SYNC_DELETES = "ignore"
    body = linked_everywhere(stack, "kept@example.com")

    stack.hubspot_ctl.edit(body["sync"]["hubspot"]["external_id"], delete=True)

    stack.wait_until(lambda: ProviderLink.objects.get(contact_id=body["id"], provider="hubspot").external_id is None)
    assert stack.api.get(f"/contacts/{body['id']}").status_code == 200
    assert sf_contact(stack, body["sync"]["salesforce"]["external_id"])["IsDeleted"] is False
