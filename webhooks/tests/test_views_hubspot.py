"""POST /webhooks/hubspot: signed v3 deliveries are stored once and enqueued after commit."""

import json
import time

import pytest
from hubspot.utils.signature import Signature

from webhooks.models import EventStatus, WebhookEvent
from webhooks.tests.factories import (
    HUBSPOT_SECRET,
    PUBLIC_BASE_URL,
    hubspot_body,
    hubspot_events,
    hubspot_headers,
    payload,
)

pytestmark = pytest.mark.django_db

PATH = "/webhooks/hubspot"
URL = PUBLIC_BASE_URL + PATH


@pytest.fixture(autouse=True)
def hubspot(settings):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "t", "client_secret": HUBSPOT_SECRET, "app_id": "1234567"}
    settings.PUBLIC_BASE_URL = PUBLIC_BASE_URL


def deliver(client, body: bytes, headers: dict[str, str], *, path: str = PATH, content_type="application/json"):
    return client.post(path, data=body, content_type=content_type, headers=headers)


def test_a_signed_delivery_of_100_events_is_stored_and_enqueued_after_commit(
    client, enqueued, django_capture_on_commit_callbacks
):
    events = hubspot_events(100)
    body = hubspot_body(events)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = deliver(client, body, hubspot_headers(body, url=URL))
    assert enqueued == []  # nothing reaches the broker before the transaction commits
    for callback in callbacks:
        callback()

    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok"}
    stored = WebhookEvent.objects.filter(provider="hubspot")
    assert stored.count() == 100
    assert set(stored.values_list("status", flat=True)) == {EventStatus.RECEIVED}
    assert set(stored.values_list("event_id", flat=True)) == {f"2100100:{e['eventId']}" for e in events}
    assert stored.get(event_id=f"2100100:{events[7]['eventId']}").payload == events[7]
    assert len(enqueued) == 1
    assert enqueued[0][0] == "hubspot"
    assert sorted(enqueued[0][1]) == sorted(stored.values_list("pk", flat=True))


def test_a_redelivery_is_acknowledged_and_stores_nothing_new(client, enqueued, django_capture_on_commit_callbacks):
    events = hubspot_events(100)
    first = hubspot_body(events)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, first, hubspot_headers(first, url=URL)).status_code == 200
    ids_before = set(WebhookEvent.objects.values_list("pk", flat=True))

    # HubSpot retries with attemptNumber bumped: a new body and signature, the same event ids.
    again = hubspot_body([{**event, "attemptNumber": 1} for event in events])
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, again, hubspot_headers(again, url=URL))

    assert response.status_code == 200
    assert set(WebhookEvent.objects.values_list("pk", flat=True)) == ids_before
    assert all(e.payload["attemptNumber"] == 0 for e in WebhookEvent.objects.all())  # the first copy is kept
    assert len(enqueued) == 1  # the first delivery's task; the redelivery adds none


def test_the_signatures_match_the_official_sdk(client, enqueued):
    body = hubspot_body(hubspot_events(3))
    headers = hubspot_headers(body, url=URL)

    assert Signature.is_valid(
        signature=headers["X-HubSpot-Signature-v3"],
        client_secret=HUBSPOT_SECRET,
        request_body=body.decode(),
        http_uri=URL,
        http_method="POST",
        signature_version="v3",
        timestamp=headers["X-HubSpot-Request-Timestamp"],
    )
    assert deliver(client, body, headers).status_code == 200


def test_documented_event_shapes_are_accepted(client, enqueued):
    body = payload("hubspot_contact_events.json")

    response = deliver(client, body, hubspot_headers(body, url=URL))

    assert response.status_code == 200, response.content
    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {"3329277:3400564480", "3329280:3400564481"}


def test_without_a_public_base_url_the_request_url_is_the_signed_one(client, settings, enqueued):
    settings.PUBLIC_BASE_URL = ""
    body = hubspot_body(hubspot_events(2))

    response = deliver(client, body, hubspot_headers(body, url="http://testserver" + PATH))

    assert response.status_code == 200, response.content
    assert WebhookEvent.objects.count() == 2


def test_behind_a_proxy_the_internal_url_does_not_verify(client, enqueued):
    body = hubspot_body(hubspot_events(2))

    # Signed over the URL the app server sees, not the public one HubSpot called: a forgery.
    response = deliver(client, body, hubspot_headers(body, url="http://testserver" + PATH))

    assert response.status_code == 401
    assert WebhookEvent.objects.count() == 0


def test_the_query_string_is_part_of_the_signed_url(client, enqueued):
    body = hubspot_body(hubspot_events(1))
    path = PATH + "?portal=62515&env=prod"

    signed = deliver(client, body, hubspot_headers(body, url=PUBLIC_BASE_URL + path), path=path)
    without_query = deliver(client, body, hubspot_headers(body, url=URL), path=path)

    assert signed.status_code == 200
    assert without_query.status_code == 401


SIGNATURE = "X-HubSpot-Signature-v3"
TIMESTAMP = "X-HubSpot-Request-Timestamp"


def forged(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    return {**headers, SIGNATURE: "AAAA" + headers[SIGNATURE][4:]}


def wrong_secret(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    return hubspot_headers(body, url=URL, secret="not-the-secret")


def unsigned(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != SIGNATURE}


def timestamp_moved(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    # Signed at one instant, claims another: the timestamp is part of the signed text.
    return {**headers, TIMESTAMP: str(int(headers[TIMESTAMP]) + 1)}


@pytest.mark.parametrize("tamper", [forged, wrong_secret, unsigned, timestamp_moved])
def test_a_bad_signature_is_refused_and_nothing_stored(client, enqueued, tamper):
    body = hubspot_body(hubspot_events(5))

    response = deliver(client, body, tamper(body, hubspot_headers(body, url=URL)))

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert set(response.json()) == {"code", "message", "details"}
    assert WebhookEvent.objects.count() == 0
    assert enqueued == []


def test_a_tampered_body_is_refused(client, enqueued):
    body = hubspot_body(hubspot_events(5))
    headers = hubspot_headers(body, url=URL)
    tampered = body.replace(b"Name 0", b"Name X")

    response = deliver(client, tampered, headers)

    assert response.status_code == 401
    assert WebhookEvent.objects.count() == 0


def test_a_delivery_replayed_after_six_minutes_is_refused(client, enqueued):
    body = hubspot_body(hubspot_events(5))
    # A genuine, correctly signed delivery captured six minutes ago and sent again as is.
    headers = hubspot_headers(body, url=URL, at=time.time() - 360)

    response = deliver(client, body, headers)

    assert response.status_code == 401
    assert "window" in response.json()["message"]
    assert WebhookEvent.objects.count() == 0


def test_more_than_100_events_are_refused(client, enqueued):
    body = hubspot_body(hubspot_events(101))

    response = deliver(client, body, hubspot_headers(body, url=URL))

    # A 4xx HubSpot does not count as stored; the provider names it too_many_events.
    assert response.status_code in (400, 413)
    assert response.json()["code"] == "too_many_events"
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "malformed_json"), (b'{"eventId": 1}', "not_an_array"), (b'[{"objectId": 5}]', "bad_event")],
)
def test_a_signed_but_malformed_body_is_400(client, enqueued, body, code):
    response = deliver(client, body, hubspot_headers(body, url=URL))

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert WebhookEvent.objects.count() == 0


def test_a_wrong_content_type_is_415(client, enqueued):
    body = hubspot_body(hubspot_events(1))

    response = deliver(client, body, hubspot_headers(body, url=URL), content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert WebhookEvent.objects.count() == 0


def test_a_trailing_slash_is_accepted_when_signed_that_way(client, enqueued):
    body = hubspot_body(hubspot_events(1))

    response = deliver(client, body, hubspot_headers(body, url=URL + "/"), path=PATH + "/")

    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}


def test_a_nul_character_is_dropped_and_the_delivery_stored(client, enqueued):
    events = hubspot_events(2)
    events[1]["propertyValue"] = "Ada\x00"  # valid JSON ("\u0000"), refused by jsonb
    body = hubspot_body(events)

    response = deliver(client, body, hubspot_headers(body, url=URL))

    assert response.status_code == 200, response.content
    assert WebhookEvent.objects.get(event_id=f"2100100:{events[1]['eventId']}").payload["propertyValue"] == "Ada"
    assert WebhookEvent.objects.count() == 2


def test_a_value_postgresql_cannot_store_is_a_json_4xx_not_a_500_and_nothing_is_stored(client, enqueued):
    events = hubspot_events(2)
    body = hubspot_body(events).replace(b'"Name 1"', b'"\\ud800"')  # a lone surrogate: valid JSON, refused by jsonb
    assert b"\\ud800" in body

    response = deliver(client, body, hubspot_headers(body, url=URL))

    assert response.status_code == 400
    assert response.json()["code"] == "unstorable_payload"
    assert WebhookEvent.objects.count() == 0
    assert enqueued == []
