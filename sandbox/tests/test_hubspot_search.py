"""HubSpot sandbox search and rate limits through the official SDK."""

import json
import time
from datetime import UTC, datetime

import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import PublicObjectSearchRequest, SimplePublicObjectInputForCreate
from hubspot.crm.contacts.exceptions import ApiException
from urllib3.util.retry import Retry

from sandbox.testing import next_millisecond


def create(hubspot, **properties):
    return hubspot.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties=properties))


def search(hubspot, *filters, **options):
    request = PublicObjectSearchRequest(filter_groups=[{"filters": list(filters)}] if filters else [], **options)
    return hubspot.contacts.search_api.do_search(request)


@pytest.fixture
def people(hubspot):
    """Three contacts created a few ms apart; returns them and a cut-off between 1st and 2nd."""
    hubspot.control.config(search_rate_limit=None)
    first = create(hubspot, email="ann@example.com", firstname="Ann", phone="1")
    next_millisecond()
    cutoff_ms = int(time.time() * 1000)
    next_millisecond()
    second = create(hubspot, email="bob@example.com", firstname="Bob")
    third = create(hubspot, email="cid@example.org", firstname="Cid", phone="3")
    return [first, second, third], cutoff_ms


def emails(result):
    return [contact.properties["email"] for contact in result.results]


def test_eq_is_case_insensitive_and_returns_default_properties(hubspot, people):
    result = search(hubspot, {"propertyName": "email", "operator": "EQ", "value": "BOB@example.com"})

    assert result.total == 1
    assert emails(result) == ["bob@example.com"]
    assert "lastmodifieddate" in result.results[0].properties
    assert result.paging is None


def test_neq_in_and_has_property(hubspot, people):
    neq = search(hubspot, {"propertyName": "email", "operator": "NEQ", "value": "bob@example.com"})
    wanted = ["ann@example.com", "cid@example.org"]
    within = search(hubspot, {"propertyName": "email", "operator": "IN", "values": wanted})
    has_phone = search(hubspot, {"propertyName": "phone", "operator": "HAS_PROPERTY"})

    assert sorted(emails(neq)) == ["ann@example.com", "cid@example.org"]
    assert sorted(emails(within)) == ["ann@example.com", "cid@example.org"]
    assert sorted(emails(has_phone)) == ["ann@example.com", "cid@example.org"]


def test_lastmodifieddate_filters_accept_epoch_ms_and_iso(hubspot, people):
    _, cutoff_ms = people
    iso = datetime.fromtimestamp(cutoff_ms / 1000, UTC).isoformat().replace("+00:00", "Z")

    by_ms = search(hubspot, {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(cutoff_ms)})
    by_iso = search(hubspot, {"propertyName": "lastmodifieddate", "operator": "GT", "value": iso})
    before = search(hubspot, {"propertyName": "lastmodifieddate", "operator": "LT", "value": str(cutoff_ms)})
    at_most = search(hubspot, {"propertyName": "lastmodifieddate", "operator": "LTE", "value": str(cutoff_ms)})

    assert sorted(emails(by_ms)) == sorted(emails(by_iso)) == ["bob@example.com", "cid@example.org"]
    assert emails(before) == emails(at_most) == ["ann@example.com"]


def test_filter_groups_are_or_of_ands(hubspot, people):
    request = PublicObjectSearchRequest(
        filter_groups=[
            {"filters": [{"propertyName": "email", "operator": "EQ", "value": "ann@example.com"}]},
            {
                "filters": [
                    {"propertyName": "phone", "operator": "HAS_PROPERTY"},
                    {"propertyName": "firstname", "operator": "EQ", "value": "cid"},
                ]
            },
        ]
    )

    result = hubspot.contacts.search_api.do_search(request)

    assert sorted(emails(result)) == ["ann@example.com", "cid@example.org"]


def test_sorts_limit_and_after_page_through_results(hubspot, people):
    sorts = [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}]

    page1 = search(hubspot, sorts=sorts, limit=2, properties=["email"])
    page2 = search(hubspot, sorts=sorts, limit=2, after=page1.paging.next.after, properties=["email"])

    assert page1.total == page2.total == 3
    assert emails(page1) + emails(page2) == ["cid@example.org", "bob@example.com", "ann@example.com"]
    assert page1.paging.next.after == "2"
    assert page2.paging is None
    assert set(page1.results[0].properties) == {"email"}


def test_limit_above_200_is_refused(hubspot, people):
    with pytest.raises(ApiException) as excinfo:
        search(hubspot, limit=201)

    assert excinfo.value.status == 400
    assert json.loads(excinfo.value.body)["category"] == "VALIDATION_ERROR"


def test_paging_past_10000_results_is_a_400(hubspot):
    hubspot.app.seed_contacts(10_050)
    sorts = [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]

    last_page = search(hubspot, sorts=sorts, limit=200, after="9800")
    with pytest.raises(ApiException) as excinfo:
        search(hubspot, sorts=sorts, limit=200, after=last_page.paging.next.after)

    assert last_page.total == 10_050
    assert len(last_page.results) == 200
    assert last_page.paging.next.after == "10000"
    assert excinfo.value.status == 400
    assert "10000" in json.loads(excinfo.value.body)["message"]


def test_rolling_window_answers_429_with_hubspot_body_and_retry_after(hubspot):
    # A long window so a slow machine cannot let a hit expire mid-test.
    hubspot.control.config(rate_limit={"max": 3, "interval_ms": 5000})

    remaining = []
    for index in range(3):
        _, _, headers = hubspot.contacts.basic_api.create_with_http_info(
            SimplePublicObjectInputForCreate(properties={"email": f"r{index}@example.com"})
        )
        remaining.append(headers["X-HubSpot-RateLimit-Remaining"])
    # A POST: urllib3's default retry would wait out Retry-After on a GET.
    with pytest.raises(ApiException) as excinfo:
        create(hubspot, email="r3@example.com")

    assert remaining == ["2", "1", "0"]
    assert headers["X-HubSpot-RateLimit-Max"] == "3"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "5000"
    assert excinfo.value.status == 429
    body = json.loads(excinfo.value.body)
    assert body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["status"] == "error"
    assert 1 <= int(excinfo.value.headers["Retry-After"]) <= 5
    assert hubspot.control.stats()["rate_limited"] == 1


def test_sdk_retry_honours_retry_after_and_then_succeeds(hubspot):
    hubspot.control.config(rate_limit={"max": 2, "interval_ms": 1000})
    retry = Retry(total=3, status_forcelist=(429,), allowed_methods=None, backoff_factor=0)
    client = HubSpot(access_token="sandbox-token", host=hubspot.running.url, retry=retry)

    started = time.monotonic()
    results = [client.crm.contacts.basic_api.get_page() for _ in range(3)]

    assert len(results) == 3
    assert time.monotonic() - started >= 0.9  # the third call waited Retry-After: 1
    assert hubspot.control.stats()["rate_limited"] == 1


def test_search_has_its_own_per_second_limit_and_no_rate_limit_headers(hubspot):
    assert hubspot.control.config()["search_rate_limit"] == {"max": 5, "interval_ms": 1000}
    hubspot.control.config(search_rate_limit={"max": 5, "interval_ms": 5000})  # robust on a slow machine
    statuses = []
    for _ in range(6):
        try:
            _, status, headers = hubspot.contacts.search_api.do_search_with_http_info(PublicObjectSearchRequest())
            assert not any(name.lower().startswith("x-hubspot-ratelimit") for name in headers)
            statuses.append(status)
        except ApiException as exc:
            statuses.append(exc.status)
            body = json.loads(exc.body)

    assert statuses == [200] * 5 + [429]
    assert body["policyName"] == "SECONDLY"
    # Search calls do not use up the ten-second window of the other endpoints.
    assert hubspot.contacts.basic_api.get_page() is not None


def test_seeded_contacts_can_be_spread_over_time(hubspot):
    """`POST /_sandbox/seed` with `spacing_ms`: a portal filled over time, the last one now."""
    hubspot.control.config(search_rate_limit=None)
    hubspot.control.session.post(
        f"{hubspot.control.url}/_sandbox/seed", json={"count": 3, "prefix": "s", "spacing_ms": 1000}, timeout=10
    ).raise_for_status()

    found = search(hubspot, sorts=["lastmodifieddate"], properties=["lastmodifieddate"], limit=10).results
    stamps = [contact.updated_at.timestamp() for contact in found]

    assert [round(b - a) for a, b in zip(stamps, stamps[1:], strict=False)] == [1, 1]
    assert abs(stamps[-1] - time.time()) < 60


def test_a_page_sorted_by_modification_is_in_time_then_id_order(hubspot):
    """The first page of a big result comes in (time, id) order, whichever way the sandbox gets it."""
    hubspot.control.config(search_rate_limit=None)
    hubspot.control.session.post(
        f"{hubspot.control.url}/_sandbox/seed", json={"count": 300, "prefix": "o"}, timeout=30
    ).raise_for_status()  # created as fast as the store takes them: many share a millisecond
    everything = [(c.updated_at, int(c.id)) for c in hubspot.contacts.get_all(properties=["email"])]

    first = min(everything)[0]
    after_first = {"propertyName": "lastmodifieddate", "operator": "GT", "value": str(int(first.timestamp() * 1000))}

    page = search(hubspot, sorts=["lastmodifieddate"], properties=["email"], limit=50)
    later = search(hubspot, after_first, sorts=["lastmodifieddate"], properties=["email"], limit=50)

    assert [(c.updated_at, int(c.id)) for c in page.results] == sorted(everything)[:50]
    assert page.total == 300
    assert [(c.updated_at, int(c.id)) for c in later.results] == sorted(c for c in everything if c[0] > first)[:50]
