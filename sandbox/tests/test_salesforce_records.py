"""Single-record REST calls through the unmodified simple-salesforce SDK."""

import re

import pytest
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from sandbox.salesforce_schema import CONTACT, INTEGRATION_USER_ID, normalize_id
from sandbox.salesforce_testing import running_salesforce

DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")


@pytest.fixture
def harness():
    with running_salesforce(seed=11) as harness:
        yield harness


def _error(excinfo):
    return excinfo.value.content[0]


def test_create_then_get_returns_every_field(harness):
    contacts = harness.sf.Contact
    created = contacts.create({"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com"})
    assert set(created) == {"id", "success", "errors"}
    assert created["success"] is True
    assert created["errors"] == []
    record_id = created["id"]
    assert len(record_id) == 18
    assert record_id.startswith("003")
    assert normalize_id(record_id[:15]) == record_id  # the checksum is the CRM's

    record = contacts.get(record_id)
    assert record["attributes"] == {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{record_id}"}
    assert list(record)[1:] == CONTACT.field_names
    assert record["Name"] == "Ada Lovelace"
    assert record["Phone"] is None
    assert record["AccountId"] is None
    assert record["IsDeleted"] is False
    assert record["LastModifiedById"] == INTEGRATION_USER_ID
    assert record["OwnerId"] == INTEGRATION_USER_ID
    for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
        assert DATETIME.match(record[name]), record[name]


def test_get_accepts_15_character_ids_and_a_field_list(harness):
    record_id = harness.sf.Contact.create({"LastName": "Hopper", "Email": "grace@example.com"})["id"]
    response = harness.rest("GET", f"sobjects/Contact/{record_id[:15]}?fields=Email,LastName")
    assert response.status_code == 200
    assert response.json() == {
        "attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{record_id}"},
        "Email": "grace@example.com",
        "LastName": "Hopper",
    }


def test_update_returns_204_and_bumps_the_modstamp(harness):
    contacts = harness.sf.Contact
    record_id = contacts.create({"FirstName": "Ada", "LastName": "Byron"})["id"]
    before = contacts.get(record_id)
    assert contacts.update(record_id, {"LastName": "Lovelace", "Phone": "+44 20 7946 0000"}) == 204
    after = contacts.get(record_id)
    assert after["Name"] == "Ada Lovelace"
    assert after["Phone"] == "+44 20 7946 0000"
    assert after["SystemModstamp"] >= before["SystemModstamp"]
    assert after["CreatedDate"] == before["CreatedDate"]
    # An empty string clears a field (the CRM stores empty text as null).
    contacts.update(record_id, {"Phone": ""})
    assert contacts.get(record_id)["Phone"] is None


def test_delete_moves_to_the_recycle_bin(harness):
    contacts = harness.sf.Contact
    record_id = contacts.create({"LastName": "Gone"})["id"]
    assert contacts.delete(record_id) == 204
    for call in (lambda: contacts.get(record_id), lambda: contacts.delete(record_id)):
        with pytest.raises(SalesforceResourceNotFound) as excinfo:
            call()
        assert _error(excinfo) == {"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}
    with pytest.raises(SalesforceResourceNotFound):
        contacts.update(record_id, {"LastName": "Back"})
    deleted = harness.sf.query_all(f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{record_id}'", include_deleted=True)
    assert deleted["records"][0]["IsDeleted"] is True


def test_unknown_and_malformed_ids(harness):
    contacts = harness.sf.Contact
    missing = normalize_id("003000000000009")
    with pytest.raises(SalesforceResourceNotFound) as excinfo:
        contacts.get(missing)
    assert _error(excinfo)["errorCode"] == "NOT_FOUND"
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        contacts.update(normalize_id("001000000000001"), {"LastName": "x"})
    assert _error(excinfo)["errorCode"] == "MALFORMED_ID"
    with pytest.raises(SalesforceResourceNotFound) as excinfo:
        contacts.get("not-an-id")
    assert "Provided external ID field does not exist" in _error(excinfo)["message"]


@pytest.mark.parametrize(
    ("sobject", "body", "code", "fields"),
    [
        ("Contact", {"FirstName": "No"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ("Contact", {"LastName": "x", "Email": "not-an-email"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
        ("Contact", {"LastName": "x" * 81}, "STRING_TOO_LONG", ["LastName"]),
        ("Contact", {"LastName": "x", "FirstName": "y" * 41}, "STRING_TOO_LONG", ["FirstName"]),
        ("Contact", {"LastName": "x", "Email": "a" * 75 + "@b.com"}, "STRING_TOO_LONG", ["Email"]),
        ("Contact", {"LastName": "x", "Phone": "1" * 41}, "STRING_TOO_LONG", ["Phone"]),
        ("Contact", {"LastName": "x", "Title": "t" * 129}, "STRING_TOO_LONG", ["Title"]),
        ("Account", {"Name": "n" * 256}, "STRING_TOO_LONG", ["Name"]),
        ("Contact", {"LastName": "x", "Company": "Acme"}, "INVALID_FIELD", ["Company"]),
        ("Contact", {"LastName": "x", "Id": "003000000000001AAA"}, "INVALID_FIELD", ["Id"]),
        ("Contact", {"LastName": "x", "Name": "Full"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Name"]),
        ("Contact", {"LastName": "x", "AccountId": "003000000000001AAA"}, "MALFORMED_ID", ["AccountId"]),
        ("Contact", {"LastName": "x", "AccountId": "001000000000042AAA"}, "INVALID_CROSS_REFERENCE_KEY", ["AccountId"]),
        ("Contact", {"LastName": {"nested": 1}}, "JSON_PARSER_ERROR", ["LastName"]),
    ],
)
def test_validation_errors_use_the_crm_codes(harness, sobject, body, code, fields):
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        getattr(harness.sf, sobject).create(body)
    error = _error(excinfo)
    assert error["errorCode"] == code
    assert error["fields"] == fields
    assert error["message"]


def test_required_field_cannot_be_cleared(harness):
    record_id = harness.sf.Contact.create({"LastName": "Keep"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.Contact.update(record_id, {"LastName": None})
    assert _error(excinfo)["message"] == "Required fields are missing: [LastName]"


def test_malformed_json_is_a_parser_error(harness):
    response = harness.rest(
        "POST", "sobjects/Contact/", data=b'{"LastName": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_upsert_by_external_id_creates_updates_and_reports_several_matches(harness):
    contacts = harness.sf.Contact
    created = contacts.upsert("SyncRoot_Id__c/sr-1", {"LastName": "One", "Email": "one@example.com"}, raw_response=True)
    assert created.status_code == 201
    body = created.json()
    assert body["created"] is True
    assert body["success"] is True
    record_id = body["id"]

    updated = contacts.upsert("SyncRoot_Id__c/SR-1", {"Title": "Engineer"}, raw_response=True)
    assert updated.status_code == 200
    assert updated.json() == {"id": record_id, "success": True, "errors": [], "created": False}
    assert contacts.get_by_custom_id("SyncRoot_Id__c", "sr-1")["Title"] == "Engineer"

    contacts.create({"LastName": "Twin", "SyncRoot_Id__c": "sr-1"})
    with pytest.raises(SalesforceMoreThanOneRecord) as excinfo:
        contacts.upsert("SyncRoot_Id__c/sr-1", {"Title": "Ambiguous"})
    assert len(excinfo.value.content) == 2
    assert all(url.startswith("/services/data/v59.0/sobjects/Contact/003") for url in excinfo.value.content)


def test_upsert_rejects_fields_that_are_not_external_ids(harness):
    with pytest.raises(SalesforceResourceNotFound) as excinfo:
        harness.sf.Contact.upsert("Email/a@example.com", {"LastName": "x"})
    assert _error(excinfo)["message"] == "Provided external ID field does not exist or is not accessible: Email"


def test_update_only_upsert_and_old_api_versions(harness):
    response = harness.rest("PATCH", "sobjects/Contact/SyncRoot_Id__c/none?updateOnly=true", json={"LastName": "x"})
    assert response.status_code == 404
    old = harness.session.patch(
        f"{harness.url}/services/data/v45.0/sobjects/Contact/SyncRoot_Id__c/v45",
        json={"LastName": "Old"},
        headers={"Authorization": "Bearer sandbox-token"},
    )
    assert old.status_code == 201
    assert "created" not in old.json()
    again = harness.session.patch(
        f"{harness.url}/services/data/v45.0/sobjects/Contact/SyncRoot_Id__c/v45/",
        json={"LastName": "Old"},
        headers={"Authorization": "Bearer sandbox-token"},
    )
    assert again.status_code == 204


def test_account_link_relationship_and_cascading_delete(harness):
    account_id = harness.sf.Account.create({"Name": "Acme"})["id"]
    assert account_id.startswith("001")
    contact_id = harness.sf.Contact.create({"LastName": "Coyote", "AccountId": account_id})["id"]
    rows = harness.sf.query(f"SELECT Id, Account.Name FROM Contact WHERE AccountId = '{account_id}'")["records"]
    assert rows[0]["Account"]["Name"] == "Acme"
    assert rows[0]["Account"]["attributes"]["type"] == "Account"
    harness.sf.Account.delete(account_id)
    with pytest.raises(SalesforceResourceNotFound):
        harness.sf.Contact.get(contact_id)


def test_any_api_version_with_or_without_trailing_slash(harness):
    record_id = harness.sf.Contact.create({"LastName": "Versions"})["id"]
    for path in (f"v52.0/sobjects/Contact/{record_id}", f"v60.0/sobjects/Contact/{record_id}/"):
        response = harness.session.get(
            f"{harness.url}/services/data/{path}", headers={"Authorization": "Bearer sandbox-token"}
        )
        assert response.status_code == 200
        assert response.json()["attributes"]["url"].startswith(f"/services/data/{path[:5]}/")
    bad = harness.session.get(
        f"{harness.url}/services/data/59/sobjects/Contact/{record_id}",
        headers={"Authorization": "Bearer sandbox-token"},
    )
    assert bad.status_code == 404
    assert bad.json() == [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


def test_describe_lists_fields_and_the_external_id(harness):
    describe = harness.sf.Contact.describe()
    fields = {field["name"]: field for field in describe["fields"]}
    assert describe["keyPrefix"] == "003"
    assert fields["SyncRoot_Id__c"]["externalId"] is True
    assert fields["LastName"]["nillable"] is False
    assert fields["Email"]["length"] == 80
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    assert {"Account", "Contact"} <= {item["name"] for item in harness.sf.describe()["sobjects"]}


def test_duplicate_rule_blocks_same_email_like_the_crm(harness):
    existing = harness.sf.Contact.create({"LastName": "First", "Email": "dup@example.com"})["id"]
    assert harness.sf.Contact.create({"LastName": "Allowed", "Email": "DUP@example.com"})["success"]  # rule off
    harness.control.config(duplicate_rule="block")
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.Contact.create({"LastName": "Second", "Email": "Dup@Example.com"})
    error = _error(excinfo)
    assert error["errorCode"] == "DUPLICATES_DETECTED"
    matches = error["duplicateResut"]["matchResults"][0]["matchRecords"]
    assert matches[0]["record"]["Id"] == existing
    assert error["duplicateResut"]["duplicateRule"] == "Standard_Contact_Duplicate_Rule"

    other = harness.sf.Contact.create({"LastName": "Other", "Email": "other@example.com"})["id"]
    with pytest.raises(SalesforceMalformedRequest):
        harness.sf.Contact.update(other, {"Email": "dup@example.com"})
    results = harness.sf.restful(
        "composite/sobjects",
        method="POST",
        json={"records": [{"attributes": {"type": "Contact"}, "LastName": "C", "Email": "dup@example.com"}]},
    )
    assert results[0]["errors"] == [
        {"statusCode": "DUPLICATES_DETECTED", "message": "Use one of these records?", "fields": []}
    ]


def test_alerting_duplicate_rule_is_bypassed_with_allow_save(harness):
    harness.control.config(duplicate_rule="alert")
    harness.sf.Contact.create({"LastName": "First", "Email": "alert@example.com"})
    with pytest.raises(SalesforceMalformedRequest):
        harness.sf.Contact.create({"LastName": "Second", "Email": "alert@example.com"})
    created = harness.sf.Contact.create(
        {"LastName": "Second", "Email": "alert@example.com"},
        headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"},
    )
    assert created["success"] is True
