"""sObject Collections (/composite/sobjects) through simple-salesforce's ``restful``."""

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox.salesforce_testing import running_salesforce

ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"


@pytest.fixture
def harness():
    with running_salesforce(seed=12) as harness:
        yield harness


def contact(**fields):
    return {"attributes": {"type": "Contact"}, **fields}


def create(harness, records, all_or_none=False):
    return harness.sf.restful("composite/sobjects", method="POST", json={"allOrNone": all_or_none, "records": records})


def count(harness):
    return harness.sf.query("SELECT COUNT() FROM Contact")["totalSize"]


def test_create_reports_each_record_in_order(harness):
    results = create(harness, [contact(LastName="A"), contact(FirstName="NoLast"), contact(LastName="C")])
    assert [result["success"] for result in results] == [True, False, True]
    assert results[0]["id"].startswith("003")
    assert results[0]["errors"] == []
    assert "id" not in results[1]
    assert results[1]["errors"] == [
        {
            "statusCode": "REQUIRED_FIELD_MISSING",
            "message": "Required fields are missing: [LastName]",
            "fields": ["LastName"],
        }
    ]
    assert count(harness) == 2


def test_all_or_none_rolls_everything_back(harness):
    results = create(
        harness,
        [contact(LastName="A", Email="a@example.com"), contact(LastName="B", Email="bad"), contact(LastName="C")],
        all_or_none=True,
    )
    assert [result["success"] for result in results] == [False, False, False]
    assert results[0]["errors"][0]["statusCode"] == ROLLED_BACK
    assert results[1]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert results[2]["errors"][0]["statusCode"] == ROLLED_BACK
    assert count(harness) == 0
    assert harness.sf.query("SELECT Id FROM Contact WHERE Email = 'a@example.com'")["records"] == []


def test_update_partial_success_and_rollback_keep_previous_values(harness):
    ids = [result["id"] for result in create(harness, [contact(LastName="A"), contact(LastName="B")])]
    results = harness.sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [contact(id=ids[0], Title="CEO"), contact(Title="No id"), contact(Id=ids[1], LastName="")],
        },
    )
    assert results[0] == {"id": ids[0], "success": True, "errors": []}
    assert results[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    assert results[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert harness.sf.Contact.get(ids[0])["Title"] == "CEO"

    results = harness.sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"allOrNone": True, "records": [contact(id=ids[0], Title="CTO"), contact(id=ids[1], Email="nope")]},
    )
    assert [result["errors"][0]["statusCode"] for result in results] == [ROLLED_BACK, "INVALID_EMAIL_ADDRESS"]
    assert harness.sf.Contact.get(ids[0])["Title"] == "CEO"


def test_delete_by_ids_with_per_record_errors(harness):
    ids = [result["id"] for result in create(harness, [contact(LastName="A"), contact(LastName="B")])]
    harness.sf.Contact.delete(ids[1])
    results = harness.sf.restful(
        "composite/sobjects",
        method="DELETE",
        params={"ids": f"{ids[0]},{ids[1]},001RM000003oLrB000", "allOrNone": "false"},
    )
    assert results[0] == {"id": ids[0], "success": True, "errors": []}
    assert results[1]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert results[2]["errors"][0] == {
        "statusCode": "MALFORMED_ID",
        "message": "malformed id 001RM000003oLrB000",
        "fields": [],
    }
    assert count(harness) == 0


def test_delete_all_or_none_restores_deleted_records(harness):
    ids = [result["id"] for result in create(harness, [contact(LastName="A"), contact(LastName="B")])]
    results = harness.sf.restful(
        "composite/sobjects", method="DELETE", params={"ids": f"{ids[0]},{ids[1]},bogus", "allOrNone": "true"}
    )
    assert [result["success"] for result in results] == [False, False, False]
    assert count(harness) == 2
    deleted = harness.sf.query_all("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)
    assert deleted["totalSize"] == 0


def test_retrieve_by_ids_and_fields(harness):
    ids = [result["id"] for result in create(harness, [contact(LastName="A", Email="a@example.com")])]
    missing = "003000000000009AAA"
    records = harness.sf.restful(
        "composite/sobjects/Contact", params={"ids": f"{ids[0]},{missing}", "fields": "Id,Email"}
    )
    assert records == [
        {
            "attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{ids[0]}"},
            "Id": ids[0],
            "Email": "a@example.com",
        },
        None,
    ]
    posted = harness.sf.restful("composite/sobjects/Contact", method="POST", json={"ids": ids, "fields": ["LastName"]})
    assert posted[0]["LastName"] == "A"


def test_upsert_collection_by_external_id(harness):
    first = harness.sf.restful(
        "composite/sobjects/Contact/SyncRoot_Id__c",
        method="PATCH",
        json={"allOrNone": False, "records": [contact(SyncRoot_Id__c="x1", LastName="One"), contact(LastName="NoKey")]},
    )
    assert first[0]["created"] is True
    assert first[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    second = harness.sf.restful(
        "composite/sobjects/Contact/SyncRoot_Id__c",
        method="PATCH",
        json={"allOrNone": False, "records": [contact(SyncRoot_Id__c="X1", LastName="Uno")]},
    )
    assert second == [{"id": first[0]["id"], "success": True, "errors": [], "created": False}]
    assert harness.sf.Contact.get(first[0]["id"])["LastName"] == "Uno"


def test_more_than_200_records_is_refused(harness):
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        create(harness, [contact(LastName=f"n{i}") for i in range(201)])
    assert excinfo.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    results = create(harness, [contact(LastName=f"n{i}") for i in range(200)])
    assert len(results) == 200
    assert all(result["success"] for result in results)


def test_records_need_a_type(harness):
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.restful("composite/sobjects", method="POST", json={"records": [{"LastName": "x"}]})
    assert excinfo.value.content[0]["errorCode"] == "INVALID_TYPE"


def test_all_or_none_must_be_a_boolean(harness):
    results = harness.sf.restful(
        "composite/sobjects", method="POST", json={"allOrNone": "false", "records": [contact(), contact(LastName="B")]}
    )
    assert [result["success"] for result in results] == [False, True]
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.restful(
            "composite/sobjects", method="POST", json={"allOrNone": 1, "records": [contact(LastName="C")]}
        )
    assert excinfo.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"
