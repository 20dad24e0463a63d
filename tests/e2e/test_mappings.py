"""Field mapping rules through a real worker and both sandboxes: which way a field travels."""

import pytest

from tests.e2e.test_inbound import api_contact, linked_everywhere, quiet, writes
from tests.e2e.test_outbound import hs_contact, sf_contact, synced
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def rule_set(stack, provider: str, field: str, rule: str) -> None:
    mapping = next(m for m in stack.api.get(f"/mappings?provider={provider}").json() if m["field"] == field)
    response = stack.api.patch(f"/mappings/{mapping['id']}", {"rule": rule}, format="json")
    assert response.status_code == 200, response.content
    # The new rule's backfill of the field (under crm_wins it takes the CRM's values) is done.
    backfill = lambda: stack.api.get(f"/mappings/{mapping['id']}").json()["backfill"]["status"]  # noqa: E731
    stack.wait_until(lambda: backfill() in ("done", "none"))


def with_job_title(stack, email: str, title: str) -> tuple[dict, str, str]:
    """A contact both CRMs hold, with `title` as its job title everywhere."""
    body = linked_everywhere(stack, email)
    response = stack.api.patch(f"/contacts/{body['id']}", {"job_title": title}, format="json")
    assert response.status_code == 200
    body = stack.wait_until(lambda: synced(stack, body["id"], response.json()["version"]))
    hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
    assert hs_contact(stack, hs_id).properties["jobtitle"] == title
    assert sf_contact(stack, sf_id)["Title"] == title
    quiet(stack)
    return body, hs_id, sf_id


def handled(provider: str) -> int:
    return WebhookEvent.objects.filter(provider=provider).exclude(status="received").count()


def test_crm_wins_syncroot_never_writes_that_crm_and_its_edits_reach_everyone(stack):
    body, hs_id, sf_id = with_job_title(stack, "wins@example.com", "Analyst")
    rule_set(stack, "hubspot", "job_title", "crm_wins")

    edited = stack.api.patch(f"/contacts/{body['id']}", {"job_title": "Lead"}, format="json")

    stack.wait_until(lambda: synced(stack, body["id"], edited.json()["version"]))
    assert sf_contact(stack, sf_id)["Title"] == "Lead"
    quiet(stack)
    assert hs_contact(stack, hs_id).properties["jobtitle"] == "Analyst"  # SyncRoot never writes it there

    stack.hubspot_ctl.edit(hs_id, {"jobtitle": "Director"})

    stack.wait_until(lambda: sf_contact(stack, sf_id)["Title"] == "Director")
    assert api_contact(stack, body["id"])["job_title"] == "Director"
    quiet(stack)
    assert hs_contact(stack, hs_id).properties["jobtitle"] == "Director"
    assert api_contact(stack, body["id"])["sync"]["hubspot"]["status"] == "synced"


def test_syncroot_wins_a_crm_edit_is_written_back_and_goes_nowhere_else(stack):
    body, hs_id, sf_id = with_job_title(stack, "keeps@example.com", "Analyst")
    rule_set(stack, "salesforce", "job_title", "syncroot_wins")
    events, hs_writes = handled("salesforce"), writes(stack.hubspot_ctl.stats())

    stack.salesforce_ctl.edit(sf_id, {"Title": "Boss", "FirstName": "Augusta"})

    stack.wait_until(lambda: handled("salesforce") > events)
    stack.wait_until(lambda: sf_contact(stack, sf_id)["Title"] == "Analyst")  # written back
    stack.wait_until(lambda: hs_contact(stack, hs_id).properties["firstname"] == "Augusta")  # other fields travel
    quiet(stack)
    contact = api_contact(stack, body["id"])
    assert (contact["job_title"], contact["first_name"]) == ("Analyst", "Augusta")
    assert hs_contact(stack, hs_id).properties["jobtitle"] == "Analyst"
    assert sf_contact(stack, sf_id)["Title"] == "Analyst"
    assert writes(stack.hubspot_ctl.stats()) == hs_writes + 1  # the first name only
    assert contact["sync"]["salesforce"]["status"] == "synced"


def test_off_nothing_travels_either_way(stack):
    body, hs_id, sf_id = with_job_title(stack, "off@example.com", "Analyst")
    rule_set(stack, "hubspot", "job_title", "off")
    hs_writes = writes(stack.hubspot_ctl.stats())

    edited = stack.api.patch(f"/contacts/{body['id']}", {"job_title": "Lead"}, format="json")
    stack.wait_until(lambda: synced(stack, body["id"], edited.json()["version"]))
    events = handled("hubspot")
    stack.hubspot_ctl.edit(hs_id, {"jobtitle": "Chief"})
    stack.wait_until(lambda: handled("hubspot") > events)
    quiet(stack)

    assert api_contact(stack, body["id"])["job_title"] == "Lead"
    assert sf_contact(stack, sf_id)["Title"] == "Lead"
    assert hs_contact(stack, hs_id).properties["jobtitle"] == "Chief"
    assert writes(stack.hubspot_ctl.stats()) == hs_writes  # SyncRoot wrote nothing to HubSpot
    assert api_contact(stack, body["id"])["sync"]["hubspot"]["status"] == "synced"
