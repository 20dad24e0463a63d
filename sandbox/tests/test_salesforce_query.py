"""SOQL query/queryAll paging, getUpdated/getDeleted, /limits and the daily quota, via the SDK."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceRefusedRequest

from sandbox.salesforce_testing import running_salesforce
from sandbox.testing import next_millisecond

NEXT_URL = re.compile(r"^/services/data/v59\.0/query/01g[0-9A-Za-z]{15}-(\d+)$")
SMALL_BATCHES = {"Sforce-Query-Options": "batchSize=200"}


@pytest.fixture
def harness():
    with running_salesforce(seed=13) as harness:
        yield harness


def bulk_create(harness, count, prefix="p"):
    ids = []
    for start in range(0, count, 200):
        records = [
            {"attributes": {"type": "Contact"}, "LastName": f"{prefix}{i:04d}", "Email": f"{prefix}{i}@example.com"}
            for i in range(start, min(count, start + 200))
        ]
        ids += [
            result["id"]
            for result in harness.sf.restful("composite/sobjects", method="POST", json={"records": records})
        ]
    return ids


def test_query_returns_selected_fields_and_limit_usage(harness):
    account_id = harness.sf.Account.create({"Name": "Acme"})["id"]
    harness.sf.Contact.create({"LastName": "Coyote", "Email": "Wile@Acme.example", "AccountId": account_id})
    result = harness.sf.query("SELECT Id, Email, Account.Name FROM Contact WHERE Email = 'wile@acme.example'")
    assert result["totalSize"] == 1
    assert result["done"] is True
    assert "nextRecordsUrl" not in result
    record = result["records"][0]
    assert list(record) == ["attributes", "Id", "Email", "Account"]
    assert record["Email"] == "Wile@Acme.example"
    assert record["Account"]["Name"] == "Acme"
    usage = harness.sf.api_usage["api-usage"]
    assert usage.total == 100_000
    assert usage.used == 3


def test_paging_through_next_records_url(harness):
    ids = bulk_create(harness, 450)
    first = harness.sf.query("SELECT Id FROM Contact ORDER BY LastName", headers=SMALL_BATCHES)
    assert first["totalSize"] == 450
    assert first["done"] is False
    assert len(first["records"]) == 200
    assert NEXT_URL.match(first["nextRecordsUrl"]).group(1) == "200"

    everything = harness.sf.query_all("SELECT Id FROM Contact ORDER BY LastName", headers=SMALL_BATCHES)
    assert everything["totalSize"] == 450
    assert [record["Id"] for record in everything["records"]] == ids

    default = harness.sf.query("SELECT Id FROM Contact")
    assert default["done"] is True  # 2000 per batch by default
    assert len(default["records"]) == 450


def test_batch_size_config_and_invalid_locator(harness):
    bulk_create(harness, 5)
    harness.control.config(query_batch_size=2)
    first = harness.sf.query("SELECT Id FROM Contact")
    assert len(first["records"]) == 2
    second = harness.sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert len(second["records"]) == 2
    assert NEXT_URL.match(second["nextRecordsUrl"]).group(1) == "4"
    response = harness.rest("GET", "query/01g000000000000AAA-2")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_query_all_includes_deleted_records(harness):
    ids = bulk_create(harness, 3)
    harness.sf.Contact.delete(ids[0])
    assert harness.sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 2
    everything = harness.sf.query_all("SELECT Id, IsDeleted FROM Contact", include_deleted=True)
    assert {(row["Id"], row["IsDeleted"]) for row in everything["records"]} == {
        (ids[0], True),
        (ids[1], False),
        (ids[2], False),
    }
    deleted = harness.sf.query("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)
    assert [row["Id"] for row in deleted["records"]] == [ids[0]]


def test_incremental_sync_by_system_modstamp(harness):
    first = harness.sf.Contact.create({"LastName": "Early"})["id"]
    cursor = harness.sf.Contact.get(first)["SystemModstamp"]
    next_millisecond()  # timestamps have millisecond precision: later writes must land after the cursor
    later = [harness.sf.Contact.create({"LastName": f"Late{i}"})["id"] for i in range(3)]
    harness.sf.Contact.update(first, {"Title": "Touched"})
    literal = cursor.replace("+0000", "Z")
    rows = harness.sf.query_all(
        f"SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp > {literal} ORDER BY SystemModstamp ASC, Id ASC"
    )["records"]
    stamps = [row["SystemModstamp"] for row in rows]
    assert stamps == sorted(stamps)
    assert all(stamp > cursor for stamp in stamps)
    assert set(later) <= {row["Id"] for row in rows}
    assert first in {row["Id"] for row in rows}  # the update moved it past the cursor


def test_email_in_matches_case_insensitively(harness):
    bulk_create(harness, 4, prefix="m")
    rows = harness.sf.query("SELECT Email FROM Contact WHERE Email IN ('M1@EXAMPLE.COM', 'm3@example.com', 'zz@x.com')")
    assert sorted(row["Email"] for row in rows["records"]) == ["m1@example.com", "m3@example.com"]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY"),
        ("SELECT Nope FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity", "INVALID_TYPE"),
    ],
)
def test_query_errors(harness, soql, code):
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        harness.sf.query(soql)
    assert excinfo.value.content[0]["errorCode"] == code


def test_get_updated_and_get_deleted(harness):
    ids = bulk_create(harness, 3)
    harness.sf.Contact.delete(ids[2])
    now = datetime.now(UTC)
    start, end = now - timedelta(minutes=5), now + timedelta(minutes=5)
    updated = harness.sf.Contact.updated(start, end)
    assert updated["ids"] == ids[:2]
    assert updated["latestDateCovered"].endswith("+0000")
    deleted = harness.sf.Contact.deleted(start, end)
    assert [item["id"] for item in deleted["deletedRecords"]] == [ids[2]]
    assert set(deleted) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    response = harness.rest("GET", "sobjects/Contact/updated/?start=2024-01-01T00:00:00Z")
    assert response.status_code == 400


def test_limits_and_the_daily_quota(harness):
    limits = harness.sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 100_000, "Remaining": 99_999}
    harness.control.config(daily_quota=3)
    harness.control.reset()  # usage counters start again under the new quota
    harness.sf.query("SELECT COUNT() FROM Contact")
    harness.sf.query("SELECT COUNT() FROM Contact")
    assert harness.sf.limits()["DailyApiRequests"] == {"Max": 3, "Remaining": 0}
    with pytest.raises(SalesforceRefusedRequest) as excinfo:
        harness.sf.query("SELECT COUNT() FROM Contact")
    assert excinfo.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    response = harness.rest("GET", "limits/")
    assert response.status_code == 403
    assert response.headers["Sforce-Limit-Info"] == "api-usage=3/3"
