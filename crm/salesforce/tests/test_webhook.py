"""Outbound Message and change-event deliveries: authenticity, hostile XML, parsing."""

import json
import time
from pathlib import Path

import pytest

from crm.base import WebhookRejected
from crm.salesforce.webhook import (
    CHANGE_EVENT,
    OUTBOUND_MESSAGE,
    SOAP_ACK,
    ack_for,
    parse_delivery,
    sign,
)

PAYLOADS = Path(__file__).parent / "payloads"
CONFIG = {
    "organization_id": "00D5g000000ABCDEAZ",
    "webhook_token": "hook-secret",
    "event_secret": "event-secret",
}
XML = {"Content-Type": "text/xml; charset=utf-8"}


def soap(name="outbound_message.xml", *, headers=XML, query=None, config=CONFIG):
    body = (PAYLOADS / name).read_bytes()
    return parse_delivery(body=body, headers=headers, query=query or {"token": "hook-secret"}, config=config)


def signed(body: bytes, *, secret="event-secret", timestamp=None):
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": str(timestamp),
        "X-Signature": sign(secret, timestamp, body),
    }


def events(body: bytes, headers):
    return parse_delivery(body=body, headers=headers, query={}, config=CONFIG)


# --- Outbound Messages ----------------------------------------------------------------------
def test_outbound_message_splits_into_one_event_per_notification():
    parsed = soap()
    assert [event.event_id for event in parsed] == ["04l5g00000Gx7QzAAJ", "04l5g00000Gx7R0AAJ"]
    first = parsed[0].payload
    assert first["kind"] == OUTBOUND_MESSAGE
    assert first["organization_id"] == "00D5g000000ABCDEAZ"
    assert first["sobject_type"] == "Contact"
    assert first["sobject"]["Email"] == "ada@example.com"
    assert first["sobject"]["Title"] == "Analyst & Programmer"
    assert parsed[1].payload["sobject"]["Phone"] is None  # xsi:nil
    json.dumps(first)  # stored as JSON in the inbox


def test_token_may_come_in_a_header_and_org_id_in_its_15_character_form():
    config = {**CONFIG, "organization_id": "00D5g000000ABCD"}
    parsed = soap(headers={**XML, "X-SyncRoot-Token": "hook-secret"}, query={"other": "1"}, config=config)
    assert len(parsed) == 2


@pytest.mark.parametrize("query", [{"token": "wrong"}, {"other": "x"}])
def test_missing_or_wrong_token_is_refused(query):
    with pytest.raises(WebhookRejected) as raised:
        soap(query=query)
    assert (raised.value.status, raised.value.code) == (401, "bad_token")


def test_unconfigured_token_refuses_everything():
    with pytest.raises(WebhookRejected) as raised:
        soap(query={"token": ""}, config={**CONFIG, "webhook_token": ""})
    assert raised.value.status == 401


def test_other_organization_is_refused():
    with pytest.raises(WebhookRejected) as raised:
        soap(config={**CONFIG, "organization_id": "00D000000000001EAA"})
    assert (raised.value.status, raised.value.code) == (401, "bad_organization")


@pytest.mark.parametrize("name", ["outbound_message_xxe.xml", "billion_laughs.xml"])
def test_entities_and_dtds_are_refused(name):
    with pytest.raises(WebhookRejected) as raised:
        soap(name)
    assert (raised.value.status, raised.value.code) == (400, "bad_xml")


def test_malformed_xml_is_refused():
    body = (PAYLOADS / "outbound_message.xml").read_bytes()[:-40]
    with pytest.raises(WebhookRejected) as raised:
        parse_delivery(body=body, headers=XML, query={"token": "hook-secret"}, config=CONFIG)
    assert raised.value.status == 400


def test_soap_that_is_not_a_notifications_envelope_is_refused():
    with pytest.raises(WebhookRejected) as raised:
        soap("login_response.xml")
    assert (raised.value.status, raised.value.code) == (400, "bad_envelope")


def test_oversized_delivery_is_refused_before_parsing():
    with pytest.raises(WebhookRejected) as raised:
        parse_delivery(body=b" " * 2_000_000, headers=XML, query={"token": "hook-secret"}, config=CONFIG)
    assert raised.value.status == 413


def test_other_content_types_are_refused():
    with pytest.raises(WebhookRejected) as raised:
        parse_delivery(
            body=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}, query={}, config=CONFIG
        )
    assert raised.value.status == 415


def test_acks_per_delivery_kind():
    assert ack_for(OUTBOUND_MESSAGE) == ("text/xml; charset=utf-8", SOAP_ACK)
    assert ack_for(None)[1] == SOAP_ACK
    assert b"<Ack>true</Ack>" in SOAP_ACK
    content_type, body = ack_for(CHANGE_EVENT)
    assert content_type == "application/json"
    assert json.loads(body) == {"status": "ok"}


# --- change events --------------------------------------------------------------------------
def test_signed_change_event_is_split_per_record():
    body = (PAYLOADS / "change_event_delete.json").read_bytes()
    parsed = events(body, signed(body))
    event_id = "6f1c2a3e-1b7d-4c55-9d3e-2f0a8e7b9c10"
    assert [event.event_id for event in parsed] == [f"{event_id}:0035g00000AbCdEAAV", f"{event_id}:0035g00000AbCdFAAV"]
    assert parsed[1].payload["kind"] == CHANGE_EVENT
    assert parsed[1].payload["ChangeEventHeader"]["recordIds"] == ["0035g00000AbCdFAAV"]
    assert parsed[1].payload["ChangeEventHeader"]["changeType"] == "DELETE"


def test_single_record_event_keeps_its_event_id():
    body = (PAYLOADS / "change_event_update.json").read_bytes()
    assert [event.event_id for event in events(body, signed(body))] == ["0b6a4b1e-5a0e-4f7e-8f4c-9b8f1d2c3e4f"]


def test_forged_signature_is_refused():
    body = (PAYLOADS / "change_event_delete.json").read_bytes()
    headers = signed(body, secret="guessed")
    with pytest.raises(WebhookRejected) as raised:
        events(body, headers)
    assert (raised.value.status, raised.value.code) == (401, "bad_signature")
    tampered = body.replace(b"DELETE", b"UPDATE")
    with pytest.raises(WebhookRejected):
        events(tampered, signed(body))


@pytest.mark.parametrize("skew", [-301, 301])
def test_stale_or_future_timestamp_is_refused(skew):
    body = (PAYLOADS / "change_event_delete.json").read_bytes()
    with pytest.raises(WebhookRejected) as raised:
        events(body, signed(body, timestamp=int(time.time()) + skew))
    assert (raised.value.status, raised.value.code) == (401, "stale_timestamp")


def test_missing_signature_is_refused():
    body = (PAYLOADS / "change_event_delete.json").read_bytes()
    with pytest.raises(WebhookRejected) as raised:
        events(body, {"Content-Type": "application/json"})
    assert raised.value.status == 401


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b'{"events": {}}',
        b'{"events": [{"ChangeEventHeader": {}}]}',
        b'{"events": [{"eventId": "e1", "ChangeEventHeader": {"entityName": "Contact", "changeType": "DELETE"}}]}',
        b'{"events": [{"eventId": "e1", "ChangeEventHeader": {"entityName": "Contact", "changeType": "DELETE", '
        b'"recordIds": ["003\' OR 1=1"]}}]}',
    ],
)
def test_malformed_signed_events_are_bad_requests(document):
    with pytest.raises(WebhookRejected) as raised:
        events(document, signed(document))
    assert (raised.value.status, raised.value.code) == (400, "bad_event")
