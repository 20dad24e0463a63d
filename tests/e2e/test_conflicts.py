"""The conflict queue through the real stack: each kind of case raised by what people do in the CRMs,
listed by GET /conflicts, and resolved with each of its actions; afterwards the API and both CRMs
hold the same live contacts, with no duplicates."""

import pytest

from tests.e2e.test_inbound import quiet
from tests.e2e.test_lifecycle import converged, ids, linked, live_emails, merged_into, sf_row
from webhooks.models import WebhookEvent

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


@pytest.mark.parametrize("action", ["keep_syncroot", "keep_crm", "ignore"])
def test_bouncing_field_is_paused_after_the_limit_then_resolved(stack, settings, action):
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

    # A person switches the workflows off and resolves each case: SyncRoot's value goes to the CRM
    # (keep_syncroot), the CRM's last value is taken everywhere (keep_crm), or syncing resumes (ignore).
    stack.hubspot_ctl.config(workflow_rules=[])
    stack.salesforce_ctl.config(workflow_rules=[])
    for conflict in paused:
        assert resolve(stack, conflict["id"], action).status_code == 200

    def titles():
        body = stack.api.get(f"/contacts/{created.json()['id']}").json()
        hs_id, sf_id = body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]
        hs = stack.hubspot_sdk().crm.contacts.basic_api.get_by_id(hs_id, properties=["jobtitle"])
        found = {body["job_title"], hs.properties["jobtitle"], sf_row(stack, sf_id)["Title"]}
        return found if len(found) == 1 and {e["status"] for e in body["sync"].values()} == {"synced"} else None

    [title] = stack.wait_until(titles, timeout=30)
    if action == "keep_crm":
        assert title in ("HubSpot rule", "Salesforce rule")
    assert open_conflicts(stack) == []
    assert converged(stack, ["loop@example.com"])


def settled(stack) -> None:
    """Every webhook the CRMs hold delivered and processed."""
    stack.hubspot_ctl.flush_webhooks()
    stack.salesforce_ctl.flush_webhooks()
    stack.wait_until(lambda: not WebhookEvent.objects.filter(status="received").exists())
    quiet(stack)


def test_merge_candidate_ignore_leaves_the_records_as_the_person_has_them_and_stays_closed(stack):
    linked(stack, "dup@example.com")
    duplicate = stack.salesforce_ctl.edit(fields={"Email": "dup@example.com", "LastName": "Twice"})
    conflict = stack.wait_until(lambda: one_open(stack, kind="merge_candidate"))

    assert resolve(stack, conflict["id"], "ignore").status_code == 200
    stack.salesforce_ctl.edit(duplicate["Id"], {"Phone": "+1 3"})  # the duplicate changes again
    settled(stack)

    assert open_conflicts(stack) == []
    emails = live_emails(stack)
    assert emails["api"] == emails["hubspot"] == ["dup@example.com"]  # SyncRoot took in no duplicate
    assert emails["salesforce"] == ["dup@example.com", "dup@example.com"]  # nor merged or deleted it


@pytest.mark.parametrize("action", ["keep_syncroot", "ignore"])
def test_a_value_that_does_not_fit_is_queued_and_resolved(stack, action):
    body = linked(stack, "long@example.com", job_title="Analyst")
    hs_id, sf_id = ids(body)
    stack.hubspot_ctl.edit(hs_id, {"jobtitle": "x" * 300})  # HubSpot takes it; SyncRoot holds 128
    conflict = stack.wait_until(lambda: one_open(stack, kind="value_not_fit"))
    assert (conflict["provider"], conflict["contact_id"], conflict["field"], conflict["code"]) == (
        "hubspot", body["id"], "job_title", "too_long"
    )  # fmt: skip
    assert conflict["allowed_actions"] == ["keep_syncroot", "ignore"]

    assert resolve(stack, conflict["id"], action).status_code == 200

    hubspot = stack.hubspot_sdk().crm.contacts.basic_api
    expected = "Analyst" if action == "keep_syncroot" else "x" * 300  # ignore: as the person left it
    stack.wait_until(lambda: hubspot.get_by_id(hs_id, properties=["jobtitle"]).properties["jobtitle"] == expected)
    settled(stack)
    assert stack.api.get(f"/contacts/{body['id']}").json()["job_title"] == "Analyst"
    assert sf_row(stack, sf_id)["Title"] == "Analyst"
    assert open_conflicts(stack) == []
    assert converged(stack, ["long@example.com"])


@pytest.mark.parametrize("action", ["merge", "ignore"])
def test_a_record_restored_with_an_email_another_contact_holds_now_is_a_merge_candidate(stack, action):
    old = linked(stack, "back@example.com", job_title="Old")
    old_sf = ids(old)[1]
    assert stack.api.delete(f"/contacts/{old['id']}").status_code == 204
    stack.wait_until(lambda: converged(stack, []))
    new = linked(stack, "back@example.com")
    stack.salesforce_ctl.edit(old_sf, undelete=True)  # a person brings the old record back

    conflict = stack.wait_until(lambda: one_open(stack, kind="merge_candidate"))
    assert (conflict["external_id"], conflict["code"]) == (old_sf, "restore_refused")
    assert conflict["allowed_actions"] == ["merge", "ignore"]

    assert resolve(stack, conflict["id"], action).status_code == 200

    settled(stack)
    assert stack.api.get(f"/contacts/{old['id']}").status_code == 404  # the old contact stays deleted
    assert open_conflicts(stack) == []
    if action == "merge":
        assert sf_row(stack, old_sf)["MasterRecordId"] == ids(new)[1]
        assert converged(stack, ["back@example.com"])
    else:  # the restored record stays, as the person has it
        assert live_emails(stack)["salesforce"] == ["back@example.com", "back@example.com"]
        assert live_emails(stack)["api"] == live_emails(stack)["hubspot"] == ["back@example.com"]
