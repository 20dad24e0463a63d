"""GET/POST /fields, PATCH/DELETE /fields/{key}: custom field definitions, built-ins listed and untouchable."""

import pytest

from contacts import fields as field_rules
from contacts.models import MAX_LENGTHS, SYNCED_FIELDS, Contact, CustomField
from contacts.tests.factories import ContactFactory, CustomFieldFactory
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


def test_the_list_gives_the_six_built_ins_then_the_custom_fields(api_client):
    CustomFieldFactory(key="tier", type="enum", options=["gold", "silver"])
    CustomFieldFactory(key="seats", type="number")

    response = api_client.get("/fields")

    assert response.status_code == 200
    listed = response.json()
    assert [f["key"] for f in listed] == [*SYNCED_FIELDS, "seats", "tier"]
    email = listed[0]
    assert email == {
        "key": "email", "label": "Email", "type": "string", "options": None, "max_length": MAX_LENGTHS["email"],
        "builtin": True, "created_at": None, "updated_at": None,
    }  # fmt: skip
    assert all(f["builtin"] for f in listed[:6])
    assert not any(f["builtin"] for f in listed[6:])
    assert listed[6]["type"] == "number"
    assert listed[6]["max_length"] is None
    assert listed[6]["options"] is None
    assert listed[7]["options"] == ["gold", "silver"]


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        ({"key": "region", "label": "Region", "type": "string"}, {"max_length": 255, "options": []}),
        ({"key": "note", "label": "Note", "type": "string", "max_length": 1000}, {"max_length": 1000}),
        ({"key": "seats", "label": "Seats", "type": "number"}, {"max_length": None}),
        ({"key": "vip", "label": "VIP", "type": "boolean"}, {}),
        ({"key": "renewal", "label": "Renewal", "type": "date"}, {}),
        ({"key": "last_call", "label": "Last call", "type": "datetime"}, {}),
        (
            {"key": "tier", "label": "Tier", "type": "enum", "options": ["gold", "silver"]},
            {"options": ["gold", "silver"]},
        ),
    ],
)
def test_a_field_of_each_type_is_created(api_client, body, stored):
    response = api_client.post("/fields", body, format="json")

    assert response.status_code == 201, response.content
    assert response["Location"] == f"/fields/{body['key']}"
    out = response.json()
    assert {k: out[k] for k in ("key", "label", "type")} == {k: body[k] for k in ("key", "label", "type")}
    assert out["builtin"] is False
    assert out["created_at"]
    field = CustomField.objects.get(key=body["key"])
    assert {name: getattr(field, name) for name in stored} == stored


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"key": "Tier", "label": "T", "type": "string"}, "key"),
        ({"key": "1tier", "label": "T", "type": "string"}, "key"),
        ({"key": "ti-er", "label": "T", "type": "string"}, "key"),
        ({"key": "custom", "label": "T", "type": "string"}, "key"),
        ({"key": "version", "label": "T", "type": "string"}, "key"),
        ({"key": "tier", "label": "T", "type": "colour"}, "type"),
        ({"key": "tier", "label": "", "type": "string"}, "label"),
        ({"key": "tier", "label": "T", "type": "enum"}, "options"),
        ({"key": "tier", "label": "T", "type": "enum", "options": []}, "options"),
        ({"key": "tier", "label": "T", "type": "enum", "options": ["a", "a"]}, "options"),
        ({"key": "tier", "label": "T", "type": "enum", "options": ["a", ""]}, "options"),
        ({"key": "tier", "label": "T", "type": "string", "options": ["a"]}, "options"),
        ({"key": "tier", "label": "T", "type": "number", "max_length": 10}, "max_length"),
        ({"key": "tier", "label": "T", "type": "string", "max_length": 0}, "max_length"),
        ({"key": "tier", "label": "T", "type": "string", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_definition_is_a_400_naming_what_is_wrong(api_client, body, named):
    body = assert_error(api_client.post("/fields", body, format="json"), 400, "validation_error")

    assert named in body["details"]
    assert not CustomField.objects.exists()


def test_a_built_in_key_is_refused(api_client):
    response = api_client.post("/fields", {"key": "email", "label": "E", "type": "string"}, format="json")

    assert assert_error(response, 409, "builtin_field")["details"] == {"key": "email"}


def test_a_key_already_taken_is_a_409(api_client):
    CustomFieldFactory(key="tier")

    response = api_client.post("/fields", {"key": "tier", "label": "Tier", "type": "string"}, format="json")

    assert assert_error(response, 409, "conflict")["details"] == {"key": "tier"}


@pytest.mark.parametrize("key", SYNCED_FIELDS)
def test_built_ins_cannot_be_changed_or_deleted(api_client, key):
    assert_error(api_client.patch(f"/fields/{key}", {"label": "X"}, format="json"), 409, "builtin_field")
    assert_error(api_client.delete(f"/fields/{key}"), 409, "builtin_field")


def test_an_unknown_field_is_a_404(api_client):
    assert_error(api_client.patch("/fields/nope", {"label": "X"}, format="json"), 404, "not_found")
    assert_error(api_client.delete("/fields/nope"), 404, "not_found")


def test_patch_changes_label_options_and_max_length(api_client):
    CustomFieldFactory(key="tier", type="enum", options=["gold"])
    CustomFieldFactory(key="note", type="string", max_length=10)

    tier = api_client.patch("/fields/tier", {"label": "Plan", "options": ["gold", "bronze"]}, format="json")
    note = api_client.patch("/fields/note", {"max_length": 20}, format="json")

    assert tier.status_code == 200
    assert tier.json()["label"] == "Plan"
    assert tier.json()["options"] == ["gold", "bronze"]
    assert note.json()["max_length"] == 20
    assert CustomField.objects.get(key="note").max_length == 20


def test_patch_cannot_change_the_type_or_key(api_client):
    CustomFieldFactory(key="seats", type="number")

    body = assert_error(
        api_client.patch("/fields/seats", {"type": "string", "key": "x"}, format="json"), 400, "validation_error"
    )

    assert set(body["details"]) == {"type", "key"}
    assert CustomField.objects.get(key="seats").type == "number"


def test_options_a_contact_holds_cannot_be_removed(api_client):
    CustomFieldFactory(key="tier", type="enum", options=["gold", "silver", "bronze"])
    ContactFactory.create_batch(2, custom={"tier": "gold"})
    ContactFactory(custom={"tier": "silver"})
    ContactFactory(custom={"tier": "gold"}, deleted=True)  # a tombstone's value is never read again

    response = api_client.patch("/fields/tier", {"options": ["silver", "bronze"]}, format="json")

    body = assert_error(response, 409, "field_values_conflict")
    assert body["details"] == {"key": "tier", "field": "options", "contacts": 2, "values": ["gold"]}
    assert CustomField.objects.get(key="tier").options == ["gold", "silver", "bronze"]
    assert Contact.objects.filter(custom__tier="gold").count() == 3  # nothing changed behind the client's back
    assert api_client.patch("/fields/tier", {"options": ["gold", "silver"]}, format="json").status_code == 200


def test_max_length_cannot_go_below_a_value_a_contact_holds(api_client):
    CustomFieldFactory(key="note", type="string", max_length=20)
    ContactFactory(custom={"note": "x" * 12})
    ContactFactory(custom={"note": "x" * 5})

    body = assert_error(
        api_client.patch("/fields/note", {"max_length": 10}, format="json"), 409, "field_values_conflict"
    )

    assert body["details"] == {"key": "note", "field": "max_length", "contacts": 1}
    assert CustomField.objects.get(key="note").max_length == 20
    assert api_client.patch("/fields/note", {"max_length": 12}, format="json").status_code == 200


def test_an_unused_field_is_deleted(api_client):
    CustomFieldFactory(key="tier")

    response = api_client.delete("/fields/tier")

    assert response.status_code == 204
    assert not CustomField.objects.exists()


def test_a_field_contacts_hold_values_of_is_kept_unless_purged(api_client):
    CustomFieldFactory(key="tier", type="enum")
    holders = ContactFactory.create_batch(2, custom={"tier": "gold", "other": 1})
    tombstone = ContactFactory(custom={"tier": "gold"}, deleted=True)
    bystander = ContactFactory(custom={})

    refused = api_client.delete("/fields/tier")

    assert assert_error(refused, 409, "field_has_values")["details"] == {"key": "tier", "contacts": 2}
    assert CustomField.objects.filter(key="tier").exists()

    purged = api_client.delete("/fields/tier?purge=true")

    assert purged.status_code == 200
    assert purged.json() == {"key": "tier", "purged": 2}
    assert not CustomField.objects.exists()
    for contact in holders:
        contact.refresh_from_db()
        assert contact.custom == {"other": 1}
        assert contact.version == 2  # a read with the old ETag must not see the same version changed
        assert "custom.tier" in contact.field_times
    tombstone.refresh_from_db()
    assert tombstone.custom == {}
    bystander.refresh_from_db()
    assert bystander.version == 1


def test_a_field_in_use_cannot_be_deleted(api_client, monkeypatch):
    CustomFieldFactory(key="tier")
    monkeypatch.setattr(field_rules, "FIELD_USERS", [lambda key: [f"mapping hubspot:{key}"] if key == "tier" else []])

    response = api_client.delete("/fields/tier?purge=true")

    assert assert_error(response, 409, "field_in_use")["details"] == {"key": "tier", "uses": ["mapping hubspot:tier"]}
    assert CustomField.objects.filter(key="tier").exists()


def test_the_fields_endpoints_need_a_token(client):
    assert_error(client.get("/fields"), 401, "unauthenticated")
    assert_error(client.post("/fields", {"key": "tier"}, content_type="application/json"), 401, "unauthenticated")
