"""HubSpotProvider against the in-process HubSpot sandbox: push, fetch, changes_since, webhooks."""

from datetime import timedelta

import pytest
import requests

from crm import base
from crm.base import Permanent, PushItem, RateLimited, Transient
from crm.hubspot import transform
from crm.hubspot.client import BatchResult
from crm.hubspot.provider import HubSpotProvider
from crm.hubspot.push import PushRun
from crm.registry import get_provider

FULL = {
    "email": "",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone": "",
    "company": "Analytical",
    "job_title": "",
}


def contact(email: str, **values: str) -> dict[str, str]:
    return {**FULL, "email": email, **values}


def live_records(control) -> list[dict]:
    return [r for r in control.records() if not r["archived"]]


def test_registry_builds_the_provider_from_settings(db, hubspot_config):
    provider = get_provider("hubspot")

    assert isinstance(provider, HubSpotProvider)
    assert provider.record_url("1001") == "https://app.hubspot.com/contacts/62515/record/0-1/1001"
    assert provider.client is provider.client  # built once, reused


# --- single items -------------------------------------------------------------------------------
def test_single_create_update_delete(provider, control):
    [created] = provider.push([PushItem(key="a", values=contact("ada@example.com"))])
    [updated] = provider.push([PushItem(key="a", values={"job_title": "Countess"}, external_id=created.external_id)])
    record = control.records()[0]
    [deleted] = provider.push([PushItem(key="a", values={}, external_id=created.external_id, delete=True)])
    [again] = provider.push([PushItem(key="a", values={}, external_id=created.external_id, delete=True)])

    assert (created.ok, created.operation) == (True, "create")
    assert (updated.ok, updated.operation, updated.external_id) == (True, "update", created.external_id)
    assert record["properties"]["jobtitle"] == "Countess"
    assert record["properties"]["company"] == "Analytical"
    assert (deleted.ok, deleted.operation) == (True, "delete")
    assert again.ok  # already gone is what a delete wants
    assert live_records(control) == []


def test_single_create_of_an_existing_email_links_to_it(provider, control):
    existing = control.edit(fields={"email": "grace@example.com", "firstname": "G"})

    [result] = provider.push([PushItem(key=7, values=contact("Grace@Example.com", first_name="Grace"))])

    assert (result.ok, result.operation, result.external_id) == (True, "match", existing["id"])
    [record] = control.records()  # no duplicate created
    assert record["properties"]["firstname"] == "Grace"


def test_single_update_of_a_contact_deleted_in_hubspot_recreates_it_by_email(provider, control):
    [created] = provider.push([PushItem(key=1, values=contact("gone@example.com"))])
    control.edit(created.external_id, delete=True)

    [result] = provider.push([PushItem(key=1, values=contact("gone@example.com"), external_id=created.external_id)])

    assert (result.ok, result.operation) == (True, "create")
    assert result.external_id != created.external_id
    assert [r["id"] for r in live_records(control)] == [result.external_id]


def test_single_update_of_a_deleted_contact_without_email_says_so(provider, control):
    [created] = provider.push([PushItem(key=1, values=contact("gone2@example.com"))])
    control.edit(created.external_id, delete=True)

    [result] = provider.push([PushItem(key=1, values={"phone": "123"}, external_id=created.external_id)])

    assert isinstance(result.error, Permanent)
    assert (result.error.code, result.error.status) == ("OBJECT_NOT_FOUND", 404)
    assert live_records(control) == []


def test_single_validation_failure_is_a_per_item_error(provider):
    [result] = provider.push([PushItem(key=1, values=contact("not-an-email"))])

    assert result.ok is False
    assert (result.error.code, result.operation) == ("INVALID_EMAIL", "create")


def test_single_whole_call_failure_raises(provider, control):
    control.config(error_rate=1.0)

    with pytest.raises(Transient):
        provider.push([PushItem(key=1, values=contact("x@example.com"))])


# --- batches ------------------------------------------------------------------------------------
def test_batch_upsert_matches_existing_emails_instead_of_duplicating(provider, control):
    existing = control.edit(fields={"email": "known@example.com", "firstname": "Old"})
    items = [
        PushItem(key="new1", values=contact("new1@example.com")),
        PushItem(key="known", values=contact("KNOWN@example.com", first_name="New")),
        PushItem(key="new2", values=contact("new2@example.com")),
    ]

    results = provider.push(items)

    assert [r.key for r in results] == ["new1", "known", "new2"]
    assert [r.operation for r in results] == ["create", "match", "create"]
    assert results[1].external_id == existing["id"]
    records = live_records(control)
    assert len(records) == 3
    assert {r["properties"]["email"] for r in records} == {"new1@example.com", "known@example.com", "new2@example.com"}
    assert control.stats()["requests"] == {"POST /crm/v3/objects/contacts/batch/upsert": {"200": 1}}


def test_mixed_batch_uses_one_call_per_kind_and_keeps_order(provider, control):
    made = provider.push([PushItem(key=i, values=contact(f"m{i}@example.com")) for i in range(4)])
    before = control.stats()["requests"]
    items = [
        PushItem(key="del", values={}, external_id=made[0].external_id, delete=True),
        PushItem(key="upd", values={"company": "Acme"}, external_id=made[1].external_id),
        PushItem(key="new", values=contact("fresh@example.com")),
        PushItem(key="del-unlinked", values={}, delete=True),
        PushItem(key="upd2", values={"phone": "+44 1"}, external_id=made[2].external_id),
    ]

    results = provider.push(items)

    assert [(r.key, r.ok, r.operation) for r in results] == [
        ("del", True, "delete"),
        ("upd", True, "update"),
        ("new", True, "create"),
        ("del-unlinked", True, "delete"),
        ("upd2", True, "update"),
    ]
    after = control.stats()["requests"]
    assert after["POST /crm/v3/objects/contacts/batch/archive"] == {"204": 1}
    assert after["POST /crm/v3/objects/contacts/batch/update"] == {"200": 1}
    assert (
        after["POST /crm/v3/objects/contacts/batch/upsert"]["200"]
        == before["POST /crm/v3/objects/contacts/batch/upsert"]["200"] + 1
    )
    by_id = {r["id"]: r for r in control.records()}
    assert by_id[made[0].external_id]["archived"] is True
    assert by_id[made[1].external_id]["properties"]["company"] == "Acme"


def test_partial_batch_update_reports_each_failure_on_its_item(provider, control):
    made = provider.push([PushItem(key=i, values=contact(f"b{i}@example.com")) for i in range(4)])
    control.edit(made[2].external_id, delete=True)
    control.edit(made[3].external_id, delete=True)
    items = [
        PushItem(key="ok", values={"first_name": "Fine"}, external_id=made[0].external_id),
        PushItem(key="bad", values={"email": "broken@"}, external_id=made[1].external_id),
        PushItem(key="gone", values={"phone": "1"}, external_id=made[2].external_id),
        PushItem(key="gone-email", values=contact("b3@example.com"), external_id=made[3].external_id),
    ]

    ok, bad, gone, recreated = provider.push(items)

    assert ok.ok
    assert ok.operation == "update"
    assert isinstance(bad.error, Permanent)
    assert bad.error.code == "INVALID_EMAIL"
    assert "broken@" in bad.error.message
    assert gone.error.code == "OBJECT_NOT_FOUND"
    assert (recreated.ok, recreated.operation) == (True, "create")
    assert recreated.external_id not in {m.external_id for m in made}
    statuses = control.stats()["requests"]["POST /crm/v3/objects/contacts/batch/update"]
    assert statuses == {"207": 1}


def test_partial_batch_upsert_with_one_invalid_email(provider, control):
    items = [
        PushItem(key=n, values=contact(email)) for n, email in enumerate(["u1@example.com", "u2@x", "u3@example.com"])
    ]

    results = provider.push(items)

    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.code == "INVALID_EMAIL"
    assert len(live_records(control)) == 2


def test_same_email_twice_in_one_batch_goes_in_two_rounds(provider, control):
    items = [PushItem(key=1, values=contact("twin@example.com")), PushItem(key=2, values=contact("Twin@example.com"))]

    first, second = provider.push(items)

    assert (first.operation, second.operation) == ("create", "match")
    assert first.external_id == second.external_id
    assert len(live_records(control)) == 1


def test_batch_upsert_of_1000_contacts_takes_ten_requests(provider, control):
    items = [PushItem(key=n, values=contact(f"bulk{n}@example.com", last_name=str(n))) for n in range(1000)]

    results = provider.push(items)

    assert all(r.ok and r.operation == "create" for r in results)
    assert len({r.external_id for r in results}) == 1000
    assert control.stats()["requests"] == {"POST /crm/v3/objects/contacts/batch/upsert": {"200": 10}}


def test_whole_batch_failure_raises_when_nothing_was_written(provider, control):
    control.config(rate_limit_storm=1.0)

    with pytest.raises(RateLimited) as limited:
        provider.push([PushItem(key=n, values=contact(f"s{n}@example.com")) for n in range(3)])

    assert limited.value.retry_after == 1.0


def test_failure_after_a_written_chunk_keeps_what_was_written(provider, control):
    control.config(rate_limit={"max": 1, "interval_ms": 10_000})
    items = [PushItem(key=n, values=contact(f"c{n}@example.com")) for n in range(150)]

    results = provider.push(items)

    assert all(r.ok and r.external_id for r in results[:100])
    assert all(isinstance(r.error, RateLimited) for r in results[100:])
    assert len(live_records(control)) == 100


def test_a_batch_refused_whole_is_split_until_the_bad_record_is_alone(provider):
    # HubSpot refuses some batches whole (400) without naming the input: isolate it by halving.
    calls = []

    def batch_update(inputs):
        calls.append(len(inputs))
        if any(props.get("email") == "bad" for _, props in inputs):
            raise Permanent("Property values were not valid", code="INVALID_EMAIL", status=400)
        return BatchResult(results=[{"id": key} for key, _ in inputs])

    items = [
        PushItem(key=n, values={"email": "bad" if n == 5 else f"e{n}@x.com"}, external_id=str(n)) for n in range(8)
    ]
    run = PushRun(provider.client, items)
    run.client = type("Stub", (), {"batch_update": staticmethod(batch_update)})()

    run._update(list(range(8)))
    results = run.finish()

    assert [r.ok for r in results] == [True] * 5 + [False] + [True] * 2
    assert results[5].error.code == "INVALID_EMAIL"
    assert calls == [8, 4, 4, 2, 1, 1, 2]


# --- reads --------------------------------------------------------------------------------------
def test_fetch_reports_current_values_and_deleted_or_unknown_ids(provider, control):
    alive = control.edit(fields={"email": "alive@example.com", "firstname": "Al", "jobtitle": "Boss"})
    dead = control.edit(fields={"email": "dead@example.com"})
    control.edit(dead["id"], delete=True)

    alive_change, dead_change, unknown = provider.fetch([alive["id"], dead["id"], "424242"])

    assert alive_change.values == {
        "email": "alive@example.com",
        "first_name": "Al",
        "last_name": "",
        "phone": "",
        "company": "",
        "job_title": "Boss",
    }
    assert alive_change.occurred_at is not None
    assert not alive_change.deleted
    assert (dead_change.external_id, dead_change.deleted) == (dead["id"], True)
    assert (unknown.external_id, unknown.deleted) == ("424242", True)


def test_500_mapped_properties_are_read_in_request_bodies_never_in_the_url(provider, hubspot, control):
    """A portal with 500 mapped custom properties: the batch read and the search name them all in
    their JSON bodies. The same names in a URL's query string meet HubSpot's 414."""
    control.config(rate_limit=None)  # an admin's 500 property creates are not what this measures
    session = requests.Session()
    session.headers["Authorization"] = "Bearer sandbox-token"
    names = [f"custom_property_number_{n:03d}" for n in range(500)]
    for name in names:
        body = {"name": name, "label": name, "type": "string", "fieldType": "text", "groupName": "contactinformation"}
        assert session.post(f"{hubspot.url}/crm/v3/properties/contacts", json=body).status_code == 201
    record = control.edit(fields={"email": "wide@example.com", names[0]: "first", names[-1]: "last"})
    base.extra_fields_source(lambda crm: tuple(names))  # as the field mappings declare them

    [change] = provider.fetch([record["id"]])
    changes = list(provider.changes_since(modstamp=None, last_id=""))

    assert (change.remote[names[0]], change.remote[names[-1]], change.remote[names[250]]) == ("first", "last", None)
    assert [c.remote[names[-1]] for c in changes if c.external_id == record["id"]] == ["last"]
    in_the_url = session.get(f"{hubspot.url}/crm/v3/objects/contacts/{record['id']}", params={"properties": names})
    assert in_the_url.status_code == 414


def _store_contacts(app, stamps: list[int]) -> list[str]:
    """Contacts written straight into the sandbox store with the given lastmodifieddate (epoch ms)."""
    return [
        app.store.create({"email": f"t{n}@example.com"}, source=app.api_source, now_ms=ms).id
        for n, ms in enumerate(stamps)
    ]


BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def test_changes_since_pages_in_time_then_id_order_across_shared_timestamps(provider, hubspot, control):
    control.config(search_rate_limit=None)
    # Seven records share one millisecond (a bulk import), with more before and after it.
    stamps = [BASE_MS + 5, BASE_MS + 1, BASE_MS + 3] + [BASE_MS + 3] * 6 + [BASE_MS + 9, BASE_MS + 2]
    ids = _store_contacts(hubspot.app, stamps)
    provider.search_page_size = 3

    changes = list(provider.changes_since(modstamp=None, last_id=""))

    expected = sorted(zip(stamps, ids, strict=True), key=lambda pair: (pair[0], int(pair[1])))
    assert [c.external_id for c in changes] == [eid for _, eid in expected]
    assert [transform.to_epoch_ms(c.occurred_at) for c in changes] == [ms for ms, _ in expected]
    assert control.stats()["requests"]["POST /crm/v3/objects/contacts/search"]["200"] >= 4  # it really paged


def test_changes_since_resumes_after_a_compound_cursor(provider, hubspot, control):
    control.config(search_rate_limit=None)
    ids = _store_contacts(hubspot.app, [BASE_MS, BASE_MS + 7, BASE_MS + 7, BASE_MS + 7, BASE_MS + 8])
    provider.search_page_size = 2
    cursor_time = transform.parse_time(BASE_MS + 7)

    after_second = [c.external_id for c in provider.changes_since(modstamp=cursor_time, last_id=ids[2])]
    from_time = [c.external_id for c in provider.changes_since(modstamp=cursor_time, last_id="")]
    lookback = [c.external_id for c in provider.changes_since(modstamp=cursor_time - timedelta(seconds=5), last_id="")]

    assert after_second == [ids[3], ids[4]]
    assert from_time == ids[1:]
    assert lookback == ids


def test_changes_since_goes_past_hubspots_10000_result_cap(provider, hubspot, control):
    control.config(search_rate_limit=None)
    count = 10_050
    ids = _store_contacts(hubspot.app, [BASE_MS + n // 2 for n in range(count)])

    changes = list(provider.changes_since(modstamp=None, last_id=""))

    assert len(changes) == count
    assert [c.external_id for c in changes] == ids  # created in (time, id) order
    assert "400" not in control.stats()["requests"]["POST /crm/v3/objects/contacts/search"]


# --- webhooks end to end: the sandbox signs, the provider verifies ----------------------------
def test_sandbox_webhooks_verify_and_mark_our_own_writes(provider, control, webhook_receiver):
    control.config(webhook_url=webhook_receiver.url, webhook_linger_ms=0)
    [created] = provider.push([PushItem(key=1, values=contact("hook@example.com"))])
    control.edit(created.external_id, {"firstname": "Changed in HubSpot"})
    assert control.flush_webhooks()

    events = []
    for delivery in webhook_receiver.requests:
        events += provider.parse_webhook(
            body=delivery.body, headers=delivery.headers, url=webhook_receiver.url, query={}
        )
    changes = [provider.webhook_change(event.payload) for event in events]

    creation = next(c for c in changes if c is not None and not c.complete)
    ui_edit = next(c for c in changes if c is not None and c.values == {"first_name": "Changed in HubSpot"})
    assert creation.external_id == created.external_id
    assert creation.from_integration
    assert ui_edit.from_integration is False
    assert len({e.event_id for e in events}) == len(events)


def test_merging_records_a_person_merged_already_answers_the_survivor(provider, control):
    keep = control.edit(fields={"email": "keep@example.com"})
    other = control.edit(fields={"email": "other@example.com"})
    control.edit(other["id"], merge_into=keep["id"])  # a person merged them in HubSpot meanwhile

    assert provider.merge_records(survivor_id=keep["id"], loser_id=other["id"]) == keep["id"]


def test_merging_into_a_record_a_person_deleted_meanwhile_answers_none(provider, control):
    keep = control.edit(fields={"email": "keep@example.com"})
    other = control.edit(fields={"email": "other@example.com"})
    control.edit(keep["id"], delete=True)  # a person deleted the survivor's record in HubSpot meanwhile

    # None: no merge made; the caller deletes the other record (SyncRoot's survivor holds its values).
    assert provider.merge_records(survivor_id=keep["id"], loser_id=other["id"]) is None


def test_merging_a_record_a_person_deleted_meanwhile_is_done(provider, control):
    keep = control.edit(fields={"email": "keep@example.com"})
    other = control.edit(fields={"email": "other@example.com"})
    control.edit(other["id"], delete=True)

    assert provider.merge_records(survivor_id=keep["id"], loser_id=other["id"]) == keep["id"]


def test_merging_into_a_record_a_person_merged_away_merges_into_its_survivor(provider, control, client):
    keep = control.edit(fields={"email": "keep@example.com"})
    other = control.edit(fields={"email": "other@example.com"})
    elsewhere = control.edit(fields={"email": "elsewhere@example.com"})
    control.edit(keep["id"], merge_into=elsewhere["id"])

    assert provider.merge_records(survivor_id=keep["id"], loser_id=other["id"]) == elsewhere["id"]
    assert client.get(other["id"])["id"] == elsewhere["id"]


def test_merging_records_a_person_merged_the_other_way_round_answers_the_one_left(provider, control):
    keep = control.edit(fields={"email": "keep@example.com"})
    other = control.edit(fields={"email": "other@example.com"})
    control.edit(keep["id"], merge_into=other["id"])

    assert provider.merge_records(survivor_id=keep["id"], loser_id=other["id"]) == other["id"]
