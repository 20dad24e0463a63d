"""Bulk API 2.0 past the threshold: imports read one query job, pushes write ingest jobs; refused
values fail per record with Salesforce's own message; below it, REST and Collections as before."""

import pytest

from crm.base import PushItem
from crm.salesforce import bulk_read
from crm.salesforce.bulk import parse_error, to_csv
from crm.salesforce.provider import SalesforceProvider

from .conftest import contact_values

QUERY_JOB = "POST /services/data/{version}/jobs/query"
INGEST_JOB = "POST /services/data/{version}/jobs/ingest"
QUERY = "GET /services/data/{version}/queryAll"
QUERY_MORE = "GET /services/data/{version}/queryAll/{locator}"
COLLECTION_CREATE = "POST /services/data/{version}/composite/sobjects"
THRESHOLD = 100


@pytest.fixture
def bulk_provider(org, sf_config, limiter, db):
    org.control.config(query_batch_size=THRESHOLD)  # a REST page holds the threshold, as 2,000 do by default
    return SalesforceProvider({**sf_config, "bulk_threshold": THRESHOLD, "bulk_batch_size": 1000}, limiter=limiter)


def seed(org, count):
    items = [PushItem(key=n, values=contact_values(n, company="Acme" if n % 2 else "")) for n in range(count)]
    with_rest = SalesforceProvider({**org_config(org), "bulk_threshold": 0})
    for start in range(0, count, 200):
        assert all(result.ok for result in with_rest.push(items[start : start + 200]))


def org_config(org):
    return {"login_url": org.url, "client_id": "sandbox-client", "client_secret": "sandbox-secret",
            "rate_limit": "10000/second", "rate_limit_name": f"bulk-seed-{org.url}"}  # fmt: skip


def test_an_import_past_the_threshold_reads_one_bulk_query_job(org, bulk_provider, provider):
    seed(org, 250)
    before = org.calls()

    bulk = list(bulk_provider.changes_since(modstamp=None, last_id=""))
    calls_bulk = sum(sum(v.values()) for v in org.calls().values()) - sum(sum(v.values()) for v in before.values())
    rest = list(provider.changes_since(modstamp=None, last_id=""))  # 250 < 2,000: REST pages

    assert org.count(QUERY_JOB) == 1
    assert [c.external_id for c in bulk] == [c.external_id for c in rest]
    assert [c.values for c in bulk] == [c.values for c in rest]
    assert [c.occurred_at for c in bulk] == [c.occurred_at for c in rest]
    assert bulk[1].values["company"] == "Acme"
    assert bulk[0].values["company"] == ""
    assert calls_bulk <= 8  # first REST page, job, polls, one results page


def test_the_bulk_read_resumes_after_its_cursor(org, bulk_provider):
    seed(org, 220)
    everything = list(bulk_provider.changes_since(modstamp=None, last_id=""))
    middle = everything[110]

    after = list(bulk_provider.changes_since(modstamp=middle.occurred_at, last_id=middle.external_id))

    assert [c.external_id for c in after] == [c.external_id for c in everything[111:]]


def test_a_bulk_read_past_one_sort_run_comes_in_the_same_order(org, bulk_provider, provider, monkeypatch):
    """Rows are sorted in runs merged from temporary files (memory stays flat): the order is still
    (SystemModstamp, Id), ties in Salesforce's own order."""
    monkeypatch.setattr(bulk_read, "SORT_RUN", 40)
    seed(org, 250)

    bulk = list(bulk_provider.changes_since(modstamp=None, last_id=""))
    rest = list(provider.changes_since(modstamp=None, last_id=""))

    assert [c.external_id for c in bulk] == [c.external_id for c in rest]
    assert [c.values for c in bulk] == [c.values for c in rest]


def test_sorting_on_disk_is_a_stable_sort():
    records = [{"k": n % 7, "n": n, "nested": {"b": n % 2 == 0, "x": None, "f": n / 4}} for n in range(100)]

    assert list(bulk_read.sorted_on_disk(records, key=lambda r: r["k"], run=9)) == sorted(records, key=lambda r: r["k"])


def test_a_push_past_the_threshold_creates_with_one_ingest_upsert(org, bulk_provider):
    items = [PushItem(key=1000 + n, values=contact_values(n)) for n in range(150)]

    results = bulk_provider.push(items)

    assert all(result.ok for result in results)
    assert {result.operation for result in results} == {"create"}
    assert org.count(INGEST_JOB) == 1
    assert org.count(COLLECTION_CREATE) == 0
    by_id = {r["Id"]: r for r in org.contacts()}
    assert by_id[results[7].external_id]["Email"] == "person7@example.com"
    assert by_id[results[7].external_id]["SyncRoot_Id__c"] == "1007"


def test_a_retried_bulk_push_finds_what_it_created(org, bulk_provider):
    items = [PushItem(key=n, values=contact_values(n)) for n in range(150)]
    first = bulk_provider.push(items)

    again = bulk_provider.push(items)  # the links were never told: unlinked once more

    assert len(org.contacts()) == 150
    assert [r.external_id for r in again] == [r.external_id for r in first]
    assert {r.operation for r in again} == {"match"}


def test_linked_records_are_updated_by_id_in_one_job_and_blanks_clear(org, bulk_provider):
    created = bulk_provider.push([PushItem(key=n, values=contact_values(n)) for n in range(150)])
    updates = [
        PushItem(key=r.key, values={"job_title": "CTO", "phone": ""}, external_id=r.external_id) for r in created
    ]

    results = bulk_provider.push(updates)

    assert all(r.ok and r.operation == "update" for r in results)
    assert org.count(INGEST_JOB) == 2
    record = next(r for r in org.contacts() if r["Id"] == created[3].external_id)
    assert record["Title"] == "CTO"
    assert record["Phone"] is None
    assert record["FirstName"] == "First3"  # not sent: left as it was


def test_values_that_do_not_fit_are_refused_per_record_with_salesforces_message(org, bulk_provider):
    items = [PushItem(key=n, values=contact_values(n)) for n in range(150)]
    items[5] = PushItem(key=5, values=contact_values(5, last_name="x" * 81))
    items[9] = PushItem(key=9, values=contact_values(9, job_title="t" * 129))

    results = bulk_provider.push(items)

    failed = {r.key: r.error for r in results if not r.ok}
    assert set(failed) == {5, 9}
    assert failed[5].code == "STRING_TOO_LONG"
    assert failed[5].message.startswith("Last Name: data value too large: " + "x" * 81)
    assert "(max length=80)" in failed[5].message
    assert failed[9].code == "STRING_TOO_LONG"
    # Nothing was cut to fit: the refused contacts are not in the org at all.
    assert not [r for r in org.contacts() if r["Email"] in ("person5@example.com", "person9@example.com")]
    assert len(org.contacts()) == 148


def test_matching_by_email_still_comes_first(org, bulk_provider):
    seed(org, 10)
    items = [PushItem(key=500 + n, values=contact_values(n, job_title="Lead")) for n in range(150)]

    results = bulk_provider.push(items)

    assert [r.operation for r in results[:10]] == ["match"] * 10
    assert {r.operation for r in results[10:]} == {"create"}
    assert len(org.contacts()) == 150


def test_without_the_external_id_field_creations_use_collections(org, sf_config, limiter, db):
    provider = SalesforceProvider(
        {**sf_config, "bulk_threshold": THRESHOLD, "bulk_external_id_field": "Missing__c"}, limiter=limiter
    )

    results = provider.push([PushItem(key=n, values=contact_values(n)) for n in range(150)])

    assert all(r.ok for r in results)
    assert org.count(COLLECTION_CREATE) == 1
    assert len(org.contacts()) == 150


def test_bulk_csv_cells_and_errors():
    text = to_csv(["Id", "Phone", "Title", "Flag__c"], [{"Id": "003A", "Phone": None, "Flag__c": False}]).decode()
    error = parse_error("INVALID_EMAIL_ADDRESS:Email: invalid email address: a:b:Email --")

    assert text == "Id,Phone,Title,Flag__c\n003A,#N/A,,false\n"
    assert error.code == "INVALID_EMAIL_ADDRESS"
    assert error.message == "Email: invalid email address: a:b (fields: Email)"


def test_bulk_rows_read_back_as_the_rest_records_they_stand_for():
    from crm.salesforce.bulk_read import bulk_record

    types = {"Seats__c": "double", "Count__c": "int", "Vip__c": "boolean", "Seen__c": "datetime"}
    row = {"Id": "003A", "Phone": "", "IsDeleted": "false", "Account.Name": "", "Seats__c": "40",
           "Count__c": "3", "Vip__c": "true", "Seen__c": "2024-01-01T12:00:00.000Z"}  # fmt: skip

    record = bulk_record(row, types)

    assert record == {
        "Id": "003A", "Phone": None, "IsDeleted": False, "Account": None, "Seats__c": 40.0, "Count__c": 3,
        "Vip__c": True, "Seen__c": "2024-01-01T12:00:00.000+0000",
    }  # fmt: skip
    assert bulk_record({"Account.Name": "Acme"}, {})["Account"] == {"Name": "Acme"}


def test_a_read_looks_up_the_mapped_fields_once_not_per_record(org, bulk_provider, monkeypatch):
    seed(org, 30)
    looked_up = []
    source = bulk_provider.extra_fields
    # On the instance: the module's source is registered by the engine when it loads, and a patch
    # of it would be undone together with that registration.
    monkeypatch.setattr(bulk_provider, "extra_fields", lambda: looked_up.append("salesforce") or source())

    changes = list(bulk_provider.changes_since(modstamp=None, last_id=""))
    fetched = bulk_provider.fetch([c.external_id for c in changes])

    assert len(changes) == len(fetched) == 30
    assert looked_up == ["salesforce", "salesforce"]  # each one a cache round trip: one per read
