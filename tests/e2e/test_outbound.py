"""API writes reach both CRMs, read back with the CRMs' official SDKs."""

import pytest

from providers.models import DeadLetter, LinkStatus, ProviderLink, SyncAttempt

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

FIELDS = "Id, Email, FirstName, LastName, Phone, Title, Account.Name, IsDeleted"


def synced(stack, contact_id: str, version: int | None = None):
    """The contact once every CRM holds `version` (default: its current version)."""
    response = stack.api.get(f"/contacts/{contact_id}")
    if response.status_code != 200:
        return None
    body = response.json()
    wanted = version or body["version"]
    entries = body["sync"].values()
    if len(body["sync"]) == 2 and all(e["status"] == "synced" and e["synced_version"] == wanted for e in entries):
        return body
    return None


def sf_contact(stack, sf_id: str) -> dict:
    return stack.salesforce_sdk().query_all(f"SELECT {FIELDS} FROM Contact WHERE Id = '{sf_id}'", include_deleted=True)[
        "records"
    ][0]


def hs_contact(stack, hs_id: str, archived: bool = False):
    return stack.hubspot_sdk().crm.contacts.basic_api.get_by_id(
        hs_id, properties=["email", "firstname", "lastname", "phone", "company", "jobtitle"], archived=archived
    )


def test_create_update_delete_reach_both_crms(stack):
    values = {
        "email": "Zoe.Angstrom@Example.com", "first_name": "Zoë", "last_name": "Ångström-Łukasiewicz",
        "phone": "+46 8 123 45 67", "company": "Ünïcode GmbH & Co. “KG”", "job_title": "Directrice générale",
    }  # fmt: skip
    created = stack.api.post("/contacts", values, format="json")
    assert created.status_code == 201, created.content
    contact_id = created.json()["id"]

    body = stack.wait_until(lambda: synced(stack, contact_id))
    hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
    hs = hs_contact(stack, hs_id)
    assert hs.properties["email"] == values["email"].lower()  # HubSpot stores emails lower-cased
    assert (hs.properties["firstname"], hs.properties["lastname"]) == (values["first_name"], values["last_name"])
    assert (hs.properties["phone"], hs.properties["company"], hs.properties["jobtitle"]) == (
        values["phone"], values["company"], values["job_title"],
    )  # fmt: skip
    sf = sf_contact(stack, sf_id)
    assert (sf["Email"], sf["FirstName"], sf["LastName"]) == (
        values["email"],
        values["first_name"],
        values["last_name"],
    )
    assert (sf["Phone"], sf["Title"], sf["Account"]["Name"]) == (
        values["phone"],
        values["job_title"],
        values["company"],
    )

    patched = stack.api.patch(f"/contacts/{contact_id}", {"job_title": "CTO"}, format="json", HTTP_IF_MATCH='"1"')
    assert patched.status_code == 200
    stack.wait_until(lambda: synced(stack, contact_id, version=2))
    assert hs_contact(stack, hs_id).properties["jobtitle"] == "CTO"
    assert sf_contact(stack, sf_id)["Title"] == "CTO"

    assert stack.api.delete(f"/contacts/{contact_id}").status_code == 204
    stack.wait_until(
        lambda: (
            set(ProviderLink.objects.filter(contact_id=contact_id).values_list("status", flat=True))
            == {LinkStatus.DELETED}
        )
    )
    assert hs_contact(stack, hs_id, archived=True).archived is True
    assert sf_contact(stack, sf_id)["IsDeleted"] is True
    assert len(stack.hubspot_records()) == 0
    assert len(stack.salesforce_contacts()) == 0


def test_existing_crm_records_are_matched_by_email_not_duplicated(stack):
    stack.hubspot_ctl.config(webhooks_enabled=False)
    stack.salesforce_ctl.config(webhooks_enabled=False)
    hs_existing = stack.hubspot_ctl.edit(None, {"email": "grace@example.com", "firstname": "G"})["id"]
    sf_existing = stack.salesforce_ctl.edit(None, {"Email": "grace@example.com", "LastName": "H"})["Id"]

    created = stack.api.post(
        "/contacts", {"email": "Grace@Example.com", "first_name": "Grace", "last_name": "Hopper"}, format="json"
    )
    body = stack.wait_until(lambda: synced(stack, created.json()["id"]))

    assert body["sync"]["hubspot"]["external_id"] == hs_existing
    assert body["sync"]["salesforce"]["external_id"] == sf_existing
    assert len(stack.hubspot_records()) == 1
    assert len(stack.salesforce_contacts()) == 1
    assert hs_contact(stack, hs_existing).properties["lastname"] == "Hopper"
    assert sf_contact(stack, sf_existing)["LastName"] == "Hopper"


def test_missing_last_name_uses_the_salesforce_placeholder(stack):
    created = stack.api.post("/contacts", {"email": "mononym@example.com", "first_name": "Prince"}, format="json")
    body = stack.wait_until(lambda: synced(stack, created.json()["id"]))

    assert sf_contact(stack, body["sync"]["salesforce"]["external_id"])["LastName"] == "[not provided]"
    assert not hs_contact(stack, body["sync"]["hubspot"]["external_id"]).properties.get("lastname")
    assert stack.api.get(f"/contacts/{body['id']}").json()["last_name"] == ""


def test_crm_validation_error_is_parked_then_fixed_and_retried_from_admin(stack, admin_client):
    # Django accepts a dotless "localhost" domain; both CRMs refuse it.
    created = stack.api.post("/contacts", {"email": "ops@localhost", "last_name": "Ops"}, format="json")
    contact_id = created.json()["id"]
    letters = stack.wait_until(
        lambda: len(found := list(DeadLetter.objects.filter(contact_id=contact_id))) == 2 and found, timeout=20
    )
    assert {letter.provider for letter in letters} == {"hubspot", "salesforce"}
    assert {letter.error_code for letter in letters} <= {"INVALID_EMAIL", "INVALID_EMAIL_ADDRESS", "VALIDATION_ERROR"}
    assert all(letter.attempts == 1 for letter in letters)  # permanent: parked at once, not retried
    body = stack.api.get(f"/contacts/{contact_id}").json()
    assert {e["status"] for e in body["sync"].values()} == {"parked"}
    assert all(e["last_error"] for e in body["sync"].values())

    # The operator fixes the contact, then retries the dead letters from the admin.
    from contacts.models import Contact

    Contact.objects.filter(pk=contact_id).update(email="ops@example.com")
    response = admin_client.post(
        "/admin/providers/deadletter/",
        {"action": "retry_now", "_selected_action": [letter.pk for letter in letters]},
    )
    assert response.status_code == 302
    stack.wait_until(lambda: synced(stack, contact_id, version=1))
    assert {r["properties"]["email"] for r in stack.hubspot_records()} == {"ops@example.com"}
    assert set(DeadLetter.objects.filter(contact_id=contact_id).values_list("status", flat=True)) == {"retried"}
    assert SyncAttempt.objects.filter(contact_id=contact_id, outcome="permanent").count() == 2


def test_a_batch_of_contacts_reaches_both_crms_in_batches(stack):
    stack.hubspot_ctl.config(webhooks_enabled=False)
    stack.salesforce_ctl.config(webhooks_enabled=False)
    hs_existing = stack.hubspot_ctl.edit(None, {"email": "p7@example.com", "firstname": "Old"})["id"]
    before = {"hubspot": stack.hubspot_ctl.stats()["requests_total"], "salesforce": _sf_requests(stack)}
    people = [{"email": f"p{i}@example.com", "first_name": f"Ünï{i}", "last_name": f"Batch{i}"} for i in range(250)]

    created = stack.api.post("/contacts/batch", {"contacts": people}, format="json")

    assert created.status_code == 201, created.content[:500]
    ids = [c["id"] for c in created.json()["contacts"]]
    stack.wait_until(
        lambda: ProviderLink.objects.filter(contact_id__in=ids, status=LinkStatus.SYNCED).count() == 500, timeout=60
    )
    hubspot = {r["properties"]["email"]: r for r in stack.hubspot_records()}
    salesforce = {r["Email"]: r for r in stack.salesforce_contacts()}
    assert len(hubspot) == len(stack.hubspot_records()) == 250  # the existing record was matched, not duplicated
    assert len(salesforce) == len(stack.salesforce_contacts()) == 250
    assert hubspot["p7@example.com"]["id"] == hs_existing
    for person in people:
        assert hubspot[person["email"]]["properties"]["firstname"] == person["first_name"]
        assert salesforce[person["email"]]["LastName"] == person["last_name"]
    # Batch endpoints, not one call per contact: 250 contacts in a few HubSpot batches (100 each)
    # and Salesforce collections (200 each) plus the email lookups before creating.
    assert stack.hubspot_ctl.stats()["requests_total"] - before["hubspot"] <= 6
    assert _sf_requests(stack) - before["salesforce"] <= 10


def _sf_requests(stack) -> int:
    return stack.salesforce_ctl.stats()["requests_total"]
