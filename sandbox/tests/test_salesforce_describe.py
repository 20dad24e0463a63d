"""Contact describe and custom fields created through the Tooling API, via simple-salesforce."""

from datetime import UTC, datetime

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest
from werkzeug.http import http_date

from sandbox.salesforce_testing import running_salesforce

TIER = {
    "FullName": "Contact.Tier__c",
    "Metadata": {
        "label": "Tier",
        "type": "Picklist",
        "valueSet": {
            "restricted": True,
            "valueSetDefinition": {
                "sorted": False,
                "value": [
                    {"fullName": "Gold", "default": False, "label": "Gold"},
                    {"fullName": "Silver", "default": True, "label": "Silver"},
                ],
            },
        },
    },
}


@pytest.fixture
def harness():
    with running_salesforce(seed=21) as harness:
        yield harness


def _fields(harness):
    return {field["name"]: field for field in harness.sf.Contact.describe()["fields"]}


def _create_field(harness, full_name, **metadata):
    return harness.sf.toolingexecute(
        "sobjects/CustomField", method="POST", data={"FullName": full_name, "Metadata": metadata}
    )


def test_describe_lists_the_standard_fields_as_the_crm_does(harness):
    described = harness.sf.Contact.describe()
    assert described["name"] == "Contact"
    assert described["keyPrefix"] == "003"
    fields = {field["name"]: field for field in described["fields"]}
    assert {"Id", "Email", "FirstName", "LastName", "Phone", "Title", "AccountId", "MasterRecordId"} <= set(fields)
    assert {"IsDeleted", "SystemModstamp", "LastModifiedById", "LeadSource", "Birthdate"} <= set(fields)
    email = fields["Email"]
    assert (email["type"], email["length"], email["soapType"]) == ("email", 80, "xsd:string")
    assert email["createable"]
    assert email["updateable"]
    assert email["nillable"]
    assert email["idLookup"]
    assert email["custom"] is False
    assert email["calculated"] is False
    assert [fields[name]["length"] for name in ("FirstName", "LastName", "Phone", "Title")] == [40, 80, 40, 128]
    assert fields["LastName"]["nillable"] is False
    assert fields["Id"]["type"] == "id"
    assert fields["Id"]["createable"] is False
    master = fields["MasterRecordId"]
    assert (master["type"], master["referenceTo"], master["updateable"]) == ("reference", ["Contact"], False)
    assert fields["AccountId"]["relationshipName"] == "Account"
    modstamp = fields["SystemModstamp"]
    assert (modstamp["type"], modstamp["length"], modstamp["updateable"], modstamp["nillable"]) == (
        "datetime",
        0,
        False,
        False,
    )
    lead_source = fields["LeadSource"]
    assert lead_source["type"] == "picklist"
    assert lead_source["restrictedPicklist"] is False
    assert lead_source["picklistValues"][0] == {
        "active": True,
        "defaultValue": False,
        "label": "Web",
        "validFor": None,
        "value": "Web",
    }
    assert fields["Birthdate"]["type"] == "date"
    assert fields["SyncRoot_Id__c"]["custom"] is True
    assert fields["SyncRoot_Id__c"]["externalId"] is True


def test_tooling_api_creates_a_picklist_field_shown_in_describe(harness):
    created = harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=TIER)
    assert created["success"] is True
    assert created["errors"] == []
    assert created["id"].startswith("00N")
    assert len(created["id"]) == 18

    tier = _fields(harness)["Tier__c"]
    assert tier["custom"] is True
    assert tier["label"] == "Tier"
    assert (tier["type"], tier["length"], tier["restrictedPicklist"]) == ("picklist", 255, True)
    assert [(value["value"], value["defaultValue"]) for value in tier["picklistValues"]] == [
        ("Gold", False),
        ("Silver", True),
    ]
    assert tier["createable"]
    assert tier["updateable"]
    assert tier["nillable"]

    fetched = harness.sf.toolingexecute(f"sobjects/CustomField/{created['id']}")
    assert fetched["FullName"] == "Contact.Tier__c"
    assert (fetched["DeveloperName"], fetched["TableEnumOrId"]) == ("Tier", "Contact")


def test_every_metadata_type_maps_to_its_describe_type(harness):
    _create_field(harness, "Contact.Region__c", label="Region", type="Text", length=20)
    _create_field(harness, "Contact.Seats__c", label="Seats", type="Number", precision=6, scale=2)
    _create_field(harness, "Contact.Vip__c", label="VIP", type="Checkbox", defaultValue="false")
    _create_field(harness, "Contact.Renewal__c", label="Renewal", type="Date")
    _create_field(harness, "Contact.Seen__c", label="Seen", type="DateTime")
    _create_field(harness, "Contact.Notes__c", label="Notes", type="LongTextArea", length=5000, visibleLines=3)
    fields = _fields(harness)
    assert (fields["Region__c"]["type"], fields["Region__c"]["length"]) == ("string", 20)
    seats = fields["Seats__c"]
    assert (seats["type"], seats["precision"], seats["scale"], seats["soapType"]) == ("double", 6, 2, "xsd:double")
    vip = fields["Vip__c"]
    assert (vip["type"], vip["nillable"], vip["defaultValue"], vip["defaultedOnCreate"]) == (
        "boolean",
        False,
        False,
        True,
    )
    assert fields["Renewal__c"]["type"] == "date"
    assert fields["Seen__c"]["type"] == "datetime"
    assert (fields["Notes__c"]["type"], fields["Notes__c"]["length"]) == ("textarea", 5000)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"FullName": "Contact.Email", "Metadata": {"label": "E", "type": "Text", "length": 5}}, "FIELD_INTEGRITY"),
        ({"FullName": "Contact.Bad__Name__c", "Metadata": {"label": "B", "type": "Text", "length": 5}}, "FIELD_INT"),
        ({"FullName": "Contact.Short__c", "Metadata": {"label": "S", "type": "Text"}}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"FullName": "Contact.Wide__c", "Metadata": {"label": "W", "type": "Text", "length": 300}}, "FIELD_INT"),
        ({"FullName": "Contact.Nolabel__c", "Metadata": {"type": "Date"}}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"FullName": "Contact.Odd__c", "Metadata": {"label": "O", "type": "Hologram"}}, "FIELD_INTEGRITY"),
        ({"FullName": "Contact.Empty__c", "Metadata": {"label": "E", "type": "Picklist"}}, "FIELD_INTEGRITY"),
        ({"FullName": "Widget.Size__c", "Metadata": {"label": "S", "type": "Date"}}, "INVALID_TYPE"),
        ({"FullName": "Tier__c", "Metadata": {"label": "T", "type": "Date"}}, "INVALID_FIELD"),
    ],
)
def test_invalid_field_definitions_are_refused(harness, body, code):
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=body)
    error = excinfo.value.content[0]
    assert excinfo.value.status == 400
    assert error["errorCode"].startswith(code)
    assert "Bad__Name__c" not in _fields(harness)
    assert "Short__c" not in _fields(harness)


def test_a_field_name_can_be_used_once(harness):
    harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=TIER)
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=TIER)
    assert excinfo.value.content[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
    assert [name for name in _fields(harness) if name == "Tier__c"] == ["Tier__c"]


def test_describe_honours_if_modified_since(harness):
    first = harness.rest("GET", "sobjects/Contact/describe")
    assert first.status_code == 200
    later = http_date(9_999_999_999)  # far in the future: nothing changed after it
    unchanged = harness.rest("GET", "sobjects/Contact/describe", headers={"If-Modified-Since": later})
    assert unchanged.status_code == 304
    assert unchanged.content == b""

    before = http_date(0)
    assert harness.rest("GET", "sobjects/Contact/describe", headers={"If-Modified-Since": before}).status_code == 200


def test_describe_after_a_new_field_is_not_304(harness):
    # The org's schema was last changed in 2000; a client's copy from 2001 is current until a field is added.
    store = harness.app.store
    store.schema_modified["Contact"] = datetime(2000, 1, 1, tzinfo=UTC)
    copy_from = {"If-Modified-Since": http_date(datetime(2001, 1, 1, tzinfo=UTC))}
    assert harness.rest("GET", "sobjects/Contact/describe", headers=copy_from).status_code == 304
    harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=TIER)
    described = harness.rest("GET", "sobjects/Contact/describe", headers=copy_from)
    assert described.status_code == 200
    assert "Tier__c" in {field["name"] for field in described.json()["fields"]}


def test_control_plane_adds_fields_and_reset_forgets_them(harness):
    response = requests.post(f"{harness.url}/_sandbox/fields", json=TIER, timeout=5)
    assert response.status_code == 201
    assert response.json()["field"]["name"] == "Tier__c"
    refused = requests.post(f"{harness.url}/_sandbox/fields", json=TIER, timeout=5)
    assert refused.status_code == 400
    assert "DUPLICATE_DEVELOPER_NAME" in refused.json()["message"]
    harness.control.reset()
    assert "Tier__c" not in _fields(harness)


def test_custom_fields_belong_to_one_org(harness):
    harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=TIER)
    with running_salesforce(seed=22) as other:
        assert "Tier__c" not in _fields(other)
    assert "Tier__c" in _fields(harness)
