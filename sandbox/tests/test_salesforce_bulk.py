"""Bulk API 2.0 through simple-salesforce's bulk2: ingest (insert, upsert on an external id,
update, delete) with per-record results, and query jobs paged with Sforce-Locator."""

import csv
import io
import time

import pytest
from simple_salesforce.exceptions import SalesforceOperationError

from sandbox.salesforce_testing import running_salesforce

WAIT = 0.05  # the SDK's first pause before it polls a job


@pytest.fixture
def harness():
    with running_salesforce(seed=21, outbound_messages=False) as harness:
        yield harness


def rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def wait_for(harness, job_id, kind="ingest", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = harness.rest("GET", f"jobs/{kind}/{job_id}").json()
        if job["state"] in ("JobComplete", "Failed", "Aborted"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_upsert_on_an_external_id_creates_then_updates(harness):
    contacts = harness.sf.bulk2.Contact
    records = [{"SyncRoot_Id__c": f"u-{n}", "LastName": f"Last {n}", "Email": f"u{n}@example.com"} for n in range(5)]

    first = contacts.upsert(records=records, external_id_field="SyncRoot_Id__c", wait=WAIT)
    records[0]["FirstName"] = "Ada"
    second = contacts.upsert(records=records[:2], external_id_field="SyncRoot_Id__c", wait=WAIT)
    created = rows(contacts.get_successful_records(first[0]["job_id"]))
    updated = rows(contacts.get_successful_records(second[0]["job_id"]))
    stored = harness.sf.query("SELECT Id, FirstName, SyncRoot_Id__c FROM Contact WHERE SyncRoot_Id__c = 'u-0'")

    assert first[0]["numberRecordsProcessed"] == 5
    assert first[0]["numberRecordsFailed"] == 0
    assert [row["sf__Created"] for row in created] == ["true"] * 5
    assert [row["sf__Created"] for row in updated] == ["false", "false"]
    assert updated[0]["sf__Id"] == created[0]["sf__Id"]
    assert stored["records"][0]["FirstName"] == "Ada"
    assert harness.sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 5


def test_refused_records_fail_alone_with_the_crms_message(harness):
    contacts = harness.sf.bulk2.Contact
    records = [
        {"SyncRoot_Id__c": "ok", "LastName": "Fine", "Email": "fine@example.com", "Title": ""},
        {"SyncRoot_Id__c": "long", "LastName": "x" * 81, "Email": "", "Title": ""},
        {"SyncRoot_Id__c": "mail", "LastName": "Bad", "Email": "not-an-email", "Title": ""},
    ]

    result = contacts.upsert(records=records, external_id_field="SyncRoot_Id__c", wait=WAIT)
    failed = rows(contacts.get_failed_records(result[0]["job_id"]))
    succeeded = rows(contacts.get_successful_records(result[0]["job_id"]))
    unprocessed = rows(contacts.get_unprocessed_records(result[0]["job_id"]))

    assert result[0]["numberRecordsFailed"] == 2
    assert [row["SyncRoot_Id__c"] for row in succeeded] == ["ok"]
    assert failed[0]["sf__Error"].startswith("STRING_TOO_LONG:Last Name: data value too large:")
    assert failed[0]["sf__Error"].endswith(":LastName --")
    assert failed[1]["sf__Error"].startswith("INVALID_EMAIL_ADDRESS:Email: invalid email address: not-an-email")
    assert failed[0]["sf__Id"] == ""
    assert unprocessed == []


def test_an_empty_cell_keeps_a_value_and_na_clears_it(harness):
    contacts = harness.sf.bulk2.Contact
    contacts.insert(records=[{"LastName": "Keep", "Title": "CTO", "Phone": "123", "SyncRoot_Id__c": "k"}], wait=WAIT)

    contacts.upsert(
        records=[{"SyncRoot_Id__c": "k", "Title": "", "Phone": "#N/A"}], external_id_field="SyncRoot_Id__c", wait=WAIT
    )
    record = harness.sf.query("SELECT Title, Phone FROM Contact")["records"][0]

    assert record["Title"] == "CTO"
    assert record["Phone"] is None


def test_update_and_delete_by_id(harness):
    contacts = harness.sf.bulk2.Contact
    ids = [harness.sf.Contact.create({"LastName": f"L{n}"})["id"] for n in range(3)]

    contacts.update(records=[{"Id": ids[0], "LastName": "Renamed"}], wait=WAIT)
    deleted = contacts.delete(records=[{"Id": ids[1]}, {"Id": "003000000000000AAA"}], wait=WAIT)
    failed = rows(contacts.get_failed_records(deleted[0]["job_id"]))

    assert harness.sf.Contact.get(ids[0])["LastName"] == "Renamed"
    assert deleted[0]["numberRecordsFailed"] == 1
    assert failed[0]["sf__Error"].startswith("NOT_FOUND:")
    assert harness.sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 2


def test_query_job_pages_with_the_locator(harness):
    harness.sf.bulk2.Contact.insert(
        records=[{"LastName": f"Q{n}", "Email": f"q{n}@example.com"} for n in range(25)], wait=WAIT
    )

    pages = list(
        harness.sf.bulk2.Contact.query("SELECT Id, Email, SystemModstamp FROM Contact", max_records=10, wait=WAIT)
    )
    parsed = [row for page in pages for row in rows(page)]

    assert len(pages) == 3
    assert len(parsed) == 25
    assert sorted(row["Email"] for row in parsed) == sorted(f"q{n}@example.com" for n in range(25))
    assert parsed[0]["SystemModstamp"].endswith("Z")


def test_query_results_headers_and_queryall_sees_deleted_rows(harness):
    ids = [harness.sf.Contact.create({"LastName": f"D{n}"})["id"] for n in range(3)]
    harness.sf.Contact.delete(ids[0])
    job = harness.rest(
        "POST", "jobs/query", json={"operation": "queryAll", "query": "SELECT Id, IsDeleted FROM Contact"}
    ).json()

    done = wait_for(harness, job["id"], "query")
    first = harness.rest("GET", f"jobs/query/{job['id']}/results", params={"maxRecords": 2})
    last = harness.rest(
        "GET", f"jobs/query/{job['id']}/results", params={"maxRecords": 2, "locator": first.headers["Sforce-Locator"]}
    )

    assert job["state"] == "UploadComplete"
    assert done["numberRecordsProcessed"] == 3
    assert first.headers["Content-Type"].startswith("text/csv")
    assert first.headers["Sforce-NumberOfRecords"] == "2"
    assert last.headers["Sforce-Locator"] == "null"
    assert last.headers["Sforce-NumberOfRecords"] == "1"
    assert first.headers["Sforce-Limit-Info"].startswith("api-usage=")
    deleted = {row["Id"]: row["IsDeleted"] for row in rows(first.text) + rows(last.text)}
    assert deleted[ids[0]] == "true"


def test_bad_jobs_are_refused_as_the_crm_does(harness):
    count = harness.rest("POST", "jobs/query", json={"operation": "query", "query": "SELECT COUNT() FROM Contact"})
    malformed = harness.rest("POST", "jobs/query", json={"operation": "query", "query": "SELEC Id FROM Contact"})
    no_key = harness.rest(
        "POST", "jobs/ingest", json={"object": "Contact", "operation": "upsert", "externalIdFieldName": "Email"}
    )
    unknown = harness.rest("GET", "jobs/ingest/750000000000001AAA")

    assert count.status_code == 400
    assert malformed.status_code == 400
    assert malformed.json()[0]["errorCode"] == "MALFORMED_QUERY"
    assert no_key.status_code == 400
    assert "does not match an External ID" in no_key.json()[0]["message"]
    assert unknown.status_code == 404


def test_a_csv_naming_an_unknown_field_fails_the_job(harness):
    with pytest.raises(SalesforceOperationError, match="Field name not found : Nope__c"):
        harness.sf.bulk2.Contact.insert(records=[{"LastName": "x", "Nope__c": "y"}], wait=WAIT)


def test_data_is_uploaded_once_and_jobs_are_deleted(harness):
    job = harness.rest("POST", "jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()
    url = f"{harness.url}/{job['contentUrl']}"
    headers = {"Authorization": "Bearer sandbox-token", "Content-Type": "text/csv"}

    first = harness.session.put(url, data="LastName\nA\n", headers=headers)
    second = harness.session.put(url, data="LastName\nB\n", headers=headers)
    closed = harness.rest("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    done = wait_for(harness, job["id"])
    removed = harness.rest("DELETE", f"jobs/ingest/{job['id']}")

    assert job["contentUrl"] == f"services/data/v59.0/jobs/ingest/{job['id']}/batches"
    assert first.status_code == 201
    assert second.status_code == 409
    assert closed.json()["state"] == "UploadComplete"
    assert done["numberRecordsProcessed"] == 1
    assert removed.status_code == 204
    assert harness.rest("GET", f"jobs/ingest/{job['id']}").status_code == 404
