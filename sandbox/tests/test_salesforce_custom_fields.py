"""Custom field values: validation with the CRM's error codes, SOQL, collections and change events."""

import time

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox.salesforce_testing import running_salesforce
from sandbox.server import serve
from sandbox.tests.test_salesforce_describe import TIER
from sandbox.tests.test_salesforce_outbound import Receiver, parse_message, verify


def _add(harness, full_name, **metadata):
    harness.sf.toolingexecute("sobjects/CustomField", method="POST", data={"FullName": full_name, "Metadata": metadata})


@pytest.fixture
def harness():
    with running_salesforce(seed=23) as harness:
        harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=TIER)
        _add(harness, "Contact.Region__c", label="Region", type="Text", length=10)
        _add(harness, "Contact.Seats__c", label="Seats", type="Number", precision=5, scale=1)
        _add(harness, "Contact.Vip__c", label="VIP", type="Checkbox", defaultValue="false")
        _add(harness, "Contact.Renewal__c", label="Renewal", type="Date")
        _add(harness, "Contact.Seen__c", label="Seen", type="DateTime")
        yield harness


def _refusal(excinfo):
    assert excinfo.value.status == 400
    return excinfo.value.content[0]


def test_custom_values_are_stored_and_read_back(harness):
    contacts = harness.sf.Contact
    values = {"Tier__c": "Gold", "Region__c": "EMEA", "Seats__c": 40, "Vip__c": True, "Renewal__c": "2027-03-01"}
    record_id = contacts.create({"LastName": "Custom", **values, "Seen__c": "2026-12-04T10:00:00.123+01:00"})["id"]
    record = contacts.get(record_id)
    assert {name: record[name] for name in values} == {**values, "Seats__c": 40.0}
    assert record["Seen__c"] == "2026-12-04T09:00:00.123+0000"
    contacts.update(record_id, {"Tier__c": "Silver", "Region__c": None, "Seats__c": "12.34"})
    record = contacts.get(record_id)
    assert (record["Tier__c"], record["Region__c"], record["Seats__c"]) == ("Silver", None, 12.3)


def test_a_new_checkbox_is_false_on_existing_and_new_records(harness):
    before = harness.sf.Contact.create({"LastName": "Before"})["id"]
    _add(harness, "Contact.Opted__c", label="Opted", type="Checkbox", defaultValue="true")
    after = harness.sf.Contact.create({"LastName": "After"})["id"]
    assert harness.sf.Contact.get(before)["Opted__c"] is True
    assert harness.sf.Contact.get(after)["Vip__c"] is False
    harness.sf.Contact.update(after, {"Vip__c": None})  # a checkbox cannot be null: clearing unchecks
    assert harness.sf.Contact.get(after)["Vip__c"] is False


@pytest.mark.parametrize(
    ("values", "code", "field"),
    [
        ({"Region__c": "Antarctica!"}, "STRING_TOO_LONG", "Region__c"),
        ({"Tier__c": "Platinum"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Tier__c"),
        ({"Seats__c": 10000}, "NUMBER_OUTSIDE_VALID_RANGE", "Seats__c"),
        ({"Seats__c": "many"}, "JSON_PARSER_ERROR", "Seats__c"),
        ({"Vip__c": "yes"}, "JSON_PARSER_ERROR", "Vip__c"),
        ({"Renewal__c": "2027-02-30"}, "JSON_PARSER_ERROR", "Renewal__c"),
        ({"Seen__c": "yesterday"}, "JSON_PARSER_ERROR", "Seen__c"),
        ({"Size__c": "L"}, "INVALID_FIELD", "Size__c"),
        ({"FirstName": "x" * 41}, "STRING_TOO_LONG", "FirstName"),
        ({"Email": "a" * 70 + "@example.com"}, "STRING_TOO_LONG", "Email"),
        ({"Title": "t" * 129}, "STRING_TOO_LONG", "Title"),
    ],
)
def test_values_that_do_not_fit_are_refused_with_the_crm_code(harness, values, code, field):
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.Contact.create({"LastName": "Refused", **values})
    error = _refusal(excinfo)
    assert error["errorCode"] == code
    assert error["fields"] == [field]
    assert harness.sf.query("SELECT Id FROM Contact")["totalSize"] == 0


def test_too_long_message_names_the_limit(harness):
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.Contact.create({"LastName": "L", "Region__c": "Antarctica!"})
    assert _refusal(excinfo)["message"] == "Region: data value too large: Antarctica! (max length=10)"


def test_unrestricted_picklist_takes_any_value(harness):
    record_id = harness.sf.Contact.create({"LastName": "Lead", "LeadSource": "Trade Show"})["id"]
    assert harness.sf.Contact.get(record_id)["LeadSource"] == "Trade Show"


def test_soql_selects_and_filters_custom_fields(harness):
    contacts = harness.sf.Contact
    gold = contacts.create({"LastName": "Gold", "Tier__c": "Gold", "Seats__c": 40, "Renewal__c": "2027-01-15"})["id"]
    contacts.create({"LastName": "Silver", "Tier__c": "Silver", "Seats__c": 5, "Renewal__c": "2026-06-01"})
    result = harness.sf.query("SELECT Id, Tier__c, Seats__c, Vip__c FROM Contact WHERE Tier__c = 'gold'")
    assert [(r["Id"], r["Tier__c"], r["Seats__c"], r["Vip__c"]) for r in result["records"]] == [
        (gold, "Gold", 40.0, False)
    ]
    by_number = harness.sf.query("SELECT LastName FROM Contact WHERE Seats__c > 10")
    assert [r["LastName"] for r in by_number["records"]] == ["Gold"]
    by_date = harness.sf.query("SELECT LastName FROM Contact WHERE Renewal__c < 2027-01-01")
    assert [r["LastName"] for r in by_date["records"]] == ["Silver"]
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.query("SELECT Id FROM Contact WHERE Seats__c = '40'")
    assert _refusal(excinfo)["errorCode"] == "INVALID_FIELD"


def test_collections_report_custom_field_errors_per_record(harness):
    body = {
        "allOrNone": False,
        "records": [
            {"attributes": {"type": "Contact"}, "LastName": "Fine", "Tier__c": "Gold"},
            {"attributes": {"type": "Contact"}, "LastName": "Wrong", "Tier__c": "Bronze"},
        ],
    }
    results = harness.sf.restful("composite/sobjects", method="POST", json=body)
    assert results[0]["success"] is True
    assert results[1] == {
        "success": False,
        "errors": [
            {
                "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                "message": "Tier: bad value for restricted picklist field: Bronze",
                "fields": ["Tier__c"],
            }
        ],
    }


def test_ui_edits_validate_custom_fields(harness):
    record = harness.control.edit(fields={"LastName": "Ui", "Tier__c": "Gold"})
    assert record["Tier__c"] == "Gold"
    with pytest.raises(requests.HTTPError) as excinfo:
        harness.control.edit(record["Id"], {"Tier__c": "Bronze"})
    assert excinfo.value.response.status_code == 400
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in excinfo.value.response.json()["message"]


@pytest.fixture
def receiver():
    receiver = Receiver()
    running = serve(receiver)
    receiver.url = f"{running.url}/salesforce"
    yield receiver
    running.stop()


def test_custom_fields_travel_in_change_events_and_outbound_messages(receiver):
    with running_salesforce(seed=24, webhook_url=receiver.url, change_events="all") as harness:
        harness.control.config(outbound_fields=["Id", "Email", "Tier__c"])
        harness.sf.toolingexecute("sobjects/CustomField", method="POST", data=TIER)
        record_id = harness.sf.Contact.create({"LastName": "Evented", "Email": "e@example.com"})["id"]
        harness.sf.Contact.update(record_id, {"Tier__c": "Gold"})
        deadline = time.monotonic() + 5
        events = []
        while time.monotonic() < deadline and len(events) < 2:
            events = [event for delivery in receiver.wait("json", 1) for event in verify(delivery)["events"]]
            time.sleep(0.02)
        updated = next(event for event in events if event["ChangeEventHeader"]["changeType"] == "UPDATE")
        assert updated["ChangeEventHeader"]["changedFields"] == ["Tier__c", "LastModifiedDate"]
        assert updated["Tier__c"] == "Gold"
        messages = receiver.wait("soap", 2)
        sent = [fields for message in messages for _, fields in parse_message(message["body"])[1]]
        assert {"Id": record_id, "Email": "e@example.com", "Tier__c": "Gold"} in sent
