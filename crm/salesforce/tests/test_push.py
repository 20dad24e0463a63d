"""Pushing contacts into the Salesforce sandbox: single records, collections, matching, Accounts."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from werkzeug.wrappers import Request, Response

from crm.base import Permanent, PushItem, Transient
from crm.salesforce.provider import SalesforceProvider
from crm.salesforce.transform import LAST_NAME_PLACEHOLDER
from sandbox.server import serve

from .conftest import contact_values, psycopg_session

CREATE = "POST /services/data/{version}/sobjects/{sobject}"
PATCH = "PATCH /services/data/{version}/sobjects/{sobject}/{record_id}"
DELETE = "DELETE /services/data/{version}/sobjects/{sobject}/{record_id}"
QUERY = "GET /services/data/{version}/query"
COLLECTION_CREATE = "POST /services/data/{version}/composite/sobjects"
COLLECTION_UPDATE = "PATCH /services/data/{version}/composite/sobjects"
COLLECTION_DELETE = "DELETE /services/data/{version}/composite/sobjects"


def by_email(org, email):
    return [r for r in org.contacts() if (r["Email"] or "").lower() == email.lower()]


# --- one item: single-record endpoints --------------------------------------------------------
def test_single_create_then_update_then_delete(provider, org):
    (created,) = provider.push([PushItem(key="a", values=contact_values(1))])
    assert (created.ok, created.operation, created.key) == (True, "create", "a")
    (record,) = org.contacts()
    assert record["Id"] == created.external_id
    assert (record["Email"], record["FirstName"], record["Phone"], record["Title"]) == (
        "person1@example.com",
        "First1",
        "+1 555 0001",
        "Engineer",
    )
    assert record["AccountId"] is None

    (updated,) = provider.push([PushItem(key="a", values={"phone": ""}, external_id=created.external_id)])
    assert (updated.ok, updated.operation, updated.external_id) == (True, "update", created.external_id)
    (record,) = org.contacts()
    assert record["Phone"] is None  # cleared with null
    assert record["FirstName"] == "First1"  # fields not sent are untouched
    assert org.count(PATCH) == 1

    (deleted,) = provider.push([PushItem(key="a", values={}, external_id=created.external_id, delete=True)])
    assert (deleted.ok, deleted.operation) == (True, "delete")
    assert org.contacts() == []
    assert [r["Id"] for r in org.contacts(deleted=True)] == [created.external_id]
    # Deleting again (a redelivered task) is a success: the record is gone either way.
    (again,) = provider.push([PushItem(key="a", values={}, external_id=created.external_id, delete=True)])
    assert again.ok


def test_existing_contact_is_matched_by_email_not_duplicated(provider, org):
    existing = org.control.edit(fields={"Email": "Person1@Example.com", "LastName": "Old", "Title": "Intern"})
    (result,) = provider.push([PushItem(key="a", values=contact_values(1))])
    assert (result.ok, result.operation, result.external_id) == (True, "match", existing["Id"])
    records = by_email(org, "person1@example.com")
    assert len(records) == 1
    assert (records[0]["LastName"], records[0]["Title"]) == ("Last1", "Engineer")
    assert org.count(CREATE) == 0


def test_retried_create_finds_the_first_attempts_record(provider, org):
    item = PushItem(key="a", values=contact_values(7))
    first = provider.push([item])[0]
    second = provider.push([item])[0]  # as after a timeout whose create did land
    assert second.operation == "match"
    assert second.external_id == first.external_id
    assert len(by_email(org, "person7@example.com")) == 1


def test_missing_last_name_round_trips_through_the_placeholder(provider, org):
    (result,) = provider.push([PushItem(key="a", values=contact_values(2, last_name=""))])
    (record,) = org.contacts()
    assert record["LastName"] == LAST_NAME_PLACEHOLDER
    (fetched,) = provider.fetch([result.external_id])
    assert fetched.values["last_name"] == ""


def test_company_finds_an_existing_account_by_exact_name(provider, org):
    org.control.edit(fields={"LastName": "Seed", "Account.Name": "O'Reilly \\ Sons"})
    (account,) = org.accounts()
    (result,) = provider.push([PushItem(key="a", values=contact_values(3, company="O'Reilly \\ Sons"))])
    assert result.ok
    record = next(r for r in org.contacts() if r["Id"] == result.external_id)
    assert record["AccountId"] == account["Id"]
    assert len(org.accounts()) == 1


def test_company_is_created_once_and_cached(provider, org):
    for n in range(3):
        assert provider.push([PushItem(key=n, values=contact_values(n, company="Initech"))])[0].ok
    (account,) = org.accounts()
    assert account["Name"] == "Initech"
    assert {r["AccountId"] for r in org.contacts()} == {account["Id"]}
    assert org.count(CREATE) == 4  # one Account, three Contacts
    # The name was looked up (again under the creation lock), then served from the cache:
    # 2 Account queries + 3 email matches.
    assert org.count(QUERY) == 5


def test_account_deleted_in_salesforce_is_resolved_again_on_retry(provider, org):
    provider.push([PushItem(key="a", values=contact_values(1, company="Soylent"))])
    (account,) = org.accounts()
    org.edit_account(account["Id"], {}, delete=True)  # deletes its contacts too, as in the CRM
    item = PushItem(key="b", values=contact_values(2, company="Soylent"))
    (failed,) = provider.push([item])
    assert isinstance(failed.error, Transient)
    assert failed.error.code == "INVALID_CROSS_REFERENCE_KEY"
    (retried,) = provider.push([item])
    assert retried.ok
    (new_account,) = org.accounts()
    assert new_account["Id"] != account["Id"]
    assert org.contacts()[0]["AccountId"] == new_account["Id"]


def test_clearing_the_company_unlinks_the_account(provider, org):
    (result,) = provider.push([PushItem(key="a", values=contact_values(4, company="Globex"))])
    provider.push([PushItem(key="a", values={"company": ""}, external_id=result.external_id)])
    (record,) = org.contacts()
    assert record["AccountId"] is None


def test_single_validation_error_is_a_per_item_permanent(provider, org):
    (result,) = provider.push([PushItem(key="a", values=contact_values(5, email="not-an-email"))])
    assert isinstance(result.error, Permanent)
    assert result.error.code == "INVALID_EMAIL_ADDRESS"
    assert org.contacts() == []


def test_whole_call_failure_raises(provider, org):
    provider.client.request("GET", "limits")  # log in first
    org.control.config(error_rate=1.0)
    with pytest.raises(Transient):
        provider.push([PushItem(key="a", values=contact_values(6))])
    with pytest.raises(Transient):
        provider.push([PushItem(key=n, values=contact_values(n)) for n in range(3)])


def test_linked_record_deleted_in_salesforce_is_recreated_from_a_full_state(provider, org):
    (first,) = provider.push([PushItem(key="a", values=contact_values(8))])
    org.control.edit(first.external_id, delete=True)
    (again,) = provider.push(
        [PushItem(key="a", values=contact_values(8, job_title="CTO"), external_id=first.external_id)]
    )
    assert (again.ok, again.operation) == (True, "create")
    assert again.external_id != first.external_id
    (record,) = org.contacts()
    assert record["Title"] == "CTO"


def test_linked_record_deleted_in_salesforce_is_not_recreated_from_a_partial_update(provider, org):
    (first,) = provider.push([PushItem(key="a", values=contact_values(9))])
    org.control.edit(first.external_id, delete=True)
    (again,) = provider.push([PushItem(key="a", values={"job_title": "CTO"}, external_id=first.external_id)])
    assert isinstance(again.error, Permanent)
    assert again.error.code == "ENTITY_IS_DELETED"
    assert org.contacts() == []


def test_concurrent_workers_create_a_new_company_once(sf_config, limiter, org, transactional_db):
    # Separate providers stand for separate worker processes: no shared in-process cache, and each
    # thread has its own database session for the Account lock.
    workers = [SalesforceProvider(sf_config, limiter=limiter) for _ in range(4)]

    def push(n: int):
        try:
            return workers[n].push([PushItem(key=n, values=contact_values(n, company="Massive Dynamic"))])
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(push, range(4)))
    assert all(result.ok for (result,) in results)
    (account,) = org.accounts()
    assert {r["AccountId"] for r in org.contacts()} == {account["Id"]}


# --- several items: sObject Collections -------------------------------------------------------
def test_collections_create_update_delete(provider, org):
    items = [PushItem(key=n, values=contact_values(n)) for n in range(5)]
    created = provider.push(items)
    assert [(r.key, r.ok, r.operation) for r in created] == [(n, True, "create") for n in range(5)]
    assert len(org.contacts()) == 5
    assert (org.count(QUERY), org.count(COLLECTION_CREATE), org.count(CREATE)) == (1, 1, 0)

    updates = [PushItem(key=r.key, values={"job_title": f"T{r.key}"}, external_id=r.external_id) for r in created]
    updated = provider.push(updates)
    assert all(r.ok and r.operation == "update" for r in updated)
    assert sorted(r["Title"] for r in org.contacts()) == [f"T{n}" for n in range(5)]
    assert org.count(COLLECTION_UPDATE) == 1

    deletes = [PushItem(key=r.key, values={}, external_id=r.external_id, delete=True) for r in created]
    deleted = provider.push(deletes)
    assert all(r.ok and r.operation == "delete" for r in deleted)
    assert org.contacts() == []
    assert org.count(COLLECTION_DELETE) == 1


def test_collections_match_existing_contacts_first(provider, org):
    existing = org.control.edit(fields={"Email": "person1@example.com", "LastName": "Before"})
    results = provider.push([PushItem(key=n, values=contact_values(n)) for n in range(3)])
    assert [r.operation for r in results] == ["create", "match", "create"]
    assert results[1].external_id == existing["Id"]
    assert len(org.contacts()) == 3
    assert len(by_email(org, "person1@example.com")) == 1


def test_collection_partial_failure_is_per_item(provider, org):
    items = [PushItem(key=n, values=contact_values(n)) for n in range(4)]
    items[2] = PushItem(key=2, values=contact_values(2, email="bad@@example"))
    results = provider.push(items)
    assert [r.ok for r in results] == [True, True, False, True]
    assert isinstance(results[2].error, Permanent)
    assert results[2].error.code == "INVALID_EMAIL_ADDRESS"
    assert results[2].external_id is None
    assert len(org.contacts()) == 3


def test_mixed_batch_keeps_the_order_of_items(provider, org):
    first = provider.push([PushItem(key=n, values=contact_values(n)) for n in range(2)])
    org.control.edit(first[1].external_id, delete=True)  # gone in the CRM meanwhile
    batch = [
        PushItem(key="new", values=contact_values(10, company="Hooli")),
        PushItem(key="del", values={}, external_id=first[0].external_id, delete=True),
        PushItem(key="gone", values=contact_values(1, job_title="Back"), external_id=first[1].external_id),
        PushItem(key="also-new", values=contact_values(11, company="Hooli")),
    ]
    results = provider.push(batch)
    assert [(r.key, r.ok, r.operation) for r in results] == [
        ("new", True, "create"),
        ("del", True, "delete"),
        ("gone", True, "create"),
        ("also-new", True, "create"),
    ]
    live = {r["Email"]: r for r in org.contacts()}
    assert set(live) == {"person10@example.com", "person11@example.com", "person1@example.com"}
    assert live["person1@example.com"]["Title"] == "Back"
    assert len(org.accounts()) == 1


def test_pushing_a_thousand_contacts_through_collections(provider, org):
    items = [PushItem(key=n, values=contact_values(n, company=f"Company {n % 10}")) for n in range(1000)]
    started = time.perf_counter()
    results = [r for start in range(0, 1000, 200) for r in provider.push(items[start : start + 200])]
    seconds = time.perf_counter() - started
    assert all(r.ok for r in results)
    assert len(org.contacts()) == 1000
    requests_made = org.control.stats()["requests_total"]
    # Per batch of 200: one email query and one collections create; plus, once, the token request
    # and the Accounts (lookup, lookup again under the creation lock, one collections create).
    assert requests_made == 1 + 3 + 5 * 2
    assert seconds < 10


# --- a duplicate rule blocks the create (not emulated by the sandbox: a scripted org) ----------
DUPLICATE = [
    {
        "duplicateResut": {
            "allowSave": False,
            "matchResults": [{"matchRecords": [{"record": {"Id": "0035g00000XXXXXAAA"}}]}],
        },
        "errorCode": "DUPLICATES_DETECTED",
        "message": "You're creating a duplicate record. We recommend you use an existing record instead.",
    }
]


class DuplicateRuleOrg:
    """Answers like an org whose duplicate rule blocks every Contact create."""

    def __init__(self):
        self.calls = []

    def __call__(self, environ, start_response):
        request = Request(environ)
        self.calls.append((request.method, request.path))
        if request.path == "/services/oauth2/token":
            body = {"access_token": "t", "instance_url": request.host_url.rstrip("/"), "id": "x/005000000000001AAA"}
            response = Response(json.dumps(body), content_type="application/json")
        elif request.path.endswith("/query"):
            response = Response(
                json.dumps({"totalSize": 0, "done": True, "records": []}), content_type="application/json"
            )
        elif request.method == "POST":
            response = Response(json.dumps(DUPLICATE), status=400, content_type="application/json")
        else:
            response = Response(b"", status=204)
        return response(environ, start_response)


def test_duplicate_rule_links_to_the_matched_record(sf_config, limiter):
    stub = DuplicateRuleOrg()
    running = serve(stub)
    try:
        provider = SalesforceProvider({**sf_config, "login_url": running.url}, limiter=limiter)
        (result,) = provider.push([PushItem(key="a", values=contact_values(1))])
    finally:
        running.stop()
    assert (result.ok, result.operation, result.external_id) == (True, "match", "0035g00000XXXXXAAA")
    assert ("PATCH", "/services/data/v59.0/sobjects/Contact/0035g00000XXXXXAAA") in stub.calls


def test_account_creation_waits_for_another_worker_then_finds_its_account(provider, org):
    """A second worker does not create the company's Account again: it waits for the lock, then finds it."""
    lock_key = f"syncroot:{provider.client.limiter.name}:account-create"
    with psycopg_session() as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", [lock_key])
        provider.accounts.lock_wait = 0.2
        with pytest.raises(Transient) as busy:
            provider.push([PushItem(key=1, values=contact_values(1, company="Held Ltd"))])
        assert busy.value.code == "ACCOUNT_LOCK_BUSY"
        assert org.accounts() == []

        other.execute("SELECT pg_advisory_unlock(hashtext(%s))", [lock_key])
        results = provider.push([PushItem(key=1, values=contact_values(1, company="Held Ltd"))])

    assert results[0].error is None
    assert [a["Name"] for a in org.accounts()] == ["Held Ltd"]


def test_a_lock_held_by_a_killed_worker_is_free_at_once(provider, org):
    lock_key = f"syncroot:{provider.client.limiter.name}:account-create"
    with psycopg_session() as dead:
        dead.execute("SELECT pg_advisory_lock(hashtext(%s))", [lock_key])
    # The holder's connection ended (as when its process is killed): PostgreSQL released the lock.
    provider.accounts.lock_wait = 0.0
    began = time.monotonic()

    results = provider.push([PushItem(key=1, values=contact_values(1, company="Orphan Inc"))])

    assert results[0].error is None
    assert time.monotonic() - began < 5
    assert [a["Name"] for a in org.accounts()] == ["Orphan Inc"]


def test_partial_updates_of_records_deleted_in_salesforce_say_gone_in_collections_too(provider, org):
    """Through sObject Collections (which answer 200) the refusal said status 200, so the engine
    parked a change it could deliver whole; both paths now say 404 (gone)."""
    created = provider.push([PushItem(key=n, values=contact_values(20 + n)) for n in range(2)])
    for result in created:
        org.control.edit(result.external_id, delete=True)

    again = provider.push(
        [PushItem(key=r.key, values={"job_title": "CTO"}, external_id=r.external_id) for r in created]
    )

    assert [(r.error.code, r.error.status) for r in again] == [("ENTITY_IS_DELETED", 404)] * 2
