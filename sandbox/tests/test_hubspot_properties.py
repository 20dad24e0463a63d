"""HubSpot properties API and custom property values, through the unmodified hubspot-api-client SDK."""

import json

import pytest
import requests
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException
from hubspot.crm.properties import OptionInput, PropertyCreate, PropertyUpdate
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

TIER = PropertyCreate(
    name="tier",
    label="Tier",
    type="enumeration",
    field_type="select",
    group_name="contactinformation",
    options=[
        OptionInput(label="Gold", value="gold", display_order=0, hidden=False),
        OptionInput(label="Silver", value="silver", display_order=1, hidden=False),
    ],
)


@pytest.fixture
def properties(hubspot):
    return hubspot.client.crm.properties.core_api


def define(properties, name, kind, field_type, **more):
    """Create a custom contact property through the SDK."""
    spec = PropertyCreate(
        name=name, label=name.title(), type=kind, field_type=field_type, group_name="contactinformation", **more
    )
    return properties.create("contacts", spec)


def create(hubspot, **values):
    return hubspot.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties=values))


def body_of(excinfo):
    return json.loads(excinfo.value.body)


def test_get_all_lists_the_built_in_properties(properties):
    results = {prop.name: prop for prop in properties.get_all("contacts").results}
    assert {"email", "firstname", "lastname", "phone", "company", "jobtitle", "lifecyclestage"} <= set(results)
    assert {"createdate", "lastmodifieddate", "hs_object_id"} <= set(results)
    email = results["email"]
    assert (email.type, email.field_type, email.group_name) == ("string", "text", "contactinformation")
    assert email.hubspot_defined is True
    assert email.modification_metadata.read_only_value is False
    created = results["createdate"]
    assert (created.type, created.field_type) == ("datetime", "date")
    assert created.modification_metadata.read_only_value is True
    assert results["hs_object_id"].type == "number"
    stages = [option.value for option in results["lifecyclestage"].options]
    assert stages[:2] == ["subscriber", "lead"]
    assert results["lifecyclestage"].type == "enumeration"


def test_create_get_update_and_archive_a_custom_property(properties):
    created = properties.create("contacts", TIER)
    assert (created.name, created.label, created.type, created.field_type) == ("tier", "Tier", "enumeration", "select")
    assert [(option.label, option.value) for option in created.options] == [("Gold", "gold"), ("Silver", "silver")]
    assert created.hubspot_defined is None  # only HubSpot's own properties carry the flag
    assert created.modification_metadata.archivable is True
    assert created.modification_metadata.read_only_definition is False
    assert created.created_at is not None

    fetched = properties.get_by_name("contacts", "tier")
    assert fetched.to_dict() == created.to_dict()
    assert "tier" in {prop.name for prop in properties.get_all("contacts").results}

    update = PropertyUpdate(label="Customer tier", options=[OptionInput(label="Gold", value="gold", display_order=0)])
    updated = properties.update("contacts", "tier", update)
    assert updated.label == "Customer tier"
    assert [option.value for option in updated.options] == ["gold"]

    properties.archive("contacts", "tier")
    assert "tier" not in {prop.name for prop in properties.get_all("contacts").results}
    archived = properties.get_all("contacts", archived=True).results
    assert [(prop.name, prop.archived) for prop in archived] == [("tier", True)]
    with pytest.raises(PropertiesApiException) as excinfo:
        properties.get_by_name("contacts", "tier")
    assert excinfo.value.status == 404
    assert body_of(excinfo)["category"] == "OBJECT_NOT_FOUND"


def test_a_property_name_is_taken_once(properties):
    properties.create("contacts", TIER)
    with pytest.raises(PropertiesApiException) as excinfo:
        properties.create("contacts", TIER)
    assert excinfo.value.status == 409
    body = body_of(excinfo)
    assert (body["status"], body["category"]) == ("error", "OBJECT_ALREADY_EXISTS")
    with pytest.raises(PropertiesApiException) as excinfo:
        define(properties, "email", "string", "text")
    assert excinfo.value.status == 409


@pytest.mark.parametrize(
    "definition",
    [
        {"name": "Tier", "label": "T", "type": "string", "field_type": "text"},
        {"name": "seats", "label": "S", "type": "integer", "field_type": "number"},
        {"name": "seats", "label": "S", "type": "number", "field_type": "select"},
        {"name": "plan", "label": "P", "type": "enumeration", "field_type": "select"},
        {"name": "plan", "label": "", "type": "string", "field_type": "text"},
        {"name": "plan", "label": "P", "type": "string", "field_type": "text", "group_name": "nowhere"},
    ],
)
def test_invalid_definitions_are_a_400_validation_error(properties, definition):
    definition = {"group_name": "contactinformation", **definition}
    with pytest.raises(PropertiesApiException) as excinfo:
        properties.create("contacts", PropertyCreate(**definition))
    assert excinfo.value.status == 400
    assert body_of(excinfo)["category"] == "VALIDATION_ERROR"
    assert definition["name"] not in {prop.name for prop in properties.get_all("contacts").results}


def test_built_in_properties_cannot_be_archived_or_redefined(properties):
    with pytest.raises(PropertiesApiException) as excinfo:
        properties.archive("contacts", "email")
    assert excinfo.value.status == 400
    with pytest.raises(PropertiesApiException) as excinfo:
        properties.update("contacts", "email", PropertyUpdate(type="number", field_type="number"))
    assert excinfo.value.status == 400
    assert properties.get_by_name("contacts", "email").type == "string"


def test_contacts_carry_custom_property_values(hubspot, properties):
    properties.create("contacts", TIER)
    define(properties, "seats", "number", "number")
    define(properties, "renewal", "date", "date")
    define(properties, "vip", "bool", "booleancheckbox")
    contact = create(hubspot, email="c@example.com", tier="gold", seats="40", renewal="2027-03-01", vip="true")
    read = hubspot.contacts.basic_api.get_by_id(contact.id, properties=["tier", "seats", "renewal", "vip", "email"])
    assert {name: read.properties[name] for name in ("tier", "seats", "renewal", "vip")} == {
        "tier": "gold",
        "seats": "40",
        "renewal": "2027-03-01",
        "vip": "true",
    }
    hubspot.contacts.basic_api.update(contact.id, SimplePublicObjectInput(properties={"tier": "silver", "seats": ""}))
    read = hubspot.contacts.basic_api.get_by_id(contact.id, properties=["tier", "seats"])
    assert (read.properties["tier"], read.properties["seats"]) == ("silver", None)
    # epoch milliseconds at midnight UTC are a date too
    hubspot.contacts.basic_api.update(contact.id, SimplePublicObjectInput(properties={"renewal": "1798761600000"}))
    assert (
        hubspot.contacts.basic_api.get_by_id(contact.id, properties=["renewal"]).properties["renewal"] == "2027-01-01"
    )


def test_unknown_properties_are_refused_with_their_name(hubspot):
    with pytest.raises(ApiException) as excinfo:
        create(hubspot, email="u@example.com", tier="gold")
    assert excinfo.value.status == 400
    body = body_of(excinfo)
    assert body["category"] == "VALIDATION_ERROR"
    assert "PROPERTY_DOESNT_EXIST" in body["message"]
    assert body["errors"] == [
        {
            "message": 'Property "tier" does not exist',
            "code": "PROPERTY_DOESNT_EXIST",
            "context": {"propertyName": ["tier"]},
        }
    ]


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"tier": "platinum"}, "INVALID_OPTION"),
        ({"seats": "forty"}, "INVALID_LONG"),
        ({"renewal": "2027-02-30"}, "INVALID_DATE"),
        ({"renewal": "1798761600001"}, "INVALID_DATE"),  # not midnight UTC
        ({"vip": "maybe"}, "INVALID_OPTION"),
    ],
)
def test_values_that_do_not_fit_the_property_are_refused(hubspot, properties, values, code):
    properties.create("contacts", TIER)
    define(properties, "seats", "number", "number")
    define(properties, "renewal", "date", "date")
    define(properties, "vip", "bool", "booleancheckbox")
    with pytest.raises(ApiException) as excinfo:
        create(hubspot, email="bad@example.com", **values)
    body = body_of(excinfo)
    assert excinfo.value.status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert [error["code"] for error in body["errors"]] == [code]
    assert body["errors"][0]["context"] == {"propertyName": list(values)}
    assert hubspot.app.store.count_live() == 0


def test_multi_checkbox_values_are_semicolon_joined_options(hubspot, properties):
    colours = [OptionInput(label=c.title(), value=c, display_order=i) for i, c in enumerate(["red", "blue"])]
    define(properties, "colours", "enumeration", "checkbox", options=colours)
    contact = create(hubspot, email="m@example.com", colours="red;blue")
    assert hubspot.contacts.basic_api.get_by_id(contact.id, properties=["colours"]).properties["colours"] == "red;blue"
    with pytest.raises(ApiException):
        create(hubspot, email="n@example.com", colours="red;green")


def test_batch_update_reports_a_bad_custom_value_per_input(hubspot, properties):
    properties.create("contacts", TIER)
    good, bad = create(hubspot, email="g@example.com"), create(hubspot, email="b@example.com")
    inputs = [
        SimplePublicObjectBatchInput(id=good.id, properties={"tier": "gold"}),
        SimplePublicObjectBatchInput(id=bad.id, properties={"tier": "bronze"}),
    ]
    response = hubspot.contacts.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=inputs))
    assert [result.id for result in response.results] == [good.id]
    assert response.num_errors == 1
    error = response.errors[0]
    assert (error.category, error.context["ids"]) == ("VALIDATION_ERROR", [bad.id])
    assert "INVALID_OPTION" in error.message
    read = hubspot.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(inputs=[{"id": good.id}], properties=["tier"], properties_with_history=[])
    )
    assert read.results[0].properties["tier"] == "gold"


def test_webhooks_carry_custom_properties_when_subscribed_to_all(hubspot, properties, webhook_receiver):
    properties.create("contacts", TIER)
    hubspot.control.config(webhook_url=webhook_receiver.url, webhook_properties=["*"])
    contact = create(hubspot, email="h@example.com", tier="gold")
    hubspot.contacts.basic_api.update(contact.id, SimplePublicObjectInput(properties={"tier": "silver"}))
    events = webhook_receiver.wait_for_events(4)
    changes = [(e["propertyName"], e["propertyValue"]) for e in events if e["subscriptionType"].endswith("Change")]
    assert sorted(changes) == [("email", "h@example.com"), ("tier", "gold"), ("tier", "silver")]
    tier_subscriptions = {e["subscriptionId"] for e in events if e.get("propertyName") == "tier"}
    assert len(tier_subscriptions) == 1  # one subscription per property


def test_control_plane_adds_properties_and_reset_forgets_them(hubspot, properties):
    body = {
        "name": "region",
        "label": "Region",
        "type": "string",
        "fieldType": "text",
        "groupName": "contactinformation",
    }
    response = requests.post(f"{hubspot.running.url}/_sandbox/fields", json=body, timeout=5)
    assert response.status_code == 201
    assert properties.get_by_name("contacts", "region").label == "Region"
    again = requests.post(f"{hubspot.running.url}/_sandbox/fields", json=body, timeout=5)
    assert again.status_code == 400
    hubspot.control.reset()
    assert "region" not in {prop.name for prop in properties.get_all("contacts").results}


def test_display_order_is_kept_and_defaults_to_minus_one(properties):
    assert define(properties, "rank", "number", "number", display_order=0).display_order == 0
    assert define(properties, "score", "number", "number").display_order == -1
    updated = properties.update("contacts", "score", PropertyUpdate(display_order=3))
    assert updated.display_order == 3


def test_search_filters_and_returns_custom_properties(hubspot, properties):
    properties.create("contacts", TIER)
    define(properties, "seats", "number", "number")
    gold = create(hubspot, email="s1@example.com", tier="gold", seats="40")
    create(hubspot, email="s2@example.com", tier="silver", seats="5")
    filters = [
        {"propertyName": "tier", "operator": "EQ", "value": "gold"},
        {"propertyName": "seats", "operator": "GT", "value": "10"},
    ]
    request = PublicObjectSearchRequest(filter_groups=[{"filters": filters}], properties=["tier", "seats"], limit=10)
    found = hubspot.contacts.search_api.do_search(request)
    assert [(c.id, c.properties["tier"], c.properties["seats"]) for c in found.results] == [(gold.id, "gold", "40")]
