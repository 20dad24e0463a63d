"""The conflict queue through the real stack: each kind of case raised by what people do in the CRMs,
listed by GET /conflicts, and resolved with each of its actions; afterwards the API and both CRMs
hold the same live contacts, with no duplicates."""

import pytest

from tests.e2e.test_inbound import quiet
from tests.e2e.test_lifecycle import converged, ids, linked, merged_into, sf_row

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def open_conflicts(stack, **filters) -> list[dict]:
    response = stack.api.get("/conflicts", {"status": "open", **filters})
    assert response.status_code == 200, response.content
    return response.json()


def one_open(stack, **filters):
    found = open_conflicts(stack, **filters)
    return found[0] if len(found) == 1 else None


def resolve(stack, conflict_id: int, action: str):
    return stack.api.post(f"/conflicts/{conflict_id}/resolve", {"action": action}, format="json")


def clash(stack) -> tuple[dict, dict, dict]:
    """Contacts A and B; a person gives B's Salesforce record A's email: an email clash on B."""
    a = linked(stack, "ann@example.com")
    b = linked(stack, "bob@example.com", job_title="Builder")
    stack.salesforce_ctl.edit(ids(b)[1], {"Email": "ann@example.com"})
    conflict = stack.wait_until(lambda: one_open(stack, kind="email_clash"))
    assert conflict["provider"] == "salesforce"
    assert conflict["contact_id"] == b["id"]
    assert conflict["details"]["contact_id"] == a["id"]
    assert conflict["allowed_actions"] == ["keep_syncroot", "keep_crm", "merge", "ignore"]
    return a, b, conflict


def test_email_clash_keep_syncroot_writes_syncroots_email_back(stack):
    a, b, conflict = clash(stack)

    resolved = resolve(stack, conflict["id"], "keep_syncroot")

    assert resolved.status_code == 200, resolved.content
    assert (resolved.json()["status"], resolved.json()["action"]) == ("resolved", "keep_syncroot")
    stack.wait_until(lambda: sf_row(stack, ids(b)[1])["Email"] == "bob@example.com")
    stack.wait_until(lambda: converged(stack, ["ann@example.com", "bob@example.com"]))
    assert open_conflicts(stack) == []


@pytest.mark.parametrize("action", ["merge", "keep_crm"])
def test_email_clash_merge_and_keep_crm_merge_the_contacts_and_the_records(stack, action):
    a, b, conflict = clash(stack)

    assert resolve(stack, conflict["id"], action).status_code == 200

    assert merged_into(stack, b["id"]) == a["id"]
    stack.wait_until(lambda: converged(stack, ["ann@example.com"]))
    stack.wait_until(lambda: sf_row(stack, ids(b)[1])["MasterRecordId"] == ids(a)[1])
    survivor = stack.api.get(f"/contacts/{a['id']}").json()
    assert survivor["job_title"] == "Builder"  # B's value: nothing was lost in the merge
    assert open_conflicts(stack) == []


def test_email_clash_ignore_closes_it_and_it_stays_closed(stack):
    a, b, conflict = clash(stack)

    assert resolve(stack, conflict["id"], "ignore").json()["action"] == "ignore"
    again = resolve(stack, conflict["id"], "ignore")

    assert again.status_code == 409
    assert open_conflicts(stack, kind="email_clash") == []
    assert stack.api.get(f"/conflicts/{conflict['id']}").json()["status"] == "resolved"


def test_merge_candidate_merge_merges_the_duplicate_record_in_the_crm(stack):
    a = linked(stack, "dup@example.com")
    duplicate = stack.salesforce_ctl.edit(fields={"Email": "dup@example.com", "LastName": "Twice", "Phone": "+1 2"})
    conflict = stack.wait_until(lambda: one_open(stack, kind="merge_candidate"))
    assert conflict["external_id"] == duplicate["Id"]
    refused = resolve(stack, conflict["id"], "keep_syncroot")
    assert refused.status_code == 400
    assert refused.json()["details"]["allowed"] == ["merge", "ignore"]

    assert resolve(stack, conflict["id"], "merge").status_code == 200

    assert sf_row(stack, duplicate["Id"])["MasterRecordId"] == ids(a)[1]
    stack.wait_until(lambda: converged(stack, ["dup@example.com"]))
    assert open_conflicts(stack) == []


def test_no_email_record_is_listed_and_only_ignored(stack):
    record = stack.salesforce_ctl.edit(fields={"LastName": "Nomail"})
    conflict = stack.wait_until(lambda: one_open(stack, kind="no_email"))
    assert conflict["external_id"] == record["Id"]

    assert resolve(stack, conflict["id"], "merge").status_code == 400
    assert resolve(stack, conflict["id"], "ignore").status_code == 200

    assert open_conflicts(stack) == []
    metrics = stack.api.get("/metrics").content.decode()
    assert 'syncroot_conflicts_open{kind="no_email"} 0.0' in metrics


def test_unknown_conflict_and_bad_action_are_clear_json_errors(stack):
    assert stack.api.get("/conflicts/999999").status_code == 404
    assert stack.api.post("/conflicts/999999/resolve", {"action": "nope"}, format="json").status_code == 400
    assert stack.api.get("/conflicts", {"kind": "nope"}).status_code == 400


def test_bouncing_field_is_paused_after_the_limit_then_resolved(stack, settings):
    settings.BOUNCE_LIMIT_PER_HOUR = 2
    # Two workflows fighting: each CRM rewrites the job title a moment after every update.
    stack.hubspot_ctl.config(workflow_rules=[{"property": "jobtitle", "value": "HubSpot rule"}], workflow_delay_ms=400)
    stack.salesforce_ctl.config(workflow_rules=[{"field": "Title", "value": "Salesforce rule"}], workflow_delay_ms=400)
    created = stack.api.post("/contacts", {"email": "loop@example.com", "job_title": "Engineer"}, format="json")
    assert created.status_code == 201

    stack.wait_until(lambda: open_conflicts(stack, kind="bouncing_field"), timeout=60)
    quiet(stack)  # paused: the loop stopped, no more calls
    # One case per CRM whose flips passed the limit (both, when the two passed it together).
    paused = open_conflicts(stack, kind="bouncing_field")
    assert {c["field"] for c in paused} == {"job_title"}
    contact = stack.api.get(f"/contacts/{created.json()['id']}").json()
    assert {contact["sync"][c["provider"]]["status"] for c in paused} == {"conflict"}
    metrics = stack.api.get("/metrics").content.decode()
    assert f'syncroot_conflicts_open{{kind="bouncing_field"}} {len(paused)}.0' in metrics

    # A person switches the workflows off and keeps SyncRoot's value.
    stack.hubspot_ctl.config(workflow_rules=[])
    stack.salesforce_ctl.config(workflow_rules=[])
    for conflict in paused:
        assert resolve(stack, conflict["id"], "keep_syncroot").status_code == 200

    def titles():
        body = stack.api.get(f"/contacts/{created.json()['id']}").json()
        hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
        hs = stack.hubspot_sdk().crm.contacts.basic_api.get_by_id(hs_id, properties=["jobtitle"])
        found = {body["job_title"], hs.properties["jobtitle"], sf_row(stack, sf_id)["Title"]}
        return found if len(found) == 1 and {e["status"] for e in body["sync"].values()} == {"synced"} else None

    stack.wait_until(titles, timeout=30)
    assert open_conflicts(stack) == []
