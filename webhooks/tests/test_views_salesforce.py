"""POST /webhooks/salesforce: Outbound Messages (SOAP, shared token + organization) and signed
JSON change events; each kind gets the acknowledgement its sender expects, only once stored."""

import json
import time

import pytest
from django.db import connection

from webhooks.models import WebhookEvent
from webhooks.tests.factories import (
    PUBLIC_BASE_URL,
    SALESFORCE_ORG,
    SALESFORCE_SETTINGS,
    SALESFORCE_TOKEN,
    change_event_headers,
    payload,
)

pytestmark = pytest.mark.django_db

PATH = "/webhooks/salesforce"
SOAP_TYPE = "text/xml; charset=utf-8"


@pytest.fixture(autouse=True)
def salesforce(settings):
    settings.SALESFORCE = {**settings.SALESFORCE, **SALESFORCE_SETTINGS}
    settings.PUBLIC_BASE_URL = PUBLIC_BASE_URL


def post_soap(client, body: bytes, *, query: str = f"?token={SALESFORCE_TOKEN}", headers=None):
    return client.post(PATH + query, data=body, content_type=SOAP_TYPE, headers={"SOAPAction": '""', **(headers or {})})


def post_events(client, body: bytes, headers: dict[str, str]):
    return client.post(PATH, data=body, content_type="application/json", headers=headers)


def assert_soap_ack(response) -> None:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/xml")
    assert b"<Ack>true</Ack>" in response.content
    assert b"notificationsResponse" in response.content


# --- Outbound Messages ---------------------------------------------------------------------------
def test_an_outbound_message_is_stored_and_acked_with_the_soap_envelope(
    client, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_soap(client, payload("salesforce_outbound_message.xml"))

    assert_soap_ack(response)
    stored = {e.event_id: e for e in WebhookEvent.objects.filter(provider="salesforce")}
    assert set(stored) == {"04l5g00000Gx7QzAAJ", "04l5g00000Gx7R0AAJ"}
    assert stored["04l5g00000Gx7QzAAJ"].payload["sobject"]["Email"] == "ada@example.com"
    assert stored["04l5g00000Gx7QzAAJ"].payload["kind"] == "outbound_message"
    assert [(provider, sorted(ids)) for provider, ids in enqueued] == [
        ("salesforce", sorted(e.pk for e in stored.values()))
    ]


def test_the_token_may_come_in_a_header(client, enqueued):
    response = post_soap(
        client, payload("salesforce_outbound_message.xml"), query="", headers={"X-SyncRoot-Token": SALESFORCE_TOKEN}
    )

    assert_soap_ack(response)
    assert WebhookEvent.objects.count() == 2


def test_a_redelivered_outbound_message_is_acked_again_without_new_rows(client, enqueued):
    body = payload("salesforce_outbound_message.xml")
    assert_soap_ack(post_soap(client, body))

    assert_soap_ack(post_soap(client, body))

    assert WebhookEvent.objects.count() == 2


def test_no_ack_before_the_message_is_stored(client, enqueued, transactional_db):
    # Salesforce drops a message it got <Ack>true</Ack> for: with the database down it must not get one.
    original = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = "1"
    try:
        response = post_soap(client, payload("salesforce_outbound_message.xml"))
    finally:
        connection.close()
        connection.settings_dict["PORT"] = original

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert b"<Ack>" not in response.content
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("query", "headers"),
    [("", {}), ("?token=wrong", {}), ("", {"X-SyncRoot-Token": "wrong"}), ("?token=", {})],
    ids=["missing", "wrong-query", "wrong-header", "empty"],
)
def test_a_missing_or_wrong_token_is_401_and_no_ack(client, enqueued, query, headers):
    response = post_soap(client, payload("salesforce_outbound_message.xml"), query=query, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "bad_token"
    assert b"<Ack>" not in response.content
    assert WebhookEvent.objects.count() == 0


def test_an_outbound_message_from_another_organization_is_401(client, enqueued):
    body = payload("salesforce_outbound_message.xml").replace(SALESFORCE_ORG.encode(), b"00D5g000000ABCDEAZ")

    response = post_soap(client, body)

    assert response.status_code == 401
    assert response.json()["code"] == "bad_organization"
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize("name", ["xxe_external_entity.xml", "xxe_billion_laughs.xml"])
def test_xml_with_entities_is_refused_unexpanded(client, enqueued, name):
    started = time.perf_counter()

    response = post_soap(client, payload(name))

    assert response.status_code == 400
    assert response.json()["code"] == "bad_xml"
    assert b"root:" not in response.content  # nothing of /etc/passwd leaks back
    assert time.perf_counter() - started < 3  # refused before any expansion (a billion laughs takes GBs)
    assert WebhookEvent.objects.count() == 0


def test_an_envelope_that_is_not_an_outbound_message_is_400(client, enqueued):
    response = post_soap(client, b"<a><b>not soap</b></a>")

    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_an_unsupported_content_type_is_415(client, enqueued):
    response = client.post(
        PATH + f"?token={SALESFORCE_TOKEN}", data=payload("salesforce_outbound_message.xml"), content_type="text/plain"
    )

    assert response.status_code == 415
    assert WebhookEvent.objects.count() == 0


# --- Signed JSON change events -------------------------------------------------------------------
def test_a_signed_change_event_is_stored_and_acked_with_json(client, enqueued):
    body = payload("salesforce_change_event_delete.json")

    response = post_events(client, body, change_event_headers(body))

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}
    event = WebhookEvent.objects.get(provider="salesforce")
    assert event.event_id == "9f1d1c2e-6a3b-4c3d-8e2f-0a1b2c3d4e5f"
    assert event.payload["ChangeEventHeader"]["changeType"] == "DELETE"


def test_a_change_event_naming_several_records_becomes_one_row_each(client, enqueued):
    document = json.loads(payload("salesforce_change_event_delete.json"))
    document["events"][0]["ChangeEventHeader"]["recordIds"] = ["0035g00000AbCdEAAV", "0035g00000AbCdFAAV"]
    body = json.dumps(document).encode()

    response = post_events(client, body, change_event_headers(body))

    assert response.status_code == 200
    assert WebhookEvent.objects.count() == 2


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda body: change_event_headers(body, secret="forged"), id="forged"),
        pytest.param(lambda body: change_event_headers(body, at=time.time() - 360), id="stale"),
        pytest.param(lambda body: {}, id="unsigned"),
        pytest.param(lambda body: change_event_headers(body + b" "), id="body-changed"),
    ],
)
def test_a_forged_or_stale_change_event_is_401(client, enqueued, headers):
    body = payload("salesforce_change_event_delete.json")

    response = post_events(client, body, headers(body))

    assert response.status_code == 401
    assert response.json()["code"] in ("bad_signature", "stale_timestamp")
    assert WebhookEvent.objects.count() == 0


def test_a_signed_but_malformed_change_event_is_400(client, enqueued):
    body = b'{"events": [{"eventId": "x"}]}'

    response = post_events(client, body, change_event_headers(body))

    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0
