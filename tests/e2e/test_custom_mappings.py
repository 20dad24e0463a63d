"""Custom fields mapped onto both CRMs' own custom fields, through a real worker and both sandboxes:
created in the CRMs with their own APIs (HubSpot properties API, Salesforce Tooling API), discovered,
mapped, backfilled, edited on either side; values that do not fit are refused and shown."""

import math

import pytest
from hubspot.crm.properties import OptionInput, PropertyCreate

from providers.models import FieldMapping
from tests.e2e.test_inbound import api_contact, quiet
from tests.e2e.test_no_silent_change import metric
from tests.e2e.test_outbound import synced

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

TIERS = {"gold": "Gold", "silver": "Silver", "bronze": "Bronze"}


@pytest.fixture
def sandbox_options():
    # The HubSpot app subscribes to the custom property's changes, as its admin would set it up.
    return {"hubspot": {"webhook_properties": ["email", "firstname", "lastname", "phone", "company", "jobtitle",
                                               "tier", "nickname"]}, "salesforce": {}}  # fmt: skip


def crm_fields(stack) -> None:
    """Tier (a picklist) and Nickname (text, 10 characters in Salesforce) in both CRMs."""
    options = [OptionInput(label=label, value=label, display_order=i, hidden=False) for i, label in
               enumerate(TIERS.values())]  # fmt: skip
    properties = stack.hubspot_sdk().crm.properties.core_api
    properties.create("contacts", PropertyCreate(name="tier", label="Tier", type="enumeration", field_type="select",
                                                 group_name="contactinformation", options=options))  # fmt: skip
    properties.create("contacts", PropertyCreate(name="nickname", label="Nickname", type="string", field_type="text",
                                                 group_name="contactinformation"))  # fmt: skip
    sf = stack.salesforce_sdk()
    values = [{"fullName": label, "default": False, "label": label} for label in TIERS.values()]
    tier = {"label": "Tier", "type": "Picklist",
            "valueSet": {"restricted": True, "valueSetDefinition": {"sorted": False, "value": values}}}  # fmt: skip
    sf.toolingexecute("sobjects/CustomField", method="POST", data={"FullName": "Contact.Tier__c", "Metadata": tier})
    nickname = {"label": "Nickname", "type": "Text", "length": 10}
    sf.toolingexecute(
        "sobjects/CustomField", method="POST", data={"FullName": "Contact.Nickname__c", "Metadata": nickname}
    )


def syncroot_fields(stack) -> None:
    tier = {"key": "tier", "label": "Tier", "type": "enum", "options": list(TIERS)}
    assert stack.api.post("/fields", tier, format="json").status_code == 201
    nickname = {"key": "nickname", "label": "Nickname", "type": "string", "max_length": 40}
    assert stack.api.post("/fields", nickname, format="json").status_code == 201


def map_field(stack, provider: str, field: str, remote_field: str, rule: str = "two_way", **more) -> dict:
    body = {"provider": provider, "field": field, "remote_field": remote_field, "rule": rule, **more}
    response = stack.api.post("/mappings", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def backfilled(stack, mapping_id: int) -> dict | None:
    body = stack.api.get(f"/mappings/{mapping_id}").json()
    return body if body["backfill"]["status"] == "done" else None


def map_tier_everywhere(stack) -> tuple[dict, dict]:
    hubspot = map_field(stack, "hubspot", "tier", "tier", value_map=TIERS)
    salesforce = map_field(stack, "salesforce", "tier", "Tier__c", value_map=TIERS)
    stack.wait_until(lambda: backfilled(stack, hubspot["id"]) and backfilled(stack, salesforce["id"]), timeout=30)
    return hubspot, salesforce


def hs_props(stack, hs_id: str, *names: str) -> dict:
    found = stack.hubspot_sdk().crm.contacts.basic_api.get_by_id(hs_id, properties=list(names))
    return {name: found.properties.get(name) for name in names}


def sf_record(stack, sf_id: str) -> dict:
    return stack.salesforce_sdk().Contact.get(sf_id)


def created(stack, email: str, **custom) -> tuple[dict, str, str]:
    response = stack.api.post("/contacts", {"email": email, "last_name": "Ng", "custom": custom}, format="json")
    assert response.status_code == 201, response.content
    body = stack.wait_until(lambda: synced(stack, response.json()["id"]), timeout=30)
    return body, body["sync"]["hubspot"]["external_id"], body["sync"]["salesforce"]["external_id"]


def test_a_mapped_picklist_travels_translated_both_ways_from_either_side(stack):
    crm_fields(stack)
    syncroot_fields(stack)
    map_tier_everywhere(stack)

    body, hs_id, sf_id = created(stack, "tiers@example.com", tier="gold")
    assert hs_props(stack, hs_id, "tier") == {"tier": "Gold"}
    assert sf_record(stack, sf_id)["Tier__c"] == "Gold"

    stack.hubspot_ctl.edit(hs_id, {"tier": "Silver"})  # a person, in HubSpot's UI
    stack.wait_until(lambda: sf_record(stack, sf_id)["Tier__c"] == "Silver", timeout=30)
    assert api_contact(stack, body["id"])["custom"] == {"tier": "silver"}

    stack.salesforce_ctl.edit(sf_id, {"Tier__c": "Bronze"})
    stack.wait_until(lambda: hs_props(stack, hs_id, "tier") == {"tier": "Bronze"}, timeout=30)
    quiet(stack)
    contact = api_contact(stack, body["id"])
    assert contact["custom"] == {"tier": "bronze"}
    assert sf_record(stack, sf_id)["Tier__c"] == "Bronze"
    assert {name: link["status"] for name, link in contact["sync"].items()} == {"hubspot": "synced",
                                                                               "salesforce": "synced"}  # fmt: skip


def test_a_new_mapping_backfills_that_field_alone_within_the_call_floor(stack):
    crm_fields(stack)
    syncroot_fields(stack)
    count = 12
    contacts = [
        stack.api.post(
            "/contacts", {"email": f"b{i}@example.com", "custom": {"tier": "gold"} if i % 2 else {}}, format="json"
        ).json()  # fmt: skip
        for i in range(count)
    ]
    for contact in contacts:
        stack.wait_until(lambda contact=contact: synced(stack, contact["id"]), timeout=60)
    quiet(stack)
    # A value typed in HubSpot before the mapping, where SyncRoot has none: SyncRoot takes it.
    blank = next(c for c in contacts if not c["custom"])
    blank_hs = api_contact(stack, blank["id"])["sync"]["hubspot"]["external_id"]
    stack.hubspot_ctl.edit(blank_hs, {"tier": "Bronze"})
    quiet(stack)
    before = stack.hubspot_ctl.stats()["requests_total"]

    mapping = map_field(stack, "hubspot", "tier", "tier", value_map=TIERS)
    done = stack.wait_until(lambda: backfilled(stack, mapping["id"]), timeout=60)
    quiet(stack)

    assert done["backfill"] == {"status": "done", "done": count, "total": count, "error": ""}
    calls = stack.hubspot_ctl.stats()["requests_total"] - before
    assert calls <= 2 * (math.ceil(count / 100) + 3)  # a read and a write per 100, not one per contact
    for contact in contacts:
        hs_id = api_contact(stack, contact["id"])["sync"]["hubspot"]["external_id"]
        wanted = "Bronze" if contact is blank else ("Gold" if contact["custom"] else None)
        assert hs_props(stack, hs_id, "tier")["tier"] in ((wanted,) if wanted else (None, ""))
    assert api_contact(stack, blank["id"])["custom"] == {"tier": "bronze"}
    # and on to Salesforce? Not mapped there: nothing is written to it for this field.
    assert not FieldMapping.objects.filter(provider="salesforce", field="tier").exists()


def test_a_value_that_does_not_fit_a_crm_field_is_refused_there_shown_and_cleared_when_it_fits(stack):
    crm_fields(stack)
    syncroot_fields(stack)
    map_field(stack, "hubspot", "nickname", "nickname")
    map_field(stack, "salesforce", "nickname", "Nickname__c")
    body, hs_id, sf_id = created(stack, "nick@example.com", nickname="Ada")

    change = {"first_name": "Augusta", "custom": {"nickname": "The Enchantress"}}
    edited = stack.api.patch(f"/contacts/{body['id']}", change, format="json")
    assert edited.status_code == 200
    stack.wait_until(lambda: hs_props(stack, hs_id, "nickname", "firstname") == {"nickname": "The Enchantress",
                                                                                 "firstname": "Augusta"})  # fmt: skip
    stack.wait_until(lambda: sf_record(stack, sf_id)["FirstName"] == "Augusta", timeout=30)
    quiet(stack)

    assert sf_record(stack, sf_id)["Nickname__c"] == "Ada"  # never cut to "The Enchan"
    contact = api_contact(stack, body["id"])
    assert contact["sync"]["hubspot"]["status"] == "synced"
    salesforce = contact["sync"]["salesforce"]
    assert salesforce["status"] == "issue"
    assert [(i["field"], i["remote_field"], i["code"]) for i in salesforce["issues"]] == [
        ("nickname", "Nickname__c", "too_long")
    ]
    assert "10 characters" in salesforce["issues"][0]["message"]
    assert metric(stack, "syncroot_sync_issues", provider="salesforce", field="nickname", code="too_long") == 1

    fits = stack.api.patch(f"/contacts/{body['id']}", {"custom": {"nickname": "Enchantress"[:10]}}, format="json")
    stack.wait_until(lambda: sf_record(stack, sf_id)["Nickname__c"] == "Enchantres", timeout=30)
    stack.wait_until(lambda: synced(stack, body["id"], fits.json()["version"]), timeout=30)
    assert api_contact(stack, body["id"])["sync"]["salesforce"]["issues"] == []


def test_a_crm_value_syncroot_cannot_hold_is_refused_and_shown(stack):
    crm_fields(stack)
    syncroot_fields(stack)
    map_tier_everywhere(stack)
    body, hs_id, sf_id = created(stack, "maps@example.com", tier="gold")
    properties = stack.hubspot_sdk().crm.properties.core_api
    # HubSpot's admin adds an option SyncRoot's field does not have, and a person picks it.
    options = [OptionInput(label=label, value=label, display_order=i, hidden=False)
               for i, label in enumerate([*TIERS.values(), "Platinum"])]  # fmt: skip
    from hubspot.crm.properties import PropertyUpdate

    properties.update("contacts", "tier", PropertyUpdate(options=options))
    stack.hubspot_ctl.edit(hs_id, {"tier": "Platinum"})

    def refused():
        link = api_contact(stack, body["id"])["sync"]["hubspot"]
        return link if link["status"] == "issue" else None

    link = stack.wait_until(refused, timeout=30)
    assert [(i["field"], i["code"]) for i in link["issues"]] == [("tier", "not_an_option")]
    quiet(stack)
    assert api_contact(stack, body["id"])["custom"] == {"tier": "gold"}
    assert sf_record(stack, sf_id)["Tier__c"] == "Gold"
    assert hs_props(stack, hs_id, "tier") == {"tier": "Platinum"}  # SyncRoot's value is not written over it

    stack.hubspot_ctl.edit(hs_id, {"tier": "Silver"})  # a person, in HubSpot's UI
    stack.wait_until(lambda: sf_record(stack, sf_id)["Tier__c"] == "Silver", timeout=30)
    stack.wait_until(lambda: api_contact(stack, body["id"])["sync"]["hubspot"]["issues"] == [], timeout=30)


def test_mappings_are_checked_against_the_crm_schema_and_previewed_without_changes(stack):
    crm_fields(stack)
    syncroot_fields(stack)
    body, hs_id, _sf_id = created(stack, "preview@example.com", tier="silver")

    def refused(body: dict) -> dict:
        response = stack.api.post("/mappings", body, format="json")
        assert response.status_code == 400, response.content
        return response.json()["details"]

    assert "remote_field" in refused({"provider": "hubspot", "field": "tier", "remote_field": "no_such_property"})
    assert "remote_field" in refused({"provider": "hubspot", "field": "tier", "remote_field": "createdate"})
    assert "rule" in refused({"provider": "hubspot", "field": "nickname", "remote_field": "hs_email_domain"})
    assert "value_map" in refused({"provider": "hubspot", "field": "tier", "remote_field": "tier",
                                   "value_map": {"gold": "Diamond"}})  # fmt: skip
    writes_before = stack.hubspot_ctl.stats()["requests_total"]

    preview = stack.api.post("/mappings/preview", {"provider": "hubspot", "field": "tier", "remote_field": "tier",
                                                   "value_map": TIERS}, format="json")  # fmt: skip

    assert preview.status_code == 200, preview.content
    assert preview.json()["changes"] == {"syncroot": 0, "crm": 1, "refused": 0, "unchanged": 0}
    assert preview.json()["samples"] == [{"contact_id": body["id"], "external_id": hs_id, "side": "crm",
                                          "before": None, "after": "silver"}]  # fmt: skip
    assert not FieldMapping.objects.filter(field="tier").exists()
    assert hs_props(stack, hs_id, "tier")["tier"] in (None, "")
    assert stack.hubspot_ctl.stats()["requests_total"] - writes_before <= 3  # the batch read and the schema

    mapping = map_field(stack, "hubspot", "tier", "tier", value_map=TIERS)
    duplicate = stack.api.post(
        "/mappings", {"provider": "hubspot", "field": "tier", "remote_field": "tier"}, format="json"
    )
    assert duplicate.status_code == 409
    in_use = stack.api.delete("/fields/tier")
    assert in_use.status_code == 409
    stack.wait_until(lambda: backfilled(stack, mapping["id"]), timeout=30)
    assert stack.api.delete(f"/mappings/{mapping['id']}").status_code == 204
