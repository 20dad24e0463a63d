"""GET/PATCH/DELETE /mappings: the built-in fields' mappings, per connected CRM, and their rules."""

import pytest

from crm import registry
from providers.mappings import mapping_rules
from providers.models import FieldMapping

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def connected(settings):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "x", "instance_url": "http://127.0.0.1:1"}
    registry.reset()


def mapping_of(api_client, provider: str, field: str) -> dict:
    listed = api_client.get(f"/mappings?provider={provider}").json()
    return next(m for m in listed if m["field"] == field)


def test_each_connected_crm_has_its_six_builtin_mappings_as_two_way(api_client):
    FieldMapping.objects.all().delete()  # as in a database the migration did not fill: created on demand

    response = api_client.get("/mappings")

    assert response.status_code == 200
    found = {(m["provider"], m["field"]): (m["remote_field"], m["rule"], m["builtin"]) for m in response.json()}
    assert found[("hubspot", "job_title")] == ("jobtitle", "two_way", True)
    assert found[("salesforce", "company")] == ("Account.Name", "two_way", True)
    assert len(found) == 12
    only = api_client.get("/mappings?provider=salesforce").json()
    assert {m["field"]: m["remote_field"] for m in only} == {
        "email": "Email", "first_name": "FirstName", "last_name": "LastName",
        "phone": "Phone", "company": "Account.Name", "job_title": "Title",
    }  # fmt: skip


def test_a_rule_changed_through_the_api_is_what_the_engine_reads(api_client):
    mapping = mapping_of(api_client, "hubspot", "job_title")

    response = api_client.patch(f"/mappings/{mapping['id']}", {"rule": "crm_wins"}, format="json")

    assert response.status_code == 200, response.content
    # A new rule backfills the field in the direction it gives (providers/field_backfill.py).
    backfill = {"status": "pending", "done": 0, "total": 0, "error": ""}
    assert response.json() == {**mapping, "rule": "crm_wins", "backfill": backfill}
    assert api_client.get(f"/mappings/{mapping['id']}").json()["rule"] == "crm_wins"
    assert mapping_rules(provider="hubspot")["job_title"] == "crm_wins"
    assert mapping_rules(provider="salesforce")["job_title"] == "two_way"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"rule": "sometimes"}, "rule"), ({"rule": "off", "remote_field": "title"}, "remote_field"), ({}, "rule"),
     ({"rule": "off", "colour": "red"}, "colour")],
)  # fmt: skip
def test_a_patch_changes_only_a_known_rule(api_client, body, field):
    mapping = mapping_of(api_client, "hubspot", "phone")

    response = api_client.patch(f"/mappings/{mapping['id']}", body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["details"]
    assert FieldMapping.objects.get(pk=mapping["id"]).rule == "two_way"


def test_the_email_mapping_stays_two_way_and_no_builtin_mapping_is_deleted(api_client):
    email = mapping_of(api_client, "salesforce", "email")
    phone = mapping_of(api_client, "salesforce", "phone")

    refused = api_client.patch(f"/mappings/{email['id']}", {"rule": "off"}, format="json")
    deleted = api_client.delete(f"/mappings/{phone['id']}")

    assert refused.status_code == 400
    assert refused.json()["code"] == "identity_mapping"
    assert deleted.status_code == 409
    assert deleted.json()["code"] == "builtin_mapping"
    assert FieldMapping.objects.filter(pk__in=[email["id"], phone["id"]], rule="two_way").count() == 2


def test_unknown_mappings_and_missing_tokens_are_json_errors(api_client, client):
    for response in (api_client.get("/mappings/999999"), api_client.patch("/mappings/999999", {"rule": "off"},
                                                                          format="json")):  # fmt: skip
        assert response.status_code == 404
        assert response.json()["code"] == "mapping_not_found"
    anonymous = client.get("/mappings")
    assert anonymous.status_code == 401
    assert set(anonymous.json()) == {"code", "message", "details"}


def test_a_crm_connected_later_gets_its_builtin_mappings_on_demand(api_client, settings, monkeypatch):
    monkeypatch.setitem(registry.PROVIDER_CLASSES, "fakecrm", "tests.fake_crm.provider.FakeCrm")
    settings.FAKECRM = {"secret": "s"}
    registry.reset()

    found = api_client.get("/mappings?provider=fakecrm").json()

    assert {(m["field"], m["remote_field"], m["rule"]) for m in found} == {
        (f, f, "two_way") for f in ("email", "first_name", "last_name", "phone", "company", "job_title")
    }


def test_the_admin_edits_rules_in_the_list(admin_client, api_client):
    phone = mapping_of(api_client, "hubspot", "phone")
    page = admin_client.get("/admin/providers/fieldmapping/")
    assert page.status_code == 200
    mappings = list(FieldMapping.objects.order_by("provider", "id"))
    form = {"form-TOTAL_FORMS": len(mappings), "form-INITIAL_FORMS": len(mappings), "_save": "Save"}
    for i, mapping in enumerate(mappings):
        form[f"form-{i}-id"] = mapping.pk
        form[f"form-{i}-rule"] = "off" if mapping.pk == phone["id"] else mapping.rule

    response = admin_client.post("/admin/providers/fieldmapping/", form)

    assert response.status_code == 302, response.content[:2000]
    assert FieldMapping.objects.get(pk=phone["id"]).rule == "off"
    assert mapping_rules(provider="hubspot")["phone"] == "off"
